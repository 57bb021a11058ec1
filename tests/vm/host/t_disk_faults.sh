# seconds: 190   (measured, TCG: run.sh starts the longest first)
# Disk faults in the data phase (guest/disk_faults.sh): three kinds of I/O error under the PV,
# each stopping the run with nothing acknowledged lost; then a power cut and a fresh boot on
# the healed disk, where every acknowledged write is there and pvencrypt finishes.
. "$(dirname "$0")/../lib.sh"
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
disks=$(vm_disks "$run" 512M 1M)
VM_APPEND="pvphase=1" VM_TIMEOUT=1500 vm_boot "$logs/t_disk_faults.boot1.log" disk_faults $disks
vm_report "boot 1" "$logs/t_disk_faults.boot1.log"
check "boot 1: every fault stopped the run as it must" vm_passed "$logs/t_disk_faults.boot1.log"
VM_APPEND="pvphase=2" vm_boot "$logs/t_disk_faults.boot2.log" disk_faults $disks
vm_report "boot 2" "$logs/t_disk_faults.boot2.log"
check "boot 2: after the reboot, every acknowledged write; pvencrypt finishes" vm_passed "$logs/t_disk_faults.boot2.log"
result
