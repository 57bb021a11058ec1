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

# follow UNIT   the messages of the unit's processes on the console, as "pvencrypt: ..." lines.
follow() { journalctl -b -f -n all -o cat "_SYSTEMD_UNIT=$1" | sed -u 's/^/pvencrypt: /' & }

# journal UNIT PRIORITY   the unit's processes' messages of exactly that priority (6 info, 3 err).
journal() { journalctl -b -o cat -p "$2..$2" "_SYSTEMD_UNIT=$1"; }

# status   pvencrypt --status's row for vda, as a "status: ..." line.
status() { pvencrypt --status | sed -n 's/^ *\(\/dev\/vda .*\)/status: \1/p'; }

mountpoint -q /boot || run mount /boot
