# seconds: 420   (measured, TCG: run.sh starts the longest first)
# --decrypt (DECRYPT.md, steps 5 to 7), the power cut (no sync) at each state of the disk:
# T0 written at the tail (the head as it was), the head overwritten by libcryptsetup's init
# (T0 at the tail alone; the suspension's copy before T1 leaves the disk so too, the LVs
# being idle: t_decrypt_move kills it there), T1's primary copy written (its secondary not),
# half through the data phase, half through the switch back's in-place decryption of the
# head, and once the header at the tail is wiped. A fresh boot on the same disks: pvencrypt
# --decrypt says how to open it; the tail attached as the man page says (a loop device at
# the device's last 16 MiB), stock cryptsetup opens the device with that header, the LVs'
# bytes as they were (half through the head: stock's open finishes it by the checksums, and
# until then LVM sees no PV on the raw disk). From T0 pvencrypt --decrypt run again
# finishes; past it stock `reencrypt --resume-only` does, online (it compares NAME's tables
# with the header's, the volume key by its keyring name). LVM then finds the plain PV on the
# raw disk with those bytes. CUT_STEPS=... runs some of the steps.
# timeout: 1500
. "$(dirname "$0")/../lib.sh"
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
for step in ${CUT_STEPS:-decrypt-tail decrypt-head commit-primary@2 run-50 back-half back-wiped}; do
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
