# Boot 3 of host/t_debian_root.sh: the conversion was stopped with --abort before the
# reboot, so pvencrypt-resume.service leaves it alone; the admin runs pvencrypt by hand,
# which finishes it. Then every boot file is checked.
. /tests/debian-lib.sh
kv=$(uname -r)
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check "vda is half encrypted" "cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check "pvencrypt-resume.service was started at boot" "[ \"\$(prop pvencrypt-resume.service InactiveExitTimestampMonotonic)\" -gt 0 ]"
check_eq "and left the aborted conversion alone (its condition)" "$(prop pvencrypt-resume.service ExecMainStartTimestampMonotonic)" 0
status
check "--status says aborted" "pvencrypt --status | grep -qE '^ */dev/vda +vda_crypt +aborted'"
uuid=$(cryptsetup luksUUID /dev/vda)
printf secret-passphrase > /run/key
echo "=== pvencrypt, run by hand"
# The initramfs checked below is the one pvencrypt-resume.service rebuilt at boot 2: one
# rebuild less, minutes under TCG.
pvencrypt --key-file /run/key -y --no-initramfs > /run/out 2>&1
rc=$?
sed 's/^/pvencrypt: /' /run/out
check_eq "pvencrypt exit" "$rc" 0
check "reencryption finished" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check "the abort record is gone" "[ ! -e /var/lib/pvencrypt/aborted/$uuid ]"
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
