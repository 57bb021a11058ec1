# seconds: 400   (measured, TCG: run.sh starts the longest first)
# --decrypt live, end to end (DECRYPT.md, steps 5 to 7; a test build: PVENCRYPT_DECRYPT_UNFINISHED=1).
# A LUKS2 device made by hand (luksFormat, a PV on the mapping ending 16 MiB short of the
# tail), open, a writer on an LV whose extents lie in the first 16 MiB (the moved segment):
#   1. the run: T0 at the tail, the first 16 MiB's ciphertext moved to the head under one
#      suspension of NAME, T1, the kernel mover decrypts the rest in place, then under one
#      suspension of the LVs the head is decrypted in place and the LVs move onto the raw
#      device; the header at the tail wiped, NAME and the tail's loop device gone. Every
#      acknowledged record and every LV's bytes kept; LVM finds the plain PV on the raw disk.
#      Held once T0 is at the tail, a second pvencrypt --decrypt is refused meanwhile.
#   2. killed inside the first move before T1 (the guardian resumes NAME as it was: T0 at the
#      tail) and after it (on the moved table); inside the data phase's first commit; inside
#      the switch back before its header (back-loaded: the LVs back on NAME), with it written
#      (back-hot) and halfway through the head (back-half): the guardian finishes the head by
#      the checksums and resumes the LVs on the raw device.
#   3. --abort in the data phase: the run stops at its next checkpoint; --status shows it
#      running (decrypting), then stopped with its progress (the header at the tail).
#   Each time the writer goes on, and `pvencrypt --decrypt` run again finds the decryption
#   through the header at the tail and finishes it; every acknowledged record kept.
# disks: 128M
# timeout: 1200
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
export PVENCRYPT_DECRYPT_UNFINISHED=1
M=$((16 << 20)) TAIL=$((112 << 20))
VDA=$(majmin /dev/vda)

fresh() {
  vgchange -q -an vg >/dev/null 2>&1; cryptsetup close vda_crypt 2>/dev/null; detach_all
  for d in $(dmsetup ls | awk '$1 ~ /^pvencrypt-/ {print $1}'); do dmsetup remove $d 2>/dev/null; done
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
tail_state() { dd if=/dev/vda of=/tmp/tail bs=1M skip=112 count=16 2>/dev/null; sha /tmp/tail; }
reencrypting() { cryptsetup luksDump "$(tail_loop)" | grep -q 'online-reencrypt'; }
hot() { cryptsetup luksDump "$(tail_loop)" | grep -q 'in-reencryption'; }
on_raw() { [ "$(dmsetup table vg-w | awk '{print $4}')" = "$VDA" ]; }
ZERO_TAIL=$(dd if=/dev/zero of=/tmp/tail bs=1M count=16 2>/dev/null; sha /tmp/tail)

# decrypted LABEL OUT: the end of a run that finished.
decrypted() {
  said=$2
  check "$1: says it is decrypted" 'echo "$said" | grep -q "decrypted (.*it holds the plain PV"'
  check "$1: the LVs map the raw device" on_raw
  check "$1: NAME is gone" '! dmsetup info vda_crypt >/dev/null 2>&1'
  check "$1: no mover device left" '! dmsetup ls | grep -q "^pvencrypt-"'
  check "$1: the tail's loop device is gone" '[ -z "$(tail_loop)" ]'
  check_eq "$1: the header at the tail is wiped (zeros)" "$(tail_state)" "$ZERO_TAIL"
  check "$1: the head holds no LUKS header" '! cryptsetup isLuks /dev/vda'
  check "$1: nothing left suspended" '[ -z "$(suspended_lvs)" ]'
}
# again LABEL: pvencrypt --decrypt run again finishes the decryption.
again() {
  local out rc
  out=$(pvencrypt --decrypt -y --key-file /tmp/key /dev/vda 2>&1); rc=$?
  echo "$out"
  check_eq "$1, run again: exit 0" "$rc" 0
  check "$1, run again: it goes on from the tail's header" 'echo "$out" | grep -q "a decryption by pvencrypt is under way"'
  decrypted "$1, run again" "$out"
}
# kept LABEL: the writer goes on, then every acknowledged record and vg-b are there, and
# again once LVM activates the VG from the raw disk alone.
kept() {
  local before; before=$(writer_acked)
  check "$1: the writer goes on" "wait_for '[ \$(writer_acked) -gt $before ]' 20"
  writer_stop; acked=$(writer_acked)
  check "$1: every acknowledged record ($acked)" pvwriter verifydev /dev/mapper/vg-w "$acked"
  check_eq "$1: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"
  run vgchange -q -an vg
  run vgchange -q -ay vg; dmsetup mknodes
  check "$1: LVM finds the plain PV on vda" 'pvs --noheadings -o pv_name,vg_name | grep -q "/dev/vda *vg"'
  check "$1: the plain PV: every acknowledged record" pvwriter verifydev /dev/mapper/vg-w "$acked"
  check_eq "$1: the plain PV: vg-b unchanged" "$(sha /dev/mapper/vg-b)" "$b_sha"
}

echo "=== 1. the whole run"
fresh
# Held once T0 is at the tail (nothing suspended), while a second run tries.
PVENCRYPT_FAULT=decrypt-tail:stop PVENCRYPT_TRACE=1 pvencrypt --decrypt -y -vv -i 1 --key-file /tmp/key /dev/vda \
  > /tmp/run1.out 2>&1 &
pid=$!
check "the run: held at decrypt-tail" "wait_for '[ \"\$(pstate $pid)\" = T ]' 60"
# (One conversion listed: each field is looked for on its own.)
status_has() { local st f; st=$(pvencrypt --status --reportformat json_std | tr -d ' \n'); echo "$st"
  for f in "$@"; do echo "$st" | grep -q "$f" || return 1; done; }
check "--status: the run, preparing, with its pid" \
  "status_has '\"pv\":\"/dev/vda\"' '\"state\":\"preparing\"' '\"pid\":$pid'"
out=$(pvencrypt --decrypt -y --key-file /tmp/key /dev/vda 2>&1); rc=$?
echo "$out"
check_eq "a second run meanwhile: refused" "$rc" 3
check "it names the first" 'echo "$out" | grep -q "already being converted by another pvencrypt (pid $pid)"'
kill -CONT $pid; wait $pid; rc=$?
out=$(cat /tmp/run1.out)
echo "$out" | grep -v "trace: \(chunk\|commit\|mirror\)"
check_eq "the run: exit 0" "$rc" 0
check "the run: its progress, as pvmove's" 'echo "$out" | grep -q "^/dev/vda: Decrypted: 100.00%"'
check "the run: says what moved" 'echo "$out" | grep -q "the first 16 MiB moved to the head"'
check "the run: says it switched back" 'echo "$out" | grep -q "the LVs moved back onto it under a suspension of"'
decrypted "the run" "$out"
kept "the run"

for step in decrypt-loaded decrypt-committed committed back-loaded back-hot back-half; do
  echo "=== killed at $step"
  fresh
  out=$(PVENCRYPT_FAULT=$step:exit pvencrypt --decrypt -y --key-file /tmp/key /dev/vda 2>&1); rc=$?
  check_eq "$step: killed inside the suspension" "$rc" 99
  check "$step: the guardian resumed the devices" "wait_for '[ -z \"\$(suspended_lvs)\" ]' 20"
  check "$step: no alias left" "wait_for '! dmsetup info vda_crypt-pvencrypt-alias >/dev/null 2>&1' 10"
  dmesg | grep -a 'pvencrypt: pvencrypt died' | tail -1
  case $step in
    decrypt-loaded)
      check "$step: the tail holds T0" '! reencrypting'
      check_eq "$step: NAME runs as it was" "$(first_offset)" $((M >> 9));;
    decrypt-committed)
      check "$step: the tail holds T1" reencrypting
      check_eq "$step: NAME maps its first 16 MiB at the head" "$(first_offset)" 0;;
    committed)
      check "$step: the tail holds the first commit" 'cryptsetup luksDump "$(tail_loop)" | grep -q "linear"';;
    back-loaded)
      check "$step: the tail's header is not hot" '! hot'
      check "$step: the LVs run on NAME" '! on_raw';;
    *)
      check "$step: the tail's header is hot" hot
      check "$step: the guardian moved the LVs onto the raw device" on_raw
      check "$step: the guardian said it decrypted the head" 'dmesg | grep -a "pvencrypt died" | tail -1 | grep -q "the head is decrypted"';;
  esac
  again "$step"
  kept "$step"
done
echo "=== --abort in the data phase"
fresh
PVENCRYPT_FAULT=run-25:stop pvencrypt --decrypt -y --key-file /tmp/key /dev/vda > /tmp/run2.out 2>&1 &
pid=$!
check "abort: the run held at a quarter" "wait_for '[ \"\$(pstate $pid)\" = T ]' 120"
check "--status: decrypting" "status_has '\"pv\":\"/dev/vda\"' '\"state\":\"decrypting\"'"
pvencrypt --abort /dev/vda > /tmp/abort.out 2>&1 &
apid=$!
# Its SIGTERM waits on the held run, which then stops at its next checkpoint.
check "abort: SIGTERM sent" "wait_for 'grep -q \"^ShdPnd:.*4000\$\" /proc/$pid/status' 30"
kill -CONT $pid
wait $pid; rc=$?
wait $apid; arc=$?
cat /tmp/run2.out /tmp/abort.out
check_eq "abort: --abort exit 0" "$arc" 0
check "abort: it says how to go on" 'grep -q "run pvencrypt --decrypt /dev/vda to go on" /tmp/abort.out'
check_eq "abort: the run stopped (exit 1)" "$rc" 1
check "abort: the writer goes on" "wait_for '[ \$(writer_acked) -gt $(writer_acked) ]' 20"
check "--status: stopped, with its name" "status_has '\"pv\":\"/dev/vda\"' '\"state\":\"stopped\"' '\"name\":\"vda_crypt\"'"
check "--status: part decrypted" \
  '[ "$(pvencrypt --status --reportformat json_std | tr -d " \n" | sed -n "s/.*\"bytes_done\":\([0-9]*\).*/\1/p")" -gt 0 ]'
again "abort"
kept "abort"
result
