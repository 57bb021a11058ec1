//! LVM's VG lock, taken by pvencrypt itself.

use std::{fs::File, path::Path};

use super::VgName;
use crate::error::{Context, Result};

/// LVM's own VG lock (the flock its commands take), so no LVM command changes the VG
/// or its tables while we move them. While it is held, lvm2cmd runs only with
/// `--readonly`: the library would wait for it forever.
pub struct VgLock(#[allow(dead_code)] File);

impl VgLock {
    pub fn take(dir: &Path, vg: &VgName) -> Result<VgLock> {
        let path = dir.join(format!("V_{vg}"));
        crate::sys::lock_file(&path).map(VgLock).or_fail(|| format!("Cannot take the LVM lock {}", path.display()))
    }
}
