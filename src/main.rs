mod boot;
mod cli;
mod convert;
mod direct;
mod dm;
mod error;
mod fault;
mod inspect;
mod kernel_cipher;
mod key;
mod luks;
#[allow(dead_code)] // report fields and helpers the host tests use (tests/lvm_loop.rs)
mod lvm;
mod plan;
mod poll;
mod progress;
mod switch;

use std::{
    io::{self, BufRead, IsTerminal, Write},
    process::ExitCode,
    sync::atomic::Ordering,
};

use clap::Parser;

use crate::{
    cli::{Cli, ReportFormat},
    error::{Error, Kind, Result},
    key::KeySource,
    poll::Run,
};

fn main() -> ExitCode {
    no_core_dumps();
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
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGHUP, on_hangup as *const () as libc::sighandler_t) };
}

/// Key material lives in this process's memory: no core file may carry it away, and
/// no unprivileged process may read it through /proc or ptrace.
fn no_core_dumps() {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on this process.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
}

fn key_source(cli: &Cli) -> KeySource<'_> {
    KeySource { file: cli.key_file.as_deref(), size: cli.keyfile_size, offset: cli.keyfile_offset }
}

fn run(cli: &Cli) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::new(Kind::Refused, "pvencrypt must run as root."));
    }
    if cli.status {
        let all = poll::select(poll::statuses(convert::unfinished_status()), &cli.pvs);
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
        if !cli.test && convert::found(path) != inspect::Found::Other {
            if cli.pvs.len() > 1 {
                return Err(Error::new(Kind::Refused, format!("{} is already LUKS: resume it on its own.", path.display())));
            }
            return resume_one(cli, path);
        }
        targets.push(convert::preflight(cli, path)?);
    }
    if cli.pvs.len() > 1 && cli.name.is_some() {
        return Err(Error::new(Kind::Refused, "--name applies to one PV only."));
    }
    for t in &targets {
        if !cli.quiet || cli.test {
            poll::out(&convert::describe(cli, t));
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
                convert::make_room(cli, t, m)?;
                // The LVs' extents moved: everything is checked again.
                fresh = convert::preflight(cli, &t.path)?;
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
        convert::convert(cli, t, &key, run)?;
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
            poll::out(&format!("{}: converting in the background; progress goes to the system log, pvencrypt --status shows it.", r.pv()));
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
    match moves {
        Some(n) => { let _ = write!(io::stdout(), "Move {n} extents with pvmove to make room, then encrypt in place? The data stays in use throughout. [y/n]: "); }
        None => { let _ = write!(io::stdout(), "Encrypt in place? The data stays in use throughout. [y/n]: "); }
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

fn resume_one(cli: &Cli, path: &std::path::Path) -> Result<()> {
    let found = convert::found(path);
    let m = if found == inspect::Found::Luks {
        let mut cd = luks::open(path)?;
        let Some((_, m)) = luks::marker(&mut cd) else {
            return Err(Error::new(Kind::Refused, format!("{} is already a LUKS device.", path.display())));
        };
        m
    } else {
        let _claim = Run::claim(path, "")?;
        match convert::repair(path, &found)? {
            Some(m) => m,
            None => return Err(Error::new(Kind::Interrupted, format!("{}: run pvencrypt {} to convert it.", path.display(), path.display()))),
        }
    };
    let mut runs = vec![Run::claim(path, &m.name)?];
    let key = key_source(cli).read(&format!("Enter passphrase for {}: ", path.display()), false)?;
    if background(cli, &mut runs)? {
        return Ok(());
    }
    convert::resume(cli, path, &m, &key, &mut runs[0])?;
    if !cli.quiet {
        poll::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{}.", path.display(), m.name));
    }
    Ok(())
}

fn resume_all(cli: &Cli) -> Result<()> {
    // One already being worked on by another process is left to it.
    let mut todo = Vec::new();
    let mut runs = Vec::new();
    let mut restored = Vec::new();
    for (path, u) in convert::unfinished() {
        let name = match &u {
            convert::Unfinished::Luks(m) => m.name.clone(),
            convert::Unfinished::Torn(_) => String::new(),
        };
        let run = match Run::claim(&path, &name) {
            Ok(r) => r,
            Err(e) if e.kind == Kind::Refused => {
                poll::error(&format!("pvencrypt: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let m = match u {
            convert::Unfinished::Luks(m) => m,
            convert::Unfinished::Torn(found) => match convert::repair(&path, &found)? {
                Some(m) => m,
                None => {
                    restored.push(path);
                    continue;
                }
            },
        };
        runs.push(run);
        todo.push((path, m));
    }
    if todo.is_empty() {
        if !restored.is_empty() {
            let pvs: Vec<String> = restored.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::new(Kind::Interrupted, format!("Plain PVs put back: {}; run pvencrypt on them again.", pvs.join(" "))));
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
    for (((path, m), key), run) in todo.iter().zip(&keys).zip(&mut runs) {
        stop_point()?;
        convert::resume(cli, path, m, key, run)?;
        if !cli.quiet {
            poll::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{}.", path.display(), m.name));
        }
    }
    Ok(())
}
