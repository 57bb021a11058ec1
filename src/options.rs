//! What the conversion needs to know of the command line: built once by main.rs from
//! `cli::Cli`, so that library code never depends on the parser (the key source, the
//! PV list and the mode flags stay in main.rs).

use crate::cli::{Cli, Pbkdf};

#[derive(Debug, Clone)]
pub struct Options {
    /// The name of the dm-crypt device; `None`: `<device>_crypt`.
    pub name: Option<String>,
    pub cipher: String,
    /// Bits.
    pub key_size: u32,
    /// `None`: the device's logical block size.
    pub sector_size: Option<u32>,
    pub label: Option<String>,
    /// The LUKS2 UUID; `None`: a new random one.
    pub uuid: Option<String>,
    pub pbkdf: Option<Pbkdf>,
    pub pbkdf_memory: Option<u32>,
    pub pbkdf_parallel: Option<u32>,
    pub pbkdf_force_iterations: Option<u32>,
    pub iter_time: Option<u32>,
    /// Bytes: twice the data shift.
    pub reduce_device_size: u64,
    pub make_room: bool,
    pub no_crypttab: bool,
    pub no_initramfs: bool,
    /// `--tpm2-device`, and the PCRs to seal against.
    pub tpm2: Option<(String, String)>,
    /// LVM's common options (--config, --devices, --devicesfile).
    pub lvm: crate::lvm::Common,
    /// LVM's --autobackup for --make-room's pvmove.
    pub autobackup: Option<bool>,
    /// Nothing is asked on the terminal.
    pub yes: bool,
    /// Progress lines every this many seconds instead of a bar.
    pub interval: Option<u32>,
    pub verbose: u8,
    pub quiet: bool,
}

impl Options {
    /// The options of a command line's arguments (without the program name): a queued
    /// PV's, recorded as typed.
    pub fn from_args(args: &[String]) -> Result<Options, clap::Error> {
        let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("pvencrypt".to_string()).chain(args.iter().cloned()))?;
        Ok(Options::from(&cli))
    }
}

impl From<&Cli> for Options {
    fn from(c: &Cli) -> Options {
        Options {
            name: c.name.clone(),
            cipher: c.cipher.clone(),
            key_size: c.key_size,
            sector_size: c.sector_size,
            label: c.label.clone(),
            uuid: c.uuid.clone(),
            pbkdf: c.pbkdf,
            pbkdf_memory: c.pbkdf_memory,
            pbkdf_parallel: c.pbkdf_parallel,
            pbkdf_force_iterations: c.pbkdf_force_iterations,
            iter_time: c.iter_time,
            reduce_device_size: c.reduce_device_size,
            make_room: c.make_room,
            no_crypttab: c.no_crypttab,
            no_initramfs: c.no_initramfs,
            tpm2: c
                .tpm2_device
                .clone()
                .map(|d| (d, c.tpm2_pcrs.clone().unwrap_or_else(|| crate::boot::tpm2::DEFAULT_PCRS.into()))),
            lvm: crate::lvm::Common { config: c.config.clone(), devices: c.devices.clone(), devicesfile: c.devicesfile.clone() },
            autobackup: c.autobackup,
            yes: c.yes,
            interval: c.interval,
            verbose: c.verbose,
            quiet: c.quiet,
        }
    }
}
