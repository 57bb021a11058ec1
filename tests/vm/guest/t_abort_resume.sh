# Issue 3's controls, with a writer running throughout: progress lines at -i 1 that
# increase, --status (JSON) while running, a second pvencrypt refused, --abort from a
# second process (exit 1 for the converter, data in use), then a resume in the
# background (-b, passphrase piped in as the boot unit does) that completes, logging
# to syslog. No acknowledged record is lost and no LV byte changes.
# The kernel command line names another LUKS device (rd.luks.uuid=), so every run warns that
# the next boot would not open vda_crypt: --status shows that warning while the -b run goes
# on, and after it ended (as a finished row), as the -b user's terminal never saw it.
# disks: 512M
# append: rd.luks.uuid=luks-00000000-0000-0000-0000-000000000000
# timeout: 900
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
syslogd -O /tmp/messages

PVOPTS="--setphysicalvolumesize 440M" mkvg vg /dev/vda
mklv fs -L 200M vg
mklv raw -L 64M vg
dd if=/dev/urandom of=/dev/mapper/vg-raw bs=1M count=64 oflag=direct 2>/dev/null
raw_sha=$(sha /dev/mapper/vg-raw)
run mkfs.ext4 -q /dev/mapper/vg-fs
mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
writer_start /mnt/fs/log

status_json() { pvencrypt --status --reportformat json; }
field() { status_json | sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p" | head -1; }
pct100() { field percent | awk '{ printf "%d", $1 * 100 }'; }

check_eq "--abort with nothing running" "$(pvencrypt --abort; echo rc=$?)" "No conversion is running.
rc=0"

echo "=== pvencrypt -i 1, aborted from a second process"
pvencrypt --key-file /tmp/key $cheap -y -i 1 /dev/vda > /tmp/pve1.out 2>&1 &
pve=$!
wait_for '[ "$(field state)" = encrypting ] && [ "$(pct100)" -ge 500 ]' 300 || die "no progress: $(cat /tmp/pve1.out)"
status_json
check_eq "--status names the running process" "$(field pid)" "$pve"
check "--status has a rate and bytes" '[ -n "$(field rate)" ] && [ "$(field bytes_total)" -gt 400000000 ]'
pvencrypt --key-file /tmp/key $cheap -y /dev/vda > /tmp/second.out 2>&1
check_eq "a second pvencrypt on the same PV is refused" "$?" 3
cat /tmp/second.out
check "it says who converts" "grep -q 'already being converted.*pid $pve' /tmp/second.out"
acked_before=$(writer_acked)
pvencrypt --abort > /tmp/abort.out 2>&1; rc=$?
cat /tmp/abort.out
check_eq "--abort exits 0" "$rc" 0
wait $pve; check_eq "the aborted pvencrypt exits 1" "$?" 1
cat /tmp/pve1.out
check "--abort waited for the stop" "grep -q 'vda: stopped' /tmp/abort.out"
lines=$(grep -c 'vda: Encrypted: [0-9.]*%$' /tmp/pve1.out)
check "-i 1 printed at least 2 percent lines ($lines)" '[ "$lines" -ge 2 ]'
check "the percent lines increase" \
  "grep -o 'Encrypted: [0-9.]*' /tmp/pve1.out | awk '{ if (NR > 1 && \$2 <= p) exit 1; p = \$2 }'"
status_json
check_eq "--status: aborted (stopped with --abort)" "$(field state)" aborted
p=$(pct100)
check "--status: stopped part-way ($p/10000)" '[ "$p" -gt 0 ] && [ "$p" -lt 10000 ]'
check "the boot unit's condition leaves it alone" '! pvencrypt --status --reportformat json | grep -q "state.: .stopped"'
warning="WARNING: /dev/vda: before rebooting, change the kernel command line .*: add rd.luks.uuid=$(cryptsetup luksUUID /dev/vda): only"
check "--status shows the stopped run's warning for the next boot" "pvencrypt --status | grep -q '$warning'"
check "no temporary mapping left after the abort" '! dmsetup ls | grep -q "temporary-cryptsetup\|^pvencrypt-"'
check "vda_crypt stays open" '[ -b /dev/mapper/vda_crypt ]'
check_eq "raw LV unchanged after the abort" "$(sha /dev/mapper/vg-raw)" "$raw_sha"
check "the writer goes on after the abort" wait_for '[ "$(writer_acked)" -gt $((acked_before + 20)) ]' 60

echo "=== resume: -b, passphrase piped in"
t0=$(now)
printf 'secret-passphrase\nnot-this-line\n' | pvencrypt -b -y -i 1 > /tmp/bg.out 2>&1; rc=$?
t1=$(now)
cat /tmp/bg.out
check_eq "-b exits 0" "$rc" 0
st=$(field state) p=$(pct100)
echo "-b returned after $(echo "$t1 $t0" | awk '{print $1 - $2}') s; state=$st at $p/10000"
check "-b returned with the work still going on" '[ "$st" = encrypting ] || [ "$st" = preparing ]'
check "--status shows it while the -b run goes on" \
  "wait_for 'pvencrypt --status | grep -q \"$warning\"' 120 && [ \"\$(field state)\" != finished ]"
check "the background conversion completes" wait_for '[ "$(field state)" = finished ]' 600
pvencrypt --status
check "--status shows the warning after the end, once" "[ \$(pvencrypt --status | grep -c '$warning') = 1 ]"
check "and in its JSON" "status_json | grep -A2 '\"warnings\": \\[' | grep -q 'add rd.luks.uuid='"
writer_stop
acked=$(writer_acked)
cat /tmp/messages | grep pvencrypt | tail -5
check "syslog has its progress lines" "grep -q 'pvencrypt\[[0-9]*\]: /dev/vda: Encrypted: [0-9.]*%' /tmp/messages"
check "syslog has its result" "grep -q 'vda: encrypted; the volume group runs on /dev/mapper/vda_crypt' /tmp/messages"
check "no reencryption left" '! cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
check "no temporary mapping left at the end" '! dmsetup ls | grep -q "temporary-cryptsetup\|^pvencrypt-"'
check "no pvencrypt token left" '! cryptsetup luksDump /dev/vda | grep -q pvencrypt'
check "writer: every acknowledged record is there ($acked)" pvwriter verify /mnt/fs/log "$acked"
check_eq "raw LV unchanged" "$(sha /dev/mapper/vg-raw)" "$raw_sha"
check "the raw LV now maps vda_crypt" dm_refs vg-raw "$(majmin /dev/mapper/vda_crypt)"
umount /mnt/fs
check "fsck clean" e2fsck -fn /dev/mapper/vg-fs
result
