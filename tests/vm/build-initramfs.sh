#!/bin/bash
# Builds the test initramfs: busybox + lvm2 + dmsetup + cryptsetup + e2fsprogs + thin tools +
# pvencrypt + pvwriter + tests/vm/guest/*.sh, and the Debian kernel's modules.
# usage: build-initramfs.sh KROOT OUT.cpio PVWRITER [PVENCRYPT]
# KROOT is an unpacked linux-image package with modules.dep (setup.sh makes one).
set -euo pipefail
kroot=$1 out=$2 writer=$3 pvencrypt=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
kv=$(ls "$kroot/lib/modules")
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT

# Merged-/usr layout like the host's, so every binary, library and configured path
# (e.g. lvm's thin_check_executable=/usr/sbin/thin_check) lands where it is looked up.
mkdir -p $w/usr/{bin,sbin,lib/modules,lib64} $w/{etc/lvm,proc,sys,dev,run,tmp,mnt,tests,var/lib,var/log}
for d in bin sbin lib lib64; do ln -s usr/$d $w/$d; done

# copy_file PATH: copy it (a symlink as a symlink plus its target), keeping host paths.
copy_file() {
  local p=$1 real dst
  real=$(readlink -f "$p")
  dst=$(readlink -f "$(dirname "$p")")/$(basename "$p")
  [ -e "$w$real" ] || { mkdir -p "$w$(dirname "$real")"; cp "$real" "$w$real"; }
  [ "$dst" = "$real" ] || [ -e "$w$dst" ] || { mkdir -p "$w$(dirname "$dst")"; ln -s "$real" "$w$dst"; }
}
copy_libs() { local l; for l in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do copy_file "$l"; done; }
copy_bin() { copy_file "$1"; copy_libs "$1"; }

for t in lvm dmsetup cryptsetup mkfs.ext4 mke2fs e2fsck blkid flock lsblk thin_check thin_dump thin_repair cache_check; do
  p=$(command -v $t) || { echo "build-initramfs: missing $t (run setup.sh)" >&2; exit 1; }
  copy_bin "$p"
done
for t in pvs vgs lvs pvcreate vgcreate lvcreate lvextend lvresize vgchange lvchange vgscan pvscan \
         vgcfgbackup vgcfgrestore lvconvert pvresize pvmove vgextend vgreduce lvremove vgremove \
         pvremove lvmdevices pvdisplay vgdisplay lvdisplay lvrename vgrename lvmconfig; do
  ln -s lvm $w/usr/sbin/$t
done
# busybox fills in every other command, without shadowing the real tools above.
cp "$(command -v busybox)" $w/usr/bin/busybox
for a in $(busybox --list); do
  [ -e $w/usr/bin/$a ] || [ -e $w/usr/sbin/$a ] || ln -s busybox $w/usr/bin/$a
done

if [ -n "$pvencrypt" ]; then rm -f $w/usr/bin/pvencrypt; cp "$pvencrypt" $w/usr/bin/pvencrypt; copy_libs "$pvencrypt"; fi
cp "$writer" $w/usr/bin/pvwriter
cp "$here"/guest/*.sh $w/tests/
cp /etc/mke2fs.conf $w/etc/ 2>/dev/null || true   # same ext4 features as the host's mkfs
ln -s /proc/self/mounts $w/etc/mtab               # mkfs/e2fsck look here for "mounted"

want="virtio_pci virtio_blk dm-mod dm-crypt dm-mirror dm-log dm-region-hash dm-snapshot dm-flakey
  dm-delay dm-zero dm-thin-pool dm-cache dm-cache-smq dm-bufio dm-persistent-data ext4 aesni_intel xts aes_generic
  sha256_generic crc32c_generic af_alg algif_skcipher algif_hash loop md-mod"
# add LIST MODULE...: the modules with their dependencies (softdeps too; built-ins skipped), in
# load order, to /lib/modules/LIST, but those "order" has. "order" loads at every boot; "lazy"
# where a test asks for it: dm-raid pulls in raid6_pq, whose load benchmarks its algorithms
# (seconds under TCG).
: > $w/usr/lib/modules/order; : > $w/usr/lib/modules/lazy
add() {
  local list=$1 m; shift
  for m; do
    modprobe -d "$kroot" -S "$kv" --show-depends $m | awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++' | while read -r f; do
    n=$(basename "$f") k=${n%.xz}; k=${k%.zst}
    [ $list != order ] && grep -qx "$k" $w/usr/lib/modules/order && continue
    cp "$f" $w/usr/lib/modules/
    case $n in *.xz) xz -d $w/usr/lib/modules/$n; n=${n%.xz};; *.zst) zstd -qd --rm $w/usr/lib/modules/$n; n=${n%.zst};; esac
    echo "$n" >> $w/usr/lib/modules/$list
  done
}
add order $want
add lazy dm-raid raid1   # md loads its raid1 personality by request_module: no modprobe here

# No udev, no lvmpolld, no dmeventd in the guest: LVM must create nodes itself and not wait.
cat > $w/etc/lvm/lvm.conf <<'C'
devices { obtain_device_list_from_udev = 0 external_device_info_source = "none" }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
global { use_lvmpolld = 0 }
C

cat > $w/init <<'I'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run/lock/lvm /run/lvm /run/cryptsetup
ln -s /proc/self/fd /dev/fd
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m 2>/dev/null; done
t=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^pvtest=//p')
echo "VM: kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime)s, test '$t'"
cd /tmp
if [ -z "$t" ]; then sh
elif [ -f "/tests/$t.sh" ]; then sh "/tests/$t.sh"; echo "VM-EXIT: $?"
else echo "VM: no /tests/$t.sh"; echo "VM-EXIT: 127"
fi
sync; poweroff -f
I
chmod +x $w/init

# Not compressed: under TCG the kernel spends 1.8 s of each boot inflating a gzip'd one.
(cd $w && find . | cpio -o -H newc --quiet) > "$out"
echo "built $out ($(du -h "$out" | cut -f1)), kernel $kv, $(wc -l < $w/usr/lib/modules/order) modules," \
     "pvencrypt: ${pvencrypt:-none}"
