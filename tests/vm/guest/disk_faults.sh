# Guest half of host/t_disk_faults.sh (not run on its own): disk faults in the data phase
# (ARCHITECTURE.md, "Disk faults"). The PV is a dm device over vda (pvdisk) whose table gets an
# `error` target for 4 KiB (it fails reads and writes, not flushes):
# pvphase=1: (1) under plaintext a chunk will copy, from the start (kcopyd's read fails);
#   (2) under the place a chunk's ciphertext goes, put there when that chunk's devices exist
#   but its copy has not started (kcopyd's write fails); (3) under a block an LV keeps
#   rewriting, once its chunk is copied (the write reaches the encrypted copy only). Each
#   time: pvencrypt stops with exit 5 and a message naming the PV and a sector range holding
#   the bad block; the LVs outside it read whole and a writer goes on; nothing waits
#   (timeouts everywhere). After (1) and (2), healed: no byte changed, every acknowledged
#   record there, also through stock cryptsetup, and the run resumes (into (3)). After (3):
#   the block reads the last acknowledged record or fails. What the checks of pvphase=2 need
#   goes to vdb; then the power is cut.
# pvphase=2: a fresh boot, the disk healed: stock cryptsetup opens pvdisk, every LV reads as
#   written, the block of (3) holds the last acknowledged record; pvencrypt finishes.
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
# pvdisk starts 1 MiB into vda: LVM would see the PV's label twice otherwise.
OFF=2048 n=$(( $(blockdev --getsz /dev/vda) - 2048 ))
run dmsetup create pvdisk --table "0 $n linear /dev/vda $OFF"
dmsetup mknodes

if [ "$(arg pvphase)" = 2 ]; then
  set -- $(head -c 512 /dev/vdb | head -1)
  a_sha=$1 b_sha=$2 at=$3 ack3=$4
  echo "=== after the power cut, the disk healed: a_sha=$a_sha b_sha=$b_sha block $at record $ack3"
  check "stock cryptsetup opens pvdisk" cryptsetup open --key-file /tmp/key /dev/mapper/pvdisk pvdisk_crypt
  dmsetup mknodes; vgscan -q >/dev/null 2>&1
  run vgchange -q -ay vg; dmsetup mknodes
  # block N of vg-w: the record last written there whose write was acknowledged.
  block() { dd if=/dev/mapper/vg-w bs=4k skip=$1 count=1 iflag=direct 2>/dev/null | tr -d ' \0'; }
  check_eq "after the reboot: the block of (3) holds the last acknowledged record" "$(block $at)" "record$ack3"
  check_eq "after the reboot: vg-a unchanged" "$(sha /dev/mapper/vg-a)" "$a_sha"
  check_eq "after the reboot: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"
  timeout 900 pvencrypt --key-file /tmp/key -i 1 > /tmp/pve.out 2>&1; rc=$?
  cat /tmp/pve.out
  check_eq "pvencrypt resumes and finishes" "$rc" 0
  check "no reencryption left" '! cryptsetup luksDump /dev/mapper/pvdisk | grep -q online-reencrypt'
  check_eq "finished: the block of (3) holds the last acknowledged record" "$(block $at)" "record$ack3"
  check_eq "finished: vg-a unchanged" "$(sha /dev/mapper/vg-a)" "$a_sha"
  check_eq "finished: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"
  result
fi
PVOPTS="--setphysicalvolumesize 440M" mkvg vg /dev/mapper/pvdisk
mklv a -L 140M vg
mklv w -L 32M vg
mklv b -L 260M vg
dd if=/dev/urandom of=/dev/mapper/vg-a bs=1M count=140 oflag=direct 2>/dev/null
dd if=/dev/urandom of=/dev/mapper/vg-b bs=1M count=260 oflag=direct 2>/dev/null
a_sha=$(sha /dev/mapper/vg-a) b_sha=$(sha /dev/mapper/vg-b)
# Sector of an LV's first byte on pvdisk (NAME keeps the PV's offsets).
lv_at() { dmsetup table vg-$1 | awk '{print $5}'; }
B0=$(lv_at b) W0=$(lv_at w)
F1=$((B0 + 180 * 2048)) F2=$((B0 + 100 * 2048)) F3=$((W0 + 16 * 2048))
echo "bad blocks: (1) $F1 (2) $F2 (3) $F3 (sectors of pvdisk)"

# fault START TARGET...   pvdisk with 8 sectors from START on TARGET; healed: linear again.
load() { dmsetup load pvdisk && timeout 60 dmsetup suspend pvdisk && timeout 60 dmsetup resume pvdisk; }
fault() {
  local s=$1; shift
  printf '0 %d linear /dev/vda %d\n%d 8 %s\n%d %d linear /dev/vda %d\n' $s $OFF $s "$*" $((s + 8)) $((n - s - 8)) \
    $((OFF + s + 8)) |
    load || die "cannot load the fault"
}
healed() { echo "0 $n linear /dev/vda $OFF" | load || die "cannot heal pvdisk"; }
# stopped LABEL BAD RC   exit 5, and the message names pvdisk and a range of sectors holding BAD.
stopped() {
  cat /tmp/pve.out
  check_eq "$1: the run stops as Failed (exit 5)" "$3" 5
  check "$1: the message names the PV and a sector range holding sector $2" \
    "grep -o 'Disk fault on .*' /tmp/pve.out | grep -oE '[0-9]+-[0-9]+' |
       awk -F- -v s=$2 '\$1 <= s && s <= \$2 { ok = 1 } END { exit !ok }'"
  check "$1: no device left suspended" '[ -z "$(suspended_lvs)" ]'
  # A mover device left behind holds pvdisk: stock cryptsetup would refuse to open it.
  check "$1: no mover device left" "wait_for '! dmsetup ls | grep -q ^pvencrypt-' 10"
  dmsetup ls | grep '^pvencrypt-' || true
}
serving() {
  local before; before=$(writer_acked)
  kill -0 $WRITER_PID 2>/dev/null || { echo "the writer ended:"; cat /tmp/writer.out; dmesg | tail -20; }
  check "$1: the writer on vg-w goes on" "wait_for '[ \$(writer_acked) -gt $before ]' 10"
  check_eq "$1: vg-a (outside the bad block) reads whole, unchanged" "$(timeout 120 pvwriter sum /dev/mapper/vg-a)" "$a_sha"
}

echo "=== 1. the plaintext of a chunk unreadable"
fault $F1 error
writer_start /dev/mapper/vg-w
timeout 900 pvencrypt --key-file /tmp/key $cheap -y -i 1 /dev/mapper/pvdisk > /tmp/pve.out 2>&1
stopped "unreadable plaintext" $F1 $?
dmesg | grep -a raid1 | tail -5
serving "unreadable plaintext"
check "unreadable plaintext: the LVs run on the plaintext again (no mover mirror left)" \
  '[ -z "$(dmsetup table | grep " mirror ")" ]'
healed
check_eq "unreadable plaintext: healed, vg-b unchanged" "$(timeout 120 pvwriter sum /dev/mapper/vg-b)" "$b_sha"

# armed_run PVENCRYPT_FAULT=POINT:stop COND ARM ARGS...   pvencrypt ARGS, stopping itself at
# POINT at every commit; at the first stop where COND holds, ARM runs; every stop goes on
# (SIGCONT). Exit code in RC; ARMED set if ARM ran.
armed_run() {
  local fault=$1 cond=$2 arm=$3 pve st; shift 3
  ARMED=
  env "$fault" pvencrypt "$@" > /tmp/pve.out 2>&1 &
  pve=$!
  while :; do
    wait_for 'st=$(pstate $pve); [ "$st" = T ] || [ "$st" = Z ] || [ -z "$st" ]' 600 ||
      { echo "CHECK-FAIL: pvencrypt neither stops nor ends"; kill -9 $pve; break; }
    [ "$st" = T ] || break
    if [ -z "$ARMED" ] && eval "$cond"; then eval "$arm"; ARMED=1; fi
    kill -CONT $pve
  done
  wait $pve; RC=$?
}
# unstarted_over S   a chunk's dm-crypt device writes sector S of pvdisk, its mirror not started.
unstarted_over() {
  local c
  for c in $(dmsetup ls | awk '$1 ~ /^pvencrypt-[0-9a-f]+-c[0-9]+$/ {print $1}'); do
    dmsetup table $c | awk -v s=$1 '{ exit !($8 <= s && s < $8 + $2) }' || continue
    dmsetup status $(echo $c | sed 's/-c\([0-9]*\)$/-m\1/') | grep -q " mirror " || return 0
  done
  return 1
}
# synced_over S   the name of a running mover mirror whose plaintext leg holds sector S, all copied.
synced_over() {
  local m
  for m in $(dmsetup ls | awk '$1 ~ /^pvencrypt-[0-9a-f]+-m[0-9]+$/ {print $1}'); do
    dmsetup table $m | awk -v s=$1 '$3 == "mirror" { exit !($9 <= s && s < $9 + $2) } { exit 1 }' || continue
    dmsetup status $m | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, r, "/"); exit r[1] != r[2] } exit 1 }' &&
      { echo $m; return 0; }
  done
  return 1
}

echo "=== 2. the place of a chunk's ciphertext unwritable"
armed_run PVENCRYPT_FAULT=name-resumed:stop "unstarted_over $F2" "fault $F2 error" --key-file /tmp/key -i 1
check "unwritable ciphertext: the bad block went under a chunk's new place before its copy" '[ -n "$ARMED" ]'
stopped "unwritable ciphertext" $F2 $RC
serving "unwritable ciphertext"
healed
check_eq "unwritable ciphertext: healed, vg-b unchanged" "$(timeout 120 pvwriter sum /dev/mapper/vg-b)" "$b_sha"

echo "=== closed, opened by stock cryptsetup"
writer_stop; acked=$(writer_acked)
check "every acknowledged record of vg-w is there ($acked)" pvwriter verifydev /dev/mapper/vg-w "$acked"
run vgchange -q -an vg
run cryptsetup close pvdisk_crypt
run cryptsetup open --key-file /tmp/key /dev/mapper/pvdisk pvdisk_crypt
run vgchange -q -ay vg; dmsetup mknodes
check_eq "stock cryptsetup: vg-a unchanged" "$(sha /dev/mapper/vg-a)" "$a_sha"
check_eq "stock cryptsetup: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"
check "stock cryptsetup: every acknowledged record of vg-w ($acked)" pvwriter verifydev /dev/mapper/vg-w "$acked"

echo "=== 3. a write to the plaintext fails while vg-w is written"
# One block of vg-w rewritten over and over: its sequence number, kept when acknowledged.
at=$(( (F3 - W0) / 8 ))
( n=0; while :; do n=$((n + 1)); printf '%-4096s' "record $n" > /tmp/rec
    timeout 30 dd if=/tmp/rec of=/dev/mapper/vg-w bs=4k seek=$at count=1 oflag=direct conv=notrunc,fsync 2>/dev/null &&
      echo $n > /tmp/ack3; done ) &
loop=$!
# Once the block's chunk is copied (NAME running, before the commit), the block goes bad:
# the next write to it reaches the encrypted copy only, and the mirror holds it. pvencrypt
# stays stopped meanwhile: its guardian must put the chunk back on its plaintext (which
# fails the held write to its writer) without it.
arm3='fault $F3 error; m=$(synced_over $F3); t0=$(now)
  wait_for "dmsetup table $m | grep -q \" linear \"" 30 && released=$(awk -v a=$t0 -v b=$(now) "BEGIN { print b - a }")'
released=
armed_run PVENCRYPT_FAULT=mover-synced:stop "synced_over $F3 > /dev/null" "$arm3" --key-file /tmp/key -i 1
check "failed plaintext write: the bad block went under a copied chunk" '[ -n "$ARMED" ]'
echo "failed plaintext write: the chunk ran on its plaintext ${released:-never} s after the fault, pvencrypt stopped"
check "failed plaintext write: pvencrypt stopped, its guardian put the chunk on its plaintext within 5 s" \
  "[ -n '$released' ] && awk 'BEGIN { exit !($released <= 5) }'"
stopped "failed plaintext write" $F3 $RC
check "failed plaintext write: the LVs run on the plaintext again (no mover mirror left)" \
  '[ -z "$(dmsetup table | grep " mirror ")" ]'
kill $loop; wait $loop
serving_b() { check_eq "$1: vg-$2 reads whole, unchanged" "$(timeout 120 pvwriter sum /dev/mapper/vg-$2)" "$3"; }
serving_b "failed plaintext write" a "$a_sha"
serving_b "failed plaintext write" b "$b_sha"
got=$(timeout 30 dd if=/dev/mapper/vg-w bs=4k skip=$at count=1 iflag=direct 2>/dev/null | tr -d ' \0')
check "failed plaintext write: some write to the block was acknowledged" '[ -s /tmp/ack3 ]'
echo "last acknowledged: record $(cat /tmp/ack3 2>/dev/null); the block reads '$got'"
check "failed plaintext write: the block reads the last acknowledged record or fails, never older bytes" \
  '[ -z "$got" ] || [ "$got" = "record$(cat /tmp/ack3)" ]'
echo "$a_sha $b_sha $at $(cat /tmp/ack3)" | dd of=/dev/vdb conv=fsync 2>/dev/null
(result); rc=$?
# The power cut: nothing synced, no device torn down (pvphase=2 boots on the same disks).
echo "VM-EXIT: $rc"
echo o > /proc/sysrq-trigger
