//! `--abort`: running conversions stop at their next checkpoint, and the stop is
//! recorded under /var/lib/pvencrypt/aborted, which keeps the boot from resuming them.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    error::{refuse, Context, Error, Kind, Result},
    output::{self, error},
    queue::Queue,
    running::{self, key_of, select, statuses, Phase, Status},
};

/// One file per LUKS UUID of a conversion stopped by `--abort`: pvencrypt-resume.service
/// leaves those alone until the admin runs pvencrypt by hand. Not /run: it must outlive
/// the reboot.
const ABORTED_DIR: &str = "/var/lib/pvencrypt/aborted";

/// Set by SIGINT/SIGTERM (and --abort): stop, keeping the last checkpoint.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every running conversion in `which` (all if empty) to stop at its next
/// checkpoint, and waits until each has. Returns the ones that were stopped.
pub fn abort(which: &[PathBuf], timeout: Duration) -> Result<Vec<Status>> {
    let running: Vec<Status> = select(statuses(vec![]), which).into_iter().filter(|s| s.state != Phase::Finished).collect();
    for p in which {
        if !running.iter().any(|s| key_of(Path::new(&s.pv)) == key_of(p)) {
            return refuse(format!("No conversion of {} is running.", p.display()));
        }
    }
    for s in &running {
        let Some(pid) = s.pid else { continue };
        // Recorded first: a reboot before the stop lands must not resume it either.
        if let Err(e) = record_abort(Path::new(&s.pv)) {
            error(&format!("pvencrypt: {}: {e}; the next boot may resume it.", s.pv));
        }
        crate::sys::kill(pid, libc::SIGTERM);
    }
    let end = Instant::now() + timeout;
    let mut stopped = Vec::new();
    for s in running {
        let key = key_of(Path::new(&s.pv));
        while running::running(&key) {
            if Instant::now() >= end {
                return Err(Error::new(
                    Kind::Failed,
                    format!("{}: the conversion (pid {}) did not stop within {} s.", s.pv, s.pid.unwrap_or(0), timeout.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stopped.push(s);
    }
    Ok(stopped)
}

fn aborted_path(pv: &Path) -> Option<PathBuf> {
    Some(Path::new(ABORTED_DIR).join(crate::header::read_uuid(pv)?))
}

/// Whether the conversion on `pv` was stopped by `--abort` (and not resumed since).
pub fn is_aborted(pv: &Path) -> bool {
    aborted_path(pv).is_some_and(|p| p.exists())
}

fn record_abort(pv: &Path) -> Result<()> {
    // No LUKS2 header yet: nothing a boot would resume.
    let Some(path) = aborted_path(pv) else { return Ok(()) };
    crate::sys::create_dir_durably(Path::new(ABORTED_DIR)).or_fail(|| format!("Cannot create {ABORTED_DIR}"))?;
    crate::sys::replace_file(&path, format!("{}\n", pv.display()).as_bytes(), 0o644)
        .or_fail(|| format!("Cannot write {}", path.display()))
}

/// A conversion resumed by hand: the boot may resume it again.
pub fn clear_abort(pv: &Path) {
    if let Some(p) = aborted_path(pv) {
        // Synced as the record was: a power cut must not bring it back.
        let _ = crate::sys::remove_file_durably(&p);
    }
}

/// `pvencrypt --abort [PV...]`: the queued PVs among them dropped, the running
/// conversions stopped at their next checkpoint; `quiet`: only errors.
pub fn stop(pvs: &[PathBuf], quiet: bool) -> Result<()> {
    // Queued PVs first: a stopped run must not be followed by the next in its queue.
    // Those started already are stopped below; the others never started.
    let dropped: Vec<_> = Queue::system().drop_pvs(pvs)?.into_iter().filter_map(|q| crate::queue::find(&q)).collect();
    let mut to_stop = pvs.to_vec();
    to_stop.retain(|p| !dropped.iter().any(|d| running::same_device(d, p)));
    let stopped = if pvs.is_empty() || !to_stop.is_empty() { abort(&to_stop, Duration::from_secs(600))? } else { vec![] };
    if !quiet {
        for d in &dropped {
            output::out(&format!("{}: dropped from the queue; nothing was changed on it.", d.display()));
        }
        if stopped.is_empty() && dropped.is_empty() {
            output::out("No conversion is running.");
        }
    }
    // A PV of `pvencrypt A B` not started yet was claimed too: said as dropped above.
    for s in stopped.into_iter().filter(|s| !dropped.iter().any(|d| running::same_device(d, std::path::Path::new(&s.pv)))) {
        if !quiet {
            output::out(&if s.state == Phase::Decrypting {
                format!("{}: stopped; run pvencrypt --decrypt {0} to go on.", s.pv)
            } else {
                format!("{}: stopped; the data stays in use on /dev/mapper/{}. Run pvencrypt to resume.", s.pv, s.name)
            });
        }
    }
    Ok(())
}
