# Sourced by the dracut root's test scripts (host/t_dracut_root.sh):
# debian-lib.sh, plus what the dracut tests look at.
. /tests/debian-lib.sh

# dracut_timer   in the background: prints how long the first dracut run (pvencrypt's
# rebuild, dracut -f --regenerate-all) took in this TCG guest, as a "dracut: ..." line.
dracut_timer() { timer dracut dracut "the rebuild"; }

# image_opens NAME LABEL   the initramfs in /boot, as lsinitrd shows it (its listing left in
# /run/ird.list, its etc/crypttab in /run/ird.crypttab): etc/crypttab has NAME's line (with
# the LUKS UUID of vda), and pvencrypt's dracut module is in.
image_opens() {
  local img=/boot/initrd.img-$(uname -r) uuid
  uuid=$(cryptsetup luksUUID /dev/vda)
  lsinitrd "$img" > /run/ird.list 2>&1
  lsinitrd -f etc/crypttab "$img" > /run/ird.crypttab 2>&1
  sed "s/^/$2: image crypttab: /" /run/ird.crypttab
  # A host-only image has 90crypt's copy, which names the device by path.
  check "$2: the image's etc/crypttab opens $1 (lsinitrd)" \
    "grep -qE '^$1 (UUID=|/dev/disk/by-uuid/)$uuid ' /run/ird.crypttab"
  check "$2: the image has the pvencrypt dracut module" \
    "sed -n '/^dracut modules:/,/^=====/p' /run/ird.list | grep -qx pvencrypt"
}

# cryptsetup_journal   systemd-cryptsetup's journal of vda_crypt this boot, as "cryptsetup: "
# lines, kept in /run/cryptsetup.log for fell_back.
cryptsetup_journal() {
  journalctl -b -o cat -u systemd-cryptsetup@vda_crypt.service > /run/cryptsetup.log 2>&1
  sed 's/^/cryptsetup: /' /run/cryptsetup.log
}

# fell_back   systemd-cryptsetup gave up on the TPM2 and asked for the passphrase.
fell_back() {
  grep -qiE 'falling back to traditional unlocking|aborting security device based authentication' /run/cryptsetup.log
}

# half_encrypted   checks that vda is in its reencryption, open as vda_crypt.
half_encrypted() {
  check "vda is half encrypted, open as vda_crypt" \
    "cryptsetup luksDump /dev/vda | grep -q online-reencrypt && cryptsetup status vda_crypt | grep -q 'device: */dev/vda\$'"
}
