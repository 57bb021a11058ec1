# Boot 1 of host/t_debian_root.sh, on the Debian root (root is vg/root on vda, /boot is vdb,
# systemd and udev running, pvencrypt installed from its .deb): pvencrypt -b converts the
# PV under the running root in a unit of its own, as an admin would run it, and the power is
# cut (PVENCRYPT_FAULT, no sync) three quarters through the data phase.
. /tests/debian-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check_eq "pvencrypt installed by its package" "$(dpkg-query -W -f '${Status}' pvencrypt) $(command -v pvencrypt)" \
  "install ok installed /usr/sbin/pvencrypt"
check_eq "the package enabled pvencrypt-resume.service" "$(systemctl is-enabled pvencrypt-resume.service)" enabled
check_eq "nothing to resume at this boot: the unit's condition said so" \
  "$(prop pvencrypt-resume.service ExecMainStartTimestampMonotonic)" 0
run lvm lvmdevices -y --adddev /dev/vda   # Debian 12 has no lvmdevices link
head -c 48M /dev/urandom > /var/marker; sha /var/marker > /var/marker.sha; sync
printf secret-passphrase > /run/key
echo "=== /boot as a plain directory of the root LV: refused"
run umount /boot
pvencrypt --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda > /run/bootdir.out 2>&1
rc=$?; cat /run/bootdir.out
check_eq "refused (exit 3)" "$rc" 3
check "it says why" "grep -q '/boot is a directory of the filesystem on vg-root' /run/bootdir.out"
check "no LUKS header" '! cryptsetup isLuks /dev/vda'
run mount /boot
echo "=== no cryptsetup-initramfs: the initramfs could not open the device, refused"
hook=/usr/share/initramfs-tools/hooks/cryptroot
run mv $hook /run/cryptroot.hook
pvencrypt --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda > /run/nohook.out 2>&1
rc=$?; cat /run/nohook.out
run mv /run/cryptroot.hook $hook
check_eq "refused (exit 3)" "$rc" 3
check "it says what to install" "grep -q '^pvencrypt: / is on the volume group, so the next boot must open vda_crypt in the initramfs, but .*apt install cryptsetup-initramfs' /run/nohook.out"
check "no LUKS header" '! cryptsetup isLuks /dev/vda'
echo "=== --test: the initramfs and the passphrase at boot"
pvencrypt --test /dev/vda > /run/test.out 2>&1; rc=$?; cat /run/test.out
check_eq "--test exit" "$rc" 0
check "--test: the initramfs is rebuilt and checked" \
  "grep -q 'the initramfs is rebuilt with update-initramfs -u -k all and checked (/ is on the volume group)' /run/test.out"
check "--test: the initramfs asks for the passphrase" \
  "grep -q 'every boot from now on stops in the initramfs (update-initramfs) until the passphrase of vda_crypt' /run/test.out"
echo "=== systemctl kill -s KILL of pvencrypt -b's unit inside the switch's freeze, the root suspended"
PVENCRYPT_FAULT=header:stop pvencrypt -b --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y -i 2 \
  /dev/vda > /run/k.out 2>&1
cat /run/k.out
killed_in_suspension pvencrypt-vda.service "killed in the switch"
check "killed in the switch: the plain PV is back" '! cryptsetup isLuks /dev/vda && pvs /dev/vda > /dev/null'
check "killed in the switch: its guardian says so in the kernel log" \
  "journalctl -b -k -o cat | grep -q 'pvencrypt died in the switch.s freeze; the LVs run on the plain PV again'"
check_eq "killed in the switch: the marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
# Memory pressure until the switch is over (crypttab gets its line right after it): every
# page a udev worker needs must come from the disk again. A freeze that waited for udev
# would wait for itself (the root is on the PV being switched). Not longer: it would make
# the initramfs rebuild take many minutes.
( until grep -q '^vda_crypt ' /etc/crypttab; do echo 3 > /proc/sys/vm/drop_caches; sleep 0.1; done ) &
echo "=== pvencrypt -b: a unit of its own; page cache dropped every 0.1 s, power cut at 75%"
follow pvencrypt-vda.service
timer update-initramf initramfs "update-initramfs"
timer mkinitramfs initramfs "its mkinitramfs"
timer lsinitramfs initramfs "pvencrypt's listing of the image (lsinitramfs)"
timer unmkinitramfs initramfs "the first unmkinitramfs (the listing's, or pvencrypt's unpacking)"
# Whatever the hand-over puts in a keyring, root could list it here while the unit starts.
( while :; do awk '$8 == "user" && $9 ~ /^pvencrypt/' /proc/keys; grep -a '@pvencrypt-' /proc/net/unix; sleep 0.05; done ) \
  > /run/handover.seen 2>&1 &
seen=$!
PVENCRYPT_FAULT=run-75 pvencrypt -b --key-file /run/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y -i 2 \
  /dev/vda > /run/b.out 2>&1
rc=$?; kill $seen; cat /run/b.out
check_eq "pvencrypt -b returns, with success" "$rc" 0
check "it names its unit" "grep -q 'in the background as pvencrypt-vda.service' /run/b.out"
# The unit took the passphrase when it started: it never reads this file.
rm /run/key
pid=$(prop pvencrypt-vda.service MainPID)
check_eq "the unit runs" "$(systemctl is-active pvencrypt-vda.service)" active
check "the passphrase is in neither its argv nor its environment" \
  "[ '$pid' -gt 0 ] && grep -qa pvencrypt /proc/$pid/cmdline && ! grep -qa secret-passphrase /proc/$pid/cmdline /proc/$pid/environ"
check "no pvencrypt key in any keyring while the unit started, only the hand-over's socket" \
  "! grep -q ' user ' /run/handover.seen && grep -q '@pvencrypt-' /run/handover.seen"
check "the hand-over's socket is gone" "! grep -qa '@pvencrypt-' /proc/net/unix"
check "the unit was handed its socket's name only" "grep -qa PVENCRYPT_HANDOVER=pvencrypt- /proc/$pid/environ"
# The initramfs rebuild comes first: over 600 s once, on a machine running four TCG VMs; over
# 900 s beside two crash tests and a compile (185 s alone).
t0=$SECONDS
check "--status finds the unit's conversion" "wait_until 'pvencrypt --status | grep -qE \"^ */dev/vda +vda_crypt +encrypting\"' 1500"
echo "the switch and the initramfs rebuild: encrypting after $((SECONDS - t0)) s"
check "systemd shows its progress (STATUS=)" "prop pvencrypt-vda.service StatusText | grep -q '^/dev/vda: encrypting'"
check "its progress goes to the journal at info priority" "wait_until 'journal pvencrypt-vda.service 6 | grep -q \"Encrypted: \"' 60"
check "and no error" "[ -z \"\$(journal pvencrypt-vda.service 3)\" ]"
while :; do status; sleep 1; done &
sleep 900
check "the power cut came" false
result
