//! `--status` and `--test` change nothing on any device, whatever state a crash left it
//! in, and `--status --reportformat json` stays valid JSON (issue 12, item 3). Root only:
//! the devices are loop devices; no device-mapper needed.

mod common;

use std::{fs, path::Path, process::Command};

use common::Loop;

fn digest(p: &Path) -> Vec<u8> {
    // The whole 64 MiB, compared as bytes: no hashing crate needed.
    fs::read(p).unwrap()
}

fn pvencrypt(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pvencrypt")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn status_and_test_leave_a_torn_header_alone() {
    if !common::is_root() {
        return;
    }
    // A PV label beside our secondary LUKS2 header: the state a crash between the header
    // writes left before the label went first, which the old --status "repaired".
    let label = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lvm/label_200m.bin")).unwrap();
    let mut secondary = b"SKUL\xba\xbe".to_vec();
    secondary.resize(4096, 0);
    secondary.extend_from_slice(br#"{"tokens":{"0":{"type":"pvencrypt","keyslots":[]}}}"#);
    let mut image = vec![0u8; 64 << 20];
    image[..label.len()].copy_from_slice(&label);
    image[0x4000..0x4000 + secondary.len()].copy_from_slice(&secondary);
    let lo = Loop::new(&image, 0).expect("root");
    let before = digest(&lo.dev);
    let dev = lo.dev.to_str().unwrap();

    let (rc, out, err) = pvencrypt(&["--status", "--reportformat", "json"]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let rows = v["report"][0]["conversion"].as_array().unwrap();
    let row = rows.iter().find(|r| r["pv"] == dev).unwrap_or_else(|| panic!("{dev} not listed: {out}"));
    assert_eq!(row["state"], "interrupted");
    assert!(digest(&lo.dev) == before, "--status wrote to {dev}");

    let (rc, _, err) = pvencrypt(&["--test", dev]);
    assert_eq!(rc, 3, "{err}");
    assert!(err.contains("crash cut inside its switch"), "{err}");
    assert!(digest(&lo.dev) == before, "--test wrote to {dev}");
}
