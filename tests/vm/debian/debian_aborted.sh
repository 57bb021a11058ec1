# Boot 3 of host/t_debian_root.sh: the conversion was stopped with --abort before the
# reboot, so pvencrypt-resume.service leaves it alone. The admin runs pvencrypt -b, which
# clears the abort record and goes on in its unit; it stops itself inside a commit (NAME
# suspended, the root with it) and `systemctl kill -s KILL` kills it there: the root must
# serve within a second. Then a clean shutdown: the next boot's resume unit must finish it
# (debian_finished.sh).
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
echo "=== pvencrypt -b, stopped inside a commit and killed there"
# --no-initramfs: the image boot 1 built is the one boot 4 checks.
PVENCRYPT_FAULT=committed@2:stop pvencrypt -b --key-file /run/key -y --no-initramfs -i 2 /dev/vda > /run/b.out 2>&1
rc=$?; cat /run/b.out
check_eq "pvencrypt -b returns, with success" "$rc" 0
check "it cleared the abort record" "[ ! -e /var/lib/pvencrypt/aborted/$uuid ]"
follow pvencrypt-vda.service
killed_in_suspension pvencrypt-vda.service "killed in a commit"
check "killed in a commit: its guardian says so in the kernel log" \
  "journalctl -b -k -o cat | grep -q 'pvencrypt died while vda_crypt was suspended; resumed it'"
check_eq "killed in a commit: the marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
status
check "--status: stopped, for the next boot to resume" "pvencrypt --status | grep -qE '^ */dev/vda +vda_crypt +stopped'"
result
