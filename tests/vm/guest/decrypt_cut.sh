# Guest half of host/t_decrypt_cut.sh (not run on its own).
# pvphase=1: a LUKS2 device made by hand, its VG in use; `pvencrypt --decrypt` (a test build,
#            stopping before the switch back) cuts the power at pvfault=STEP.
# pvphase=2 (pvstep=STEP): pvencrypt --decrypt refuses, saying how to open the device with
#            the header at its tail; the tail attached by hand, stock cryptsetup opens the
#            device with it, the LVs' bytes as they were; past T0, stock finishes it.
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
  if [ "$(arg pvstep)" = decrypt-tail ]; then
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
  # As the man page says: the header as a device (busybox's losetup).
  run losetup -o $TAIL -f /dev/vda
  loop=$(for l in /sys/block/loop*; do
    [ "$(cat $l/loop/backing_file 2>/dev/null)" = /dev/vda ] && echo /dev/${l##*/}; done | head -1)
  t1=no; cryptsetup luksDump "$loop" | grep -q online-reencrypt && t1=yes
  case $(arg pvstep) in
    decrypt-tail|decrypt-head) check_eq "the tail holds T0" $t1 no;;
    *) check_eq "the tail holds a decryption" $t1 yes;;
  esac
  check "stock cryptsetup opens vda with the tail's header" \
    cryptsetup open --key-file /tmp/key --header "$loop" /dev/vda vda_crypt
  vgscan -q >/dev/null 2>&1
  run vgchange -q -ay vg; dmsetup mknodes
  check_eq "the LVs' bytes as they were" "$(shas)" "$want"
  if [ $t1 = yes ]; then
    out=$(cryptsetup reencrypt --resume-only --key-file /tmp/key --header "$loop" --active-name vda_crypt 2>&1)
    check_eq "stock reencrypt --resume-only finishes the decryption" "$?" 0
    check_eq "decrypted: the LVs' bytes as they were" "$(shas)" "$want"
    run vgchange -q -an vg
    ! dmsetup info vda_crypt >/dev/null 2>&1 || run cryptsetup close vda_crypt
    run losetup -d "$loop"
    run vgchange -q -ay vg; dmsetup mknodes
    check "LVM finds the plain PV on vda" 'pvs --noheadings -o pv_name | tr -d " " | grep -qx /dev/vda'
    check_eq "the plain PV: the LVs' bytes as they were" "$(shas)" "$want"
  fi
  result
  ;;
esac
