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
    key::Passphrase,
    luks,
    options::Options,
    poll,
    poll::Run,
    preflight, resume, service, switch, sys,
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

/// The passphrase: handed over by the caller in a -b unit, asked through systemd at boot,
/// else from --key-file, the terminal or a pipe.
fn read_key(cli: &Cli, prompt: &str, verify: bool) -> Result<Passphrase> {
    if service::in_unit() {
        return service::take_key();
    }
    if service::at_boot() && cli.key_file.is_none() {
        return service::ask_password(prompt);
    }
    KeySource { file: cli.key_file.as_deref(), size: cli.keyfile_size, offset: cli.keyfile_offset }.read(prompt, verify)
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
    let key = read_key(cli, "Enter passphrase for the new LUKS2 device: ", true)?;
    if background(cli, &mut runs, &key)? {
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

/// `-b`: true in the caller, which returns at once; the unit (with systemd) or the forked
/// child carries on. The unit claims the devices anew: the caller's claims end first.
fn background(cli: &Cli, runs: &mut Vec<Run>, key: &Passphrase) -> Result<bool> {
    if !cli.background {
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
        let unit = service::spawn(&devs, key)?;
        for pv in pvs {
            poll::out(&format!(
                "{pv}: converting in the background as {unit}; journalctl -u {unit} shows its messages, pvencrypt --status its progress."
            ));
        }
        return Ok(true);
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
    // A -b unit: the caller asked.
    if cli.yes || service::in_unit() {
        return Ok(());
    }
    if !io::stdin().is_terminal() {
        return Err(Error::new(Kind::Refused, "Not on a terminal: confirm with --yes."));
    }
    match moves {
        Some(n) => {
            let _ = write!(
                io::stdout(),
                "Move {n} extents with pvmove to make room, then encrypt in place? The data stays in use throughout. [y/n]: "
            );
        }
        None => {
            let _ = write!(io::stdout(), "Encrypt in place? The data stays in use throughout. [y/n]: ");
        }
    }
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
    let key = read_key(cli, &format!("Enter passphrase for {}: ", path.display()), false)?;
    if background(cli, &mut runs, &key)? {
        return Ok(());
    }
    poll::clear_abort(path);
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
        if service::at_boot() && poll::is_aborted(&path) {
            poll::info(&format!("{}: stopped with --abort; left so until pvencrypt is run by hand.", path.display()));
            continue;
        }
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
    // One passphrase for all, as one typed at boot: checked on each device before -b
    // leaves the terminal; a device it does not open is left for `pvencrypt PV`.
    let pvs: Vec<String> = todo.iter().map(|(p, _)| p.display().to_string()).collect();
    let key = read_key(cli, &format!("Enter passphrase for {}: ", pvs.join(", ")), false)?;
    let mut other_key = Vec::new();
    let mut i = 0;
    while i < todo.len() {
        match luks::open(&todo[i].0).and_then(|mut cd| luks::check_key(&mut cd, &key)) {
            Err(e) if e.kind == Kind::Key => {
                poll::error(&format!("pvencrypt: {}: {e}", todo[i].0.display()));
                other_key.push(todo.remove(i).0.display().to_string());
                runs.remove(i);
            }
            _ => i += 1,
        }
    }
    let other_key = || -> Result<()> {
        if other_key.is_empty() {
            return Ok(());
        }
        let others = other_key.join(" ");
        Err(Error::new(Kind::Key, format!("The passphrase opens no keyslot of {others}: resume each with pvencrypt PV.")))
    };
    if todo.is_empty() || background(cli, &mut runs, &key)? {
        return other_key();
    }
    for ((path, state), run) in todo.into_iter().zip(&mut runs) {
        stop_point()?;
        poll::clear_abort(&path);
        let name = resume::resume(&opts, &path, state, &key, run)?;
        if !cli.quiet {
            poll::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{name}.", path.display()));
        }
    }
    other_key()
}
