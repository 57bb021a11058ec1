//! pvencrypt under systemd, as lvmpolld runs pvmove's polling.
//!
//! `-b` on a machine booted with systemd runs the conversion in a transient unit,
//! `pvencrypt-DEV.service` (systemd-run), out of the caller's login session: a logout or a
//! dropped ssh session leaves it alone, and `systemctl status` and the journal show it.
//! The unit runs the same command line again; only the passphrase does not come along.
//! systemd-run connects no descriptor of ours to the unit, and argv, the environment and
//! files are readable by others or outlive the run, so the passphrase goes through the
//! kernel keyring: a "user" key in root's user keyring under a random description, which
//! expires after `HANDOVER_SECS` whatever happens. Only the description goes to the unit
//! (its environment). The unit takes the key, unlinks and revokes it, and only then tells
//! systemd it is ready (Type=notify), so systemd-run returns once the key is gone; the
//! caller revokes it again in any case (a unit that failed to start).
//!
//! In a unit, messages carry the journal's priority prefixes (`<6>` info, `<3>` error),
//! and the progress goes to systemd as the unit's STATUS=.

use std::{
    ffi::OsString,
    io::{Read, Write},
    os::{linux::net::SocketAddrExt, unix::net::UnixDatagram},
    path::Path,
    process::{Command, Stdio},
    sync::OnceLock,
};

use zeroize::Zeroizing;

use crate::{
    error::{Error, Kind, Result},
    key::{self, Passphrase},
    sys,
};

/// The environment variable that carries the key's description into the unit.
pub const KEY_ENV: &str = "PVENCRYPT_KEYRING_KEY";
/// Set by pvencrypt-resume.service: conversions stopped with --abort stay stopped, and the
/// passphrase is asked through systemd's password agents (systemd-cryptsetup's cached one
/// first).
pub const AT_BOOT_ENV: &str = "PVENCRYPT_AT_BOOT";
/// Long enough for systemd to start the unit on a loaded machine; a key nobody took is
/// gone after that.
const HANDOVER_SECS: u32 = 60;
/// The kernel's limit for a "user" key's payload.
const MAX_USER_KEY: usize = 32767;

/// systemd is PID 1 (sd_booted(3)).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").exists()
}

/// This process is the unit `spawn` started.
pub fn in_unit() -> bool {
    std::env::var_os(KEY_ENV).is_some()
}

/// Started by pvencrypt-resume.service.
pub fn at_boot() -> bool {
    std::env::var_os(AT_BOOT_ENV).is_some()
}

/// The unit name for the devices (kernel names, "sda5"): `pvencrypt-sda5.service`.
pub fn unit_name(devs: &[String]) -> String {
    format!("pvencrypt-{}.service", devs.join("-"))
}

/// Starts the unit running this command line with `key`; returns when it has taken the
/// key and claimed its devices (or failed to).
pub fn spawn(devs: &[String], key: &Passphrase) -> Result<String> {
    let unit = unit_name(devs);
    if key.bytes().len() > MAX_USER_KEY {
        return Err(Error::new(
            Kind::Key,
            format!("A key of more than {MAX_USER_KEY} bytes cannot be handed to {unit}; run without -b (nohup, tmux)."),
        ));
    }
    let desc = format!("pvencrypt:{}", uuid::Uuid::new_v4().simple());
    let serial = sys::add_user_key(&desc, key.bytes(), HANDOVER_SECS)
        .map_err(|e| Error::new(Kind::Failed, format!("Cannot put the passphrase in the kernel keyring: {e}.")))?;
    let exe = std::env::current_exe().map_err(|e| Error::new(Kind::Failed, format!("Cannot find pvencrypt's binary: {e}.")))?;
    let mut cmd = Command::new("systemd-run");
    cmd.args(["--quiet", "--collect", "--service-type=notify", "--unit", &unit])
        .arg(format!("--description=pvencrypt: encrypting /dev/{}", devs.join(" /dev/")))
        .arg(format!("--setenv={KEY_ENV}={desc}"))
        // SIGTERM stops at the next checkpoint (exit 1, resumable: no failure); the
        // guardian (mover.rs) ignores it and leaves when pvencrypt does.
        .args(["-p", "TimeoutStopSec=5min", "-p", "SuccessExitStatus=1"]);
    if let Ok(cwd) = std::env::current_dir() {
        cmd.arg(OsString::from(format!("--working-directory={}", cwd.display())));
    }
    if cfg!(feature = "fault-injection") {
        for v in ["PVENCRYPT_FAULT", "PVENCRYPT_TRACE"] {
            if let Ok(val) = std::env::var(v) {
                cmd.arg(format!("--setenv={v}={val}"));
            }
        }
    }
    cmd.arg("--").arg(exe).args(std::env::args_os().skip(1)).stdin(Stdio::null());
    let status = cmd.status();
    sys::unlink_user_key(serial);
    match status {
        Ok(s) if s.success() => Ok(unit),
        Ok(s) => {
            Err(Error::new(Kind::Failed, format!("systemd-run could not start {unit} ({s}); journalctl -u {unit} says why.")))
        }
        Err(e) => Err(Error::new(Kind::Failed, format!("Cannot run systemd-run: {e}."))),
    }
}

/// In the unit: the passphrase `spawn` left in the keyring, taken out of it for good.
pub fn take_key() -> Result<Passphrase> {
    let desc = std::env::var(KEY_ENV).unwrap_or_default();
    let lost = |e: std::io::Error| {
        Error::new(
            Kind::Key,
            format!("The passphrase handed over in the kernel keyring ({desc}) is gone: {e}. Run pvencrypt again."),
        )
    };
    let serial = sys::take_user_key(&desc).map_err(lost)?;
    let mut buf = Zeroizing::new(vec![0u8; MAX_USER_KEY]);
    let read = sys::read_key(serial, &mut buf);
    sys::unlink_user_key(serial);
    let n = read.map_err(lost)?;
    buf.truncate(n);
    Passphrase::checked(buf, "The kernel keyring")
}

/// At boot: the passphrase systemd-cryptsetup cached when it unlocked a device, else asked
/// through systemd's password agents (the console, plymouth, `systemd-tty-ask-password-agent`).
pub fn ask_password(prompt: &str) -> Result<Passphrase> {
    let mut child = Command::new("systemd-ask-password")
        .args(["--accept-cached", "--keyname=cryptsetup", "--timeout=0", "--id=pvencrypt", prompt])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(Kind::Key, format!("Cannot run systemd-ask-password: {e}.")))?;
    let key = key::read_line(&mut child.stdout.take().expect("piped").take(4096), "systemd-ask-password");
    let status = child.wait();
    match status {
        Ok(s) if s.success() => key,
        _ => Err(Error::new(Kind::Key, "systemd-ask-password gave no passphrase.")),
    }
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

/// Tells systemd about this unit (sd_notify(3): "READY=1", "STATUS=..."); nothing when
/// not run as a unit that listens. Never blocks.
pub fn notify(state: &str) {
    static SOCKET: OnceLock<Option<(UnixDatagram, std::os::unix::net::SocketAddr)>> = OnceLock::new();
    let target = SOCKET.get_or_init(|| {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let b = path.as_encoded_bytes();
        let addr = match b.strip_prefix(b"@") {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?,
            None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
        };
        let sock = UnixDatagram::unbound().ok()?;
        sock.set_nonblocking(true).ok()?;
        Some((sock, addr))
    });
    if let Some((sock, addr)) = target {
        let _ = sock.send_to_addr(state.as_bytes(), addr);
    }
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

    #[test]
    fn unit_names() {
        assert_eq!(unit_name(&["sda5".into()]), "pvencrypt-sda5.service");
        assert_eq!(unit_name(&["sda5".into(), "sdb1".into()]), "pvencrypt-sda5-sdb1.service");
    }

    #[test]
    fn notify_needs_a_socket() {
        let dir = std::env::temp_dir().join(format!("pvencrypt-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixDatagram::bind(&dir).unwrap();
        // No other test reads NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &dir);
        notify("STATUS=hello");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=hello");
        std::fs::remove_file(&dir).unwrap();
    }
}
