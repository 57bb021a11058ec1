# seconds: 1100   (measured, TCG: run.sh starts the longest first)
# Boot integration and the systemd side on a real Debian 12 root (built once by
# debian/build-root.sh; systemd is PID 1): the root filesystem is an LV of the PV being
# converted, /boot is a plain disk, LVM's devices file on, pvencrypt installed from the .deb
# packaging/build-deb.sh makes of this build (a fault-injection build: the VM rig's).
#   prepare  (on the host, debian/root-on-lv.sh): VG vg on vda, LV root holding the root
#   boot 1   (Debian's initramfs): pvencrypt -b /dev/vda runs in pvencrypt-vda.service, is
#            stopped inside the switch's freeze and killed there (systemctl kill -s KILL): the
#            root serves within a second, on the plain PV again; run again, the power is cut
#            three quarters through the data phase
#   boot 2   (the initramfs pvencrypt had rebuilt): it asks for the passphrase, the test types
#            it; pvencrypt-resume.service asks again (systemd's password agents, the console
#            among them), the test answers as an agent, the unit resumes; pvencrypt --abort
#            stops it; a clean shutdown
#   boot 3   pvencrypt-resume.service leaves the aborted conversion alone; pvencrypt -b
#            clears the abort and goes on in its unit, is stopped inside a commit and killed
#            there (systemctl kill -s KILL): the root serves within a second; a clean shutdown
#   boot 4   pvencrypt-resume.service resumes it at boot and finishes it; crypttab, devices
#            file and initramfs checked
#   boot 5   the root comes up from the finished vda_crypt
. "$(dirname "$0")/../lib.sh"
here=$(cd "$(dirname "$0")/.." && pwd) name=t_debian_root
. "$here/debian/host-root.sh"
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
"$here/debian/build-root.sh" "$VM_WORK/kernel" || { echo "debian/build-root.sh failed"; exit 1; }
deb=$VM_WORK/debian
kv=$(ls "$deb/boot" | sed -n 's/^vmlinuz-//p')
[ -x "${VM_PVENCRYPT:-}" ] || { echo "no pvencrypt binary (VM_PVENCRYPT; run through run.sh)"; exit 1; }

# The package, from this build's binary.
pkg=$("$here/../../packaging/build-deb.sh" "$VM_PVENCRYPT" "$run/deb") || { echo "packaging/build-deb.sh failed"; exit 1; }
files=$(dpkg-deb -c "$pkg" | awk '{print $6}')
# The unit goes where the build host's systemd has them, as build-deb.sh finds it.
unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null) || true
for f in ./usr/sbin/pvencrypt ./usr/share/man/man8/pvencrypt.8.gz ./usr/share/bash-completion/completions/pvencrypt \
  ./usr/share/zsh/vendor-completions/_pvencrypt ./usr/share/fish/vendor_completions.d/pvencrypt.fish \
  ".${unitdir:-/lib/systemd/system}/pvencrypt-resume.service" ./usr/lib/dracut/modules.d/91pvencrypt/module-setup.sh; do
  check "the package has $f" grep -qx "$f" <<< "$files"
done
check "the package depends on the libraries" \
  "dpkg-deb -f '$pkg' Depends | grep 'libcryptsetup12' | grep 'liblvm2cmd2.03' | grep -q 'libdevmapper1.02.1'"

# The root image: the cached root, the package installed, the test driver and scripts; LVM's
# devices file on.
root_tree "$deb" "$pkg"
root_devicesfile
root_disks "$deb"

# The distribution's initramfs panics (panic=-1: the VM stops) if the root never comes.
# No floppy probing (QEMU has a controller, no disk): every read of fd0 fails slowly.
debian="root=/dev/mapper/vg-root rw modprobe.blacklist=floppy"
log1=$logs/t_debian_root.boot1.log
VM_INITRD=$deb/boot/initrd.img-$kv VM_APPEND="$debian" VM_TIMEOUT=2100 vm_boot "$log1" debian_convert "$run"/vd{a,b}.img
vm_report "boot 1" "$log1"
tr -d '\r' < "$log1" | grep -aE '^(pvencrypt|status):'
check "boot 1: pvencrypt rebuilt the initramfs and found the unlock in it" \
  grep -aq 'rebuilt the initramfs (update-initramfs -u -k all); it opens vda_crypt' "$log1"
check "boot 1: no warning about the initramfs" "! grep -aq 'DO NOT REBOOT' '$log1'"
check "boot 1: the power was cut in the data phase" "grep -aq '^status: .* encrypting ' '$log1' && ! grep -aq '^VM-EXIT' '$log1'"

# boot_unlocking N TEST: boots with the initramfs now in /boot, types the passphrase at the
# initramfs' prompt (the console is the VM's stdin).
boot_unlocking() {
  local log=$logs/t_debian_root.boot$1.log
  rm -f "$run/initrd.img" "$run/console"
  debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
  mkfifo "$run/console"; exec 7<> "$run/console"
  VM_INITRD=$run/initrd.img VM_APPEND="$debian" _vm_cmd "$2" "$run"/vd{a,b}.img
  vm_start_root "$log" "$run/console"
  vm_wait_for "$log" 'Please unlock disk vda_crypt' 300 && printf 'secret-passphrase\n' >&7
  vm_wait 900
  exec 7>&-
  check "boot $1: the initramfs asks for the passphrase of vda_crypt" grep -aq 'Please unlock disk vda_crypt' "$log"
  vm_report "boot $1" "$log"
  tr -d '\r' < "$log" | grep -aE '^(pvencrypt|status|abort):'
  check "boot $1" vm_passed "$log"
}
# The resume unit's question is checked in the guest (its ask file): the guest answers it at
# once, often before systemd's console agent has printed it.
boot_unlocking 2 debian_resume
boot_unlocking 3 debian_aborted
boot_unlocking 4 debian_finished
boot_unlocking 5 debian_booted
result
