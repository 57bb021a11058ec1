# Boots 2 and 3 of host/t_dracut_tpm2.sh: the root came up from vda_crypt; TPM2=1 on the
# kernel command line (pvtpm2=1) when the TPM2 was there and unlocked it.
. /tests/dracut-lib.sh
cryptsetup_log=$(journalctl -b -o cat -u systemd-cryptsetup@vda_crypt.service 2>&1)
echo "$cryptsetup_log" | sed 's/^/cryptsetup: /'
if grep -q 'pvtpm2=1' /proc/cmdline; then
  check "systemd-cryptsetup unlocked vda_crypt with the TPM2" \
    "! grep -qi 'falling back to traditional unlocking' <<< \"\$cryptsetup_log\" && [ -e /dev/tpmrm0 ]"
else
  check "no TPM2: systemd-cryptsetup fell back to the passphrase" \
    "[ ! -e /dev/tpmrm0 ] && grep -qi 'falling back to traditional unlocking' <<< \"\$cryptsetup_log\""
fi
. /tests/debian_booted.sh
