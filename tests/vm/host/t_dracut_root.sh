# Boot integration on a Debian 12 root whose initramfs dracut builds (debian/build-root.sh's
# dracut flavor: Debian's generic image, hostonly not set, systemd inside), the root
# filesystem an LV of the PV being converted, /boot a plain disk, pvencrypt from its .deb.
# A generic image opens no LUKS device unless its crypttab or the kernel command line names
# it: pvencrypt adds /etc/dracut.conf.d/pvencrypt-NAME.conf for its dracut module.
#   prepare  (busybox guest): VG vg on vda, LV root filled with the root image (vdc)
#   boot 1   (the cached generic image): pvencrypt -b /dev/vda in its unit; crypttab, the
#            drop-in and dracut's rebuild (generic) right after the switch; while it runs the
#            test sets hostonly="yes" for the next rebuild; the power is cut a quarter
#            through the data phase. The host looks into the rebuilt image (etc/crypttab).
#   boot 2   (that generic image): systemd's prompt in the initramfs, the passphrase typed
#            once; pvencrypt-resume.service takes it from root's keyring (KeyringMode=shared),
#            asks nothing, rebuilds the image (host-only now: one crypttab entry, not two)
#            and finishes; lsinitrd checks the image
#   boot 3   (the host-only image) the root comes up from the finished vda_crypt, the
#            passphrase typed once
. "$(dirname "$0")/../lib.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
name=$(basename "$0" .sh)
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
"$here/debian/build-root.sh" "$VM_WORK/kernel" dracut || { echo "debian/build-root.sh dracut failed"; exit 1; }
deb=$VM_WORK/debian-dracut
kv=$(ls "$deb/boot" | sed -n 's/^vmlinuz-//p')
[ -x "${VM_PVENCRYPT:-}" ] || { echo "no pvencrypt binary (VM_PVENCRYPT; run through run.sh)"; exit 1; }
t_start=$SECONDS
took() { echo "TIME: $1 took $((SECONDS - $2)) s"; }

# The package, from this build's binary.
pkg=$("$here/../../packaging/build-deb.sh" "$VM_PVENCRYPT" "$run/deb") || { echo "packaging/build-deb.sh failed"; exit 1; }

# The root image: the cached root, the package installed, the test driver and scripts.
rm -rf "$run/root"; mkdir -p "$run"; cp -a "$deb/root" "$run/root"
cp "$pkg" "$run/root/tmp/pvencrypt.deb"
chroot "$run/root" dpkg -i /tmp/pvencrypt.deb > "$logs/$name.dpkg.log" 2>&1
check "dpkg -i pvencrypt.deb" [ $? -eq 0 ]
rm "$run/root/tmp/pvencrypt.deb"
mod=usr/lib/dracut/modules.d/91pvencrypt
if ! dpkg-deb -c "$pkg" | awk '{print $6}' | grep -qx "./$mod/module-setup.sh"; then
  # The package does not ship the dracut module yet (packaging is changed on another
  # branch): installed here from the source tree, as the package will install it.
  echo "the package lacks $mod: installed from dracut/91pvencrypt"
  install -D -m 755 "$here/../../dracut/91pvencrypt/module-setup.sh" "$run/root/$mod/module-setup.sh"
fi
mkdir -p "$run/root/tests"
cp "$here/guest/lib.sh" "$here"/debian/*.sh "$here/debian/run-test" "$run/root/tests/"
cp "$here/debian/pvtest.service" "$run/root/etc/systemd/system/"
mkdir -p "$run/root/etc/systemd/system/multi-user.target.wants"
ln -s ../pvtest.service "$run/root/etc/systemd/system/multi-user.target.wants/pvtest.service"
# The console belongs to the test and to the password prompts: no login prompt on it.
ln -sf /dev/null "$run/root/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$run/root/etc/systemd/system/getty@tty1.service"
# LVM's devices file on, as in t_debian_root.sh.
sed -i 's/^\t# use_devicesfile = 0$/\tuse_devicesfile = 1/' "$run/root/etc/lvm/lvm.conf"
grep -q '^.use_devicesfile = 1$' "$run/root/etc/lvm/lvm.conf" || { echo "cannot enable the devices file"; exit 1; }
disks=$(vm_disks "$run" 1G)
mkfs.ext4 -q -F -d "$deb/boot" "$run/vdb.img" 128M
mkfs.ext4 -q -F -d "$run/root" "$run/vdc.img" 640M
rm -rf "$run/root"
took "the root image" $t_start

t=$SECONDS
vm_boot "$logs/$name.prepare.log" debian_prepare "$run"/vd{a,b,c}.img
vm_report prepare "$logs/$name.prepare.log"
vm_passed "$logs/$name.prepare.log" || { echo "prepare failed"; exit 1; }
took "prepare" $t

# dracut's initramfs drops to its emergency shell if the root never comes (the host stops
# waiting). No floppy probing (QEMU has a controller, no disk): every read of fd0 fails slowly.
debian="root=/dev/mapper/vg-root rw modprobe.blacklist=floppy"

# initrd_file IMG PATH   a file of a dracut image, on the host (gzip, zstd or plain cpio; an
# early microcode cpio in front would hide the rest: the VM root has none).
initrd_file() {
  local dec=cat
  case $(head -c4 "$1" | od -An -tx1 | tr -d ' \n') in
    1f8b*) dec="gzip -dc";; 28b52ffd) dec="zstd -dc";;
  esac
  $dec < "$1" | cpio -i --quiet --to-stdout "$2" 2>/dev/null
}

# boot_unlocking N TEST: boots with the image now in /boot, types the passphrase once at
# the prompt of systemd-cryptsetup in the initramfs (the console is the VM's stdin).
prompt='Please enter passphrase for disk .*vda_crypt'
boot_unlocking() {
  local log=$logs/$name.boot$1.log t=$SECONDS
  rm -f "$run/initrd.img" "$run/console"
  debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
  mkfifo "$run/console"; exec 7<> "$run/console"
  VM_INITRD=$run/initrd.img VM_APPEND="$debian" _vm_cmd "$2" "$run"/vd{a,b}.img
  "${VM_CMD[@]}" < "$run/console" > "$log" 2>&1 &
  VM_PID=$!
  # An image that does not open vda_crypt waits for vg-root: dracut-initqueue's "timeout,
  # still waiting" (then "Could not boot", its emergency shell). No use waiting longer.
  if vm_wait_for "$log" "$prompt|still waiting for following initqueue hooks|Could not boot|[Ee]mergency" 400 &&
     grep -aqE "$prompt" "$log"; then
    echo "boot $1: the prompt after $((SECONDS - t)) s"
    printf 'secret-passphrase\n' >&7
    vm_wait 1500
  else
    sleep 5; vm_kill
  fi
  exec 7>&-
  check "boot $1: the initramfs asks for the passphrase of vda_crypt" "grep -aqE '$prompt' '$log'"
  check "boot $1: it asks once" "[ \$(grep -acE '$prompt' '$log') -eq 1 ]"
  vm_report "boot $1" "$log"
  tr -d '\r' < "$log" | grep -aE '^(pvencrypt|status|dracut|keyring):'
  check "boot $1" vm_passed "$log"
  took "boot $1" $t
  vm_passed "$log" || {
    echo "boot $1 failed; its console's end:"; tr -d '\r' < "$log" | grep -av '^\s*$' | tail -25 | sed 's/^/  | /'
    result
  }
}

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
boot_unlocking 3 debian_booted
took "$name" $t_start
result
