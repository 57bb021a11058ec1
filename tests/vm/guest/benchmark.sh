# The benchmark (issues 5, 14 and 23; not a pass/fail test). In one VM, every ratio from this
# run, each baseline at its best setting as a real system has it:
#   1. the limit: dd from the disk through a plain dm-crypt mapping on a second disk, O_DIRECT,
#      the best of 4 and 16 MiB blocks
#   2. one kernel mirror (dm-raid1, kcopyd) of the whole disk into that mapping, the best of
#      region sizes 1 to 16 MiB
#   3. cryptsetup reencrypt --encrypt --reduce-device-size 32M, offline, encrypting in
#      userspace as a real system does (checked in its debug log: not a temporary dm-crypt)
#   4. pvencrypt on a live VG, no load: whole command, data phase, first byte moved
#   5. pvencrypt under a writer (fdatasync per record): its longest stall beside the freeze,
#      and beside the same writer's longest stall with nothing running (TCG's noise floor)
#   6. pvencrypt's peak RSS (PBKDF2 with 1000 iterations: no PBKDF memory)
#   7. the mover's tunings (PVENCRYPT_MOVER): the rate without load, the writer's stall with it
#   8. scale: pvencrypt on an 8 GiB disk, its rate beside step 4's, RSS, commits and
#      header writes per GiB
# Steps 1-7 convert or copy the same byte count, the device minus 32 MiB.
# Run: tests/vm/run.sh benchmark (prints the table: grep BENCH vm-work/logs/benchmark.log).
# disks: 1056M 1056M 8224M
# timeout: 5400
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
size=$(blockdev --getsize64 /dev/vda)
data_mib=$(( size / 1048576 - 32 ))
el() { echo "$2 $1" | awk '{printf "%.2f", $1 - $2}'; }
rate() { echo "${2:-$data_mib} $1" | awk '{printf "%.1f", $1 / $2}'; }
ratio() { echo "$1 $2" | awk '{printf "%.2f", $1 / $2}'; }

# Random-looking content everywhere (sparse zeros would read faster than real data).
dd if=/dev/urandom of=/tmp/chunk bs=1M count=16 2>/dev/null
fill() { while cat /tmp/chunk; do :; done 2>/dev/null | dd of="$1" bs=16M iflag=fullblock oflag=direct 2>/dev/null; }
fill /dev/vda; fill /dev/vdb
plain_crypt() { run cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /dev/urandom --keyfile-size 64 /dev/vdb limit; }
# best_of VAR LABEL SECONDS: keeps the fastest setting in VAR (seconds) and VAR_set (label).
best_of() {
  local cur; eval "cur=\${$1:-}"
  if [ -z "$cur" ] || awk -v a="$3" -v b="$cur" 'BEGIN {exit !(a < b)}'; then eval "$1=$3 ${1}_set=\"$2\""; fi
  echo "  $2: $3 s ($(rate $3) MiB/s)"
}

echo "=== 1. dd from vda through dm-crypt on vdb (O_DIRECT)"
for bs in 4 16; do
  plain_crypt; sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now)
  dd if=/dev/vda of=/dev/mapper/limit bs=${bs}M count=$((data_mib / bs)) iflag=direct oflag=direct 2>/dev/null
  best_of t_dd "dd bs=${bs}M" "$(el $t0 $(now))"
  run cryptsetup close limit
done

echo "=== 2. one mirror of vda into dm-crypt on vdb"
sectors=$((data_mib * 2048))
synced() { dmsetup status mirror | awk '{split($7, s, "/"); exit !(s[1] == s[2] && $9 == "AA")}'; }
for region_mib in 1 2 4 8 16; do
  plain_crypt; sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now)
  run dmsetup create mirror --table "0 $sectors mirror core 1 $((region_mib * 2048)) 2 $(majmin /dev/vda) 0 $(majmin /dev/mapper/limit) 0"
  wait_for synced 900 || die "the mirror never got in sync: $(dmsetup status mirror)"
  best_of t_mir "${region_mib} MiB regions" "$(el $t0 $(now))"
  run dmsetup remove mirror
  run cryptsetup close limit
done

echo "=== 3. cryptsetup reencrypt --encrypt offline on vdb"
# libcryptsetup 2.6 with OpenSSL (Debian 12's) encrypts in userspace with OpenSSL, the kernel's
# AF_ALG only for what OpenSSL lacks, a temporary dm-crypt device last (crypto_openssl.c
# crypt_cipher_init, utils_storage_wrappers.c): its debug log says which ("storage wrapper
# type": 1 userspace, 2 dm-crypt). Only the fast one is a fair baseline.
t0=$(now)
cryptsetup --debug reencrypt --encrypt --type luks2 --reduce-device-size 32M $cheap --key-file /tmp/key -q --batch-mode /dev/vdb \
  > /tmp/cs.log 2>&1 || { tail -20 /tmp/cs.log; die "cryptsetup reencrypt failed"; }
t_cs=$(el $t0 $(now))
grep -q "New cipher storage wrapper type: 1" /tmp/cs.log ||
  die "cryptsetup did not encrypt in userspace: $(grep -E 'wrapper|dmcrypt' /tmp/cs.log | head -3)"
t_cs_set="$(cryptsetup --version | cut -d' ' -f2), $(sed -n 's/.*Crypto backend (\([^ ]* [^ ]*\).*/\1/p' /tmp/cs.log | head -1) in userspace"
echo "  $t_cs_set: $t_cs s ($(rate $t_cs) MiB/s)"

room=32   # MiB left after the PV: --reduce-device-size
lv_setup() {   # [DEV]
  local dev=${1:-/dev/vda} s; s=$(blockdev --getsize64 ${1:-/dev/vda})
  PVOPTS="--setphysicalvolumesize $((s / 1048576 - room))M" mkvg vg $dev
  mklv a -l 50%FREE vg
  mklv fs -l 100%FREE vg
  run mkfs.ext4 -q -E nodiscard,lazy_itable_init=1 /dev/mapper/vg-fs
  mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
}
pve() {   # LOG DEV [ARG...]: pvencrypt -v, traced, its peak RSS measured; seconds in $T, start (uptime) in $T0
  local log=$1 dev=$2; shift 2
  sync
  t0=$(now); T0=$t0
  PVENCRYPT_TRACE=1 pvwriter maxrss pvencrypt --key-file /tmp/key $cheap -y -v "$@" $dev > "$log" 2>&1 ||
    { cat "$log"; die "pvencrypt failed"; }
  T=$(el $t0 $(now))
  grep -E 'switched|encrypted|maxrss' "$log"
}
teardown() {   # [DEV]
  local dev=${1:-/dev/vda}
  umount /mnt/fs; run vgchange -q -an vg; run cryptsetup close ${dev#/dev/}_crypt
  dd if=/dev/zero of=$dev bs=1M count=32 oflag=direct 2>/dev/null   # drop the LUKS2 header
}

freeze_of() { sed -n 's/.*switched under a freeze of \([0-9.]*\) ms.*/\1/p' "$1"; }
rate_of() { sed -n 's/.*encrypted .* (\([0-9.]*\) MiB\/s).*/\1/p' "$1"; }
trace_ms() { sed -n "s/^pvencrypt: trace: $2 +\([0-9.]*\)ms.*/\1/p" "$1" | head -1; }
commits_of() { grep -c "mover: [0-9]* in sync" "$1"; }
rss_of() { echo $(( $(sed -n 's/^maxrss_kb=//p' "$1") / 1024 )); }

echo "=== 4. pvencrypt, live VG, no load"
lv_setup
pve /tmp/p4.log /dev/vda; t_p=$T
teardown
first=$(trace_ms /tmp/p4.log 'mover: copying') pass=$(trace_ms /tmp/p4.log passphrase)
tail_at=$(trace_ms /tmp/p4.log 'vg unchanged')

with_writer() {   # LOG [ARG...]: pvencrypt under the writer, whose records are verified
  local log=$1; shift
  fill /dev/vda
  lv_setup
  writer_start /mnt/fs/log
  wait_for '[ "$(writer_acked)" -ge 50 ]' 60 || die "writer too slow"
  pve "$log" /dev/vda "$@"
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
with_writer /tmp/p5.log
t_w=$T start5=$T0 stall5=$stall stall_at5=$stall_at

echo "=== 7. the mover's tunings"
sweep=""
for tune in ${BENCH_TUNINGS:-chunk=8M,region=2M chunk=4M,region=2M chunk=8M,region=4M chunk=8M,region=8M}; do
  fill /dev/vda
  lv_setup
  PVENCRYPT_MOVER=$tune pve /tmp/p7.log /dev/vda; t7=$T
  teardown
  export PVENCRYPT_MOVER=$tune
  with_writer /tmp/p7w.log
  unset PVENCRYPT_MOVER
  sweep="$sweep
$(printf '%-28s %8s s %8s MiB/s %6s %6s %6s %8s MiB/s %5s %6s ms %5s' "$tune" $t7 $(rate $t7) $(ratio $(rate $t7) $(rate $t_dd)) \
    $(ratio $(rate $t7) $(rate $t_mir)) $(ratio $(rate $t7) $(rate $t_cs)) $(rate_of /tmp/p7.log) $(commits_of /tmp/p7.log) \
    $((stall / 1000)) $(echo "$stall $(freeze_of /tmp/p7w.log)" | awk '{printf "%.2f", $1 / 1000 / $2}'))"
done

echo "=== 8. pvencrypt on an 8 GiB disk"
fill /dev/vdc
big_mib=$(( $(blockdev --getsize64 /dev/vdc) / 1048576 - 32 ))
lv_setup /dev/vdc
pve /tmp/p8.log /dev/vdc; t_big=$T
teardown /dev/vdc

row() {   # NAME SECONDS SETTING
  local r; r=$(rate "$2")
  printf '%-40s %8s s %8s MiB/s %6s %6s %6s   %s\n' "$1" "$2" "$r" \
    "$(ratio $r $(rate $t_dd))" "$(ratio $r $(rate $t_mir))" "$(ratio $r $(rate $t_cs))" "$3"
}
per_gib() { echo "$1 $2" | awk '{printf "%.1f", $1 * 1024 / $2}'; }
{
echo
echo "$data_mib MiB each (steps 1-7); kernel $(uname -r), $(nproc) vCPUs, TCG"
printf '%-40s %10s %14s %6s %6s %6s   %s\n' step time rate 'vs 1' 'vs 2' 'vs 3' setting
row "1. dd through dm-crypt (the limit)" $t_dd "$t_dd_set, the best of 4 and 16 MiB"
row "2. one kernel mirror into dm-crypt" $t_mir "$t_mir_set, the best of 1-16 MiB"
row "3. cryptsetup reencrypt --encrypt" $t_cs "$t_cs_set"
row "4. pvencrypt, live VG, no load" $t_p "whole command"
row "5. pvencrypt, live VG, writer running" $t_w "whole command"
p4=$(rate_of /tmp/p4.log)
echo "pvencrypt's data phase: $p4 MiB/s without load ($(ratio $p4 $(rate $t_dd)) x the limit), $(rate_of /tmp/p5.log) MiB/s with the writer"
echo "first byte: the kernel mover copies $(echo "$first $pass" | awk '{printf "%.2f", ($1 - $2) / 1000}') s after the passphrase" \
  "(the first write, libcryptsetup's copy of the first segment to the tail, after $(echo "$tail_at $pass" | awk '{printf "%.2f", ($1 - $2) / 1000}') s)"
echo "before the passphrase (beside preflight), s from the start: formatted $(echo "$(trace_ms /tmp/p4.log formatted)" | awk '{printf "%.2f", $1 / 1000}'), temporary keyslot $(echo "$(trace_ms /tmp/p4.log 'temporary keyslot')" | awk '{printf "%.2f", $1 / 1000}'), preflight done $(echo "$(trace_ms /tmp/p4.log 'preflight: kernel')" | awk '{printf "%.2f", $1 / 1000}'), the passphrase $(echo "$pass" | awk '{printf "%.2f", $1 / 1000}')"
echo "after the passphrase, s: $(for s in 'passphrase keyslot' prepared 'vg unchanged' sync resumed 'volume key' 'mover: start' 'mover: copying'; do
  printf '%s %s, ' "$s" "$(echo "$(trace_ms /tmp/p4.log "$s") $pass" | awk '{printf "%.2f", ($1 - $2) / 1000}')"; done | sed 's/, $//')"
f4=$(freeze_of /tmp/p4.log) f5=$(freeze_of /tmp/p5.log)
echo "freeze: $f4 ms without load, $f5 ms with the writer"
echo "writer's longest stall: $((stall5 / 1000)) ms ($(echo "$stall5 $f5" | awk '{printf "%.2f", $1 / 1000 / $2}')x the freeze)," \
  "began $(echo "$stall_at5 $start5" | awk '{printf "%.2f", $1 / 1000 - $2}') s into the run; the same writer alone, 30 s: $((noise / 1000)) ms"
echo "pvencrypt peak RSS: $(rss_of /tmp/p4.log) MiB without load, $(rss_of /tmp/p5.log) MiB with the writer, $(rss_of /tmp/p8.log) MiB on 8 GiB"
echo "commits: $(commits_of /tmp/p4.log) for $data_mib MiB ($(per_gib $(commits_of /tmp/p4.log) $data_mib) per GiB, each two header copies: $(per_gib $((2 * $(commits_of /tmp/p4.log))) $data_mib) header writes per GiB)"
pb=$(rate_of /tmp/p8.log)
echo "scale: $big_mib MiB in $t_big s, $(rate $t_big $big_mib) MiB/s whole, data phase $pb MiB/s ($(ratio $pb $p4) x the 1 GiB rate);" \
  "$(commits_of /tmp/p8.log) commits ($(per_gib $(commits_of /tmp/p8.log) $big_mib) per GiB)"
echo "the mover's tunings (PVENCRYPT_MOVER): no load, then the writer's longest stall and its ratio to that run's freeze:"
printf '%-28s %10s %14s %6s %6s %6s %14s %5s %9s %5s\n' tuning time rate 'vs 1' 'vs 2' 'vs 3' 'data phase' commits stall 'x frz' 
echo "$sweep" | sed '/^$/d'
} | sed 's/^/BENCH: /'
result
