# Boot 4 of host/t_debian_root.sh: pvencrypt -b had gone on with the aborted conversion
# (which cleared its abort record) and was killed inside a commit: pvencrypt-resume.service
# resumes it at boot, with the passphrase answered through systemd's agents, and finishes
# it. Then every boot file is checked.
. /tests/debian-lib.sh
kv=$(uname -r)
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
uuid=$(cryptsetup luksUUID /dev/vda)
check "the abort record is gone (cleared by pvencrypt -b)" "[ ! -e /var/lib/pvencrypt/aborted/$uuid ]"
follow pvencrypt-resume.service
echo "=== pvencrypt-resume.service resumes and finishes"
check "it asks through systemd's password agents" \
  "wait_until 'grep -qs \"^Id=pvencrypt\" /run/systemd/ask-password/ask.*' 300"
ask=$(grep -ls '^Id=pvencrypt' /run/systemd/ask-password/ask.* | head -1)
printf 'secret-passphrase\n' | /lib/systemd/systemd-reply-password 1 "$(sed -n 's/^Socket=//p' "$ask")"
check "the unit ends" "wait_until '[ \"\$(prop pvencrypt-resume.service ActiveState)\" != active ]' 900"
check_eq "it finished (exit 0)" \
  "$(prop pvencrypt-resume.service Result) $(prop pvencrypt-resume.service ExecMainStatus)" "success 0"
check "it says so in the journal" \
  "journal pvencrypt-resume.service 6 | grep -q '/dev/vda: encrypted; the volume group runs on /dev/mapper/vda_crypt'"
check "reencryption finished" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
check "the image opens vda_crypt: checked, not rebuilt" \
  "journal pvencrypt-resume.service 6 | grep -q 'the initramfs opens vda_crypt already; not rebuilt'"
check_eq "one crypttab entry" "$(grep -v '^#' /etc/crypttab | grep -cE "^vda_crypt UUID=$uuid none luks(,discard)?\$")" 1
check "devices file: vda_crypt in, vda out" \
  "grep -q 'IDNAME=CRYPT-LUKS2-.*-vda_crypt' /etc/lvm/devices/system.devices && ! grep -q 'DEVNAME=/dev/vda ' /etc/lvm/devices/system.devices"
rm -rf /run/ird; unmkinitramfs /boot/initrd.img-$kv /run/ird
ct=$(find /run/ird -path '*cryptroot/crypttab' | head -1)
check "the initramfs opens vda_crypt" "[ -n '$ct' ] && grep -q '^vda_crypt UUID=$uuid ' '$ct'"
check "the initramfs has the devices file" \
  "grep -qs 'IDNAME=CRYPT-LUKS2-.*-vda_crypt' \$(find /run/ird -path '*etc/lvm/devices/system.devices')"
check_eq "marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
result
