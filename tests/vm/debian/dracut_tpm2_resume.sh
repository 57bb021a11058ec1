# Boot 3 of host/t_dracut_root.sh, the TPM2 back: libcryptsetup 2.6 (Debian 12) opens no
# device in reencryption with a token (LUKS2_activate refuses the unmet online-reencrypt
# requirement; 2.7 activates tokens through keyslot contexts, which handle it), so the
# generic image pvencrypt rebuilt fell back to the passphrase prompt, and the host typed it.
# pvencrypt-resume.service must resume with the TPM2 (the passphrase the systemd-tpm2 token
# unseals, tried before any other): the journal says so, and a question of its own (an ask
# file with Id=pvencrypt) fails the test. It finishes, and leaves the image boot 1 built as
# it is (checked: it opens vda_crypt with the TPM2). Then the admin makes dracut host-only
# (hostonly="yes") and rebuilds: 90crypt copies the entry itself, pvencrypt's module adds no
# second one; boot 4 boots that image.
. /tests/dracut-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
cryptsetup_journal
check "a TPM2; libcryptsetup 2.6: systemd-cryptsetup fell back to the passphrase" "[ -e /dev/tpmrm0 ] && fell_back"
half_encrypted
follow pvencrypt-resume.service
built=$(stat -c %Y /boot/initrd.img-$(uname -r))
echo "=== pvencrypt-resume.service resumes with the TPM2 and finishes"
check "pvencrypt-resume.service started at boot" "[ \"\$(prop pvencrypt-resume.service ExecMainStartTimestampMonotonic)\" -gt 0 ]"
asked() { grep -qs '^Id=pvencrypt' /run/systemd/ask-password/ask.*; }
# Until it ends, Result and ExecMainStatus read "success 0": the wait itself is a check.
check "it ended (or asked) within 1200 s" \
  "wait_until 'asked || [ \"\$(prop pvencrypt-resume.service ActiveState)\" != active ]' 1200"
check "it asked nothing" "! asked"
check_eq "it finished (exit 0)" \
  "$(prop pvencrypt-resume.service Result) $(prop pvencrypt-resume.service ExecMainStatus)" "success 0"
check "it says it unlocked with the TPM2" \
  "journal pvencrypt-resume.service 6 | grep -q '/dev/vda: unlocked with the TPM2 (its systemd-tpm2 token)'"
check "and that it finished" \
  "journal pvencrypt-resume.service 6 | grep -q '/dev/vda: encrypted; the volume group runs on /dev/mapper/vda_crypt'"
check "reencryption finished" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check "the token is still there" "cryptsetup luksDump /dev/vda | grep -qE '^ +[0-9]+: systemd-tpm2'"
check "the passphrase still opens it" "printf secret-passphrase | cryptsetup open --test-passphrase --key-file - /dev/vda"
uuid=$(cryptsetup luksUUID /dev/vda)
check_eq "one crypttab entry, tpm2-device=auto" \
  "$(grep -v '^#' /etc/crypttab | grep -cE "^vda_crypt UUID=$uuid none luks,discard,tpm2-device=auto\$")" 1
check "the image boot 1 built opens vda_crypt: checked, not rebuilt" \
  "journal pvencrypt-resume.service 6 | grep -q 'the initramfs opens vda_crypt already; not rebuilt' && [ \$(stat -c %Y /boot/initrd.img-\$(uname -r)) = $built ]"
image_opens vda_crypt "the generic image"
check "the generic image's entry has tpm2-device=auto" "grep -q '^vda_crypt .*tpm2-device=auto' /run/ird.crypttab"
check "the generic image has the TPM2 libraries" "grep -q 'libtss2-esys.so' /run/ird.list"
check_eq "the generic image's crypttab has vda_crypt once" "$(grep -c '^vda_crypt ' /run/ird.crypttab)" 1
echo "=== dracut made host-only, the images rebuilt"
echo 'hostonly="yes"' > /etc/dracut.conf.d/50-hostonly.conf
dracut_timer
check "dracut -f --regenerate-all" "dracut -f --regenerate-all > /run/dracut.out 2>&1"
image_opens vda_crypt "the host-only image"
check "the host-only image's entry has tpm2-device=auto" "grep -q '^vda_crypt .*tpm2-device=auto' /run/ird.crypttab"
check "the host-only image has the TPM2 libraries" "grep -q 'libtss2-esys.so' /run/ird.list"
check_eq "the host-only image's crypttab has vda_crypt once" "$(grep -c '^vda_crypt ' /run/ird.crypttab)" 1
sync
check_eq "marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
result
