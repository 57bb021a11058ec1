#!/bin/bash
# Runs the VM tests of pvencrypt in QEMU (TCG): the kernel has device-mapper, the host may not.
#
#   tests/vm/run.sh [-j N] [NAME...]   all tests, or the named ones (t_ prefix optional)
#   tests/vm/run.sh --demo             one VM on this terminal running guest/demo.sh
#
# Guest tests, tests/vm/guest/t_*.sh: one fresh VM each on fresh sparse disks (header
# "# disks: 512M 256M" = vda vdb, the default; "# blocksize: 4096" for disks with 4096-byte
# logical sectors (4Kn); "# timeout: SECONDS"; "# append: ARGS" for the
# kernel command line); pass iff the console
# shows RESULT: PASS and the script exited 0.
# Host-driven tests, tests/vm/host/t_*.sh: bash scripts using lib.sh to boot, kill and reboot
# VMs; pass iff they exit 0. They get VM_RUN (scratch dir) and VM_LOGS.
#
# Env: PVENCRYPT_BIN=FILE puts FILE in the guest as pvencrypt instead of building it (e.g.
#      faster than 1 on 2 cores; 1 gives timings free of contention); VM_TIMEOUT=S per VM.
# Logs: vm-work/logs/NAME.log (console or host test output), vm-work/logs/cargo-build.log.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export VM_WORK=${VM_WORK:-$root/vm-work}
export VM_LOGS=$VM_WORK/logs
jobs=${VM_JOBS:-2} demo='' names=()
while [ $# -gt 0 ]; do
  case $1 in
    --demo) demo=1;;
    -j) jobs=$2; shift;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) names+=("${1%.sh}");;
  esac
  shift
done
t_start=$SECONDS

"$here/setup.sh" || { echo "setup.sh failed"; exit 1; }
rm -rf "$VM_WORK/run" "$VM_LOGS"; mkdir -p "$VM_WORK/run" "$VM_LOGS"

failed_build=
bin=${PVENCRYPT_BIN:-}
if [ -z "$bin" ]; then
  echo "== cargo build --release --features fault-injection"
  if (cd "$root" && cargo build --release --features fault-injection) > "$VM_LOGS/cargo-build.log" 2>&1; then
    bin=$root/target/release/pvencrypt
  else
    echo "BUILD-FAIL: cargo build --release failed; the VMs get no pvencrypt. Tail of $VM_LOGS/cargo-build.log:"
    tail -25 "$VM_LOGS/cargo-build.log" | sed 's/^/  | /'
    failed_build=1
  fi
fi
gcc -static -O2 -Wall -o "$VM_WORK/pvwriter" "$here/writer.c" || { echo "writer.c does not build"; exit 1; }
"$here/build-initramfs.sh" "$VM_WORK/kernel" "$VM_WORK/initramfs.cpio" "$VM_WORK/pvwriter" $bin \
  || { echo "build-initramfs.sh failed"; exit 1; }
export VM_KERNEL=$(ls "$VM_WORK"/kernel/boot/vmlinu[xz]-* | head -1)
export VM_INITRD=$VM_WORK/initramfs.cpio
export VM_PVENCRYPT=$bin   # host tests that build their own guest root (host/t_debian_root.sh)
. "$here/lib.sh"

if [ -n "$demo" ]; then
  disks=$(vm_disks "$VM_WORK/run/demo" 512M 256M)
  _vm_cmd demo $disks
  echo "== demo VM (Ctrl-A X quits); console also in $VM_LOGS/demo.log"
  timeout --foreground -k 10 "$VM_TIMEOUT" "${VM_CMD[@]}" | tee "$VM_LOGS/demo.log"
  vm_passed "$VM_LOGS/demo.log"
  exit
fi

# header FILE KEY: the value of a "# KEY: value" line.
header() { sed -n "s/^# $2: *//p" "$1" | head -1; }

# run_one FILE: runs one test, prints its verdict (and the evidence on failure) in one write.
run_one() {
  local f=$1 name kind rc t0=$SECONDS log out
  name=$(basename "$f" .sh) kind=$(basename "$(dirname "$f")")
  log=$VM_LOGS/$name.log
  if [ "$kind" = guest ]; then
    local sizes tmo append bs
    sizes=$(header "$f" disks) tmo=$(header "$f" timeout) append=$(header "$f" append) bs=$(header "$f" blocksize)
    VM_BLOCKSIZE=$bs VM_TIMEOUT=${tmo:-$VM_TIMEOUT} VM_APPEND="$VM_APPEND $append" vm_boot "$log" "$name" $(vm_disks "$VM_WORK/run/$name" ${sizes:-512M 256M})
    vm_passed "$log"; rc=$?
  else
    VM_RUN=$VM_WORK/run/$name bash "$f" > "$log" 2>&1; rc=$?
  fi
  local hung
  hung=$(ls "$VM_LOGS/$name".*hung 2>/dev/null | wc -l)
  if [ $rc -eq 0 ]; then
    out="PASS $name ($((SECONDS - t0)) s)"
    [ "$hung" -eq 0 ] || out+=" after $hung boot(s) that hung before init"
    rm -rf "${VM_WORK:?}/run/$name"   # disk images are kept only for failed tests
  else
    out="FAIL $name ($((SECONDS - t0)) s), log $log"$'\n'
    out+=$(grep -aE 'CHECK-FAIL|VM-TIMEOUT|VM-BOOT-HANG|VM-NO-POWEROFF|RESULT:|VM-EXIT' "$log" | tr -d '\r' | sed 's/^/  ! /')$'\n'
    out+=$(tail -n 30 "$log" | tr -d '\r' | sed 's/^/  | /')
  fi
  printf '%s\n' "$out"
  echo "$((SECONDS - t0))" > "$VM_WORK/run/$name.sec"
  [ $rc -eq 0 ] || grep -aE 'CHECK-FAIL|VM-TIMEOUT|VM-BOOT-HANG|VM-NO-POWEROFF|RESULT: FAIL' "$log" | tr -d '\r' |
    head -n 6 | cut -c1-200 > "$VM_WORK/run/$name.why"
  echo "$rc" > "$VM_WORK/run/$name.rc"
}

tests=()
if [ ${#names[@]} -eq 0 ]; then
  # Longest first (a "# seconds: N" header, measured: the host tests' own), so that two
  # slots end close together. t_dracut_root's header keeps it after t_crash_switch, not beside
  # t_debian_root from the start: with both Debian roots side by side, t_debian_root's "serves
  # within a second of the kill" took 1.42 s once beside another Debian root (session 15).
  tests=()
  while read -r _ f; do tests+=("$f"); done < <(
    for f in "$here"/host/t_*.sh "$here"/guest/t_*.sh; do echo "$(header "$f" seconds | grep -o '^[0-9]*' || true) $f"; done |
      awk '{ print ($1 ~ /^[0-9]+$/ ? $1 : 0), $NF }' | sort -s -k1,1nr)
else
  for n in "${names[@]}"; do
    f=
    for c in "$here"/{guest/t_,host/t_,guest/,host/}"$n".sh; do [ -e "$c" ] && { f=$c; break; }; done
    [ -n "$f" ] || { echo "no test $n in $here/guest or $here/host"; exit 2; }
    tests+=("$f")
  done
fi
echo "== ${#tests[@]} tests, $jobs at a time"

for f in "${tests[@]}"; do
  [ -e "$f" ] || continue
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  run_one "$f" &
done
wait

# The recap, last: what a reader of the output's tail (CI's) needs, whatever came before.
passed=0 failed=0 times=
echo "== recap"
for f in "$VM_WORK"/run/*.rc; do
  [ -e "$f" ] || continue
  n=$(basename "$f" .rc)
  times+=" $n $(cat "$VM_WORK/run/$n.sec" 2>/dev/null || echo ?)"
  if [ "$(cat "$f")" = 0 ]; then passed=$((passed + 1)); continue; fi
  failed=$((failed + 1))
  echo "FAIL $n:"
  sed 's/^/  ! /' "$VM_WORK/run/$n.why" 2>/dev/null
done
echo "seconds:$times"
[ -z "$failed_build" ] || { echo "FAIL build (cargo build --release)"; failed=$((failed + 1)); }
echo "== total $((SECONDS - t_start)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
