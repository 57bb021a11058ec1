//! A key file that is a block device holding a PV or a LUKS header is refused with exit 3
//! before anything is asked or changed (a swapped argument: `pvencrypt -d /dev/sda5 KEY`).
//! The real binary on loop devices; needs root, returns early with a message otherwise.

use std::{
    env, fs,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

/// A loop device over a file holding `content`; detached and deleted on drop.
struct Loop {
    dev: String,
    file: PathBuf,
}

impl Loop {
    fn new(content: &[u8]) -> Loop {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let file = env::temp_dir().join(format!("pvencrypt-keyfile-{}-{n}.img", std::process::id()));
        fs::write(&file, content).unwrap();
        let out = Command::new("losetup").args(["-f", "--show"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop { dev: String::from_utf8(out.stdout).unwrap().trim().to_owned(), file }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = fs::remove_file(&self.file);
    }
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("skipped: needs root for loop devices");
    false
}

/// 1 MiB of bytes that are no volume, with `magic` written at `at`.
fn image(magic: &[u8], at: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    v[at..at + magic.len()].copy_from_slice(magic);
    v
}

fn pvencrypt(args: &[&str]) -> Output {
    // No terminal and no stdin: a refusal must come before any question.
    Command::new(env!("CARGO_BIN_EXE_pvencrypt")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn refused(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("holding {what}, not a key: almost always a swapped argument")), "{err}");
}

#[test]
fn a_pv_or_luks_device_as_key_file_is_refused() {
    if !is_root() {
        return;
    }
    let target = Loop::new(&image(b"", 0));
    let before = fs::read(&target.dev).unwrap();
    // A PV's label sits in sector 1.
    let pv = Loop::new(&image(b"LABELONE", 512));
    refused(&pvencrypt(&["-d", &pv.dev, "-y", &target.dev]), "an LVM label");
    refused(&pvencrypt(&["--key-file", &pv.dev, "--test", &target.dev]), "an LVM label");
    let luks = Loop::new(&image(b"LUKS\xba\xbe", 0));
    refused(&pvencrypt(&["-d", &luks.dev, &target.dev]), "a LUKS header");
    // Resuming (no PV) repairs before it asks: refused before that too.
    refused(&pvencrypt(&["-d", &luks.dev]), "a LUKS header");
    assert!(fs::read(&target.dev).unwrap() == before, "the target was written");
}

#[test]
fn a_raw_key_partition_is_a_key_file() {
    if !is_root() {
        return;
    }
    let target = Loop::new(&image(b"", 0));
    let key = Loop::new(&image(b"not a volume", 0));
    // Goes on to preflight (which fails on a host without device-mapper, or because the
    // target is no PV), not refused for the key file.
    let out = pvencrypt(&["-d", &key.dev, "--test", &target.dev]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("swapped argument"), "{err}");
    assert_ne!(out.status.code(), Some(0), "{err}");
}
