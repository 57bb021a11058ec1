# `pvencrypt A B`: B is queued on the disk. pvencrypt is killed half way through A:
# --status lists A stopped and B queued, and `pvencrypt` with no PV finishes A, then
# converts B with the options it was queued with (--label). Then `pvencrypt C D`
# stopped in C: --abort drops D from the queue (D stays a plain PV) and stops C.
# disks: 160M 160M 160M 64M
# timeout: 900
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
stopped() { grep -q '^State:.*stopped' "/proc/$1/status"; }
status() { pvencrypt --status > /tmp/status 2>&1; cat /tmp/status; }
row() { grep -qE "^ +$1 +([^ ]+ +)?$2( |\$)" /tmp/status; }

PVOPTS="--setphysicalvolumesize 128M" mkvg vg /dev/vda /dev/vdb
mklv data -l 100%FREE vg
dd if=/dev/urandom of=/dev/mapper/vg-data bs=1M count=240 oflag=direct 2>/dev/null
before=$(sha /dev/mapper/vg-data)

echo "=== pvencrypt --label qtest /dev/vda /dev/vdb, killed at 50% of vda"
PVENCRYPT_FAULT=run-50:stop pvencrypt --key-file /tmp/key $cheap --label qtest -y /dev/vda /dev/vdb > /tmp/out 2>&1 &
pve=$!
wait_for "stopped $pve" 300 || die "pvencrypt did not reach 50% of vda: $(cat /tmp/out)"
check "the queue is on the disk" "grep -q '\"/dev/vdb\"' /var/lib/pvencrypt/queue.json"
kill -9 $pve; wait $pve
status
check "--status: vda stopped" "row /dev/vda stopped"
check "--status: vdb queued" "row /dev/vdb queued"
check "vdb untouched so far" "! cryptsetup isLuks /dev/vdb"

echo "=== pvencrypt (no PV), passphrase piped"
printf secret-passphrase | pvencrypt -y > /tmp/out2 2>&1
rc=$?
cat /tmp/out2
check_eq "exit code" "$rc" 0
for d in vda vdb; do
  check "$d: LUKS2, no reencryption left" "cryptsetup isLuks /dev/$d && ! cryptsetup luksDump /dev/$d | grep -q online-reencrypt"
  check "$d: the one passphrase opens it" "cryptsetup open --test-passphrase --key-file /tmp/key /dev/$d"
done
check "vdb got the queued --label" "cryptsetup luksDump /dev/vdb | grep -q 'Label:[[:space:]]*qtest'"
check "the queue is gone" "[ ! -e /var/lib/pvencrypt/queue.json ]"
check_eq "the VG's PVs" "$(pvs --noheadings -o pv_name -S vg_name=vg | tr -d ' ' | sort | tr '\n' ' ')" "/dev/mapper/vda_crypt /dev/mapper/vdb_crypt "
check_eq "LV data intact" "$(sha /dev/mapper/vg-data)" "$before"

echo "=== pvencrypt /dev/vdc /dev/vdd (orphans), stopped in vdc, --abort"
run pvcreate -q -y /dev/vdc
run pvcreate -q -y /dev/vdd
PVENCRYPT_FAULT=run-50:stop pvencrypt --key-file /tmp/key $cheap -y /dev/vdc /dev/vdd > /tmp/out3 2>&1 &
pve=$!
wait_for "stopped $pve" 300 || die "pvencrypt did not reach 50% of vdc: $(cat /tmp/out3)"
pvencrypt --abort > /tmp/abort.out 2>&1 &
ab=$!
wait_for "[ ! -e /var/lib/pvencrypt/queue.json ]" 30
kill -CONT $pve
wait $ab; abort_rc=$?
wait $pve; pve_rc=$?
cat /tmp/abort.out /tmp/out3
check_eq "--abort exits 0" "$abort_rc" 0
check_eq "the stopped run exits 1" "$pve_rc" 1
check "--abort says vdd left the queue" "grep -q '/dev/vdd: dropped from the queue' /tmp/abort.out"
check "--abort says vdc stopped" "grep -q '/dev/vdc: stopped' /tmp/abort.out"
status
check "--status: vdc aborted" "row /dev/vdc aborted"
check "--status: vdd not listed" "! grep -q /dev/vdd /tmp/status"
printf secret-passphrase | pvencrypt -y > /tmp/out4 2>&1
rc=$?
cat /tmp/out4
check_eq "resume exit code" "$rc" 0
check "vdc finished" "cryptsetup isLuks /dev/vdc && ! cryptsetup luksDump /dev/vdc | grep -q online-reencrypt"
check "vdd still a plain PV" "! cryptsetup isLuks /dev/vdd && pvs /dev/vdd >/dev/null 2>&1"
result
