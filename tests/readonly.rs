//! `--status` and `--test` change nothing on any device, whatever state a crash left it
//! in, and `--status --reportformat json` stays valid JSON (issue 12, item 3). Root only:
//! the devices are loop devices; no device-mapper needed.

use std::{
    fs,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
};

struct Loop {
    dev: PathBuf,
    file: PathBuf,
}

impl Loop {
    fn new(image: &[(u64, &[u8])]) -> Loop {
        let file = std::env::temp_dir().join(format!("pvencrypt-ro-{}.img", std::process::id()));
        let f = fs::File::create(&file).unwrap();
        f.set_len(64 << 20).unwrap();
        for (at, bytes) in image {
            f.write_all_at(bytes, *at).unwrap();
        }
        let out = Command::new("losetup").args(["-f", "--show"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop { dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()), file }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = fs::remove_file(&self.file);
    }
}

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
    if !pvencrypt::sys::is_root() {
        return eprintln!("skipped: needs root");
    }
    // A PV label beside our secondary LUKS2 header: the state a crash between the header
    // writes left before the label went first, which the old --status "repaired".
    let label = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lvm/label_200m.bin")).unwrap();
    let mut secondary = b"SKUL\xba\xbe".to_vec();
    secondary.resize(4096, 0);
    secondary.extend_from_slice(br#"{"tokens":{"0":{"type":"pvencrypt","keyslots":[]}}}"#);
    let lo = Loop::new(&[(0, &label), (0x4000, &secondary)]);
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
