# Host-side helpers to boot test VMs (bash; source it). run.sh sets VM_KERNEL and VM_INITRD;
# by default they are the ones setup.sh and run.sh leave in vm-work/.
#
#   vm_boot LOG TEST DISK...      boot, run /tests/TEST.sh, wait for power-off; 124 after VM_TIMEOUT
#                                 (boots again once if the kernel never reaches init)
#   vm_start LOG TEST DISK...     same in the background (VM_PID); then:
#     vm_wait_for LOG REGEX [S]   poll the console log for a line (default 300 s)
#     vm_kill                     SIGKILL the VM (a power cut for its disks), reap it
#     vm_wait [S]                 wait for it to power off by itself
#   vm_disks DIR SIZE...          fresh sparse images DIR/vda.img, DIR/vdb.img...; prints paths
#   vm_passed LOG                 true iff the guest printed RESULT: PASS and exited 0
#   check NAME CMD... / result    like the guest's, for host-driven tests
#
# VM_APPEND adds kernel command line arguments (e.g. VM_APPEND="pvfault=after-header");
# VM_BLOCKSIZE=4096 gives the disks 4096-byte logical and physical sectors (4Kn).
# Disks are guest /dev/vda, /dev/vdb... in order.

VM_ROOT=${VM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
VM_WORK=${VM_WORK:-$VM_ROOT/vm-work}
# The ELF vmlinux setup.sh extracts if there is one (it sorts first), else the vmlinuz.
VM_KERNEL=${VM_KERNEL:-$(ls "$VM_WORK"/kernel/boot/vmlinu[xz]-* 2>/dev/null | head -1)}
VM_INITRD=${VM_INITRD:-$VM_WORK/initramfs.cpio}
VM_TIMEOUT=${VM_TIMEOUT:-600}
VM_APPEND=${VM_APPEND:-}
# Killing qemu loses nothing it already wrote (the host page cache survives), so the cache
# mode does not change crash semantics. "none" (O_DIRECT; not on tmpfs) makes a guest flush
# a host flush, so the writer's stalls are realistic; "unsafe" is ~3% faster.
VM_CACHE=${VM_CACHE:-none}
# vCPUs: two, so that the writers and pvencrypt really run at once.
VM_SMP=${VM_SMP:-2}

# cryptomgr.notests: the kernel's crypto self-tests cost a second of every boot under TCG
# (the tests check the data dm-crypt writes against cryptsetup's own reads).
_vm_cmd() {   # TEST DISK... -> VM_CMD array
  local test=$1 d kernel=$VM_KERNEL; shift
  # A PVH-booted kernel finds no ACPI tables once QEMU has a tpm-tis (measured: no TPM, and
  # power-off only halts): with extra devices, the bzImage.
  [ -z "${VM_QEMU_ARGS:-}" ] || kernel=${VM_KERNEL/\/vmlinux-//vmlinuz-}
  # The CPU: qemu64 with what dm-crypt and glibc's fast paths need, no AVX: under "max" glibc
  # picks AVX2 code that TCG runs slowly. Measured: the full suite's VM part 3339 s on this
  # model (session 16, all passed); on max CI took 4859 s (stop 31), and here t_crash_switch
  # took 921 s against 571, t_debian_root 2383 against 1472 (its initramfs rebuild 1407 s),
  # and t_swap_pressure ran out of time (session 17). VM_CPU=max for the other.
  VM_CMD=(qemu-system-x86_64 -accel tcg -cpu "${VM_CPU:-qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+aes,+pclmulqdq,+rdrand}"
          -smp "$VM_SMP" -m 2048 -nographic -no-reboot -nic none
          -kernel "$kernel" -initrd "$VM_INITRD"
          -append "console=ttyS0 panic=-1 quiet cryptomgr.notests=1 pvtest=$test $VM_APPEND")
  local n=0
  for d in "$@"; do
    if [ -n "${VM_BLOCKSIZE:-}" ]; then
      VM_CMD+=(-drive "file=$d,format=raw,if=none,id=d$n,cache=$VM_CACHE"
               -device "virtio-blk-pci,drive=d$n,logical_block_size=$VM_BLOCKSIZE,physical_block_size=$VM_BLOCKSIZE")
    else
      VM_CMD+=(-drive "file=$d,format=raw,if=virtio,cache=$VM_CACHE")
    fi
    n=$((n + 1))
  done
  # More devices, e.g. a TPM2 (vm_swtpm).
  VM_CMD+=(${VM_QEMU_ARGS:-})
}

# vm_swtpm DIR   starts a software TPM2 whose state lives in DIR (it outlives the process: the
# same TPM at every boot) and sets VM_QEMU_ARGS for the next VM to have it as its TPM
# (tpm-tis); swtpm ends when that VM does.
vm_swtpm() {
  mkdir -p "$1"
  rm -f "$1/sock"
  swtpm socket --tpm2 --tpmstate "dir=$1" --ctrl "type=unixio,path=$1/sock" --log "file=$1/log" --daemon ||
    { echo "swtpm failed" >&2; return 1; }
  local i; for i in $(seq 50); do [ -S "$1/sock" ] && break; sleep 0.1; done
  VM_QEMU_ARGS="-chardev socket,id=chrtpm,path=$1/sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0"
}

# A TCG guest very rarely hangs in the kernel before its init runs (CI once saw "soft lockup"
# at swapper/0:1 from 12 s on, for 600 s). No test has started then and no disk was
# touched, so vm_boot boots once more; the first console is kept as LOG.hung.
VM_BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-240}
vm_boot() {
  local log=$1 try t0=$SECONDS rc; shift
  rm -f "$log.hung"
  for try in 1 2; do
    vm_start "$log" "$@"
    vm_wait_for "$log" 'VM: .* up after [0-9]' "$VM_BOOT_TIMEOUT" 2>/dev/null || ! kill -0 "$VM_PID" 2>/dev/null ||
      [ $try = 2 ] || { vm_kill; mv "$log" "$log.hung"; echo "VM-BOOT-HANG: no init after ${VM_BOOT_TIMEOUT}s, booted again" >&2; continue; }
    break
  done
  vm_wait $((VM_TIMEOUT - (SECONDS - t0))); rc=$?
  [ -e "$log.hung" ] && echo "VM-BOOT-HANG: the first boot never reached init (console: $log.hung)" >> "$log"
  [ $rc -ne 137 ] || { echo "VM-TIMEOUT: killed after ${VM_TIMEOUT}s" >> "$log"; rc=124; }
  return $rc
}

# vm_start_root LOG INPUT: VM_CMD (a Debian root's boot) in the background, its console in
# LOG, stdin from INPUT. The same rare TCG hang as above, in the kernel before the initramfs
# shows anything (CI and a full run saw "rcu_preempt detected stalls" from 25 s on, for 600
# s): the kernel has touched no disk yet, so it is booted once more; LOG.hung keeps the first.
VM_STALL='rcu_preempt detected stalls|soft lockup - CPU'
VM_SHOWN='Please (enter passphrase|unlock disk)|^VM: |^cryptsetup:|still waiting|Could not boot|[Ee]mergency'
vm_start_root() {
  local log=$1 input=$2 try
  rm -f "$log.hung"
  for try in 1 2; do
    "${VM_CMD[@]}" < "$input" > "$log" 2>&1 &
    VM_PID=$! VM_LOG=$log
    [ $try = 1 ] && vm_wait_for "$log" "$VM_STALL|$VM_SHOWN" "$VM_BOOT_TIMEOUT" 2>/dev/null &&
      grep -aqE "$VM_STALL" "$log" && ! grep -aqE "$VM_SHOWN" "$log" || return 0
    vm_kill; mv "$log" "$log.hung"
    echo "VM-BOOT-HANG: the kernel stalled before the initramfs showed anything (console: $log.hung); booted again"
  done
}

VM_PID= VM_LOG=/dev/null
vm_start() {
  local log=$1; shift
  _vm_cmd "$@"
  "${VM_CMD[@]}" < /dev/null > "$log" 2>&1 &
  VM_PID=$! VM_LOG=$log
}

# vm_wait_for LOG REGEX [TIMEOUT_S]: 0 when a console line matches; 1 if the VM exited first
# or time ran out.
vm_wait_for() {
  local log=$1 re=$2 end=$((SECONDS + ${3:-300}))
  while [ $SECONDS -lt $end ]; do
    grep -aqE "$re" "$log" 2>/dev/null && return 0
    if [ -n "$VM_PID" ] && ! kill -0 "$VM_PID" 2>/dev/null; then
      grep -aqE "$re" "$log" 2>/dev/null; return
    fi
    sleep 0.05
  done
  echo "vm_wait_for: no /$re/ in $log after ${3:-300}s" >&2
  return 1
}

vm_kill() {
  [ -n "$VM_PID" ] || return 0
  kill -KILL "$VM_PID" 2>/dev/null
  wait "$VM_PID" 2>/dev/null
  VM_PID=
}

# vm_wait [TIMEOUT_S]: wait for the background VM to power off; kills it on timeout (rc 137).
# A guest whose kernel said it powers down but only halted (no ACPI found) is killed 30 s
# later, and the console says so, rather than holding the run until the timeout.
vm_wait() {
  local end=$((SECONDS + ${1:-$VM_TIMEOUT})) down= i=0
  while kill -0 "$VM_PID" 2>/dev/null; do
    [ $SECONDS -lt $end ] || { vm_kill; return 137; }
    i=$((i + 1))
    if [ -z "$down" ] && [ $((i % 20)) = 0 ] && grep -aq 'reboot: Power down' "$VM_LOG" 2>/dev/null; then
      down=$SECONDS
    elif [ -n "$down" ] && [ $((SECONDS - down)) -ge 30 ]; then
      echo "VM-NO-POWEROFF: the guest said 'Power down' but QEMU still ran 30 s later; killed" |
        tee -a "$VM_LOG" >&2
      vm_kill; return 0
    fi
    sleep 0.1
  done
  wait "$VM_PID"; local rc=$?; VM_PID=; return $rc
}

# Never leave a VM running behind a test that exits early.
trap vm_kill EXIT

vm_disks() {
  local dir=$1 i=0 n; shift
  mkdir -p "$dir"
  for s in "$@"; do
    n=$(printf "vd\\x$(printf %x $((97 + i)))")
    rm -f "$dir/$n.img"; truncate -s "$s" "$dir/$n.img"
    echo "$dir/$n.img"; i=$((i + 1))
  done
}

# vm_report TAG LOG: the guest's checks and steps from a console log, prefixed with TAG.
vm_report() { tr -d '\r' < "$2" | grep -aE '^(CHECK|=== )' | sed "s/^/$1: /"; }

vm_passed() {
  # (The kernel's "sysrq: Power Off" may land on VM-EXIT's line before its newline does.)
  grep -aq '^RESULT: PASS' "$1" && grep -aqE '^VM-EXIT: 0([^0-9]|$)' "$1"
}

CHECKS=0 FAILS=0
check() {
  local name=$1; shift
  CHECKS=$((CHECKS + 1))
  if if [ $# -eq 1 ]; then eval "$1"; else "$@"; fi; then echo "CHECK-OK: $name"
  else echo "CHECK-FAIL: $name: $*"; FAILS=$((FAILS + 1)); fi
}
result() {
  if [ "$FAILS" -eq 0 ] && [ "$CHECKS" -gt 0 ]; then echo "RESULT: PASS ($CHECKS checks)"; exit 0; fi
  echo "RESULT: FAIL ($FAILS of $CHECKS checks failed)"; exit 1
}
