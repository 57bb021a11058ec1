# Boot 2 of host/t_debian_root.sh: the initramfs pvencrypt had rebuilt has opened vda_crypt
# in the middle of its reencryption and the root is up. pvencrypt-resume.service asks for
# the passphrase through systemd's agents (initramfs-tools' askpass caches none), the test
# answers, and the unit resumes; `pvencrypt --abort` stops it, and the abort is recorded for the
# next boot. Then a clean shutdown.
. /tests/debian-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check "vda is half encrypted" "cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check_eq "pvencrypt-resume.service started at boot" "$(prop pvencrypt-resume.service ActiveState)" active
follow pvencrypt-resume.service
# Answered as a password agent answers (systemd-tty-ask-password-agent, plymouth): the
# console shows the prompt (the host checks), but its agent does not read the serial line.
echo "=== pvencrypt-resume.service asks for the passphrase"
check "it asks through systemd's password agents" \
  "wait_until 'grep -qs \"^Id=pvencrypt\" /run/systemd/ask-password/ask.*' 300"
ask=$(grep -ls '^Id=pvencrypt' /run/systemd/ask-password/ask.* | head -1)
check "for /dev/vda" "grep -q '^Message=Enter passphrase for /dev/vda' '$ask'"
printf 'secret-passphrase\n' | /lib/systemd/systemd-reply-password 1 "$(sed -n 's/^Socket=//p' "$ask")"
check "the unit resumes the conversion" "wait_until 'pvencrypt --status | grep -qE \"^ */dev/vda +vda_crypt +encrypting\"' 900"
check "the image boot 1 built opens vda_crypt: checked, not rebuilt" \
  "journal pvencrypt-resume.service 6 | grep -q 'the initramfs opens vda_crypt already; not rebuilt'"
status
check "systemd shows its progress (STATUS=)" "prop pvencrypt-resume.service StatusText | grep -q '^/dev/vda: encrypting'"
check "its progress goes to the journal at info priority" "wait_until 'journal pvencrypt-resume.service 6 | grep -q \"Encrypted: \"' 60"
echo "=== pvencrypt --abort"
pvencrypt --abort > /run/abort.out 2>&1
rc=$?; sed 's/^/abort: /' /run/abort.out
check_eq "pvencrypt --abort exit" "$rc" 0
check "the unit's run is stopped" "grep -q '^/dev/vda: stopped' /run/abort.out"
check "the unit ends" "wait_until '[ \"\$(prop pvencrypt-resume.service ActiveState)\" != active ]' 60"
check_eq "interrupted at a checkpoint (exit 1) is a success for the unit" \
  "$(prop pvencrypt-resume.service Result) $(prop pvencrypt-resume.service ExecMainStatus)" "success 1"
check "why it stopped goes to the journal at err priority" \
  "journal pvencrypt-resume.service 3 | grep -q '^pvencrypt: /dev/vda: stopped at'"
uuid=$(cryptsetup luksUUID /dev/vda)
check "the abort is recorded for the next boot" "[ -s /var/lib/pvencrypt/aborted/$uuid ]"
status
check "--status says aborted" "pvencrypt --status | grep -qE '^ */dev/vda +vda_crypt +aborted'"
check "vda is still half encrypted" "cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check_eq "marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
result
