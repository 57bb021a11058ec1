# seconds: 120   (measured, TCG: run.sh starts the longest first)
# Issue 20: a death at any step of a commit of the data phase never shows the LVs a wrong byte,
# not even before a take-over. For each step (ARCHITECTURE.md, "A commit"), pvencrypt stops
# itself there, the copies that run are let finish, and it is killed (SIGKILL: only its
# guardian acts). Then, before any pvencrypt runs again, every LV is read whole and compared
# with its copy in RAM, and new data is written and fsynced; the next run takes over, and the
# LVs are compared again. LV `a` holds random data in the top chunks, which the first commits move.
# First, the guardian itself is killed inside a commit: the next suspension must have a new one.
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

guardians() { for p in /proc/[0-9]*; do grep -qs PVENCRYPT_GUARD= $p/environ && echo ${p#/proc/}; done; }
echo "=== 0. the guardian killed on its own: the next suspension has a new one"
PVENCRYPT_FAULT='mover-suspended@1|commit@2:stop' pvencrypt --key-file /tmp/key $cheap -y -i 1 /dev/vda > /tmp/pve.out 2>&1 &
pve=$!
wait_for '[ "$(pstate $pve)" = T ]' 300 || die "the run did not stop in its first commit: $(cat /tmp/pve.out)"
g1=$(guardians)
check "a guardian watches the first commit" '[ -n "$g1" ]'
kill -9 $g1
kill -CONT $pve
wait_for '[ "$(pstate $pve)" = T ] && [ -n "$(guardians)" ] && [ "$(guardians)" != "$g1" ]' 300 ||
  die "no new guardian at the second commit: $(guardians) $(cat /tmp/pve.out)"
g2=$(guardians)
check "a new guardian watches the second commit" '[ -n "$g2" ] && [ "$g2" != "$g1" ]'
kill -9 $pve; KILLED_AT=$(now); wait $pve
settled_within "guardian replaced" 2
same "guardian replaced, before any take-over"
scribble a 0
same "guardian replaced, after new writes"

round=0
args="--key-file /tmp/key -i 1"
for step in mover-suspended commit commit-primary committed name-resumed mirrors-resumed; do
  round=$((round + 1))
  echo "=== $round. killed at '$step'"
  kill_at $step $args
  settled_within $step 2
  wait_for mirrors_synced 60
  same "$step, before any take-over"
  scribble a $round
  same "$step, after new writes"
done
check "the guardian said what it did" "grep -q 'pvencrypt died while vda_crypt was suspended; resumed it' /tmp/messages"

echo "=== the last run takes over and finishes"
pvencrypt $args > /tmp/pve.out 2>&1; rc=$?
cat /tmp/pve.out
finished $rc
run vgchange -q -an vg
run cryptsetup close vda_crypt
run cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
run vgchange -q -ay vg; dmsetup mknodes
same "through stock cryptsetup"
(result); rc=$?
echo "VM-EXIT: $rc"
echo o > /proc/sysrq-trigger
