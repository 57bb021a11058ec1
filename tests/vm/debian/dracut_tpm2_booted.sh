# Boots 3 and 4 of host/t_dracut_tpm2.sh, the conversion finished: the root came up from
# vda_crypt, unlocked by the TPM2 (pvtpm2=1 on the kernel command line: boot 3) or, without
# it, by the passphrase after systemd-cryptsetup gave up waiting for a TPM2 (boot 4).
. /tests/dracut-lib.sh
cryptsetup_log=$(journalctl -b -o cat -u systemd-cryptsetup@vda_crypt.service 2>&1)
echo "$cryptsetup_log" | sed 's/^/cryptsetup: /'
if grep -q 'pvtpm2=1' /proc/cmdline; then
  check "systemd-cryptsetup unlocked vda_crypt with the TPM2" \
    "[ -e /dev/tpmrm0 ] && ! grep -qiE 'falling back to traditional unlocking|aborting security device based authentication' <<< \"\$cryptsetup_log\""
else
  check "no TPM2: systemd-cryptsetup fell back to the passphrase" \
    "[ ! -e /dev/tpmrm0 ] && grep -qiE 'falling back to traditional unlocking|aborting security device based authentication' <<< \"\$cryptsetup_log\""
fi
. /tests/debian_booted.sh
