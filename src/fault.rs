//! Fault injection for the crash tests, and timed traces.
//!
//! Only a test build (`--features fault-injection`, which the VM rig uses) reads
//! PVENCRYPT_FAULT=STEP[@N][|STEP[@N]...][:halt|:exit|:stop|:failN]: it stops the program at
//! a named step (each time it passes it, or only the Nth time), by cutting the (virtual) machine's power without a sync, by exiting at once, or by
//! stopping itself (SIGSTOP) until a test has looked at the disk, or makes
//! the first N attempts of an operation fail, so that tests can prove every step's
//! story. In a release binary `point` and `fails` do nothing.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        OnceLock,
    },
    time::Instant,
};

static FAULT: OnceLock<Option<(String, String)>> = OnceLock::new();
static FAILURES_LEFT: AtomicU32 = AtomicU32::new(0);

/// Reads the setting once, before any freeze, so checking it later allocates nothing.
pub fn init() {
    T0.get_or_init(Instant::now);
    FAULT.get_or_init(|| {
        if !cfg!(feature = "fault-injection") {
            return None;
        }
        let v = std::env::var("PVENCRYPT_FAULT").ok()?;
        let (step, how) = v.rsplit_once(':').unwrap_or((&v, "halt"));
        if let Some(n) = how.strip_prefix("fail") {
            FAILURES_LEFT.store(n.parse().unwrap_or(1), Ordering::Relaxed);
        }
        Some((step.to_string(), how.to_string()))
    });
}

/// True while a `failN` fault for `op` followed by `arg` ("resume" "vg-fs") has
/// failures left; allocates nothing.
pub fn fails(op: &str, arg: &str) -> bool {
    let Some(Some((s, how))) = FAULT.get() else { return false };
    how.starts_with("fail")
        && s.split_once(' ') == Some((op, arg))
        && FAILURES_LEFT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
}

static TRACE: OnceLock<Option<String>> = OnceLock::new();

/// PVENCRYPT_TRACE=1 prints every step as it happens, even inside the freeze (unsafe
/// when stderr is on a filesystem of the PV), so only a test build reads it; =debug adds
/// libcryptsetup's debug messages, =memory the largest mappings at each memory point.
pub fn tracing() -> bool {
    TRACE.get_or_init(|| if cfg!(feature = "fault-injection") { std::env::var("PVENCRYPT_TRACE").ok() } else { None }).is_some()
}

pub fn tracing_debug() -> bool {
    tracing() && TRACE.get().is_some_and(|t| t.as_deref() == Some("debug"))
}

static DEBUG: AtomicBool = AtomicBool::new(false);

/// `--debug`: libcryptsetup's and LVM's debug messages go to stderr as they come, as
/// with `cryptsetup --debug`. Neither library prints key material in them.
pub fn set_debug() {
    DEBUG.store(true, Ordering::Relaxed);
}

pub fn debug() -> bool {
    DEBUG.load(Ordering::Relaxed) || tracing_debug()
}

/// Writes one library debug line to stderr, unless the switch's freeze is on (stderr may
/// be a file on the suspended PV; the caller keeps the line for later, if it can).
/// False when it was not written. Called from C: never panics, and a closed stderr is
/// not an error.
pub fn debug_line(from: &str, msg: &str) -> bool {
    if !debug() || crate::output::held() {
        return false;
    }
    let _ = writeln!(std::io::stderr().lock(), "# {from}: {msg}");
    true
}

static T0: OnceLock<Instant> = OnceLock::new();

/// Each line carries the milliseconds since the start, so a log shows where a freeze
/// spends its time.
pub fn trace(what: impl std::fmt::Display) {
    if tracing() {
        let ms = T0.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0;
        eprintln!("pvencrypt: trace: {what} +{ms:.1}ms");
    }
}

/// Every step `point` knows, in the order a conversion passes them; the crash tests
/// name them (tests/fault_points.rs checks the scripts against this list).
pub const POINTS: &[&str] = &[
    "suspended",
    "moved",
    "unlabeled",
    "secondary",
    "header",
    "activated",
    "loaded",
    "lv-resumed",
    "run-25",
    "run-50",
    "run-75",
    "mover-synced",
    "mover-suspended",
    "commit",
    "commit-primary",
    "committed",
    "name-resumed",
    "mirrors-resumed",
    "decrypt-tail",
    "decrypt-head",
    "decrypt-loaded",
    "decrypt-committed",
    "back-loaded",
    "back-hot",
    "back-half",
    "back-wiped",
];

/// How often each entry of PVENCRYPT_FAULT was passed (for `STEP@N`).
static PASSED: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];

pub fn point(step: &str) {
    trace(step);
    debug_assert!(POINTS.contains(&step), "unknown fault point {step}");
    if let Some(Some((s, how))) = FAULT.get() {
        let hit = |(i, e): (usize, &str)| match e.split_once('@') {
            None => e == step,
            Some((name, n)) => {
                name == step && PASSED.get(i).is_some_and(|p| p.fetch_add(1, Ordering::Relaxed) + 1 == n.parse().unwrap_or(1))
            }
        };
        if s.split('|').enumerate().any(hit) && !how.starts_with("fail") {
            if how == "exit" {
                crate::sys::exit_now(99);
            }
            if how == "stop" {
                // For a test to look at the disk at this instant, then SIGCONT.
                crate::sys::stop_self();
                return;
            }
            // No sync: whatever the kernel has not written is lost, as in a power cut.
            crate::sys::power_off_now();
        }
    }
}

/// Crash tests cut the power part-way through the data phase (`run-25`, `run-50`,
/// `run-75`), once per mark the progress from `before` to `done` of `total` crosses.
pub fn data_marks(before: u64, done: u64, total: u64) {
    for p in [25, 50, 75] {
        if total > 0 && done * 100 >= total * p && before * 100 < total * p {
            point(["run-25", "run-50", "run-75"][p as usize / 25 - 1]);
        }
    }
}

/// Under PVENCRYPT_TRACE: the process's peak and current resident memory, for the
/// benchmark's memory figure to be explained; with =memory, the mappings that hold it
/// (reading them costs megabytes of heap, which the peak then counts).
pub fn memory(at: &str) {
    if tracing() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let v: Vec<&str> = status.lines().filter(|l| ["VmHWM", "VmRSS", "VmLck"].iter().any(|k| l.starts_with(k))).collect();
        let (used, free, mmapped) = crate::sys::malloc_kib();
        trace(format_args!(
            "memory at {at}: {} malloc: {} kB in use, {} kB free, {} kB mmapped",
            v.join(" ").split_whitespace().collect::<Vec<_>>().join(" "),
            used,
            free,
            mmapped
        ));
        if TRACE.get().is_none_or(|t| t.as_deref() != Some("memory")) {
            return;
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let (mut maps, mut name) = (Vec::new(), String::new());
        for l in smaps.lines() {
            if l.split_whitespace().next().is_some_and(|w| w.contains('-')) {
                name = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
                if name.is_empty() {
                    name = format!("anonymous {}", l.split_whitespace().next().unwrap_or(""));
                }
            } else if let Some(kb) = l.strip_prefix("Rss:") {
                maps.push((kb.trim().trim_end_matches(" kB").parse::<u64>().unwrap_or(0), name.clone()));
            }
        }
        maps.sort_by(|a, b| b.cmp(a));
        for (kb, n) in maps.iter().take(8) {
            trace(format_args!("  {kb} kB {n}"));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_builds_read_no_fault() {
        // SAFETY: tests of this module do not read the environment concurrently.
        unsafe { std::env::set_var("PVENCRYPT_FAULT", "resume x:fail2") };
        super::init();
        let fired = super::fails("resume", "x");
        assert_eq!(fired, cfg!(feature = "fault-injection"));
    }

    #[test]
    fn release_builds_read_no_trace() {
        // SAFETY: tests of this module do not read the environment concurrently.
        unsafe { std::env::set_var("PVENCRYPT_TRACE", "debug") };
        assert_eq!(super::tracing(), cfg!(feature = "fault-injection"));
        assert_eq!(super::tracing_debug(), cfg!(feature = "fault-injection"));
        // `--debug` works in every build.
        super::set_debug();
        assert!(super::debug());
    }
}
