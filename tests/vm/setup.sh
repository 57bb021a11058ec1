#!/bin/bash
# Installs what the VM rig needs and caches a Debian kernel in vm-work/kernel/.
# Idempotent: a second run installs and downloads nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${VM_WORK:-$root/vm-work}

# The rig itself (kmod: depmod/modprobe resolve module dependencies for the initramfs).
pkgs="qemu-system-x86 busybox-static lvm2 cryptsetup-bin e2fsprogs util-linux cpio gzip xz-utils
  kmod thin-provisioning-tools gcc libc6-dev binutils"
# packaging/build-deb.sh (the Debian root test installs pvencrypt from its package);
# host/t_package.sh checks the package with lintian.
pkgs+=" dpkg-dev lintian"
# --tpm2-device: a software TPM2 for the VMs (QEMU's tpm-tis), and for the host test of the
# binding (src/luks.rs) through tpm2-tss's swtpm TCTI and the libraries systemd-cryptenroll
# loads (without esys and rc: "TPM2 support not installed"; a fresh machine lacked them).
pkgs+=" swtpm libtss2-tcti-swtpm0 libtss2-esys-3.0.2-0 libtss2-rc0 libtss2-mu0"
# run.sh builds pvencrypt: its build dependencies (bindgen needs libclang).
pkgs+=" pkg-config clang libclang-dev libcryptsetup-dev liblvm2-dev libdevmapper-dev"

missing=$(for p in $pkgs; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
done)
updated=
if [ -n "$missing" ]; then
  echo "setup: installing" $missing
  apt-get update -qq; updated=1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! ls "$work"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
  kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
  pkg=$(kpkg)
  if [ -z "$pkg" ] && [ -z "$updated" ]; then apt-get update -qq; pkg=$(kpkg); fi
  [ -n "$pkg" ] || { echo "setup: cannot resolve the kernel package from linux-image-amd64" >&2; exit 1; }
  echo "setup: fetching $pkg"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg")
  rm -rf "$work/kernel.tmp"; mkdir -p "$work"
  dpkg-deb -x "$tmp"/*.deb "$work/kernel.tmp"
  # The package's postinst normally runs depmod; build-initramfs.sh needs modules.dep.
  depmod -b "$work/kernel.tmp" "$(ls "$work/kernel.tmp/lib/modules")"
  mv "$work/kernel.tmp" "$work/kernel"
fi
# The VMs boot the kernel's ELF image through its PVH entry: under TCG, a bzImage spends
# seconds of every boot decompressing itself. Extracted once from the packaged vmlinuz (xz,
# as Debian builds it); without it the VMs boot the vmlinuz.
kv=$(ls "$work/kernel/lib/modules")
if [ ! -s "$work/kernel/boot/vmlinux-$kv" ]; then
  z=$work/kernel/boot/vmlinuz-$kv x=$work/kernel/boot/vmlinux-$kv
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$z" | head -1 | cut -d: -f1) || true   # none: no vmlinux
  [ -z "$off" ] || tail -c +$((off + 1)) "$z" | xz -dc --single-stream > "$x.tmp" || true
  # XEN_ELFNOTE_PHYS32_ENTRY (0x12): QEMU's -kernel boots an ELF through it.
  if readelf -n "$x.tmp" 2>/dev/null | grep -q 'note type: (0x00000012)'; then mv "$x.tmp" "$x"
  else rm -f "$x.tmp"; echo "setup: no PVH vmlinux in $z; the VMs boot the vmlinuz (slower)"; fi
fi
echo "setup: ok, kernel $kv"
