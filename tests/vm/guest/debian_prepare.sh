# First half of host/t_debian_root.sh, in the busybox guest: a VG on vda (32 MiB left after
# the PV for the LUKS2 header) whose LV root receives the Debian root image from vdc.
. /tests/lib.sh
size=$(blockdev --getsize64 /dev/vda) img=$(blockdev --getsize64 /dev/vdc)
PVOPTS="--setphysicalvolumesize $((size / 1048576 - 32))M" mkvg vg /dev/vda
mklv root -L $((img / 1048576))M vg
run dd if=/dev/vdc of=/dev/mapper/vg-root bs=4M oflag=direct
check_eq "root image copied" "$(sha /dev/mapper/vg-root)" "$(sha /dev/vdc)"
run vgchange -q -an vg
result
