# Guest half of host/t_crash_kill.sh (not run on its own).
# pvphase=1: writers on an ext4 LV and a raw LV report their acks; pvencrypt converts vda
#            (tracing its steps, -i 1) until the host kills the VM.
# pvphase=2: every reported ack is on disk, under whatever the crash left (plain PV or
#            LUKS2); pvencrypt completes; the acks and the static LV are still intact.
# vdb holds the static LV's checksum between the boots.
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
mount_fs() { mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs; }
verify() {
  check "file writer: acked records there ($1)" pvwriter verify /mnt/fs/log "$(arg pvacked)"
  check "raw writer: acked records there ($1)" pvwriter verifydev /dev/mapper/vg-raw "$(arg pvrawacked)"
  check_eq "static LV unchanged ($1)" "$(sha /dev/mapper/vg-static)" "$(head -c 64 /dev/vdb)"
}

case $(arg pvphase) in
1)
  PVOPTS="--setphysicalvolumesize 440M" mkvg vg /dev/vda
  mklv fs -L 200M vg
  mklv raw -L 4M vg
  mklv static -L 64M vg
  dd if=/dev/urandom of=/dev/mapper/vg-static bs=1M count=64 oflag=direct 2>/dev/null
  sha /dev/mapper/vg-static | dd of=/dev/vdb conv=fsync 2>/dev/null
  run mkfs.ext4 -q /dev/mapper/vg-fs
  mount_fs
  writer_start /mnt/fs/log
  pvwriter writedev /dev/mapper/vg-raw /tmp/ack.raw &
  wait_for '[ -s /tmp/ack.raw ]' 10 || die "raw writer did not start"
  # The host parses only whole lines, so a line cut by the kill never counts.
  while :; do
    echo "ACKED file=$(writer_acked) raw=$(sed -n 's/acked=\([0-9]*\).*/\1/p' /tmp/ack.raw)"
    usleep 100000
  done &
  wait_for '[ "$(writer_acked)" -ge 20 ]' 60 || die "writer too slow"
  echo "=== pvencrypt"
  PVENCRYPT_TRACE=1 pvencrypt --key-file /tmp/key $cheap -y -i 1 /dev/vda
  echo "=== pvencrypt returned $? before the kill"
  sleep 3600
  ;;
2)
  if cryptsetup isLuks /dev/vda; then
    echo "=== found LUKS2"
    check "stock cryptsetup opens it" cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
    dmsetup mknodes; vgscan -q >/dev/null 2>&1
    resume="pvencrypt --key-file /tmp/key -v"
  else
    echo "=== found the plain PV"
    resume="pvencrypt --key-file /tmp/key $cheap -y -v /dev/vda"
  fi
  run vgchange -q -ay vg; dmsetup mknodes
  mount_fs   # replays the journal
  verify "after the crash"
  echo "=== $resume"
  $resume; check_eq "pvencrypt completes" "$?" 0
  dmsetup mknodes
  verify "after completion"
  check "no reencryption left" '! cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
  check "no pvencrypt token or temporary keyslot left" \
    '! cryptsetup luksDump /dev/vda | grep -q pvencrypt && [ "$(cryptsetup luksDump /dev/vda | grep -c "^  [0-9]*: luks2")" = 1 ]'
  umount /mnt/fs
  check "fsck clean" e2fsck -fn /dev/mapper/vg-fs
  result
  ;;
*) die "pvphase=1|2 missing";;
esac
