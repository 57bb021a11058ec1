# seconds: 70   (measured, TCG: run.sh starts the longest first)
# --decrypt's first step (DECRYPT.md; the run itself is not written yet): what the device is,
# whether it can be decrypted live, and the plan --test prints, for a LUKS2 device made by
# hand (luksFormat, a PV on the mapping), open, its VG in use. Every refusal exits 3, says why
# and changes no byte of either disk; --test changes none either.
# disks: 128M 64M
# timeout: 600
. /tests/lib.sh
printf secret-passphrase > /tmp/key
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"

# refuses NAME PATTERN ARGS...: pvencrypt ARGS exits 3, prints PATTERN, changes no byte.
refuses() {
  local name=$1 pattern=$2 before after out rc; shift 2
  before="$(sha /dev/vda) $(sha /dev/vdb)"
  out=$(pvencrypt "$@" 2>&1); rc=$?
  after="$(sha /dev/vda) $(sha /dev/vdb)"
  echo "--- $name: exit $rc: $out"
  check_eq "$name: exit code" "$rc" 3
  check "$name: says why" 'echo "$out" | grep -q -- "$pattern"'
  check_eq "$name: both disks unchanged" "$after" "$before"
}

refuses "no PV given" "required arguments were not provided" --decrypt --test
refuses "not LUKS" "not a LUKS2 device" --decrypt --test /dev/vda
run cryptsetup luksFormat -q --type luks1 $cheap --key-file /tmp/key /dev/vdb
refuses "LUKS1" "is LUKS1" --decrypt --test /dev/vdb
run cryptsetup luksFormat -q --type luks2 $cheap --key-file /tmp/key /dev/vdb
refuses "not open" "is not open" --decrypt --test /dev/vdb
run cryptsetup open --key-file /tmp/key /dev/vdb vdb_crypt
refuses "no PV on the mapping" "holds no LVM physical volume" --decrypt --test /dev/vdb
run cryptsetup close vdb_crypt

# As a user makes one: the PV fills the mapping (112 MiB), so the header has no room at the tail.
run cryptsetup luksFormat -q --type luks2 $cheap --key-file /tmp/key /dev/vda
run cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
mkvg vg /dev/mapper/vda_crypt
mklv a -L 32M vg
run mkfs.ext4 -q /dev/mapper/vg-a
mkdir -p /mnt/a; run mount /dev/mapper/vg-a /mnt/a
dd if=/dev/urandom of=/mnt/a/data bs=1M count=8 2>/dev/null; sync
data=$(sha /mnt/a/data)
refuses "the PV fills the mapping" "Shrink it by 13 MiB" --decrypt --test /dev/vda
run pvresize -q -y --setphysicalvolumesize 96m /dev/mapper/vda_crypt

run dmsetup create intruder --table "0 8 linear $(majmin /dev/mapper/vda_crypt) 0"
refuses "a dm device that is not an LV" "intruder, which is not a logical volume of vg" --decrypt --test /dev/vda
run dmsetup remove intruder

before="$(sha /dev/vda) $(sha /dev/vdb)"
out=$(pvencrypt --decrypt --test /dev/vda 2>&1); rc=$?
echo "$out"
check_eq "--test: exit 0" "$rc" 0
check "--test: the device, its mapping and VG" \
  'echo "$out" | grep -q "^/dev/vda: LUKS2 device opened as /dev/mapper/vda_crypt, PV of volume group vg, 128 MiB"'
check "--test: where the header goes" 'echo "$out" | grep -q "last 16 MiB (from 112 MiB) for the run; the data moves down 16 MiB, onto the PV.s first 93 MiB"'
check "--test: the LVs suspended" 'echo "$out" | grep -q "switch back: vg-a"'
check "--test: no crypttab entry to change" 'echo "$out" | grep -q "has no entry for vda_crypt"'
check "--test: what the PV may gain" 'echo "$out" | grep -q "may grow by 35 MiB (pvresize /dev/vda)"'
check "--test: nothing was changed" 'echo "$out" | grep -q "^Test mode: nothing was changed"'
out2=$(pvencrypt --decrypt --test /dev/mapper/vda_crypt 2>&1)
check_eq "--test on the mapping: the same plan" "$out2" "$out"
check_eq "--test: both disks unchanged" "$(sha /dev/vda) $(sha /dev/vdb)" "$before"
refuses "without --test" "not written yet" --decrypt -y /dev/vda
check_eq "the LV's data" "$(sha /mnt/a/data)" "$data"
result
