//! The pvencrypt command: parses the command line, picks the mode and runs it from the
//! library; what it adds is the front end (`Front`): the passphrase, the confirmation, -b.

use std::{
    io::{self, BufRead, IsTerminal, Write},
    process::ExitCode,
    sync::atomic::Ordering,
};

use clap::Parser;

use pvencrypt::{
    abort,
    cli::{Cli, ReportFormat},
    error::{Error, Kind, Result},
    fault,
    front::Front,
    key::{self, KeySource, Passphrase},
    luks, lvm, modes,
    options::Options,
    output,
    queue::Queue,
    report, resume,
    running::{self, Run},
    service, switch, sys,
};

fn main() -> ExitCode {
    // Key material lives in this process's memory.
    sys::no_core_dumps();
    if let Ok(watch) = std::env::var(pvencrypt::guardian::GUARD_ENV) {
        pvencrypt::guardian::guard(&watch);
    }
    // LVM's exit status for an invalid command line (clap's own is 2, a wrong passphrase
    // here as in cryptsetup); --help and --version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.exit_code() == 0 { 0 } else { Kind::Refused as u8 });
        }
    };
    fault::init();
    if cli.debug {
        fault::set_debug();
    }
    luks::capture_log();
    install_signal_handlers();
    switch::install_panic_hook();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::error(&format!("pvencrypt: {e}"));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    abort::STOP.store(true, Ordering::Relaxed);
}

/// A dropped ssh session must not stop a conversion mid-step: on SIGHUP the run goes
/// on, and its messages go to the system log from then on (output.rs).
extern "C" fn on_hangup(_: libc::c_int) {
    output::HUNG_UP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        sys::on_signal(sig, on_signal);
    }
    sys::on_signal(libc::SIGHUP, on_hangup);
}

/// What the command line asks for.
enum Mode {
    /// `--status [PV...]`
    Status(report::Format),
    /// `--abort [PV...]`
    Abort,
    /// `pvencrypt`: resume everything unfinished, then the queue.
    ResumeAll,
    /// `pvencrypt [--test] PV...`
    Convert { test: bool },
    /// `pvencrypt --decrypt [--test] PV...`
    Decrypt { test: bool },
}

impl Mode {
    fn of(cli: &Cli) -> Mode {
        if cli.status {
            Mode::Status(match cli.reportformat {
                ReportFormat::Basic => report::Format::Basic,
                ReportFormat::Json => report::Format::Json,
                ReportFormat::JsonStd => report::Format::JsonStd,
            })
        } else if cli.abort {
            Mode::Abort
        } else if cli.decrypt {
            Mode::Decrypt { test: cli.test }
        } else if cli.pvs.is_empty() {
            Mode::ResumeAll
        } else {
            Mode::Convert { test: cli.test }
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    if !sys::is_root() {
        return Err(Error::new(Kind::Refused, "pvencrypt must run as root."));
    }
    let opts = Options::from(cli);
    lvm::set_common(opts.lvm.clone());
    let front = CommandLine(cli);
    let mode = Mode::of(cli);
    // Before any repair and any question.
    if let (Some(f), Mode::ResumeAll | Mode::Convert { .. }) = (&cli.key_file, &mode) {
        key::refuse_volume_as_key(f)?;
    }
    match mode {
        Mode::Status(format) => {
            let mut known = resume::unfinished_status();
            known.extend(pvencrypt::decrypt::stopped_statuses());
            known.extend(Queue::system().statuses());
            output::out(&report::report(&running::select(running::statuses(known), &cli.pvs), format));
            Ok(())
        }
        Mode::Abort => abort::stop(&cli.pvs, cli.quiet),
        Mode::ResumeAll => modes::resume_all(&front, &opts),
        Mode::Convert { test } => modes::convert_pvs(&front, &opts, &cli.pvs, test),
        Mode::Decrypt { test } => modes::decrypt_pvs(&front, &opts, &cli.pvs, test),
    }
}

/// The front end of a command line: its key options, --yes, -b.
struct CommandLine<'a>(&'a Cli);

impl Front for CommandLine<'_> {
    /// Handed over by the caller in a -b unit, asked through systemd at boot, else from
    /// --key-file, the terminal or a pipe.
    fn passphrase(&self, prompt: &str, verify: bool) -> Result<Passphrase> {
        if service::in_unit() {
            return service::take_key();
        }
        if service::at_boot() && self.0.key_file.is_none() {
            return service::ask_password(prompt);
        }
        KeySource { file: self.0.key_file.as_deref(), size: self.0.keyfile_size, offset: self.0.keyfile_offset }
            .read(prompt, verify)
    }

    /// The plan above says where and how; the prompt keeps the one thing a remote admin
    /// must not miss.
    fn confirm(&self, moves: Option<u64>) -> Result<()> {
        // A -b unit: the caller asked.
        if self.0.yes || service::in_unit() {
            return Ok(());
        }
        if !io::stdin().is_terminal() {
            return Err(Error::new(Kind::Refused, "Not on a terminal: confirm with --yes."));
        }
        let first = match moves {
            Some(n) => format!("Move {n} extents with pvmove to make room, then encrypt in place?"),
            None => "Encrypt in place?".to_string(),
        };
        // The plan above says where and how; the prompt keeps the one thing a remote admin
        // must not miss.
        let boot = if self.0.no_crypttab {
            ""
        } else if self.0.tpm2_device.is_some() {
            " Every boot from now on unlocks it with the TPM2, and asks for the passphrase on the console when the TPM2 \
             refuses."
        } else {
            " Every boot from now on waits for the passphrase on the console (to avoid typing it on a headless server: \
             systemd-cryptenroll --tpm2-device=auto, clevis, or dropbear-initramfs; pvencrypt sets up none of them)."
        };
        let _ = write!(io::stdout(), "{first} The data stays in use throughout.{boot} [y/n]: ");
        io::stdout().flush().ok();
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer).ok();
        if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            Ok(())
        } else {
            Err(Error::new(Kind::Refused, "Not confirmed; nothing was changed."))
        }
    }

    fn detaches(&self) -> bool {
        self.0.background
    }

    /// The unit claims the devices anew: the caller's claims end first.
    fn background(&self, runs: &mut Vec<Run>, key: Option<&Passphrase>) -> Result<bool> {
        if !self.0.background {
            return Ok(false);
        }
        if service::in_unit() {
            runs.iter_mut().for_each(Run::adopt);
            service::notify("READY=1");
            return Ok(false);
        }
        if service::systemd_booted() {
            let devs: Vec<String> = runs.iter().map(|r| r.dev().to_string()).collect();
            let pvs: Vec<String> = runs.drain(..).map(|r| r.pv().to_string()).collect();
            let Some(key) = key else { unreachable!("the side of -b that hands over asks for the passphrase") };
            let unit = service::spawn(&devs, key)?;
            for pv in pvs {
                output::out(&format!(
                    "{pv}: converting in the background as {unit}; journalctl -u {unit} shows its messages, pvencrypt --status its progress."
                ));
            }
            return Ok(true);
        }
        if output::detach()? {
            for r in runs.drain(..) {
                output::out(&format!(
                    "{}: converting in the background; progress goes to the system log, pvencrypt --status shows it.",
                    r.pv()
                ));
                r.hand_over();
            }
            return Ok(true);
        }
        runs.iter_mut().for_each(Run::adopt);
        Ok(false)
    }

    fn key_file(&self) -> bool {
        self.0.key_file.is_some()
    }

    fn args(&self) -> Vec<String> {
        std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect()
    }
}
