# Boot 1 of host/t_dracut_root.sh, on the dracut root (root is vg/root on vda, /boot is vdb,
# systemd and udev running, pvencrypt installed from its .deb, Debian's generic dracut image):
# pvencrypt -b converts the PV under the running root in its unit; right after the switch it
# adds the crypttab line and the dracut drop-in and rebuilds (dracut -f --regenerate-all), a
# generic image. The power is cut (PVENCRYPT_FAULT, no sync) a quarter through the data
# phase. The host looks into the rebuilt image and boots it.
. /tests/dracut-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check_eq "dracut builds the initramfs, not initramfs-tools" \
  "$(dpkg-query -W -f '${Status}' dracut) $(command -v update-initramfs)" "install ok installed "
check_eq "pvencrypt installed by its package" "$(dpkg-query -W -f '${Status}' pvencrypt) $(command -v pvencrypt)" \
  "install ok installed /usr/sbin/pvencrypt"
check "pvencrypt's dracut module is installed" "[ -x /usr/lib/dracut/modules.d/91pvencrypt/module-setup.sh ]"
check "no pvencrypt drop-in yet" "! ls /etc/dracut.conf.d/pvencrypt-* 2> /dev/null"
echo "dracut: hostonly: $(grep -hs '^ *hostonly' /etc/dracut.conf /etc/dracut.conf.d/*.conf | tail -1)"
run lvm lvmdevices -y --adddev /dev/vda   # Debian 12 has no lvmdevices link
head -c 48M /dev/urandom > /var/marker; sha /var/marker > /var/marker.sha; sync
printf secret-passphrase > /run/key
echo "=== --test: the initramfs and the passphrase at boot"
pvencrypt --test /dev/vda > /run/test.out 2>&1; rc=$?; cat /run/test.out
check_eq "--test exit" "$rc" 0
check "--test: the initramfs is rebuilt with dracut and checked" \
  "grep -q 'the initramfs is rebuilt with dracut -f --regenerate-all and checked (/ is on the volume group)' /run/test.out"
echo "=== pvencrypt -b, power cut at 25% of the data phase"
follow pvencrypt-vda.service
dracut_timer
PVENCRYPT_FAULT=run-25 pvencrypt -b --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y -i 2 \
  /dev/vda > /run/b.out 2>&1
rc=$?; cat /run/b.out
check_eq "pvencrypt -b returns, with success" "$rc" 0
check "the crypttab line, right after the switch" "wait_until 'grep -q \"^vda_crypt UUID=\" /etc/crypttab' 300"
echo "dracut: switched and crypttab written at $(now)s of uptime"
check "the dracut drop-in names the module and vda_crypt" \
  "wait_until 'grep -qs \"^add_dracutmodules+=\\\" pvencrypt \\\"\" /etc/dracut.conf.d/pvencrypt-vda_crypt.conf' 60 &&
   grep -q '^pvencrypt_crypttab+=\" vda_crypt \"' /etc/dracut.conf.d/pvencrypt-vda_crypt.conf"
cat /etc/dracut.conf.d/pvencrypt-vda_crypt.conf 2>/dev/null | sed 's/^/dracut: drop-in: /'
# The rebuild comes first; then the data phase, cut at 25%.
check "the unit's conversion runs" "wait_until 'pvencrypt --status | grep -qE \"^ */dev/vda +vda_crypt +encrypting\"' 900"
while :; do status; sleep 1; done &
sleep 900
check "the power cut came" false
result
