# Boot 4 of host/t_dracut_root.sh, the conversion finished, the TPM2 there: the host-only
# image opened vda_crypt with the TPM2, nobody typed anything (pvtpm2=1 on the kernel
# command line says the host gave it a TPM2).
. /tests/dracut-lib.sh
cryptsetup_log=$(journalctl -b -o cat -u systemd-cryptsetup@vda_crypt.service 2>&1)
echo "$cryptsetup_log" | sed 's/^/cryptsetup: /'
check "systemd-cryptsetup unlocked vda_crypt with the TPM2" \
  "grep -q pvtpm2=1 /proc/cmdline && [ -e /dev/tpmrm0 ] && ! grep -qiE 'falling back to traditional unlocking|aborting security device based authentication' <<< \"\$cryptsetup_log\""
. /tests/debian_booted.sh
