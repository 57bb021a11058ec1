//! Running LVM commands inside this process through liblvm2cmd, with their output
//! captured through the log callback.

use super::*;

/// Lines the log callback collected during the current call. Only written
/// while sys::libdm is held, so this inner lock is never contended.
static CAPTURE: Mutex<Output> = Mutex::new(Output::new());

/// What one command printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    /// The report (JSON with `--reportformat json`), one line per LVM line.
    pub report: String,
    /// Error lines (log level ≤ 3). Successful commands can have some too,
    /// e.g. every `lvs` on a host without device-mapper.
    pub errors: Vec<String>,
    /// Other printed lines ("Logical volume ... created.", "WARNING: ...").
    pub messages: Vec<String>,
}

impl Output {
    const fn new() -> Output {
        Output { report: String::new(), errors: Vec::new(), messages: Vec::new() }
    }
}

/// Receives every line LVM logs, including all debug lines (LVM doesn't
/// filter for an external log function): only `--debug` shows those.
/// Must not panic: it is called from C.
unsafe extern "C" fn log_line(level: c_int, file: *const c_char, _line: c_int, _dm_errno: c_int, message: *const c_char) {
    // In case LVM's internal flag bits (_LOG_STDERR 128, _LOG_ONCE 256, ...)
    // ever reach us with the level.
    let level = (level & 0xf) as u32;
    if message.is_null() {
        return;
    }
    // SAFETY: LVM passes NUL-terminated strings valid for this call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    if level > sys::LVM2_LOG_PRINT {
        // --debug: as `lvm -vvvv` prints them.
        crate::fault::debug_line("lvm", &text);
        return;
    }
    // Report rows and plain messages share level 4; only the origin tells
    // them apart.
    // SAFETY: as above, `file` checked non-NULL.
    let from_report = !file.is_null() && unsafe { CStr::from_ptr(file) }.to_bytes().ends_with(b"libdm-report.c");
    let mut out = CAPTURE.lock().unwrap_or_else(PoisonError::into_inner);
    if level < sys::LVM2_LOG_PRINT {
        out.errors.push(text.into_owned());
    } else if from_report {
        out.report.push_str(&text);
        out.report.push('\n');
    } else {
        out.messages.push(text.into_owned());
    }
}

fn take_capture() -> Output {
    std::mem::take(&mut *CAPTURE.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Runs `f` and puts the process umask back afterwards: LVM sets 0077 at
/// init and on config reloads and leaves it so, which would silently change
/// the permissions of every file the rest of the program creates.
fn keeping_umask<T>(f: impl FnOnce() -> T) -> T {
    // Reading the umask requires setting it.
    let old = crate::sys::umask(0o077);
    let r = f();
    crate::sys::umask(old);
    r
}

// ---------------------------------------------------------------------------
// Running commands

/// lvm2_run splits its one string itself (`lvm_split`): whitespace separates
/// arguments, a token that starts with ' or " runs to the next same quote,
/// there is no escaping, a token starting with `#` ends the line, and at
/// most 63 arguments fit. Quoting every argument makes `#` and whitespace
/// safe; an argument with both quote characters can't be expressed.
/// Double quotes alone are allowed because `--config` values need them
/// (`devices { filter = [ "a|...|" ] }`).
fn command_line(args: &[&str]) -> Result<CString, Error> {
    const MAX_ARGS: usize = 63;
    let bad = |arg: &str, why| Err(Error::Argument { arg: arg.to_owned(), why });
    if args.is_empty() {
        return bad("", "no command given");
    }
    if args.len() > MAX_ARGS {
        return bad(args[MAX_ARGS], "LVM takes at most 63 arguments");
    }
    let mut line = String::new();
    for arg in args {
        let quote = if !arg.contains('\'') {
            '\''
        } else if !arg.contains('"') {
            '"'
        } else {
            return bad(arg, "contains both quote characters, which lvm_split can't escape");
        };
        if arg.contains('\0') {
            return bad(arg, "contains a NUL byte");
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push(quote);
        line.push_str(arg);
        line.push(quote);
    }
    Ok(CString::new(line).expect("NUL bytes rejected above"))
}

/// LVM's options common to all its commands, as the admin gave them to pvencrypt
/// (`--config`, `--devices`, `--devicesfile`): every command pvencrypt runs gets them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Common {
    pub config: Option<String>,
    /// `--devices`: LVM sees these devices only; the device a conversion opens is added
    /// (`see_device`), or LVM would lose the PV the moment it moves there.
    pub devices: Vec<String>,
    /// `--devicesfile`: the file under /etc/lvm/devices LVM reads and pvencrypt updates.
    pub devicesfile: Option<String>,
}

static COMMON: Mutex<Common> = Mutex::new(Common { config: None, devices: Vec::new(), devicesfile: None });

/// Sets the options every LVM command gets (once, before any runs).
pub fn set_common(c: Common) {
    *COMMON.lock().unwrap_or_else(PoisonError::into_inner) = c;
}

pub fn common() -> Common {
    COMMON.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// With `--devices`, LVM is also to see `dev` (/dev/mapper/NAME of a conversion): the PV
/// moves there at the switch.
pub fn see_device(dev: &str) {
    let mut c = COMMON.lock().unwrap_or_else(PoisonError::into_inner);
    if !c.devices.is_empty() && !c.devices.iter().any(|d| d == dev) {
        c.devices.push(dev.to_string());
    }
}

/// `args` with the common options after the command name (none without a command).
fn with_common(args: &[&str], c: &Common) -> Vec<String> {
    let Some((cmd, rest)) = args.split_first() else { return vec![] };
    let mut out = vec![cmd.to_string()];
    if let Some(v) = &c.config {
        out.extend(["--config".into(), v.clone()]);
    }
    if !c.devices.is_empty() {
        out.extend(["--devices".into(), c.devices.join(",")]);
    }
    if let Some(v) = &c.devicesfile {
        out.extend(["--devicesfile".into(), v.clone()]);
    }
    out.extend(rest.iter().map(|a| a.to_string()));
    out
}

/// Runs one LVM command in-process, `args[0]` being the command name
/// (`"pvs"`, `"vgcfgbackup"`, ...), with the common options (`set_common`). Success is
/// LVM's ECMD_PROCESSED (1); any other code becomes [`Error::Command`] carrying LVM's
/// error lines.
pub fn run(args: &[&str]) -> Result<Output, Error> {
    let full = with_common(args, &common());
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let args = &full[..];
    let line = command_line(args)?;
    // Every use of liblvm2cmd, and of CAPTURE through it, is serialized (sys::libdm).
    //
    // Each call gets a fresh LVM context (lvm2_init ... lvm2_exit) instead of
    // one handle kept for the life of the process: a kept handle keeps device
    // state between commands and then acts on stale devices. Seen on 2.03.16
    // with a kept handle: after a loop device shrank from 256 to 64 MiB,
    // `pvcreate` wrote a label recording 256 MiB (tests/lvm_loop.rs
    // `loop_sees_device_changes`); after a loop device was reattached with
    // another size, commands read past its end ("Error reading device
    // /dev/loop1 at 268369920"); and a VG restored with lock type dlm was
    // reported instead of refused for want of lvmlockd. The CLI gets a fresh
    // context per command too, so this is what LVM is tested for. It costs
    // about 15 ms per command (47 instead of 33 ms for a `vgs`) and leaks
    // nothing (RSS and open fds flat over 200 cycles).
    let _lvm = crate::sys::libdm();
    take_capture();
    // SAFETY: liblvm2cmd is used by this thread only (sys::libdm is held), the
    // context lives only inside this block, and `line` outlives the call.
    let rc = keeping_umask(|| unsafe {
        // Before init, so that init's own complaints are captured too.
        sys::lvm2_log_fn(Some(log_line));
        let h = sys::lvm2_init();
        if h.is_null() {
            return None;
        }
        // dmeventd would be asked to monitor what we activate, and would
        // then hold those devices open. This marks the command as run by
        // dmeventd, which also turns the devices file off: not for
        // lvmdevices, which activates nothing.
        if args[0] != "lvmdevices" {
            sys::lvm2_disable_dmeventd_monitoring(h);
        }
        let rc = sys::lvm2_run(h, line.as_ptr());
        sys::lvm2_exit(h);
        Some(rc)
    });
    let out = take_capture();
    match rc {
        None => Err(Error::Init { errors: out.errors }),
        Some(rc) if rc as u32 == sys::LVM2_COMMAND_SUCCEEDED => Ok(out),
        Some(rc) => Err(Error::Command { cmd: args.join(" "), rc, errors: out.errors }),
    }
}

/// The text an LVM command writes to a file (`write` runs it with the file's path): for
/// output that only goes to a file or to stdout, past the log capture. The file lives in
/// a directory of its own, made 0700 under /run (mkdtemp): a root process must not
/// write to a predictable name in a world-writable directory.
pub(super) fn output_file(cmd: &str, write: impl FnOnce(&Path) -> Result<(), Error>) -> Result<String, Error> {
    let dir = private_dir().map_err(|e| Error::report(cmd, format!("cannot make a private directory under /run: {e}")))?;
    let file = dir.join("output");
    let text = write(&file).and_then(|_| fs::read_to_string(&file).map_err(|e| Error::report(cmd, e.to_string())));
    let _ = fs::remove_dir_all(&dir);
    text
}

fn private_dir() -> io::Result<PathBuf> {
    crate::sys::mkdtemp(Path::new("/run/pvencrypt-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin's --config, --devices and --devicesfile go to every command, after its
    /// name; nothing is added without them.
    #[test]
    fn common_options_follow_the_command_name() {
        let args = ["pvs", "--reportformat", "json", "--", "/dev/sda5"];
        assert_eq!(with_common(&args, &Common::default()), args);
        assert!(matches!(run(&[]), Err(Error::Argument { .. })), "no command: refused before LVM runs");
        let c = Common {
            config: Some("devices { filter = [ \"a|.*|\" ] }".into()),
            devices: vec!["/dev/sda5".into(), "/dev/mapper/sda5_crypt".into()],
            devicesfile: Some("test.devices".into()),
        };
        assert_eq!(
            with_common(&args, &c),
            [
                "pvs",
                "--config",
                "devices { filter = [ \"a|.*|\" ] }",
                "--devices",
                "/dev/sda5,/dev/mapper/sda5_crypt",
                "--devicesfile",
                "test.devices",
                "--reportformat",
                "json",
                "--",
                "/dev/sda5"
            ]
        );
        assert_eq!(
            lvm_split(command_line(&["pvs", "--config", c.config.as_deref().unwrap()]).unwrap().to_str().unwrap())[2],
            c.config.unwrap()
        );
    }

    /// lvm_split from LVM 2.03.16 tools/lvmcmdline.c, to check that what
    /// we build splits back into exactly our arguments.
    fn lvm_split(line: &str) -> Vec<String> {
        let b = line.as_bytes();
        let (mut i, mut out) = (0, Vec::new());
        while i < b.len() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == b.len() || b[i] == b'#' {
                break;
            }
            let quote = (b[i] == b'\'' || b[i] == b'"').then(|| {
                i += 1;
                b[i - 1]
            });
            let start = i;
            while i < b.len() && quote.map_or(!b[i].is_ascii_whitespace(), |q| b[i] != q) {
                i += 1;
            }
            out.push(line[start..i].to_owned());
            i += 1;
        }
        out
    }

    #[test]
    fn command_line_splits_back_into_the_arguments() {
        let args = [
            "pvs",
            "--config",
            r#"devices { filter = [ "a|^/dev/loop0$|", "r|.*|" ] }"#,
            "#not-a-comment",
            "it's",
            "",
            "tab\there",
            "--",
            "/dev/disk/by-id/x y",
        ];
        let line = command_line(&args).unwrap();
        let line = line.to_str().unwrap();
        assert_eq!(
            line,
            r#"'pvs' '--config' 'devices { filter = [ "a|^/dev/loop0$|", "r|.*|" ] }' '#not-a-comment' "it's" '' 'tab	here' '--' '/dev/disk/by-id/x y'"#
        );
        assert_eq!(lvm_split(line), args);
        // Unquoted, the '#' would have cut the line short.
        assert_eq!(lvm_split("pvs #x y"), ["pvs"]);
    }

    #[test]
    fn command_line_rejects_what_lvm_split_cannot_carry() {
        let why = |args: &[&str]| match command_line(args) {
            Err(Error::Argument { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(why(&["pvs", r#"a'b"c"#]), "contains both quote characters, which lvm_split can't escape");
        assert_eq!(why(&["pvs", "a\0b"]), "contains a NUL byte");
        assert_eq!(why(&[]), "no command given");
        let many = vec!["x"; 64];
        assert_eq!(why(&many), "LVM takes at most 63 arguments");
        assert!(command_line(&many[..63]).is_ok());
        let e = command_line(&["pvs", r#"a'b"c"#]).unwrap_err();
        assert_eq!(e.to_string(), r#"cannot pass "a'b\"c" to LVM: contains both quote characters, which lvm_split can't escape"#);
    }
}
