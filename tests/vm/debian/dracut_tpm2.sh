# Boot 1 of host/t_dracut_tpm2.sh, on the dracut root (host-only images) with a TPM2 (swtpm,
# QEMU's tpm-tis): a TPM2 that is not there is refused with nothing changed; then
# pvencrypt -b --tpm2-device=auto converts the root PV in its unit. The TPM2 keyslot and token
# are in the header from the switch on (systemd-cryptenroll ran on the header in memory);
# crypttab says tpm2-device=auto; dracut rebuilds the image. The power is cut (PVENCRYPT_FAULT,
# no sync) a quarter through the data phase: boot 2 resumes with the TPM2 alone.
. /tests/dracut-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check_eq "a TPM2" "$(cat /sys/class/tpm/tpm0/tpm_version_major 2>&1)" 2
run lvm lvmdevices -y --adddev /dev/vda
head -c 48M /dev/urandom > /var/marker; sha /var/marker > /var/marker.sha; sync
printf secret-passphrase > /run/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
echo "=== a TPM2 that is not there: refused, nothing changed"
pvencrypt --key-file /run/key $cheap -y --tpm2-device=/dev/tpmrm9 /dev/vda > /run/r.out 2>&1; rc=$?; cat /run/r.out
check_eq "refused (exit 3)" "$rc" 3
check "it says why" "grep -q -- '--tpm2-device=/dev/tpmrm9: no such device. Nothing was changed.' /run/r.out"
check "no LUKS header" '! cryptsetup isLuks /dev/vda'
echo "=== --test --tpm2-device=auto"
pvencrypt --test --tpm2-device=auto /dev/vda > /run/test.out 2>&1; rc=$?; cat /run/test.out
check_eq "--test exit" "$rc" 0
check "--test: the crypttab line has tpm2-device=auto" "grep -q 'gets: vda_crypt UUID=<new LUKS UUID> none luks,discard,tpm2-device=auto' /run/test.out"
check "--test: every boot unlocks with the TPM2" \
  "grep -q 'every boot from now on unlocks vda_crypt with the TPM2, in the initramfs (dracut), with nobody at the console' /run/test.out"
echo "=== pvencrypt -b --tpm2-device=auto, power cut at 25% of the data phase"
follow pvencrypt-vda.service
dracut_timer
PVENCRYPT_FAULT=run-25 pvencrypt -b --key-file /run/key $cheap -y -i 2 --tpm2-device=auto /dev/vda > /run/b.out 2>&1
rc=$?; cat /run/b.out
check_eq "pvencrypt -b returns, with success" "$rc" 0
# Right after the switch, while dracut rebuilds (a minute or more here): well before the cut.
check "the crypttab line, right after the switch, with tpm2-device=auto" \
  "wait_until 'grep -q \"^vda_crypt UUID=.* none luks,discard,tpm2-device=auto\\\$\" /etc/crypttab' 300"
cryptsetup luksDump /dev/vda | sed -n '/^Keyslots:/,/^Digests:/p' | grep -E '^ +[0-9]+: |systemd-tpm2|Keyslot:' | sed 's/^/luksDump: /'
check "a systemd-tpm2 token with its keyslot, from the switch on" "cryptsetup luksDump /dev/vda | grep -qE '^ +[0-9]+: systemd-tpm2'"
check "the passphrase opens it too" "cryptsetup open --test-passphrase --key-file /run/key /dev/vda"
check "the unit's conversion runs" "wait_until 'pvencrypt --status | grep -qE \"^ */dev/vda +vda_crypt +encrypting\"' 900"
while :; do status; sleep 1; done &
sleep 900
check "the power cut came" false
result
