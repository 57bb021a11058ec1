# Issue 24's boot side, before any of it is pvencrypt's own code (not a t_ test: `run.sh
# proof_boot_tail_header`): a LUKS2 header kept in a device's last 16 MiB while it is decrypted
# (DECRYPT.md) opens the device at boot, in the initramfs and by systemd-cryptsetup, through
# pvencrypt's pieces: libexec/pvencrypt-headers, initramfs-tools' hook and init-premount
# script, pvencrypt-headers.service. On the Debian 12 root (initramfs-tools), stock
# cryptsetup 2.6.1 makes the states (debian/header_setup.sh).
#   boot 1  (Debian's image) vdc and vdd made and their decryption initialized; the headers
#           file, crypttab (header=), the initramfs rebuilt and looked into
#   boot 2  (that image) the initramfs asks for vdc_crypt's passphrase, the host types it;
#           vdd opens with its key file; stock resume finishes both decryptions online
. "$(dirname "$0")/../lib.sh"
here=$(cd "$(dirname "$0")/.." && pwd) top=$(cd "$(dirname "$0")/../../.." && pwd)
name=$(basename "$0" .sh)
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
. "$here/debian/host-root.sh"
"$here/debian/build-root.sh" "$VM_WORK/kernel" || { echo "debian/build-root.sh failed"; exit 1; }
deb=$VM_WORK/debian
kv=$(ls "$deb/boot" | sed -n 's/^vmlinuz-//p')

root_tree "$deb"
r=$run/root
# Where the package will put them.
install -D -m 755 "$top/libexec/pvencrypt-headers" "$r/usr/lib/pvencrypt/pvencrypt-headers"
install -D -m 755 "$top/initramfs-tools/hooks/pvencrypt" "$r/usr/share/initramfs-tools/hooks/pvencrypt"
install -D -m 755 "$top/initramfs-tools/scripts/init-premount/pvencrypt" \
  "$r/usr/share/initramfs-tools/scripts/init-premount/pvencrypt"
install -D -m 644 "$top/systemd/pvencrypt-headers.service" "$r/lib/systemd/system/pvencrypt-headers.service"
mkdir -p "$r/etc/systemd/system/sysinit.target.wants"
ln -s /lib/systemd/system/pvencrypt-headers.service "$r/etc/systemd/system/sysinit.target.wants/"
root_disks "$deb" 256M 256M
debian="root=/dev/mapper/vg-root rw modprobe.blacklist=floppy"

log=$logs/$name.boot1.log
VM_INITRD=$deb/boot/initrd.img-$kv VM_APPEND="$debian" VM_TIMEOUT=900 vm_boot "$log" header_setup "$run"/vd{a,b,c,d}.img
vm_report "boot 1" "$log"
tr -d '\r' < "$log" | grep -aE '^(headers|crypttab|image( crypttab)?|update-initramfs|vd[cd]):'
check "boot 1" vm_passed "$log"

log=$logs/$name.boot2.log
rm -f "$run/initrd.img" "$run/console"
debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
mkfifo "$run/console"; exec 7<> "$run/console"
VM_INITRD=$run/initrd.img VM_APPEND="$debian" _vm_cmd header_boot "$run"/vd{a,b,c,d}.img
vm_start_root "$log" "$run/console"
vm_wait_for "$log" 'Please unlock disk vdc_crypt' 300 && printf 'secret-passphrase\n' >&7
vm_wait 900
exec 7>&-
check "boot 2: the initramfs asks for vdc_crypt's passphrase" grep -aq 'Please unlock disk vdc_crypt' "$log"
check "boot 2: pvencrypt-headers attached vdc's header in the initramfs" \
  "grep -aqE 'pvencrypt-headers: vdc_crypt: the LUKS2 header of /dev/disk/by-path/[^ ]* is /dev/loop[0-9]+' '$log'"
check "boot 2: the initramfs opened vdc_crypt" "grep -aq 'cryptsetup: vdc_crypt: set up successfully' '$log'"
vm_report "boot 2" "$log"
tr -d '\r' < "$log" | grep -aE '^(headers|vdd cryptsetup|vd[cd] pvs):'
check "boot 2" vm_passed "$log"
result
