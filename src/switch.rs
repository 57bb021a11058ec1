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
//! - the first 4 KiB go first: a record of the switch (inspect.rs) over the PV label.
//!   A crash then leaves neither a label nor a header: nothing activates on the device,
//!   and `pvencrypt` puts the plain PV back from the copy the record points to;
//! - then the header from its second 4 KiB on: a crash leaves a valid secondary header
//!   that stock libcryptsetup completes on open;
//! - then its first 4 KiB, with the magic: the device is LUKS2 in reencryption (nothing
//!   encrypted yet); stock `cryptsetup open` shows the PV; `pvencrypt` resumes.
//!
//! A failure (not a crash) inside the freeze before the LVs run on the new device is
//! rolled back: the first segment is copied home and the LVs resume on the raw PV.
//! Whatever happens inside, error or panic, every suspended device is resumed (`Frozen`);
//! signals wait until then, and nothing waits for udev (dm.rs, `unsynced`).

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use devicemapper::Device;

use crate::{
    direct::{self, Aligned},
    dm::{self, Dm, DmName, Holder, Target},
    error::{fail, Context, Error, Kind, Result, Written},
    fault,
    guardian::{Guardian, Watch},
    inspect::SwitchRecord,
    luks::{self, Prepared},
    output, sys,
    units::Bytes,
};

pub struct Switch<'a> {
    pub dm: &'a Dm,
    pub raw: Device,
    pub raw_path: &'a Path,
    pub alias_path: &'a Path,
    /// The alias sits on the PV too, but it is ours and must stay running.
    pub alias_name: &'a DmName,
    pub name: &'a DmName,
    pub pv_uuid: &'a str,
}

pub struct Switched {
    pub freeze: Duration,
    pub retargeted: Vec<String>,
}

/// Keeps in RAM every page the freeze may touch: a page fault that has to read the
/// binary, a library or swap from a suspended disk would never return. The program and
/// its libraries are locked whole; anonymous memory is locked as it is now resident
/// (what is not is free heap or zero pages, which need no disk), unless some of it is
/// in swap: then everything is brought in and locked.
pub struct MemoryLock(());

impl MemoryLock {
    /// Locks what is mapped and, as it is first touched, whatever is mapped later: the
    /// commit path allocates (ioctl buffers, messages) while NAME is suspended, and a page
    /// of it sent to a swap LV of this PV could never come back. Threads (the remover)
    /// are started before: their stacks are mapped, and locked as they are touched.
    pub fn take() -> Result<MemoryLock> {
        // Freed heap (libcryptsetup's copy buffer, LVM's reports) goes back first, so that
        // it is neither locked nor counted for the whole run.
        sys::malloc_trim();
        let lock = MemoryLock(());
        // On fault: a page never touched costs nothing, and its first touch reads no disk.
        sys::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT).or_fail(|| "mlockall".into())?;
        // Nothing resident leaves any more; what is in swap already, and the program's
        // files, come in now rather than on a fault in a freeze.
        let maps = std::fs::read_to_string("/proc/self/smaps").or_fail(|| "Cannot read /proc/self/smaps".into())?;
        for (start, end) in to_bring_in(&maps) {
            sys::mlock(start, end).or_fail(|| "mlock of the program's mappings".into())?;
        }
        Ok(lock)
    }
}

/// Address ranges of the accessible mappings backed by a file (the binary, libraries) or
/// with pages in swap.
fn to_bring_in(smaps: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut current = None;
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (perms, path) = (f.next().unwrap_or("---"), f.nth(3).unwrap_or(""));
            let r = (usize::from_str_radix(a, 16).unwrap_or(0), usize::from_str_radix(b, 16).unwrap_or(0));
            current = (!perms.starts_with("---") && r.0 < r.1).then_some(r);
            if path.starts_with('/') {
                ranges.extend(current.take());
            }
        } else if first == "Swap:" && f.next().is_some_and(|kb| kb != "0") {
            ranges.extend(current.take());
        }
    }
    ranges
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        sys::munlockall();
    }
}

/// What `stage` prepared for the freeze.
pub struct Staged {
    header: Aligned,
    header_len: usize,
    /// The first 4 KiB written: the switch record, then zeros (the label goes).
    unlabeled: Aligned,
    /// Where libcryptsetup put the copy of the first segment: (offset, length).
    moved: (Bytes, Bytes),
    buf: Aligned,
}

impl Switch<'_> {
    /// Outside the freeze. On success NAME exists on the alias, with its table for the
    /// PV loaded but not live; on failure nothing but the free tail has changed (NAME
    /// may exist: `deactivate` removes it). That tail is the first write.
    pub fn stage(&self, p: &Prepared, size: Bytes) -> Result<Staged, Written> {
        luks::init_reencryption(p, self.alias_path)?;
        fault::memory("init");
        let moved = moved_segment(p)?;
        let shift = p.fmt.shift.bytes();
        // The tail wipe at the end relies on this placement.
        if moved != (size - shift, shift) {
            return fail(format!("libcryptsetup put the first segment at {moved:?}, not at the end of the device"));
        }
        let image = luks::header_image(p)?;
        fault::memory("image");
        luks::activate_staged(p, self.name.as_str(), self.alias_path)?;
        fault::memory("activated");
        (|| -> Result<Staged> {
            let alias = self.dm.device_of(self.alias_name)?;
            let table = self.dm.table(self.name)?;
            if let Some(t) = table.iter().find(|t| t.kind != "linear") {
                return fail(format!("{} has a {} segment before any data was encrypted", self.name, t.kind));
            }
            let (new, n) = dm::retarget(&table, alias, self.raw);
            if n != table.len() {
                return fail(format!("{} does not map the alias in every segment: {table:?}", self.name));
            }
            self.dm.load_verified(self.name, &new)?;
            let record = SwitchRecord { moved, pv_uuid: self.pv_uuid.into(), name: self.name.to_string() };
            let record = record.encode().ok_or_else(|| Error::new(Kind::Failed, "The PV uuid or the name is too long"))?;
            Ok(Staged {
                header: Aligned::from_bytes(&image),
                header_len: image.len(),
                unlabeled: Aligned::from_bytes(&record),
                moved,
                buf: Aligned::new(direct::CHUNK),
            })
        })()
        .map_err(Written::from)
    }

    /// The freeze. The caller holds the VG lock (`VgLock`).
    pub fn run(&self, staged: &mut Staged) -> Result<Switched, Written> {
        // Dirty pages flushed now are pages the suspend does not have to flush.
        fault::trace("sync");
        sys::sync();
        fault::trace("synced");
        // Read under the lock: no LV can appear or change from here on.
        let mut holders = self.dm.holders(self.raw)?;
        holders.retain(|h| h.name != *self.alias_name && h.name != *self.name);
        let direct: Vec<(&Holder, Vec<Target>)> =
            holders.iter().filter(|h| h.direct).map(|h| Ok((h, self.dm.table(&h.name)?))).collect::<Result<_>>()?;
        let crypt = self.dm.device_of(self.name)?;
        let mut touched = vec![crypt];
        for h in &holders {
            touched.push(self.dm.device_of(&h.name)?);
        }
        let f = direct::open(self.alias_path).or_fail(|| format!("Cannot open {}", self.alias_path.display()))?;
        // A death in the freeze (SIGKILL, the OOM killer) must not leave the LVs suspended:
        // the guardian puts them back to work (guardian.rs); the OOM killer passes us by.
        sys::protect_from_oom_killer();
        let mut guardian = Guardian::spawn(&Watch::Switch {
            holders: holders.iter().map(|h| h.name.clone()).collect(),
            name: self.name.clone(),
            alias: self.alias_name.clone(),
            alias_path: self.alias_path.to_path_buf(),
            moved: (staged.moved.0 .0, staged.moved.1 .0),
        })?;

        fault::trace("locked");
        let t0 = Instant::now();
        let mut frozen = Frozen::new(self.dm, holders.len());
        for h in &holders {
            fault::trace(format_args!("suspend {}", h.name));
            // On error the guard resumes what was suspended; nothing changed yet.
            frozen.suspend(&h.name)?;
        }
        fault::point("suspended");

        let done = self.switch_suspended(&f, staged, crypt, &direct, &mut frozen, &mut guardian);
        let resumed = frozen.resume_all();
        let freeze = t0.elapsed();
        drop(frozen);
        drop(guardian);
        dm::udev_catch_up(&touched);
        let retargeted = done?;
        resumed?;
        fault::trace("resumed");

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
    fn switch_suspended(
        &self,
        f: &File,
        s: &mut Staged,
        crypt: Device,
        direct: &[(&Holder, Vec<Target>)],
        frozen: &mut Frozen,
        guardian: &mut Guardian,
    ) -> Result<Vec<String>> {
        let (to, len) = s.moved;
        if let Err(e) = direct::copy(f, &mut s.buf, Bytes(0), to, len) {
            return fail(format!("Cannot copy the first {len} of {} to its end: {e}", self.raw_path.display()));
        }
        guardian.copied();
        fault::point("moved");
        // The label goes before any header byte lands where LVM reads metadata or
        // extents; the magic comes last (see the crash story above).
        let header = &s.header[..s.header_len];
        let written = f
            .write_all_at(&s.unlabeled[..4096], 0)
            .and_then(|_| f.sync_data())
            .and_then(|_| {
                fault::point("unlabeled");
                f.write_all_at(&header[4096..], 4096)
            })
            .and_then(|_| f.sync_data())
            .and_then(|_| {
                fault::point("secondary");
                f.write_all_at(&header[..4096], 0)
            })
            .and_then(|_| f.sync_data())
            .and_then(|_| direct::verify(f, &mut s.buf, header, 0));
        if let Err(e) = written {
            let e = Error::new(Kind::Failed, format!("Cannot write the LUKS2 header: {e}"));
            return Err(self.rollback(f, s, frozen, &[], e));
        }
        fault::point("header");
        if let Err(e) = self.dm.resume(self.name) {
            return Err(self.rollback(f, s, frozen, &[], e));
        }
        fault::point("activated");
        let mut loaded: Vec<&DmName> = Vec::new();
        for (h, table) in direct {
            fault::trace(format_args!("load {}", h.name));
            let (new, n) = dm::retarget(table, self.raw, crypt);
            let r = if n == 0 {
                fail(format!("{} does not name {} in its table", h.name, self.raw))
            } else {
                self.dm.load_verified(&h.name, &new)
            };
            if let Err(e) = r {
                return Err(self.rollback(f, s, frozen, &loaded, e));
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
    /// The new tables already loaded (`loaded`) are dropped first; one that cannot be
    /// would map NAME once resumed, so that LV stays suspended and the error names it.
    fn rollback(&self, f: &File, s: &mut Staged, frozen: &mut Frozen, loaded: &[&DmName], cause: Error) -> Error {
        let mut kept = Vec::new();
        for &lv in loaded {
            if self.dm.clear_inactive(lv).is_err() || self.dm.has_inactive(lv).unwrap_or(true) {
                frozen.keep_suspended(lv);
                kept.push(lv);
            }
        }
        self.deactivate();
        let (from, len) = s.moved;
        let undo = direct::copy(f, &mut s.buf, from, Bytes(0), len).err().map(|e| {
            Error::caused_by(Kind::Unrecovered, format!("Restoring the first {len} from offset {} failed too", from.0), e)
        });
        let mut note = match (&undo, kept.is_empty()) {
            (None, true) => "The device was restored to the plain PV; nothing changed.".to_string(),
            (None, false) => "The device was restored to the plain PV.".to_string(),
            (Some(_), _) => "Do not reboot; copy them back by hand.".to_string(),
        };
        let kind = if undo.is_some() || !kept.is_empty() { Kind::Unrecovered } else { Kind::Failed };
        for lv in kept {
            let m = format!(
                "{lv} is left SUSPENDED: it holds a new table for {} that could not be dropped. Run `dmsetup clear {lv}`, \
                 then `dmsetup resume {lv}`.",
                self.name
            );
            loud(&m);
            note += &format!("\n{m}");
        }
        Error::rollback(kind, cause, undo, note)
    }
}

/// How often a resume is tried before the device is reported as left suspended.
const RESUME_TRIES: u32 = 5;

static PANIC_MSG: Mutex<Option<String>> = Mutex::new(None);

/// The devices suspended for the switch, resumed bottom-up when this goes out of scope
/// however it does (error or panic), each retried; a resume that keeps failing is
/// reported loudly (kernel log and stderr), never dropped. Signals wait meanwhile: a
/// SIGINT in the freeze is acted on at the next checkpoint.
pub struct Frozen<'a> {
    dm: &'a Dm,
    /// In suspend order (top-down).
    names: Vec<&'a DmName>,
    _signals: sys::SignalsHeld,
}

impl<'a> Frozen<'a> {
    pub(crate) fn new(dm: &'a Dm, n: usize) -> Frozen<'a> {
        let signals = sys::SignalsHeld::hold();
        output::hold(true);
        Frozen { dm, names: Vec::with_capacity(n), _signals: signals }
    }

    pub(crate) fn suspend(&mut self, name: &'a DmName) -> Result<()> {
        self.dm.suspend(name)?;
        self.names.push(name);
        Ok(())
    }

    /// Leaves `name` suspended on purpose: its next table must not go live.
    pub(crate) fn keep_suspended(&mut self, name: &DmName) {
        self.names.retain(|n| *n != name);
    }

    pub(crate) fn resume_all(&mut self) -> Result<()> {
        let mut failed = Vec::new();
        let mut retried = Vec::new();
        let mut first = true;
        for name in self.names.drain(..).rev() {
            fault::trace(format_args!("resume {name}"));
            let mut tries = 0;
            let err = loop {
                tries += 1;
                match self.dm.resume(name) {
                    Ok(()) => break None,
                    Err(e) if tries >= RESUME_TRIES => break Some(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(10 << tries)),
                }
            };
            if first && err.is_none() {
                first = false;
                fault::point("lv-resumed");
            }
            match err {
                Some(e) => failed.push((name, e)),
                None if tries > 1 => retried.push((name, tries)),
                None => {}
            }
        }
        output::hold(false);
        // Only now may anything be written where the root filesystem may live.
        for (name, tries) in retried {
            crate::output::error(&format!("pvencrypt: WARNING: resuming {name} took {tries} attempts."));
        }
        if let Some(m) = PANIC_MSG.lock().ok().and_then(|mut m| m.take()) {
            crate::output::error(&m);
        }
        let mut msg = Vec::new();
        for (name, e) in failed {
            let m = format!(
                "{name} is still SUSPENDED after {RESUME_TRIES} attempts to resume it ({e}); its I/O waits. \
                 Run `dmsetup resume {name}` now."
            );
            loud(&m);
            msg.push(m);
        }
        if msg.is_empty() {
            Ok(())
        } else {
            fail(msg.join("\n"))
        }
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if !self.names.is_empty() {
            let _ = self.resume_all();
        }
        output::hold(false);
    }
}

/// A panic in the freeze must not print before the guard has resumed the devices
/// (stderr may be a file on a suspended filesystem): `Frozen` prints it afterwards.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if output::held() {
            if let Ok(mut m) = PANIC_MSG.lock() {
                *m = Some(format!("pvencrypt: panic in the freeze: {info}"));
            }
        } else {
            default(info);
        }
    }));
}

/// What an admin must act on goes to the kernel log too (never on a suspended disk):
/// the terminal may be gone. The error that carries it reaches stderr.
fn loud(msg: &str) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut k| std::io::Write::write_all(&mut k, format!("<2>pvencrypt: {msg}\n").as_bytes()));
}

/// Where libcryptsetup put the first segment (byte offset, length), from the header.
fn moved_segment(p: &Prepared) -> Result<(Bytes, Bytes)> {
    let meta = luks::metadata(&mut *luks::open(&p.header.path())?)?;
    meta.moved_segment().ok_or_else(|| Error::new(Kind::Failed, "The new header records no moved segment"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn brings_in_files_and_swapped_mappings() {
        let smaps = "\
55d0a0000000-55d0a0100000 r-xp 00000000 fd:00 1234 /usr/sbin/pvencrypt
Rss:                1024 kB
Swap:                  0 kB
7f0000000000-7f0000800000 rw-p 00000000 00:00 0
Rss:                  12 kB
Swap:                  8 kB
7f0000800000-7f0000801000 ---p 00000000 00:00 0
Swap:                  4 kB
7f0000900000-7f0000a00000 rw-p 00000000 00:00 0 [heap]
Swap:                  0 kB
";
        assert_eq!(super::to_bring_in(smaps), [(0x55d0a0000000, 0x55d0a0100000), (0x7f0000000000, 0x7f0000800000)]);
    }
}
