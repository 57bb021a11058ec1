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
    key::{self, KeySource, Passphrase},
    luks,
    options::Options,
    poll,
    poll::Run,
    preflight,
    queue::{self, Queue, Queued},
    resume, service, switch, sys,
};

fn main() -> ExitCode {
    // Key material lives in this process's memory.
    sys::no_core_dumps();
    if let Ok(watch) = std::env::var(pvencrypt::guardian::GUARD_ENV) {
        pvencrypt::guardian::guard(&watch);
    }
    let cli = Cli::parse();
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
        let mut known = resume::unfinished_status();
        known.extend(Queue::system().statuses());
        let all = poll::select(poll::statuses(known), &cli.pvs);
        poll::out(&poll::report(&all, cli.reportformat == ReportFormat::Json));
        return Ok(());
    }
    if cli.abort {
        return abort(cli);
    }
    // Before resume_all's repairs and any question.
    if let Some(f) = &cli.key_file {
        key::refuse_volume_as_key(f)?;
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
    let mut runs = targets.iter().map(|t| Run::claim(&t.path, t.name.as_str())).collect::<Result<Vec<_>>>()?;
    let moves: u64 = targets.iter().filter_map(|t| t.make_room.as_ref()).map(|m| m.moved()).sum();
    confirm(cli, (moves > 0 && !cli.make_room).then_some(moves))?;
    let key = read_key(cli, "Enter passphrase for the new LUKS2 device: ", true)?;
    let queue = Queue::system();
    if targets.len() > 1 {
        let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
        let items: Vec<Queued> =
            targets.iter().map(|t| Queued { pv: t.path.clone(), pv_uuid: t.pv.pv_uuid.clone(), args: args.clone() }).collect();
        queue.add(&items)?;
    }
    if background(cli, &mut runs, &key)? {
        return Ok(());
    }
    let targets: Vec<_> = targets.into_iter().map(|t| (opts.clone(), t)).collect();
    convert_all(&targets, &key, &mut runs)
}

/// A PV to convert, with the options to convert it with.
type Planned = (Options, preflight::Target);

/// Converts `targets` in turn, each with its options, each leaving the queue once done.
fn convert_all(targets: &[Planned], key: &Passphrase, runs: &mut [Run]) -> Result<()> {
    let queue = Queue::system();
    for ((opts, t), run) in targets.iter().zip(runs) {
        stop_point()?;
        let fresh;
        let t = match &t.make_room {
            Some(m) => {
                convert::make_room(opts, t, m)?;
                // The LVs' extents moved: everything is checked again.
                fresh = preflight::preflight(opts, &t.path)?;
                if fresh.make_room.is_some() {
                    return Err(Error::new(
                        Kind::Failed,
                        format!(
                            "{}: still no room after pvmove and pvresize: the PV ends at sector {}, the room starts at {}.",
                            t.path.display(),
                            fresh.room.pv_end.0,
                            fresh.room.limit.0
                        ),
                    ));
                }
                &fresh
            }
            None => t,
        };
        convert::convert(opts, t, key, run)?;
        if let Err(e) = queue.remove(&t.pv.pv_uuid) {
            poll::error(&format!("pvencrypt: WARNING: {e}"));
        }
        if !opts.quiet {
            let on = if t.vg.is_some() { "the volume group runs on" } else { "the PV (in no VG yet) is" };
            poll::info(&format!("{}: encrypted; {on} /dev/mapper/{}.", t.path.display(), t.name));
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
    // Queued PVs first: a stopped run must not be followed by the next in its queue.
    // Those started already are stopped below; the others never started.
    let dropped: Vec<_> = Queue::system().drop_pvs(&cli.pvs)?.into_iter().filter_map(|q| queue::find(&q)).collect();
    let mut running = cli.pvs.clone();
    running.retain(|p| !dropped.iter().any(|d| poll::same_device(d, p)));
    let stopped = if cli.pvs.is_empty() || !running.is_empty() {
        poll::abort(&running, std::time::Duration::from_secs(600))?
    } else {
        vec![]
    };
    if !cli.quiet {
        for d in &dropped {
            poll::out(&format!("{}: dropped from the queue; nothing was changed on it.", d.display()));
        }
        if stopped.is_empty() && dropped.is_empty() {
            poll::out("No conversion is running.");
        }
    }
    // A PV of `pvencrypt A B` not started yet was claimed too: said as dropped above.
    for s in stopped.into_iter().filter(|s| !dropped.iter().any(|d| poll::same_device(d, std::path::Path::new(&s.pv)))) {
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
    let first = match moves {
        Some(n) => format!("Move {n} extents with pvmove to make room, then encrypt in place?"),
        None => "Encrypt in place?".to_string(),
    };
    // The plan above says where and how; the prompt keeps the one thing a remote admin
    // must not miss.
    let boot = if cli.no_crypttab {
        ""
    } else if cli.tpm2_device.is_some() {
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
    let (queued, queued_runs, refused) = queued_targets(&opts)?;
    if todo.is_empty() && queued.is_empty() {
        if !restored.is_empty() {
            let pvs: Vec<String> = restored.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::new(
                Kind::Interrupted,
                format!("Plain PVs put back: {}; run pvencrypt on them again.", pvs.join(" ")),
            ));
        }
        if !cli.quiet && refused == 0 {
            poll::out("No conversion to resume.");
        }
        return queue_refusals(refused);
    }
    // One passphrase for all, as one typed at boot: checked on each device before -b
    // leaves the terminal; a device it does not open is left for `pvencrypt PV`.
    let pvs: Vec<String> = todo.iter().map(|(p, _)| p.display().to_string()).collect();
    let key = if pvs.is_empty() {
        read_key(cli, "Enter passphrase for the queued LUKS2 devices: ", true)?
    } else {
        read_key(cli, &format!("Enter passphrase for {}: ", pvs.join(", ")), false)?
    };
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
    let resumed_n = todo.len();
    runs.extend(queued_runs);
    if (todo.is_empty() && queued.is_empty()) || background(cli, &mut runs, &key)? {
        return other_key().and(queue_refusals(refused));
    }
    let (resumed, queued_runs) = runs.split_at_mut(resumed_n);
    for ((path, state), run) in todo.into_iter().zip(resumed) {
        stop_point()?;
        poll::clear_abort(&path);
        let name = resume::resume(&opts, &path, state, &key, run)?;
        if !cli.quiet {
            poll::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{name}.", path.display()));
        }
    }
    // `pvencrypt A B C` gave B and C the passphrase of A.
    convert_all(&queued, &key, queued_runs)?;
    other_key().and(queue_refusals(refused))
}

/// The queued PVs that are still to convert, checked as a new conversion is, with the
/// options they were queued with, and claimed; and how many of them preflight refused
/// (they stay queued, said why). One converted meanwhile, or gone, leaves the queue;
/// one claimed by a running `pvencrypt A B` is left to it.
fn queued_targets(now: &Options) -> Result<(Vec<Planned>, Vec<Run>, usize)> {
    let queue = Queue::system();
    let (mut out, mut runs, mut refused) = (Vec::new(), Vec::new(), 0);
    for q in queue.load() {
        let Some(path) = queue::find(&q) else {
            // Converted since, or being converted (resumed above): done with it.
            if inspect::inspect(&q.pv) == State::Other {
                poll::error(&format!("pvencrypt: {} no longer holds PV {}; dropped from the queue.", q.pv.display(), q.pv_uuid));
            }
            let _ = queue.remove(&q.pv_uuid);
            continue;
        };
        match q.options(now).and_then(|o| preflight::preflight(&o, &path).map(|t| (o, t))) {
            Ok(t) => match Run::claim(&t.1.path, t.1.name.as_str()) {
                Ok(run) => {
                    out.push(t);
                    runs.push(run);
                }
                Err(e) if e.kind == Kind::Refused => poll::error(&format!("pvencrypt: {e}")),
                Err(e) => return Err(e),
            },
            Err(e) => {
                poll::error(&format!("pvencrypt: queued {}: {e}", path.display()));
                refused += 1;
            }
        }
    }
    Ok((out, runs, refused))
}

fn queue_refusals(refused: usize) -> Result<()> {
    match refused {
        0 => Ok(()),
        n => {
            Err(Error::new(Kind::Refused, format!("{n} queued PV(s) refused; they stay queued (pvencrypt --abort drops them).")))
        }
    }
}
