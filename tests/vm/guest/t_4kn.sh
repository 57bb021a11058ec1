# seconds: 60   (measured, TCG: run.sh starts the longest first)
# A disk with 4096-byte logical sectors (4Kn, as many NVMe drives): dm-crypt cannot encrypt
# it in 512-byte sectors. pvencrypt defaults to the disk's logical block size and says so
# in --test; an explicit --sector-size 512 is refused with its real cause and nothing
# changed. Then the PV, with an ext4 LV written throughout, a thin pool with a thin LV and a
# dm-cache'd LV on it, converts live and opens with stock cryptsetup.
# disks: 256M 64M
# blocksize: 4096
# timeout: 900
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
check_eq "vda has 4096-byte logical sectors" "$(blockdev --getss /dev/vda)" 4096

PVOPTS="--setphysicalvolumesize 224M" mkvg vg /dev/vda
mklv fs -L 80M vg
mklv pool --type thin-pool -L 40M vg
mklv thin -V 64M -T vg/pool
mklv slow -L 48M vg
mklv fast --type cache-pool -L 8M vg
run lvconvert -q -y --type cache --cachepool vg/fast vg/slow
dmsetup mknodes
check "vg/slow is cached (dm-cache)" "dmsetup table vg-slow | grep -q ' cache '"
run mkfs.ext4 -q /dev/mapper/vg-fs
mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
dd if=/dev/urandom of=/mnt/fs/f1 bs=1M count=40 conv=fsync 2>/dev/null
dd if=/dev/urandom of=/dev/mapper/vg-thin bs=1M count=32 oflag=direct 2>/dev/null
dd if=/dev/urandom of=/dev/mapper/vg-slow bs=1M oflag=direct 2>/dev/null
f1=$(sha /mnt/fs/f1) thin=$(sha /dev/mapper/vg-thin) slow=$(sha /dev/mapper/vg-slow)

echo "=== --sector-size 512 on a 4Kn disk: refused, with its cause, nothing changed"
before=$(sha /dev/vda)
pvencrypt --key-file /tmp/key $cheap -y --sector-size 512 /dev/vda > /tmp/out 2>&1; rc=$?; cat /tmp/out
check_eq "refused (exit 3)" "$rc" 3
check "it names the cause" "grep -q -- '--sector-size 512 is smaller than the 4096-byte logical blocks of /dev/vda' /tmp/out"
check "no word of a missing dm-crypt" "! grep -q 'Is dm-crypt available' /tmp/out"
check_eq "vda unchanged" "$(sha /dev/vda)" "$before"

echo "=== --test"
pvencrypt --test /dev/vda > /tmp/test.out 2>&1; rc=$?; cat /tmp/test.out
check_eq "--test exit" "$rc" 0
check "--test says 4096-byte sectors, and why" \
  "grep -q '4096-byte sectors (the disk.s logical block size)' /tmp/test.out"

echo "=== pvencrypt, default options, the ext4 written throughout"
writer_start /mnt/fs/log
wait_for '[ "$(writer_acked)" -ge 100 ]' 60 || die "writer too slow: $(cat /tmp/ack)"
pvencrypt --key-file /tmp/key $cheap -y /dev/vda > /tmp/out 2>&1; rc=$?; cat /tmp/out
writer_stop
acked=$(writer_acked)
check_eq "pvencrypt exit" "$rc" 0
check "the LUKS2 data segment has 4096-byte sectors" \
  "cryptsetup luksDump /dev/vda | grep -qE '^[[:space:]]+sector:[[:space:]]+4096 \\[bytes\\]'"
check "no reencryption left" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check_eq "vda_crypt has 4096-byte sectors" "$(blockdev --getss /dev/mapper/vda_crypt)" 4096
check "writer log intact" pvwriter verify /mnt/fs/log "$acked"
check_eq "f1 unchanged" "$(sha /mnt/fs/f1)" "$f1"
check_eq "the thin LV unchanged" "$(sha /dev/mapper/vg-thin)" "$thin"
check_eq "the cached LV unchanged" "$(sha /dev/mapper/vg-slow)" "$slow"

echo "=== closed and opened again with stock cryptsetup"
umount /mnt/fs
run vgchange -q -an vg
run cryptsetup close vda_crypt
run cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
run vgchange -q -ay vg
dmsetup mknodes
check "fsck clean" e2fsck -fn /dev/mapper/vg-fs
check_eq "the thin LV, after a reopen" "$(sha /dev/mapper/vg-thin)" "$thin"
check_eq "the cached LV, after a reopen" "$(sha /dev/mapper/vg-slow)" "$slow"
result
