# With LVM's devices file in use, LVM only sees the devices it lists: after the
# conversion the file must list /dev/mapper/vda_crypt instead of /dev/vda, or LVM would
# lose the PV (live, and at the next boot). pvencrypt updates it (lvmdevices, in process)
# right after the switch; LVM must then find the PV there, live and after a cold restart.
# Then LVM's common options as an admin passes them to pvmove: a VG on vdb whose PV is
# listed in a devices file of its own (--devicesfile other.devices), and a --config:
# pvencrypt's LVM commands get them, it updates that file, and LVM, reading it, finds the PV
# on vdb_crypt. (LVM refuses --devices with --devicesfile: so does pvencrypt.)
# disks: 128M 64M
# timeout: 600
. /tests/lib.sh
printf secret-passphrase > /tmp/key
sed -i 's/^devices { /devices { use_devicesfile = 1 /' /etc/lvm/lvm.conf
mkdir -p /etc/lvm/devices
PVOPTS="--setphysicalvolumesize 96M" mkvg vg /dev/vda
check "the devices file lists vda" grep -q "DEVNAME=/dev/vda " /etc/lvm/devices/system.devices
mklv a -L 32M vg
dd if=/dev/urandom of=/dev/mapper/vg-a bs=1M count=32 oflag=direct 2>/dev/null
a_sha=$(sha /dev/mapper/vg-a)

{ pvencrypt --key-file /tmp/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda; echo $? > /tmp/rc; } 2>&1 | tee /tmp/out
check_eq "pvencrypt exit code" "$(cat /tmp/rc)" 0
check "pvencrypt says it updated the devices file" \
  grep -q "system.devices now lists /dev/mapper/vda_crypt instead" /tmp/out
cat /etc/lvm/devices/system.devices
check "the devices file lists vda_crypt" grep -q -e "CRYPT-LUKS2-" -e vda_crypt /etc/lvm/devices/system.devices
check "the devices file no longer lists vda" '! grep -q "DEVNAME=/dev/vda " /etc/lvm/devices/system.devices'
check "pvs shows the PV on vda_crypt" '[ "$(pvs --noheadings -o pv_name 2>/dev/null | tr -d " ")" = /dev/mapper/vda_crypt ]'

run vgchange -q -an vg
run cryptsetup close vda_crypt
run cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
dmsetup mknodes
run vgchange -q -ay vg
dmsetup mknodes
check_eq "LV content after a cold restart" "$(sha /dev/mapper/vg-a)" "$a_sha"

echo "=== --devicesfile other.devices --config ..."
lvmo="--devicesfile other.devices"
run pvcreate -q -y $lvmo --setphysicalvolumesize 32M /dev/vdb
run vgcreate -q $lvmo vg2 /dev/vdb
run lvcreate -q -y $lvmo -n b -L 16M vg2
dmsetup mknodes
check "other.devices lists vdb" grep -q "DEVNAME=/dev/vdb " /etc/lvm/devices/other.devices
check "system.devices does not" '! grep -q "DEVNAME=/dev/vdb " /etc/lvm/devices/system.devices'
dd if=/dev/urandom of=/dev/mapper/vg2-b bs=1M count=16 oflag=direct 2>/dev/null
b_sha=$(sha /dev/mapper/vg2-b) sys_sha=$(sha /etc/lvm/devices/system.devices)
pvencrypt --key-file /tmp/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y $lvmo \
  --config 'devices { scan_lvs = 0 }' /dev/vdb > /tmp/out2 2>&1; rc=$?; cat /tmp/out2
check_eq "pvencrypt exit code" "$rc" 0
cat /etc/lvm/devices/other.devices
check "pvencrypt says it updated other.devices" "grep -q 'other.devices now lists /dev/mapper/vdb_crypt instead' /tmp/out2"
check "other.devices lists vdb_crypt, not vdb" \
  "grep -q vdb_crypt /etc/lvm/devices/other.devices && ! grep -q 'DEVNAME=/dev/vdb ' /etc/lvm/devices/other.devices"
check_eq "system.devices untouched" "$(sha /etc/lvm/devices/system.devices)" "$sys_sha"
check_eq "LVM reading other.devices finds vg2 on vdb_crypt" \
  "$(pvs --noheadings -o pv_name $lvmo -S vg_name=vg2 2>/dev/null | tr -d ' ')" /dev/mapper/vdb_crypt
check_eq "vg2/b unchanged" "$(sha /dev/mapper/vg2-b)" "$b_sha"
result
