//! `--debug`: libcryptsetup's and LVM's debug lines reach stderr, and no passphrase with
//! them. The library calls run in a child (this test binary again), whose stderr is
//! read: the log callbacks write straight to the process's stderr.

mod common;

use std::{env, fs, path::Path, process::Command};

use libcryptsetup_rs::{
    consts::{flags::CryptPbkdf, vals::CryptKdf},
    CryptPbkdfType,
};
use pvencrypt::{fault, key::KeySource, luks, lvm};

const CHILD: &str = "PVENCRYPT_DEBUG_TEST_CHILD";
const SECRET: &str = "correct-horse-battery-staple";

/// What the child does: build a LUKS2 header with a known passphrase (its PBKDF,
/// keyslot and token code all run) and one LVM command, with debug output on.
fn child(dir: &Path) {
    fault::set_debug();
    luks::capture_log();
    let key_file = dir.join("key");
    fs::write(&key_file, SECRET).unwrap();
    let key = KeySource { file: Some(&key_file), size: None, offset: None }.read("", false).unwrap();
    let data = dir.join("data");
    fs::File::create(&data).unwrap().set_len(64 << 20).unwrap();
    let fmt = luks::Format {
        cipher: "aes".into(),
        cipher_mode: "xts-plain64".into(),
        key_bytes: 64,
        sector_size: 512,
        label: None,
        uuid: uuid::Uuid::new_v4(),
        shift: pvencrypt::units::Sectors(32768),
        pbkdf: CryptPbkdfType {
            type_: CryptKdf::Pbkdf2,
            hash: Some("sha256".into()),
            time_ms: 0,
            iterations: 1000,
            max_memory_kb: 0,
            parallel_threads: 0,
            flags: CryptPbkdf::NO_BENCHMARK,
        },
        tpm2: None,
    };
    let marker = luks::Marker {
        type_: luks::TOKEN_TYPE.into(),
        keyslots: vec![],
        version: 1,
        name: pvencrypt::dm::DmName::new("t_crypt").unwrap(),
        vg_name: Some(pvencrypt::lvm::VgName("vg".into())),
        pv_uuid: "u".into(),
        temp_keyslot: None,
    };
    let formatted = luks::format(fmt, &data).unwrap_or_else(|e| panic!("{e}"));
    luks::prepare(formatted, &data, &key, &marker).unwrap_or_else(|e| panic!("{e}"));
    lvm::run(&["version"]).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn debug_prints_library_debug_lines_without_the_passphrase() {
    if let Some(dir) = env::var_os(CHILD) {
        return child(Path::new(&dir));
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for LVM");
        return;
    }
    let dir = common::TempDir::new("debug");
    let out = Command::new(env::current_exe().unwrap())
        .args(["--exact", "debug_prints_library_debug_lines_without_the_passphrase", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    drop(dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {err}");
    let count = |p: &str| err.lines().filter(|l| l.starts_with(p)).count();
    assert!(count("# libcryptsetup: ") > 10, "no libcryptsetup debug lines: {err}");
    assert!(count("# lvm: ") > 10, "no LVM debug lines: {err}");
    // The keyslot was made from the passphrase while debug lines were printed.
    assert!(err.contains("keyslot"), "{err}");
    assert!(!err.contains(SECRET), "the passphrase was printed");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "the passphrase was printed");
}
