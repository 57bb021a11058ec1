# No plaintext left behind: every extent of the PV holds a marker line and both LVs stay
# active. After the conversion the raw device must not
# contain the marker anywhere: not in the header area, the tail where the first
# segment was parked, nor the shifted data.
# disks: 192M 64M
# timeout: 600
. /tests/lib.sh
printf secret-passphrase > /tmp/key
marker=PVENCRYPT-PLAINTEXT-MARKER
fill() {   # NAME LV: marker lines over the whole LV
  yes "$marker-$1-0123456789abcdef" | head -c 1048576 > /tmp/chunk
  while cat /tmp/chunk; do :; done 2>/dev/null | dd of="$2" bs=1M count=$(( $(blockdev --getsize64 "$2") >> 20 )) \
    iflag=fullblock oflag=direct 2>/dev/null
}
count() { grep -a -c "$marker" "$1"; }

PVOPTS="--setphysicalvolumesize 156M" mkvg vg /dev/vda
mklv first -L 32M vg
mklv rest -l 100%FREE vg
fill first /dev/mapper/vg-first
fill rest /dev/mapper/vg-rest
sync
check "the marker is on the raw device before (the search can find it)" '[ "$(count /dev/vda)" -gt 50000 ]'
shas() { echo "$(sha /dev/mapper/vg-first) $(sha /dev/mapper/vg-rest)"; }
before=$(shas)

pvencrypt --key-file /tmp/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -y /dev/vda
check_eq "pvencrypt exit code" "$?" 0
check_eq "LV content unchanged" "$(shas)" "$before"
echo 3 > /proc/sys/vm/drop_caches
check_eq "marker lines on the raw device after" "$(count /dev/vda)" 0
check "the parked copy at the end is gone" \
  '! dd if=/dev/vda bs=1M skip=176 count=16 iflag=direct 2>/dev/null | grep -a -q "$marker"'
check_eq "marker lines seen through the crypt device" "$(( $(count /dev/mapper/vda_crypt) > 50000 ))" 1
result
