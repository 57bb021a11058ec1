# Boot 1 of host/t_dracut_tpm2.sh, on the dracut root (host-only images) with a TPM2 (swtpm,
# QEMU's tpm-tis):
# pvencrypt --tpm2-device=auto converts the root PV in the foreground, to the end. The TPM2
# keyslot and token are in the header from the switch on (systemd-cryptenroll ran on the
# header in memory); crypttab says tpm2-device=auto; the image dracut rebuilt has the TPM2
# libraries and that entry.
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
echo "=== pvencrypt --tpm2-device=auto, to the end"
dracut_timer
pvencrypt --key-file /run/key $cheap -y -i 5 --tpm2-device=auto /dev/vda > /run/c.out 2>&1
rc=$?; sed 's/^/pvencrypt: /' /run/c.out
check_eq "pvencrypt exit" "$rc" 0
check "no reencryption left" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
cryptsetup luksDump /dev/vda | sed -n '/^Keyslots:/,/^Digests:/p' | grep -E '^ +[0-9]+: |systemd-tpm2|Keyslot:' | sed 's/^/luksDump: /'
check "a systemd-tpm2 token with its keyslot" "cryptsetup luksDump /dev/vda | grep -qE '^ +[0-9]+: systemd-tpm2'"
check "the passphrase still opens it" "cryptsetup open --test-passphrase --key-file /run/key /dev/vda"
check "crypttab: tpm2-device=auto" "grep -q '^vda_crypt UUID=$(cryptsetup luksUUID /dev/vda) none luks,discard,tpm2-device=auto\$' /etc/crypttab"
check "pvencrypt found the unlock in the image" "grep -q 'rebuilt the initramfs (dracut -f --regenerate-all); it opens vda_crypt' /run/c.out"
image_opens vda_crypt "the image"
check "the image's entry has tpm2-device=auto" "grep -q '^vda_crypt .*tpm2-device=auto' /run/ird.crypttab"
check "the image has the TPM2 libraries" "grep -q 'libtss2-esys.so' /run/ird.list"
# Host-only, built during the conversion: 90crypt looks for LUKS among the root's devices and
# finds pvencrypt's mover there, not vda: the entry is the one pvencrypt's module copies.
check_eq "dracut builds host-only images here" "$(grep -hs '^ *hostonly' /etc/dracut.conf.d/*.conf | tail -1)" 'hostonly="yes"'
check_eq "the image's crypttab has vda_crypt once" "$(grep -c '^vda_crypt ' /run/ird.crypttab)" 1
check_eq "marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
result
