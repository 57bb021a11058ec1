# With LVM's devices file in use, LVM only sees the devices it lists: after the
# conversion the file must list /dev/mapper/vda_crypt instead of /dev/vda, or LVM would
# lose the PV (live, and at the next boot). pvencrypt updates it (lvmdevices, in process)
# right after the switch; LVM must then find the PV there, live and after a cold restart.
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
result
