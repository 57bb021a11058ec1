#!/bin/bash
# pvencrypt's dracut module: puts the /etc/crypttab entries of the devices pvencrypt converted
# into the initramfs, host-only or generic, so that it opens them before it looks for the
# volume group of the root. A generic image (hostonly="no", Debian's default) otherwise opens
# a LUKS device only when the kernel command line names it (90crypt's parse-crypt.sh).
# pvencrypt writes /etc/dracut.conf.d/pvencrypt-NAME.conf, which adds this module and NAME to
# pvencrypt_crypttab; removing that file takes the device out of the next image.
# The image gets:
#   etc/crypttab                 the entry (systemd's initramfs: systemd-cryptsetup-generator)
#   etc/cmdline.d/91pvencrypt.conf  without systemd in the image: rd.luks.uuid=luks-UUID, which
#                                parse-crypt.sh turns into cryptroot-ask (the name from etc/crypttab)
# and, while pvencrypt --decrypt runs (/etc/pvencrypt/headers lists the LUKS2 headers it keeps
# at the devices' tails, crypttab's header= names them), what attaches them as loop devices
# before systemd-cryptsetup opens the entries: the list, pvencrypt-headers and its unit.

# called by dracut
check() {
    # Only where pvencrypt asked for it.
    [[ $pvencrypt_crypttab ]] || return 255
    return 0
}

# called by dracut
depends() {
    local deps=crypt name
    # pvencrypt --tpm2-device: systemd-cryptsetup unlocks with the TPM2 libraries.
    for name in $pvencrypt_crypttab; do
        awk -v n="$name" '$1 == n && $4 ~ /tpm2-device=/ { f = 1 } END { exit !f }' \
            "$dracutsysrootdir"/etc/crypttab 2> /dev/null && deps="crypt tpm2-tss"
    done
    echo "$deps"
    return 0
}

headers() {
    [[ -s $dracutsysrootdir/etc/pvencrypt/headers ]]
}

# called by dracut
installkernel() {
    if headers; then
        hostonly='' instmods loop
    fi
    return 0
}

# called by dracut
install() {
    local name line dev uuid
    for name in $pvencrypt_crypttab; do
        line=$(awk -v n="$name" '$1 == n && !/^[[:space:]]*#/ { print; exit }' "$dracutsysrootdir"/etc/crypttab 2> /dev/null)
        if [[ -z $line ]]; then
            dwarn "pvencrypt: /etc/crypttab has no entry $name; this initramfs will not open it"
            continue
        fi
        # 90crypt writes a host-only image's etc/crypttab before this module runs.
        if ! awk -v n="$name" '$1 == n { f = 1 } END { exit !f }' "$initdir"/etc/crypttab 2> /dev/null; then
            printf '%s\n' "$line" >> "$initdir"/etc/crypttab
        fi
        read -r _ dev _ <<< "$line"
        # systemd's initramfs opens every entry of its crypttab; the shell one needs the UUID.
        if ! dracut_module_included systemd && [[ $dev == UUID=* ]]; then
            uuid=${dev#UUID=}
            mkdir -p "$initdir"/etc/cmdline.d
            printf ' rd.luks.uuid=luks-%s\n' "$uuid" >> "$initdir"/etc/cmdline.d/91pvencrypt.conf
        fi
    done
    if headers; then
        if dracut_module_included systemd; then
            inst_simple /etc/pvencrypt/headers
            inst_script /usr/lib/pvencrypt/pvencrypt-headers
            inst_multiple losetup cryptsetup udevadm
            inst_simple "$systemdsystemunitdir"/pvencrypt-headers.service
            $SYSTEMCTL -q --root "$initdir" enable pvencrypt-headers.service
        else
            dwarn "pvencrypt: this initramfs has no systemd: it cannot attach the headers of /etc/pvencrypt/headers"
        fi
    fi
    return 0
}
