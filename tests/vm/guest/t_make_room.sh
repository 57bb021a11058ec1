# --make-room on a PV that fills its disk, its last extents owned by a mounted ext4 with a
# writer running: pvmove (in process) moves them to free extents lower down, pvresize
# shrinks the PV, the conversion follows. Every acknowledged write and every byte of the
# LVs survive, and no plaintext marker is left anywhere on the raw disk (the vacated
# extents included).
# disks: 256M 64M
# timeout: 900
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
marker=PVENCRYPT-PLAINTEXT-MARKER
yes "$marker-0123456789abcdef" | head -c 1048576 > /tmp/chunk
count() { grep -a -c "$marker" "$1"; }

mkvg vg /dev/vda                 # the whole disk: no room at the end
mklv a -L 64M vg
mklv gap -L 48M vg
mklv fs -l 100%FREE vg           # owns the last extents
run lvremove -q -y vg/gap        # 12 free extents in the middle
while cat /tmp/chunk; do :; done 2>/dev/null | dd of=/dev/mapper/vg-a bs=1M count=64 iflag=fullblock oflag=direct 2>/dev/null
run mkfs.ext4 -q /dev/mapper/vg-fs
mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
while cat /tmp/chunk; do :; done 2>/dev/null | head -c $((100 << 20)) > /mnt/fs/marker
sync
lvs -o lv_name,seg_pe_ranges vg
a_sha=$(sha /dev/mapper/vg-a) m_sha=$(sha /mnt/fs/marker)

out=$(pvencrypt --key-file /tmp/key $cheap -y /dev/vda 2>&1); rc=$?
echo "$out"
check_eq "without --make-room: refused" "$rc" 3
check "without --make-room: says how much is missing and how to make room" \
  'echo "$out" | grep -q "Shrink the PV by at least" && echo "$out" | grep -q -- "--make-room"'
out=$(pvencrypt --key-file /tmp/key --make-room --test /dev/vda 2>&1); rc=$?
echo "$out"
check_eq "--test --make-room: exit code" "$rc" 0
check "--test --make-room: the plan names the extents to move" 'echo "$out" | grep -q "pvmove extents 55-62"'
check "--test changed nothing" '[ "$(lvs --noheadings -o seg_pe_ranges vg/fs | tr -d " ")" = "/dev/vda:28-62" ]'

writer_start /mnt/fs/log
wait_for '[ "$(writer_acked)" -ge 50 ]' 60 || die "writer too slow"
pvencrypt --key-file /tmp/key $cheap --make-room -y -v /dev/vda
check_eq "pvencrypt --make-room exit code" "$?" 0
writer_stop
echo "writer: $(cat /tmp/ack)"
acked=$(writer_acked)
check "writer: all $acked acknowledged records intact" pvwriter verify /mnt/fs/log "$acked"
check_eq "LV a unchanged" "$(sha /dev/mapper/vg-a)" "$a_sha"
check_eq "marker file unchanged" "$(sha /mnt/fs/marker)" "$m_sha"
lvs -o lv_name,seg_pe_ranges vg
pvs -o pv_name,pv_size,dev_size
check "the PV is on vda_crypt" '[ "$(pvs --noheadings -o pv_name | tr -d " ")" = /dev/mapper/vda_crypt ]'
check "the PV was shrunk out of the room LUKS2 needs (224 MiB on)" \
  '[ "$(pvs --noheadings --units s --nosuffix -o pv_size | tr -d " ")" -le $((223 * 2048)) ]'
umount /mnt/fs
check "fsck clean" e2fsck -fn /dev/mapper/vg-fs
echo 3 > /proc/sys/vm/drop_caches
check_eq "marker lines on the raw disk after" "$(count /dev/vda)" 0
result
