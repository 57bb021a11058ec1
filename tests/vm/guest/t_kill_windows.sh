# Issue 20: a death at any step of a commit of the data phase never shows the LVs a wrong byte,
# not even before a take-over. For each step (ARCHITECTURE.md, "A commit"), pvencrypt stops
# itself there, the copies that run are let finish, and it is killed (SIGKILL: only its
# guardian acts). Then, before any pvencrypt runs again, every LV is read whole and compared
# with its copy in RAM, and new data is written and fsynced; the next run takes over, and the
# LVs are compared again. LV `a` holds random data in the top chunks, which the first commits move.
# disks: 128M
# timeout: 1200
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
syslogd -O /tmp/messages
PVOPTS="--setphysicalvolumesize 96M" mkvg vg /dev/vda
mklv pad -L 16M vg
mklv a -l 100%FREE vg
copies_start pad a

round=0
args="--key-file /tmp/key $cheap -y -i 1 /dev/vda"
for step in mover-suspended commit commit-primary committed name-resumed mirrors-resumed; do
  round=$((round + 1))
  echo "=== $round. killed at '$step'"
  kill_at $step $args
  settled_within $step 2
  wait_for mirrors_synced 60
  same "$step, before any take-over"
  scribble a $round
  same "$step, after new writes"
  args="--key-file /tmp/key -i 1"
done
check "the guardian said what it did" "grep -q 'pvencrypt died while vda_crypt was suspended; resumed it' /tmp/messages"

echo "=== the last run takes over and finishes"
pvencrypt $args > /tmp/pve.out 2>&1; rc=$?
cat /tmp/pve.out
check_eq "the resume finishes (exit 0)" "$rc" 0
check "no reencryption left" '! cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
same "finished"
run vgchange -q -an vg
run cryptsetup close vda_crypt
run cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
run vgchange -q -ay vg; dmsetup mknodes
same "through stock cryptsetup"
(result); rc=$?
echo "VM-EXIT: $rc"
echo o > /proc/sysrq-trigger
