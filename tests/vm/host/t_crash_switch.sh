# seconds: 600   (measured, TCG: run.sh starts the longest first)
# The switch's crash story, step by step: the power is cut (no sync) at each named step
# of pvencrypt, and a fresh boot on the same disks must find the plain PV or a LUKS2
# device stock cryptsetup opens, the data intact, and pvencrypt must finish the job.
# timeout: 1800
. "$(dirname "$0")/../lib.sh"
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
# One step per state of the disk: a power cut keeps nothing else. The LVs are idle here, so
# "suspended" leaves the disk as "moved" does (the tail's copy made before the freeze, then
# again), and "activated", "loaded" and "resumed" as "header" does (nothing but tables
# changes after the header's last write); t_kill_freeze kills the process inside the freeze
# at each of them. run-50 and run-75 cut the power in the data phase as run-25 does. Any of
# them: CRASH_STEPS="suspended activated".
for step in ${CRASH_STEPS:-moved unlabeled secondary header run-25 commit-primary committed}; do
  disks=$(vm_disks "$run/$step" 256M 16M)
  VM_APPEND="pvphase=1 pvfault=$step" vm_boot "$logs/t_crash_switch.$step.1.log" crash_switch $disks
  check "$step: power cut inside pvencrypt" "! grep -aq '^VM-EXIT' '$logs/t_crash_switch.$step.1.log'"
  VM_APPEND="pvphase=2 pvstep=$step" vm_boot "$logs/t_crash_switch.$step.2.log" crash_switch $disks
  vm_report "$step" "$logs/t_crash_switch.$step.2.log"
  check "$step: boot 2 recovers and completes" vm_passed "$logs/t_crash_switch.$step.2.log"
  check "$step: --status --reportformat json is valid JSON" "tr -d '\r' < '$logs/t_crash_switch.$step.2.log' |
    sed -n '/^=== status-json/,/^=== end-json/p' | sed '1d;\$d' | python3 -c 'import json, sys; json.load(sys.stdin)'"
done
result
