# Boot 2 of host/t_debian_root.sh: the initramfs pvencrypt rebuilt has opened vda_crypt in
# the middle of its reencryption and the root is up; running pvencrypt again finishes it.
# Then every boot file is checked.
. /tests/lib.sh
kv=$(uname -r)
run mount /boot
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check "vda is half encrypted" "cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
printf secret-passphrase > /run/key
echo "=== pvencrypt, run again"
pvencrypt --key-file /run/key -y /dev/vda > /run/out 2>&1
rc=$?
sed 's/^/pvencrypt: /' /run/out
check_eq "pvencrypt exit" "$rc" 0
check "reencryption finished" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
uuid=$(cryptsetup luksUUID /dev/vda)
check_eq "one crypttab entry" "$(grep -v '^#' /etc/crypttab | grep -cE "^vda_crypt UUID=$uuid none luks(,discard)?\$")" 1
check "devices file: vda_crypt in, vda out" \
  "grep -q 'IDNAME=CRYPT-LUKS2-.*-vda_crypt' /etc/lvm/devices/system.devices && ! grep -q 'DEVNAME=/dev/vda ' /etc/lvm/devices/system.devices"
rm -rf /run/ird; unmkinitramfs /boot/initrd.img-$kv /run/ird
ct=$(find /run/ird -path '*cryptroot/crypttab' | head -1)
check "the initramfs opens vda_crypt" "[ -n '$ct' ] && grep -q '^vda_crypt UUID=$uuid ' '$ct'"
check "the initramfs has the devices file" \
  "grep -qs 'IDNAME=CRYPT-LUKS2-.*-vda_crypt' \$(find /run/ird -path '*etc/lvm/devices/system.devices')"
check_eq "marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
result
