# Sourced by guest tests (busybox sh, as root, no udev).
# A test makes checks, then calls `result`, which prints RESULT: PASS|FAIL and exits.
# Every failed check prints a line starting with CHECK-FAIL: that run.sh shows the host.

CHECKS=0 FAILS=0

# check NAME CMD...   run a condition; one argument is eval'd (pipes, &&), more run as is.
check() {
  local name=$1; shift
  CHECKS=$((CHECKS + 1))
  if if [ $# -eq 1 ]; then eval "$1"; else "$@"; fi; then
    echo "CHECK-OK: $name"
  else
    echo "CHECK-FAIL: $name: $*"
    FAILS=$((FAILS + 1))
  fi
}

# check_eq NAME GOT WANT   shows both values on failure.
check_eq() {
  CHECKS=$((CHECKS + 1))
  if [ "$2" = "$3" ]; then echo "CHECK-OK: $1"
  else echo "CHECK-FAIL: $1: got '$2' want '$3'"; FAILS=$((FAILS + 1)); fi
}

result() {
  if [ "$FAILS" -eq 0 ] && [ "$CHECKS" -gt 0 ]; then echo "RESULT: PASS ($CHECKS checks)"; exit 0; fi
  echo "RESULT: FAIL ($FAILS of $CHECKS checks failed)"; exit 1
}

# die MSG   a setup step failed: later checks would be meaningless.
die() { echo "CHECK-FAIL: $*"; CHECKS=$((CHECKS + 1)) FAILS=$((FAILS + 1)); result; }

# run CMD...   runs a setup step, dies with its output if it fails.
run() {
  local out
  out=$("$@" 2>&1) || { echo "$out"; die "setup: $*"; }
}

now() { cut -d' ' -f1 /proc/uptime; }

# sha DEV|FILE   sha256 of the whole content.
sha() { sha256sum < "$1" | cut -c1-64; }

# wait_for CMD TIMEOUT_S   polls CMD every 0.1 s; 1 if it never succeeded.
wait_for() {
  local end=$(( $(cut -d. -f1 /proc/uptime) + $2 ))
  until eval "$1"; do
    [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ] || return 1
    usleep 100000
  done
}

# arg NAME   value of NAME=... on the kernel command line (e.g. pvfault=STEP).
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }

# majmin DEV   decimal "major:minor" (stat prints hex; dm tables print decimal).
majmin() { printf '%d:%d\n' 0x$(stat -L -c %t "$1") 0x$(stat -L -c %T "$1"); }

# dm_refs NAME MAJ:MIN   true if dm device NAME's table references MAJ:MIN (compared as numbers).
dm_refs() {
  dmsetup table "$1" | tr ' ' '\n' | awk -F: -v want="$2" '
    BEGIN { split(want, w, ":") }
    /^[0-9]+:[0-9]+$/ && $1 + 0 == w[1] + 0 && $2 + 0 == w[2] + 0 { found = 1 }
    END { exit !found }'
}

# dm_users MAJ:MIN   names of the dm devices whose table references MAJ:MIN.
dm_users() {
  local n
  for n in $(dmsetup ls | awk '$1 != "No" {print $1}'); do dm_refs "$n" "$1" && echo "$n"; done
}

# mkvg VG DEV...   new PVs and VG, quietly. PV options via PVOPTS (e.g. --setphysicalvolumesize 440M).
mkvg() {
  local vg=$1 d; shift
  for d in "$@"; do run pvcreate -q -y ${PVOPTS:-} "$d"; done
  run vgcreate -q "$vg" "$@"
}

# mklv NAME LVCREATE-ARGS...   create and activate an LV, e.g. mklv a -L 32M vg /dev/vda.
# Plain lvcreate works without udev: lvm.conf's udev_rules=0 makes LVM create the nodes.
mklv() {
  local lv=$1; shift
  run lvcreate -q -y -n "$lv" "$@"
  dmsetup mknodes
}

# writer_start FILE|DEV   starts pvwriter (writedev for a block device) with ACK in /tmp/ack.
writer_start() {
  local mode=write
  [ -b "$1" ] && mode=writedev
  rm -f /tmp/ack
  pvwriter $mode "$1" /tmp/ack > /tmp/writer.out 2>&1 &
  WRITER_PID=$!
  wait_for '[ -s /tmp/ack ]' 10 || die "pvwriter did not start: $(cat /tmp/writer.out)"
}

# writer_acked   the writer's acknowledged record count so far.
writer_acked() { sed -n 's/.*acked=\([0-9]*\).*/\1/p' /tmp/ack; }

# writer_stop   stops the writer, prints its final ack line.
writer_stop() {
  kill -TERM "$WRITER_PID"; wait "$WRITER_PID"
  WRITER_RC=$?
  cat /tmp/ack
}
