# Guest half of host/t_crash_switch.sh (not run on its own).
# pvphase=1: a live VG on vda; pvencrypt cuts the power (no sync) at step pvfault=STEP.
# pvphase=2 (pvstep=STEP): a fresh boot finds the plain PV or a LUKS2 device stock cryptsetup
#            opens, the LVs' content as it was, and pvencrypt (again, or resuming) completes.
# vdb holds the expected checksums between the boots.
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
lv_shas() { echo "$(sha /mnt/fs/f1) $(sha /dev/mapper/vg-raw)"; }
mount_fs() { mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs; }

case $(arg pvphase) in
1)
  PVOPTS="--setphysicalvolumesize 200M" mkvg vg /dev/vda
  mklv fs -L 80M vg
  mklv raw -L 48M vg
  run mkfs.ext4 -q /dev/mapper/vg-fs
  mount_fs
  dd if=/dev/urandom of=/mnt/fs/f1 bs=1M count=24 2>/dev/null
  dd if=/dev/urandom of=/dev/mapper/vg-raw bs=1M count=48 oflag=direct 2>/dev/null
  sync
  lv_shas | dd of=/dev/vdb conv=fsync 2>/dev/null
  echo "=== pvencrypt, power cut at $(arg pvfault)"
  PVENCRYPT_FAULT=$(arg pvfault) pvencrypt --key-file /tmp/key $cheap -y /dev/vda
  die "pvencrypt returned ($?) instead of cutting the power at $(arg pvfault)"
  ;;
2)
  want=$(head -c 129 /dev/vdb | head -1)
  # What an admin runs first after a crash: read-only, whatever the state (the host
  # checks that the JSON parses).
  before=$(sha /dev/vda)
  pvencrypt --status --reportformat json > /tmp/status.json 2> /tmp/status.err
  echo "=== status-json"; cat /tmp/status.json; echo "=== end-json"
  cat /tmp/status.err
  pvencrypt --test $cheap /dev/vda > /tmp/test.out 2>&1; echo "--test: rc=$?"; cat /tmp/test.out
  check_eq "--status and --test leave vda as it was" "$(sha /dev/vda)" "$before"
  case $(arg pvstep) in
  unlabeled|secondary)
    check "--status: interrupted in the switch" "grep -q '\"state\": \"interrupted\"' /tmp/status.json";;
  esac
  if [ "$(arg pvstep)" = unlabeled ]; then
    # Neither an LVM label nor a LUKS2 header: nothing at boot touched the device.
    check "LVM does not see a PV on vda" '! pvs /dev/vda >/dev/null 2>&1'
    check "stock cryptsetup sees no LUKS" '! cryptsetup isLuks /dev/vda'
    echo "=== pvencrypt (no argument: puts the plain PV back)"
    pvencrypt --key-file /tmp/key > /tmp/repair.out 2>&1; rc=$?
    cat /tmp/repair.out
    check_eq "exit 1: run it again" "$rc" 1
    check "it says the plain PV is back" "grep -q 'the plain PV is back' /tmp/repair.out"
  fi
  if cryptsetup isLuks /dev/vda; then
    echo "=== found LUKS2"
    check "stock cryptsetup opens it" cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
    dmsetup mknodes; vgscan -q >/dev/null 2>&1
    run vgchange -q -ay vg; dmsetup mknodes
    mount_fs
    check_eq "LV content after the crash" "$(lv_shas)" "$want"
    echo "=== pvencrypt (no argument: resume)"
    pvencrypt --key-file /tmp/key -v; rc=$?
  else
    echo "=== found the plain PV"
    run vgchange -q -ay vg; dmsetup mknodes
    mount_fs
    check_eq "LV content after the crash" "$(lv_shas)" "$want"
    check "no LUKS header was left" '! blkid /dev/vda | grep -q crypto_LUKS'
    echo "=== pvencrypt (again)"
    pvencrypt --key-file /tmp/key $cheap -y -v /dev/vda; rc=$?
  fi
  check_eq "pvencrypt completes" "$rc" 0
  dmsetup mknodes
  check_eq "LV content after completion" "$(lv_shas)" "$want"
  check "no reencryption left" '! cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
  check "no pvencrypt token or temporary keyslot left" \
    '! cryptsetup luksDump /dev/vda | grep -q pvencrypt && [ "$(cryptsetup luksDump /dev/vda | grep -c "^  [0-9]*: luks2")" = 1 ]'
  check "pvs shows the PV on vda_crypt" 'pvs --noheadings -o pv_name 2>/dev/null | grep -q /dev/mapper/vda_crypt'
  umount /mnt/fs
  check "fsck clean" e2fsck -fn /dev/mapper/vg-fs
  result
  ;;
*) die "pvphase=1|2 missing";;
esac
