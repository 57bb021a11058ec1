# Boot 2 of host/t_dracut_root.sh: the image pvencrypt rebuilt (dracut, systemd inside) asked
# for the passphrase of vda_crypt, the host typed it once; systemd-cryptsetup unlocked the
# half-encrypted vda and cached the passphrase in root's user keyring (150 s). 
# pvencrypt-resume.service (KeyringMode=shared) must take it from there, not ask again: any
# question of its own (an ask file with Id=pvencrypt) is a failure. It finishes the conversion
# and rebuilds the image again; the guest looks into it with lsinitrd.
. /tests/dracut-lib.sh
check_eq "root on the VG" "$(findmnt -n -o SOURCE /)" /dev/mapper/vg-root
check "vda is half encrypted, open as vda_crypt" \
  "cryptsetup luksDump /dev/vda | grep -q online-reencrypt && cryptsetup status vda_crypt | grep -q 'device: */dev/vda\$'"
follow pvencrypt-resume.service
dracut_timer
# Time from the unlock (systemd-cryptsetup in the initramfs, whose journal the root keeps)
# to the resume unit's start: the cached passphrase expires 150 s after it was typed.
unlocked=$(journalctl -b -o short-monotonic -u systemd-cryptsetup@vda_crypt.service | grep -m1 -E 'Finished|Started' |
  sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
started=$(prop pvencrypt-resume.service ExecMainStartTimestampMonotonic)
echo "keyring: vda_crypt unlocked at ${unlocked:-?}s of uptime, pvencrypt-resume.service started at $(awk -v u="$started" 'BEGIN { printf "%.2f", u / 1e6 }')s"
check "pvencrypt-resume.service started at boot" "[ '$started' -gt 0 ]"
[ -n "$unlocked" ] && check "it started within the cache's 150 s" \
  "awk -v a='$unlocked' -v u='$started' 'BEGIN { d = u / 1e6 - a; printf \"keyring: %.1f s after the unlock\\n\", d; exit !(d < 150) }'"
echo "=== pvencrypt-resume.service resumes with the cached passphrase and finishes"
asked() { grep -qs '^Id=pvencrypt' /run/systemd/ask-password/ask.*; }
wait_until 'asked || [ "$(prop pvencrypt-resume.service ActiveState)" != active ]' 1200
if asked; then
  check "the unit took the passphrase from the keyring, without asking" false
  # Answered anyway, for the rest of the story.
  ask=$(grep -ls '^Id=pvencrypt' /run/systemd/ask-password/ask.* | head -1)
  printf 'secret-passphrase\n' | /lib/systemd/systemd-reply-password 1 "$(sed -n 's/^Socket=//p' "$ask")"
  wait_until '[ "$(prop pvencrypt-resume.service ActiveState)" != active ]' 1200
else
  check "the unit took the passphrase from the keyring, without asking" true
fi
check_eq "it finished (exit 0)" \
  "$(prop pvencrypt-resume.service Result) $(prop pvencrypt-resume.service ExecMainStatus)" "success 0"
check "it says so in the journal" \
  "journal pvencrypt-resume.service 6 | grep -q '/dev/vda: encrypted; the volume group runs on /dev/mapper/vda_crypt'"
check "reencryption finished" "! cryptsetup luksDump /dev/vda | grep -q online-reencrypt"
uuid=$(cryptsetup luksUUID /dev/vda)
check_eq "one crypttab entry" "$(grep -v '^#' /etc/crypttab | grep -cE "^vda_crypt UUID=$uuid none luks(,discard)?\$")" 1
check "the dracut drop-in is still there" "grep -qs 'vda_crypt' /etc/dracut.conf.d/pvencrypt-vda_crypt.conf"
image_opens vda_crypt "finished"
check_eq "marker intact" "$(sha /var/marker)" "$(cat /var/marker.sha)"
result
