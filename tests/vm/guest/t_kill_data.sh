# pvencrypt killed (SIGKILL: the OOM killer, kill -9) or hung up (SIGHUP: a dropped ssh
# session) in the data phase, the machine still up, with a writer running on a mounted LV: the
# LVs keep serving reads and writes at once (within a second), and `pvencrypt` with no PV takes
# over what the dead run left and finishes. Three kills: while kcopyd copies; and twice while
# vda_crypt is suspended for a commit, before and after the header write (the run stops itself
# there, PVENCRYPT_FAULT=...:stop, and is then killed), which only its guardian process can
# undo. Then the resume is hung up half-way: it goes on to the end.
# disks: 512M
# timeout: 900
. /tests/lib.sh
printf 'secret-passphrase' > /tmp/key
syslogd -O /tmp/messages
cheap="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"
PVOPTS="--setphysicalvolumesize 440M" mkvg vg /dev/vda
mklv a -L 320M vg
mklv fs -L 64M vg
dd if=/dev/urandom of=/dev/mapper/vg-a bs=1M count=320 oflag=direct 2>/dev/null
a_sha=$(sha /dev/mapper/vg-a)
run mkfs.ext4 -q /dev/mapper/vg-fs
mkdir -p /mnt/fs; run mount /dev/mapper/vg-fs /mnt/fs
writer_start /mnt/fs/log

state() { sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' /proc/$1/status 2>/dev/null; }
# serving LABEL [alive]: a read of vg-a and a synchronous write to the filesystem, each within
# 1 s. After a kill nothing may stay suspended or loaded; a run that lives on (a hangup) loads
# and suspends vda_crypt at each commit, so there it must go on instead.
serving() {
  local before; before=$(writer_acked)
  check "$1: vg-a answers a read within 1 s" \
    "timeout 1 dd if=/dev/mapper/vg-a of=/dev/null bs=64k count=16 skip=$(( $(date +%s) % 300 * 16 )) iflag=direct 2>/dev/null"
  check "$1: the filesystem takes a synchronous write within 1 s" \
    "timeout 1 dd if=/dev/zero of=/mnt/fs/probe bs=4k count=1 conv=fsync 2>/dev/null"
  check "$1: the writer goes on" "wait_for '[ \$(writer_acked) -gt $before ]' 2"
  if [ "${2:-}" = alive ]; then
    check "$1: the run lives on" "kill -0 $pve"   # (a zombie too: its exit code is checked below)
    return
  fi
  check "$1: vda_crypt is not left suspended" "wait_for '! dmsetup info vda_crypt | grep -q SUSPENDED' 1"
  check "$1: no table of the dead run waits inactive on vda_crypt" "wait_for '! dmsetup info vda_crypt | grep -q INACTIVE' 1"
}
leftovers() { dmsetup ls | grep -c "^pvencrypt-"; }
# The mover's devices: pvencrypt-UUID8-mSECTOR (dm-raid1) and -cSECTOR (dm-crypt). A mirror
# vda_crypt maps, whose table mirrors vda; some may be prepared ahead or on their way out.
mapped_mirror() {
  local mm m
  for mm in $(dmsetup info -c --noheadings -o major,minor,name | awk -F: '$3 ~ /^pvencrypt-[0-9a-f]+-m[0-9]+$/ {print $1":"$2}'); do
    m=$(dmsetup info -c --noheadings -o name -j ${mm%:*} -m ${mm#*:})
    dm_refs vda_crypt "$mm" && dmsetup table "$m" | grep -q " mirror core " && dm_refs "$m" "$(majmin /dev/vda)" && return 0
  done
  return 1
}

echo "=== 1. killed while the kernel copies"
pvencrypt --key-file /tmp/key $cheap -y -i 1 /dev/vda > /tmp/pve1.out 2>&1 &
pve=$!
wait_for '[ "$(leftovers)" -ge 2 ] && grep -q "Encrypted: [2-9][0-9]" /tmp/pve1.out' 300 || die "no progress: $(cat /tmp/pve1.out)"
kill -9 $pve; wait $pve
serving "killed while copying"
check "it left vda_crypt mapping a chunk through a dm mirror of vda into dm-crypt, still working" \
  'mapped_mirror && [ "$(dmsetup table --target crypt | grep -c "^pvencrypt-")" -ge 1 ]'
timeout 30 pvencrypt --status > /tmp/status.out 2>&1; rc=$?
cat /tmp/status.out
check_eq "--status answers" "$rc" 0
check "--status: stopped" 'grep -q "vda_crypt stopped" /tmp/status.out'

for step in commit committed; do
  echo "=== 2. killed while vda_crypt is suspended, at '$step'"
  PVENCRYPT_FAULT="$step:stop" pvencrypt --key-file /tmp/key -i 1 > /tmp/pve2.out 2>&1 &
  pve=$!
  wait_for '[ "$(state $pve)" = T ]' 300 || die "the run did not stop at $step: $(cat /tmp/pve2.out)"
  check "$step: stopped inside the commit, vda_crypt suspended" "dmsetup info vda_crypt | grep -q SUSPENDED"
  check "$step: it took over the dead run's devices" "grep -q 'took over from a run that died' /tmp/pve2.out"
  kill -9 $pve; wait $pve
  serving "killed at $step"
  check "$step: the guardian said so" "wait_for 'grep -q \"pvencrypt died while vda_crypt was suspended; resumed it\" /tmp/messages' 5"
done

echo "=== 3. pvencrypt with no PV takes over, is hung up (SIGHUP) half-way, and finishes; no reboot"
pvencrypt --key-file /tmp/key -v -i 1 > /tmp/res.out 2>&1 &
pve=$!
wait_for 'grep -q "Encrypted: [5-9][0-9]" /tmp/res.out' 300 || die "no progress: $(cat /tmp/res.out)"
kill -HUP $pve
serving "hung up" alive
wait $pve; rc=$?
cat /tmp/res.out
check_eq "the resume finishes (exit 0)" "$rc" 0
check "it took over the dead run's devices" "grep -q 'took over from a run that died' /tmp/res.out"
check "after the hangup it logged to syslog" "grep -q 'pvencrypt\[$pve\]: /dev/vda: encrypted; the volume group runs on /dev/mapper/vda_crypt' /tmp/messages"
check_eq "no mover device left" "$(leftovers)" 0
check "no reencryption left" '! cryptsetup luksDump /dev/vda | grep -q online-reencrypt'
writer_stop; acked=$(writer_acked)
check "writer: every acknowledged record is there ($acked)" pvwriter verify /mnt/fs/log "$acked"
check_eq "vg-a unchanged" "$(sha /dev/mapper/vg-a)" "$a_sha"
run umount /mnt/fs
run vgchange -q -an vg
run cryptsetup close vda_crypt
run cryptsetup open --key-file /tmp/key /dev/vda vda_crypt
run vgchange -q -ay vg; dmsetup mknodes
check_eq "vg-a unchanged through stock cryptsetup" "$(sha /dev/mapper/vg-a)" "$a_sha"
run mount /dev/mapper/vg-fs /mnt/fs
check "writer log intact through stock cryptsetup" pvwriter verify /mnt/fs/log "$acked"
(result); rc=$?
echo "VM-EXIT: $rc"
echo o > /proc/sysrq-trigger
