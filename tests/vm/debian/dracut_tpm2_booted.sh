# Boot 4 of host/t_dracut_root.sh, the conversion finished, the TPM2 there: the host-only
# image opened vda_crypt with the TPM2, nobody typed anything (pvtpm2=1 on the kernel
# command line says the host gave it a TPM2).
. /tests/dracut-lib.sh
cryptsetup_journal
check "systemd-cryptsetup unlocked vda_crypt with the TPM2" "grep -q pvtpm2=1 /proc/cmdline && [ -e /dev/tpmrm0 ] && ! fell_back"
. /tests/debian_booted.sh
