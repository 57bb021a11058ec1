# seconds: 700   (measured, TCG: run.sh starts the longest first)
# --tpm2-device on the dracut root (debian/build-root.sh's dracut flavor, with tpm2-tools),
# its images host-only (hostonly="yes": 90crypt copies the entry, pvencrypt's module adds no
# second one), the machine's TPM2 a software one (swtpm, its state kept across the boots;
# QEMU's tpm-tis):
#   prepare  (busybox guest): VG vg on vda, LV root filled with the root image (vdc)
#   boot 1   (the cached generic image, the TPM2 there): a TPM2 that is not there is refused
#            with nothing changed; --test; pvencrypt -b --tpm2-device=auto converts the root
#            PV in its unit; the header and crypttab checked; the power is cut a quarter
#            through the data phase
#   boot 2   (the rebuilt host-only image, the same TPM2): libcryptsetup 2.6 opens no device
#            in reencryption with a token, so the initramfs asks (typed once);
#            pvencrypt-resume.service unseals the passphrase with the TPM2, asks nothing,
#            and finishes the conversion; the image checked
#   boot 3   (that image, the same TPM2): the root comes up with nobody typing anything
#   boot 4   (that image, no TPM2): systemd-cryptsetup falls back to the passphrase prompt;
#            typed once, the root comes up
. "$(dirname "$0")/../lib.sh"
DRACUT_HOSTONLY=1 . "$(dirname "$0")/../debian/dracut-host.sh"

log1=$logs/$name.boot1.log t=$SECONDS
vm_swtpm "$run/tpm" || exit 1
VM_INITRD=$deb/boot/initrd.img-$kv VM_APPEND="$debian" VM_TIMEOUT=1200 vm_boot "$log1" dracut_tpm2 "$run"/vd{a,b}.img
vm_report "boot 1" "$log1"
tr -d '\r' < "$log1" | grep -aE '^(pvencrypt|status|dracut|luksDump):'
check "boot 1: the power was cut in the data phase" "grep -aq '^status: .* encrypting ' '$log1' && ! grep -aq '^VM-EXIT' '$log1'"
check "boot 1: pvencrypt rebuilt the initramfs and found the unlock in it" \
  grep -aq 'rebuilt the initramfs (dracut -f --regenerate-all); it opens vda_crypt' "$log1"
check "boot 1: no warning about the initramfs" "! grep -aq 'DO NOT REBOOT' '$log1'"
took "boot 1" $t

# Boot 2, the TPM2 there: the device is in reencryption, which libcryptsetup 2.6's token
# activation refuses: the initramfs asks, the passphrase is typed once; the resume unit
# unseals with the TPM2 and finishes.
vm_swtpm "$run/tpm" || exit 1
boot_unlocking 2 dracut_tpm2_resume

# Boot 3: nothing is typed; a passphrase prompt would wait for ever (the host gives up).
log=$logs/$name.boot3.log t=$SECONDS
rm -f "$run/initrd.img"; debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
vm_swtpm "$run/tpm" || exit 1
VM_INITRD=$run/initrd.img VM_APPEND="$debian pvtpm2=1" _vm_cmd dracut_tpm2_booted "$run"/vd{a,b}.img
"${VM_CMD[@]}" < /dev/null > "$log" 2>&1 &
VM_PID=$!
if vm_wait_for "$log" "$prompt|VM-EXIT|still waiting for following initqueue hooks|Could not boot" 600 &&
   grep -aqE "$prompt" "$log"; then
  sleep 5; vm_kill
else
  vm_wait 600
fi
check "boot 3: no passphrase prompt: the TPM2 unlocked vda_crypt" "! grep -aqE '$prompt' '$log'"
vm_report "boot 3" "$log"
tr -d '\r' < "$log" | grep -aE '^cryptsetup:'
check "boot 3: the root came up from vda_crypt" vm_passed "$log"
took "boot 3" $t

# Boot 4: the TPM2 gone (another machine, a cleared TPM): the passphrase prompt, typed once.
VM_QEMU_ARGS=
boot_unlocking 4 dracut_tpm2_booted
took "$name" $t_start
result
