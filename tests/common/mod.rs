//! What the tests share: temporary directories and loop devices that go away when dropped,
//! even when a test panics, and the root check of tests that need loop devices. The
//! integration tests use it as `mod common`; the library's unit tests as `crate::testing`
//! (lib.rs includes this file).
#![allow(dead_code)]

use std::{
    fs,
    ops::Deref,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

/// A directory of its own under the temporary directory, removed with what it holds on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `what` names it for whoever finds one left by a killed test run.
    pub fn new(what: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pvencrypt-{what}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// True as root; otherwise says why the test is skipped.
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("skipped: needs root (loop devices, LVM)");
    false
}

/// A loop device over a file of `size` bytes that starts with `content`; detached and
/// deleted on drop. None when not root.
pub struct Loop {
    pub dev: PathBuf,
    /// The backing file (resize it, then `losetup -c`).
    pub file: PathBuf,
    _dir: TempDir,
}

impl Loop {
    pub fn new(content: &[u8], size: u64) -> Option<Loop> {
        if !is_root() {
            return None;
        }
        let dir = TempDir::new("loop");
        let file = dir.join("img");
        fs::write(&file, content).unwrap();
        fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(size.max(content.len() as u64)).unwrap();
        let out = losetup().args(["-f", "--show"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Some(Loop { dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()), file, _dir: dir })
    }

    /// The device's path as a string, for command lines.
    pub fn name(&self) -> &str {
        self.dev.to_str().expect("a loop device's path is UTF-8")
    }

    /// `mib` MiB of zeros.
    pub fn zeroed(mib: u64) -> Option<Loop> {
        Loop::new(&[], mib << 20)
    }
}

/// A program holding none of the test process's descriptors: the unit tests' libcryptsetup
/// contexts, in other threads, open devices O_EXCL without O_CLOEXEC, and a losetup or swtpm
/// that kept one would make their next exclusive open fail. Closed in the child (a fork),
/// so that no thread opens one in between (the product's `sys::spawn` has a lock for that).
pub fn unshared(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    // SAFETY: close_range is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int);
            Ok(())
        });
    }
    c
}

/// Detaches a loop device the code under test attached, when dropped.
pub struct Detach(pub PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = losetup().arg("-d").arg(&self.0).status();
    }
}

fn losetup() -> Command {
    unshared("losetup")
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = losetup().arg("-d").arg(&self.dev).status();
    }
}
