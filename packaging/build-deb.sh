#!/bin/bash
# Builds the Debian package of pvencrypt with dpkg-deb (no cargo-deb to install).
#   packaging/build-deb.sh [BINARY] [OUTDIR]
# BINARY: a pvencrypt already built (default: cargo build --locked --release, then
# target/release/pvencrypt). OUTDIR: where the .deb goes (default target/debian). Prints
# the path of the .deb. Needs dpkg-dev (dpkg-shlibdeps computes the library dependencies).
#
# Installs /usr/sbin/pvencrypt (stripped), its man page, the bash/zsh/fish completions,
# pvencrypt-resume.service (enabled, as a resume unit is expected to be; never stopped or
# restarted by an upgrade: that would stop a conversion at its next checkpoint), the dracut
# module 91pvencrypt, and what attaches --decrypt's tail headers at boot
# (pvencrypt-headers, its unit, initramfs-tools' hook and script). tests/vm/host/t_package.sh runs lintian on it and its maintainer scripts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-}
out=${2:-$root/target/debian}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --locked --release) >&2
  bin=$root/target/release/pvencrypt
fi
[ -x "$bin" ] || { echo "build-deb: no binary $bin" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
p=$stage/pkg

install -D -m 755 "$bin" "$p/usr/sbin/pvencrypt"
# As dh_strip does: Debian ships no symbol tables in a binary package.
strip --remove-section=.comment --remove-section=.note "$p/usr/sbin/pvencrypt"
install -d "$p/usr/share/man/man8"
gzip -9n < "$root/man/pvencrypt.8" > "$p/usr/share/man/man8/pvencrypt.8.gz"
install -D -m 644 "$root/completions/pvencrypt.bash" "$p/usr/share/bash-completion/completions/pvencrypt"
install -D -m 644 "$root/completions/_pvencrypt" "$p/usr/share/zsh/vendor-completions/_pvencrypt"
install -D -m 644 "$root/completions/pvencrypt.fish" "$p/usr/share/fish/vendor_completions.d/pvencrypt.fish"
# Where the build host's systemd looks for units: Debian 12 /lib/systemd/system, Debian 13
# /usr/lib/systemd/system (there systemd.pc comes with systemd-dev; without it, the fallback
# still works through the merged /usr).
unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null) || true
for unit in pvencrypt-resume.service pvencrypt-headers.service; do
  install -D -m 644 "$root/systemd/$unit" "$p${unitdir:-/lib/systemd/system}/$unit"
done
install -D -m 755 "$root/dracut/91pvencrypt/module-setup.sh" "$p/usr/lib/dracut/modules.d/91pvencrypt/module-setup.sh"
# --decrypt's header at the device's tail, attached at boot (DECRYPT.md): the helper, its
# unit (above), initramfs-tools' hook and init-premount script; dracut's module carries them.
install -D -m 755 "$root/libexec/pvencrypt-headers" "$p/usr/lib/pvencrypt/pvencrypt-headers"
install -D -m 755 "$root/initramfs-tools/hooks/pvencrypt" "$p/usr/share/initramfs-tools/hooks/pvencrypt"
install -D -m 755 "$root/initramfs-tools/scripts/init-premount/pvencrypt" \
  "$p/usr/share/initramfs-tools/scripts/init-premount/pvencrypt"

maintainer='pvencrypt developers <pvencrypt@users.noreply.github.com>'
install -d "$p/usr/share/doc/pvencrypt"
cat > "$p/usr/share/doc/pvencrypt/copyright" <<C
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pvencrypt

Files: *
Copyright: 2026 pvencrypt developers
License: GPL-2.0-or-later
 On Debian systems, the full text is in /usr/share/common-licenses/GPL-2.
C
# A native package (the version has no Debian revision): its changelog is changelog.gz. One
# entry, dated by the last commit (else now) so that a tree always gives the same one.
when=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}
gzip -9n > "$p/usr/share/doc/pvencrypt/changelog.gz" <<C
pvencrypt ($version) unstable; urgency=medium

  * Built from the pvencrypt source tree; its git history lists the changes.

 -- $maintainer  $(date -u -R -d "@$when")
C

# The libraries the binary links, as Debian names their packages (dpkg-shlibdeps wants a
# source package around it). libdevmapper comes through liblvm2cmd; named for clarity.
mkdir -p "$stage/src/debian"
printf 'Source: pvencrypt\n\nPackage: pvencrypt\nArchitecture: any\n' > "$stage/src/debian/control"
shlibs=$(cd "$stage/src" && dpkg-shlibdeps -O "$p/usr/sbin/pvencrypt" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
for need in libcryptsetup12 liblvm2cmd2.03; do
  grep -q "$need" <<< "$shlibs" || { echo "build-deb: $need missing from: $shlibs" >&2; exit 1; }
done

mkdir -p "$p/DEBIAN"
(cd "$p" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$p/DEBIAN/md5sums"
cat > "$p/DEBIAN/control" <<C
Package: pvencrypt
Version: $version
Architecture: $arch
Maintainer: $maintainer
Section: admin
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$p" | cut -f1)
Depends: $shlibs, libdevmapper1.02.1
Recommends: lvm2, cryptsetup-initramfs | dracut, systemd
Description: encrypt an LVM physical volume in place while its LVs stay in use
 pvencrypt turns an LVM2 physical volume into LVM-on-LUKS2 in place, while its
 logical volumes stay active, mounted and written to. It works like pvmove:
 background runs, --status, --abort, and resuming by running it again;
 pvencrypt-resume.service resumes an interrupted conversion at boot.
C
# debhelper's snippets (13.11, Debian 12) for an enabled unit that an upgrade neither stops nor
# restarts: dh_installsystemd's postinst-systemd-enable, postrm-systemd(-reload-only).
# The unmask lifts the mask that earlier builds' postrm put on `dpkg -r` (as debhelper's did
# before 13.10), which left conversions unresumed at boot after a reinstall; deb-systemd-helper
# lifts only its own mask, never the admin's. was-enabled is true on a first install and after
# a removal, false once the admin disabled the unit: that choice stays.
cat > "$p/DEBIAN/postinst" <<'S'
#!/bin/sh
set -e
if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
  for unit in pvencrypt-resume.service pvencrypt-headers.service; do
    deb-systemd-helper unmask $unit >/dev/null || true
    if deb-systemd-helper --quiet was-enabled $unit; then
      deb-systemd-helper enable $unit >/dev/null || true
    else
      deb-systemd-helper update-state $unit >/dev/null || true
    fi
  done
  if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
  fi
fi
S
# No mask on removal: the unit file goes with the package, and the links left in /etc until
# the purge point at nothing, which systemd skips.
cat > "$p/DEBIAN/postrm" <<'S'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ]; then
  if [ -x "/usr/bin/deb-systemd-helper" ]; then
    deb-systemd-helper purge pvencrypt-resume.service pvencrypt-headers.service >/dev/null || true
  fi
  rm -rf /var/lib/pvencrypt
fi
S
chmod 755 "$p/DEBIAN/postinst" "$p/DEBIAN/postrm"

mkdir -p "$out"
deb=$out/pvencrypt_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$p" "$deb" >/dev/null
echo "$deb"
