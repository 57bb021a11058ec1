# Sourced by the host tests of the dracut root (host/t_dracut_*.sh), after lib.sh's checks:
# the root with pvencrypt's package installed, on vg/root (vda: the PV, vdb: /boot), and
# boot_unlocking. Sets name, run, logs, deb, kv, debian (the kernel command line), took,
# initrd_file.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=$(basename "$0" .sh)
run=${VM_RUN:-$(mktemp -d)} logs=${VM_LOGS:-$run}
. "$here/debian/host-root.sh"
"$here/debian/build-root.sh" "$VM_WORK/kernel" dracut || { echo "debian/build-root.sh dracut failed"; exit 1; }
deb=$VM_WORK/debian-dracut
kv=$(ls "$deb/boot" | sed -n 's/^vmlinuz-//p')
[ -x "${VM_PVENCRYPT:-}" ] || { echo "no pvencrypt binary (VM_PVENCRYPT; run through run.sh)"; exit 1; }
t_start=$SECONDS
took() { echo "TIME: $1 took $((SECONDS - $2)) s"; }

# The package, from this build's binary.
pkg=$("$here/../../packaging/build-deb.sh" "$VM_PVENCRYPT" "$run/deb") || { echo "packaging/build-deb.sh failed"; exit 1; }

# The root image: the cached root, the package installed, the test driver and scripts; LVM's
# devices file on, as in t_debian_root.sh.
root_tree "$deb" "$pkg"
check "the package ships pvencrypt's dracut module" \
  "dpkg-deb -c '$pkg' | awk '{print \$6}' | grep -qx ./usr/lib/dracut/modules.d/91pvencrypt/module-setup.sh"
root_devicesfile
root_disks "$deb"
took "the root image" $t_start

# dracut's initramfs drops to its emergency shell if the root never comes (the host stops
# waiting). No floppy probing (QEMU has a controller, no disk): every read of fd0 fails slowly.
debian="root=/dev/mapper/vg-root rw modprobe.blacklist=floppy"

# initrd_file IMG PATH   a file of a dracut image, on the host (gzip, zstd or plain cpio; an
# early microcode cpio in front would hide the rest: the VM root has none).
initrd_file() {
  local dec=cat
  case $(head -c4 "$1" | od -An -tx1 | tr -d ' \n') in
    1f8b*) dec="gzip -dc";; 28b52ffd) dec="zstd -dc";;
  esac
  $dec < "$1" | cpio -i --quiet --to-stdout "$2" 2>/dev/null
}

# boot_unlocking N TEST [cut]: boots with the image now in /boot, types the passphrase once
# at the prompt of systemd-cryptsetup in the initramfs (the console is the VM's stdin).
# "cut": the guest cuts its own power in the data phase, checked instead of a clean end.
prompt='Please enter passphrase for disk .*vda_crypt'
boot_unlocking() {
  local log=$logs/$name.boot$1.log t=$SECONDS try
  rm -f "$run/initrd.img" "$log.stalled"
  debugfs -R "dump /initrd.img-$kv $run/initrd.img" "$run/vdb.img" 2>/dev/null
  VM_INITRD=$run/initrd.img VM_APPEND="$debian" _vm_cmd "$2" "$run"/vd{a,b}.img
  for try in 1 2; do
    rm -f "$run/console"; mkfifo "$run/console"; exec 7<> "$run/console"
    vm_start_root "$log" "$run/console"
    # An image that does not open vda_crypt waits for vg-root: dracut-initqueue's "timeout,
    # still waiting" (then "Could not boot", its emergency shell). No use waiting longer.
    if vm_wait_for "$log" "$prompt|still waiting for following initqueue hooks|Could not boot|[Ee]mergency" 600 &&
       grep -aqE "$prompt" "$log"; then
      echo "boot $1: the prompt after $((SECONDS - t)) s"
      printf 'secret-passphrase\n' >&7
      # The TCG hang vm_start_root knows, after the unlock (soft lockups in udev workers from
      # 130 s on, for 340 s and more, twice in the dracut root): booted once more, as a power
      # cut there would be.
      if [ $try = 1 ] && ! vm_wait_for "$log" 'VM: Debian root up' 600 2>/dev/null && kill -0 "$VM_PID" 2>/dev/null &&
         grep -aqE "$VM_STALL" "$log"; then
        vm_kill; exec 7>&-; mv "$log" "$log.stalled"
        echo "VM-BOOT-HANG: boot $1 stalled after the unlock, before its test (console: $log.stalled); booted again"
        continue
      fi
      vm_wait 1500
    else
      sleep 5; vm_kill
    fi
    break
  done
  exec 7>&-
  check "boot $1: the initramfs asks for the passphrase of vda_crypt" "grep -aqE '$prompt' '$log'"
  check "boot $1: it asks once" "[ \$(grep -acE '$prompt' '$log') -eq 1 ]"
  vm_report "boot $1" "$log"
  if [ "${3:-}" = cut ]; then
    tr -d '\r' < "$log" | grep -aE '^(pvencrypt|status|keyring|cryptsetup):'
    check "boot $1: the power was cut in the data phase, after the guest's checks" \
      "grep -aq '^status: .* encrypting ' '$log' && grep -aq '^=== the power cut' '$log' && ! grep -aqE '^(CHECK-FAIL|VM-EXIT)' '$log'"
    took "boot $1" $t
    # Without its script the test's drop-in (a stop at 75 %) is still there: the next boot
    # would tell nothing.
    grep -aq '^=== the power cut' "$log" || {
      echo "boot $1 did not run its script; its console's end:"
      tr -d '\r' < "$log" | grep -av '^\s*$' | tail -25 | sed 's/^/  | /'
      result
    }
    return
  fi
  tr -d '\r' < "$log" | grep -aE '^(pvencrypt|status|dracut|keyring):'
  check "boot $1" vm_passed "$log"
  took "boot $1" $t
  vm_passed "$log" || {
    echo "boot $1 failed; its console's end:"; tr -d '\r' < "$log" | grep -av '^\s*$' | tail -25 | sed 's/^/  | /'
    result
  }
}

