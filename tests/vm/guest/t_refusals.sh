# seconds: 170   (measured, TCG: run.sh starts the longest first)
# Every refusal leaves the disks as they were: for each bad input, pvencrypt must exit with
# its code (3 refused, 4 key), say why, and the sha256 of both whole disks must not change.
# disks: 128M 64M
# timeout: 600
. /tests/lib.sh
printf secret-passphrase > /tmp/key
: > /tmp/empty
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"

# refuses NAME RC PATTERN ARGS...: pvencrypt ARGS exits RC, prints PATTERN, changes no byte.
refuses() {
  local name=$1 want=$2 pattern=$3 before after out rc; shift 3
  before="$(sha /dev/vda) $(sha /dev/vdb)"
  out=$(pvencrypt "$@" 2>&1); rc=$?
  after="$(sha /dev/vda) $(sha /dev/vdb)"
  echo "--- $name: exit $rc: $out"
  check_eq "$name: exit code" "$rc" "$want"
  check "$name: says why" 'echo "$out" | grep -q -- "$pattern"'
  check_eq "$name: both disks unchanged" "$after" "$before"
  check "$name: no device of pvencrypt's left behind" '! dmsetup ls | grep -q -e _crypt -e pvencrypt'
}

dd if=/dev/urandom of=/dev/vda bs=1M count=128 2>/dev/null
dd if=/dev/urandom of=/dev/vdb bs=1M count=64 2>/dev/null
echo data > /tmp/notadev
refuses "not a block device" 3 "not a block device" --key-file /tmp/key -y /tmp/notadev
refuses "not a PV" 3 "not an LVM physical volume" --key-file /tmp/key -y /dev/vdb
# A disk in use raw, mounted or as swap, cannot also be a PV: mkfs and mkswap wipe the PV label
# (checked here), so these are "not a PV" too.
run pvcreate -q -y /dev/vdb
run mkfs.ext4 -q -F /dev/vdb
mkdir -p /mnt/raw; run mount -o ro /dev/vdb /mnt/raw   # ro: ext4's own lazy init would write
refuses "a mounted filesystem on the disk" 3 "not an LVM physical volume" --key-file /tmp/key -y /dev/vdb
umount /mnt/raw
run pvcreate -q -y /dev/vdb
run mkswap /dev/vdb
run swapon /dev/vdb
refuses "swap on the disk" 3 "not an LVM physical volume" --key-file /tmp/key -y /dev/vdb
run swapoff /dev/vdb

run cryptsetup luksFormat -q --type luks2 $cheap --key-file /tmp/key /dev/vdb
refuses "someone else's LUKS device" 3 "already a LUKS device" --key-file /tmp/key -y /dev/vdb
dd if=/dev/zero of=/dev/vdb bs=1M count=16 2>/dev/null

# A PV in no VG is converted (t_orphan), unless something maps it.
run pvcreate -q -y /dev/vdb
run dmsetup create orphan-user --table "0 8 linear /dev/vdb 2048"
refuses "PV in no VG, mapped by a dm device" 3 "in no volume group, yet orphan-user uses it" --key-file /tmp/key -y /dev/vdb
run dmsetup remove orphan-user
run pvremove -q -y /dev/vdb

PVOPTS="--setphysicalvolumesize 124M" mkvg vgfull /dev/vda
mklv a -l 100%FREE vgfull
refuses "no room at the end" 3 "Not enough room" --key-file /tmp/key -y /dev/vda
run vgremove -q -y -f vgfull
run pvremove -q -y /dev/vda

PVOPTS="--setphysicalvolumesize 96M" mkvg vg /dev/vda
mklv a -L 32M vg
mklv boot -L 16M vg
run mkfs.ext4 -q -b 1024 /dev/mapper/vg-boot
mkdir -p /boot; run mount /dev/mapper/vg-boot /boot
refuses "/boot on an LV of the PV" 3 "boot loader" --key-file /tmp/key -y /dev/vda
umount /boot
mkdir -p /mnt/b; run mount /dev/mapper/vg-boot /mnt/b
refuses "4096-byte sectors under 1 KiB ext4 blocks" 3 "sector-size 4096 is larger" \
  --key-file /tmp/key --sector-size 4096 -y /dev/vda
umount /mnt/b

run dmsetup create intruder --table "0 8 linear $(majmin /dev/vda) 0"
refuses "a dm device that is not an LV" 3 "not a logical volume of vg" --key-file /tmp/key -y /dev/vda
run dmsetup remove intruder

# An md array claiming the PV (metadata "none": md writes nothing to it). md and dm both open
# the disk exclusively, so the VG is inactive meanwhile.
run vgchange -q -an vg
echo md0 > /sys/module/md_mod/parameters/new_array
echo none > /sys/block/md0/md/metadata_version
majmin /dev/vda > /sys/block/md0/md/new_dev
check "md0 holds vda" '[ -e /sys/block/vda/holders/md0 ]'
refuses "an md array holding the PV" 3 "held by md0, which is not a device-mapper device" --key-file /tmp/key -y /dev/vda
echo clear > /sys/block/md0/md/array_state
run vgchange -q -ay vg
dmsetup mknodes

cp /etc/lvm/lvm.conf /tmp/lvm.conf.orig
sed -i 's/^devices { /devices { filter = [ "a|^\/dev\/vd[ab]$|", "r|.*|" ] /' /etc/lvm/lvm.conf
check "the filter is in force" 'lvmconfig devices/filter | grep -q vd'
refuses "an LVM filter rejecting /dev/mapper/NAME" 3 'devices/filter rejects /dev/mapper/vda_crypt' --key-file /tmp/key -y /dev/vda
cp /tmp/lvm.conf.orig /etc/lvm/lvm.conf

refuses "empty key file" 4 "the passphrase is empty" --key-file /tmp/empty -y /dev/vda
refuses "missing key file" 4 "Cannot read key file" --key-file /tmp/nokey -y /dev/vda
refuses "--test" 0 "suspended for the switch: vg-a, vg-boot" --key-file /tmp/key --test /dev/vda

refuses "a cipher the kernel lacks" 3 "cannot set up dm-crypt" \
  --key-file /tmp/key --cipher twofish-xts-plain64 -y /dev/vda
dm_crypt_ko=$(grep dm-crypt /lib/modules/order)
run rmmod dm_crypt
refuses "a kernel without dm-crypt" 3 "Is dm-crypt available" --key-file /tmp/key -y /dev/vda
run insmod "/lib/modules/$dm_crypt_ko"

run vgchange -q -an vg
run lvm vgexport -q vg
refuses "exported VG" 3 "exported" --key-file /tmp/key -y /dev/vda
run lvm vgimport -q vg

# Without lvmlockd (and LVM 2.03 has no clvmd) such VGs are only reachable by their metadata.
run vgcfgbackup -q -f /tmp/vg.meta vg
status='status = \["RESIZEABLE", "READ", "WRITE"\]'
sed "s/$status/status = [\"RESIZEABLE\", \"READ\", \"WRITE\", \"CLUSTERED\"]/" /tmp/vg.meta > /tmp/vg.clustered
sed "s/$status/&\n  lock_type = \"dlm\"\n  lock_args = \"1.0.0:test\"/" /tmp/vg.meta > /tmp/vg.shared
check "test metadata: clustered" grep -q CLUSTERED /tmp/vg.clustered
check "test metadata: shared" grep -q 'lock_type = "dlm"' /tmp/vg.shared
run vgcfgrestore -q --force -f /tmp/vg.clustered vg
refuses "clustered VG" 3 "clustered" --key-file /tmp/key -y /dev/vda
run vgcfgrestore -q --force -f /tmp/vg.shared vg
refuses "shared VG (lvmlockd)" 3 "shared VG vg" --key-file /tmp/key -y /dev/vda
run vgcfgrestore -q --force -f /tmp/vg.meta vg

run pvcreate -q -y /dev/vdb
run vgextend -q vg /dev/vdb
dd if=/dev/zero of=/dev/vdb bs=1M count=2 2>/dev/null   # the PV label and metadata are gone
refuses "VG with a missing PV" 3 "missing PVs" --key-file /tmp/key -y /dev/vda
result
