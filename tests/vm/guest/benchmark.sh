# The benchmark of issues 5 and 14 (not a pass/fail test): in one VM, on same-size disks,
#   1. limit: read the plain device, write it through dm-crypt on a second disk (direct I/O, 16M blocks)
#   2. the engine's ceiling: one kernel mirror (dm-raid1, kcopyd) of the whole plain device into
#      dm-crypt on the second disk, with pvencrypt's region size
#   3. cryptsetup reencrypt --encrypt --reduce-device-size 32M, offline
#   4. pvencrypt on a live VG, no load
#   5. pvencrypt on a live VG under a writer (fdatasync per record): its longest stall, beside
#      the same writer's longest stall with nothing running (TCG's own noise floor)
#   6. pvencrypt's peak RSS (PBKDF2 with 1000 iterations: no PBKDF memory)
#   7. the mover's chunk and region sizes, and a 32 MiB shift (--reduce-device-size 64M), no load
# and every rate as a ratio to 1, 2 and 3. Run: tests/vm/run.sh benchmark (prints the table).
# Steps 1-6 convert or copy the same byte count, the device minus 32 MiB.
# disks: 1344M 1344M
# timeout: 3000
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
size=$(blockdev --getsize64 /dev/vda)
data_mib=$(( size / 1048576 - 32 ))
el() { echo "$2 $1" | awk '{printf "%.2f", $1 - $2}'; }
rate() { echo "$data_mib $1" | awk '{printf "%.1f", $1 / $2}'; }

# Random-looking content everywhere (sparse zeros would read faster than real data).
dd if=/dev/urandom of=/tmp/chunk bs=1M count=16 2>/dev/null
fill() { while cat /tmp/chunk; do :; done 2>/dev/null | dd of="$1" bs=16M iflag=fullblock oflag=direct 2>/dev/null; }
fill /dev/vda; fill /dev/vdb

echo "=== 1. dd from vda through dm-crypt on vdb"
run cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /dev/urandom --keyfile-size 64 /dev/vdb limit
sync; echo 3 > /proc/sys/vm/drop_caches
t0=$(now)
dd if=/dev/vda of=/dev/mapper/limit bs=16M count=$((data_mib / 16)) iflag=direct oflag=direct 2>/dev/null
t1=$(now); t_dd=$(el $t0 $t1)
run cryptsetup close limit

region_kib=1024
echo "=== 2. one mirror of vda into dm-crypt on vdb, ${region_kib} KiB regions"
run cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /dev/urandom --keyfile-size 64 /dev/vdb limit
sectors=$((data_mib * 2048))
sync; echo 3 > /proc/sys/vm/drop_caches
t0=$(now)
run dmsetup create mirror --table "0 $sectors mirror core 1 $((region_kib * 2)) 2 $(majmin /dev/vda) 0 $(majmin /dev/mapper/limit) 0"
synced() { dmsetup status mirror | awk '{split($7, s, "/"); exit !(s[1] == s[2] && $9 == "AA")}'; }
wait_for synced 600 || die "the mirror never got in sync: $(dmsetup status mirror)"
t1=$(now); t_mir=$(el $t0 $t1)
run dmsetup remove mirror
run cryptsetup close limit

echo "=== 3. cryptsetup reencrypt --encrypt offline on vdb"
t0=$(now)
cryptsetup reencrypt --encrypt --type luks2 --reduce-device-size 32M $cheap --key-file /tmp/key -q --batch-mode /dev/vdb \
  || die "cryptsetup reencrypt failed"
t1=$(now); t_cs=$(el $t0 $t1)

room=32   # MiB left after the PV: --reduce-device-size
lv_setup() {
  PVOPTS="--setphysicalvolumesize $((size / 1048576 - room))M" mkvg vg /dev/vda
  mklv a -l 50%FREE vg
  mklv fs -l 100%FREE vg
  run mkfs.ext4 -q -E nodiscard,lazy_itable_init=1 /dev/mapper/vg-fs
  mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
}
pve() {   # LOG [ARG...]: pvencrypt -v on vda, its peak RSS measured; seconds in $T, start (uptime) in $T0
  local log=$1; shift
  sync
  t0=$(now); T0=$t0
  pvwriter maxrss pvencrypt --key-file /tmp/key $cheap -y -v "$@" /dev/vda > "$log" 2>&1 || { cat "$log"; die "pvencrypt failed"; }
  t1=$(now); T=$(el $t0 $t1)
  grep -E 'switched|encrypted|maxrss' "$log"
}
teardown() {
  umount /mnt/fs; run vgchange -q -an vg; run cryptsetup close vda_crypt
  dd if=/dev/zero of=/dev/vda bs=1M count=32 oflag=direct 2>/dev/null   # drop the LUKS2 header
}

freeze_of() { sed -n 's/.*switched under a freeze of \([0-9.]*\) ms.*/\1/p' "$1"; }
rate_of() { sed -n 's/.*encrypted .* (\([0-9.]*\) MiB\/s).*/\1/p' "$1"; }

echo "=== 4. pvencrypt, live VG, no load"
lv_setup
pve /tmp/p3.log; t_p=$T
freeze3=$(freeze_of /tmp/p3.log)
rss3=$(sed -n 's/^maxrss_kb=//p' /tmp/p3.log)
teardown

# with_writer LOG [ARG...]: pvencrypt ARGS under the writer, whose records are verified;
# its longest stall and when it began in $stall (us) and $stall_at (ms of uptime).
with_writer() {
  local log=$1; shift
  fill /dev/vda
  lv_setup
  writer_start /mnt/fs/log
  wait_for '[ "$(writer_acked)" -ge 50 ]' 60 || die "writer too slow"
  pve "$log" "$@"
  writer_stop
  stall=$(sed -n 's/.*maxstall_us=\([0-9]*\).*/\1/p' /tmp/ack)
  stall_at=$(sed -n 's/.*maxstall_at_ms=\([0-9]*\).*/\1/p' /tmp/ack)
  acked=$(writer_acked)
  check "writer ($log): all $acked acknowledged records intact" pvwriter verify /mnt/fs/log "$acked"
  teardown
}

echo "=== 5. the writer alone for 30 s (the noise floor), then with pvencrypt running"
fill /dev/vda
lv_setup
writer_start /mnt/fs/log
sleep 30
writer_stop
noise=$(sed -n 's/.*maxstall_us=\([0-9]*\).*/\1/p' /tmp/ack)
umount /mnt/fs; run vgchange -q -an vg
export PVENCRYPT_TRACE=1   # its step timestamps place the stall; cheap without =debug
with_writer /tmp/p4.log
unset PVENCRYPT_TRACE
t_w=$T start4=$T0 stall4=$stall stall_at4=$stall_at
grep -E "trace: memory at" /tmp/p4.log   # where the memory goes, step by step
trace_ms() { sed -n "s/^pvencrypt: trace: $1 +\([0-9]*\).*/\1/p" /tmp/p4.log | head -1; }
freeze4=$(freeze_of /tmp/p4.log)
rss4=$(sed -n 's/^maxrss_kb=//p' /tmp/p4.log)

# sweep_row LABEL LOG SECONDS: one row of the tuning table (no load).
sweep_row() {
  local mib=$((size / 1048576 - room))
  echo "$mib $3 $(rate_of "$2") $(rate $t_dd) $(rate $t_mir) $(rate $t_cs)" | awk -v s="$1" '{
    r = $1 / $2
    printf "%-30s %8.2f s %8.1f MiB/s %6.2f %6.2f %6.2f %9.1f MiB/s\n", s, $2, r, r / $4, r / $5, r / $6, $3 }'
}
echo "=== 7. the mover's chunk and region sizes, no load"
sweep=""
for tune in chunk=2M,region=512K chunk=4M,region=1M chunk=8M,region=2M chunk=16M,region=4M chunk=8M,region=2M,shift=32M; do
  room=32
  case $tune in *shift=32M) room=64;; esac
  fill /dev/vda
  lv_setup
  PVENCRYPT_MOVER=$tune pve /tmp/p7.log --reduce-device-size ${room}M
  teardown
  sweep="$sweep
$(sweep_row "$tune" /tmp/p7.log $T)"
done
room=32

row() {   # NAME SECONDS
  local r; r=$(rate "$2")
  printf '%-44s %8s s %8s MiB/s %6s %6s %6s\n' "$1" "$2" "$r" \
    "$(echo "$r $(rate $t_dd)" | awk '{printf "%.2f", $1 / $2}')" "$(echo "$r $(rate $t_mir)" | awk '{printf "%.2f", $1 / $2}')" \
    "$(echo "$r $(rate $t_cs)" | awk '{printf "%.2f", $1 / $2}')"
}
echo
echo "BENCH: $data_mib MiB each; kernel $(uname -r), $(nproc) vCPUs, TCG"
echo "BENCH: $(printf '%-44s %10s %14s %6s %6s %6s' step time rate 'vs 1' 'vs 2' 'vs 3')"
row "1. dd through dm-crypt (limit)" $t_dd | sed 's/^/BENCH: /'
row "2. one kernel mirror into dm-crypt (ceiling)" $t_mir | sed 's/^/BENCH: /'
row "3. cryptsetup reencrypt --encrypt, offline" $t_cs | sed 's/^/BENCH: /'
row "4. pvencrypt, live VG, no load" $t_p | sed 's/^/BENCH: /'
row "5. pvencrypt, live VG, writer running" $t_w | sed 's/^/BENCH: /'
echo "BENCH: pvencrypt's data phase alone: $(rate_of /tmp/p3.log) MiB/s without load, $(rate_of /tmp/p4.log) MiB/s with the writer"
echo "BENCH: freeze: ${freeze3} ms without load, ${freeze4} ms with the writer"
echo "BENCH: writer's longest stall: $((stall4 / 1000)) ms ($(echo "$stall4 $freeze4" | awk '{printf "%.2f", $1 / 1000 / $2}')x the freeze)," \
  "began $(echo "$stall_at4 $start4" | awk '{printf "%.2f", $1 / 1000 - $2}') s into the run;" \
  "the freeze ran from $(trace_ms locked) to $(trace_ms resumed) ms, the data phase until $(trace_ms 'memory at encrypted:[^+]*') ms"
echo "BENCH: the same writer alone, 30 s: longest stall $((noise / 1000)) ms"
echo "BENCH: pvencrypt peak RSS: $((rss3 / 1024)) MiB without load, $((rss4 / 1024)) MiB with the writer"
echo "BENCH: the mover's tuning, no load (PVENCRYPT_MOVER; shift=32M: --reduce-device-size 64M):"
echo "BENCH: $(printf '%-30s %10s %14s %6s %6s %6s %15s' tuning time rate 'vs 1' 'vs 2' 'vs 3' 'data phase')"
echo "$sweep" | sed '/^$/d; s/^/BENCH: /'
result
