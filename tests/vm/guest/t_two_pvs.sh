# pvencrypt PV1 PV2: both PVs of a live VG converted one after the other, the passphrase read
# once (from stdin, as cryptsetup reads it when stdin is no terminal), an ext4 spanning both
# PVs mounted and written throughout.
# The kernel command line names another LUKS device with rd.luks.uuid=, which would keep the
# boot from opening these: pvencrypt must say to add theirs.
# The first resume of vg-fs after the first switch fails twice (injected): it is retried,
# and said.
# disks: 256M 256M
# append: rd.luks.uuid=luks-00000000-0000-0000-0000-000000000000
# timeout: 900
. /tests/lib.sh
for d in vda vdb; do run pvcreate -q -y --setphysicalvolumesize 224M /dev/$d; done
run vgcreate -q vg /dev/vda /dev/vdb
mklv fs -L 150M vg /dev/vda
run lvextend -q -L +150M vg/fs /dev/vdb
dmsetup mknodes
check_eq "vg/fs spans both PVs" "$(lvs --noheadings -o devices vg/fs | sed 's/([0-9]*)//' | tr -d ' ' | sort | tr '\n' ' ')" "/dev/vda /dev/vdb "
run mkfs.ext4 -q /dev/mapper/vg-fs
mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
dd if=/dev/urandom of=/mnt/fs/f1 bs=1M count=200 conv=fsync 2>/dev/null
before=$(sha /mnt/fs/f1)
writer_start /mnt/fs/log
wait_for '[ "$(writer_acked)" -ge 100 ]' 60 || die "writer too slow: $(cat /tmp/ack)"

echo "=== printf secret | pvencrypt /dev/vda /dev/vdb"
printf secret-passphrase | PVENCRYPT_FAULT="resume vg-fs:fail2" pvencrypt --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda /dev/vdb > /tmp/out 2>&1
rc=$?
cat /tmp/out
writer_stop
acked=$(writer_acked)
check_eq "pvencrypt exit code" "$rc" 0
check "the resume that failed twice was retried, and said" "grep -q 'WARNING: resuming vg-fs took 3 attempts' /tmp/out"
printf secret-passphrase > /tmp/key
for d in vda vdb; do
  check "$d: LUKS2 opened with the one passphrase, no reencryption left" \
    "cryptsetup open --test-passphrase --key-file /tmp/key /dev/$d && ! cryptsetup luksDump /dev/$d | grep -q online-reencrypt"
  check "$d: crypttab entry" "grep -q '^${d}_crypt UUID=$(cryptsetup luksUUID /dev/$d) none luks' /etc/crypttab"
  check "$d: says to add rd.luks.uuid=" "grep -q 'kernel command line.*add rd.luks.uuid=$(cryptsetup luksUUID /dev/$d):' /tmp/out"
done
check_eq "the VG's PVs" "$(pvs --noheadings -o pv_name -S vg_name=vg | tr -d ' ' | sort | tr '\n' ' ')" "/dev/mapper/vda_crypt /dev/mapper/vdb_crypt "
check_eq "f1 unchanged" "$(sha /mnt/fs/f1)" "$before"
check "writer log intact" pvwriter verify /mnt/fs/log "$acked"
umount /mnt/fs
check "fsck clean" e2fsck -fn /dev/mapper/vg-fs
result
