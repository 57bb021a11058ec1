# What bounds a kernel copy into dm-crypt (issue 23; not a pass/fail test), 1 GiB disks, in one
# VM: dd through a plain dm-crypt mapping (512- and 4096-byte sectors, 1-16 MiB blocks); one
# dm mirror of the whole disk into it by region size and kcopyd sub-job size
# (dm_mod.kcopyd_subjob_size_kb); 2-8 mirrors side by side over slices of the disk (the
# aggregate); dm-raid's raid1 rebuilding the dm-crypt leg; a 4096-byte-sector target;
# dm-crypt's submit_from_crypt_cpus; and whether
# cryptsetup reencrypt runs faster with the kernel's AF_ALG modules (algif_skcipher) loaded.
# Run: tests/vm/run.sh bench_engine; then: grep RES vm-work/logs/bench_engine.log
# disks: 1056M 1056M
# timeout: 2400
. /tests/lib.sh
dd if=/dev/urandom of=/tmp/chunk bs=1M count=16 2>/dev/null
fill() { while cat /tmp/chunk; do :; done 2>/dev/null | dd of="$1" bs=16M iflag=fullblock oflag=direct 2>/dev/null; }
fill /dev/vda
mib=1024; sectors=$((mib * 2048))
el() { echo "$2 $1" | awk '{printf "%.2f", $1 - $2}'; }
rate() { echo "$mib $1" | awk '{printf "%.1f", $1 / $2}'; }
cat /sys/block/vda/queue/max_sectors_kb /sys/block/vda/queue/max_hw_sectors_kb /sys/block/vda/queue/max_segments | tr '\n' ' '; echo "(vda max_sectors_kb max_hw max_segments)"
openc() { run cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /dev/urandom --keyfile-size 64 $1 /dev/vdb limit; }
for ss in 512 4096; do for bs in 1 4 16; do
  o=""; [ $ss = 4096 ] && o="--sector-size 4096"
  openc "$o"; sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); dd if=/dev/vda of=/dev/mapper/limit bs=${bs}M count=$((mib / bs)) iflag=direct oflag=direct 2>/dev/null; t1=$(now)
  echo "RES dd sector=$ss bs=$bs: $(rate $(el $t0 $t1)) MiB/s"
  run cryptsetup close limit
done; done
synced() { dmsetup status $1 | awk '{split($7, s, "/"); exit !(s[1] == s[2] && $9 == "AA")}'; }
mirror() {  # LABEL REGION_KIB SUBJOB_KIB NMIRRORS [crypt opts]
  local label=$1 r=$2 sj=$3 n=$4; shift 4
  echo $sj > /sys/module/dm_mod/parameters/kcopyd_subjob_size_kb
  openc "$*"; sync; echo 3 > /proc/sys/vm/drop_caches
  local per=$((sectors / n)) i
  t0=$(now)
  for i in $(seq 0 $((n - 1))); do
    dmsetup create m$i --table "0 $per mirror core 1 $((r * 2)) 2 $(majmin /dev/vda) $((i * per)) $(majmin /dev/mapper/limit) $((i * per)) 1 handle_errors" || die "mirror"
  done
  for i in $(seq 0 $((n - 1))); do wait_for "synced m$i" 900 || die "m$i never synced"; done
  t1=$(now)
  echo "RES mirror $label region=${r}K subjob=${sj}K x$n: $(rate $(el $t0 $t1)) MiB/s"
  for i in $(seq 0 $((n - 1))); do dmsetup remove m$i; done
  run cryptsetup close limit
}
for r in 1024 2048 4096 8192 16384; do mirror whole $r 512 1; done
for r in 4096 8192 16384; do mirror whole $r 1024 1; done
mirror slices 4096 512 2; mirror slices 4096 512 4; mirror slices 8192 512 4; mirror slices 8192 1024 4; mirror slices 4096 1024 8
# dm-raid's raid1 (md): no metadata devices, the dm-crypt leg rebuilt from the plaintext by md's
# recovery, which streams through a window instead of copying one region at a time.
for m in $(cat /lib/modules/lazy); do insmod /lib/modules/$m 2>/dev/null; done
recovered() { dmsetup status $1 | awk '{split($7, s, "/"); exit !(s[1] == s[2] && $6 == "AA" && $8 == "idle")}'; }
raid1() {  # LABEL [crypt opts]
  local label=$1; shift
  openc "$*"; sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now)
  if dmsetup create r1 --table "0 $sectors raid raid1 3 0 rebuild 1 2 - $(majmin /dev/vda) - $(majmin /dev/mapper/limit)"; then
    wait_for "recovered r1" 900 || echo "RES raid1 $label: never in sync: $(dmsetup status r1)"
    echo "RES raid1 $label (md recovery, no metadata): $(rate $(el $t0 $(now))) MiB/s; $(dmsetup status r1)"
    dmsetup remove r1
  else
    echo "RES raid1 $label: dm-raid refused the table (lsmod: $(lsmod | grep -c raid))"
  fi
  run cryptsetup close limit
}
raid1 whole
raid1 s4096 --sector-size 4096
mirror s4096 8192 512 1 --sector-size 4096
mirror scpu 8192 512 1 --perf-submit_from_crypt_cpus
echo 512 > /sys/module/dm_mod/parameters/kcopyd_subjob_size_kb
printf secret-passphrase > /tmp/key
for m in loaded unloaded; do
  [ $m = unloaded ] && { rmmod algif_skcipher; rmmod algif_hash; }
  t0=$(now)
  cryptsetup --debug reencrypt --encrypt --type luks2 --reduce-device-size 32M --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file /tmp/key -q --batch-mode /dev/vdb > /tmp/cs.$m 2>&1 || die "cryptsetup reencrypt failed"
  echo "RES cryptsetup reencrypt of vdb, AF_ALG modules $m: $(el $t0 $(now)) s, $(grep -h 'New cipher storage wrapper type' /tmp/cs.$m)"
  dd if=/dev/zero of=/dev/vdb bs=1M count=32 oflag=direct 2>/dev/null
done
result
