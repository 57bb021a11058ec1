# Issue 20, item 2: no stop signal or interruption lands inside a suspension of vda_crypt.
# 1. SIGTERM while vda_crypt is suspended for a commit (pvencrypt stopped right after the
#    suspend ioctl): the signal waits until the commit is done, then the run stops at that
#    checkpoint with exit 1 (stopped, resumable), not 5 (failed).
# 2. SIGTSTP (Ctrl-Z) 300 times during the data phase of the resumed run, small chunks
#    (a commit every few ms): each stops pvencrypt (state T), never while vda_crypt is
#    suspended (it would hold every LV until SIGCONT); the run finishes.
# Every LV byte as written.
# disks: 128M
# timeout: 900
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
PVOPTS="--setphysicalvolumesize 96M" mkvg vg /dev/vda
mklv a -l 100%FREE vg
copies_start a
suspended() { dmsetup info vda_crypt 2>/dev/null | grep -q SUSPENDED; }

echo "=== 1. SIGTERM while vda_crypt is suspended for a commit"
PVENCRYPT_FAULT=mover-suspended:stop pvencrypt --key-file /tmp/key $cheap -y -i 1 /dev/vda > /tmp/pve.out 2>&1 &
pve=$!
wait_for '[ "$(pstate $pve)" = T ]' 300 || die "the run did not stop in the commit: $(cat /tmp/pve.out)"
check "vda_crypt is suspended there" suspended
kill -TERM $pve
kill -CONT $pve
wait $pve; rc=$?
cat /tmp/pve.out
check_eq "stopped at the checkpoint (exit 1)" "$rc" 1
check "it says it stopped" "grep -q 'stopped at .* encrypted' /tmp/pve.out"
check "vda_crypt runs" "! suspended"
same "after the SIGTERM"

echo "=== 2. SIGTSTP again and again, then the conversion ends"
PVENCRYPT_MOVER=chunk=256K,region=64K pvwriter newpgrp pvencrypt --key-file /tmp/key -i 1 > /tmp/pve.out 2>&1 &
pve=$!
wait_for 'grep -q "Encrypted: [1-9]" /tmp/pve.out' 300 || die "no progress: $(cat /tmp/pve.out)"
stops=0 held=0
while [ $stops -lt 300 ] && [ -d /proc/$pve ] && [ "$(pstate $pve)" != Z ]; do
  kill -TSTP $pve 2>/dev/null || break
  if wait_for '[ "$(pstate $pve)" = T ] || [ "$(pstate $pve)" = Z ] || [ ! -d /proc/$pve ]' 5 &&
     [ "$(pstate $pve)" = T ]; then
    stops=$((stops + 1))
    suspended && held=$((held + 1))
  fi
  kill -CONT $pve 2>/dev/null
done
wait $pve; rc=$?
tail -3 /tmp/pve.out
echo "SIGTSTP stopped pvencrypt $stops times"
check "SIGTSTP stopped it, again and again" "[ $stops -ge 10 ]"
check_eq "never while vda_crypt was suspended" "$held" 0
finished $rc
(result); rc=$?
echo "VM-EXIT: $rc"
echo o > /proc/sysrq-trigger
