# DECRYPT.md's header place, checked with stock tools only (not a t_ test: `run.sh
# proof_tail_header`): cryptsetup 2.6.1 with the LUKS2 header in the device's last 16 MiB,
# read through a loop device over that tail, opens the state decryption's init leaves and
# resumes it online to the end, the LVs active on the mapping and a writer on one of them.
# disks: 256M
# timeout: 900
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
size=$(blockdev --getsize64 /dev/vda) tail=$((size - (16 << 20)))
echo "=== by hand: luksFormat, then a PV on the mapping ending 16 MiB short"
run cryptsetup luksFormat -q --type luks2 $cheap --key-file /tmp/key /dev/vda
run cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
PVOPTS="--setphysicalvolumesize $(((size >> 20) - 32))M" mkvg vg /dev/mapper/vda_crypt
mklv a -L 96M vg
mklv b -L 96M vg
dd if=/dev/urandom of=/dev/mapper/vg-a bs=1M count=96 oflag=direct 2>/dev/null
dd if=/dev/urandom of=/dev/mapper/vg-b bs=1M count=96 oflag=direct 2>/dev/null
a=$(sha /dev/mapper/vg-a) b=$(sha /dev/mapper/vg-b)
pvs -o pv_name,pv_size,dev_size /dev/mapper/vda_crypt

echo "=== offline: decrypt init, header exported to a file, then put at the tail"
run vgchange -q -an vg
run cryptsetup close vda_crypt
cryptsetup reencrypt -q --decrypt --header /tmp/h.img --init-only --key-file /tmp/key /dev/vda; rc=$?
check_eq "decrypt --init-only" "$rc" 0
cryptsetup luksDump --header /tmp/h.img /dev/vda | sed -n '/^Data segments/,/^Keyslots/p'
dd if=/tmp/h.img of=/dev/vda bs=1M seek=$((tail >> 20)) conv=fsync oflag=direct 2>/dev/null
lo=$(losetup -f) && losetup -o $tail $lo /dev/vda
echo "loop: $lo"
check "the loop device over the tail is LUKS" "cryptsetup isLuks $lo"
check "open with --header the loop, offline state" "cryptsetup open --header $lo --key-file /tmp/key /dev/vda vda_crypt"
dmsetup table vda_crypt | sed 's/ [0-9a-f]\{64,\} / KEY /'
run vgchange -q -ay vg; dmsetup mknodes
check_eq "vg-a through the detached header" "$(sha /dev/mapper/vg-a)" "$a"
check_eq "vg-b through the detached header" "$(sha /dev/mapper/vg-b)" "$b"

echo "=== online: stock resume, header on the loop device, LVs active and a writer on vg-a"
mkfs.ext4 -q /dev/mapper/vg-b && mkdir -p /mnt/b && mount /dev/mapper/vg-b /mnt/b
writer_start /mnt/b/log
cryptsetup reencrypt -q --resume-only --header $lo --active-name vda_crypt --key-file /tmp/key; rc=$?
check_eq "online resume-only with --header on the loop" "$rc" 0
writer_stop
check "writer log verifies" "pvwriter verify /mnt/b/log $(writer_acked)"
check "vda_crypt gone or linear" "! dmsetup table vda_crypt 2>/dev/null | grep -q crypt"
dmsetup table | sed 's/ [0-9a-f]\{64,\} / KEY /'
check_eq "vg-a after the decryption" "$(sha /dev/mapper/vg-a)" "$a"
umount /mnt/b
run vgchange -q -an vg
dmsetup remove vda_crypt 2>/dev/null
losetup -d $lo
pvscan --cache >/dev/null 2>&1
check "the plain PV on vda" "pvs --noheadings -o pv_name | grep -q /dev/vda"
run vgchange -q -ay vg; dmsetup mknodes
check_eq "vg-a on the plain PV" "$(sha /dev/mapper/vg-a)" "$a"
result
