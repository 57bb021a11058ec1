complete -c pvencrypt -s d -l key-file -d 'Read the passphrase from FILE ("-" is standard input), as cryptsetup does: the whole file, or --keyfile-size bytes from --keyfile-offset; no newline handling. Without it, the passphrase is asked on the terminal, or read as one line when piped in. A block device holding an LVM label or a LUKS header is refused: a swapped argument' -r -F
complete -c pvencrypt -s l -l keyfile-size -d 'Read at most BYTES from the key file' -r -f
complete -c pvencrypt -l keyfile-offset -d 'Skip BYTES at the start of the key file' -r -f
complete -c pvencrypt -s c -l cipher -d 'Cipher specification, as for cryptsetup luksFormat' -r -f
complete -c pvencrypt -s s -l key-size -d 'Volume key size in bits' -r -f
complete -c pvencrypt -l pbkdf -d 'Key derivation function for the passphrase keyslot: argon2id, argon2i or pbkdf2' -r -f -a "argon2id\t''
argon2i\t''
pbkdf2\t''"
complete -c pvencrypt -l pbkdf-memory -d 'Memory cost of argon2 in KiB' -r -f
complete -c pvencrypt -l pbkdf-parallel -d 'Parallel cost of argon2 (threads)' -r -f
complete -c pvencrypt -l pbkdf-force-iterations -d 'Fixed number of PBKDF iterations instead of a benchmark (argon2: time cost)' -r -f
complete -c pvencrypt -l iter-time -d 'PBKDF benchmark target in milliseconds' -r -f
complete -c pvencrypt -l type -d 'The format, as cryptsetup\'s --type: luks2, the only one (LUKS1 has no online reencryption); accepted so that cryptsetup-reencrypt\'s command lines work' -r -f -a "luks2\t''"
complete -c pvencrypt -l label -d 'LUKS2 label' -r -f
complete -c pvencrypt -l uuid -d 'LUKS2 UUID, as cryptsetup luksFormat --uuid (default: a new random one). One PV only' -r -f
complete -c pvencrypt -l sector-size -d 'Encryption sector size in bytes, 512, 1024, 2048 or 4096 (default: the disk\'s logical block size, 512 on most disks, 4096 on 4Kn ones; never smaller). 512 keeps every filesystem usable; a larger one only when every LV\'s filesystem uses blocks that large' -r -f -a "512\t''
1024\t''
2048\t''
4096\t''"
complete -c pvencrypt -l name -d 'Name of the opened device, /dev/mapper/NAME (default: the PV\'s basename + "_crypt")' -r -f
complete -c pvencrypt -l reduce-device-size -d 'Space taken from the end of the device, as cryptsetup\'s --reduce-device-size: half holds the LUKS2 header, half is the data shift, the room into which chunks are encrypted ahead of the last checkpoint (a quarter of it each). Suffixes K, M, G (powers of 1024)' -r -f
complete -c pvencrypt -l tpm2-device -d 'Bind the new device to the TPM2 as systemd-cryptenroll --tpm2-device does ("auto": the machine\'s; or a device node): a keyslot whose key the TPM2 seals against --tpm2-pcrs, in the header from the switch on, and tpm2-device=auto in /etc/crypttab, so that the machine boots, and a stopped conversion resumes, with nobody at the console. The passphrase keyslot stays, for when the TPM2 refuses (a firmware or Secure Boot change, the disk in another machine). Needs systemd-cryptenroll, and when the system boots from the volume group an initramfs that unlocks with a TPM2: dracut (with tpm2-tools) or mkinitcpio\'s sd-encrypt; initramfs-tools cannot, and is refused' -r -f
complete -c pvencrypt -l tpm2-pcrs -d 'The PCRs the TPM2 key is sealed against, as systemd-cryptenroll --tpm2-pcrs (default 7: the Secure Boot state)' -r -f
complete -c pvencrypt -l config -d 'LVM\'s --config, for every LVM command pvencrypt runs (in process)' -r -f
complete -c pvencrypt -l devices -d 'LVM\'s --devices: LVM sees only these devices (comma-separated, or repeated); the new /dev/mapper/NAME is added once it exists. Not with --devicesfile (LVM refuses both)' -r -F
complete -c pvencrypt -l devicesfile -d 'LVM\'s --devicesfile: the devices file under /etc/lvm/devices that LVM reads, and that pvencrypt updates to list /dev/mapper/NAME instead of the PV' -r -f
complete -c pvencrypt -s A -l autobackup -d 'LVM\'s -A/--autobackup, for the pvmove of --make-room' -r -f -a "true\t''
false\t''"
complete -c pvencrypt -s i -l interval -d 'Print progress as "PV: Encrypted: N%" lines every SECONDS instead of a progress bar; 0: no progress output at all, as pvmove -i 0' -r -f
complete -c pvencrypt -l reportformat -d 'Report format for --status, as LVM\'s: basic (aligned columns), json (every value a string) or json_std (numbers as numbers, an unknown value null)' -r -f -a "basic\t''
json\t''
json_std\t''"
complete -c pvencrypt -l make-room -d 'When the PV reaches into the space LUKS2 needs at the end of the device, move the extents there to free extents lower on the same PV (pvmove, live) and shrink the PV (pvresize) first. Without it, pvencrypt asks on a terminal (unless --yes), and otherwise refuses and says how much is missing'
complete -c pvencrypt -l no-crypttab -d 'Do not add the new device to /etc/crypttab (pvencrypt prints the line the next boot needs instead)'
complete -c pvencrypt -l no-initramfs -d 'Do not rebuild or check the initramfs, even when root, /usr or the resume device is on the volume group, and convert even when the initramfs tool cannot open LUKS2 (a warning instead of a refusal): building an initramfs that opens the device before the next boot is then yours'
complete -c pvencrypt -s y -l yes -d 'Do not ask for confirmation (cryptsetup\'s --batch-mode)'
complete -c pvencrypt -s b -l background -d 'Run in the background: return once the PVs are checked and the passphrase read. Under systemd the conversion runs as the unit pvencrypt-DEV.service (journalctl -u shows its messages, systemctl status its progress), elsewhere detached, logging to syslog'
complete -c pvencrypt -l abort -d 'Stop running conversions (of the PVs given, or all) and wait until they have stopped: the chunks in flight go back to their plaintext, the last checkpoint stands. The data stays in use; running pvencrypt again resumes. Queued PVs (of `pvencrypt PV...`) are dropped from the queue'
complete -c pvencrypt -l status -d 'Report every running or stopped conversion: state, percent, bytes, rate, ETA; and, under the table (in the JSON: "warnings"), what must be fixed before the next reboot (the boot files\' warnings), until the reboot: a finished conversion that left some is listed as finished'
complete -c pvencrypt -l decrypt -d 'Turn each PV (a LUKS2 device, or its /dev/mapper/NAME) back into the plain PV, in place, while its LVs stay in use (DECRYPT.md). Hidden until it is whole: so far it checks and plans (--test), and refuses to run (a test build with PVENCRYPT_DECRYPT_UNFINISHED=1 runs it up to the switch back)'
complete -c pvencrypt -s t -l test -d 'Check everything and print the plan; change nothing'
complete -c pvencrypt -s v -l verbose -d 'More detail (freeze duration, throughput); twice: libcryptsetup\'s messages too'
complete -c pvencrypt -l debug -d 'Print libcryptsetup\'s and LVM\'s debug messages to stderr as they come, as cryptsetup --debug: no key material; held back while the switch\'s freeze lasts; none once in the background (-b), whose stderr is /dev/null'
complete -c pvencrypt -s q -l quiet -d 'Only errors'
complete -c pvencrypt -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pvencrypt -s V -l version -d 'Print version'

# PVs for the positional arguments, never files: LVM's PVs; after --abort the running
# conversions, after --status every conversion pvencrypt reports.
function __pvencrypt_pvs
    if __fish_seen_argument -l abort
        set -l files /run/pvencrypt/*.json
        test -n "$files"; and cat $files | grep -o '"pv": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'
    else if __fish_seen_argument -l status
        pvencrypt --status --reportformat json 2>/dev/null | grep -o '"pv": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'
    else
        pvs --noheadings -o pv_name 2>/dev/null | string trim
    end
end
complete -c pvencrypt -f -a '(__pvencrypt_pvs)'
