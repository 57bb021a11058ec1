# Boot 3 of host/t_debian_root.sh: the conversion was stopped with --abort before the
# reboot, so pvencrypt-resume.service leaves it alone. The admin runs pvencrypt by hand,
# which clears the abort record and goes on, and the power is cut at 75%: the next boot's
# resume unit must finish it (debian_finished.sh).
. /tests/debian-lib.sh
kv=$(uname -r)
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check "vda is half encrypted" "cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check "pvencrypt-resume.service was started at boot" "[ \"\$(prop pvencrypt-resume.service InactiveExitTimestampMonotonic)\" -gt 0 ]"
check_eq "and left the aborted conversion alone (its condition)" "$(prop pvencrypt-resume.service ExecMainStartTimestampMonotonic)" 0
status
check "--status says aborted" "pvencrypt --status | grep -qE '^ */dev/vda +vda_crypt +aborted'"
uuid=$(cryptsetup luksUUID /dev/vda)
check "the abort is recorded" "[ -s /var/lib/pvencrypt/aborted/$uuid ]"
printf secret-passphrase > /run/key
echo "=== pvencrypt, run by hand, power cut at 75%"
# The initramfs checked at boot 4 is the one pvencrypt-resume.service rebuilt at boot 2:
# one rebuild less, minutes under TCG.
PVENCRYPT_FAULT=run-75 pvencrypt --key-file /run/key -y --no-initramfs -i 2 2>&1 | sed 's/^/pvencrypt: /'
check "the power cut came" false
result
