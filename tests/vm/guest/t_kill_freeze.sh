# seconds: 140   (measured, TCG: run.sh starts the longest first)
# Issue 20: a death at any step of the switch's freeze (SIGKILL, the OOM killer) leaves no LV
# suspended and never shows one a wrong byte (ARCHITECTURE.md, "The switch"). For each step,
# pvencrypt stops itself there and is killed; its guardian then rolls back to the plain PV
# (the first segment put back from its copy) or, once an LV runs on the new device, forward.
# Before anything else runs, every LV is read whole and compared with its copy in RAM, and new
# data is written and fsynced; the next run starts again (or resumes) and the LVs are compared
# again. A snapshot stacks a second level of devices over the PV.
# disks: 128M
# timeout: 1200
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
syslogd -O /tmp/messages
PVOPTS="--setphysicalvolumesize 96M" mkvg vg /dev/vda
mklv pad -L 8M vg
mklv a -L 56M vg
copies_start pad a
mklv snap -s -L 8M vg/pad

round=0
for step in suspended moved unlabeled secondary header activated loaded lv-resumed; do
  round=$((round + 1))
  echo "=== $round. killed at '$step'"
  : > /tmp/messages
  kill_at $step --key-file /tmp/key $cheap -y -i 1 /dev/vda
  settled_within $step 2
  same "$step, before any take-over"
  check_eq "$step: the snapshot still shows pad" "$(sha /dev/mapper/vg-snap)" "$(sha /tmp/pad.img)"
  if [ $step = lv-resumed ]; then
    check "$step: rolled forward, the LVs on vda_crypt" \
      "cryptsetup isLuks /dev/vda && dm_refs vg-a \$(majmin /dev/mapper/vda_crypt)"
  else
    check "$step: rolled back to the plain PV" "! cryptsetup isLuks /dev/vda && dm_refs vg-a \$(majmin /dev/vda)"
    check "$step: nothing of the run is left" "! dmsetup info vda_crypt && ! dmsetup ls | grep -q pvencrypt-alias"
    check "$step: LVM sees the PV on vda" "pvs --noheadings -o pv_name | grep -q /dev/vda"
  fi
  scribble a $round
  same "$step, after new writes"
done
check "the guardian said what it did" "grep -q 'died in the switch.s freeze; the LVs run on /dev/mapper/vda_crypt' /tmp/messages"

echo "=== pvencrypt goes on from there and finishes"
pvencrypt --key-file /tmp/key -i 1 > /tmp/pve.out 2>&1; rc=$?
cat /tmp/pve.out
finished $rc
(result); rc=$?
echo "VM-EXIT: $rc"
echo o > /proc/sysrq-trigger
