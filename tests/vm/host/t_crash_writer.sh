# Proves the crash machinery crash tests build on: kill the VM (SIGKILL, a power cut for the
# guest) at a point named by a console line, boot a fresh VM on the same disks, check there.
# Here the point is "writers running", and the check is that no acknowledged write was lost.
. "$(dirname "$0")/../lib.sh"
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
disks=$(vm_disks "$run" 256M)

VM_APPEND="pvphase=1" vm_start "$logs/t_crash_writer.boot1.log" crash_writer $disks
# Kill once the raw writer has wrapped around its 1024 slots at least once.
check "writers running" vm_wait_for "$logs/t_crash_writer.boot1.log" '^ACKED file=[0-9]{3,} raw=([2-9][0-9]{3}|[0-9]{5,})' 300
vm_kill
# The last whole line (ends in CR LF) the guest printed before it died.
acks=$(grep -a $'^ACKED file=[0-9]* raw=[0-9]*\r$' "$logs/t_crash_writer.boot1.log" | tail -1 | tr -d '\r')
echo "killed the VM; last report before the kill: $acks"
file=$(echo "$acks" | sed -n 's/.*file=\([0-9]*\).*/\1/p') raw=$(echo "$acks" | sed -n 's/.*raw=\([0-9]*\).*/\1/p')
check "acks reported" '[ -n "$file" ] && [ -n "$raw" ]'

VM_APPEND="pvphase=2 pvacked=$file pvrawacked=$raw" vm_boot "$logs/t_crash_writer.boot2.log" crash_writer $disks
tr -d '\r' < "$logs/t_crash_writer.boot2.log" | grep -aE 'CHECK|records=|pvwriter'
check "boot 2 verifies" vm_passed "$logs/t_crash_writer.boot2.log"
result
