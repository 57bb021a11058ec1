# seconds: 450   (measured, TCG: run.sh starts the longest first)
# The VM is killed hard (qemu SIGKILL) while pvencrypt converts a PV under two writers:
# once inside the freeze and at four points of the data phase (1-99%, 35-69%, 65-79%,
# 80-92%). Each time a fresh VM on the same disks must find every acknowledged record, the
# plain PV or a LUKS2 device that stock cryptsetup opens, and `pvencrypt` with no argument
# (or again) must complete.
# The kill lands wherever the guest happens to be when the host acts on a console line.
# timeout: 2400
. "$(dirname "$0")/../lib.sh"
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
# TAG=REGEX: the host kills the VM once a console line matches REGEX.
# The last point stays clear of the final step (see README, known problems): -i 1 lines
# come every few percent, so each window is wide enough to be hit.
for kill in "freeze=trace: suspend" "data-1=Encrypted: ([1-9]|[1-9][0-9])\." \
            "data-35=Encrypted: (3[5-9]|[4-6][0-9])\." "data-65=Encrypted: (6[5-9]|7[0-9])\." \
            "data-80=Encrypted: (8[0-9]|9[0-2])\."; do
  tag=${kill%%=*} point=${kill#*=}
  disks=$(vm_disks "$run/$tag" 512M 16M)
  log1=$logs/t_crash_kill.$tag.1.log log2=$logs/t_crash_kill.$tag.2.log
  VM_APPEND="pvphase=1" vm_start "$log1" crash_kill $disks
  if ! vm_wait_for "$log1" "$point" 600; then
    vm_kill
    check "$tag: reached /$point/" false
    continue
  fi
  vm_kill
  acks=$(grep -a $'^ACKED file=[0-9]* raw=[0-9]*\r$' "$log1" | tail -1 | tr -d '\r')
  at=$(grep -aoE 'Encrypted: [0-9.]+%|trace: [a-z0-9-]+' "$log1" | tail -1)
  echo "$tag: killed at '$at'; last report: $acks"
  file=$(echo "$acks" | sed -n 's/.*file=\([0-9]*\).*/\1/p') raw=$(echo "$acks" | sed -n 's/.*raw=\([0-9]*\).*/\1/p')
  check "$tag: writers had acknowledged records" '[ -n "$file" ] && [ "$file" -gt 0 ] && [ -n "$raw" ]'
  VM_APPEND="pvphase=2 pvacked=$file pvrawacked=$raw" vm_boot "$log2" crash_kill $disks
  vm_report "$tag" "$log2"
  check "$tag: boot 2 recovers every acknowledged record and completes" vm_passed "$log2"
done
result
