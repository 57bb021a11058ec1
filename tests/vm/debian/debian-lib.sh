# Sourced by the Debian root's test scripts (bash, systemd running): guest/lib.sh's checks,
# plus what a systemd machine has.
. /tests/lib.sh

# wait_until CMD TIMEOUT_S   polls CMD every 0.2 s (no busybox usleep here); 1 on timeout.
wait_until() {
  local end=$((SECONDS + $2))
  until eval "$1"; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}

# prop UNIT PROPERTY   one property of a unit, as systemctl show has it.
prop() { systemctl show -P "$2" "$1"; }

# follow UNIT   the messages of the unit's processes on the console, as "pvencrypt: [UPTIME s] ..."
# lines.
follow() {
  journalctl -b -f -n all -o short-monotonic "_SYSTEMD_UNIT=$1" |
    sed -u 's/^\[ *\([0-9]*\)\.[0-9]*\] [^ ]* [^:]*: /pvencrypt: [\1 s] /' &
}

# timer COMM TAG WHAT   in the background: when a process named COMM first runs, how long until
# none does, as a "TAG: WHAT ran from ...s to ...s of uptime: N s" line.
timer() {
  # (minbase has no pgrep)
  ( until grep -qsx "$1" /proc/[0-9]*/comm; do sleep 0.2; done; t0=$(now)
    while grep -qsx "$1" /proc/[0-9]*/comm; do sleep 0.2; done; t1=$(now)
    echo "$2: $3 ran from ${t0}s to ${t1}s of uptime: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s" ) &
}

# journal UNIT PRIORITY   the unit's processes' messages of exactly that priority (6 info, 3 err).
journal() { journalctl -b -o cat -p "$2..$2" "_SYSTEMD_UNIT=$1"; }

# status   pvencrypt --status's row for vda, as a "status: ..." line.
status() { pvencrypt --status | sed -n 's/^ *\(\/dev\/vda .*\)/status: \1/p'; }

mountpoint -q /boot || run mount /boot

# killed_in_suspension UNIT LABEL   UNIT's pvencrypt has stopped itself (PVENCRYPT_FAULT=STEP:stop)
# with the root's devices suspended: `systemctl kill -s KILL UNIT`, as an admin would, and the
# root must serve a direct read and a synced write within a second. Until the kill only bash
# builtins run: a program read from the suspended root would wait for it.
killed_in_suspension() {
  local unit=$1 label=$2 pid st k v _ t0 t1 end=$((SECONDS + 1500))
  systemctl --version > /dev/null; sync --version > /dev/null; dd --version > /dev/null   # cached
  [ -p /run/never ] || mkfifo /run/never
  exec 9<> /run/never
  pid=$(prop "$unit" MainPID)
  while [ $SECONDS -lt $end ]; do
    st=
    [ -e "/proc/$pid" ] || break
    while read -r k v _; do [ "$k" = State: ] && st=$v; done < "/proc/$pid/status" 2>/dev/null
    [ "$st" = T ] && break
    read -r -t 0.1 -u 9
  done
  check_eq "$label: pvencrypt stopped with the root suspended" "$st" T
  systemctl kill -s KILL "$unit"
  read -r t0 _ < /proc/uptime
  dd if=/dev/mapper/vg-root of=/dev/null bs=4096 count=1 skip=$((RANDOM * 4)) iflag=direct 2>/dev/null &&
    echo "$t0" > /var/probe && sync /var/probe
  read -r t1 _ < /proc/uptime
  exec 9<&-
  local took; took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  echo "$label: after systemctl kill, the root served a direct read and a synced write in $took s"
  check "$label: the root serves within a second of the kill ($took s)" "awk 'BEGIN { exit !($took <= 1) }'"
  check "$label: no device stays suspended" '[ -z "$(suspended_lvs)" ]'
  check "$label: pvencrypt is gone" "wait_until '[ \"\$(prop $unit ActiveState)\" != active ]' 30"
}
