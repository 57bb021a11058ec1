# The Debian package as Debian expects it, with no VM: lintian on the .deb, then its
# maintainer scripts with dpkg in a chroot of the cached Debian 12 root. The resume unit must
# come back enabled after `dpkg -r` + `dpkg -i` (apt remove, apt install): a unit left masked
# or disabled would leave conversions silently not resumed at boot. An earlier package masked
# it on removal, so the reinstall must also lift a mask deb-systemd-helper left; the admin's
# own disable or mask must survive a reinstall.
. "$(dirname "$0")/../lib.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
run=${VM_RUN:-$(mktemp -d)}
"$here/debian/build-root.sh" "$VM_WORK/kernel" || { echo "debian/build-root.sh failed"; exit 1; }
[ -x "${VM_PVENCRYPT:-}" ] || { echo "no pvencrypt binary (VM_PVENCRYPT; run through run.sh)"; exit 1; }

pkg=$("$here/../../packaging/build-deb.sh" "$VM_PVENCRYPT" "$run/deb") || { echo "packaging/build-deb.sh failed"; exit 1; }
# Lintian's stderr only says that it runs as root.
lint=$(lintian "$pkg" 2>/dev/null); lint_rc=$?
printf 'lintian:\n%s\n' "$lint"
check "lintian exits 0" [ "$lint_rc" -eq 0 ]
check "lintian reports no error or warning" "! grep -qE '^[EW]: ' <<< \"\$lint\""
files=$(dpkg-deb -c "$pkg" | awk '{print $1, $6}')
for f in usr/lib/pvencrypt/pvencrypt-headers usr/share/initramfs-tools/hooks/pvencrypt \
  usr/share/initramfs-tools/scripts/init-premount/pvencrypt; do
  check "the package has $f, executable" grep -qxe "-rwxr-xr-x ./$f" <<< "$files"
done
check "the package has the dracut module, executable" \
  grep -qxe '-rwxr-xr-x ./usr/lib/dracut/modules.d/91pvencrypt/module-setup.sh' <<< "$files"
check "the package has md5sums" "dpkg-deb --ctrl-tarfile '$pkg' | tar -t | grep -qx './md5sums'"

r=$run/root
rm -rf "$r"; mkdir -p "$run"; cp -a "$VM_WORK/debian/root" "$r"
cp "$pkg" "$r/tmp/pvencrypt.deb"
unit=pvencrypt-resume.service
in_root() { chroot "$r" "$@" >> "$run/dpkg.log" 2>&1; }
# What systemd itself would do with the unit at boot (systemctl reads the files offline in a
# chroot); a removed package's unit has no state at all.
state() { chroot "$r" systemctl is-enabled "$unit" 2>/dev/null; }
masked() { [ "$(readlink "$r/etc/systemd/system/$unit")" = /dev/null ]; }
wanted() { [ -L "$r/etc/systemd/system/multi-user.target.wants/$unit" ]; }

check "dpkg -i" in_root dpkg -i /tmp/pvencrypt.deb
check "installed: enabled" '[ "$(state)" = enabled ]'
check "installed: multi-user.target wants the unit" wanted
check "installed: pvencrypt-headers.service enabled, sysinit.target wants it" \
  "[ \"\$(chroot '$r' systemctl is-enabled pvencrypt-headers.service)\" = enabled ] &&
   [ -L '$r/etc/systemd/system/sysinit.target.wants/pvencrypt-headers.service' ]"
check "installed: dpkg --verify finds the files intact" \
  '[ -s "$r/var/lib/dpkg/info/pvencrypt.md5sums" ] && in_root dpkg --verify pvencrypt'

check "dpkg -r" in_root dpkg -r pvencrypt
check "removed: not masked (as dh_installsystemd since debhelper 13.10)" '! masked'
check "dpkg -i after dpkg -r" in_root dpkg -i /tmp/pvencrypt.deb
check "reinstalled: enabled, not masked" '[ "$(state)" = enabled ] && ! masked'

# The mask an earlier pvencrypt's postrm left (deb-systemd-helper runs only from dpkg).
in_root dpkg -r pvencrypt
in_root env DPKG_MAINTSCRIPT_PACKAGE=pvencrypt deb-systemd-helper mask "$unit"
check "removed by an earlier package: masked" masked
check "dpkg -i over that mask" in_root dpkg -i /tmp/pvencrypt.deb
check "reinstalled over that mask: enabled, not masked" '[ "$(state)" = enabled ] && ! masked'

# The admin's choices outlive a reinstall (an upgrade runs the same postinst).
in_root systemctl disable "$unit"
in_root dpkg -i /tmp/pvencrypt.deb
check "disabled by the admin, reinstalled: still disabled" '[ "$(state)" = disabled ] && ! wanted'
in_root systemctl enable "$unit"
in_root systemctl mask "$unit"
in_root dpkg -i /tmp/pvencrypt.deb
check "masked by the admin, reinstalled: still masked" '[ "$(state)" = masked ]'
in_root systemctl unmask "$unit"

mkdir -p "$r/var/lib/pvencrypt/aborted"
check "dpkg -P" in_root dpkg -P pvencrypt
check "purged: no link, no mask, no state, no /var/lib/pvencrypt" \
  '! wanted && ! masked && [ -z "$(find "$r/var/lib/systemd" -name "$unit*")" ] && [ ! -e "$r/var/lib/pvencrypt" ]'
echo "dpkg and systemctl in the chroot:"; cat "$run/dpkg.log"
rm -rf "$r"
result
