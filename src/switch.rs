//! The live switch: under a short freeze, the PV gets its LUKS2 header and every LV
//! moves from the raw device onto /dev/mapper/NAME. This is where the LVs are
//! suspended and resumed.
//!
//! Everything slow happens before the freeze (`stage`): libcryptsetup initialises the
//! reencryption, copying the PV's first segment into the free tail, and NAME is opened
//! on an alias of the PV. The freeze itself only repeats that copy (the LVs wrote since),
//! writes the header bytes, points NAME and the LVs' tables at the PV and resumes.
//!
//! Crash story, step by step:
//! - before the header is written: nothing on the disk changed but the free tail; the
//!   plain PV is intact;
//! - the header is written from its second 4 KiB on first, its first 4 KiB (magic,
//!   checksum, and over the PV label) last: a crash in between leaves a valid secondary
//!   header next to the PV label, which `pvencrypt` recognises and finishes;
//! - after it: the device is LUKS2 in reencryption (nothing encrypted yet); stock
//!   `cryptsetup open` shows the PV; `pvencrypt` resumes.
//!
//! A failure (not a crash) inside the freeze before the LVs run on the new device is
//! rolled back: the first segment is copied home and the LVs resume on the raw PV.

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::Path,
    time::{Duration, Instant},
};

use devicemapper::Device;

use crate::{
    direct::{self, Aligned},
    dm::{self, Dm, Holder, Target},
    error::{fail, Context, Error, Kind, Result},
    fault,
    luks::{self, Format, Prepared},
};

pub struct Switch<'a> {
    pub dm: &'a Dm,
    pub raw: Device,
    pub raw_path: &'a Path,
    pub alias_path: &'a Path,
    /// The alias sits on the PV too, but it is ours and must stay running.
    pub alias_name: &'a str,
    pub name: &'a str,
    pub vg_name: &'a str,
    pub lock_dir: &'a Path,
}

pub struct Switched {
    pub freeze: Duration,
    pub retargeted: Vec<String>,
}

/// LVM's own VG lock (the flock its commands take), so no LVM command changes the VG
/// or its tables while we move them. Never held across an lvm2cmd call: the library
/// would wait for it forever.
struct VgLock(#[allow(dead_code)] File);

impl VgLock {
    fn take(dir: &Path, vg: &str) -> Result<VgLock> {
        let _ = std::fs::create_dir_all(dir);
        let path = dir.join(format!("V_{vg}"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .or_fail(|| format!("Cannot open the LVM lock {}", path.display()))?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return fail(format!("Cannot take the LVM lock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(VgLock(f))
    }
}

/// Keeps in RAM every page the freeze may touch: a page fault that has to read the
/// binary, a library or swap from a suspended disk would never return. The program and
/// its libraries are locked whole; anonymous memory is locked as it is now resident
/// (what is not is free heap or zero pages, which need no disk), unless some of it is
/// in swap: then everything is brought in and locked.
pub struct MemoryLock(());

impl MemoryLock {
    pub fn take() -> Result<MemoryLock> {
        // Freed heap (libcryptsetup's copy buffer, LVM's reports) goes back first, so that
        // it is neither locked nor counted for the whole run.
        unsafe { libc::malloc_trim(0) };
        let lock = MemoryLock(());
        let maps = std::fs::read_to_string("/proc/self/smaps").or_fail(|| "Cannot read /proc/self/smaps".into())?;
        if maps.lines().any(|l| l.starts_with("Swap:") && l.split_whitespace().nth(1) != Some("0")) {
            if unsafe { libc::mlockall(libc::MCL_CURRENT) } != 0 {
                return fail(format!("mlockall: {}", std::io::Error::last_os_error()));
            }
            return Ok(lock);
        }
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_ONFAULT) } != 0 {
            return fail(format!("mlockall: {}", std::io::Error::last_os_error()));
        }
        for (start, end) in file_mappings(&maps) {
            if unsafe { libc::mlock(start as *const libc::c_void, end - start) } != 0 {
                return fail(format!("mlock of the program's mappings: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(lock)
    }
}

/// Address ranges of the accessible mappings backed by a file (the binary, libraries).
fn file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    smaps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let path = f.nth(3)?;
            let (a, b) = range.split_once('-')?;
            let r = (usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?);
            (path.starts_with('/') && !perms.starts_with("---")).then_some(r)
        })
        .collect()
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        unsafe { libc::munlockall() };
    }
}

/// What `stage` prepared for the freeze.
pub struct Staged {
    header: Aligned,
    header_len: usize,
    /// Where libcryptsetup put the copy of the first segment: (offset, length).
    moved: (u64, u64),
    buf: Aligned,
}

impl Switch<'_> {
    /// Outside the freeze. On success NAME exists on the alias, with its table for the
    /// PV loaded but not live; on failure nothing but the free tail has changed (NAME
    /// may exist: `deactivate` removes it).
    pub fn stage(&self, p: &Prepared, fmt: &Format, size: u64) -> Result<Staged> {
        luks::init_reencryption(p, fmt, self.alias_path)?;
        fault::memory("init");
        let moved = moved_segment(p)?;
        let shift = fmt.shift * 512;
        // The tail wipe at the end relies on this placement.
        if moved != (size - shift, shift) {
            return fail(format!("libcryptsetup put the first segment at {moved:?}, not at the end of the device"));
        }
        let image = luks::header_image(p)?;
        fault::memory("image");
        luks::activate_staged(p, self.name, self.alias_path)?;
        fault::memory("activated");
        (|| {
            let alias = self.dm.device_of(self.alias_name)?;
            let table = self.dm.table(self.name)?;
            if let Some(t) = table.iter().find(|t| t.2 != "linear") {
                return fail(format!("{} has a {} segment before any data was encrypted", self.name, t.2));
            }
            let (new, n) = dm::retarget(&table, alias, self.raw);
            if n != table.len() {
                return fail(format!("{} does not map the alias in every segment: {table:?}", self.name));
            }
            self.dm.load_verified(self.name, &new)?;
            Ok(Staged {
                header: Aligned::from_bytes(&image),
                header_len: image.len(),
                moved,
                buf: Aligned::new(direct::CHUNK),
            })
        })()
    }

    pub fn run(&self, staged: &mut Staged) -> Result<Switched> {
        // Dirty pages flushed now are pages the suspend does not have to flush.
        fault::trace("sync");
        unsafe { libc::sync() };
        fault::trace("synced");
        let _lock = VgLock::take(self.lock_dir, self.vg_name)?;
        // Read under the lock: no LV can appear or change from here on.
        let mut holders = self.dm.holders(self.raw)?;
        holders.retain(|h| h.name != self.alias_name && h.name != self.name);
        let direct: Vec<(&Holder, Vec<Target>)> = holders
            .iter()
            .filter(|h| h.direct)
            .map(|h| Ok((h, self.dm.table(&h.name)?)))
            .collect::<Result<_>>()?;
        let crypt = self.dm.device_of(self.name)?;
        let f = direct::open(self.alias_path).or_fail(|| format!("Cannot open {}", self.alias_path.display()))?;

        fault::trace("locked");
        let t0 = Instant::now();
        let mut suspended = Vec::with_capacity(holders.len());
        for h in &holders {
            fault::trace(format_args!("suspend {}", h.name));
            if let Err(e) = self.dm.suspend(&h.name) {
                // Nothing changed yet; a resume error here would only hide the cause.
                let _ = self.resume_all(&suspended);
                return Err(e);
            }
            suspended.push(h);
        }
        fault::point("suspended");

        let done = self.switch_suspended(&f, staged, crypt, &direct);
        let resumed = self.resume_all(&suspended);
        let freeze = t0.elapsed();
        let retargeted = done?;
        resumed?;
        fault::point("resumed");

        // Nothing may map raw offsets once data starts moving.
        for (h, _) in &direct {
            let refs = dm::referenced(&self.dm.table(&h.name)?);
            if refs.contains(&self.raw) || !refs.contains(&crypt) {
                return fail(format!("{} still maps {} after the switch", h.name, self.raw_path.display()));
            }
        }
        Ok(Switched { freeze, retargeted })
    }

    /// Everything between suspend and resume. On error before the LVs are moved, the
    /// device is rolled back to the plain PV.
    fn switch_suspended(&self, f: &File, s: &mut Staged, crypt: Device, direct: &[(&Holder, Vec<Target>)]) -> Result<Vec<String>> {
        let (to, len) = s.moved;
        if let Err(e) = direct::copy(f, &mut s.buf, 0, to, len) {
            return fail(format!("Cannot copy the first {len} bytes of {} to its end: {e}", self.raw_path.display()));
        }
        fault::point("moved");
        // The binary header's first sector, with the magic, goes last: until then the
        // device still reads as the plain PV label.
        let header = &s.header[..s.header_len];
        let written = f
            .write_all_at(&header[4096..], 4096)
            .and_then(|_| f.sync_data())
            .and_then(|_| {
                fault::point("secondary");
                f.write_all_at(&header[..4096], 0)
            })
            .and_then(|_| f.sync_data())
            .and_then(|_| direct::verify(f, &mut s.buf, header, 0));
        if let Err(e) = written {
            return Err(self.rollback(f, s, Error::new(Kind::Failed, format!("Cannot write the LUKS2 header: {e}"))));
        }
        fault::point("header");
        if let Err(e) = self.dm.resume(self.name) {
            return Err(self.rollback(f, s, e));
        }
        fault::point("activated");
        let mut loaded: Vec<&str> = Vec::new();
        for (h, table) in direct {
            fault::trace(format_args!("load {}", h.name));
            let (new, n) = dm::retarget(table, self.raw, crypt);
            let r = if n == 0 {
                fail(format!("{} does not name {} in its table", h.name, self.raw))
            } else {
                self.dm.load_verified(&h.name, &new)
            };
            if let Err(e) = r {
                for h in &loaded {
                    self.dm.clear_inactive(h);
                }
                return Err(self.rollback(f, s, e));
            }
            loaded.push(&h.name);
        }
        fault::point("loaded");
        Ok(loaded.iter().map(|n| n.to_string()).collect())
    }

    /// Removes NAME unless something uses it (the kernel refuses then).
    pub fn deactivate(&self) {
        self.dm.remove(self.name);
    }

    /// Puts the first segment back where it came from, overwriting the new header, and
    /// removes NAME. Exact, because the LVs are suspended: nothing wrote since the copy.
    fn rollback(&self, f: &File, s: &mut Staged, cause: Error) -> Error {
        self.deactivate();
        let (from, len) = s.moved;
        match direct::copy(f, &mut s.buf, from, 0, len) {
            Ok(()) => Error::new(cause.kind, format!("{cause}\nThe device was restored to the plain PV; nothing changed.")),
            Err(e) => Error::new(
                cause.kind,
                format!("{cause}\nRestoring the first {len} bytes from offset {from} failed too: {e}. Do not reboot; copy them back by hand."),
            ),
        }
    }

    fn resume_all(&self, suspended: &[&Holder]) -> Result<()> {
        let mut first_err = None;
        for h in suspended.iter().rev() {
            fault::trace(format_args!("resume {}", h.name));
            if let Err(e) = self.dm.resume(&h.name) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Where libcryptsetup put the first segment (byte offset, length), from the header.
fn moved_segment(p: &Prepared) -> Result<(u64, u64)> {
    let mut cd = luks::open(&p.header.path())?;
    let json = cd.status_handle().dump_json().or_fail(|| "Cannot read the new header".into())?;
    luks::moved_segment_in(&json).ok_or_else(|| Error::new(Kind::Failed, "The new header records no moved segment"))
}
