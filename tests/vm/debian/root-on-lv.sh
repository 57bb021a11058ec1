#!/bin/bash
# root-on-lv.sh ROOTDIR DISK SIZE_MIB: on the host, the Debian root tests' PV: DISK (an image
# file) becomes a PV with 32 MiB left after it for the LUKS2 header, VG vg, LV root of SIZE_MIB
# holding an ext4 made from ROOTDIR. The host has no device-mapper: LVM writes only metadata
# (activation=0) and mkfs writes the filesystem where the LV's one segment starts.
set -euo pipefail
root=$1 disk=$2 size=$3
export LVM_SUPPRESS_FD_WARNINGS=1
err=$(mktemp)
lo=$(losetup -f --show "$disk")
trap 'losetup -d "$lo"; rm -f "$err"' EXIT
# lvm CMD ARGS...: quiet; its messages only if it fails. It sees no other device: the other
# root test, preparing at the same time, has a VG vg on a loop device too.
lvm() {
  command lvm "$1" --devices "$lo" --config 'global { activation = 0 } devices { use_devicesfile = 0 }' "${@:2}" 2> "$err" ||
    { cat "$err" >&2; return 1; }
}
lvm pvcreate -q -y --setphysicalvolumesize $(($(blockdev --getsize64 "$lo") / 1048576 - 32))M "$lo" > /dev/null
lvm vgcreate -q vg "$lo" > /dev/null
lvm lvcreate -q -y -an -Zn -n root -L "${size}M" vg > /dev/null
# One segment from the first extent: the LV's bytes start at the PV's pe_start.
seg=$(lvm lvs --noheadings -o seg_pe_ranges vg/root | tr -d ' ')
[ "$seg" = "$lo:0-$((size / 4 - 1))" ] || { echo "root-on-lv: vg/root is $seg, not one segment from extent 0" >&2; exit 1; }
start=$(lvm pvs --noheadings --units b --nosuffix -o pe_start "$lo" | tr -d ' ')
losetup -d "$lo"; trap 'rm -f "$err"' EXIT
mkfs.ext4 -q -F -E offset="$start" -d "$root" "$disk" "${size}M"
