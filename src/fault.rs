//! Test-only fault injection: PVENCRYPT_FAULT=STEP[:halt|:exit] stops the program at a
//! named step, either by cutting the (virtual) machine's power without a sync or by
//! exiting at once, so that crash tests can prove every step's crash story.

use std::{sync::OnceLock, time::Instant};

static FAULT: OnceLock<Option<(String, String)>> = OnceLock::new();

/// Reads the setting once, before any freeze, so checking it later allocates nothing.
pub fn init() {
    FAULT.get_or_init(|| {
        let v = std::env::var("PVENCRYPT_FAULT").ok()?;
        let (step, how) = v.split_once(':').unwrap_or((&v, "halt"));
        Some((step.to_string(), how.to_string()))
    });
}

static TRACE: OnceLock<bool> = OnceLock::new();

/// PVENCRYPT_TRACE=1 prints every step as it happens, even inside the freeze (unsafe
/// when stderr is on a filesystem of the PV; for tests only).
pub fn tracing() -> bool {
    *TRACE.get_or_init(|| std::env::var_os("PVENCRYPT_TRACE").is_some())
}

static T0: OnceLock<Instant> = OnceLock::new();

/// Each line carries the milliseconds since the first one, so a log shows where a
/// freeze spends its time.
pub fn trace(what: impl std::fmt::Display) {
    if tracing() {
        let ms = T0.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0;
        eprintln!("pvencrypt: trace: {what} +{ms:.1}ms");
    }
}

pub fn point(step: &str) {
    trace(step);
    if let Some(Some((s, how))) = FAULT.get() {
        if s == step {
            if how == "exit" {
                unsafe { libc::_exit(99) };
            }
            // No sync: whatever the kernel has not written is lost, as in a power cut.
            unsafe { libc::reboot(libc::RB_POWER_OFF) };
            unsafe { libc::_exit(99) };
        }
    }
}
