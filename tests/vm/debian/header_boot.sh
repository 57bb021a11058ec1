# Boot 2 of host/proof_boot_tail_header.sh: vdc was opened in the initramfs (the host typed its
# passphrase; the host checks the console), vdd by systemd-cryptsetup with its key file, each
# through the LUKS2 header in its disk's last 16 MiB that pvencrypt-headers attached. Both VGs
# active; then stock `cryptsetup reencrypt --resume-only` finishes each decryption online.
. /tests/debian-lib.sh
journalctl -b -o cat -u pvencrypt-headers.service | sed 's/^/headers: /'
check_eq "pvencrypt-headers.service ran" "$(prop pvencrypt-headers.service Result) $(prop pvencrypt-headers.service ExecMainStatus)" "success 0"
check "pvencrypt-headers.service ran before systemd-cryptsetup@vdd_crypt" \
  "[ \$(prop pvencrypt-headers.service ExecMainExitTimestampMonotonic) -lt \$(prop systemd-cryptsetup@vdd_crypt.service ExecMainStartTimestampMonotonic) ]"
journalctl -b -o cat -u systemd-cryptsetup@vdd_crypt.service | sed 's/^/vdd cryptsetup: /'
for d in vdc vdd; do
  key=/etc/vdd.key; [ $d = vdc ] && { printf secret-passphrase > /run/vdc.key; key=/run/vdc.key; }
  uuid=$(cat /var/$d.uuid)
  check_eq "$d: one loop device over its tail" "$(losetup -j /dev/$d | wc -l)" 1
  # (cryptsetup status names no device for a table of several segments.)
  check "${d}_crypt is open on /dev/$d" "dmsetup deps -o devname ${d}_crypt | grep -q '($d)'"
  check "vg$d is active" "wait_until '[ -b /dev/vg$d/data ]' 30"
  check_eq "$d: the LV's bytes" "$(sha /dev/vg$d/data)" "$(cat /var/$d.sha)"
  echo "=== $d: stock resume, online, through by-uuid"
  check "$d: reencrypt --resume-only --header /dev/disk/by-uuid/$uuid" \
    "cryptsetup reencrypt -q --resume-only --header /dev/disk/by-uuid/$uuid --active-name ${d}_crypt --key-file $key"
  check_eq "$d: the LV's bytes, decrypted" "$(sha /dev/vg$d/data)" "$(cat /var/$d.sha)"
  run vgchange -q -an vg$d
  dmsetup remove ${d}_crypt 2>/dev/null
  pvscan --cache > /dev/null 2>&1
  pvs -o pv_name,vg_name | sed "s/^/$d pvs: /"
  check "$d: the plain PV" "pvs --noheadings -o pv_name,vg_name | grep -qE '^ */dev/$d +vg$d *\$'"
  run vgchange -q -ay vg$d
  check_eq "$d: the LV's bytes on the plain PV" "$(sha /dev/vg$d/data)" "$(cat /var/$d.sha)"
done
result
