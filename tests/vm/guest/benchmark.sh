# The benchmark of issue 5 (not a pass/fail test): in one VM, on same-size disks,
#   1. limit: read the plain device, write it through dm-crypt on a second disk (direct I/O, 16M blocks)
#   2. cryptsetup reencrypt --encrypt --reduce-device-size 32M, offline
#   3. pvencrypt on a live VG, no load
#   4. pvencrypt on a live VG under a writer (fdatasync per record): its longest stall
#   5. freeze and pvencrypt's peak RSS (PBKDF2 with 1000 iterations: no PBKDF memory), and
#      rate, freeze and the writer's longest stall with 8 and 32 MiB reencryption steps
#      (the data shift, half of --reduce-device-size) besides the default 16 MiB
# and every rate as a ratio to 1 and to 2. Run: tests/vm/run.sh benchmark (prints the table).
# Steps 1-4 convert or copy the same byte count, the device minus 32 MiB; each row of the
# step sweep converts the device minus twice its step.
# disks: 1280M 1280M
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

echo "=== 2. cryptsetup reencrypt --encrypt offline on vdb"
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

echo "=== 3. pvencrypt, live VG, no load"
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

echo "=== 4. pvencrypt, live VG, writer running"
export PVENCRYPT_TRACE=1   # its step timestamps place the stall; cheap without =debug
with_writer /tmp/p4.log
unset PVENCRYPT_TRACE
t_w=$T start4=$T0 stall4=$stall stall_at4=$stall_at
grep -E "trace: memory at" /tmp/p4.log   # where the memory goes, step by step
trace_ms() { sed -n "s/^pvencrypt: trace: $1 +\([0-9]*\).*/\1/p" /tmp/p4.log | head -1; }
freeze4=$(freeze_of /tmp/p4.log)
rss4=$(sed -n 's/^maxrss_kb=//p' /tmp/p4.log)

# sweep_row STEP_MIB LOG SECONDS STALL_US: one row of the step-size table.
sweep_row() {
  local mib=$(( size / 1048576 - 2 * $1 )) f; f=$(freeze_of "$2")
  echo "$mib $3 $(rate_of "$2") $4 $f $(rate $t_dd) $(rate $t_cs)" | awk -v s="$1" '{
    r = $1 / $2
    printf "%8s MiB %8.2f s %8.1f MiB/s %6.2f %6.2f %9.1f MiB/s %7d ms %8.1f ms %7.2fx\n",
      s, $2, r, r / $6, r / $7, $3, $4 / 1000, $5, $4 / 1000 / $5 }'
}
sweep="$(sweep_row 16 /tmp/p4.log $t_w $stall4)"
echo "=== 5. pvencrypt with 8 and 32 MiB steps, writer running"
for step in 8 32; do
  room=$((2 * step))
  with_writer /tmp/p5-$step.log --reduce-device-size ${room}M
  sweep="$sweep
$(sweep_row $step /tmp/p5-$step.log $T $stall)"
done

row() {   # NAME SECONDS
  local r; r=$(rate "$2")
  printf '%-44s %8s s %8s MiB/s %6s %6s\n' "$1" "$2" "$r" \
    "$(echo "$r $(rate $t_dd)" | awk '{printf "%.2f", $1 / $2}')" "$(echo "$r $(rate $t_cs)" | awk '{printf "%.2f", $1 / $2}')"
}
echo
echo "BENCH: $data_mib MiB each; kernel $(uname -r), $(nproc) vCPUs, TCG"
echo "BENCH: $(printf '%-44s %10s %14s %6s %6s' step time rate 'vs 1' 'vs 2')"
row "1. dd through dm-crypt (limit)" $t_dd | sed 's/^/BENCH: /'
row "2. cryptsetup reencrypt --encrypt, offline" $t_cs | sed 's/^/BENCH: /'
row "3. pvencrypt, live VG, no load" $t_p | sed 's/^/BENCH: /'
row "4. pvencrypt, live VG, writer running" $t_w | sed 's/^/BENCH: /'
echo "BENCH: freeze: ${freeze3} ms without load, ${freeze4} ms with the writer"
echo "BENCH: writer's longest stall: $((stall4 / 1000)) ms ($(echo "$stall4 $freeze4" | awk '{printf "%.2f", $1 / 1000 / $2}')x the freeze)," \
  "began $(echo "$stall_at4 $start4" | awk '{printf "%.2f", $1 / 1000 - $2}') s into the run;" \
  "the freeze ran from $(trace_ms locked) to $(trace_ms resumed) ms, the data phase until $(trace_ms 'memory at encrypted:[^+]*') ms"
echo "BENCH: pvencrypt peak RSS: $((rss3 / 1024)) MiB without load, $((rss4 / 1024)) MiB with the writer"
echo "BENCH: with the writer, by step size (the data shift; --reduce-device-size is twice it):"
echo "BENCH: $(printf '%12s %10s %14s %6s %6s %15s %10s %11s %8s' step time rate 'vs 1' 'vs 2' 'data phase' stall freeze ratio)"
echo "$sweep" | sort -n | sed 's/^/BENCH: /'
result
