//! Decryption's switch back (DECRYPT.md, "The switch back"): once only the moved segment is
//! left encrypted, under one suspension of the LVs, its ciphertext's checksums go into the
//! header at the tail, the header says the segment is being decrypted ("hot"), the segment
//! is decrypted in place at the head, and the LVs' tables move from NAME to the raw device
//! (logical offset x is physical offset x by then). This is where the LVs are suspended for
//! it; NAME itself keeps running: its first segment is how the plaintext is read.
//!
//! Crash story: before the hot header is on the disk nothing at the head has changed, and
//! the LVs resume on NAME. Once it is, the head may hold any mix of ciphertext and
//! plaintext, and the checksums tell them apart block by block, as libcryptsetup's own
//! recovery does (`cryptsetup open` or `repair` with that header): a block whose checksum
//! still matches is decrypted, through NAME, the others are plaintext already. A death of
//! the process inside: its guardian does that and resumes the LVs on the raw device
//! (`guardian::settle_switch_back`); an error does the same here.

use std::{fs::File, os::unix::fs::FileExt, path::Path, time::Duration, time::Instant};

use devicemapper::Device;
use sha2::{Digest, Sha256};

use crate::{
    direct::{self, Aligned},
    dm::{self, Dm, DmName, Target},
    error::{fail, Context, Error, Kind, Result, Written},
    fault,
    guardian::{self, Guardian, Watch},
    header::{self, Header},
    in_place::{self, decrypt_by_checksums, Scratch},
    switch::Frozen,
    sys,
    units::Bytes,
};

pub struct SwitchBack<'a> {
    pub dm: &'a Dm,
    pub name: &'a DmName,
    /// The LUKS2 device, which holds the PV once this is done.
    pub disk: &'a Path,
    pub raw: Device,
    /// Where the header lives.
    pub tail: Bytes,
}

/// The moved segment's ciphertext and plaintext, whole.
struct Ahead {
    cipher: Aligned,
    plain: Aligned,
}

/// What the LVs' suspension needs, made before it.
pub struct Staged {
    header: Header,
    /// The hot header's two copies; None when the header on the disk is hot already (a run
    /// that died after writing it): then the checksums there decide, block by block.
    hot: Option<[Aligned; 2]>,
    scratch: Scratch,
    /// The head read ahead of the suspension (None when it is hot already).
    ahead: Option<Ahead>,
    /// The LVs (each with its new table if it maps NAME directly), top-down.
    holders: Vec<(DmName, Option<Vec<Target>>)>,
}

impl SwitchBack<'_> {
    /// Outside the suspension: the header at the tail must be a decryption with only the
    /// moved segment left (or the hot state a dead run wrote).
    pub fn stage(&self) -> Result<Staged> {
        let f = direct::open(self.disk).or_fail(|| format!("Cannot open {}", self.disk.display()))?;
        let header = Header::read_at(&f, self.tail.0).or_fail(|| "Cannot read the LUKS2 header at the tail".into())?;
        let hot =
            if in_place::is_hot(&header.meta) { None } else { Some(header.images(&header::decrypt_moved_hot(&header.meta)?)?) };
        let scratch = Scratch::new(&header.meta, self.tail)?;
        let crypt = self.dm.device_of(self.name)?;
        let mut holders = Vec::new();
        for h in self.dm.holders(crypt)? {
            let table = if h.direct {
                let (new, n) = dm::retarget(&self.dm.table(&h.name)?, crypt, self.raw);
                if n == 0 {
                    return fail(format!("{} does not name {} in its table", h.name, self.name));
                }
                Some(new)
            } else {
                None
            };
            holders.push((h.name, table));
        }
        let ahead = hot.as_ref().map(|_| {
            let len = scratch.moved.0 as usize;
            let mut a = Ahead { cipher: Aligned::new(len), plain: Aligned::new(len) };
            // Touched now: a page first touched in the suspension could need reclaim.
            a.cipher.fill(0);
            a.plain.fill(0);
            a
        });
        Ok(Staged { header, hot, scratch, ahead, holders })
    }

    /// The suspension. Returns how long the LVs were suspended.
    pub fn run(&self, s: &mut Staged) -> Result<Duration, Written> {
        sys::sync();
        let f = direct::open(self.disk).or_fail(|| format!("Cannot open {}", self.disk.display()))?;
        let crypt_path = Path::new("/dev/mapper").join(self.name.as_str());
        let through = direct::open(&crypt_path).or_fail(|| format!("Cannot open {}", crypt_path.display()))?;
        sys::protect_from_oom_killer();
        let names: Vec<DmName> = s.holders.iter().map(|(n, _)| n.clone()).collect();
        // What udev is told about afterwards: the LVs' tables and the raw device's head change.
        let mut touched = vec![self.raw];
        for n in &names {
            touched.push(self.dm.device_of(n)?);
        }
        let guardian = Guardian::spawn(&Watch::SwitchBack {
            holders: names.clone(),
            name: self.name.clone(),
            disk: self.disk.to_path_buf(),
            tail: self.tail.0,
        })?;
        self.read_ahead(&f, &through, s)?;
        let t0 = Instant::now();
        let mut frozen = Frozen::new(self.dm, names.len());
        for n in &names {
            // On error the guard resumes what was suspended; nothing changed yet.
            frozen.suspend(n)?;
        }
        let done = self.back_suspended(&f, &through, s);
        if let Err(failed) = done {
            // The LVs run what the header at the tail says, whatever the error left there.
            for n in &names {
                frozen.keep_suspended(n);
            }
            let settled = guardian::settle_switch_back(self.dm, self.name, &names, &f, &through, &mut s.scratch, self.tail.0);
            drop(frozen);
            drop(guardian);
            return Err(match settled {
                Ok(_) => failed.into(),
                Err(e) => Error::rollback(Kind::Unrecovered, failed, Some(e), "").into(),
            });
        }
        let resumed = frozen.resume_all();
        let took = t0.elapsed();
        drop(frozen);
        drop(guardian);
        dm::udev_catch_up(&touched);
        resumed?;
        Ok(took)
    }

    /// Before the suspension, while the LVs write: the head's ciphertext, its checksums and
    /// its plaintext (through NAME), so that the suspension has only the blocks written since
    /// to catch up on.
    fn read_ahead(&self, f: &File, through: &File, s: &mut Staged) -> Result<()> {
        let Some(a) = &mut s.ahead else { return Ok(()) };
        let len = s.scratch.moved.0 as usize;
        // The ciphertext first: a block written after it was read differs from it below.
        f.read_exact_at(&mut a.cipher[..len], 0).or_fail(|| format!("Cannot read the head of {}", self.disk.display()))?;
        through.read_exact_at(&mut a.plain[..len], 0).or_fail(|| format!("Cannot read /dev/mapper/{}", self.name))?;
        let c = &mut s.scratch;
        for (i, b) in a.cipher[..len].chunks(c.block).enumerate() {
            c.sums[i * 32..i * 32 + 32].copy_from_slice(&Sha256::digest(b));
        }
        // Once more: what the suspension catches up on is then only what the LVs wrote
        // during this much shorter pass.
        self.catch_up(f, through, a, c).map(drop)
    }

    /// Makes the read ahead current: the blocks written since get their checksums and
    /// plaintext again, each run of them read through NAME at once. Returns how many bytes
    /// that was.
    fn catch_up(&self, f: &File, through: &File, a: &mut Ahead, c: &mut Scratch) -> Result<usize> {
        let mut caught = 0;
        for (at, len) in c.pieces() {
            let (at_, end) = (at as usize, at as usize + len);
            f.read_exact_at(&mut c.head[..len], at).or_fail(|| format!("Cannot read the head of {}", self.disk.display()))?;
            if c.head[..len] == a.cipher[at_..end] {
                continue;
            }
            let mut run: Option<usize> = None;
            for b in (at_..end).step_by(c.block).chain([end]) {
                let changed = b < end && c.head[b - at_..b - at_ + c.block] != a.cipher[b..b + c.block];
                if changed {
                    a.cipher[b..b + c.block].copy_from_slice(&c.head[b - at_..b - at_ + c.block]);
                    let k = b / c.block * 32;
                    c.sums[k..k + 32].copy_from_slice(&Sha256::digest(&a.cipher[b..b + c.block]));
                    run.get_or_insert(b);
                } else if let Some(r) = run.take() {
                    through
                        .read_exact_at(&mut a.plain[r..b], r as u64)
                        .or_fail(|| format!("Cannot read /dev/mapper/{}", self.name))?;
                    caught += b - r;
                }
            }
        }
        Ok(caught)
    }

    /// The new tables loaded, the checksums and the hot header written, the plaintext
    /// written over the ciphertext: each step durable before the next.
    fn back_suspended(&self, f: &File, through: &File, s: &mut Staged) -> Result<()> {
        for (name, table) in &s.holders {
            if let Some(t) = table {
                self.dm.load_verified(name, t)?;
            }
        }
        fault::point("back-loaded");
        let c = &mut s.scratch;
        let (Some(images), Some(a)) = (&s.hot, &mut s.ahead) else {
            // Hot already: some blocks may be plaintext; only the checksums can tell.
            return decrypt_by_checksums(f, through, &s.header.meta, c);
        };
        let caught = self.catch_up(f, through, a, c)?;
        fault::trace(format_args!("checksummed, {caught} bytes written since the read ahead"));
        let pieces = c.pieces();
        f.write_all_at(&c.sums, c.sums_at)
            .and_then(|()| f.sync_data())
            .and_then(|()| s.header.write(f, images))
            .and_then(|()| Header::flush(f))
            .or_fail(|| "Cannot write the LUKS2 header at the tail".into())?;
        fault::point("back-hot");
        for &(at, len) in &pieces {
            if at == c.moved.0 / 2 {
                fault::point("back-half");
            }
            let label = if at == 0 { f.sync_data() } else { Ok(()) };
            label
                .and_then(|()| f.write_all_at(&a.plain[at as usize..at as usize + len], at))
                .or_fail(|| format!("Cannot write the plaintext at the head of {}", self.disk.display()))?;
        }
        f.sync_data().or_fail(|| format!("Cannot flush {}", self.disk.display()))?;
        fault::trace("back-decrypted");
        Ok(())
    }
}
