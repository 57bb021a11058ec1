//! A key file that is a block device holding a PV or a LUKS header is refused with exit 3
//! before anything is asked or changed (a swapped argument: `pvencrypt -d /dev/sda5 KEY`).
//! The real binary on loop devices; needs root, returns early with a message otherwise.

mod common;

use std::{
    env, fs,
    process::{Command, Output, Stdio},
};

use common::{is_root, Loop};

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
    let target = Loop::new(&image(b"", 0), 0).expect("root");
    let before = fs::read(target.name()).unwrap();
    // A PV's label sits in sector 1.
    let pv = Loop::new(&image(b"LABELONE", 512), 0).expect("root");
    refused(&pvencrypt(&["-d", pv.name(), "-y", target.name()]), "an LVM label");
    refused(&pvencrypt(&["--key-file", pv.name(), "--test", target.name()]), "an LVM label");
    let luks = Loop::new(&image(b"LUKS\xba\xbe", 0), 0).expect("root");
    refused(&pvencrypt(&["-d", luks.name(), target.name()]), "a LUKS header");
    // Resuming (no PV) repairs before it asks: refused before that too.
    refused(&pvencrypt(&["-d", luks.name()]), "a LUKS header");
    assert!(fs::read(target.name()).unwrap() == before, "the target was written");
}

#[test]
fn a_raw_key_partition_is_a_key_file() {
    if !is_root() {
        return;
    }
    let target = Loop::new(&image(b"", 0), 0).expect("root");
    let key = Loop::new(&image(b"not a volume", 0), 0).expect("root");
    // Goes on to preflight (which fails on a host without device-mapper, or because the
    // target is no PV), not refused for the key file.
    let out = pvencrypt(&["-d", key.name(), "--test", target.name()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("swapped argument"), "{err}");
    assert_ne!(out.status.code(), Some(0), "{err}");
}
