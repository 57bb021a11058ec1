//! Finding unfinished conversions and taking each up again: what a device holds
//! (inspect.rs) decides. LUKS2 with our marker: open it if needed and go on encrypting;
//! a switch a crash cut: `repair` (only in a run meant to change the disk); the states
//! libcryptsetup cannot resume from: said plainly, with what to do.

use std::{
    fs, io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use crate::{
    abort,
    convert::{encrypt, finish, integrate_boot, open_mover, Unlock},
    direct,
    dm::{block_device, Dm, DmName},
    error::{fail, refuse, Context, Error, Kind, Result, Written},
    inspect::{self, State, SwitchRecord},
    key::Passphrase,
    luks::{self, Marker},
    lvm,
    options::Options,
    output,
    running::{Phase, Run, Status},
    units::Bytes,
};

/// A conversion a crash cut inside the switch, made whole; only in a run meant to change
/// the disk, and only while nothing holds the raw device. Returns the marker when the
/// device is now LUKS2 in our conversion, `None` when the plain PV was put back. The disk
/// holds a run's writes already: no error here is a refusal.
pub fn repair(path: &Path, state: &State) -> Result<Option<Marker>, Written> {
    let (dev, _) = block_device(path)?;
    let held = crate::dm::holders_of(dev);
    if !held.is_empty() {
        return fail(format!(
            "{}: a crash cut a conversion inside its switch, and {} now hold(s) the device; not repairing it \
             under them. Deactivate them, then run pvencrypt again.",
            path.display(),
            held.join(", ")
        ));
    }
    if *state == State::TornHeader {
        // An LVM label left beside our secondary header (as written before the label
        // went first): libcryptsetup will not restore the primary while it sees one.
        if lvm::read_label(path).is_ok_and(|l| l.is_some()) {
            direct::zero(path, &[(Bytes(0), Bytes(4096))])
                .or_fail(|| format!("Cannot clear the stale PV label of {}", path.display()))?;
        }
    }
    // A complete secondary header: libcryptsetup restores the primary one on load.
    if let Ok(mut cd) = luks::open(path) {
        if let Some((_, m)) = luks::marker(&mut cd) {
            output::error(&format!("{}: completed a LUKS2 header whose placement a crash interrupted.", path.display()));
            return Ok(Some(m));
        }
    }
    match state {
        State::TornSwitch(r) => {
            restore_plain(path, r).or_fail(|| format!("Cannot put the plain PV back on {}", path.display()))?;
            output::error(&format!(
                "{}: a crash cut the switch before the LUKS2 header was complete; the plain PV is back, as it was. \
                 Run pvencrypt {} to convert it.",
                path.display(),
                path.display()
            ));
            Ok(None)
        }
        _ => fail(format!("{}: libcryptsetup cannot restore the LUKS2 header from its secondary copy.", path.display())),
    }
}

/// Undoes a switch a crash cut after step 1 whose header libcryptsetup cannot restore:
/// copies the first segment back from where the record says it lies. Exact, because
/// the LVs were suspended from that copy on, and nothing has used the device since: it
/// carries no label. Refuses unless the copy starts with the label of the recorded PV.
fn restore_plain(path: &Path, r: &SwitchRecord) -> io::Result<()> {
    let f = crate::direct::open(path)?;
    let (from, len) = r.moved;
    let mut buf = crate::direct::Aligned::new(crate::direct::CHUNK);
    f.read_exact_at(&mut buf[..4096], from.0)?;
    let label = crate::lvm::label_in(&buf[..2048]).map_err(io::Error::other)?;
    if label.as_ref().map(|l| l.pv_uuid.as_str()) != Some(r.pv_uuid.as_str()) {
        return Err(io::Error::other(format!(
            "the copy at byte {} does not start with the label of PV {}; not restoring it",
            from.0, r.pv_uuid
        )));
    }
    crate::direct::copy(&f, &mut buf, from, Bytes(0), len)
}

/// Devices with an unfinished conversion of ours, and the state of each. Read-only.
pub fn unfinished() -> Vec<(PathBuf, State)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/sys/class/block") else { return out };
    let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    for n in names {
        let path = PathBuf::from("/dev").join(&n);
        if could_be_ours(&n) {
            let state = inspect::inspect(&path);
            if state.is_ours() {
                out.push((path, state));
            }
        }
    }
    out
}

/// Whether block device `name` may be a PV we convert. Reading a dm device can hang: a
/// suspended one (the hotzone of a reencryption whose process was killed) blocks every
/// read, and so can the LVs and crypt devices stacked above it. None of those is a PV
/// pvencrypt converts.
pub(crate) fn could_be_ours(name: &str) -> bool {
    let dm = Path::new("/sys/class/block").join(name).join("dm");
    let read = |f: &str| fs::read_to_string(dm.join(f)).unwrap_or_default();
    !dm.exists() || (read("suspended").trim() == "0" && !["LVM-", "CRYPT-"].iter().any(|p| read("uuid").starts_with(p)))
}

/// Takes up the conversion on `path` from the state it is in: one arm per state, each
/// with the crash (or stop) that leaves a device so. Returns the name of the device the
/// VG now runs on.
pub fn resume(opts: &Options, path: &Path, state: State, key: &Passphrase, run: &mut Run) -> Result<DmName> {
    match state {
        // Nothing of ours on it: nothing to take up.
        State::Other | State::Foreign => refuse(format!("{} holds no unfinished conversion of pvencrypt.", path.display())),
        // The disk holds a run's writes: no error from here on is a refusal.
        state => Ok(take_up(opts, path, state, key, run)?),
    }
}

fn take_up(opts: &Options, path: &Path, state: State, key: &Passphrase, run: &mut Run) -> Result<DmName, Written> {
    match state {
        State::Other | State::Foreign => unreachable!("refused by resume"),
        // A crash inside the switch, between the header writes: made whole first.
        State::TornSwitch(_) | State::TornHeader => match repair(path, &state)? {
            Some(_) => Ok(resume(opts, path, inspect::inspect(path), key, run)?),
            None => {
                Err(Error::new(Kind::Interrupted, format!("{}: run pvencrypt {} to convert it.", path.display(), path.display()))
                    .into())
            }
        },
        // pvencrypt killed in the data phase, the machine still up: libcryptsetup 2.6
        // refuses to resume while NAME maps its overlay ("Mismatching parameters"), and a
        // step it was in keeps its hotzone suspended. A reboot recovers.
        State::Killed(m) => {
            remove_temporaries(opts, path)?;
            let dm = Dm::open()?;
            let helpers = luks::helpers_of(&m.name);
            let overlay = helpers.first().map(|o| o.as_str()).unwrap_or("its overlay");
            let waiting = match helpers.iter().skip(1).find(|h| dm.is_suspended(h)) {
                Some(hz) => format!(" I/O to the area of the step it was in waits on the suspended {hz}."),
                None => String::new(),
            };
            fail(format!(
                "{}: a conversion was killed in the data phase: {} is still stacked on {overlay}, which \
                 libcryptsetup cannot resume from on an open device.{waiting} Restart the machine (a hard reset \
                 if the shutdown hangs): opening the device at boot recovers, and pvencrypt then goes on.",
                path.display(),
                m.name
            ))
        }
        // A crash after libcryptsetup wrote the last block, before it closed the
        // reencryption: libcryptsetup 2.6 cannot close it from there (it would redo the
        // last step from a stale copy, and refuses). Said plainly, not retried.
        State::LastStep(_) => {
            let mib = luks::metadata(&mut *luks::open(path)?)?.moved_segment().map_or(0, |(_, len)| len.mib());
            fail(format!(
                "{}: every block is encrypted, but the crash hit the last step of the reencryption, which \
                 libcryptsetup cannot close from there. The device is safe: it opens with cryptsetup and the \
                 LVs run on it. Its header keeps the online-reencrypt-v2 flag, and its last {mib} MiB still hold \
                 a plaintext copy of the device's first {mib} MiB. pvencrypt cannot finish this state yet.",
                path.display(),
            ))
        }
        // Stopped after the data phase (a crash during `finish`): finish again.
        State::Finishing(m) => {
            open_and_integrate(opts, path, &m, key)?;
            // Killed right after its last commit, the mover left NAME on a mirror.
            let dm = Dm::open()?;
            open_mover(&dm, path, &m.name, &Unlock { slot: None, key, volume_key: None })?.take_over()?;
            finish(path)?;
            Ok(m.name)
        }
        // Stopped (--abort, a signal), or a crash or reboot in the data phase: go on.
        State::Converting(m) => {
            open_and_integrate(opts, path, &m, key)?;
            encrypt(opts, path, &m.name, Unlock { slot: None, key, volume_key: None }, run)?;
            Ok(m.name)
        }
    }
}

/// libcryptsetup's temporary dm-crypt mappings of a process that died (it writes through one when its
/// crypto library lacks the cipher).
fn remove_temporaries(opts: &Options, path: &Path) -> Result<()> {
    for t in Dm::open()?.remove_stale_temporaries(block_device(path)?.0)? {
        if !opts.quiet {
            output::info(&format!("{}: removed {t}, left by a crashed run.", path.display()));
        }
    }
    Ok(())
}

/// The passphrase checked, NAME opened if it is not (libcryptsetup recovers a torn step
/// on open), the boot files brought up to date.
fn open_and_integrate(opts: &Options, path: &Path, m: &Marker, key: &Passphrase) -> Result<()> {
    // The PV is on NAME (opened below if it is not): an LVM restricted to --devices must
    // see it there.
    lvm::see_device(&format!("/dev/mapper/{}", m.name));
    let mut cd = luks::open(path)?;
    luks::check_key(&mut cd, key)?;
    remove_temporaries(opts, path)?;
    if !Dm::open()?.exists(&m.name) {
        luks::activate(&mut cd, path, m.name.as_str(), None, key)?;
        if !opts.quiet {
            output::info(&format!("{}: opened as /dev/mapper/{}.", path.display(), m.name));
        }
    }
    drop(cd);
    let vg = m.vg_name.as_ref().and_then(|v| lvm::vg(v).ok());
    integrate_boot(opts, path, &m.name, vg.as_ref().map(|v| v.vg_uuid.as_str()), true);
    Ok(())
}

/// Stopped conversions as `--status` shows them, progress read from their headers.
pub fn unfinished_status() -> Vec<Status> {
    unfinished()
        .into_iter()
        .map(|(path, state)| {
            let pv = path.display().to_string();
            let name = state.name().to_string();
            match state {
                // Cut inside the switch: nothing encrypted; `pvencrypt` repairs it.
                State::TornSwitch(_) | State::TornHeader => Status { pv, name, state: Phase::Interrupted, ..Default::default() },
                _ => {
                    let (done, total) =
                        crate::header::read_metadata(&path).and_then(|m| m.progress()).map_or((0, 0), |(d, t)| (d.0, t.0));
                    let state = if abort::is_aborted(&path) { Phase::Aborted } else { Phase::Stopped };
                    Status { pv, name, state, bytes_done: done, bytes_total: total, ..Default::default() }
                }
            }
        })
        .collect()
}
