#!/bin/sh
# NOT the product: the shell spike (shared/vm-recipe) generalised into a stand-in for
# pvencrypt, so the rig and the acceptance test can be checked before the Rust tool works:
#   PVENCRYPT_BIN=tests/vm/spike-pvencrypt.sh tests/vm/run.sh t_live_convert
# It has none of the product's safety (no VG lock, no mlock, CLI calls inside the freeze).
# usage: spike-pvencrypt.sh [--version] --key-file K [cryptsetup pbkdf options] [-y] [-v] [-i N] DEV
set -eu
key='' dev='' opts=''
while [ $# -gt 0 ]; do
  case $1 in
    --version) echo "pvencrypt (shell spike stand-in)"; exit 0;;
    --key-file) key=$2; shift;;
    --pbkdf|--pbkdf-force-iterations) opts="$opts $1 $2"; shift;;
    -i) shift;;
    -y|-v) ;;
    *) dev=$1;;
  esac
  shift
done
[ -b "$dev" ] && [ -f "$key" ] || { echo "usage: $0 --key-file K DEV" >&2; exit 2; }
name=$(basename "$dev")_crypt alias=$(basename "$dev")_alias
mm() { printf '%d:%d' 0x$(stat -L -c %t "$1") 0x$(stat -L -c %T "$1"); }
dev_mm=$(mm "$dev")

# Every dm device stacked on DEV with its depth; suspend deepest first, resume the reverse.
stack() {  # SYSDIR DEPTH
  local h
  for h in $(ls "$1/holders"); do echo "$2 $(cat /sys/block/$h/dm/name)"; stack /sys/block/$h $(($2 + 1)); done
}
stack /sys/class/block/$(basename "$(readlink -f "$dev")") 1 |
  awk '$1 > d[$2] {d[$2] = $1} END {for (n in d) print d[n], n}' | sort -rn > /tmp/spike.stack
direct=$(for n in $(awk '{print $2}' /tmp/spike.stack); do
  dmsetup table "$n" | grep -qw "$dev_mm" && echo "$n"; done)

dmsetup create "$alias" --table "0 $(blockdev --getsz "$dev") linear $dev_mm 0"; dmsetup mknodes
t0=$(cut -d' ' -f1 /proc/uptime)
for n in $(awk '{print $2}' /tmp/spike.stack); do dmsetup suspend "$n"; done
cryptsetup reencrypt --encrypt --type luks2 --init-only --reduce-device-size 32M $opts \
  --key-file "$key" -q "/dev/mapper/$alias"
# No keyring: the final retarget below reloads the table with the key from dmsetup.
cryptsetup open --disable-keyring --key-file "$key" "/dev/mapper/$alias" "$name"; dmsetup mknodes
crypt_mm=$(mm "/dev/mapper/$name")
for n in $direct; do dmsetup table "$n" | sed "s/ $dev_mm / $crypt_mm /" | dmsetup reload "$n"; done
for n in $(sort -n /tmp/spike.stack | awk '{print $2}'); do dmsetup resume "$n"; done
t1=$(cut -d' ' -f1 /proc/uptime)
echo "freeze: $(echo "$t1 $t0" | awk '{print $1 - $2}') s"
cryptsetup reencrypt --disable-keyring --resume-only --active-name "$name" --key-file "$key" "/dev/mapper/$alias"
# Done: point the crypt device at the raw device and drop the alias.
alias_mm=$(mm "/dev/mapper/$alias")
dmsetup table --showkeys "$name" | sed "s/ $alias_mm / $dev_mm /" | dmsetup reload "$name"
dmsetup suspend "$name"; dmsetup resume "$name"; dmsetup remove "$alias"
echo "total: $(echo "$(cut -d' ' -f1 /proc/uptime) $t0" | awk '{print $1 - $2}') s"
