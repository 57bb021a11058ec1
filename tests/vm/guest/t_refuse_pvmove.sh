# A pvmove in progress in the VG is a refusal, and pvencrypt changes no byte of its PV.
# The move is made slow, not faked: its destination is a PV on dm-delay holding every write
# for 2 s, without metadata (--metadatacopies 0), so that only the move's copy is slowed.
# vda is the PV to encrypt (no metadata either: no command of the move writes to it).
# disks: 128M 64M 128M
# timeout: 600
. /tests/lib.sh
printf secret-passphrase > /tmp/key
# LVM must see the PV on vdc only through dm-delay.
sed -i 's/^devices { /devices { global_filter = [ "r|^\/dev\/vdc$|" ] /' /etc/lvm/lvm.conf
run dmsetup create slow --table "0 $(blockdev --getsz /dev/vdc) delay /dev/vdc 0 0 /dev/vdc 0 2000"
dmsetup mknodes
run pvcreate -q -y --metadatacopies 0 --setphysicalvolumesize 96M /dev/vda
run pvcreate -q -y --metadatacopies 0 /dev/mapper/slow
mkvg vg /dev/vdb
run vgextend -q vg /dev/vda /dev/mapper/slow
mklv a -L 32M vg /dev/vda
mklv moved -L 32M vg /dev/vdb
dd if=/dev/urandom of=/dev/mapper/vg-a bs=1M count=32 oflag=direct 2>/dev/null
dd if=/dev/urandom of=/dev/mapper/vg-moved bs=1M count=32 oflag=direct 2>/dev/null

run pvmove -b /dev/vdb /dev/mapper/slow
check "the pvmove is running" wait_for "lvs -a --noheadings -o lv_name vg | grep -q pvmove" 60
before=$(sha /dev/vda)
out=$(pvencrypt --key-file /tmp/key -y /dev/vda 2>&1); rc=$?
echo "--- pvencrypt: exit $rc: $out"
moving=$(lvs -a --noheadings -o lv_name vg | grep -c pvmove)
check_eq "exit code" "$rc" 3
check "says why" 'echo "$out" | grep -q "A pvmove (pvmove0) is in progress in vg"'
check_eq "vda unchanged" "$(sha /dev/vda)" "$before"
check_eq "the pvmove was still running after pvencrypt" "$moving" 1
check "no device of pvencrypt's left behind" '! dmsetup ls | grep -q -e _crypt -e pvencrypt'
result
