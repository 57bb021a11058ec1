//! pvencrypt under systemd, as lvmpolld runs pvmove's polling.
//!
//! `-b` on a machine booted with systemd runs the conversion in a transient unit,
//! `pvencrypt-DEV.service` (systemd-run), out of the caller's login session: a logout or a
//! dropped ssh session leaves it alone, and `systemctl status` and the journal show it.
//! The unit runs the same command line again; only the passphrase does not come along.
//! argv, the environment and files are readable by others or outlive the run, and a key in
//! root's user keyring can be listed and read by every root process, so the passphrase goes
//! over a unix socket: we listen on an abstract socket of a random name (the only thing the
//! unit's environment carries), the unit connects, and we send the passphrase only to a
//! peer whose cgroup is the unit's (SO_PEERCRED's pid; only root moves processes between
//! cgroups, and systemd starts nothing else in the unit). Anyone may find the socket; no one
//! else gets an answer. The unit reads the passphrase and only then tells systemd it is
//! ready (Type=notify), so systemd-run returns once it is handed over; the socket goes
//! with us. (systemd-run's `--pipe` would wait for the unit to end, and `-p OpenFile=`
//! needs systemd 253.)
//!
//! In a unit, messages carry the journal's priority prefixes (`<6>` info, `<3>` error),
//! and the progress goes to systemd as the unit's STATUS=.

use std::{
    ffi::OsString,
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream},
    },
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

/// The environment variable that carries the hand-over socket's name into the unit.
pub const HANDOVER_ENV: &str = "PVENCRYPT_HANDOVER";
/// Set by pvencrypt-resume.service: conversions stopped with --abort stay stopped, and the
/// passphrase is asked through systemd's password agents (systemd-cryptsetup's cached one
/// first).
pub const AT_BOOT_ENV: &str = "PVENCRYPT_AT_BOOT";
/// A key file's limit (key.rs), with room to spare.
const MAX_HANDOVER: usize = 16 << 20;

/// systemd is PID 1 (sd_booted(3)).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").exists()
}

/// This process is the unit `spawn` started.
pub fn in_unit() -> bool {
    std::env::var_os(HANDOVER_ENV).is_some()
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
    let name = format!("pvencrypt-{}", uuid::Uuid::new_v4().simple());
    let listener = SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|a| UnixListener::bind_addr(&a))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::new(Kind::Failed, format!("Cannot open a socket to hand the passphrase to {unit}: {e}.")))?;
    let exe = std::env::current_exe().map_err(|e| Error::new(Kind::Failed, format!("Cannot find pvencrypt's binary: {e}.")))?;
    let mut cmd = Command::new("systemd-run");
    cmd.args(["--quiet", "--collect", "--service-type=notify", "--unit", &unit])
        .arg(format!("--description=pvencrypt: encrypting /dev/{}", devs.join(" /dev/")))
        .arg(format!("--setenv={HANDOVER_ENV}={name}"))
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
    let mut child = crate::sys::spawn(&mut cmd).map_err(|e| Error::new(Kind::Failed, format!("Cannot run systemd-run: {e}.")))?;
    let served = serve(&listener, &unit, key.bytes(), || child.try_wait());
    drop(listener);
    let status = match served {
        Ok(Some(s)) => Ok(s),
        Ok(None) => child.wait(),
        Err(e) => {
            let _ = child.wait();
            Err(e)
        }
    };
    match status {
        Ok(s) if s.success() => Ok(unit),
        Ok(s) => {
            Err(Error::new(Kind::Failed, format!("systemd-run could not start {unit} ({s}); journalctl -u {unit} says why.")))
        }
        Err(e) => Err(Error::new(Kind::Failed, format!("Cannot hand the passphrase to {unit}: {e}."))),
    }
}

/// Sends `key` to the first peer that runs in `unit`'s cgroup, or waits until `done` says
/// the unit's start is over: Some(what it said), or None once the key is handed over.
fn serve<T>(
    listener: &UnixListener,
    unit: &str,
    key: &[u8],
    mut done: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    loop {
        if let Some(t) = done()? {
            return Ok(Some(t));
        }
        sys::poll_in(listener.as_raw_fd(), 100);
        let mut conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Anyone else who found the socket gets it closed, nothing more.
        if sys::peer_pid(&conn).is_ok_and(|pid| in_cgroup_of(pid, unit)) {
            conn.set_nonblocking(false)?;
            conn.write_all(&(key.len() as u32).to_le_bytes())?;
            conn.write_all(key)?;
            return Ok(None);
        }
    }
}

/// Whether process `pid` runs in `unit`'s cgroup (a line of /proc/PID/cgroup ending in it).
fn in_cgroup_of(pid: libc::pid_t, unit: &str) -> bool {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cgroups.lines().any(|l| l.rsplit_once('/').is_some_and(|(_, last)| last == unit))
}

/// In the unit: the passphrase `spawn` hands over.
pub fn take_key() -> Result<Passphrase> {
    let name = std::env::var(HANDOVER_ENV).unwrap_or_default();
    let lost = |e: io::Error| {
        Error::new(
            Kind::Key,
            format!(
                "The passphrase was not handed over ({e}): the pvencrypt that started this unit is gone. Run pvencrypt again."
            ),
        )
    };
    fetch(&name).map_err(lost).and_then(|buf| Passphrase::checked(buf, "The hand-over"))
}

fn fetch(name: &str) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut conn = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HANDOVER {
        return Err(io::Error::other(format!("{len} bytes")));
    }
    // Sized once: a growing buffer would leave copies behind.
    let mut buf = Zeroizing::new(vec![0u8; len]);
    conn.read_exact(&mut buf)?;
    Ok(buf)
}

/// At boot: the passphrase systemd-cryptsetup cached when it unlocked a device, else asked
/// through systemd's password agents (the console, plymouth, `systemd-tty-ask-password-agent`).
pub fn ask_password(prompt: &str) -> Result<Passphrase> {
    let mut child = crate::sys::spawn(
        Command::new("systemd-ask-password")
            .args(["--accept-cached", "--keyname=cryptsetup", "--timeout=0", "--id=pvencrypt", prompt])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
    .map_err(|e| Error::new(Kind::Key, format!("Cannot run systemd-ask-password: {e}.")))?;
    let key = key::read_line(&mut child.stdout.take().expect("piped").take(4096), "systemd-ask-password");
    let status = child.wait();
    match status {
        Ok(s) if s.success() => key,
        _ => Err(Error::new(Kind::Key, "systemd-ask-password gave no passphrase.")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        assert_eq!(unit_name(&["sda5".into()]), "pvencrypt-sda5.service");
        assert_eq!(unit_name(&["sda5".into(), "sdb1".into()]), "pvencrypt-sda5-sdb1.service");
    }

    /// Both sides of the -b hand-over in one process: a peer outside the unit's cgroup gets
    /// nothing, the unit's gets the passphrase.
    #[test]
    fn handover_only_to_the_unit() {
        let name = format!("pvencrypt-test-{}", std::process::id());
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        listener.set_nonblocking(true).unwrap();
        let serve_to = |unit: &str| {
            let n = name.clone();
            let client = std::thread::spawn(move || fetch(&n));
            let served = serve(&listener, unit, b"secret", || Ok(client.is_finished().then_some(()))).unwrap();
            (served, client.join().unwrap())
        };
        let (served, got) = serve_to("pvencrypt-sda5.service");
        assert_eq!(served, Some(()), "not handed over");
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // Our own cgroup stands for the unit's.
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(ours) = cgroups.lines().filter_map(|l| l.rsplit_once('/')).map(|(_, u)| u).find(|u| !u.is_empty()) else {
            return;
        };
        let (served, got) = serve_to(ours);
        assert_eq!(served, None, "handed over");
        assert_eq!(&got.unwrap()[..], b"secret");
    }

    #[test]
    fn notify_needs_a_socket() {
        let dir = crate::testing::TempDir::new("notify");
        let sock = dir.join("sock");
        let listener = UnixDatagram::bind(&sock).unwrap();
        // No other test reads NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &sock);
        notify("STATUS=hello");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=hello");
    }
}
