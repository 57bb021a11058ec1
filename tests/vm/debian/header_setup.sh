# Boot 1 of host/proof_boot_tail_header.sh (plain Debian root, initramfs-tools): two data disks
# made by hand as a user would (luksFormat, a PV on the mapping ending 16 MiB short of it, an
# LV of random bytes), their decryption initialized by stock cryptsetup (offline, the header
# exported to a file) and that header written to the disk's last 16 MiB: the state
# `pvencrypt --decrypt` leaves after the first move (DECRYPT.md, T1). Then what pvencrypt will
# write for the boot: /etc/pvencrypt/headers, crypttab with header= (vdc with `initramfs`, as a
# root PV's entry is; vdd with a key file, for systemd-cryptsetup), the initramfs rebuilt.
. /tests/debian-lib.sh
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
printf secret-passphrase > /run/vdc.key
printf other-passphrase > /etc/vdd.key; chmod 600 /etc/vdd.key
mkdir -p /etc/pvencrypt
for d in vdc vdd; do
  key=/run/vdc.key; [ $d = vdd ] && key=/etc/vdd.key
  echo "=== $d: by hand, then decryption initialized offline, the header put at the tail"
  run cryptsetup luksFormat -q --type luks2 $cheap --key-file $key /dev/$d
  run cryptsetup open --key-file $key /dev/$d ${d}_crypt
  size=$(blockdev --getsize64 /dev/mapper/${d}_crypt)
  run pvcreate -q --setphysicalvolumesize $(((size >> 20) - 16))M /dev/mapper/${d}_crypt
  run vgcreate -q vg$d /dev/mapper/${d}_crypt
  run lvcreate -q -y -l 100%FREE -n data vg$d
  dd if=/dev/urandom of=/dev/vg$d/data bs=1M oflag=direct 2>/dev/null
  sha /dev/vg$d/data > /var/$d.sha
  run vgchange -q -an vg$d
  run cryptsetup close ${d}_crypt
  check "$d: stock decrypt --init-only" \
    "cryptsetup reencrypt -q --decrypt --header /run/$d.hdr --init-only --key-file $key /dev/$d"
  check "$d: its header fits in 16 MiB" "[ \$(stat -c %s /run/$d.hdr) -le $((16 << 20)) ]"
  tail=$(($(blockdev --getsize64 /dev/$d) - (16 << 20)))
  dd if=/run/$d.hdr of=/dev/$d bs=1M seek=$((tail >> 20)) conv=fsync oflag=direct 2>/dev/null
  check "$d: no LUKS header at its head any more" "! cryptsetup isLuks /dev/$d"
  # The source by path (a virtio disk has no serial, so no by-id): the LUKS UUID is the
  # header's now.
  src=$(udevadm info -q symlink /dev/$d | tr ' ' '\n' | grep '^disk/by-path/' | head -1)
  uuid=$(cryptsetup luksUUID /run/$d.hdr)
  echo "$d: source /dev/$src, header at $tail, UUID $uuid"
  echo "${d}_crypt /dev/$src $tail $uuid" >> /etc/pvencrypt/headers
  echo "$uuid" > /var/$d.uuid
  opt=; [ $d = vdc ] && opt=initramfs,
  echo "${d}_crypt /dev/$src $([ $d = vdd ] && echo /etc/vdd.key || echo none) luks,${opt}header=/dev/disk/by-uuid/$uuid" >> /etc/crypttab
done
sed 's/^/headers: /' /etc/pvencrypt/headers
sed 's/^/crypttab: /' /etc/crypttab
echo "=== pvencrypt-headers attaches both tails; again, nothing more"
/usr/lib/pvencrypt/pvencrypt-headers
/usr/lib/pvencrypt/pvencrypt-headers
for d in vdc vdd; do
  check "$d: by-uuid names a loop device over its tail" \
    "readlink -f /dev/disk/by-uuid/$(cat /var/$d.uuid) | grep -q '^/dev/loop'"
  check_eq "$d: one loop device" "$(losetup -j /dev/$d | wc -l)" 1
done
check "a line whose tail holds no such header attaches nothing" \
  "echo 'x_crypt /dev/vda 1048576 $(cat /var/vdc.uuid)' > /run/stale && /usr/lib/pvencrypt/pvencrypt-headers /run/stale && [ -z \"\$(losetup -j /dev/vda)\" ]"
echo "=== the initramfs rebuilt, vdc_crypt open (as a PV being decrypted is)"
check "vdc_crypt opens through the tail header" \
  "cryptsetup open --header /dev/disk/by-uuid/$(cat /var/vdc.uuid) --key-file /run/vdc.key /dev/vdc vdc_crypt"
check "update-initramfs -u" "update-initramfs -u > /run/u.out 2>&1"
sed 's/^/update-initramfs: /' /run/u.out
check "cryptroot's hook took the entry without a complaint" "! grep -qE 'ERROR|WARNING' /run/u.out"
run vgchange -q -an vgvdc
run cryptsetup close vdc_crypt
rm -rf /run/ird; mkdir /run/ird; unmkinitramfs /boot/initrd.img-$(uname -r) /run/ird
m=/run/ird; [ -d /run/ird/main ] && m=/run/ird/main
sed 's/^/image crypttab: /' $m/cryptroot/crypttab
check "the image's crypttab has vdc_crypt with header=" \
  "grep -q '^vdc_crypt .*header=/dev/disk/by-uuid/$(cat /var/vdc.uuid)' $m/cryptroot/crypttab"
check "the image has /etc/pvencrypt/headers" "cmp $m/etc/pvencrypt/headers /etc/pvencrypt/headers"
ls -l $m/sbin/pvencrypt-headers $m/sbin/losetup | sed 's/^/image: /'
# (/run is noexec: test -x fails there.)
check "the image has pvencrypt-headers, executable" "[ \"\$(stat -c %a $m/sbin/pvencrypt-headers)\" = 755 ]"
check "the image has util-linux's losetup" "cmp $m/sbin/losetup /sbin/losetup"
check "the image has loop.ko" "find $m/lib/modules/ -name 'loop.ko*' | grep -q ."
check "init-premount runs it" "grep -qx '/scripts/init-premount/pvencrypt \"\$@\"' $m/scripts/init-premount/ORDER"
result
