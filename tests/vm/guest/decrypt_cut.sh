# Guest half of host/t_decrypt_cut.sh (not run on its own).
# pvphase=1: a LUKS2 device made by hand, its VG in use; `pvencrypt --decrypt` (a test
#            build) cuts the power at pvfault=STEP.
# pvphase=2 (pvstep=STEP): pvencrypt --decrypt refuses, saying how to open the device with
#            the header at its tail; the tail attached by hand, stock cryptsetup opens the
#            device with it, the LVs' bytes as they were. Then, from T0, pvencrypt
#            --decrypt finishes it; from a state of the data phase, stock `reencrypt
#            --resume-only` does. Cut in the switch back's in-place decryption: LVM sees no
#            PV on the raw disk, and stock's open finishes the head by its checksums (and
#            the decryption: the plain PV on the raw disk); pvencrypt --decrypt then wipes the
#            header stock left at the tail. Cut
#            once the header is wiped: the plain PV, nothing to open.
# vdb holds the expected checksums between the boots.
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
TAIL=$((112 << 20))
shas() { echo "$(sha /dev/mapper/vg-w) $(sha /dev/mapper/vg-b)"; }

case $(arg pvphase) in
1)
  luks_by_hand
  dd if=/dev/urandom of=/dev/mapper/vg-w bs=1M count=8 oflag=direct 2>/dev/null
  shas | dd of=/dev/vdb conv=fsync 2>/dev/null
  echo "=== --decrypt, power cut at $(arg pvfault)"
  PVENCRYPT_DECRYPT_UNFINISHED=1 PVENCRYPT_FAULT=$(arg pvfault) pvencrypt --decrypt -y --key-file /tmp/key /dev/vda
  die "pvencrypt returned ($?) instead of cutting the power at $(arg pvfault)"
  ;;
2)
  want=$(head -c 35 /dev/vdb | head -1)
  step=$(arg pvstep)
  case $step in
    decrypt-tail|decrypt-head) state=t0;;
    back-half) state=hot;;
    back-wiped) state=plain;;
    *) state=t1;;
  esac
  if [ $state = plain ]; then
    # The header wiped: the PV on the raw disk is all there is.
    check "no LUKS header at the head" '! cryptsetup isLuks /dev/vda'
    vgscan -q >/dev/null 2>&1
    run vgchange -q -ay vg; dmsetup mknodes
    check "LVM finds the plain PV on vda" 'pvs --noheadings -o pv_name | tr -d " " | grep -qx /dev/vda'
    check_eq "the plain PV: the LVs' bytes as they were" "$(shas)" "$want"
    result
  fi
  if [ $step = decrypt-tail ]; then
    # Nothing moved: the head's header opens it as before (and the tail's, checked below).
    check "stock cryptsetup opens vda with its own header" cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
    vgscan -q >/dev/null 2>&1
    run vgchange -q -ay vg; dmsetup mknodes
    check_eq "its own header: the LVs' bytes as they were" "$(shas)" "$want"
    run vgchange -q -an vg
    run cryptsetup close vda_crypt
  else
    check "the head holds no LUKS header" '! cryptsetup isLuks /dev/vda'
    out=$(pvencrypt --decrypt --test /dev/vda 2>&1); rc=$?
    echo "$out"
    check_eq "pvencrypt --decrypt, the device not open: refused" "$rc" 3
    check "it says how to open it with the header at the tail" \
      'echo "$out" | grep -q "its decryption is under way, its LUKS2 header at the device.s tail, and it is not open"'
  fi
  if [ $state = hot ]; then
    # The head's PV label is decrypted last: until then LVM sees no PV on the raw disk.
    vgscan -q >/dev/null 2>&1
    check "half decrypted in place: LVM finds no PV on vda" '! pvs --noheadings -o pv_name 2>/dev/null | grep -q /dev/vda'
  fi
  # As the man page says: the header as a device (busybox's losetup).
  run losetup -o $TAIL -f /dev/vda
  loop=$(for l in /sys/block/loop*; do
    [ "$(cat $l/loop/backing_file 2>/dev/null)" = /dev/vda ] && echo /dev/${l##*/}; done | head -1)
  t1=no; cryptsetup luksDump "$loop" | grep -q online-reencrypt && t1=yes
  case $state in
    t0) check_eq "the tail holds T0" $t1 no;;
    *) check_eq "the tail holds a decryption" $t1 yes;;
  esac
  if [ $state = hot ]; then
    # Stock's open recovers the switch back's hot state: it decrypts the rest of the head by
    # its checksums and ends the decryption (the keyslots go with it: nothing is left to
    # open, and it says so). The plain PV is on the raw disk then.
    cryptsetup open --key-file /tmp/key --header "$loop" /dev/vda vda_crypt
    check "stock cryptsetup's open ended the decryption" '! cryptsetup luksDump "$loop" | grep -q online-reencrypt'
  else
    check "stock cryptsetup opens vda with the tail's header" \
      cryptsetup open --key-file /tmp/key --header "$loop" /dev/vda vda_crypt
  fi
  vgscan -q >/dev/null 2>&1
  run vgchange -q -ay vg; dmsetup mknodes
  check_eq "the LVs' bytes as they were" "$(shas)" "$want"
  if [ $state = hot ]; then
    # What stock left: the plain PV, a keyless header at the tail. pvencrypt ends it (no
    # passphrase: nothing is encrypted any more).
    out=$(PVENCRYPT_DECRYPT_UNFINISHED=1 pvencrypt --decrypt -y /dev/vda 2>&1); rc=$?
    echo "$out"
    check_eq "pvencrypt --decrypt after stock's end: exit 0" "$rc" 0
    check "it says cryptsetup finished it" 'echo "$out" | grep -q "cryptsetup finished its decryption"'
    check "the header at the tail is wiped" \
      '[ "$(dd if=/dev/vda bs=4096 skip=$((TAIL / 4096)) count=8 2>/dev/null | tr -d "\000" | wc -c)" -eq 0 ]'
    check_eq "after pvencrypt: the LVs' bytes as they were" "$(shas)" "$want"
  elif [ $state = t0 ]; then
    out=$(PVENCRYPT_DECRYPT_UNFINISHED=1 pvencrypt --decrypt -y --key-file /tmp/key /dev/vda 2>&1); rc=$?
    echo "$out"
    check_eq "pvencrypt --decrypt, run again from T0, finishes" "$rc" 0
    check "it says it is decrypted" 'echo "$out" | grep -q "it holds the plain PV"'
    check_eq "pvencrypt's decryption: the LVs' bytes as they were" "$(shas)" "$want"
    check "its loop device over the tail is gone" '! losetup "$loop" >/dev/null 2>&1'
  elif [ $state = t1 ]; then
    out=$(cryptsetup reencrypt --resume-only --key-file /tmp/key --header "$loop" --active-name vda_crypt 2>&1)
    rc=$?; [ $rc -eq 0 ] || echo "$out" | sed 's/^/stock: /'
    check_eq "stock reencrypt --resume-only finishes the decryption" "$rc" 0
    check_eq "decrypted: the LVs' bytes as they were" "$(shas)" "$want"
  fi
  run vgchange -q -an vg
  ! dmsetup info vda_crypt >/dev/null 2>&1 || run cryptsetup close vda_crypt
  ! losetup "$loop" >/dev/null 2>&1 || run losetup -d "$loop"
  vgscan -q >/dev/null 2>&1
  run vgchange -q -ay vg; dmsetup mknodes
  check "LVM finds the plain PV on vda" 'pvs --noheadings -o pv_name | tr -d " " | grep -qx /dev/vda'
  check_eq "the plain PV: the LVs' bytes as they were" "$(shas)" "$want"
  result
  ;;
esac
