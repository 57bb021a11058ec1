# Other writers of the header during the data phase (issue 20, item 5). libcryptsetup
# (2.6.1, as upstream today) lets `cryptsetup luksKillSlot` write the header of a device in
# reencryption, beside the mover's commits; `luksAddKey` it refuses ("incompatible with device
# marked for LUKS2 reencryption"), so an added key is tried and kept only if that ever changes.
# libcryptsetup also refuses a write when the header changed after its read ("concurrent LUKS2
# metadata update"), and commits come faster than a cryptsetup command: pvencrypt is stopped
# (SIGSTOP) between two commits for the command, the kernel's copies going on. A keyslot killed
# at 20% (pvencrypt's temporary one, which the run no longer needs) must stay killed through
# every later commit, not come back with the header pvencrypt read at the start; the conversion
# finishes; the passphrase opens the device with stock cryptsetup; the LV's bytes do not change.
# disks: 512M
# timeout: 900
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
printf 'a-key-added-meanwhile' > /tmp/newkey
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
PVOPTS="--setphysicalvolumesize 440M" mkvg vg /dev/vda
mklv a -L 400M vg
dd if=/dev/urandom of=/dev/mapper/vg-a bs=1M count=400 oflag=direct 2>/dev/null
a_sha=$(sha /dev/mapper/vg-a)

# slot_of KEYFILE: the keyslot KEYFILE opens, if any.
slot_of() {
  cryptsetup open --test-passphrase -v --key-file "$1" /dev/vda 2>/dev/null | sed -n 's/^Key slot \([0-9]*\) unlocked.*/\1/p'
}
slots() { cryptsetup luksDump /dev/vda | sed -n 's/^  \([0-9]*\): luks2$/\1/p' | tr '\n' ' '; }
in_dump() { cryptsetup luksDump /dev/vda | grep -q "^  $1: luks2"; }
# cs CMD...: cryptsetup CMD, its output shown and kept in /tmp/cs.out.
cs() { cryptsetup "$@" > /tmp/cs.out 2>&1; local rc=$?; cat /tmp/cs.out; return $rc; }
state() { sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' /proc/$1/status 2>/dev/null; }
# pause: pvencrypt stopped between two commits, holding no metadata lock (it takes it for
# each commit, from its read of the header until its write, and NAME's suspension within).
pause() {
  local i
  for i in $(seq 100); do
    kill -STOP $pve
    wait_for '[ "$(state $pve)" = T ]' 5 && flock -n "/run/cryptsetup/L_$(majmin /dev/vda)" true && return 0
    kill -CONT $pve
    usleep 20000
  done
  return 1
}

pvencrypt --key-file /tmp/key $cheap -y -i 1 /dev/vda > /tmp/pve.out 2>&1 &
pve=$!
wait_for 'grep -q "Encrypted: [2-9][0-9]" /tmp/pve.out' 300 || die "no progress: $(cat /tmp/pve.out)"

echo "=== 1. at 20%: pvencrypt's temporary keyslot killed, a key added"
pause || die "pvencrypt never stopped between commits"
check "paused between commits: vda_crypt is not suspended" '! dmsetup info vda_crypt | grep -q SUSPENDED'
user=$(slot_of /tmp/key)
temp=$(slots | tr ' ' '\n' | grep -vx "$user" | grep .)
echo "keyslots: $(slots)(the passphrase's: $user, the temporary one: $temp)"
check_eq "the passphrase's keyslot is 0, as luksFormat makes it (the temporary one was added first)" "$user" 0
check "two luks2 keyslots: the passphrase's and pvencrypt's temporary one" \
  '[ -n "$user" ] && [ -n "$temp" ] && [ "$(echo "$temp" | wc -l)" -eq 1 ]'
check "luksKillSlot $temp during the conversion" cs luksKillSlot -q --key-file /tmp/key /dev/vda "$temp"
check "slot $temp is gone" '! in_dump $temp'
added=
if cs luksAddKey $cheap --key-file /tmp/key --new-key-slot 5 /dev/vda /tmp/newkey; then
  added=1
  check_eq "the added key opens slot 5 at once" "$(slot_of /tmp/newkey)" 5
else
  check "luksAddKey is refused only because of the reencryption" 'grep -q "marked for LUKS2 reencryption" /tmp/cs.out'
fi
check "the conversion was still under way" 'cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
kill -CONT $pve

echo "=== 2. at 50%: after more commits"
wait_for 'grep -q "Encrypted: [5-9][0-9]" /tmp/pve.out' 300 || die "no progress: $(cat /tmp/pve.out)"
check "slot $temp stays killed through the commits since (luksDump: $(slots))" '! in_dump $temp'
[ -n "$added" ] && check "slot 5 survived the commits since" in_dump 5

wait $pve; rc=$?
cat /tmp/pve.out
check_eq "the conversion finishes (exit 0)" "$rc" 0
cryptsetup luksDump /dev/vda
check "no reencryption left" '! cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
check "no pvencrypt token left" '! cryptsetup luksDump /dev/vda | grep -q pvencrypt'
want="$user "
[ -n "$added" ] && want="$user 5 "
check_eq "the keyslots at the end" "$(slots)" "$want"
check_eq "the passphrase opens its slot" "$(slot_of /tmp/key)" "$user"
[ -n "$added" ] && check_eq "the added key opens slot 5" "$(slot_of /tmp/newkey)" 5
check_eq "vg-a unchanged" "$(sha /dev/mapper/vg-a)" "$a_sha"

echo "=== 3. closed, opened by stock cryptsetup"
run vgchange -q -an vg
run cryptsetup close vda_crypt
open_key=/tmp/key
[ -n "$added" ] && open_key=/tmp/newkey
check "cryptsetup open with $open_key" cryptsetup open --key-file $open_key /dev/vda vda_crypt
run vgchange -q -ay vg; dmsetup mknodes
check_eq "vg-a unchanged through stock cryptsetup" "$(sha /dev/mapper/vg-a)" "$a_sha"
(result); rc=$?
echo "VM-EXIT: $rc"
echo o > /proc/sysrq-trigger
