# The demo (run.sh --demo): encrypt the PV under a mounted, written filesystem, on screen.
. /tests/lib.sh
say() { printf '\n### %s\n' "$*"; }
x() { echo "# $*"; "$@"; }

say "A PV on /dev/vda (512M), sized 440M so the end of the disk is free for the data shift"
x pvcreate -y --setphysicalvolumesize 440M /dev/vda
x vgcreate demo /dev/vda
x lvcreate -y -L 200M -n home demo
x lvcreate -y -L 100M -n data demo
dmsetup mknodes
x mkfs.ext4 -q /dev/mapper/demo-home
mkdir -p /mnt/home; x mount /dev/mapper/demo-home /mnt/home
dd if=/dev/urandom of=/dev/mapper/demo-data bs=1M count=100 2>/dev/null
dd if=/dev/urandom of=/mnt/home/photos bs=1M count=64 2>/dev/null; sync
before_data=$(sha /dev/mapper/demo-data) before_photos=$(sha /mnt/home/photos)
x pvs; x lvs
x dmsetup ls --tree

say "A writer appends to /mnt/home/log, fdatasync after every record"
writer_start /mnt/home/log
wait_for '[ "$(writer_acked)" -ge 100 ]' 60
cat /tmp/ack

say "Encrypt it, live"
printf 'secret-passphrase' > /tmp/key
x pvencrypt --key-file /tmp/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y -i 1 /dev/vda
rc=$?
echo "exit code $rc"
writer_stop

say "After"
x dmsetup ls --tree
x pvs
x lsblk
x blkid /dev/vda
x cryptsetup status vda_crypt

say "Verify"
check_eq "pvencrypt exit code" "$rc" 0
check_eq "LV demo-data unchanged" "$(sha /dev/mapper/demo-data)" "$before_data"
check_eq "file photos unchanged" "$(sha /mnt/home/photos)" "$before_photos"
check "no acknowledged write lost" pvwriter verify /mnt/home/log "$(writer_acked)"
result
