# Sourced by the host tests that boot a Debian root (host/t_debian_root.sh, host/t_dracut_root.sh
# through debian/dracut-host.sh, host/proof_boot_tail_header.sh), after lib.sh: the root image
# in two steps, with the test's own changes in between.
#   root_tree DEB [PKG]   $run/root: DEB's cached root (debian/build-root.sh), PKG (the .deb)
#                         installed, the test driver (pvtest.service runs /tests/$pvtest.sh)
#   root_disks SIZE...    $run/vda.img (the PV, 1G: VG vg, LV root holding $run/root),
#                         $run/vdb.img (/boot from DEB/boot), then one image per SIZE (vdc...)
# Needs here (tests/vm), run, logs, name.
root_tree() {
  local deb=$1 pkg=${2:-} r=$run/root
  rm -rf "$r"; mkdir -p "$run"; cp -a "$deb/root" "$r"
  if [ -n "$pkg" ]; then
    cp "$pkg" "$r/tmp/pvencrypt.deb"
    chroot "$r" dpkg -i /tmp/pvencrypt.deb > "$logs/$name.dpkg.log" 2>&1
    check "dpkg -i pvencrypt.deb" [ $? -eq 0 ]
    rm "$r/tmp/pvencrypt.deb"
  fi
  mkdir -p "$r/tests" "$r/etc/systemd/system/multi-user.target.wants"
  cp "$here/guest/lib.sh" "$here"/debian/*.sh "$here/debian/run-test" "$r/tests/"
  cp "$VM_WORK/pvwriter" "$r/usr/local/bin/"   # lib.sh's sha
  cp "$here/debian/pvtest.service" "$r/etc/systemd/system/"
  ln -s ../pvtest.service "$r/etc/systemd/system/multi-user.target.wants/pvtest.service"
  # The console belongs to the test and to the password prompts: no login prompt on it.
  ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
  ln -sf /dev/null "$r/etc/systemd/system/getty@tty1.service"
}

root_disks() {
  local deb=$1; shift
  vm_disks "$run" 1G 128M "$@" > /dev/null
  mkfs.ext4 -q -F -d "$deb/boot" "$run/vdb.img" 128M
  "$here/debian/root-on-lv.sh" "$run/root" "$run/vda.img" 640 || { echo "root-on-lv.sh failed"; exit 1; }
  rm -rf "$run/root"
}

# LVM's devices file on (Debian 12 ships it off): the initramfs copies /etc/lvm, so a file
# still naming the raw PV would hide the VG from the next boot.
root_devicesfile() {
  sed -i 's/^\t# use_devicesfile = 0$/\tuse_devicesfile = 1/' "$run/root/etc/lvm/lvm.conf"
  grep -q '^.use_devicesfile = 1$' "$run/root/etc/lvm/lvm.conf" || { echo "cannot enable the devices file"; exit 1; }
}
