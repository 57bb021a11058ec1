//! The pvencrypt command: parses the command line and dispatches to the library.

use std::{
    io::{self, BufRead, IsTerminal, Write},
    process::ExitCode,
    sync::atomic::Ordering,
};

use clap::Parser;

use pvencrypt::{
    cli::{Cli, ReportFormat},
    convert,
    error::{Error, Kind, Result},
    fault, inspect,
    inspect::State,
    key::KeySource,
    luks,
    options::Options,
    poll,
    poll::Run,
    preflight, resume, switch, sys,
};

fn main() -> ExitCode {
    // Key material lives in this process's memory.
    sys::no_core_dumps();
    if let Ok(name) = std::env::var(pvencrypt::mover::GUARD_ENV) {
        pvencrypt::mover::guard(&name);
    }
    let cli = Cli::parse();
    fault::init();
    luks::capture_log();
    install_signal_handlers();
    switch::install_panic_hook();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            poll::error(&format!("pvencrypt: {e}"));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    convert::STOP.store(true, Ordering::Relaxed);
}

/// A dropped ssh session must not stop a conversion mid-step: on SIGHUP the run goes
/// on, and its messages go to the system log from then on (poll.rs).
extern "C" fn on_hangup(_: libc::c_int) {
    poll::HUNG_UP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        sys::on_signal(sig, on_signal);
    }
    sys::on_signal(libc::SIGHUP, on_hangup);
}

fn key_source(cli: &Cli) -> KeySource<'_> {
    KeySource { file: cli.key_file.as_deref(), size: cli.keyfile_size, offset: cli.keyfile_offset }
}

fn run(cli: &Cli) -> Result<()> {
    let opts = Options::from(cli);
    if !sys::is_root() {
        return Err(Error::new(Kind::Refused, "pvencrypt must run as root."));
    }
    if cli.status {
        let all = poll::select(poll::statuses(resume::unfinished_status()), &cli.pvs);
        poll::out(&poll::report(&all, cli.reportformat == ReportFormat::Json));
        return Ok(());
    }
    if cli.abort {
        return abort(cli);
    }
    if cli.pvs.is_empty() {
        return resume_all(cli);
    }

    // Every PV is checked before anything is asked or changed.
    let mut targets = Vec::new();
    for path in &cli.pvs {
        // --test never resumes or repairs: preflight then says what the device holds.
        let state = if cli.test { State::Other } else { inspect::inspect(path) };
        if state.is_ours() {
            if cli.pvs.len() > 1 {
                return Err(Error::new(Kind::Refused, format!("{} is already LUKS: resume it on its own.", path.display())));
            }
            return resume_one(cli, path, state);
        }
        targets.push(preflight::preflight(&opts, path)?);
    }
    if cli.pvs.len() > 1 && cli.name.is_some() {
        return Err(Error::new(Kind::Refused, "--name applies to one PV only."));
    }
    for t in &targets {
        if !cli.quiet || cli.test {
            poll::out(&preflight::describe(&opts, t));
        }
    }
    if cli.test {
        poll::out("Test mode: nothing was changed.");
        return Ok(());
    }
    let mut runs = targets.iter().map(|t| Run::claim(&t.path, &t.name)).collect::<Result<Vec<_>>>()?;
    let moves: u64 = targets.iter().filter_map(|t| t.make_room.as_ref()).map(|m| m.moved()).sum();
    confirm(cli, (moves > 0 && !cli.make_room).then_some(moves))?;
    let key = key_source(cli).read("Enter passphrase for the new LUKS2 device: ", true)?;
    if background(cli, &mut runs)? {
        return Ok(());
    }
    for (t, run) in targets.iter().zip(&mut runs) {
        stop_point()?;
        let fresh;
        let t = match &t.make_room {
            Some(m) => {
                convert::make_room(&opts, t, m)?;
                // The LVs' extents moved: everything is checked again.
                fresh = preflight::preflight(&opts, &t.path)?;
                if fresh.make_room.is_some() {
                    return Err(Error::new(
                        Kind::Failed,
                        format!(
                            "{}: still no room after pvmove and pvresize: the PV ends at sector {}, the room starts at {}.",
                            t.path.display(),
                            fresh.room.pv_end,
                            fresh.room.limit
                        ),
                    ));
                }
                &fresh
            }
            None => t,
        };
        convert::convert(&opts, t, &key, run)?;
        if !cli.quiet {
            poll::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{}.", t.path.display(), t.name));
        }
    }
    Ok(())
}

/// `-b`: true in the parent, which returns at once; the child carries on, and its claims
/// with it.
fn background(cli: &Cli, runs: &mut Vec<Run>) -> Result<bool> {
    if !cli.background {
        return Ok(false);
    }
    if poll::detach()? {
        for r in runs.drain(..) {
            poll::out(&format!(
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

/// Between devices, a stop request ends the run before the next one starts.
fn stop_point() -> Result<()> {
    if convert::STOP.load(Ordering::Relaxed) {
        return Err(Error::new(Kind::Interrupted, "Stopped on request before the next device; run pvencrypt again to go on."));
    }
    Ok(())
}

fn abort(cli: &Cli) -> Result<()> {
    let stopped = poll::abort(&cli.pvs, std::time::Duration::from_secs(600))?;
    if stopped.is_empty() && !cli.quiet {
        poll::out("No conversion is running.");
    }
    for s in stopped {
        if !cli.quiet {
            poll::out(&format!("{}: stopped; the data stays in use on /dev/mapper/{}. Run pvencrypt to resume.", s.pv, s.name));
        }
    }
    Ok(())
}

/// `moves`: extents to be moved to make room that --make-room did not ask for.
fn confirm(cli: &Cli, moves: Option<u64>) -> Result<()> {
    if cli.yes {
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
    let boot = if cli.no_crypttab {
        ""
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

/// `pvencrypt PV` on a device that holds a conversion of ours.
fn resume_one(cli: &Cli, path: &std::path::Path, state: State) -> Result<()> {
    let opts = Options::from(cli);
    let mut runs = vec![Run::claim(path, state.name())?];
    let key = key_source(cli).read(&format!("Enter passphrase for {}: ", path.display()), false)?;
    if background(cli, &mut runs)? {
        return Ok(());
    }
    let name = resume::resume(&opts, path, state, &key, &mut runs[0])?;
    if !cli.quiet {
        poll::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{name}.", path.display()));
    }
    Ok(())
}

fn resume_all(cli: &Cli) -> Result<()> {
    let opts = Options::from(cli);
    // One already being worked on by another process is left to it.
    let mut todo = Vec::new();
    let mut runs = Vec::new();
    let mut restored = Vec::new();
    for (path, state) in resume::unfinished() {
        let run = match Run::claim(&path, state.name()) {
            Ok(r) => r,
            Err(e) if e.kind == Kind::Refused => {
                poll::error(&format!("pvencrypt: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        // Torn switches are made whole before any passphrase is asked: one may just be
        // the plain PV again.
        let state = match state {
            State::TornSwitch(_) | State::TornHeader => match resume::repair(&path, &state)? {
                Some(_) => inspect::inspect(&path),
                None => {
                    restored.push(path);
                    continue;
                }
            },
            s => s,
        };
        runs.push(run);
        todo.push((path, state));
    }
    if todo.is_empty() {
        if !restored.is_empty() {
            let pvs: Vec<String> = restored.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::new(
                Kind::Interrupted,
                format!("Plain PVs put back: {}; run pvencrypt on them again.", pvs.join(" ")),
            ));
        }
        if !cli.quiet {
            poll::out("No conversion to resume.");
        }
        return Ok(());
    }
    // Keys first, all of them, so that -b can leave the terminal before the work starts.
    let mut keys = Vec::new();
    for (path, _) in &todo {
        keys.push(key_source(cli).read(&format!("Enter passphrase for {}: ", path.display()), false)?);
    }
    if background(cli, &mut runs)? {
        return Ok(());
    }
    for (((path, state), key), run) in todo.into_iter().zip(&keys).zip(&mut runs) {
        stop_point()?;
        let name = resume::resume(&opts, &path, state, key, run)?;
        if !cli.quiet {
            poll::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{name}.", path.display()));
        }
    }
    Ok(())
}
