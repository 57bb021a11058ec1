//! The modes of the pvencrypt command as the library runs them: `pvencrypt PV...`
//! (`convert_pvs`: every PV checked, then converted in turn; one already ours resumed),
//! `pvencrypt PV` on a conversion of ours (`resume_one`), and `pvencrypt` alone
//! (`resume_all`: every unfinished conversion, then the queue). main.rs picks the mode and
//! is their front end (front.rs); `--abort` is abort.rs's `stop`, `--status` report.rs.
//!
//! Exit 3 promises the disk unchanged: from a mode's first write on (a repair, a resume,
//! a pvmove making room, a PV converted before), `after` turns a refusal into a failure.

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use crate::{
    abort, convert,
    error::{Error, Kind, Result, Written},
    front::Front,
    inspect::{self, State},
    key::Passphrase,
    luks,
    options::Options,
    output, preflight,
    queue::{self, Queue, Queued},
    resume,
    running::Run,
    service,
};

/// `pvencrypt PV...`: every PV checked before anything is asked or changed (`test`: only
/// that, and the plan printed), then converted in turn; one that holds a conversion of
/// ours is resumed instead (alone).
pub fn convert_pvs(front: &dyn Front, opts: &Options, pvs: &[PathBuf], test: bool) -> Result<()> {
    std::thread::scope(|s| {
        // Every PV is checked before anything is asked or changed.
        let mut targets = Vec::new();
        let mut early = None;
        for (i, path) in pvs.iter().enumerate() {
            // --test never resumes or repairs: preflight then says what the device holds.
            let state = if test { State::Other } else { inspect::inspect(path) };
            if state.is_ours() {
                if pvs.len() > 1 {
                    return Err(Error::new(Kind::Refused, format!("{} is already LUKS: resume it on its own.", path.display())));
                }
                warn_ignored(opts, path);
                return resume_one(front, opts, path, state);
            }
            // The first header is formatted in memory while preflight reads LVM and the
            // passphrase is typed: none of it needs either.
            if !test && i == 0 {
                early = crate::sys::spawn_scoped_unsignalled(s, "pvencrypt-format", || convert::format_ahead(opts, path)).ok();
            }
            targets.push(preflight::preflight(opts, path)?);
        }
        convert_targets(front, opts, targets, test, early)
    })
}

/// `pvencrypt --decrypt PV...`: every PV checked (`decrypt::preflight`), the plan printed.
/// The run is written up to its data phase (DECRYPT.md's steps 5 and 6): without --test it
/// refuses, but in a test build with PVENCRYPT_DECRYPT_UNFINISHED=1 (the VM tests of those
/// steps), which stops before the switch back.
pub fn decrypt_pvs(front: &dyn Front, opts: &Options, pvs: &[PathBuf], test: bool) -> Result<()> {
    let targets = pvs.iter().map(|p| crate::decrypt::preflight(opts, p)).collect::<Result<Vec<_>>>()?;
    for t in &targets {
        if !opts.quiet || test {
            output::out(&crate::decrypt::describe(t));
        }
    }
    if test {
        output::out("Test mode: nothing was changed.");
        return Ok(());
    }
    let unfinished = cfg!(feature = "fault-injection") && std::env::var_os("PVENCRYPT_DECRYPT_UNFINISHED").is_some();
    if !unfinished {
        return Err(Error::new(
            Kind::Refused,
            "--decrypt only checks and plans so far (--test): decrypting is not written yet. Nothing was changed.",
        ));
    }
    for t in &targets {
        // Before anything is written: one pvencrypt per device.
        let mut run = crate::running::Run::claim_decryption(&t.path, t.name.as_str())?;
        let key = match t.needs_passphrase() {
            true => Some(front.passphrase(&format!("Enter passphrase for {}: ", t.path.display()), false)?),
            false => None,
        };
        let done = crate::decrypt::run(t, key.as_ref(), opts, &mut run);
        for m in crate::luks::take_log(opts.verbose > 1) {
            output::error(&format!("  {m}"));
        }
        let done = done?;
        if let Some(took) = done.first_move {
            output::info(&format!(
                "{}: the first {} MiB moved to the head under a suspension of {} of {:.1} ms; the header is at the tail.",
                t.path.display(),
                t.data_offset.mib(),
                t.name,
                took.as_secs_f64() * 1000.0
            ));
        }
        if !done.finished {
            return Err(Error::new(Kind::Interrupted, format!("{}: the decryption was stopped.", t.path.display())));
        }
        if let Some(took) = done.switch_back {
            output::info(&format!(
                "{}: the LVs moved back onto it under a suspension of {:.1} ms; /dev/mapper/{} is gone.",
                t.path.display(),
                took.as_secs_f64() * 1000.0,
                t.name
            ));
        }
        for w in &done.warnings {
            output::error(&format!("WARNING: {}: {w}", t.path.display()));
        }
        output::info(&format!(
            "{}: decrypted ({:.1} s of data phase); it holds the plain PV. It may grow by {} MiB: pvresize {0}.",
            t.path.display(),
            done.data.as_secs_f64(),
            (t.size - t.span).mib()
        ));
    }
    Ok(())
}

/// The rest of `convert_pvs`, once every PV passed preflight.
fn convert_targets(
    front: &dyn Front,
    opts: &Options,
    targets: Vec<preflight::Target>,
    test: bool,
    early: Option<std::thread::ScopedJoinHandle<'_, Result<luks::Formatted>>>,
) -> Result<()> {
    if targets.len() > 1 && opts.name.is_some() {
        return Err(Error::new(Kind::Refused, "--name applies to one PV only."));
    }
    if targets.len() > 1 && opts.uuid.is_some() {
        return Err(Error::new(Kind::Refused, "--uuid applies to one PV only."));
    }
    for t in &targets {
        if !opts.quiet || test {
            output::out(&preflight::describe(opts, t));
        }
    }
    if test {
        output::out("Test mode: nothing was changed.");
        return Ok(());
    }
    let mut runs = targets.iter().map(|t| Run::claim(&t.path, t.name.as_str())).collect::<Result<Vec<_>>>()?;
    let moves: u64 = targets.iter().filter_map(|t| t.make_room.as_ref()).map(|m| m.moved()).sum();
    front.confirm((moves > 0 && !opts.make_room).then_some(moves))?;
    let key = front.passphrase("Enter passphrase for the new LUKS2 device: ", true)?;
    crate::fault::trace("passphrase");
    // One that failed is formatted again, and its error reported, by the conversion. (A -b
    // run that hands over to a unit formats again there.)
    let early = early.and_then(|t| t.join().ok()).and_then(Result::ok);
    let queue = Queue::system();
    if targets.len() > 1 {
        let args = front.args();
        let items: Vec<Queued> =
            targets.iter().map(|t| Queued { pv: t.path.clone(), pv_uuid: t.pv.pv_uuid.clone(), args: args.clone() }).collect();
        queue.add(&items)?;
    }
    if front.background(&mut runs, Some(&key))? {
        return Ok(());
    }
    let targets: Vec<_> = targets.into_iter().map(|t| (opts.clone(), t)).collect();
    convert_all(&targets, early, &key, &mut runs, false)
}

/// The header was made by the run that started the conversion: the format options of a
/// new one do not apply to its resume, and are said to be ignored.
fn warn_ignored(opts: &Options, path: &Path) {
    let given: Vec<&str> = [
        (opts.tpm2.is_some(), "--tpm2-device"),
        (opts.uuid.is_some(), "--uuid"),
        (opts.label.is_some(), "--label"),
        (opts.sector_size.is_some(), "--sector-size"),
        (opts.name.is_some(), "--name"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if !given.is_empty() {
        output::error(&format!(
            "pvencrypt: WARNING: {}: resuming the conversion it holds; {} appl{} to a new conversion only, ignored.",
            path.display(),
            given.join(", "),
            if given.len() == 1 { "ies" } else { "y" }
        ));
    }
}

/// A PV to convert, with the options to convert it with.
type Planned = (Options, preflight::Target);

/// From the command's first write on (a pvmove making room, a PV converted or resumed
/// before), no error is a refusal: exit 3 would claim the disk unchanged.
fn after(written: bool, e: Error) -> Error {
    if written {
        Error::from(Written::from(e))
    } else {
        e
    }
}

/// Converts `targets` in turn, each with its options, each leaving the queue once done.
/// `written`: the command wrote to a disk before (a resume).
/// `early`: the first target's header, formatted ahead.
fn convert_all(
    targets: &[Planned],
    mut early: Option<luks::Formatted>,
    key: &Passphrase,
    runs: &mut [Run],
    mut written: bool,
) -> Result<()> {
    let queue = Queue::system();
    for ((opts, t), run) in targets.iter().zip(runs) {
        stop_point().map_err(|e| after(written, e))?;
        let fresh;
        let t = match &t.make_room {
            Some(m) => {
                written = true;
                convert::make_room(opts, t, m)?;
                // The LVs' extents moved: everything is checked again.
                fresh = preflight::preflight(opts, &t.path).map_err(|e| after(written, e))?;
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
        convert::convert(opts, t, early.take(), key, run).map_err(|e| after(written, e))?;
        written = true;
        if let Err(e) = queue.remove(&t.pv.pv_uuid) {
            output::error(&format!("pvencrypt: WARNING: {e}"));
        }
        if !opts.quiet {
            let on = if t.vg.is_some() { "the volume group runs on" } else { "the PV (in no VG yet) is" };
            output::info(&format!("{}: encrypted; {on} /dev/mapper/{}.", t.path.display(), t.name));
        }
    }
    Ok(())
}

/// Between devices, a stop request ends the run before the next one starts.
fn stop_point() -> Result<()> {
    if abort::STOP.load(Ordering::Relaxed) {
        return Err(Error::new(Kind::Interrupted, "Stopped on request before the next device; run pvencrypt again to go on."));
    }
    Ok(())
}

/// The passphrase the device's TPM2 token unseals, unless --key-file names the key: a
/// resume tries it before it asks, as `cryptsetup open` tries tokens first; at boot nobody
/// may be at the console.
fn unsealed(front: &dyn Front, path: &Path) -> Option<Passphrase> {
    let key = (!front.key_file()).then(|| crate::boot::tpm2::unseal(path)).flatten()?;
    output::info(&format!("{}: unlocked with the TPM2 (its {} token).", path.display(), crate::boot::tpm2::TOKEN_TYPE));
    Some(key)
}

/// `pvencrypt PV` on a device that holds a conversion of ours.
pub fn resume_one(front: &dyn Front, opts: &Options, path: &Path, state: State) -> Result<()> {
    let mut runs = vec![Run::claim(path, state.name())?];
    // In a -b unit the passphrase is the one handed over, unsealed or typed.
    let key = match (!service::in_unit()).then(|| unsealed(front, path)).flatten() {
        Some(k) => k,
        None => front.passphrase(&format!("Enter passphrase for {}: ", path.display()), false)?,
    };
    if front.background(&mut runs, Some(&key))? {
        return Ok(());
    }
    abort::clear_abort(path);
    let name = resume::resume(opts, path, state, &key, &mut runs[0])?;
    if !opts.quiet {
        output::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{name}.", path.display()));
    }
    Ok(())
}

/// `pvencrypt` without PV, in three phases: the unfinished conversions gathered (torn
/// switches repaired first), unlocked (the TPM2, else one passphrase), resumed; then the
/// queued PVs converted.
pub fn resume_all(front: &dyn Front, opts: &Options) -> Result<()> {
    let mut todo = gather()?;
    let (queued, queued_runs, refused) = queued_targets(opts)?;
    if todo.items.is_empty() && queued.is_empty() {
        if !todo.restored.is_empty() {
            let pvs: Vec<String> = todo.restored.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::new(
                Kind::Interrupted,
                format!("Plain PVs put back: {}; run pvencrypt on them again.", pvs.join(" ")),
            ));
        }
        if !opts.quiet && refused == 0 {
            output::out("No conversion to resume.");
        }
        return queue_refusals(refused).map_err(|e| after(todo.written, e));
    }
    let (key, not_opened) = unlock(front, &mut todo, !queued.is_empty())?;
    let mut written = todo.written;
    let end = |written: bool| not_opened_by(&not_opened).and(queue_refusals(refused)).map_err(|e| after(written, e));
    let resumed_n = todo.items.len();
    let mut runs = std::mem::take(&mut todo.runs);
    runs.extend(queued_runs);
    if (todo.items.is_empty() && queued.is_empty()) || front.background(&mut runs, key.as_ref())? {
        return end(written);
    }
    let (resumed, queued_runs) = runs.split_at_mut(resumed_n);
    for (((path, state), run), own) in todo.items.into_iter().zip(resumed).zip(todo.keys) {
        stop_point()?;
        abort::clear_abort(&path);
        let Some(k) = own.as_ref().or(key.as_ref()) else { unreachable!("unlock gave every device a key") };
        let name = resume::resume(opts, &path, state, k, run).map_err(|e| after(written, e))?;
        written = true;
        if !opts.quiet {
            output::info(&format!("{}: encrypted; the volume group runs on /dev/mapper/{name}.", path.display()));
        }
    }
    // `pvencrypt A B C` gave B and C the passphrase of A.
    if let Some(key) = &key {
        convert_all(&queued, None, key, queued_runs, written)?;
        written |= !queued.is_empty();
    }
    end(written)
}

/// What `resume_all` takes up: the unfinished conversions, each with its claim and the
/// passphrase the TPM2 unsealed for it, in step.
#[derive(Default)]
struct Todo {
    items: Vec<(PathBuf, State)>,
    runs: Vec<Run>,
    keys: Vec<Option<Passphrase>>,
    /// Plain PVs a repair put back.
    restored: Vec<PathBuf>,
    /// A repair wrote: from here on no error is a refusal.
    written: bool,
}

/// Phase 1: the unfinished conversions, claimed (one another process works on is left to
/// it; one stopped with --abort is left alone at boot), torn switches made whole before any
/// passphrase is asked: one may just be the plain PV again.
fn gather() -> Result<Todo> {
    let mut todo = Todo::default();
    for (path, state) in resume::unfinished() {
        if service::at_boot() && abort::is_aborted(&path) {
            output::info(&format!("{}: stopped with --abort; left so until pvencrypt is run by hand.", path.display()));
            continue;
        }
        let run = match Run::claim(&path, state.name()) {
            Ok(r) => r,
            Err(e) if e.kind == Kind::Refused => {
                output::error(&format!("pvencrypt: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let state = match state {
            State::TornSwitch(_) | State::TornHeader => {
                todo.written = true;
                match resume::repair(&path, &state)? {
                    Some(_) => inspect::inspect(&path),
                    None => {
                        todo.restored.push(path);
                        continue;
                    }
                }
            }
            s => s,
        };
        todo.runs.push(run);
        todo.items.push((path, state));
        todo.keys.push(None);
    }
    Ok(todo)
}

/// Phase 2: devices bound to the TPM2 resume with it; one passphrase for the others (and
/// the queue), as one typed at boot, checked on each device before -b leaves the terminal.
/// A device it does not open is dropped and named in the second value, left for
/// `pvencrypt PV`. The side of -b that hands a passphrase to its unit unseals nothing: the
/// unit does.
fn unlock(front: &dyn Front, todo: &mut Todo, queued: bool) -> Result<(Option<Passphrase>, Vec<String>)> {
    if !front.detaches() || service::in_unit() {
        for ((path, _), key) in todo.items.iter().zip(todo.keys.iter_mut()) {
            *key = unsealed(front, path);
        }
    }
    let pvs: Vec<String> =
        todo.items.iter().zip(&todo.keys).filter(|(_, k)| k.is_none()).map(|((p, _), _)| p.display().to_string()).collect();
    let typed = match question(&pvs, queued) {
        Some((prompt, verify)) => Some(front.passphrase(&prompt, verify)?),
        None => None,
    };
    let mut not_opened = Vec::new();
    let mut i = 0;
    while i < todo.items.len() {
        let Some(k) = todo.keys[i].as_ref().or(typed.as_ref()) else {
            unreachable!("a passphrase is asked for every device not unsealed")
        };
        match luks::open(&todo.items[i].0).and_then(|mut cd| luks::check_key(&mut cd, k)) {
            Err(e) if matches!(e.kind, Kind::Key | Kind::WrongPassphrase) => {
                output::error(&format!("pvencrypt: {}: {e}", todo.items[i].0.display()));
                not_opened.push(todo.items.remove(i).0.display().to_string());
                todo.runs.remove(i);
                todo.keys.remove(i);
            }
            _ => i += 1,
        }
    }
    Ok((typed, not_opened))
}

/// Exit 2 when the passphrase opened some device not: they wait for `pvencrypt PV`.
fn not_opened_by(pvs: &[String]) -> Result<()> {
    if pvs.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        Kind::WrongPassphrase,
        format!("The passphrase opens no keyslot of {}: resume each with pvencrypt PV.", pvs.join(" ")),
    ))
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
                output::error(&format!(
                    "pvencrypt: {} no longer holds PV {}; dropped from the queue.",
                    q.pv.display(),
                    q.pv_uuid
                ));
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
                Err(e) if e.kind == Kind::Refused => output::error(&format!("pvencrypt: {e}")),
                Err(e) => return Err(e),
            },
            Err(e) => {
                output::error(&format!("pvencrypt: queued {}: {e}", path.display()));
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

/// The one passphrase `resume_all` asks for: for the devices the TPM2 did not unlock
/// (`pvs`), else for the queued PVs (a new one: twice on a terminal); None: nothing to ask.
fn question(pvs: &[String], queued: bool) -> Option<(String, bool)> {
    if !pvs.is_empty() {
        Some((format!("Enter passphrase for {}: ", pvs.join(", ")), false))
    } else if queued {
        Some(("Enter passphrase for the queued LUKS2 devices: ".into(), true))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A front end that records what it was asked and answers nothing.
    #[derive(Default)]
    struct Fake(RefCell<Vec<String>>);

    impl Front for Fake {
        fn passphrase(&self, prompt: &str, _: bool) -> Result<Passphrase> {
            self.0.borrow_mut().push(format!("passphrase {prompt}"));
            Err(Error::new(Kind::Key, "no passphrase here"))
        }
        fn confirm(&self, _: Option<u64>) -> Result<()> {
            self.0.borrow_mut().push("confirm".into());
            Ok(())
        }
        fn detaches(&self) -> bool {
            false
        }
        fn background(&self, _: &mut Vec<Run>, _: Option<&Passphrase>) -> Result<bool> {
            self.0.borrow_mut().push("background".into());
            Ok(false)
        }
        fn key_file(&self) -> bool {
            false
        }
        fn args(&self) -> Vec<String> {
            vec![]
        }
    }

    /// Every PV is checked before anything is asked: a bad one refuses the whole command
    /// (exit 3) with no question, and --test asks nothing either.
    #[test]
    fn a_refusal_comes_before_any_question() {
        let opts = Options::from_args(&[]).unwrap();
        for test in [false, true] {
            let front = Fake::default();
            let pvs = [PathBuf::from("/nonexistent/pv"), PathBuf::from("/dev/null")];
            let e = convert_pvs(&front, &opts, &pvs, test).unwrap_err();
            assert_eq!(e.kind, Kind::Refused, "{e}");
            assert!(front.0.borrow().is_empty(), "asked {:?}", front.0.borrow());
        }
    }

    #[test]
    fn one_passphrase_for_the_devices_the_tpm2_did_not_unlock() {
        let pvs = ["/dev/sda5".to_string(), "/dev/sdb1".to_string()];
        assert_eq!(question(&pvs, true), Some(("Enter passphrase for /dev/sda5, /dev/sdb1: ".into(), false)));
        assert_eq!(question(&[], true), Some(("Enter passphrase for the queued LUKS2 devices: ".into(), true)));
        assert_eq!(question(&[], false), None, "every device unsealed, nothing queued: nothing asked");
        assert!(not_opened_by(&[]).is_ok());
        let e = not_opened_by(&["/dev/sdb1".into()]).unwrap_err();
        assert_eq!(
            (e.exit_code(), e.to_string()),
            (2, "The passphrase opens no keyslot of /dev/sdb1: resume each with pvencrypt PV.".into())
        );
    }

    /// A mode's first write (a repair, a resume, a PV converted before) ends the refusals.
    #[test]
    fn after_the_first_write_a_refusal_is_a_failure() {
        assert_eq!(after(false, Error::new(Kind::Refused, "x")).kind, Kind::Refused);
        assert_eq!(after(true, Error::new(Kind::Refused, "x")).kind, Kind::Failed);
        assert_eq!(after(true, Error::new(Kind::WrongPassphrase, "x")).kind, Kind::WrongPassphrase);
    }
}
