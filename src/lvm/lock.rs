//! LVM's VG lock, taken by pvencrypt itself.

use std::{
    fs::{File, OpenOptions},
    path::Path,
};

/// LVM's own VG lock (the flock its commands take), so no LVM command changes the VG
/// or its tables while we move them. While it is held, lvm2cmd runs only with
/// `--readonly`: the library would wait for it forever.
pub struct VgLock(#[allow(dead_code)] File);

impl VgLock {
    pub fn take(dir: &Path, vg: &str) -> crate::error::Result<VgLock> {
        let _ = std::fs::create_dir_all(dir);
        let path = dir.join(format!("V_{vg}"));
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| {
            crate::error::Error::new(crate::error::Kind::Failed, format!("Cannot open the LVM lock {}: {e}", path.display()))
        })?;
        crate::sys::flock(&f, libc::LOCK_EX).map_err(|e| {
            crate::error::Error::new(crate::error::Kind::Failed, format!("Cannot take the LVM lock {}: {e}", path.display()))
        })?;
        Ok(VgLock(f))
    }
}
