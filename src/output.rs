//! Where pvencrypt's messages go: stdout and stderr (in a unit, the journal, each line with
//! its priority), the system log once detached (`-b` without systemd) or hung up, and
//! nowhere while the switch's freeze lasts (stderr may be a file on a suspended
//! filesystem).

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
};

use crate::error::{Error, Kind, Result};

/// After `detach`, messages go to the system log instead of the (gone) terminal.
static SYSLOG: AtomicBool = AtomicBool::new(false);
/// Set by SIGHUP (main.rs): the terminal is gone, the run goes on; from now on
/// messages go to the system log too.
pub static HUNG_UP: AtomicBool = AtomicBool::new(false);

/// Set by the switch while the devices on the PV are suspended: nothing may be written.
static HELD: AtomicBool = AtomicBool::new(false);

/// The switch's freeze begins (true) or ends (false).
pub fn hold(on: bool) {
    HELD.store(on, Ordering::SeqCst);
}

/// True while devices on the PV are suspended for the switch: nothing may be written then.
pub fn held() -> bool {
    HELD.load(Ordering::SeqCst)
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
        write_line(&mut std::io::stdout().lock(), libc::LOG_INFO, msg);
    }
}

/// An error or warning: stderr (in a unit, the journal), or the log once detached or
/// hung up.
pub fn error(msg: &str) {
    if detached() {
        syslog(libc::LOG_ERR, msg);
    } else {
        // A closed pipe or a hung-up terminal must not stop the run (println! panics).
        write_line(&mut std::io::stderr().lock(), libc::LOG_ERR, msg);
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

/// Whether stderr goes to the journal (systemd sets JOURNAL_STREAM to its device:inode).
fn to_journal() -> bool {
    static J: OnceLock<bool> = OnceLock::new();
    *J.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
        let Ok(m) = std::fs::metadata("/proc/self/fd/2") else { return false };
        v.to_string_lossy() == format!("{}:{}", m.dev(), m.ino())
    })
}

/// One line for the journal with its syslog priority (`libc::LOG_INFO`...), or None when
/// stderr does not go to the journal.
pub fn journal_line(prio: libc::c_int, msg: &str) -> Option<String> {
    to_journal().then(|| prefixed(prio, msg))
}

fn prefixed(prio: libc::c_int, msg: &str) -> String {
    // sd-daemon(3): a "<N>" prefix on every line sets its priority.
    msg.lines().map(|l| format!("<{prio}>{l}\n")).collect()
}

/// A line to stdout or stderr as it is; for the journal with its priority.
pub fn write_line(w: &mut dyn Write, prio: libc::c_int, msg: &str) {
    let line = journal_line(prio, msg).unwrap_or_else(|| format!("{msg}\n"));
    let _ = w.write_all(line.as_bytes()).and_then(|_| w.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_gets_the_priority() {
        assert_eq!(prefixed(libc::LOG_INFO, "/dev/sda5: Encrypted: 12.50%"), "<6>/dev/sda5: Encrypted: 12.50%\n");
        assert_eq!(prefixed(libc::LOG_ERR, "a\nb"), "<3>a\n<3>b\n");
    }
}
