# Boot 1 of host/t_debian_root.sh, on the Debian root (root is vg/root on vda, /boot is vdb,
# udev running): pvencrypt converts the PV under the running root, as an admin would run
# it, and the power is cut (PVENCRYPT_FAULT, no sync) half way through the data phase.
. /tests/lib.sh
run mount /boot
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
run lvm lvmdevices -y --adddev /dev/vda   # Debian 12 has no lvmdevices link
head -c 48M /dev/urandom > /var/marker; sha /var/marker > /var/marker.sha; sync
printf secret-passphrase > /run/key
echo "=== /boot as a plain directory of the root LV: refused"
run umount /boot
pvencrypt --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda > /run/bootdir.out 2>&1
rc=$?; cat /run/bootdir.out
check_eq "refused (exit 3)" "$rc" 3
check "it says why" "grep -q '/boot is a directory of the filesystem on vg-root' /run/bootdir.out"
check "no LUKS header" '! cryptsetup isLuks /dev/vda'
run mount /boot
echo "=== no cryptsetup-initramfs: the initramfs could not open the device, refused"
hook=/usr/share/initramfs-tools/hooks/cryptroot
run mv $hook /run/cryptroot.hook
pvencrypt --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda > /run/nohook.out 2>&1
rc=$?; cat /run/nohook.out
run mv /run/cryptroot.hook $hook
check_eq "refused (exit 3)" "$rc" 3
check "it says what to install" "grep -q '^pvencrypt: / is on the volume group, so the next boot must open vda_crypt in the initramfs, but .*apt install cryptsetup-initramfs' /run/nohook.out"
check "no LUKS header" '! cryptsetup isLuks /dev/vda'
echo "=== --test: the initramfs and the passphrase at boot"
pvencrypt --test /dev/vda > /run/test.out 2>&1; rc=$?; cat /run/test.out
check_eq "--test exit" "$rc" 0
check "--test: the initramfs is rebuilt and checked" \
  "grep -q 'the initramfs is rebuilt with update-initramfs -u -k all and checked (/ is on the volume group)' /run/test.out"
check "--test: the initramfs asks for the passphrase" \
  "grep -q 'every boot from now on stops in the initramfs (update-initramfs) until the passphrase of vda_crypt' /run/test.out"
# Memory pressure: every page a udev worker needs must come from the disk again. A freeze
# that waited for udev would wait for itself (the root is on the PV being switched).
( while :; do echo 3 > /proc/sys/vm/drop_caches; sleep 0.1; done ) &
echo "=== pvencrypt, page cache dropped every 0.1 s, power cut at 50%"
PVENCRYPT_FAULT=run-50 pvencrypt --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda 2>&1 |
  sed 's/^/pvencrypt: /'
check "the power cut came" false
result
