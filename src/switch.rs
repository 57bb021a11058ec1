//! The live switch: under a short freeze, the PV gets its LUKS2 header and every LV
//! moves from the raw device onto /dev/mapper/NAME. This is where the LVs are
//! suspended and resumed.
//!
//! Crash story, step by step:
//! - before `init_reencryption` returns: nothing on the disk changed but the free tail;
//!   the plain PV is intact;
//! - after it: the first segment has a copy at the device's end; the start is untouched,
//!   so the device is still the plain PV;
//! - after `place_header`: the device is LUKS2 in reencryption (nothing encrypted yet);
//!   stock `cryptsetup open` shows the PV; `pvencrypt` resumes.
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
    dm::{self, Dm, Holder, Target},
    error::{fail, Context, Error, Result},
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

/// Keeps every page of the process in RAM from here on: a page fault that has to read
/// the binary from a suspended disk would never return.
pub fn lock_memory() -> Result<()> {
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return fail(format!("mlockall: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Switch<'_> {
    pub fn run(&self, p: &Prepared, fmt: &Format) -> Result<Switched> {
        // Dirty pages flushed now are pages the suspend does not have to flush.
        fault::trace("sync");
        unsafe { libc::sync() };
        fault::trace("synced");
        let _lock = VgLock::take(self.lock_dir, self.vg_name)?;
        // Read under the lock: no LV can appear or change from here on.
        let mut holders = self.dm.holders(self.raw)?;
        holders.retain(|h| h.name != self.alias_name);
        let direct: Vec<(&Holder, Vec<Target>)> = holders
            .iter()
            .filter(|h| h.direct)
            .map(|h| Ok((h, self.dm.table(&h.name)?)))
            .collect::<Result<_>>()?;

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

        let done = self.switch_suspended(p, fmt, &direct);
        let resumed = self.resume_all(&suspended);
        let freeze = t0.elapsed();
        let (crypt, retargeted) = done?;
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
    fn switch_suspended(&self, p: &Prepared, fmt: &Format, direct: &[(&Holder, Vec<Target>)]) -> Result<(Device, Vec<String>)> {
        luks::init_reencryption(p, fmt, self.alias_path)?;
        fault::point("moved");
        let moved = moved_segment(p)?;
        fault::trace("read moved segment");
        if let Err(e) = luks::place_header(p, self.alias_path) {
            return Err(self.rollback(e, moved));
        }
        fault::point("header");
        // libcryptsetup refuses to open a device in reencryption while it is claimed
        // (the LVs claim the PV), so NAME is opened on the alias, then moved onto the PV.
        // Nothing is encrypted yet: its table is plain linear segments.
        let crypt = match self.open_on_raw(p) {
            Ok(d) => d,
            Err(e) => {
                self.deactivate();
                return Err(self.rollback(e, moved));
            }
        };
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
                self.deactivate();
                return Err(self.rollback(e, moved));
            }
            loaded.push(&h.name);
        }
        fault::point("loaded");
        Ok((crypt, loaded.iter().map(|n| n.to_string()).collect()))
    }

    fn open_on_raw(&self, p: &Prepared) -> Result<Device> {
        let mut cd = luks::open(self.alias_path)?;
        fault::trace("loaded header");
        luks::activate(&mut cd, self.name, Some(p.temp_slot), &p.temp_key)?;
        drop(cd);
        fault::trace("opened on alias");
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
        self.dm.resume(self.name)?;
        self.dm.device_of(self.name)
    }

    fn deactivate(&self) {
        self.dm.remove(self.name);
    }

    /// Puts the first segment back where it came from, overwriting the new header. Exact,
    /// because the LVs are suspended: nothing wrote to the device since the move.
    fn rollback(&self, cause: Error, (from, len): (u64, u64)) -> Error {
        let r = (|| -> std::io::Result<()> {
            let f = OpenOptions::new().read(true).write(true).open(self.alias_path)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < len {
                let n = (len - off).min(buf.len() as u64) as usize;
                f.read_exact_at(&mut buf[..n], from + off)?;
                f.write_all_at(&buf[..n], off)?;
                off += n as u64;
            }
            f.sync_all()
        })();
        match r {
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
    luks::moved_segment_in(&json).ok_or_else(|| Error::new(crate::error::Kind::Failed, "The new header records no moved segment"))
}
