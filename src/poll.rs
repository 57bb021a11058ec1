//! Running conversions, as pvmove's polling has them: which process converts which
//! device (a lock and a status file per device under /run/pvencrypt), `--status`,
//! `--abort` (and its record under /var/lib/pvencrypt/aborted, which keeps the boot from
//! resuming), and `-b` without systemd (detach; progress goes to the system log;
//! service.rs has it with systemd).
//!
//! The lock is what makes a conversion "running": the kernel drops it when the
//! process dies, however it dies, so a stale status file never lies about that.
//!
//! What the next boot needs the admin to do (the boot integration's warnings) is kept
//! beside, in KEY.warnings.json, until the reboot: `--status` shows it while the run goes
//! on and after it ended, so that a `-b` user, whose terminal never saw it, does too.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::error::{refuse, Context, Error, Kind, Result};

const RUN_DIR: &str = "/run/pvencrypt";
/// One file per LUKS UUID of a conversion stopped by `--abort`: pvencrypt-resume.service
/// leaves those alone until the admin runs pvencrypt by hand. Not /run: it must outlive
/// the reboot.
const ABORTED_DIR: &str = "/var/lib/pvencrypt/aborted";

/// After `detach`, messages go to the system log instead of the (gone) terminal.
static SYSLOG: AtomicBool = AtomicBool::new(false);
/// Set by SIGHUP (main.rs): the terminal is gone, the run goes on; from now on
/// messages go to the system log too.
pub static HUNG_UP: AtomicBool = AtomicBool::new(false);

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
fn key_of(pv: &Path) -> String {
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
fn running(key: &str) -> bool {
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
        let mut run = Run { key, lock: Some(lock), status, started: None, written: None };
        run.state(Phase::Preparing);
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
        s.state = Phase::Encrypting;
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
        while self::running(&key) {
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

/// `-b`: forks; the parent returns true at once, the child (false) carries on in a
/// session of its own with no terminal, talking to the system log.
pub fn detach() -> Result<bool> {
    match crate::sys::fork() {
        Err(e) => Err(Error::new(Kind::Failed, format!("Cannot fork: {e}"))),
        Ok(None) => {
            crate::sys::become_daemon();
            SYSLOG.store(true, Ordering::Relaxed);
            Ok(false)
        }
        _ => Ok(true),
    }
}

fn syslog(prio: libc::c_int, msg: &str) {
    crate::sys::syslog(prio, msg);
}

/// A progress or result line: stdout (in a unit, the journal), or the log once
/// detached or hung up.
pub fn info(msg: &str) {
    if detached() {
        syslog(libc::LOG_INFO, msg);
    } else {
        crate::service::write_line(&mut std::io::stdout().lock(), libc::LOG_INFO, msg);
    }
}

/// An error or warning: stderr (in a unit, the journal), or the log once detached or
/// hung up.
pub fn error(msg: &str) {
    if detached() {
        syslog(libc::LOG_ERR, msg);
    } else {
        // A closed pipe or a hung-up terminal must not stop the run (println! panics).
        crate::service::write_line(&mut std::io::stderr().lock(), libc::LOG_ERR, msg);
    }
}

/// A line on stdout, for the report commands too; a write error is not the caller's
/// problem (a reader that went away, a terminal that hung up).
pub fn out(msg: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{msg}").and_then(|_| o.flush());
}

pub fn detached() -> bool {
    SYSLOG.load(Ordering::Relaxed) || HUNG_UP.load(Ordering::Relaxed)
}

/// `--status`, as LVM's reports print: aligned columns, or `--reportformat json`.
pub fn report(all: &[Status], json: bool) -> String {
    // Before the data phase nothing is encrypted yet, and the total is not known.
    let pct = |s: &Status| match s.bytes_total {
        _ if s.state == Phase::Finished => "100.00%".into(),
        0 => "0.00%".into(),
        t => crate::progress::percent(s.bytes_done, t),
    };
    if json {
        // LVM's JSON reports give every value as a string.
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|s| {
                serde_json::json!({
                    "pv": s.pv, "name": s.name, "state": s.state.to_string(),
                    "pid": s.pid.map(|p| p.to_string()).unwrap_or_default(),
                    "percent": pct(s).trim_end_matches('%'),
                    "bytes_done": s.bytes_done.to_string(), "bytes_total": s.bytes_total.to_string(),
                    "rate": s.rate.map(|r| r.to_string()).unwrap_or_default(),
                    "eta_seconds": s.eta_seconds.map(|r| r.to_string()).unwrap_or_default(),
                    "warnings": s.warnings,
                })
            })
            .collect();
        return serde_json::to_string_pretty(&serde_json::json!({ "report": [ { "conversion": rows } ] })).expect("json");
    }
    if all.is_empty() {
        return "No conversion in progress.".into();
    }
    let mib = |b: u64| if b == 0 { String::new() } else { format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64) };
    let mut rows = vec![["PV", "Name", "State", "Encrypted", "Done", "Total", "Rate", "ETA"].map(String::from)];
    for s in all {
        rows.push([
            s.pv.clone(),
            s.name.clone(),
            s.state.to_string(),
            pct(s),
            mib(s.bytes_done),
            mib(s.bytes_total),
            s.rate.map(|r| format!("{}/s", mib(r))).unwrap_or_default(),
            s.eta_seconds.map(|e| format!("{}:{:02}:{:02}", e / 3600, e / 60 % 60, e % 60)).unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            format!("  {}", line.join(" ").trim_end())
        })
        .collect();
    for s in all {
        lines.extend(s.warnings.iter().map(|w| format!("  WARNING: {}: {w}", s.pv)));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: Phase, done: u64) -> Status {
        Status {
            pv: "/dev/sda5".into(),
            name: "sda5_crypt".into(),
            state,
            pid: Some(42),
            bytes_done: done,
            bytes_total: 8 << 20,
            rate: Some(1 << 20),
            eta_seconds: Some(3725),
            updated: 0,
            warnings: vec![],
        }
    }

    #[test]
    fn basic_report_has_aligned_columns() {
        let r = report(&[st(Phase::Encrypting, 1 << 20)], false);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("  PV "));
        assert!(lines[1].contains("12.50%"), "{r}");
        assert!(lines[1].contains("1:02:05"), "{r}");
        assert_eq!(lines[0].find("State"), lines[1].find("encrypting"));
        assert_eq!(report(&[], false), "No conversion in progress.");
    }

    #[test]
    fn json_report_is_lvm_shaped() {
        let v: serde_json::Value = serde_json::from_str(&report(&[st(Phase::Stopped, 4 << 20)], true)).unwrap();
        let row = &v["report"][0]["conversion"][0];
        assert_eq!(row["percent"], "50.00");
        assert_eq!(row["state"], "stopped");
        assert_eq!(row["bytes_total"], (8u64 << 20).to_string());
        let empty: serde_json::Value = serde_json::from_str(&report(&[], true)).unwrap();
        assert_eq!(empty["report"][0]["conversion"].as_array().unwrap().len(), 0);
        assert_eq!(row["warnings"], serde_json::json!([]));
    }

    #[test]
    fn warnings_for_the_next_boot_under_the_table() {
        let mut s = Status { pv: "/dev/sda5".into(), name: "sda5_crypt".into(), state: Phase::Finished, ..Default::default() };
        s.warnings = vec!["the initramfs may NOT open sda5_crypt. DO NOT REBOOT".into(), "second".into()];
        let r = report(&[st(Phase::Encrypting, 1 << 20), s.clone()], false);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 5, "{r}");
        assert!(lines[2].contains(" finished ") && lines[2].ends_with(" 100.00%"), "{r}");
        assert_eq!(lines[3], "  WARNING: /dev/sda5: the initramfs may NOT open sda5_crypt. DO NOT REBOOT");
        assert_eq!(lines[4], "  WARNING: /dev/sda5: second");
        let v: serde_json::Value = serde_json::from_str(&report(&[s], true)).unwrap();
        assert_eq!(v["report"][0]["conversion"][0]["warnings"][1], "second");
        assert_eq!(v["report"][0]["conversion"][0]["state"], "finished");
    }
}
