# seconds: 380   (measured, TCG: run.sh starts the longest first)
# Every on-disk state of the kernel mover is standard LUKS2: pvencrypt stops itself (SIGSTOP)
# at every header commit, between its two copies and after both, and a copy of the disk taken
# there is opened by stock cryptsetup, which must map exactly the PV's bytes, and finished by
# stock `cryptsetup reencrypt --resume-only`, after which it must still map them. Between the
# copies it is checked twice: as written (the newer primary wins) and with the primary torn
# (the older secondary wins). No writer runs, so the PV's content is known.
# disks: 32M
# timeout: 1200
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
# 32M disk, shift 4M: the data is 24M, moved in 1M chunks (four in flight) and the moved
# first 4M.
PVOPTS="--setphysicalvolumesize 24M" mkvg vg /dev/vda
mklv a -l 100%FREE vg
dd if=/dev/urandom of=/dev/mapper/vg-a bs=1M count=$(($(blockdev --getsize64 /dev/mapper/vg-a) >> 20)) oflag=direct 2>/dev/null
T=$((24 << 20))
ref=$(dd if=/dev/vda bs=1M count=24 iflag=direct 2>/dev/null | sha -)
a_sha=$(sha /dev/mapper/vg-a)

state() { sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' /proc/$1/status 2>/dev/null; }
reencrypting() { cryptsetup luksDump --disable-locks "$1" | grep -q online-reencrypt; }
maps_ref() { # LABEL LOOP: stock cryptsetup opens it and maps the PV's bytes
  cryptsetup open --disable-locks --key-file /tmp/key "$2" snap || {
    check "$1: stock cryptsetup opens it" false
    cryptsetup open --debug --disable-locks --key-file /tmp/key "$2" snap 2>&1 | tail -40
    return
  }
  got=$(head -c $T /dev/mapper/snap | sha -)
  cryptsetup close --disable-locks snap
  check_eq "$1: stock cryptsetup open maps the PV's bytes" "$got" "$ref"
}
verify() { # LABEL IMAGE
  local lo; lo=$(losetup -f) && losetup "$lo" "$2" || die "losetup"
  maps_ref "$1" "$lo"
  if reencrypting "$lo"; then
    cryptsetup reencrypt --disable-locks --resume-only --key-file /tmp/key "$lo" > /tmp/resume.out 2>&1
    check "$1: stock cryptsetup reencrypt --resume-only finishes it" "[ $? = 0 ] && ! reencrypting $lo" || cat /tmp/resume.out
    maps_ref "$1, resumed by cryptsetup" "$lo"
  fi
  losetup -d "$lo"
}

PVENCRYPT_FAULT='commit-primary|committed:stop' PVENCRYPT_MOVER=chunk=1M,region=256K pvencrypt --key-file /tmp/key $cheap -y --reduce-device-size 8M /dev/vda \
  > /tmp/pve.out 2>&1 &
pve=$!
n=0
while :; do
  wait_for '[ "$(state $pve)" = T ] || [ "$(state $pve)" = Z ] || [ ! -d /proc/$pve ]' 300 || die "pvencrypt neither stops nor ends"
  [ "$(state $pve)" = T ] || break
  n=$((n + 1))
  dd if=/dev/vda of=/tmp/snap.img bs=1M iflag=direct 2>/dev/null
  if [ $((n % 2)) = 1 ]; then
    verify "commit $(((n + 1) / 2)), between the copies" /tmp/snap.img
    printf 'XXXXXXXX' | dd of=/tmp/snap.img bs=1 seek=4200 conv=notrunc 2>/dev/null
    verify "commit $(((n + 1) / 2)), primary torn" /tmp/snap.img
  else
    verify "commit $((n / 2))" /tmp/snap.img
  fi
  rm -f /tmp/snap.img
  kill -CONT $pve
done
wait $pve; rc=$?
cat /tmp/pve.out
check_eq "pvencrypt exit code" "$rc" 0
# 20 chunks of 1M from the top down to the shift, then the moved first 4M; a commit takes
# every chunk in sync next to the boundary (up to the four in flight), so 6 to 21 commits.
check "stops: two per commit, at least 6 commits ($n stops)" "[ $((n % 2)) = 0 ] && [ $n -ge 12 ] && [ $n -le 42 ]"
check_eq "the LV is unchanged" "$(sha /dev/mapper/vg-a)" "$a_sha"
check "no reencryption left" '! reencrypting /dev/vda'
check "no mover device left" '! dmsetup ls | grep -q "^pvencrypt-"'
(result); rc=$?
echo "VM-EXIT: $rc"
echo o > /proc/sysrq-trigger
