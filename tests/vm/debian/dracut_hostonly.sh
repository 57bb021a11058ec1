# Boot 1 of host/t_dracut_hostonly.sh: the dracut root with hostonly="yes" (90crypt copies the
# crypttab entries of the root's devices itself; pvencrypt's module must not add a second).
# pvencrypt converts vda in the foreground, to the end; the guest looks into the image.
. /tests/dracut-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check_eq "dracut is host-only" "$(grep -hs '^ *hostonly' /etc/dracut.conf.d/*.conf | tail -1)" 'hostonly="yes"'
check "pvencrypt's dracut module is installed" "[ -x /usr/lib/dracut/modules.d/91pvencrypt/module-setup.sh ]"
run lvm lvmdevices -y --adddev /dev/vda
head -c 48M /dev/urandom > /var/marker; sha /var/marker > /var/marker.sha; sync
printf secret-passphrase > /run/key
echo "=== pvencrypt, in the foreground, to the end"
dracut_timer
t0=$(now)
pvencrypt --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y -i 2 /dev/vda > /run/c.out 2>&1
rc=$?; sed 's/^/pvencrypt: /' /run/c.out
echo "pvencrypt: took $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s"
check_eq "pvencrypt exit" "$rc" 0
check "reencryption finished" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check "the dracut drop-in names the module and vda_crypt" \
  "grep -qs '^add_dracutmodules+=\" pvencrypt \"' /etc/dracut.conf.d/pvencrypt-vda_crypt.conf &&
   grep -q '^pvencrypt_crypttab+=\" vda_crypt \"' /etc/dracut.conf.d/pvencrypt-vda_crypt.conf"
image_opens vda_crypt "host-only"
check_eq "the image's crypttab has vda_crypt once" "$(grep -c '^vda_crypt ' /run/ird.crypttab)" 1
check_eq "marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
result
