# seconds: 320   (measured, TCG: run.sh starts the longest first)
# --decrypt's first move and data phase (DECRYPT.md, steps 5 and 6), the power cut (no
# sync) at each state of the disk: T0 written at the tail (the head as it was), the head
# overwritten by libcryptsetup's init (T0 at the tail alone; the suspension's copy before T1
# leaves the disk so too, the LVs being idle: t_decrypt_move kills it there), T1's primary
# copy written (its secondary not), T1 written, half through the data phase. A fresh boot on
# the same disks attaches the tail as the man page says (a loop device at the device's last
# 16 MiB), and stock cryptsetup opens the device with that header, the LVs' bytes as they
# were (pvencrypt --decrypt, before that, says how); where the decryption has begun, stock
# `reencrypt --resume-only` finishes it online and LVM finds the plain PV on the raw disk.
# timeout: 1500
. "$(dirname "$0")/../lib.sh"
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
for step in decrypt-tail decrypt-head commit-primary@2 decrypt-committed run-50; do
  tag=${step%@*}
  disks=$(vm_disks "$run/$tag" 128M 16M)
  VM_APPEND="pvphase=1 pvfault=$step" vm_boot "$logs/t_decrypt_cut.$tag.1.log" decrypt_cut $disks
  check "$step: the power cut inside pvencrypt" \
    "grep -aq '^=== --decrypt, power cut at' '$logs/t_decrypt_cut.$tag.1.log' && ! grep -aq '^VM-EXIT' '$logs/t_decrypt_cut.$tag.1.log'"
  VM_APPEND="pvphase=2 pvstep=$step" vm_boot "$logs/t_decrypt_cut.$tag.2.log" decrypt_cut $disks
  vm_report "$step" "$logs/t_decrypt_cut.$tag.2.log"
  check "$step: the next boot opens it with stock tools, the data whole" vm_passed "$logs/t_decrypt_cut.$tag.2.log"
done
result
