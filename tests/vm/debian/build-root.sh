#!/bin/bash
# Builds a small Debian 12 root for the boot-integration tests, cached in $VM_WORK/debian/
# (initramfs-tools, host/t_debian_root.sh) or $VM_WORK/debian-dracut/ (dracut, host/t_dracut_*.sh):
#   root/   minbase + systemd as init, lvm2, udev, and either cryptsetup-initramfs or dracut
#           (the distribution's own boot path), the VM kernel's storage and crypto modules;
#           /boot is empty (vdb in the VM)
#   boot/   the VM kernel and the initramfs the root's tool built for it (initramfs-tools:
#           MODULES=most; dracut: Debian's generic image, hostonly not set), no crypttab yet:
#           the first boot finds the VG on the raw PV
# usage: build-root.sh KROOT [initramfs-tools|dracut]   (KROOT: the unpacked kernel package
# setup.sh caches)
# Idempotent: a second run builds nothing (unless VERSION changed). Needs the network
# (deb.debian.org) once.
set -euo pipefail
kroot=$1 flavor=${2:-initramfs-tools}
case $flavor in
  initramfs-tools)
    work=${VM_WORK:?}/debian
    VERSION=5   # bump when the root's contents change: a cached older root is rebuilt
    tool=cryptsetup-initramfs;;
  dracut)
    work=${VM_WORK:?}/debian-dracut
    VERSION=4   # the same, for the dracut root
    # dracut conflicts with initramfs-tools: none of it gets in. cryptsetup: 90crypt's check().
    # tpm2-tools (and the TPM2 libraries with it): dracut's tpm2-tss module, systemd-cryptenroll
    # and systemd-cryptsetup's TPM2 unlock (host/t_dracut_root.sh); a generic image leaves them out.
    tool=dracut,cryptsetup,tpm2-tools,libtss2-tcti-device0;;
  *) echo "build-root: unknown flavor $flavor" >&2; exit 2;;
esac
# Two tests of one flavor may run at once (host/t_debian_root.sh and host/t_package.sh;
# t_dracut_root.sh and t_dracut_hostonly.sh): one builds, the other waits.
mkdir -p "$VM_WORK"; exec 9> "$work.lock"; flock 9
[ "$(cat "$work/done" 2>/dev/null)" = "$VERSION" ] && exit 0
kv=$(ls "$kroot/lib/modules")
command -v mmdebstrap >/dev/null || {
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
rm -rf "$work"; mkdir -p "$work"
r=$work/root
echo "build-root: mmdebstrap bookworm ($flavor)"
mmdebstrap --quiet --variant=minbase \
  --include=systemd-sysv,dbus,init-system-helpers,lvm2,liblvm2cmd2.03,$tool,udev,kmod,zstd,e2fsprogs \
  --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' bookworm "$r" http://deb.debian.org/debian

# Only what a VM with virtio disks needs to boot and to encrypt; MODULES=most takes what is there.
m=lib/modules/$kv
mkdir -p "$r/$m/kernel/drivers" "$r/$m/kernel/fs"
cp -a "$kroot/$m"/modules.{order,builtin,builtin.modinfo} "$r/$m/"
# Of the filesystems only ext4's: with all 135 modules of fs/, the initramfs rebuild pvencrypt
# runs in the TCG guest took over 600 s under load.
for d in arch lib fs/ext4 fs/jbd2 fs/mbcache.ko fs/autofs block drivers/block drivers/md drivers/virtio drivers/char; do
  cp -a "$kroot/$m/kernel/$d" "$r/$m/kernel/$d"
done
# Of the crypto modules only what dm-crypt's aes-xts, ext4 and the kernel's crypto API
# (libcryptsetup's cipher check) load, with what they need: the 140 there made 40 % of the
# rebuild's 6400 processes (counted on the host with strace), every one slow under TCG.
rm -rf "$r/$m/kernel/arch/x86/crypto"
for k in aesni_intel xts aes_generic sha256_generic crc32c_generic crc32c_intel af_alg algif_skcipher algif_hash; do
  modprobe -d "$kroot" -S "$kv" --show-depends $k | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r f; do
  mkdir -p "$r/$(dirname "${f#"$kroot"/}")"; cp -a "$f" "$r/${f#"$kroot"/}"
done
depmod -b "$r" "$kv"
# The kernel package's /boot, without setup.sh's ELF vmlinux (the small VMs boot it through
# PVH): beside the vmlinuz, linux-version lists the kernel twice, and update-initramfs -k all
# built every image twice (its second mkinitramfs was the 485 s nobody explained in session
# 18's t_debian_root; on the host: 1914 processes instead of 3844).
cp -a "$kroot/boot/." "$r/boot/"; rm -f "$r/boot/vmlinux-"*

cat > "$r/etc/fstab" <<'F'
/dev/mapper/vg-root /     ext4 errors=remount-ro 0 1
/dev/vdb            /boot ext4 defaults          0 2
F
echo pvtest > "$r/etc/hostname"
mount --bind /proc "$r/proc"; mount --bind /sys "$r/sys"; mount --bind /dev "$r/dev"
trap 'umount "$r/proc" "$r/sys" "$r/dev" 2>/dev/null || true' EXIT
if [ "$flavor" = dracut ]; then
  # gzip -9, dracut's default here, takes 12 of its 16 s on the host and about 20 of the
  # 160 s of the rebuild pvencrypt runs in the TCG guest (gzip -1: 18 MiB instead of 17);
  # the rest is dracut's thousand-odd processes, slow under TCG.
  echo 'compress="gzip -1"' > "$r/etc/dracut.conf.d/10-vm-fast.conf"
  # As Debian's kernel postinst hook runs it: a generic image, named as initramfs-tools names it.
  echo "build-root: dracut -f --kver $kv"
  t0=$SECONDS
  chroot "$r" dracut -q -f --kver "$kv" "/boot/initrd.img-$kv" 2>&1 | grep -v '^dracut: *$' || true
  echo "build-root: dracut took $((SECONDS - t0)) s on the host"
else
  echo "build-root: update-initramfs -c -k $kv"
  chroot "$r" update-initramfs -c -k "$kv" 2>&1 | grep -v '^W: Couldn.t identify type of root\|^cryptsetup: WARNING' || true
fi
umount "$r/proc" "$r/sys" "$r/dev"; trap - EXIT
[ -s "$r/boot/initrd.img-$kv" ] || { echo "build-root: $flavor made no initramfs" >&2; exit 1; }
mkdir -p "$work/boot"; mv "$r/boot/"* "$work/boot/"
echo "$VERSION" > "$work/done"
echo "build-root: $(du -sh "$r" | cut -f1) root, $(du -h "$work/boot/initrd.img-$kv" | cut -f1) initramfs"
