# Acceptance test of the product: pvencrypt /dev/vda while its LVs are active, one of them a
# mounted ext4 being written, with a snapshot, a thin pool and an LV spanning two PVs.
# Afterwards no byte of any LV changed, no acknowledged write was lost, every table maps the
# crypt device, and a cold restart through stock cryptsetup finds everything again.
# disks: 512M 256M
# timeout: 900
. /tests/lib.sh

command -v pvencrypt >/dev/null || die "no pvencrypt in the initramfs: did cargo build --release fail?"
printf 'secret-passphrase' > /tmp/key
vda_mm=$(majmin /dev/vda)

# 440M of 512M: the end of vda stays free for the LUKS2 data shift.
run pvcreate -q -y --setphysicalvolumesize 440M /dev/vda
run pvcreate -q -y /dev/vdb
run vgcreate -q vg /dev/vda /dev/vdb
mklv fs -L 120M vg /dev/vda
mklv raw -L 64M vg /dev/vda
mklv origin -L 32M vg /dev/vda
mklv pool --type thin-pool -L 64M vg /dev/vda
mklv thin -V 100M -T vg/pool
mklv span -L 40M vg /dev/vda
run lvextend -q -L +40M vg/span /dev/vdb
dmsetup mknodes

rnd() { dd if=/dev/urandom of="$1" bs=1M count="$2" ${3:+seek=$3} conv=fsync 2>/dev/null; }
rnd /dev/mapper/vg-raw 64
rnd /dev/mapper/vg-origin 32
mklv snap -s -L 16M vg/origin /dev/vda
rnd /dev/mapper/vg-origin 8        # origin and snap now differ; snap holds the old 8M in its COW
rnd /dev/mapper/vg-thin 32
rnd /dev/mapper/vg-span 80
run mkfs.ext4 -q /dev/mapper/vg-fs
mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
rnd /mnt/fs/f1 40

LVS="raw origin snap thin span"
shas() { for lv in $LVS; do echo "$lv $(sha /dev/mapper/vg-$lv)"; done; echo "fs/f1 $(sha /mnt/fs/f1)"; }
shas > /tmp/sha.before
cat /tmp/sha.before
check "origin and snap differ" '[ "$(sha /dev/mapper/vg-origin)" != "$(sha /dev/mapper/vg-snap)" ]'
users=$(dm_users "$vda_mm")
echo "dm devices on vda ($vda_mm):" $users
lvs -a -o lv_name,lv_size,devices vg
dmsetup ls --tree

out=$(pvencrypt --key-file /tmp/key --test /dev/vda 2>&1); rc=$?
echo "$out"
check_eq "--test exit code" "$rc" 0
check "--test plans to suspend all 12 devices on vda, stacked ones too" \
  '[ "$(echo "$out" | sed -n "s/.*suspended for the switch: //p" | tr -d . | tr , "\n" | wc -l)" = 12 ] &&
   echo "$out" | grep -q "vg-thin" && echo "$out" | grep -q "vg-origin-real"'
check "--test names the crypttab line" 'echo "$out" | grep -q "/etc/crypttab gets: vda_crypt UUID="'
shas > /tmp/sha.test
check "--test changed no LV" cmp /tmp/sha.before /tmp/sha.test
check "--test left no crypttab" '[ ! -e /etc/crypttab ]'

writer_start /mnt/fs/log
wait_for '[ "$(writer_acked)" -ge 100 ]' 60 || die "writer too slow: $(cat /tmp/ack)"

echo "=== pvencrypt"
[ -n "$(arg pvtrace)" ] && export PVENCRYPT_TRACE=$(arg pvtrace)
t0=$(now)
{ timeout -s KILL ${PVE_TIMEOUT:-600} pvencrypt --key-file /tmp/key --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    -y -v /dev/vda; echo $? > /tmp/pve.rc; } 2>&1 | tee /tmp/pve.out
t1=$(now)
echo "=== pvencrypt exit $(cat /tmp/pve.rc) after $(echo "$t1 $t0" | awk '{print $1 - $2}') s"
writer_stop
echo "writer during the run: $(cat /tmp/ack)"
acked=$(writer_acked)

check_eq "pvencrypt exit code" "$(cat /tmp/pve.rc)" 0
shas > /tmp/sha.live
check "all LV content unchanged (live)" cmp /tmp/sha.before /tmp/sha.live
check "writer log intact (live)" pvwriter verify /mnt/fs/log "$acked"
dmsetup ls --tree
check "vda_crypt is open" '[ -b /dev/mapper/vda_crypt ]'
crypt_mm=$(majmin /dev/mapper/vda_crypt)
check_eq "only vda_crypt uses vda" "$(dm_users "$vda_mm" | tr '\n' ' ')" "vda_crypt "
for d in $users; do
  check "$d maps vda_crypt ($crypt_mm)" dm_refs "$d" "$crypt_mm"
done
# Stock `cryptsetup reencrypt --active-name` compares the key's name in the table with its own.
check "vda_crypt names its key as libcryptsetup does" \
  "dmsetup table vda_crypt | grep -q ' :64:logon:cryptsetup:$(cryptsetup luksUUID /dev/vda)-d[0-9] '"
pvs 2>/tmp/pvs.err
cat /tmp/pvs.err
check "pvs shows the PV on vda_crypt (live)" 'pvs --noheadings -o pv_name 2>/dev/null | grep -q /dev/mapper/vda_crypt'
check "pvs has no duplicate or warning (live)" '! grep -qiE "duplicate|warning" /tmp/pvs.err'
umount /mnt/fs
check "fsck clean" e2fsck -fn /dev/mapper/vg-fs

echo "=== cold restart"
run vgchange -q -an vg
run cryptsetup close vda_crypt
check "no dm device left" '[ -z "$(dmsetup ls | grep -v "No devices")" ]'
check "vda is LUKS" cryptsetup isLuks /dev/vda
cat /etc/crypttab
check_eq "crypttab entry" "$(grep -v '^#' /etc/crypttab | sed 's/,discard//')" "vda_crypt UUID=$(cryptsetup luksUUID /dev/vda) none luks"
# Opened as the boot would: name and source from the crypttab entry.
read -r tname tsrc _ < /etc/crypttab
for d in /dev/vd?; do [ "UUID=$(cryptsetup luksUUID "$d" 2>/dev/null)" = "$tsrc" ] && tdev=$d; done
check_eq "the crypttab source is vda" "${tdev:-}" /dev/vda
run cryptsetup open --key-file /tmp/key "$tdev" "$tname"
dmsetup mknodes
run vgscan -q
run vgchange -q -ay vg
dmsetup mknodes
run mount /dev/mapper/vg-fs /mnt/fs
shas > /tmp/sha.after
check "all LV content unchanged (restart)" cmp /tmp/sha.before /tmp/sha.after
check "writer log intact (restart)" pvwriter verify /mnt/fs/log "$acked"
pvs 2>/tmp/pvs.err
cat /tmp/pvs.err
check "pvs shows the PV on vda_crypt (restart)" 'pvs --noheadings -o pv_name 2>/dev/null | grep -q /dev/mapper/vda_crypt'
check "pvs has no duplicate or warning (restart)" '! grep -qiE "duplicate|warning" /tmp/pvs.err'
cryptsetup luksDump /dev/vda > /tmp/dump
grep -A3 Requirements /tmp/dump
check "no reencryption left in the header" '! grep -q online-reencrypt /tmp/dump'
umount /mnt/fs
check "fsck clean (restart)" e2fsck -fn /dev/mapper/vg-fs
result
