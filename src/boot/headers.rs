//! /etc/pvencrypt/headers: the LUKS2 headers that live at their device's tail while
//! `--decrypt` runs (DECRYPT.md). One line per device, `NAME SOURCE OFFSET UUID`, read at
//! boot by pvencrypt-headers (libexec/), which attaches each tail that holds that UUID's
//! header as a loop device: crypttab's `header=/dev/disk/by-uuid/UUID`.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::{
    error::{Context, Result},
    units::Bytes,
};

pub const HEADERS: &str = "etc/pvencrypt/headers";

/// One device's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub name: String,
    /// A stable name of the device (`stable_source`), as crypttab's source.
    pub source: String,
    /// Where the header starts on the device.
    pub offset: Bytes,
    pub uuid: String,
}

impl std::fmt::Display for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} {}", self.name, self.source, self.offset.0, self.uuid)
    }
}

pub fn path(root: &Path) -> PathBuf {
    root.join(HEADERS)
}

/// The lines of the file (none when it is not there); lines it cannot read are skipped.
pub fn read(root: &Path) -> Vec<Tail> {
    let text = std::fs::read_to_string(path(root)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [name, source, offset, uuid, ..] => {
                Some(Tail { name: name.into(), source: source.into(), offset: Bytes(offset.parse().ok()?), uuid: uuid.into() })
            }
            _ => None,
        })
        .collect()
}

/// Adds NAME's line, or replaces the one there (a resumed run).
pub fn add(root: &Path, tail: &Tail) -> Result<()> {
    let p = path(root);
    if let Some(dir) = p.parent() {
        crate::sys::create_dir_durably(dir).or_fail(|| format!("Cannot create {}", dir.display()))?;
    }
    super::crypttab::rewrite(&p, |old| Some(lines_without(old, &tail.name) + &format!("{tail}\n")))?;
    Ok(())
}

/// Removes NAME's line (the decryption finished, or went back).
pub fn remove(root: &Path, name: &str) -> Result<()> {
    super::crypttab::rewrite(&path(root), |old| {
        let new = lines_without(old, name);
        (new != old).then_some(new)
    })?;
    Ok(())
}

fn lines_without(text: &str, name: &str) -> String {
    text.lines().filter(|l| l.split_whitespace().next() != Some(name)).map(|l| format!("{l}\n")).collect()
}

/// The header at byte `offset` of `disk` as a loop device, as pvencrypt-headers attaches it
/// at boot: udev gives it the /dev/disk/by-uuid link that crypttab's `header=` names, which
/// stays when the head no longer holds the header (systemd would stop NAME's unit when that
/// link went). One already over that tail is taken again. Its block size is the disk's,
/// with direct I/O: it caches nothing that pvencrypt's direct writes to the disk would
/// leave stale.
pub fn attach(disk: &Path, offset: Bytes) -> Result<PathBuf> {
    if let Some(p) = attached(disk, offset) {
        return Ok(p);
    }
    let block = crate::sys::logical_block_size(disk).or_fail(|| format!("Cannot read the block size of {}", disk.display()))?;
    let f =
        std::fs::OpenOptions::new().read(true).write(true).open(disk).or_fail(|| format!("Cannot open {}", disk.display()))?;
    crate::sys::loop_attach(&f, offset.0, block, &disk.to_string_lossy())
        .or_fail(|| format!("Cannot attach the header at the tail of {} as a loop device", disk.display()))
}

/// The loop device over `disk` from `offset` on, if there is one.
pub fn attached(disk: &Path, offset: Bytes) -> Option<PathBuf> {
    let rdev = std::fs::metadata(disk).ok()?.rdev();
    std::fs::read_dir("/sys/block").ok()?.flatten().find_map(|e| {
        let name = e.file_name().into_string().ok().filter(|n| n.starts_with("loop"))?;
        let at = |f: &str| std::fs::read_to_string(e.path().join("loop").join(f)).ok().map(|s| s.trim().to_string());
        let same = at("offset")?.parse::<u64>().ok()? == offset.0 && std::fs::metadata(at("backing_file")?).ok()?.rdev() == rdev;
        same.then(|| PathBuf::from("/dev").join(name))
    })
}

/// A name of the device that stays when its LUKS header leaves the head (the UUID goes with
/// it): its by-id link (the disk's serial or WWN), else its PARTUUID, else its by-path link;
/// None when udev gave it none of them.
pub fn stable_source(dev: devicemapper::Device) -> Option<String> {
    let links = |dir: &str| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(Path::new("/dev/disk").join(dir)) else { return Vec::new() };
        let mut v: Vec<String> = entries
            .flatten()
            .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.rdev() == libc::makedev(dev.major, dev.minor)))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    };
    // by-id also names what runs on the device (dm-, lvm-pv-uuid-, md-): not the disk.
    let by_id = links("by-id").into_iter().find(|l| !["dm-", "lvm-", "md-"].iter().any(|p| l.starts_with(p)));
    by_id
        .map(|l| format!("/dev/disk/by-id/{l}"))
        .or_else(|| links("by-partuuid").into_iter().next().map(|u| format!("PARTUUID={u}")))
        .or_else(|| links("by-path").into_iter().next().map(|l| format!("/dev/disk/by-path/{l}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_device_replaced_and_removed() {
        if !crate::sys::is_root() {
            return eprintln!("skipped: needs root (the lock lives in /run/pvencrypt)");
        }
        let dir = crate::testing::TempDir::new("headers");
        let root = dir.as_ref();
        assert_eq!(read(root), vec![]);
        let tail = |name: &str, offset: u64| Tail {
            name: name.into(),
            source: format!("/dev/disk/by-path/{name}"),
            offset: Bytes(offset),
            uuid: format!("u-{name}"),
        };
        add(root, &tail("vda_crypt", 1 << 30)).unwrap();
        add(root, &tail("vdb_crypt", 2 << 30)).unwrap();
        add(root, &tail("vda_crypt", 3 << 30)).unwrap();
        assert_eq!(read(root), vec![tail("vdb_crypt", 2 << 30), tail("vda_crypt", 3 << 30)]);
        assert_eq!(
            std::fs::read_to_string(path(root)).unwrap(),
            "vdb_crypt /dev/disk/by-path/vdb_crypt 2147483648 u-vdb_crypt\n\
             vda_crypt /dev/disk/by-path/vda_crypt 3221225472 u-vda_crypt\n"
        );
        remove(root, "vdb_crypt").unwrap();
        remove(root, "vdb_crypt").unwrap();
        assert_eq!(read(root), vec![tail("vda_crypt", 3 << 30)]);
    }
}
