# Guest half of host/t_crash_writer.sh (not run on its own).
# pvphase=1: writers on an ext4 LV and a raw LV; report their acks until the host kills us.
# pvphase=2: every ack reported in phase 1 (pvacked=, pvrawacked=) must be on disk.
. /tests/lib.sh
case $(arg pvphase) in
1)
  mkvg vg /dev/vda
  mklv fs -L 64M vg
  mklv raw -L 4M vg
  run mkfs.ext4 -q /dev/mapper/vg-fs
  mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
  writer_start /mnt/fs/log
  pvwriter writedev /dev/mapper/vg-raw /tmp/ack.raw &
  # The host parses only whole lines, so a line cut by the kill never counts.
  while :; do
    echo "ACKED file=$(writer_acked) raw=$(sed -n 's/acked=\([0-9]*\).*/\1/p' /tmp/ack.raw)"
    usleep 100000
  done
  ;;
2)
  run vgchange -q -ay vg
  dmsetup mknodes
  mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs   # replays the journal
  check "file writer: acked records survived" pvwriter verify /mnt/fs/log "$(arg pvacked)"
  check "raw writer: acked records survived" pvwriter verifydev /dev/mapper/vg-raw "$(arg pvrawacked)"
  umount /mnt/fs
  check "fsck clean after journal replay" e2fsck -fn /dev/mapper/vg-fs
  result
  ;;
*) die "pvphase=1|2 missing";;
esac
