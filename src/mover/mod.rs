//! The data phase, moved by the kernel as pvmove moves extents: for each chunk of
//! plaintext, backward, a dm-crypt device over the chunk's new place and a dm `mirror`
//! (core log) whose legs are the plaintext and that device; NAME maps the chunk through
//! the mirror while kcopyd copies. Writes to a region go to the plain leg until it is
//! copied, then to both; reads come from the plain leg; a flush waits for no copy.
//!
//! When the mirror nearest the boundary is in sync, one suspension of NAME commits it:
//! the mirror checked healthy and in sync once more (nothing can write meanwhile), the
//! LUKS2 header written with the boundary moved past the chunk (header.rs), the next
//! chunk's mirror started, NAME resumed with the chunk on its final dm-crypt mapping.
//! Until that header write the plaintext is complete and authoritative; after it, the
//! encrypted copy is, and both hold the same bytes at that instant. Every state on the
//! disk is a clean LUKS2 reencryption state that stock cryptsetup opens and resumes.
//!
//! Several chunks are in flight: their new places lie inside the shift's room beyond the
//! boundary, which no segment of the committed header maps. A killed pvencrypt leaves
//! mirrors that keep working; a guardian process resumes NAME should the kill land
//! while it is suspended; `take_over` unwinds what a dead run left.
//!
//! A decryption (DECRYPT.md) runs the same way forward, its header at the device's tail:
//! each chunk's mirror copies from a dm-crypt view of its ciphertext (one shift up) to its
//! plain place, and the commit moves the boundary past it; the moved first segment stays
//! encrypted at the head for the switch back.
//!
//! Disk faults (ARCHITECTURE.md, "Disk faults"). The mirrors run with `handle_errors`:
//! without it dm-raid1 acknowledges a write that reached one leg only, and forgets a
//! copy that failed (the region counts as in sync, `dmsetup status` says `AA`). With it a
//! failed copy leaves its region out of sync and its leg failed, and a write that cannot
//! reach both legs is held, unacknowledged, until the mirror is suspended:
//! `guardian::release_failed` then puts the chunk back on its plaintext, which has every
//! acknowledged write. A chunk is committed only with both legs healthy and all in sync.

use std::{
    collections::VecDeque,
    fs::File,
    path::{Path, PathBuf},
};

use devicemapper::Device;

use crate::{
    direct::{self, Aligned},
    dm::{self, Crypt, Dm, DmName, Linear, Mirror, Target},
    error::{fail, Context, Error, Kind, Result},
    fault,
    guardian::{self, Guardian, Watch},
    header::{self, CryptsetupLock, Direction, Header, Layout},
    metadata::Metadata,
    output, sys,
    units::{Bytes, Sectors},
};

mod remover;

pub(crate) use remover::remove_patiently;
use remover::Remover;

/// Chunk and region sizes (PVENCRYPT_MOVER=chunk=4M,region=1M overrides them, for the
/// benchmark); as many chunks are in flight as fit in the data shift.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub chunk: Bytes,
    pub region: Bytes,
}

impl Tuning {
    pub fn for_shift(shift: Bytes) -> Tuning {
        // Measured by tests/vm/guest/benchmark.sh: each chunk costs a dm-crypt and a mirror
        // set up and torn down, and NAME's reload (tens of ms under TCG), so two large chunks
        // in flight beat four small ones; 2 MiB regions keep kcopyd busy.
        let mut t = Tuning { chunk: Bytes((shift.0 / 2).max(1 << 20)), region: Bytes(2 << 20) };
        for kv in std::env::var("PVENCRYPT_MOVER").unwrap_or_default().split(',') {
            let parse = |v: &str| crate::units::parse_size(v).ok().map(Bytes);
            match kv.split_once('=') {
                Some(("chunk", v)) => t.chunk = parse(v).unwrap_or(t.chunk),
                Some(("region", v)) => t.region = parse(v).unwrap_or(t.region),
                _ => {}
            }
        }
        t.chunk = Bytes(t.chunk.min(shift).0.max(64 << 10) / 4096 * 4096);
        t.region = Bytes(t.region.0.clamp(4096, t.chunk.0).next_power_of_two());
        t
    }
}

/// Whether this kernel can move the data: dm-mirror (with dm-log and dm-region-hash)
/// loads, tried on throw-away devices (which also loads the modules before any
/// suspension), and the kernel keyring takes a key. Tried once per process: preflight
/// asks, and the data phase asks again when it is a resume's.
pub fn usable(dm: &Dm) -> std::result::Result<(), String> {
    static USABLE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    USABLE.get_or_init(|| probe(dm)).clone()
}

fn probe(dm: &Dm) -> std::result::Result<(), String> {
    let serial = sys::add_logon_key("pvencrypt:probe", &[0u8; 32]).map_err(|e| format!("the kernel keyring: {e}"))?;
    sys::revoke_key(serial);
    let pid = std::process::id();
    let probe = |n: &str| DmName::new(format!("pvencrypt-probe-{pid}-{n}")).expect("a short name");
    let create =
        |n: &str, t: &Target| dm.create(&probe(n), &format!("CRYPT-TEMP-pvencrypt-probe-{pid}-{n}"), std::slice::from_ref(t));
    let r = (|| {
        let zero = Target::new(Sectors(0), Sectors(16), "zero", "");
        let leg = |dev| Linear { dev, offset: Sectors(0) };
        let mirror =
            Mirror { region: Sectors(8), legs: vec![leg(create("a", &zero)?), leg(create("b", &zero)?)], handle_errors: true };
        create("m", &Target::of(Sectors(0), Sectors(16), &mirror))
    })();
    for n in ["m", "a", "b"] {
        dm.remove(&probe(n));
    }
    r.map(|_| ()).map_err(|e| e.to_string())
}

struct Chunk {
    /// Logical start and length.
    start: Bytes,
    len: Bytes,
    mirror: DmName,
    crypt: DmName,
    mirror_dev: Device,
}

/// A commit ready to write: its header copies and JSON, the header on the disk they follow,
/// and the lock that keeps that header the newest until they are written.
struct Commit {
    _lock: CryptsetupLock,
    disk: Header,
    meta: Metadata,
    images: [Aligned; 2],
}

/// What `wait` saw.
enum Waited {
    Synced,
    Stopped,
}

pub struct Mover<'a> {
    dm: &'a Dm,
    name: &'a DmName,
    /// Where the header starts on the disk: 0, or a decryption's tail (DECRYPT.md).
    base: u64,
    raw: Device,
    /// The PV, for messages.
    path: PathBuf,
    disk: File,
    header: Header,
    layout: Layout,
    /// The volume key as dm-crypt tables name it: `:LEN:logon:DESC`.
    key_ref: String,
    key_serial: i64,
    /// Our devices' uuids start with this (LVM ignores CRYPT-TEMP-: dev_manager.c).
    uuid_prefix: String,
    name_prefix: String,
    tuning: Tuning,
    /// Chunks NAME maps through their mirrors, the one next to the boundary first.
    flight: VecDeque<Chunk>,
    /// Chunks prepared ahead of the commit that lets them start (not mapped yet).
    ready: Vec<Chunk>,
    /// Set when the header on the disk cannot be told: the mirrors then stay.
    keep_mirrors: bool,
    remover: Remover,
    /// Watches every suspension of NAME (`watched`).
    guardian: Option<Guardian>,
    _lock: CryptsetupLock,
}

impl<'a> Mover<'a> {
    /// `volume_key`: the key of the encrypted segment; it goes to the kernel keyring and is
    /// named, never spelt, in the tables. `base`: where the header starts on `path`.
    pub fn new(
        dm: &'a Dm,
        name: &'a DmName,
        path: &Path,
        raw: Device,
        uuid: &str,
        volume_key: &[u8],
        base: u64,
    ) -> Result<Mover<'a>> {
        let lock = CryptsetupLock::reencryption(uuid)?;
        let disk = direct::open(path).or_fail(|| format!("Cannot open {}", path.display()))?;
        // Under the metadata lock: not a copy another writer is halfway through. The
        // take-over decides from this header which copy of each chunk is authoritative.
        let header = {
            let _metadata = CryptsetupLock::metadata(raw)?;
            Header::read_at(&disk, base).or_fail(|| format!("Cannot read the LUKS2 header of {}", path.display()))?
        };
        let mut layout = Layout::of(&header.meta)?;
        if layout.total == Bytes(0) {
            layout.total = dm.table(name)?.iter().map(|t| t.len.bytes()).sum();
        }
        let desc = header.meta.key_description(uuid).ok_or_else(|| {
            Error::new(Kind::Failed, format!("The LUKS2 header of {} names no key for its encrypted data", path.display()))
        })?;
        let key_serial =
            sys::add_logon_key(&desc, volume_key).or_fail(|| "Cannot put the volume key in the kernel keyring".into())?;
        Ok(Mover {
            dm,
            name,
            base,
            raw,
            path: path.to_path_buf(),
            disk,
            tuning: Tuning::for_shift(layout.shift),
            layout,
            header,
            key_ref: format!(":{}:logon:{desc}", volume_key.len()),
            key_serial,
            uuid_prefix: format!("CRYPT-TEMP-pvencrypt-{uuid}-"),
            name_prefix: format!("pvencrypt-{}-", &uuid[..8.min(uuid.len())]),
            flight: VecDeque::new(),
            ready: Vec::new(),
            keep_mirrors: false,
            remover: Remover::start()?,
            guardian: None,
            _lock: lock,
        })
    }

    /// dm-crypt of logical [start, start + len) at its encrypted place, mapped at `at`.
    fn crypt_target(&self, at: Bytes, start: Bytes, len: Bytes) -> Target {
        Target::of(at.sectors(), len.sectors(), &self.crypt(start))
    }

    /// dm-crypt of logical `start` onward, at its encrypted place.
    fn crypt(&self, start: Bytes) -> Crypt<'_> {
        let l = &self.layout;
        Crypt {
            cipher: &l.encryption,
            key: &self.key_ref,
            iv_offset: l.iv_tweak + start.sectors(),
            dev: self.raw,
            offset: (l.data_offset + start).sectors(),
            sector_size: l.sector_size,
        }
    }

    /// Where the plaintext of logical `start` lies, before its commit when encrypting, after
    /// it when decrypting.
    fn plain_at(&self, start: Bytes) -> Linear {
        let at = match self.layout.direction {
            Direction::Encrypt if start < self.layout.shift => self.layout.moved_offset + start,
            _ => start,
        };
        Linear { dev: self.raw, offset: at.sectors() }
    }

    /// The copy a chunk is read from (its plaintext, or its ciphertext) and its new place,
    /// as raw offsets: a disk fault's message names them.
    fn places(&self, start: Bytes) -> (Sectors, Sectors) {
        let crypt = (self.layout.data_offset + start).sectors();
        match self.layout.direction {
            Direction::Encrypt => (self.plain_at(start).offset, crypt),
            Direction::Decrypt => (crypt, self.plain_at(start).offset),
        }
    }

    /// What the copies are called, the one read from first.
    fn copies(&self) -> (&'static str, &'static str) {
        match self.layout.direction {
            Direction::Encrypt => ("plaintext", "encrypted copy"),
            Direction::Decrypt => ("ciphertext", "decrypted copy"),
        }
    }

    /// NAME's table for `boundary` with `flight` mapped through mirrors.
    fn name_table<'c>(&self, boundary: Bytes, flight: impl Iterator<Item = &'c Chunk>) -> Vec<Target> {
        let l = &self.layout;
        let mut t: Vec<Target> = Vec::new();
        let mut chunks: Vec<&Chunk> = flight.collect();
        chunks.sort_by_key(|c| c.start);
        let plain = |from: Bytes, to: Bytes, t: &mut Vec<Target>| {
            if to > from {
                t.push(Target::of(from.sectors(), (to - from).sectors(), &self.plain_at(from)));
            }
        };
        let through = |chunks: &[&Chunk], t: &mut Vec<Target>| {
            for c in chunks {
                t.push(Target::of(c.start.sectors(), c.len.sectors(), &Linear { dev: c.mirror_dev, offset: Sectors(0) }));
            }
        };
        match l.direction {
            Direction::Encrypt => {
                let lo = chunks.first().map_or(boundary, |c| c.start);
                plain(Bytes(0), lo.min(l.shift), &mut t);
                plain(l.shift.min(lo), lo, &mut t);
                through(&chunks, &mut t);
                if boundary < l.total {
                    t.push(self.crypt_target(boundary, boundary, l.total - boundary));
                }
            }
            Direction::Decrypt => {
                // The moved segment stays encrypted at the head until the switch back.
                let moved = Crypt { offset: l.moved_offset.sectors(), ..self.crypt(Bytes(0)) };
                t.push(Target::of(Sectors(0), l.shift.sectors(), &moved));
                plain(l.shift, boundary, &mut t);
                through(&chunks, &mut t);
                let hi = chunks.last().map_or(boundary, |c| c.start + c.len);
                if hi < l.total {
                    t.push(self.crypt_target(hi, hi, l.total - hi));
                }
            }
        }
        t
    }

    /// Where the chunks in flight end, away from the boundary: where the next one starts
    /// (encrypting, its end).
    fn far_edge(&self, start: Bytes, len: Bytes) -> Bytes {
        match self.layout.direction {
            Direction::Encrypt => start,
            Direction::Decrypt => start + len,
        }
    }

    /// The boundary once `c` is committed.
    fn boundary_after(&self, c: &Chunk) -> Bytes {
        self.far_edge(c.start, c.len)
    }

    fn next_chunk(&self, edge: Bytes, boundary: Bytes) -> Option<(Bytes, Bytes)> {
        let l = &self.layout;
        match l.direction {
            Direction::Encrypt => chunk_below(edge, boundary, l.shift, self.tuning.chunk),
            Direction::Decrypt => chunk_above(edge, boundary, l.shift, self.tuning.chunk, l.total),
        }
    }

    /// The dm-crypt device of a new chunk, and the device NAME will map the chunk through:
    /// live as a linear map of the chunk's plaintext, with the mirror loaded to take over at
    /// its next resume. It must be live before NAME maps it: the kernel fails I/O to a
    /// device without a live table ("mapping table unavailable, erroring io"); and its copy
    /// may start only once NAME runs the table after the commit that frees its new place.
    fn prepare(&self, start: Bytes, len: Bytes) -> Result<Chunk> {
        let tag = start.sectors().0;
        let dm_name = |kind: char| DmName::new(format!("{}{kind}{tag}", self.name_prefix));
        let (crypt, mirror) = (dm_name('c')?, dm_name('m')?);
        let crypt_dev =
            self.dm.create(&crypt, &format!("{}c{tag}", self.uuid_prefix), &[self.crypt_target(Bytes(0), start, len)])?;
        let sectors = len.sectors();
        let (plain, crypt_leg) = (self.plain_at(start), Linear { dev: crypt_dev, offset: Sectors(0) });
        let region = Sectors(self.tuning.region.sectors().0.min(1 << sectors.0.ilog2()).max(2));
        // Leg 0 is the copy the header makes authoritative until the commit, which kcopyd
        // copies from. handle_errors: ARCHITECTURE.md, "Disk faults".
        let legs = match self.layout.direction {
            Direction::Encrypt => vec![plain, crypt_leg],
            Direction::Decrypt => vec![crypt_leg, plain],
        };
        let linear = Target::of(Sectors(0), sectors, &legs[0]);
        let mirrored = Mirror { region, legs, handle_errors: true };
        let made = self.dm.resume(&crypt).and_then(|_| {
            let dev = self.dm.create(&mirror, &format!("{}m{tag}", self.uuid_prefix), &[linear])?;
            let loaded = self
                .dm
                .resume(&mirror)
                .and_then(|_| self.dm.load_verified(&mirror, &[Target::of(Sectors(0), sectors, &mirrored)]));
            if let Err(e) = loaded {
                self.dm.remove(&mirror);
                return Err(e);
            }
            Ok(dev)
        });
        match made {
            Ok(mirror_dev) => Ok(Chunk { start, len, mirror, crypt, mirror_dev }),
            Err(e) => {
                self.dm.remove(&crypt);
                Err(e)
            }
        }
    }

    fn discard(&self, c: &Chunk) {
        // The mirror first: it holds the dm-crypt device.
        self.remover.remove(&c.mirror);
        self.remover.remove(&c.crypt);
    }

    /// (bytes in sync, all in sync). A leg that failed is an error, which names the chunk.
    fn sync_of(&self, c: &Chunk) -> Result<(Bytes, bool)> {
        let st = self.dm.status(&c.mirror)?;
        if st.first().is_some_and(|t| t.kind == "linear") {
            return Err(self.fault(c, "its mirror was put back on its plaintext (a leg failed: see the kernel log)"));
        }
        let s = st.first().map(|t| t.params.as_str()).unwrap_or("");
        let m =
            dm::mirror_status(s).ok_or_else(|| Error::new(Kind::Failed, format!("Unexpected status of {}: {s}", c.mirror)))?;
        if let Some(i) = m.health.find(|h| h != 'A') {
            let (old, new) = self.copies();
            let what = match (i, m.health.as_bytes()[i]) {
                (0, b'D' | b'F') => format!("a write to the {old} failed"),
                (0, _) => format!("a read of the {old} failed"),
                _ => format!("a write to the {new} failed"),
            };
            return Err(self.fault(c, &format!("{what} ({} health {})", c.mirror, m.health)));
        }
        Ok((Bytes(c.len.0 * m.synced / m.regions.max(1)).min(c.len), m.synced == m.regions))
    }

    /// The error that stops the run on a disk fault in chunk `c`: the device and the ranges.
    fn fault(&self, c: &Chunk, what: &str) -> Error {
        let ((from, to), (old, new)) = (self.places(c.start), self.copies());
        let n = c.len.sectors().0;
        Error::new(
            Kind::Failed,
            format!(
                "Disk fault on {}: {what}, in the chunk at bytes {}-{} of {} (sectors {}-{} of {}: {old}; \
                 {}-{}: its {new}). Stopped; the chunk was not committed. Check the disk (dmesg).",
                self.path.display(),
                c.start.0,
                (c.start + c.len).0 - 1,
                self.name,
                from.0,
                from.0 + n - 1,
                self.path.display(),
                to.0,
                to.0 + n - 1
            ),
        )
    }

    /// One suspension of NAME: commit the `n` chunks next to the boundary (none: `n` is 0),
    /// start `new` chunks, NAME onto its next table.
    fn swap(&mut self, n: usize, new: Vec<Chunk>) -> Result<()> {
        let boundary = if n > 0 { self.boundary_after(&self.flight[n - 1]) } else { self.layout.boundary };
        // The slow parts first: NAME carries a table for the next state only for the moment
        // of the suspension.
        let commit = self.watched().and_then(|_| if n > 0 { self.prepare_commit(boundary).map(Some) } else { Ok(None) });
        let table = self.name_table(boundary, self.flight.iter().skip(n).chain(new.iter()));
        let commit = match commit.and_then(|c| self.dm.load_verified(self.name, &table).map(|_| c)) {
            Ok(c) => c,
            Err(e) => {
                new.iter().for_each(|c| self.discard(c));
                return Err(e);
            }
        };
        fault::trace("mover: loaded");
        // From the suspension until NAME and the new copies run again, also on error.
        let held = sys::SignalsHeld::hold();
        let r = self.suspended(n, commit.as_ref().map(|c| &c.images), &new);
        let settled = r.as_ref().err().map(|_| guardian::settle(self.dm, self.name));
        drop(held);
        let Err(e) = r else {
            fault::trace("mover: resumed");
            self.advance(commit, n, boundary, new);
            fault::trace("mover: discarded");
            return Ok(());
        };
        // Whichever step failed, NAME runs what `settle` allows; the table that left live
        // and the header on the disk (the metadata lock is still held: no other writer came
        // between) tell where the run stands.
        match settled.expect("settled on error").and_then(|_| self.runs_next(n, &new)) {
            Ok(true) => self.advance(commit, n, boundary, new),
            Ok(false) => {
                new.iter().for_each(|c| self.discard(c));
                if let Some(c) = commit {
                    match Header::read_at(&self.disk, self.base).map(|h| h.seqid) {
                        Ok(s) if s == c.disk.seqid => self.header = c.disk,
                        Ok(s) if s == c.disk.seqid + 1 => {
                            self.header = c.disk;
                            self.header.committed(c.meta);
                            self.layout.boundary = boundary;
                        }
                        // Nothing is unwound: the mirrors are right for either header.
                        _ => self.keep_mirrors = true,
                    }
                }
            }
            Err(e2) => {
                // Nor here; the new chunks' devices are left to `take_over`.
                self.keep_mirrors = true;
                return Err(Error::rollback(e.kind, e, Some(e2), ""));
            }
        }
        Err(e)
    }

    /// Bookkeeping once NAME runs the table `swap` loaded.
    fn advance(&mut self, commit: Option<Commit>, n: usize, boundary: Bytes, new: Vec<Chunk>) {
        if let Some(c) = commit {
            self.header = c.disk;
            self.header.committed(c.meta);
            self.layout.boundary = boundary;
            for c in self.flight.drain(..n).collect::<Vec<_>>() {
                self.discard(&c);
            }
        }
        self.flight.extend(new);
    }

    /// Whether NAME's live table is the one `swap` loaded: it maps the new chunks, or no
    /// longer maps the committed ones through their mirrors.
    fn runs_next(&self, n: usize, new: &[Chunk]) -> Result<bool> {
        let live = dm::referenced(&self.dm.table(self.name)?);
        Ok(match (new.first(), self.flight.front()) {
            (Some(c), _) => live.contains(&c.mirror_dev),
            (None, Some(h)) if n > 0 => !live.contains(&h.mirror_dev),
            _ => false,
        })
    }

    /// The header of the commit that moves the boundary to `boundary`, under libcryptsetup's
    /// metadata lock (kept until the commit is written or given up): made from the header on
    /// the disk now, so that what another writer committed since ours stays, and numbered
    /// after it. Before NAME's suspension: reading the disk and building the copies allocate.
    fn prepare_commit(&self, boundary: Bytes) -> Result<Commit> {
        let lock = CryptsetupLock::metadata(self.raw)?;
        let disk = Header::read_at(&self.disk, self.base).map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("{}: cannot read the LUKS2 header back before a commit ({e}); stopped at the last commit.", self.name),
            )
        })?;
        if disk.seqid < self.header.seqid {
            return fail(format!(
                "{}: the LUKS2 header on the disk (seqid {}) is older than pvencrypt's last commit (seqid {}); \
                 stopped at the last commit, nothing written.",
                self.name, disk.seqid, self.header.seqid
            ));
        }
        let meta = header::next_commit(&disk.meta, &self.header.meta, &self.layout, boundary)
            .map_err(|e| Error::caused_by(e.kind, self.name.to_string(), e))?;
        let images = disk.images(&meta)?;
        Ok(Commit { _lock: lock, disk, meta, images })
    }

    /// The part of `swap` while NAME is suspended, in the order ARCHITECTURE.md ("Deaths and
    /// errors, step by step") justifies: ioctls and prepared O_DIRECT writes only; nothing that
    /// could wait for udev or a filesystem; the caller holds every signal.
    fn suspended(&self, n: usize, images: Option<&[Aligned; 2]>, new: &[Chunk]) -> Result<()> {
        self.dm.suspend_unsynced(self.name)?;
        // The points name a commit's steps; the first suspension of a run commits nothing.
        let point = |step| images.is_some().then(|| fault::point(step));
        point("mover-suspended");
        if let Some(images) = images {
            // Nothing can write now: what is in sync stays so.
            for h in self.flight.iter().take(n) {
                if !self.sync_of(h)?.1 {
                    return fail(format!("{} fell out of sync", h.mirror));
                }
            }
            fault::point("commit");
            self.header.write(&self.disk, images).or_fail(|| "Cannot write the LUKS2 header".into())?;
            fault::point("committed");
        }
        self.dm.resume(self.name)?;
        point("name-resumed");
        // Only now may the new copies start (each device swaps its linear map for its
        // mirror): a new chunk's encrypted leg overwrites the plaintext of a chunk this
        // commit moved past the boundary, which the table NAME ran until its resume read.
        for c in new {
            self.dm.resume(&c.mirror)?;
        }
        point("mirrors-resumed");
        Ok(())
    }

    /// Waits until the chunk next to the boundary is in sync, reporting progress.
    fn wait(&mut self, progress: &mut dyn FnMut(u64, u64) -> bool) -> Result<Waited> {
        let (base, total) = self.progress_base();
        loop {
            self.dm.arm_events()?;
            let mut moving = Bytes(0);
            let mut head_synced = false;
            for (i, c) in self.flight.iter().enumerate() {
                let (bytes, all) = self.sync_of(c)?;
                moving = moving + bytes;
                head_synced |= i == 0 && all;
            }
            if !progress((base + moving).0, total.0) {
                return Ok(Waited::Stopped);
            }
            if head_synced {
                return Ok(Waited::Synced);
            }
            // Meanwhile, the devices of the chunk the next commit will start.
            if !self.prepare_ahead()? {
                self.dm.wait_events(1000);
            }
        }
    }

    /// (bytes moved as committed, bytes to move in all).
    fn progress_base(&self) -> (Bytes, Bytes) {
        let l = &self.layout;
        match l.direction {
            Direction::Encrypt => (l.total - l.boundary, l.total),
            // The moved segment is the switch back's.
            Direction::Decrypt => (l.boundary - l.shift, l.total - l.shift),
        }
    }

    /// Prepares the next chunk that will fit once the head is committed, if none is
    /// ready; false when there is none to prepare.
    fn prepare_ahead(&mut self) -> Result<bool> {
        let Some(head) = self.flight.front() else { return Ok(false) };
        if !self.ready.is_empty() {
            return Ok(false);
        }
        let edge = self.flight.back().map_or(self.boundary_after(head), |c| self.far_edge(c.start, c.len));
        let Some((start, len)) = self.next_chunk(edge, self.boundary_after(head)) else { return Ok(false) };
        let c = self.prepare(start, len)?;
        self.ready.push(c);
        Ok(true)
    }

    /// Chunks to start once the boundary is at `boundary`: those prepared ahead first.
    fn fill(&mut self, boundary: Bytes) -> Result<Vec<Chunk>> {
        let mut new: Vec<Chunk> = std::mem::take(&mut self.ready);
        let mut edge = new.last().or(self.flight.back()).map_or(boundary, |c| self.far_edge(c.start, c.len));
        while let Some((start, len)) = self.next_chunk(edge, boundary) {
            match self.prepare(start, len) {
                Ok(c) => new.push(c),
                Err(e) => {
                    new.iter().for_each(|c| self.discard(c));
                    return Err(e);
                }
            }
            edge = self.far_edge(start, len);
        }
        Ok(new)
    }

    /// The whole data phase; false when `progress` asked to stop (the chunks in flight
    /// are unwound: the boundary stays at the last commit).
    pub fn run(&mut self, progress: &mut dyn FnMut(u64, u64) -> bool) -> Result<bool> {
        fault::trace("mover: start");
        self.take_over()?;
        let r = self.chunks(progress);
        if !matches!(r, Ok(true)) {
            if let Err(e) = self.unwind() {
                output::error(&format!("{}: {e}", self.name));
            }
            // The last commit's secondary copy.
            let _ = Header::flush(&self.disk);
        }
        self.remover.finish();
        r
    }

    fn chunks(&mut self, progress: &mut dyn FnMut(u64, u64) -> bool) -> Result<bool> {
        let new = self.fill(self.layout.boundary)?;
        self.swap(0, new)?;
        fault::trace("mover: copying");
        while !self.flight.is_empty() {
            if let Waited::Stopped = self.wait(progress)? {
                return Ok(false);
            }
            // Every chunk in sync next to the boundary goes in this commit: when commits
            // cannot keep up with the copies, they take more at a time.
            let mut n = 1;
            while n < self.flight.len() && self.sync_of(&self.flight[n])?.1 {
                n += 1;
            }
            fault::trace(format_args!("mover: {n} in sync"));
            // NAME runs, the chunks to commit are in sync (t_disk_faults breaks a disk here).
            fault::point("mover-synced");
            for c in self.flight.iter().take(n) {
                self.sync_of(c)?;
            }
            // kcopyd's copy is acknowledged, maybe not yet durable: a disk's write cache could
            // keep the chunks' encrypted bytes behind the header that makes them authoritative.
            // This flush is that barrier (libcryptsetup syncs its data before each commit too);
            // it also makes the previous commit's secondary copy durable.
            Header::flush(&self.disk).or_fail(|| "Cannot flush the disk".into())?;
            fault::trace("mover: flushed");
            let new = self.fill(self.boundary_after(&self.flight[n - 1]))?;
            fault::trace(format_args!("mover: {} new", new.len()));
            self.swap(n, new)?;
        }
        Header::flush(&self.disk).or_fail(|| "Cannot flush the disk".into())?;
        let (_, total) = self.progress_base();
        progress(total.0, total.0);
        Ok(true)
    }

    /// NAME back to the committed state with nothing in flight; every chunk's plain leg
    /// has all its writes.
    fn unwind(&mut self) -> Result<()> {
        for c in std::mem::take(&mut self.ready) {
            self.discard(&c);
        }
        if self.flight.is_empty() {
            return Ok(());
        }
        if self.keep_mirrors {
            return fail(format!(
                "The LUKS2 header cannot be read back; {} stays on its mirrors, which are right whatever it holds. \
                 Run pvencrypt again once the disk answers.",
                self.name
            ));
        }
        // A mirror that holds writes after a leg failed lets them go to the right copy first.
        guardian::release_failed(self.dm, self.name, Some(&self.layout))?;
        self.swap_to_committed()?;
        while let Some(c) = self.flight.pop_front() {
            self.discard(&c);
        }
        Ok(())
    }

    /// Before every suspension of NAME: a guardian that lives (one that died, killed on
    /// its own, is replaced).
    fn watched(&mut self) -> Result<()> {
        if self.guardian.as_mut().is_none_or(|g| !g.alive()) {
            self.guardian = Some(Guardian::spawn(&Watch::Mover { name: self.name.clone() })?);
        }
        Ok(())
    }

    fn swap_to_committed(&mut self) -> Result<()> {
        self.watched()?;
        let table = self.name_table(self.layout.boundary, std::iter::empty());
        if self.dm.has_inactive(self.name)? {
            self.dm.clear_inactive(self.name)?;
        }
        self.dm.load_verified(self.name, &table)?;
        let _held = sys::SignalsHeld::hold();
        if !self.dm.is_suspended(self.name) {
            self.dm.suspend_unsynced(self.name)?;
        }
        self.dm.resume(self.name)
    }

    /// What a killed run left: NAME (maybe suspended) mapping chunks through mirrors, and
    /// their devices. The header says which copy of each chunk is authoritative.
    pub fn take_over(&mut self) -> Result<()> {
        // What the dead run's guardian did, in case it died too: NAME's I/O must not wait
        // on a mirror that never started when it is suspended below.
        guardian::settle(self.dm, self.name)?;
        // The dead run's guardian releases no chunk after a death inside a commit: the header
        // says which copy each must go back to.
        guardian::release_failed(self.dm, self.name, Some(&self.layout))?;
        let ours = self.dm.named_with_uuid(&self.uuid_prefix)?;
        if ours.is_empty() {
            return Ok(());
        }
        self.swap_to_committed()?;
        // Mirrors first: each holds its dm-crypt device.
        let mut ours = ours;
        ours.sort_by_key(|(_, u)| !u.starts_with(&format!("{}m", self.uuid_prefix)));
        for (n, _) in &ours {
            remove_patiently(self.dm, n);
        }
        output::info(&format!("{}: took over from a run that died ({} device(s) of it removed).", self.name, ours.len()));
        Ok(())
    }
}

impl Drop for Mover<'_> {
    fn drop(&mut self) {
        sys::revoke_key(self.key_serial);
    }
}

/// The next chunk below `lowest` (start, length), if its new place is free once the
/// boundary is at `boundary`: inside [boundary, boundary + shift), which no segment of
/// that header maps. Chunks are aligned to `step`; a sliver at the top joins the chunk
/// below it; the moved first segment [0, shift) goes in one piece, as libcryptsetup moves
/// it, so that no state splits it.
fn chunk_below(lowest: Bytes, boundary: Bytes, shift: Bytes, step: Bytes) -> Option<(Bytes, Bytes)> {
    let (lowest, boundary, shift, step) = (lowest.0, boundary.0, shift.0, step.0);
    if lowest == 0 {
        return None;
    }
    let mut start = if lowest <= shift { 0 } else { ((lowest - 1) / step * step).max(shift) };
    if start > shift && lowest - start < 64 << 10 {
        start = (start - step).max(shift);
    }
    (boundary - start <= shift).then_some((Bytes(start), Bytes(lowest - start)))
}

/// Decrypting: the next chunk from `highest` on (start, length), if its new place (its own
/// logical range: decrypted in place) is free once the boundary is at `boundary`: inside
/// [boundary, boundary + shift), which no segment of that header maps. Chunks end at
/// multiples of `step`; a sliver at the end joins the chunk before it.
fn chunk_above(highest: Bytes, boundary: Bytes, shift: Bytes, step: Bytes, total: Bytes) -> Option<(Bytes, Bytes)> {
    let (start, boundary, shift, step, total) = (highest.0, boundary.0, shift.0, step.0, total.0);
    if start >= total {
        return None;
    }
    let mut end = ((start / step + 1) * step).min(total);
    if total - end < 64 << 10 {
        end = total;
    }
    (end - boundary <= shift).then_some((Bytes(start), Bytes(end - start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk a conversion starts, committing each as soon as it may.
    fn walk(total: u64, shift: u64, step: u64) -> Vec<(u64, u64)> {
        let (mut b, mut flight, mut all) = (total, std::collections::VecDeque::new(), vec![]);
        loop {
            let mut lowest = flight.back().map_or(b, |c: &(u64, u64)| c.0);
            while let Some(c) = chunk_below(Bytes(lowest), Bytes(b), Bytes(shift), Bytes(step)).map(|(s, l)| (s.0, l.0)) {
                assert!(c.0 + shift >= b, "{c:?}'s new place must lie beyond the boundary {b}");
                flight.push_back(c);
                all.push(c);
                lowest = c.0;
            }
            let Some(head) = flight.pop_front() else { return all };
            assert_eq!(head.0 + head.1, b, "commits go in order");
            b = head.0;
        }
    }

    /// Every chunk a decryption starts, from the end of the moved segment, committing each
    /// as soon as it may.
    fn walk_forward(total: u64, shift: u64, step: u64) -> Vec<(u64, u64)> {
        let (mut b, mut flight, mut all) = (shift, std::collections::VecDeque::new(), vec![]);
        loop {
            let mut edge = flight.back().map_or(b, |c: &(u64, u64)| c.0 + c.1);
            while let Some(c) =
                chunk_above(Bytes(edge), Bytes(b), Bytes(shift), Bytes(step), Bytes(total)).map(|(s, l)| (s.0, l.0))
            {
                assert!(c.0 + c.1 <= b + shift, "{c:?}'s new place must lie within the shift past the boundary {b}");
                flight.push_back(c);
                all.push(c);
                edge = c.0 + c.1;
            }
            let Some(head) = flight.pop_front() else { return all };
            assert_eq!(head.0, b, "commits go in order");
            b = head.0 + head.1;
        }
    }

    #[test]
    fn chunks_cover_the_data_forward_within_the_shift() {
        const M: u64 = 1 << 20;
        let c = walk_forward(24 * M, 4 * M, M);
        assert_eq!((c.len(), c[0], c[19]), (20, (4 * M, M), (23 * M, M)));
        // A sliver at the end joins the last chunk.
        let c = walk_forward(24 * M + 8192, 16 * M, 4 * M);
        assert_eq!((c[0], c.last()), ((16 * M, 4 * M), Some(&(20 * M, 4 * M + 8192))));
        assert_eq!(walk_forward(64 * M, 16 * M, 16 * M), vec![(16 * M, 16 * M), (32 * M, 16 * M), (48 * M, 16 * M)]);
        assert_eq!(walk_forward(16 * M, 16 * M, 8 * M), vec![], "only the moved segment: nothing to move");
    }

    #[test]
    fn chunks_cover_the_data_backward_within_the_shift() {
        const M: u64 = 1 << 20;
        let c = walk(24 * M, 4 * M, M);
        assert_eq!(c.len(), 21);
        assert_eq!(c[0], (23 * M, M));
        assert_eq!(c[19], (4 * M, M));
        assert_eq!(c[20], (0, 4 * M));
        // A sliver at the top joins the next chunk; an odd size still ends at the top.
        let c = walk(24 * M + 8192, 16 * M, 4 * M);
        assert_eq!(c[0], (20 * M, 4 * M + 8192));
        assert_eq!(c.last(), Some(&(0, 16 * M)));
        // One chunk as large as the shift: one in flight at a time.
        assert_eq!(walk(64 * M, 16 * M, 16 * M), vec![(48 * M, 16 * M), (32 * M, 16 * M), (16 * M, 16 * M), (0, 16 * M)]);
    }
}
