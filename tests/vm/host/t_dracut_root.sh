# seconds: 700   (measured, TCG: run.sh starts the longest first)
# Boot integration on a Debian 12 root whose initramfs dracut builds (debian/build-root.sh's
# dracut flavor: Debian's generic image, hostonly not set, systemd inside), the root
# filesystem an LV of the PV being converted, /boot a plain disk, pvencrypt from its .deb.
# A generic image opens no LUKS device unless its crypttab or the kernel command line names
# it: pvencrypt adds /etc/dracut.conf.d/pvencrypt-NAME.conf for its dracut module.
#   prepare  (busybox guest): VG vg on vda, LV root filled with the root image (vdc)
#   boot 1   (the cached generic image): pvencrypt -b /dev/vda in its unit; crypttab, the
#            drop-in and dracut's rebuild right after the switch; the power is cut a quarter
#            through the data phase. The host looks into the rebuilt image (etc/crypttab).
#   boot 2   (that generic image): systemd's prompt in the initramfs, the passphrase typed
#            once; pvencrypt-resume.service takes it from root's keyring (KeyringMode=shared),
#            asks nothing, finds that the image opens the device (not rebuilt), finishes.
# The host-only image, and a boot from a finished device: host/t_dracut_tpm2.sh.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../debian/dracut-host.sh"

log1=$logs/$name.boot1.log t=$SECONDS
VM_INITRD=$deb/boot/initrd.img-$kv VM_APPEND="$debian" VM_TIMEOUT=1200 vm_boot "$log1" dracut_convert "$run"/vd{a,b}.img
vm_report "boot 1" "$log1"
tr -d '\r' < "$log1" | grep -aE '^(pvencrypt|status|dracut):'
check "boot 1: the power was cut in the data phase" "grep -aq '^status: .* encrypting ' '$log1' && ! grep -aq '^VM-EXIT' '$log1'"
check "boot 1: pvencrypt rebuilt the initramfs and found the unlock in it" \
  grep -aq 'rebuilt the initramfs (dracut -f --regenerate-all); it opens vda_crypt' "$log1"
check "boot 1: no warning about the initramfs" "! grep -aq 'DO NOT REBOOT' '$log1'"
took "boot 1" $t
# The image boot 2 boots, looked into on the host: the guest's power was cut.
rm -f "$run/initrd.img"; debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
initrd_file "$run/initrd.img" etc/crypttab | sed 's/^/image crypttab: /'
check "the rebuilt image's etc/crypttab has vda_crypt" "initrd_file '$run/initrd.img' etc/crypttab | grep -q '^vda_crypt UUID='"
check "the rebuilt image has the pvencrypt dracut module" \
  "initrd_file '$run/initrd.img' usr/lib/dracut/modules.txt | grep -qx pvencrypt"
check "the rebuilt image is generic (no 90crypt.conf in etc/cmdline.d)" \
  "! initrd_file '$run/initrd.img' etc/cmdline.d/90crypt.conf | grep -q ."
boot_unlocking 2 dracut_resume
took "$name" $t_start
result
