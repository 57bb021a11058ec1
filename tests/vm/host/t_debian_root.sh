# Boot integration on a real Debian 12 root (built once by debian/build-root.sh): the root
# filesystem is an LV of the PV being converted, /boot is a plain disk, LVM's devices file on.
#   prepare  (busybox guest): VG vg on vda, LV root filled with the Debian root image (vdc)
#   boot 1   (Debian's initramfs, udev running): pvencrypt /dev/vda under the mounted root;
#            the power is cut half way through the data phase
#   boot 2   (the initramfs pvencrypt had rebuilt, taken from /boot): it asks for the
#            passphrase, the test types it, the root comes up on the half-encrypted PV;
#            pvencrypt run again finishes; crypttab, devices file and initramfs checked
#   boot 3   the root comes up from the finished vda_crypt
. "$(dirname "$0")/../lib.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
"$here/debian/build-root.sh" "$VM_WORK/kernel" || { echo "debian/build-root.sh failed"; exit 1; }
deb=$VM_WORK/debian
kv=$(ls "$deb/boot" | sed -n 's/^vmlinuz-//p')
[ -x "${VM_PVENCRYPT:-}" ] || { echo "no pvencrypt binary (VM_PVENCRYPT; run through run.sh)"; exit 1; }

# The root image: the cached root plus this build's pvencrypt and the test scripts.
rm -rf "$run/root"; mkdir -p "$run"; cp -a "$deb/root" "$run/root"
install -m 755 "$VM_PVENCRYPT" "$run/root/usr/local/sbin/pvencrypt"
mkdir -p "$run/root/tests"
cp "$here/guest/lib.sh" "$here"/debian/*.sh "$here/debian/init" "$run/root/tests/"
# LVM's devices file on (Debian 12 ships it off): the initramfs copies /etc/lvm, so a file
# still naming the raw PV would hide the VG from the next boot.
sed -i 's/^\t# use_devicesfile = 0$/\tuse_devicesfile = 1/' "$run/root/etc/lvm/lvm.conf"
grep -q '^.use_devicesfile = 1$' "$run/root/etc/lvm/lvm.conf" || { echo "cannot enable the devices file"; exit 1; }
disks=$(vm_disks "$run" 1G)
mkfs.ext4 -q -F -d "$deb/boot" "$run/vdb.img" 128M
mkfs.ext4 -q -F -d "$run/root" "$run/vdc.img" 640M
rm -rf "$run/root"

vm_boot "$logs/t_debian_root.prepare.log" debian_prepare "$run"/vd{a,b,c}.img
vm_report prepare "$logs/t_debian_root.prepare.log"
vm_passed "$logs/t_debian_root.prepare.log" || { echo "prepare failed"; exit 1; }

# The distribution's initramfs panics (panic=-1: the VM stops) if the root never comes.
debian="root=/dev/mapper/vg-root rw init=/tests/init"
log1=$logs/t_debian_root.boot1.log
VM_INITRD=$deb/boot/initrd.img-$kv VM_APPEND="$debian" VM_TIMEOUT=1200 vm_boot "$log1" debian_convert "$run"/vd{a,b}.img
vm_report "boot 1" "$log1"
tr -d '\r' < "$log1" | grep -a '^pvencrypt:'
check "boot 1: pvencrypt rebuilt the initramfs and found the unlock in it" \
  grep -aq 'rebuilt the initramfs (update-initramfs -u -k all); it opens vda_crypt' "$log1"
check "boot 1: no warning about the initramfs" "! grep -aq 'DO NOT REBOOT' '$log1'"
check "boot 1: the power was cut in the data phase" "grep -aq '^pvencrypt: .*Encrypted: ' '$log1' && ! grep -aq '^VM-EXIT' '$log1'"

# boot_unlocking N TEST: boots with the initramfs now in /boot, types the passphrase at the
# prompt (the console is the VM's stdin).
boot_unlocking() {
  local log=$logs/t_debian_root.boot$1.log
  rm -f "$run/initrd.img" "$run/console"
  debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
  mkfifo "$run/console"; exec 7<> "$run/console"
  VM_INITRD=$run/initrd.img VM_APPEND="$debian" _vm_cmd "$2" "$run"/vd{a,b}.img
  "${VM_CMD[@]}" < "$run/console" > "$log" 2>&1 &
  VM_PID=$!
  vm_wait_for "$log" 'Please unlock disk vda_crypt' 300 && printf 'secret-passphrase\n' >&7
  vm_wait 900
  exec 7>&-
  check "boot $1: the initramfs asks for the passphrase of vda_crypt" grep -aq 'Please unlock disk vda_crypt' "$log"
  vm_report "boot $1" "$log"
  tr -d '\r' < "$log" | grep -a '^pvencrypt:'
  check "boot $1" vm_passed "$log"
}
boot_unlocking 2 debian_resume
boot_unlocking 3 debian_booted
result
