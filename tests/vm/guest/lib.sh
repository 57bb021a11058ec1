# Sourced by guest tests (busybox sh, as root, no udev).
# A test makes checks, then calls `result`, which prints RESULT: PASS|FAIL and exits.
# Every failed check prints a line starting with CHECK-FAIL: that run.sh shows the host.

# Sourced again by a script that runs another (debian/*.sh): the counts carry on.
CHECKS=${CHECKS:-0} FAILS=${FAILS:-0}

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

# run CMD...   runs a setup step, dies with its output if it fails (its last lines in the
# CHECK-FAIL line too: CI's recap shows only those).
run() {
  local out
  out=$("$@" 2>&1) || { echo "$out"; die "setup: $*: $(printf '%s\n' "$out" | tail -n 2 | tr '\n' ' ')"; }
}

now() { cut -d' ' -f1 /proc/uptime; }

# sha DEV|FILE|-   a digest of the whole content (- : stdin): XXH64 (pvwriter sum), as sure as
# sha256 to see a change nobody crafted, and 5x faster under TCG (sha256sum: 22 MB/s). A read
# that fails prints a string of its own, so two failures never compare equal.
sha() { pvwriter sum "$1" || echo "unread:$1:$(cat /proc/sys/kernel/random/uuid)"; }

# wait_for CMD TIMEOUT_S   polls CMD every 0.1 s; 1 if it never succeeded.
wait_for() {
  # In hundredths of a second (/proc/uptime has two decimals): whole seconds made a 1 s wait
  # anything from 0 to 1 s.
  local end=$(( $(cut -d' ' -f1 /proc/uptime | tr -d .) + $2 * 100 ))
  until eval "$1"; do
    [ "$(cut -d' ' -f1 /proc/uptime | tr -d .)" -lt "$end" ] || return 1
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

# --- kills inside a suspension (t_kill_windows, t_kill_freeze): LVs compared with copies in RAM
# pstate PID   the process's state letter (T: stopped).
pstate() { sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' /proc/$1/status 2>/dev/null; }
# copies_start LV...   random data in each LV of vg, and a copy of it in /tmp/LV.img.
copies_start() {
  local lv
  COPIES="$*"
  for lv in "$@"; do
    dd if=/dev/urandom of=/dev/mapper/vg-$lv bs=1M oflag=direct 2>/dev/null
    dd if=/dev/mapper/vg-$lv of=/tmp/$lv.img bs=1M 2>/dev/null
  done
}
# same LABEL   every LV equals its copy, read whole within 60 s (a hang is a failure too).
same() {
  local lv
  for lv in $COPIES; do
    check_eq "$1: vg-$lv serves the bytes written" "$(timeout 60 pvwriter sum /dev/mapper/vg-$lv)" \
      "$(sha /tmp/$lv.img)"
  done
}
# scribble LV ROUND   1 MiB of new data at eight places of vg-LV, written and fsynced, and in its copy.
scribble() {
  local i at mib
  mib=$(( $(blockdev --getsize64 /dev/mapper/vg-$1) >> 20 ))
  for i in 0 1 2 3 4 5 6 7; do
    at=$(( (mib - 1) - (i * 37 + $2 * 5) % mib ))
    dd if=/dev/urandom of=/tmp/new bs=1M count=1 2>/dev/null
    timeout 30 dd if=/tmp/new of=/dev/mapper/vg-$1 bs=1M seek=$at conv=notrunc,fsync oflag=direct 2>/dev/null ||
      echo "CHECK-FAIL: round $2: the write at $at MiB of vg-$1 did not complete"
    dd if=/tmp/new of=/tmp/$1.img bs=1M seek=$at conv=notrunc 2>/dev/null
  done
}
# mirrors_synced   every live mover mirror fully copied (one never started has no status line).
mirrors_synced() {
  dmsetup status | awk '/^pvencrypt-[0-9a-f]+-m[0-9]+: .* mirror / {
    for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, r, "/"); if (r[1] != r[2]) bad = 1 }
  } END { exit bad }'
}
# kill_at STEP ARGS...   pvencrypt ARGS stopped at STEP (PVENCRYPT_FAULT=STEP:stop), the copies
# running then let finish, then killed: what it left is its guardian's to mend. Two deaths in
# turn: SIGKILL of pvencrypt (the OOM killer, kill -9), and every process of its cgroup killed
# at once, as systemd ends a unit (`systemctl kill -s KILL`, a stop's final SIGKILL), which
# would take a guardian that stayed in the unit's cgroup along. Output in /tmp/pve.out.
KILLS=0
kill_at() {
  local step=$1 pve cg=/sys/fs/cgroup/pvunit; shift
  KILLS=$((KILLS + 1))
  [ -e /sys/fs/cgroup/cgroup.procs ] || mount -t cgroup2 none /sys/fs/cgroup
  mkdir -p $cg
  PVENCRYPT_FAULT="$step:stop" sh -c 'echo $$ > '$cg'/cgroup.procs && exec pvencrypt "$@"' pvencrypt "$@" > /tmp/pve.out 2>&1 &
  pve=$!
  wait_for '[ "$(pstate $pve)" = T ]' 300 || die "the run did not stop at $step: $(cat /tmp/pve.out)"
  # A copy running now may overwrite what a restored table would read: let it.
  wait_for mirrors_synced 60
  if [ $((KILLS % 2)) = 1 ]; then
    echo "(SIGKILL of pvencrypt)"; kill -9 $pve
  else
    echo "(every process of its cgroup killed)"; echo 1 > $cg/cgroup.kill
  fi
  KILLED_AT=$(now)
  wait $pve
  wait_for '[ -z "$(cat $cg/cgroup.procs)" ]' 5 && rmdir $cg
}
# settled_within LABEL S   no device stays suspended at most S seconds after kill_at's kill.
settled_within() {
  local t
  wait_for '[ -z "$(suspended_lvs)" ]' 30
  t=$(awk -v a="$KILLED_AT" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  echo "$1: every device ran again $t s after the kill"
  check "$1: no device stays suspended (${t} s <= $2 s)" "[ -z \"\$(suspended_lvs)\" ] && awk 'BEGIN { exit !($t <= $2) }'"
}
# finished RC   the conversion's end: exit RC 0, no reencryption left, every LV as written.
finished() {
  check_eq "the conversion finished (exit 0)" "$1" 0
  check "no reencryption left" '! cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
  same "finished"
}
# suspended_lvs   the dm devices left suspended (none expected).
suspended_lvs() { dmsetup info -c --noheadings -o name,attr | awk -F: '$2 ~ /s/ {print $1}'; }

# luks_by_hand   vda as a user makes a device for --decrypt (the decrypt tests): luksFormat
# (128M: the header's 16 MiB at the tail leave room for the PV), vda_crypt open, VG vg on it
# ending 16 MiB short of the tail, LV w (8M: the PV's first extents, inside the moved segment)
# and LV b (60M of random bytes). Needs /tmp/key and $cheap.
luks_by_hand() {
  run cryptsetup luksFormat -q --type luks2 $cheap --key-file /tmp/key /dev/vda
  run cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
  PVOPTS="--setphysicalvolumesize 96m" mkvg vg /dev/mapper/vda_crypt
  mklv w -L 8M vg
  mklv b -L 60M vg
  dd if=/dev/urandom of=/dev/mapper/vg-b bs=1M count=60 oflag=direct 2>/dev/null
}
