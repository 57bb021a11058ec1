# seconds: 200   (measured, TCG: run.sh starts the longest first)
# --decrypt's first move and data phase (DECRYPT.md, steps 5 and 6); the switch back is not
# written yet (a test build stops before it: PVENCRYPT_DECRYPT_UNFINISHED=1). A LUKS2 device
# made by hand (luksFormat, a PV on the mapping ending 16 MiB short of the tail), open, a
# writer on an LV whose extents lie in the first 16 MiB (the moved segment):
#   1. the run: T0 at the tail, the tail attached as a loop device, the first 16 MiB's
#      ciphertext moved to the head under one suspension of NAME, T1 at the tail, then the
#      kernel mover decrypts the rest in place, committing at the tail, up to the moved
#      segment; every acknowledged record and every LV's bytes kept; stock cryptsetup opens
#      the device with the tail's header, and stock `reencrypt --resume-only` finishes the
#      decryption online: LVM then finds the plain PV on the raw disk, the bytes unchanged;
#   2. killed inside the first move's suspension before the copy, and before T1 is written:
#      the guardian resumes NAME as it was (T0 at the tail); 3. killed once T1 is written: it
#      resumes NAME on the moved table; 4. killed inside the data phase's first commit, its
#      header written: NAME runs on, through the mirrors of the dead run.
#   Each time the writer goes on, `pvencrypt --decrypt` run again finds the decryption through
#   the header at the tail (the head holds ciphertext) and takes it up to the moved segment
#   (from T0: the first move again; past it: the data phase, taking over the dead run's
#   devices), every acknowledged record is there, and stock cryptsetup opens the device with
#   the tail's header, the bytes unchanged.
# disks: 128M
# timeout: 900
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
export PVENCRYPT_DECRYPT_UNFINISHED=1
M=$((16 << 20)) TAIL=$((112 << 20))

fresh() {
  vgchange -q -an vg >/dev/null 2>&1; cryptsetup close vda_crypt 2>/dev/null; detach_all
  run dd if=/dev/zero of=/dev/vda bs=1M count=20 oflag=direct
  run dd if=/dev/zero of=/dev/vda bs=1M seek=112 count=16 oflag=direct
  luks_by_hand
  b_sha=$(sha /dev/mapper/vg-b)
  writer_start /dev/mapper/vg-w
}
# (busybox's losetup: no -j, no -D)
tail_loop() {
  local l
  for l in /sys/block/loop*; do
    [ "$(cat $l/loop/backing_file 2>/dev/null)" = /dev/vda ] && [ "$(cat $l/loop/offset)" = $TAIL ] &&
      { echo /dev/${l##*/}; return; }
  done
}
detach_all() { local l; for l in /sys/block/loop*; do [ -d $l/loop ] && losetup -d /dev/${l##*/}; done; true; }
first_offset() { dmsetup table vda_crypt | head -1 | awk '{print $8}'; }
reencrypting() { cryptsetup luksDump "$(tail_loop)" | grep -q 'online-reencrypt'; }
# again LABEL: pvencrypt --decrypt run again takes the decryption up to the moved segment.
again() {
  local out rc
  out=$(pvencrypt --decrypt -y --key-file /tmp/key /dev/vda 2>&1); rc=$?
  echo "$out"
  check_eq "$1, run again: exit 0" "$rc" 0
  check "$1, run again: it goes on from the tail's header" 'echo "$out" | grep -q "a decryption by pvencrypt is under way"'
  check "$1, run again: decrypted up to the moved segment" 'echo "$out" | grep -q "decrypted all but the first 16 MiB"'
  check_eq "$1, run again: NAME maps the rest as plaintext in place" \
    "$(dmsetup table vda_crypt | sed -n 2p | awk '{print $3, $5}')" "linear 32768"
  check "$1, run again: no mover device left" '! dmsetup ls | grep -q "^pvencrypt-"'
}
# kept LABEL: the writer goes on, then every acknowledged record and vg-b are there, through
# NAME as it runs and through stock cryptsetup with the tail's header.
kept() {
  local before; before=$(writer_acked)
  check "$1: the writer goes on" "wait_for '[ \$(writer_acked) -gt $before ]' 20"
  writer_stop; acked=$(writer_acked)
  check "$1: every acknowledged record ($acked)" pvwriter verifydev /dev/mapper/vg-w "$acked"
  check_eq "$1: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"
  run vgchange -q -an vg
  run cryptsetup close vda_crypt
  # A killed run's mover devices (pvencrypt takes them over when run again): they hold vda.
  for d in $(dmsetup ls | awk '$1 ~ /^pvencrypt-.*-m/ {print $1}') $(dmsetup ls | awk '$1 ~ /^pvencrypt-/ {print $1}'); do
    dmsetup remove $d 2>/dev/null
  done
  check "$1: stock cryptsetup opens vda with the tail's header" \
    cryptsetup open --key-file /tmp/key --header "$(tail_loop)" /dev/vda vda_crypt
  run vgchange -q -ay vg; dmsetup mknodes
  check "$1: stock cryptsetup: every acknowledged record" pvwriter verifydev /dev/mapper/vg-w "$acked"
  check_eq "$1: stock cryptsetup: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"
}

echo "=== 1. the first move"
fresh
out=$(pvencrypt --decrypt -y -vv --key-file /tmp/key /dev/vda 2>&1); rc=$?
echo "$out"
check_eq "the run: exit 0" "$rc" 0
check "the run: says what moved" 'echo "$out" | grep -q "the first 16 MiB moved to the head"'
check "the run: says what it decrypted" 'echo "$out" | grep -q "decrypted all but the first 16 MiB"'
check_eq "NAME maps the rest as plaintext in place" "$(dmsetup table vda_crypt | sed -n 2p | awk '{print $3, $5}')" "linear 32768"
check "no mover device left" '! dmsetup ls | grep -q "^pvencrypt-"'
check "the tail is attached as a loop device" '[ -b "$(tail_loop)" ]'
check "the tail holds a decryption (stock luksDump: a reencryption)" reencrypting
check "the head holds no LUKS header" '! cryptsetup isLuks /dev/vda'
check_eq "NAME maps its first 16 MiB at the head" "$(first_offset)" 0
check "nothing left suspended" '[ -z "$(suspended_lvs)" ]'
check "no alias left" '! dmsetup info vda_crypt-pvencrypt-alias >/dev/null 2>&1'
kept "the first move"
loop=$(tail_loop)
out=$(cryptsetup reencrypt --resume-only --key-file /tmp/key --header "$loop" --active-name vda_crypt 2>&1); rc=$?
echo "$out" | tail -3
check_eq "stock reencrypt --resume-only finishes the decryption online" "$rc" 0
check_eq "after stock's decryption: every acknowledged record" \
  "$(pvwriter verifydev /dev/mapper/vg-w "$acked" >/dev/null 2>&1 && echo ok)" ok
check_eq "after stock's decryption: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"
dmsetup table | sed 's/^/after stock: /'
run vgchange -q -an vg
# (stock's finish may have taken vda_crypt away itself)
! dmsetup info vda_crypt >/dev/null 2>&1 || run cryptsetup close vda_crypt
detach_all
run vgchange -q -ay vg; dmsetup mknodes
pvs
check "LVM finds the plain PV on vda" 'pvs --noheadings -o pv_name | tr -d " " | grep -qx /dev/vda'
check_eq "the plain PV: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"

for step in decrypt-suspended decrypt-loaded decrypt-committed; do
  echo "=== killed at $step"
  fresh
  out=$(PVENCRYPT_FAULT=$step:exit pvencrypt --decrypt -y --key-file /tmp/key /dev/vda 2>&1); rc=$?
  check_eq "$step: killed inside the suspension" "$rc" 99
  check "$step: the guardian resumed NAME" "wait_for '[ -z \"\$(suspended_lvs)\" ]' 10"
  check "$step: the guardian removed the alias" "wait_for '! dmsetup info vda_crypt-pvencrypt-alias >/dev/null 2>&1' 10"
  dmesg | grep -a 'pvencrypt: pvencrypt died' | tail -1
  if [ $step != decrypt-committed ]; then
    check "$step: the tail holds T0" '! reencrypting'
    check_eq "$step: NAME runs as it was" "$(first_offset)" $((M >> 9))
  else
    check "$step: the tail holds T1" reencrypting
    check_eq "$step: NAME maps its first 16 MiB at the head" "$(first_offset)" 0
  fi
  again "$step"
  kept "$step"
done

echo "=== killed inside the data phase's first commit"
fresh
out=$(PVENCRYPT_FAULT=committed:exit pvencrypt --decrypt -y --key-file /tmp/key /dev/vda 2>&1); rc=$?
check_eq "commit: killed inside the suspension" "$rc" 99
check "commit: the guardian resumed NAME" "wait_for '[ -z \"\$(suspended_lvs)\" ]' 10"
dmesg | grep -a 'pvencrypt: pvencrypt died' | tail -1
check "commit: the tail holds the first commit" 'cryptsetup luksDump "$(tail_loop)" | grep -q "linear"'
again "commit"
kept "commit"
result
