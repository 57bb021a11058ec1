# The scripted `pvcreate; pvencrypt; vgcreate`: a PV in no VG yet is converted (its recorded
# size shrunk to leave LUKS2 its room, nothing to move), keeps its uuid, and a VG made on
# /dev/mapper/vdb_crypt afterwards holds data across a close and a stock `cryptsetup open`.
# disks: 64M 128M
# timeout: 600
. /tests/lib.sh
printf secret-passphrase > /tmp/key
# Random bytes under the PV, so that the wiped tail below is pvencrypt's doing.
dd if=/dev/urandom of=/dev/vdb bs=1M count=128 2>/dev/null
run pvcreate -q -y /dev/vdb
uuid=$(pvs --noheadings -o pv_uuid /dev/vdb | tr -d ' ')
pvencrypt --key-file /tmp/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --test /dev/vdb > /tmp/test.out 2>&1
cat /tmp/test.out
check "--test names the orphan and the pvresize" \
  "grep -q 'PV in no volume group yet' /tmp/test.out && grep -q 'pvresize the PV to 96 MiB (no extent is in use)' /tmp/test.out"
check "--test changed nothing" "! cryptsetup isLuks /dev/vdb"

echo "=== pvencrypt /dev/vdb (an orphan PV)"
pvencrypt --key-file /tmp/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vdb > /tmp/out 2>&1
rc=$?
cat /tmp/out
check_eq "pvencrypt exit code" "$rc" 0
check "LUKS2, no reencryption left" "cryptsetup isLuks /dev/vdb && ! cryptsetup luksDump /dev/vdb | grep -q online-reencrypt"
check "the passphrase opens it" "cryptsetup open --test-passphrase --key-file /tmp/key /dev/vdb"
check_eq "the PV on vdb_crypt keeps its uuid" "$(pvs --noheadings -o pv_uuid /dev/mapper/vdb_crypt | tr -d ' ')" "$uuid"
check_eq "still in no VG" "$(pvs --noheadings -o vg_name /dev/mapper/vdb_crypt | tr -d ' ')" ""
pv_size=$(pvs --noheadings --units s --nosuffix -o pv_size /dev/mapper/vdb_crypt | tr -d ' ')
check_eq "the PV was shrunk to 96 MiB (the device less the header and the shift)" "$pv_size" 196608
check_eq "vdb_crypt: the device less the header and the shift" "$(blockdev --getsz /dev/mapper/vdb_crypt)" 196608
check "crypttab entry" "grep -q '^vdb_crypt UUID=$(cryptsetup luksUUID /dev/vdb) none luks' /etc/crypttab"
nonzero_tail=$(dd if=/dev/vdb bs=1M skip=112 count=16 iflag=direct 2>/dev/null | tr -d '\000' | wc -c)
check_eq "the last 16 MiB (the plaintext copy of the first) are wiped" "$nonzero_tail" 0

echo "=== vgcreate on the new device, data, close, stock cryptsetup open"
run vgcreate -q vg2 /dev/mapper/vdb_crypt
mklv data -l 100%FREE vg2
dd if=/dev/urandom of=/dev/mapper/vg2-data bs=1M count=16 conv=fsync 2>/dev/null
before=$(sha /dev/mapper/vg2-data)
run vgchange -q -an vg2
run cryptsetup close vdb_crypt
run cryptsetup open --key-file /tmp/key /dev/vdb vdb_crypt
run pvscan -q --cache
run vgchange -q -ay vg2
dmsetup mknodes
check_eq "vg2 data intact" "$(sha /dev/mapper/vg2-data)" "$before"
result
