//! The guardian: a child process that resumes NAME should pvencrypt die while NAME is
//! suspended for a commit (SIGKILL, the OOM killer), since nothing else would.

use std::process::Child;

use crate::{
    dm::{Dm, DmName},
    error::{Context, Result},
    sys,
};

/// A child that resumes NAME if pvencrypt dies while NAME is suspended (SIGKILL, the
/// OOM killer): it waits for its stdin to close, which happens however we end.
pub(super) struct Guardian(Child);

impl Guardian {
    pub(super) fn spawn(name: &DmName) -> Result<Guardian> {
        let child = std::process::Command::new("/proc/self/exe")
            .env(GUARD_ENV, name.as_str())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .or_fail(|| "Cannot start the guardian process".into())?;
        Ok(Guardian(child))
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

pub const GUARD_ENV: &str = "PVENCRYPT_GUARD";

/// The guardian's whole life (main.rs runs it when GUARD_ENV is set).
pub fn guard(name: &str) -> ! {
    let name = DmName::new(name).unwrap_or_else(|_| sys::exit_now(2));
    sys::setsid();
    for s in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
        sys::ignore_signal(s);
    }
    sys::protect_from_oom_killer();
    let _ = sys::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE);
    let dm = Dm::open();
    let mut buf = [0u8; 64];
    while !matches!(std::io::Read::read(&mut std::io::stdin(), &mut buf), Ok(0) | Err(_)) {}
    if let Ok(dm) = dm {
        // A table loaded for the next commit names mirrors that never started: a later
        // `dmsetup resume` would hang on them.
        if dm.has_inactive(&name).unwrap_or(false) {
            let _ = dm.clear_inactive(&name);
        }
        if dm.is_suspended(&name) {
            // The live table is right for either header a kill there can leave (mover.rs).
            let ok = dm.resume(&name).is_ok();
            sys::syslog(
                libc::LOG_WARNING,
                &format!("pvencrypt died while {name} was suspended; {}", if ok { "resumed it" } else { "cannot resume it" }),
            );
        }
    }
    sys::exit_now(0)
}
