# seconds: 450   (measured, TCG: run.sh starts the longest first)
# --tpm2-device on the dracut root (debian/build-root.sh's dracut flavor, with tpm2-tools),
# its images host-only (hostonly="yes": 90crypt copies the entry, pvencrypt's module adds no
# second one), the machine's TPM2 a software one (swtpm, its state kept across the boots;
# QEMU's tpm-tis):
#   prepare  (busybox guest): VG vg on vda, LV root filled with the root image (vdc)
#   boot 1   (the cached generic image, the TPM2 there): a TPM2 that is not there is refused
#            with nothing changed; --test; pvencrypt --tpm2-device=auto converts the root PV
#            in the foreground to the end; the header, crypttab and the rebuilt (host-only)
#            image checked
#   boot 2   (that image, the same TPM2): the root comes up with nobody typing anything
#   boot 3   (that image, no TPM2): systemd-cryptsetup falls back to the passphrase prompt;
#            typed once, the root comes up
. "$(dirname "$0")/../lib.sh"
DRACUT_HOSTONLY=1 . "$(dirname "$0")/../debian/dracut-host.sh"

log1=$logs/$name.boot1.log t=$SECONDS
vm_swtpm "$run/tpm" || exit 1
VM_INITRD=$deb/boot/initrd.img-$kv VM_APPEND="$debian" VM_TIMEOUT=1200 vm_boot "$log1" dracut_tpm2 "$run"/vd{a,b}.img
vm_report "boot 1" "$log1"
tr -d '\r' < "$log1" | grep -aE '^(pvencrypt|dracut|luksDump):'
check "boot 1" vm_passed "$log1"
took "boot 1" $t
vm_passed "$log1" || result

# Boot 2: nothing is typed; a passphrase prompt would wait for ever (the host gives up).
log=$logs/$name.boot2.log t=$SECONDS
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
check "boot 2: no passphrase prompt: the TPM2 unlocked vda_crypt" "! grep -aqE '$prompt' '$log'"
vm_report "boot 2" "$log"
tr -d '\r' < "$log" | grep -aE '^cryptsetup:'
check "boot 2: the root came up from vda_crypt" vm_passed "$log"
took "boot 2" $t

# Boot 3: the TPM2 gone (another machine, a cleared TPM): the passphrase prompt, typed once.
VM_QEMU_ARGS=
boot_unlocking 3 dracut_tpm2_booted
took "$name" $t_start
result
