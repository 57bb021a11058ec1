# seconds: 1400   (measured, TCG: run.sh starts the longest first)
# Boot integration on a Debian 12 root whose initramfs dracut builds (debian/build-root.sh's
# dracut flavor: Debian's generic image, hostonly not set, systemd inside, tpm2-tools), the
# root filesystem an LV of the PV being converted, /boot a plain disk, pvencrypt from its
# .deb, and a software TPM2 (swtpm, its state kept across the boots; QEMU's tpm-tis) in
# boots 1, 3 and 4. A generic image opens no LUKS device unless its crypttab or the kernel
# command line names it: pvencrypt adds /etc/dracut.conf.d/pvencrypt-NAME.conf for its dracut
# module.
#   prepare  (on the host, debian/root-on-lv.sh): VG vg on vda, LV root holding the root
#   boot 1   (the cached generic image, TPM2): a TPM2 that is not there refused; --test;
#            pvencrypt -b --tpm2-device=auto /dev/vda in its unit; the header, crypttab, the
#            drop-in and dracut's rebuild right after the switch; the power is cut a quarter
#            through the data phase. The host looks into the rebuilt image.
#   boot 2   (that generic image, no TPM2): systemd-cryptsetup falls back to its prompt, the
#            passphrase typed once; pvencrypt-resume.service takes it from root's keyring
#            (KeyringMode=shared), asks nothing, finds that the image opens the device (not
#            rebuilt), resumes; stopped at three quarters (the test's drop-in), the power is cut.
#   boot 3   (that image, TPM2): libcryptsetup 2.6 opens no device in reencryption with a
#            token: the prompt, typed once; the resume unseals with the TPM2, asks nothing,
#            finishes; the image checked; dracut made host-only and the images rebuilt.
#   boot 4   (the host-only image, TPM2): the root comes up with nobody typing anything.
. "$(dirname "$0")/../lib.sh"
# One vCPU: with two, dracut's generic image stalled for minutes under TCG beside another VM
# (soft lockups in udev workers, in 2 of 3 runs in session 17 and in session 18's first) and
# its boots came up after 160-200 s against 65-90 s with one. This test is about the boot;
# the kernel mover's concurrency is the small VMs' subject.
VM_SMP=1
. "$(dirname "$0")/../debian/dracut-host.sh"

log1=$logs/$name.boot1.log t=$SECONDS
vm_swtpm "$run/tpm" || exit 1
VM_INITRD=$deb/boot/initrd.img-$kv VM_APPEND="$debian" VM_TIMEOUT=2100 vm_boot "$log1" dracut_convert "$run"/vd{a,b}.img
vm_report "boot 1" "$log1"
tr -d '\r' < "$log1" | grep -aE '^(pvencrypt|status|dracut|luksDump):'
check "boot 1: the power was cut in the data phase" "grep -aq '^status: .* encrypting ' '$log1' && ! grep -aq '^VM-EXIT' '$log1'"
check "boot 1: pvencrypt rebuilt the initramfs and found the unlock in it" \
  grep -aq 'rebuilt the initramfs (dracut -f --regenerate-all); it opens vda_crypt' "$log1"
check "boot 1: no warning about the initramfs" "! grep -aq 'DO NOT REBOOT' '$log1'"
took "boot 1" $t
# The image boot 2 boots, looked into on the host: the guest's power was cut.
rm -f "$run/initrd.img"; debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
initrd_file "$run/initrd.img" etc/crypttab | sed 's/^/image crypttab: /'
check "the rebuilt image's etc/crypttab has vda_crypt" "initrd_file '$run/initrd.img' etc/crypttab | grep -q '^vda_crypt UUID='"
check "the rebuilt image has the pvencrypt dracut module" \
  "initrd_file '$run/initrd.img' usr/lib/dracut/modules.txt | grep -qx pvencrypt"
check "the rebuilt image is generic (no 90crypt.conf in etc/cmdline.d)" \
  "! initrd_file '$run/initrd.img' etc/cmdline.d/90crypt.conf | grep -q ."

# Boot 2: no TPM2 (another machine, a cleared TPM2).
VM_QEMU_ARGS=
boot_unlocking 2 dracut_resume cut

# Boot 3: the TPM2 back.
vm_swtpm "$run/tpm" || exit 1
boot_unlocking 3 dracut_tpm2_resume

# Boot 4: nothing is typed; a passphrase prompt would wait for ever (the host gives up).
log=$logs/$name.boot4.log t=$SECONDS
rm -f "$run/initrd.img"; debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
vm_swtpm "$run/tpm" || exit 1
VM_INITRD=$run/initrd.img VM_APPEND="$debian pvtpm2=1" _vm_cmd dracut_tpm2_booted "$run"/vd{a,b}.img
vm_start_root "$log" /dev/null
if vm_wait_for "$log" "$prompt|VM-EXIT|still waiting for following initqueue hooks|Could not boot" 600 &&
   grep -aqE "$prompt" "$log"; then
  sleep 5; vm_kill
else
  vm_wait 600
fi
check "boot 4: no passphrase prompt: the TPM2 unlocked vda_crypt" "! grep -aqE '$prompt' '$log'"
vm_report "boot 4" "$log"
tr -d '\r' < "$log" | grep -aE '^cryptsetup:'
check "boot 4: the root came up from vda_crypt" vm_passed "$log"
took "boot 4" $t
took "$name" $t_start
result
