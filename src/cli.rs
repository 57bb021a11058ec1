// The command line. build.rs includes this file to render the man page and the
// shell completions, so it must depend on nothing but clap, std and units.rs (which
// build.rs includes too).

use std::path::PathBuf;

use clap::{builder::TypedValueParser, ArgAction, Parser, ValueEnum, ValueHint};

const EXIT_CODES: &str = "\
EXIT STATUS:
  0  the conversion finished (or, with -b, runs in the background; with --test, --abort
     or --status, the request succeeded)
  1  interrupted (--abort, SIGINT, SIGTERM): stopped at a checkpoint; the data is in use
     on the new device and running pvencrypt again resumes
  2  wrong passphrase: it opens no keyslot (cryptsetup's exit 2)
  3  refused before anything was changed: the disk is byte-for-byte unchanged (never
     once the command has written: from the first write on an error exits 1, 5 or 6);
     an invalid command line too (LVM's exit 3)
  4  key problem (empty or unreadable key file, passphrases that differ)
  5  failed after the first write; the device is the plain PV again (a switch undone) or
     a LUKS2 device that stock cryptsetup opens, and running pvencrypt again goes on
  6  failed, and undoing the failed step failed too: the message says what is left to
     do by hand

BOOT STACKS (when /, /usr or the resume device is on the volume group; checked before
anything changes, the rebuilt images looked into after the switch):
  initramfs-tools  needs cryptsetup-initramfs; crypttab, update-initramfs -u -k all; the
                   image's cryptroot/crypttab checked. --tpm2-device refused (it asks for a
                   passphrase only): use dracut, or clevis afterwards
  dracut           needs the crypt module, cryptsetup and pvencrypt's module (91pvencrypt, in
                   the package: generic images open LUKS only when the command line names it,
                   host-only ones built during the conversion miss it); crypttab and
                   /etc/dracut.conf.d/pvencrypt-NAME.conf,
                   dracut -f --regenerate-all; the entry in the image's etc/crypttab and what
                   reads it checked. --tpm2-device needs its systemd-initrd and tpm2-tss
                   modules and tpm2-tools
  mkinitcpio       sd-encrypt (with systemd): also /etc/crypttab.initramfs; encrypt: prints
                   the cryptdevice= argument for the boot loader (not edited); --tpm2-device
                   only with sd-encrypt
  --tpm2-device elsewhere needs systemd as init (crypttab's tpm2-device=auto).

EXAMPLES:
  pvencrypt /dev/sda5                     convert, asking for a passphrase twice
  pvencrypt --key-file /root/key -y -b /dev/sda5
                                          unattended, in the background
  pvencrypt                               resume every unfinished conversion
  pvencrypt --abort                       stop running conversions at their last checkpoint
  pvencrypt --status --reportformat json  progress for scripts
  pvencrypt --tpm2-device=auto /dev/sda5  every boot unlocks with the TPM2 (the passphrase
                                          stays as the fallback)

FILES:
  /etc/crypttab            gets the new device's entry right after the switch (--no-crypttab)
  /run/pvencrypt/DEV.json  the status of the running conversion of /dev/DEV
  /run/pvencrypt/DEV.warnings.json  what to fix before the next reboot (--status shows it)
  /etc/dracut.conf.d/pvencrypt-NAME.conf  with dracut: has pvencrypt's dracut module put NAME
                           into the initramfs, generic images too
  /var/lib/pvencrypt/      queue.json (the PVs still to convert), aborted/ (--abort stands)
  pvencrypt-resume.service resumes a stopped conversion at boot, once the device is unlocked";

/// Encrypt an LVM physical volume in place, while its logical volumes stay in use.
///
/// pvencrypt turns PV into a LUKS2 device that carries the same PV: when it returns,
/// PV holds a LUKS2 header, /dev/mapper/NAME is open and every logical volume runs on it.
/// The device follows libcryptsetup's LUKS2 reencryption format (data shift mode), so at
/// every instant, even after a crash or a kill, it is either the plain PV or a LUKS2
/// device that stock cryptsetup opens ("cryptsetup open") and can finish ("cryptsetup reencrypt").
/// pvencrypt switches the logical volumes onto the new device under a short freeze; then
/// the kernel moves the data, as for pvmove: chunk by chunk, a device-mapper mirror copies
/// the plaintext into dm-crypt while the logical volumes keep using it.
///
/// Run without PV, pvencrypt resumes every conversion left unfinished, like pvmove.
#[derive(Parser, Debug, Clone)]
#[command(name = "pvencrypt", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// Physical volumes to encrypt, one after another. Without any, resume unfinished conversions.
    #[arg(value_name = "PV", value_hint = ValueHint::Other)]
    pub pvs: Vec<PathBuf>,

    /// Read the passphrase from FILE ("-" is standard input), as cryptsetup does: the whole
    /// file, or --keyfile-size bytes from --keyfile-offset; no newline handling. Without it,
    /// the passphrase is asked on the terminal, or read as one line when piped in. A block
    /// device holding an LVM label or a LUKS header is refused: a swapped argument.
    #[arg(short = 'd', long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub key_file: Option<PathBuf>,

    /// Read at most BYTES from the key file.
    #[arg(short = 'l', long, value_name = "BYTES", requires = "key_file", value_hint = ValueHint::Other)]
    pub keyfile_size: Option<u64>,

    /// Skip BYTES at the start of the key file.
    #[arg(long, value_name = "BYTES", requires = "key_file", value_hint = ValueHint::Other)]
    pub keyfile_offset: Option<u64>,

    /// Cipher specification, as for cryptsetup luksFormat.
    #[arg(short = 'c', long, value_name = "CIPHER", default_value = "aes-xts-plain64", value_hint = ValueHint::Other)]
    pub cipher: String,

    /// Volume key size in bits.
    #[arg(short = 's', long, value_name = "BITS", default_value_t = 512, value_hint = ValueHint::Other)]
    pub key_size: u32,

    /// Key derivation function for the passphrase keyslot: argon2id, argon2i or pbkdf2.
    #[arg(long, value_enum, value_name = "PBKDF", hide_possible_values = true)]
    pub pbkdf: Option<Pbkdf>,

    /// Memory cost of argon2 in KiB.
    #[arg(long, value_name = "KIB", value_hint = ValueHint::Other)]
    pub pbkdf_memory: Option<u32>,

    /// Parallel cost of argon2 (threads).
    #[arg(long, value_name = "THREADS", value_hint = ValueHint::Other)]
    pub pbkdf_parallel: Option<u32>,

    /// Fixed number of PBKDF iterations instead of a benchmark (argon2: time cost).
    #[arg(long, value_name = "NUM", value_hint = ValueHint::Other)]
    pub pbkdf_force_iterations: Option<u32>,

    /// PBKDF benchmark target in milliseconds.
    #[arg(long, value_name = "MS", value_hint = ValueHint::Other)]
    pub iter_time: Option<u32>,

    /// The format, as cryptsetup's --type: luks2, the only one (LUKS1 has no online
    /// reencryption); accepted so that cryptsetup-reencrypt's command lines work.
    #[arg(long = "type", value_name = "TYPE", value_parser = ["luks2"])]
    pub luks_type: Option<String>,

    /// LUKS2 label.
    #[arg(long, value_name = "LABEL", value_hint = ValueHint::Other)]
    pub label: Option<String>,

    /// LUKS2 UUID, as cryptsetup luksFormat --uuid (default: a new random one). One PV only.
    #[arg(long, value_name = "UUID", value_hint = ValueHint::Other)]
    pub uuid: Option<String>,

    /// Encryption sector size in bytes, 512, 1024, 2048 or 4096 (default: the disk's logical
    /// block size, 512 on most disks, 4096 on 4Kn ones; never smaller). 512 keeps every
    /// filesystem usable; a larger one only when every LV's filesystem uses blocks that large.
    #[arg(long, value_name = "BYTES", hide_possible_values = true,
          value_parser = clap::builder::PossibleValuesParser::new(["512", "1024", "2048", "4096"])
              .map(|s| s.parse::<u32>().unwrap()))]
    pub sector_size: Option<u32>,

    /// Name of the opened device, /dev/mapper/NAME (default: the PV's basename + "_crypt").
    #[arg(long, value_name = "NAME", value_hint = ValueHint::Other)]
    pub name: Option<String>,

    /// Space taken from the end of the device, as cryptsetup's --reduce-device-size: half
    /// holds the LUKS2 header, half is the data shift, the room into which chunks are
    /// encrypted ahead of the last checkpoint (a quarter of it each). Suffixes K, M, G
    /// (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = crate::units::parse_size, value_hint = ValueHint::Other)]
    pub reduce_device_size: u64,

    /// When the PV reaches into the space LUKS2 needs at the end of the device, move the
    /// extents there to free extents lower on the same PV (pvmove, live) and shrink the PV
    /// (pvresize) first. Without it, pvencrypt asks on a terminal (unless --yes), and otherwise
    /// refuses and says how much is missing.
    #[arg(long)]
    pub make_room: bool,

    /// Do not add the new device to /etc/crypttab (pvencrypt prints the line the next boot
    /// needs instead).
    #[arg(long)]
    pub no_crypttab: bool,

    /// Do not rebuild or check the initramfs, even when root, /usr or the resume device is on
    /// the volume group, and convert even when the initramfs tool cannot open LUKS2 (a
    /// warning instead of a refusal): building an initramfs that opens the device before the
    /// next boot is then yours.
    #[arg(long)]
    pub no_initramfs: bool,

    /// Bind the new device to the TPM2 as systemd-cryptenroll --tpm2-device does ("auto":
    /// the machine's; or a device node): a keyslot whose key the TPM2 seals against
    /// --tpm2-pcrs, in the header from the switch on, and tpm2-device=auto in /etc/crypttab,
    /// so that the machine boots, and a stopped conversion resumes, with nobody at the
    /// console. The passphrase keyslot stays, for when the TPM2 refuses (a firmware or
    /// Secure Boot change, the disk in another machine). Needs systemd-cryptenroll, and when
    /// the system boots from the volume group an initramfs that unlocks with a TPM2: dracut
    /// (with tpm2-tools) or mkinitcpio's sd-encrypt; initramfs-tools cannot, and is refused.
    #[arg(long, value_name = "PATH", value_hint = ValueHint::Other)]
    pub tpm2_device: Option<String>,

    /// The PCRs the TPM2 key is sealed against, as systemd-cryptenroll --tpm2-pcrs
    /// (default 7: the Secure Boot state).
    #[arg(long, value_name = "PCR+PCR...", requires = "tpm2_device", value_hint = ValueHint::Other)]
    pub tpm2_pcrs: Option<String>,

    /// LVM's --config, for every LVM command pvencrypt runs (in process).
    #[arg(long, value_name = "STRING", value_hint = ValueHint::Other)]
    pub config: Option<String>,

    /// LVM's --devices: LVM sees only these devices (comma-separated, or repeated); the
    /// new /dev/mapper/NAME is added once it exists. Not with --devicesfile (LVM refuses both).
    #[arg(long, value_name = "PV", value_delimiter = ',', value_hint = ValueHint::FilePath, conflicts_with = "devicesfile")]
    pub devices: Vec<String>,

    /// LVM's --devicesfile: the devices file under /etc/lvm/devices that LVM reads, and that
    /// pvencrypt updates to list /dev/mapper/NAME instead of the PV.
    #[arg(long, value_name = "NAME", value_hint = ValueHint::Other)]
    pub devicesfile: Option<String>,

    /// LVM's -A/--autobackup, for the pvmove of --make-room.
    #[arg(short = 'A', long, value_name = "y|n", value_parser = clap::builder::BoolishValueParser::new(),
          hide_possible_values = true)]
    pub autobackup: Option<bool>,

    /// Do not ask for confirmation (cryptsetup's --batch-mode).
    #[arg(short = 'y', long, alias = "batch-mode")]
    pub yes: bool,

    /// Run in the background: return once the PVs are checked and the passphrase read. Under
    /// systemd the conversion runs as the unit pvencrypt-DEV.service (journalctl -u shows
    /// its messages, systemctl status its progress), elsewhere detached, logging to syslog.
    #[arg(short = 'b', long)]
    pub background: bool,

    /// Print progress as "PV: Encrypted: N%" lines every SECONDS instead of a progress bar;
    /// 0: no progress output at all, as pvmove -i 0.
    #[arg(short = 'i', long, value_name = "SECONDS", value_hint = ValueHint::Other)]
    pub interval: Option<u32>,

    /// Stop running conversions (of the PVs given, or all) and wait until they have stopped:
    /// the chunks in flight go back to their plaintext, the last checkpoint stands. The data
    /// stays in use; running pvencrypt again resumes. Queued PVs (of `pvencrypt PV...`) are
    /// dropped from the queue.
    #[arg(long)]
    pub abort: bool,

    /// Report every running or stopped conversion: state, percent, bytes, rate, ETA; and,
    /// under the table (in the JSON: "warnings"), what must be fixed before the next reboot
    /// (the boot files' warnings), until the reboot: a finished conversion that left some is
    /// listed as finished.
    #[arg(long, conflicts_with = "abort")]
    pub status: bool,

    /// Report format for --status, as LVM's: basic (aligned columns), json (every value a
    /// string) or json_std (numbers as numbers, an unknown value null).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "basic", hide_possible_values = true, requires = "status")]
    pub reportformat: ReportFormat,

    /// Turn each PV (a LUKS2 device, or its /dev/mapper/NAME) back into the plain PV, in place,
    /// while its LVs stay in use (DECRYPT.md). Hidden until it is whole: so far it checks and
    /// plans (--test), and refuses to run (a test build with PVENCRYPT_DECRYPT_UNFINISHED=1
    /// runs it up to the switch back).
    #[arg(long, hide = true, conflicts_with_all = ["abort", "status"], requires = "pvs")]
    pub decrypt: bool,

    /// Check everything and print the plan; change nothing.
    #[arg(short = 't', long)]
    pub test: bool,

    /// More detail (freeze duration, throughput); twice: libcryptsetup's messages too.
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Print libcryptsetup's and LVM's debug messages to stderr as they come, as
    /// cryptsetup --debug: no key material; held back while the switch's freeze lasts; none
    /// once in the background (-b), whose stderr is /dev/null.
    #[arg(long)]
    pub debug: bool,

    /// Only errors.
    #[arg(short = 'q', long, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pbkdf {
    Argon2id,
    Argon2i,
    Pbkdf2,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Basic,
    Json,
    #[value(name = "json_std")]
    JsonStd,
}
