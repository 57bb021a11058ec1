//! Running conversions, as pvmove's polling has them: which process converts which
//! device (a lock and a status file per device under /run/pvencrypt), what `--status`
//! reads (report.rs prints it).
//!
//! The lock is what makes a conversion "running": the kernel drops it when the
//! process dies, however it dies, so a stale status file never lies about that.
//!
//! What the next boot needs the admin to do (the boot integration's warnings) is kept
//! beside, in KEY.warnings.json, until the reboot: `--status` shows it while the run goes
//! on and after it ended, so that a `-b` user, whose terminal never saw it, does too.

use std::{
    fs::{self, File, OpenOptions},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::error::{refuse, Context, Result};

const RUN_DIR: &str = "/run/pvencrypt";
/// Where a conversion is, as `--status` names it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Running: checks, passphrase, header in memory.
    #[default]
    Preparing,
    /// Running: the freeze is near or on.
    Switching,
    /// Running: the data phase.
    Encrypting,
    /// Running: `--decrypt`'s data phase.
    Decrypting,
    /// Nobody works on it; `pvencrypt` resumes it, at boot too.
    Stopped,
    /// Stopped by `--abort`: the boot leaves it stopped; `pvencrypt` resumes it.
    Aborted,
    /// A crash cut its switch; `pvencrypt` repairs it.
    Interrupted,
    /// Waits its turn after the PVs before it on the same command line; `pvencrypt`
    /// converts it (queue.rs).
    Queued,
    /// Done, with warnings for the next boot: listed until the reboot.
    Finished,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).expect("serializes");
        f.pad(s.as_str().expect("a name"))
    }
}

/// What `--status` shows of one conversion; the running process rewrites it as it goes.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Status {
    pub pv: String,
    pub name: String,
    pub state: Phase,
    pub pid: Option<u32>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second since this process started encrypting.
    pub rate: Option<u64>,
    pub eta_seconds: Option<u64>,
    /// Unix time of the last update.
    pub updated: u64,
    /// What to fix before the next reboot (`add_warning`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Whether two paths name the same device (as the kernel names it).
pub fn same_device(a: &Path, b: &Path) -> bool {
    key_of(a) == key_of(b)
}

/// The key under /run/pvencrypt: the kernel's name of the raw device ("sda5").
pub(crate) fn key_of(pv: &Path) -> String {
    let real = fs::canonicalize(pv).unwrap_or_else(|_| pv.into());
    real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn lock_path(key: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{key}.lock"))
}

fn status_path(key: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{key}.json"))
}

fn flock(f: &File, how: libc::c_int) -> bool {
    crate::sys::flock(f, how | libc::LOCK_NB).is_ok()
}

/// True while some process holds the conversion lock of `key`.
pub(crate) fn running(key: &str) -> bool {
    match File::open(lock_path(key)) {
        Ok(f) => !flock(&f, libc::LOCK_SH),
        Err(_) => false,
    }
}

fn read_status(key: &str) -> Option<Status> {
    serde_json::from_slice(&fs::read(status_path(key)).ok()?).ok()
}

fn warnings_path(key: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{key}.warnings.json"))
}

/// The boot warnings of PV's conversion, as a `Finished` status.
fn read_warnings(key: &str) -> Option<Status> {
    serde_json::from_slice(&fs::read(warnings_path(key)).ok()?).ok()
}

/// Records a warning for the next boot of PV's conversion (device NAME). Best effort, as
/// the status file: the message went to the terminal or the journal already.
pub fn add_warning(pv: &Path, name: &str, msg: &str) {
    let key = key_of(pv);
    let mut w = read_warnings(&key).unwrap_or_else(|| Status {
        pv: pv.display().to_string(),
        name: name.into(),
        state: Phase::Finished,
        ..Default::default()
    });
    w.warnings.push(msg.into());
    w.updated = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let path = warnings_path(&key);
    let tmp = path.with_extension("new");
    if fs::create_dir_all(RUN_DIR).is_ok() && fs::write(&tmp, serde_json::to_vec(&w).expect("serializes")).is_ok() {
        let _ = fs::rename(&tmp, &path);
    }
}

/// Before the boot integration runs again: the warnings of the last one are stale.
pub fn clear_warnings(pv: &Path) {
    let _ = fs::remove_file(warnings_path(&key_of(pv)));
}

/// This process's claim on one device: taken before anything is changed, held until
/// the process is done with it.
pub struct Run {
    key: String,
    lock: Option<File>,
    status: Status,
    /// What `progress` reports: Encrypting, or Decrypting.
    moving: Phase,
    started: Option<(Instant, u64)>,
    written: Option<Instant>,
}

impl Run {
    pub fn claim(pv: &Path, name: &str) -> Result<Run> {
        let key = key_of(pv);
        fs::create_dir_all(RUN_DIR).or_fail(|| format!("Cannot create {RUN_DIR}"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(lock_path(&key))
            .or_fail(|| format!("Cannot open {}", lock_path(&key).display()))?;
        if !flock(&lock, libc::LOCK_EX) {
            let pid = read_status(&key).and_then(|s| s.pid).map(|p| format!(" (pid {p})")).unwrap_or_default();
            return refuse(format!("{} is already being converted by another pvencrypt{pid}.", pv.display()));
        }
        let status =
            Status { pv: pv.display().to_string(), name: name.into(), pid: Some(std::process::id()), ..Default::default() };
        let mut run = Run { key, lock: Some(lock), status, moving: Phase::Encrypting, started: None, written: None };
        run.state(Phase::Preparing);
        Ok(run)
    }

    /// The same claim for `--decrypt`: its progress says Decrypting.
    pub fn claim_decryption(pv: &Path, name: &str) -> Result<Run> {
        let mut run = Self::claim(pv, name)?;
        run.moving = Phase::Decrypting;
        Ok(run)
    }

    pub fn state(&mut self, state: Phase) {
        self.status.state = state;
        self.write();
    }

    /// Called at every checkpoint; the file is rewritten at most once a second.
    pub fn progress(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        let (t0, done0) = *self.started.get_or_insert((now, done));
        let s = &mut self.status;
        s.state = self.moving;
        s.bytes_done = done;
        s.bytes_total = total;
        let secs = now.duration_since(t0).as_secs_f64();
        if secs >= 1.0 && done > done0 {
            let rate = (done - done0) as f64 / secs;
            s.rate = Some(rate as u64);
            s.eta_seconds = Some((total.saturating_sub(done) as f64 / rate) as u64);
        }
        if self.written.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1)) || done == total {
            self.write();
        }
    }

    fn write(&mut self) {
        self.written = Some(Instant::now());
        self.status.updated = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        // Written whole and renamed, so a reader never sees half a file. Best effort:
        // a full /run must not stop a conversion.
        let path = status_path(&self.key);
        let tmp = path.with_extension("json.new");
        let body = serde_json::to_vec(&self.status).expect("status serializes");
        if fs::write(&tmp, body).is_ok() {
            let _ = fs::rename(&tmp, &path);
        }
        let s = &self.status;
        let done =
            if s.bytes_total > 0 { format!(" {}", crate::progress::percent(s.bytes_done, s.bytes_total)) } else { String::new() };
        crate::service::notify(&format!("STATUS={}: {}{done}", s.pv, s.state));
    }

    pub fn pv(&self) -> &str {
        &self.status.pv
    }

    /// The device's kernel name ("sda5").
    pub fn dev(&self) -> &str {
        &self.key
    }

    /// After fork, in the parent: the child carries on with the claim.
    pub fn hand_over(mut self) {
        self.lock = None;
        std::mem::forget(self);
    }

    /// In the child: the status names the process that now does the work.
    pub fn adopt(&mut self) {
        self.status.pid = Some(std::process::id());
        self.write();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // The lock file stays: unlinking it would let two claims lock different files.
        let _ = fs::remove_file(status_path(&self.key));
    }
}

/// Every conversion known on this machine: the running ones from /run/pvencrypt, the
/// stopped ones from the headers (`unfinished`, found by the caller).
/// A finished one is listed while it left warnings for the next boot.
pub fn statuses(unfinished: Vec<Status>) -> Vec<Status> {
    let mut out: Vec<Status> = Vec::new();
    let names: Vec<String> = fs::read_dir(RUN_DIR)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let mut keys: Vec<&str> = names.iter().filter_map(|n| n.strip_suffix(".lock")).collect();
    keys.sort();
    for k in keys {
        if running(k) {
            if let Some(s) = read_status(k) {
                out.push(s);
            }
        }
    }
    let same =
        |r: &Status, s: &Status| (!r.name.is_empty() && r.name == s.name) || key_of(Path::new(&r.pv)) == key_of(Path::new(&s.pv));
    for s in unfinished {
        if !out.iter().any(|r| same(r, &s)) {
            out.push(s);
        }
    }
    let mut warned: Vec<&str> = names.iter().filter_map(|n| n.strip_suffix(".warnings.json")).collect();
    warned.sort();
    for w in warned.into_iter().filter_map(read_warnings) {
        match out.iter_mut().find(|r| same(r, &w)) {
            Some(r) => r.warnings = w.warnings,
            None => out.push(w),
        }
    }
    out
}

/// The conversions of the PVs in `which` (all if empty).
pub fn select(all: Vec<Status>, which: &[PathBuf]) -> Vec<Status> {
    all.into_iter().filter(|s| which.is_empty() || which.iter().any(|p| key_of(p) == key_of(Path::new(&s.pv)))).collect()
}
