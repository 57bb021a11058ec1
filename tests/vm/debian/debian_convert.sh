# Boot 1 of host/t_debian_root.sh, on the Debian root (root is vg/root on vda, /boot is vdb,
# udev running): pvencrypt converts the PV under the running root, as an admin would run
# it, and the power is cut (PVENCRYPT_FAULT, no sync) half way through the data phase.
. /tests/lib.sh
run mount /boot
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
run lvm lvmdevices -y --adddev /dev/vda   # Debian 12 has no lvmdevices link
head -c 48M /dev/urandom > /var/marker; sha /var/marker > /var/marker.sha; sync
printf secret-passphrase > /run/key
echo "=== pvencrypt, power cut at 50%"
PVENCRYPT_FAULT=run-50 pvencrypt --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda 2>&1 |
  sed 's/^/pvencrypt: /'
check "the power cut came" false
result
