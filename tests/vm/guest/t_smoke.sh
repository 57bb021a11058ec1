# Proves the rig: device-mapper, LVM (linear, snapshot, thin), dm-crypt, ext4, the writer.
# disks: 512M 256M
. /tests/lib.sh

mkvg vg /dev/vda
mklv a -L 32M vg
mklv b -L 64M vg
check "LVs have nodes" '[ -b /dev/mapper/vg-a ] && [ -b /dev/mapper/vg-b ]'
check "LV maps vda" dm_refs vg-a "$(majmin /dev/vda)"
dd if=/dev/urandom of=/dev/mapper/vg-a bs=1M count=32 2>/dev/null
s=$(sha /dev/mapper/vg-a)
run vgchange -q -an vg
run vgchange -q -ay vg
dmsetup mknodes
check_eq "LV content survives deactivation" "$(sha /dev/mapper/vg-a)" "$s"

mklv origin -L 16M vg
mklv snap -s -L 8M vg/origin
check "snapshot active" '[ -b /dev/mapper/vg-snap ]'
mklv pool --type thin-pool -L 32M vg
mklv thin -V 64M -T vg/pool
check "thin LV active" '[ -b /dev/mapper/vg-thin ]'
dd if=/dev/urandom of=/dev/mapper/vg-thin bs=1M count=8 2>/dev/null
s=$(sha /dev/mapper/vg-thin)
run vgchange -q -an vg
# Reactivating the pool runs thin_check: proves the thin tools work in the guest.
run vgchange -q -ay vg
dmsetup mknodes
check_eq "thin content survives deactivation" "$(sha /dev/mapper/vg-thin)" "$s"

printf 'secret-passphrase' > /tmp/key
run cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file /tmp/key /dev/vdb
run cryptsetup open --key-file /tmp/key /dev/vdb vdb_crypt
check "crypt mapping" '[ -b /dev/mapper/vdb_crypt ]'
check "crypt target" 'dmsetup table vdb_crypt | grep -q " crypt aes-xts-plain64 "'
dd if=/dev/urandom of=/tmp/data bs=1M count=16 2>/dev/null
dd if=/tmp/data of=/dev/mapper/vdb_crypt bs=1M conv=fsync 2>/dev/null
run cryptsetup close vdb_crypt
data_sha=$(sha /tmp/data)
check "ciphertext on disk" '[ "$(dd if=/dev/vdb bs=1M skip=16 count=16 2>/dev/null | sha -)" != "$data_sha" ]'
run cryptsetup open --key-file /tmp/key /dev/vdb vdb_crypt
check_eq "plaintext back" "$(head -c 16777216 /dev/mapper/vdb_crypt | sha -)" "$data_sha"

run mkfs.ext4 -q /dev/mapper/vg-b
mkdir -p /mnt/b; run mount /dev/mapper/vg-b /mnt/b
writer_start /mnt/b/log
wait_for '[ "$(writer_acked)" -ge 200 ]' 60 || echo "CHECK-FAIL: writer slow: $(cat /tmp/ack)"
writer_stop
check_eq "writer stopped cleanly" "$WRITER_RC" 0
check "writer log verifies" pvwriter verify /mnt/b/log "$(writer_acked)"
check "truncated ack fails verify" '! pvwriter verify /mnt/b/log $(( $(writer_acked) + 1 )) >/dev/null'
umount /mnt/b
check "fsck clean" e2fsck -fn /dev/mapper/vg-b

# 1024 slots of 4 KiB: the raw writer wraps twice.
mklv w -L 4M vg
writer_start /dev/mapper/vg-w
wait_for '[ "$(writer_acked)" -ge 2500 ]' 120
writer_stop
check "raw writer verifies" pvwriter verifydev /dev/mapper/vg-w "$(writer_acked)"
dd if=/dev/zero of=/dev/mapper/vg-w bs=4096 seek=7 count=1 conv=fsync 2>/dev/null
check "lost raw record detected" '! pvwriter verifydev /dev/mapper/vg-w $(writer_acked) >/dev/null'

if command -v pvencrypt >/dev/null; then
  check "pvencrypt --version" pvencrypt --version
else
  echo "NOTE: no pvencrypt binary in the initramfs"
fi
result
