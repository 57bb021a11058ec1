# Issue 12 on a live VG with a writer: what goes wrong around the freeze and in the data
# phase never leaves a device suspended behind the admin's back nor costs a reboot.
#  1. the VG changes between preflight and the freeze: refused under the VG lock, nothing
#     written (the tail beyond the PV, where the switch writes first, is unchanged);
#  1b. loading an LV's new table fails inside the freeze (injected): rolled back to the plain
#     PV, every LV resumed on it, no table left loaded;
#  2. resuming an LV after the switch keeps failing (injected): exit 5, the LV named on
#     stderr and in the kernel log, left suspended with its new table; `dmsetup resume`
#     and pvencrypt then finish;
#  3. stdout is a pipe whose reader went away: the run goes on (no panic), --abort stops it;
#  4. something else holds the raw device of a closed, half-converted PV: the resume does
#     not open NAME beside it (no CRYPT_ACTIVATE_SHARED);
#  5. SIGHUP (a dropped ssh session) in the data phase: the run goes on to the end and logs
#     to syslog; core dumps are off while it runs.
# disks: 512M
# timeout: 1500
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
syslogd -O /tmp/messages

PVOPTS="--setphysicalvolumesize 440M" mkvg vg /dev/vda
mklv fs -L 160M vg
mklv raw -L 64M vg
dd if=/dev/urandom of=/dev/mapper/vg-raw bs=1M count=64 oflag=direct 2>/dev/null
raw_sha=$(sha /dev/mapper/vg-raw)
run mkfs.ext4 -q /dev/mapper/vg-fs
mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
dd if=/dev/urandom of=/mnt/fs/f1 bs=1M count=32 2>/dev/null; sync
f1_sha=$(sha /mnt/fs/f1)
writer_start /mnt/fs/log

field() { pvencrypt --status --reportformat json | sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p" | head -1; }
pct100() { field percent | awk '{ printf "%d", $1 * 100 }'; }
tail_sha() { dd if=/dev/vda bs=1M skip=440 2>/dev/null | sha -; }

echo "=== 1. the VG changes while pvencrypt prepares"
tail0=$(tail_sha)
(
  wait_for '[ "$(field state)" = preparing ]' 60 || echo "never saw preparing" >&2
  lvcreate -q -y -n extra -L 8M vg >/dev/null 2>&1; dmsetup mknodes
  cat /tmp/key
) | pvencrypt --key-file - $cheap -y /dev/vda > /tmp/changed.out 2>&1
rc=$?
cat /tmp/changed.out
check_eq "refused (exit 3)" "$rc" 3
check "it says the VG changed" "grep -q 'volume group vg changed while pvencrypt was preparing' /tmp/changed.out"
check "no LUKS header" '! cryptsetup isLuks /dev/vda'
check_eq "the tail beyond the PV is untouched" "$(tail_sha)" "$tail0"
check "vg-fs still maps vda" dm_refs vg-fs "$(majmin /dev/vda)"
check "no vda_crypt left (nor its node)" '! dmsetup info vda_crypt >/dev/null 2>&1 && [ ! -e /dev/mapper/vda_crypt ]'
run lvremove -q -y vg/extra

echo "=== 1b. loading vg-raw's new table fails inside the freeze: rolled back"
tail0=$(tail_sha)
PVENCRYPT_FAULT="load vg-raw:fail1" pvencrypt --key-file /tmp/key $cheap -y /dev/vda > /tmp/load.out 2>&1
rc=$?
cat /tmp/load.out
check_eq "exit 5" "$rc" 5
check "it says the plain PV is back and nothing changed" \
  "grep -q 'The device was restored to the plain PV; nothing changed.' /tmp/load.out"
check "no LUKS header" '! cryptsetup isLuks /dev/vda'
check "LVM sees the PV on vda" 'pvs --noheadings -o pv_name 2>/dev/null | grep -q /dev/vda'
check "vg-fs and vg-raw run on vda, resumed" \
  'dm_refs vg-fs "$(majmin /dev/vda)" && dm_refs vg-raw "$(majmin /dev/vda)" && ! dmsetup info vg-fs vg-raw | grep -q SUSPENDED'
check "no table left loaded" '! dmsetup info vg-fs vg-raw | grep -q "Tables present:.*INACTIVE"'
check "no vda_crypt left (nor its node)" '! dmsetup info vda_crypt >/dev/null 2>&1 && [ ! -e /dev/mapper/vda_crypt ]'
check_eq "raw LV unchanged" "$(sha /dev/mapper/vg-raw)" "$raw_sha"
acked=$(writer_acked)
check "the writer goes on" wait_for '[ "$(writer_acked)" -gt $((acked + 20)) ]' 60

echo "=== 2. resuming vg-fs after the switch keeps failing"
PVENCRYPT_FAULT="resume vg-fs:fail99" pvencrypt --key-file /tmp/key $cheap -y /dev/vda > /tmp/resume.out 2>&1
rc=$?
cat /tmp/resume.out
check_eq "exit 5" "$rc" 5
check "stderr names the suspended LV and the way out" \
  "grep -q 'vg-fs is still SUSPENDED after 5 attempts.*dmsetup resume vg-fs' /tmp/resume.out"
check "the kernel log has it too" "dmesg | grep -q 'pvencrypt: vg-fs is still SUSPENDED'"
check "vg-fs is suspended" "dmsetup info vg-fs | grep -q SUSPENDED"
check "vg-raw was resumed" "dmsetup info vg-raw | grep -q ACTIVE && ! dmsetup info vg-raw | grep -q SUSPENDED"
check "vg-raw runs on vda_crypt" dm_refs vg-raw "$(majmin /dev/mapper/vda_crypt)"
acked=$(writer_acked)
run dmsetup resume vg-fs
check "vg-fs now runs on vda_crypt" dm_refs vg-fs "$(majmin /dev/mapper/vda_crypt)"
check "the writer goes on" wait_for '[ "$(writer_acked)" -gt $((acked + 20)) ]' 60

echo "=== 3. stdout is a pipe whose reader is gone"
pvencrypt --key-file /tmp/key -i 1 2>/tmp/pipe.err | head -c 1 > /dev/null &
check "the run reaches 20%" wait_for '[ "$(field state)" = encrypting ] && [ "$(pct100)" -ge 2000 ]' 300
pid=$(field pid)
check "the run outlived its reader" '[ -n "$pid" ] && sleep 2 && kill -0 "$pid"'
pvencrypt --abort >/dev/null 2>&1
wait_for '! kill -0 "$pid" 2>/dev/null' 60
cat /tmp/pipe.err
check "no panic" '! grep -q panicked /tmp/pipe.err'
check_eq "--status: aborted (stopped with --abort)" "$(field state)" aborted

echo "=== 4. another device holds the raw PV of the closed conversion"
writer_stop; acked1=$(writer_acked)
check "writer 1: every acknowledged record is there ($acked1)" pvwriter verify /mnt/fs/log "$acked1"
run umount /mnt/fs
run vgchange -q -an vg
run cryptsetup close vda_crypt
run dmsetup create holder --table "0 8 linear $(majmin /dev/vda) 0"
pvencrypt --key-file /tmp/key > /tmp/held.out 2>&1; rc=$?
cat /tmp/held.out
check_eq "the resume fails (exit 5)" "$rc" 5
check "it says the device is in use" "grep -q 'is in use by something else' /tmp/held.out"
check "vda_crypt was not opened beside the holder" '! dmsetup info vda_crypt >/dev/null 2>&1'
run dmsetup remove holder

echo "=== 5. SIGHUP in the data phase"
pvencrypt --key-file /tmp/key -i 1 > /tmp/hup.out 2>&1 &
pid=$!
check "the run reaches 40% (it opened vda_crypt)" wait_for '[ "$(field state)" = encrypting ] && [ "$(pct100)" -ge 4000 ]' 300
check "core dumps are off while it runs" "grep -q '^Max core file size *0 *0 ' /proc/$pid/limits"
kill -HUP $pid
wait $pid; rc=$?
cat /tmp/hup.out
check_eq "it went on to the end (exit 0)" "$rc" 0
check "no reencryption left" '! cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
check "it logged to syslog after the hangup" "grep -q 'pvencrypt\[$pid\]: /dev/vda: encrypted; the volume group runs on /dev/mapper/vda_crypt' /tmp/messages"

run vgchange -q -ay vg; dmsetup mknodes
run mount /dev/mapper/vg-fs /mnt/fs
check_eq "f1 unchanged" "$(sha /mnt/fs/f1)" "$f1_sha"
check "writer 1 log intact" pvwriter verify /mnt/fs/log "$acked1"
check_eq "raw LV unchanged" "$(sha /dev/mapper/vg-raw)" "$raw_sha"
check "vg-fs maps vda_crypt" dm_refs vg-fs "$(majmin /dev/mapper/vda_crypt)"
umount /mnt/fs
check "fsck clean" e2fsck -fn /dev/mapper/vg-fs
result
