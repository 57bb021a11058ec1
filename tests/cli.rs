//! The habits of LVM's and cryptsetup's users (issue 22, item 5): their options work or are
//! refused with a clear message, and an invalid command line exits 3 as LVM's do (exit 2 is
//! a wrong passphrase, as cryptsetup's). Parsing comes before anything else, so no root and
//! no device are needed.

use std::process::{Command, Stdio};

fn pvencrypt(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pvencrypt")).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn an_invalid_command_line_exits_3() {
    for (args, says) in [
        (&["--bogus"][..], "unexpected argument '--bogus'"),
        (&["--reportformat", "json"], "--status"),
        (&["--type", "luks1", "/dev/null"], "possible values: luks2"),
        (&["--sector-size", "768", "/dev/null"], "768"),
        (&["--keyfile-size", "8", "/dev/null"], "--key-file"),
        (&["--devices", "/dev/sda5", "--devicesfile", "x.devices", "/dev/sda5"], "cannot be used with"),
    ] {
        let (rc, out) = pvencrypt(args);
        assert_eq!(rc, 3, "{args:?}: {out}");
        assert!(out.contains(says), "{args:?} should say {says:?}: {out}");
    }
}

#[test]
fn help_and_version_exit_0() {
    for arg in ["--help", "--version"] {
        let (rc, out) = pvencrypt(&[arg]);
        assert_eq!(rc, 0, "{arg}: {out}");
    }
    let (_, help) = pvencrypt(&["--help"]);
    for line in ["2  wrong passphrase", "3  refused before anything was changed", "6  failed, and undoing"] {
        assert!(help.contains(line), "--help lacks {line:?}");
    }
}

/// What a cryptsetup-reencrypt or LVM command line carries is accepted: the parse gets past
/// it (to the root check, when not root; to the device, as root).
#[test]
fn cryptsetup_and_lvm_spellings_parse() {
    for args in [
        &["--type", "luks2", "--batch-mode", "/dev/null"][..],
        &["--uuid", "2f4b3c0e-8d7a-4b7e-9a55-0d5e6f3a1b2c", "/dev/null"],
        &["--status", "--reportformat", "json_std"],
        &["--sector-size", "4096", "/dev/null"],
    ] {
        let (rc, out) = pvencrypt(args);
        assert!(!out.contains("error: "), "{args:?} did not parse: {out}");
        assert_ne!(rc, 2, "{args:?}: {out}");
    }
}
