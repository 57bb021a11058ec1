# Boot 1 of host/t_dracut_root.sh, on the dracut root (root is vg/root on vda, /boot is vdb,
# systemd and udev running, pvencrypt installed from its .deb, Debian's generic dracut image),
# a TPM2 there (swtpm, QEMU's tpm-tis): a TPM2 that is not there is refused with nothing
# changed; --test; then pvencrypt -b --tpm2-device=auto converts the PV under the running root
# in its unit. The TPM2 keyslot and token are in the header from the switch on
# (systemd-cryptenroll ran on the header in memory); right after the switch come the crypttab
# line (tpm2-device=auto), the dracut drop-in and the rebuild (a generic image). The power is
# cut (PVENCRYPT_FAULT, no sync) a quarter through the data phase. A drop-in of the test makes
# the next boot's resume stop at three quarters, once, for boot 2's power cut.
. /tests/dracut-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check_eq "dracut builds the initramfs, not initramfs-tools" \
  "$(dpkg-query -W -f '${Status}' dracut) $(command -v update-initramfs)" "install ok installed "
check_eq "pvencrypt installed by its package" "$(dpkg-query -W -f '${Status}' pvencrypt) $(command -v pvencrypt)" \
  "install ok installed /usr/sbin/pvencrypt"
check "pvencrypt's dracut module is installed" "[ -x /usr/lib/dracut/modules.d/91pvencrypt/module-setup.sh ]"
check "no pvencrypt drop-in yet" "! ls /etc/dracut.conf.d/pvencrypt-* 2> /dev/null"
check_eq "a TPM2" "$(cat /sys/class/tpm/tpm0/tpm_version_major 2>&1)" 2
echo "dracut: hostonly: $(grep -hs '^ *hostonly' /etc/dracut.conf /etc/dracut.conf.d/*.conf | tail -1)"
run lvm lvmdevices -y --adddev /dev/vda   # Debian 12 has no lvmdevices link
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
check "--test: the initramfs is rebuilt with dracut and checked" \
  "grep -q 'the initramfs is rebuilt with dracut -f --regenerate-all and checked (/ is on the volume group)' /run/test.out"
check "--test: the crypttab line has tpm2-device=auto" "grep -q 'gets: vda_crypt UUID=<new LUKS UUID> none luks,discard,tpm2-device=auto' /run/test.out"
check "--test: every boot unlocks with the TPM2" \
  "grep -q 'every boot from now on unlocks vda_crypt with the TPM2, in the initramfs (dracut), with nobody at the console' /run/test.out"
# The next boot's resume (pvencrypt-resume.service) stops at 75 % for the power cut, once: the
# drop-in removes itself as the unit starts, durably (the cut does not sync).
mkdir -p /etc/systemd/system/pvencrypt-resume.service.d
cat > /etc/systemd/system/pvencrypt-resume.service.d/cut.conf <<'C'
[Service]
Environment=PVENCRYPT_FAULT=run-75:stop
ExecStartPre=/bin/sh -c 'rm -f /etc/systemd/system/pvencrypt-resume.service.d/cut.conf && sync'
C
sync
echo "=== pvencrypt -b --tpm2-device=auto, power cut at 25% of the data phase"
follow pvencrypt-vda.service
dracut_timer
PVENCRYPT_FAULT=run-25 pvencrypt -b --key-file /run/key $cheap -y -i 2 --tpm2-device=auto /dev/vda > /run/b.out 2>&1
rc=$?; cat /run/b.out
check_eq "pvencrypt -b returns, with success" "$rc" 0
# Right after the switch, while dracut rebuilds (a minute or more here): well before the cut.
check "the crypttab line, right after the switch, with tpm2-device=auto" \
  "wait_until 'grep -q \"^vda_crypt UUID=.* none luks,discard,tpm2-device=auto\\\$\" /etc/crypttab' 300"
echo "dracut: switched and crypttab written at $(now)s of uptime"
cryptsetup luksDump /dev/vda | sed -n '/^Keyslots:/,/^Digests:/p' | grep -E '^ +[0-9]+: |systemd-tpm2|Keyslot:' | sed 's/^/luksDump: /'
check "a systemd-tpm2 token with its keyslot, from the switch on" "cryptsetup luksDump /dev/vda | grep -qE '^ +[0-9]+: systemd-tpm2'"
check "the passphrase opens it too" "cryptsetup open --test-passphrase --key-file /run/key /dev/vda"
check "the dracut drop-in names the module and vda_crypt" \
  "wait_until 'grep -qs \"^add_dracutmodules+=\\\" pvencrypt \\\"\" /etc/dracut.conf.d/pvencrypt-vda_crypt.conf' 60 &&
   grep -q '^pvencrypt_crypttab+=\" vda_crypt \"' /etc/dracut.conf.d/pvencrypt-vda_crypt.conf"
cat /etc/dracut.conf.d/pvencrypt-vda_crypt.conf 2>/dev/null | sed 's/^/dracut: drop-in: /'
# The rebuild comes first; then the data phase, cut at 25%. dracut's generic image took 446 s
# here beside another VM, and over 900 s beside it and a compile.
check "the unit's conversion runs" "wait_until 'pvencrypt --status | grep -qE \"^ */dev/vda +vda_crypt +encrypting\"' 1500"
while :; do status; sleep 1; done &
sleep 900
check "the power cut came" false
result
