//! Decryption's first move (DECRYPT.md, "The first move"): with T0 at the tail, the first
//! segment's ciphertext goes from the data offset D to the head, and T1 is committed at the
//! tail, under one suspension of NAME. This is where NAME is suspended for it; the LVs above
//! only wait, their tables unchanged.
//!
//! Everything slow happens before (`stage`): libcryptsetup's decryption init copies the
//! segment to the head once (over the head's header: T0 at the tail describes the disk from
//! then on), and NAME's table for T1 is made. The suspension repeats the copy (the LVs wrote
//! since), loads that table, writes T1 and resumes NAME.
//!
//! Crash story: before T1 is on the disk, the header at the tail is T0, "data at D", and the
//! copy only read there; once it is, the head holds a copy made while NAME was suspended,
//! which nothing wrote after. A death of the process inside: its guardian makes NAME run the
//! table the header at the tail describes (`guardian::settle_first_move`); an error does the
//! same here.

use std::{path::Path, time::Duration, time::Instant};

use crate::{
    direct::{self, Aligned},
    dm::{Dm, DmName, Target},
    error::{fail, Context, Error, Kind, Result, Written},
    fault,
    guardian::{self, Guardian, Watch},
    header::Header,
    switch::Frozen,
    sys,
    units::{Bytes, Sectors},
};

pub struct FirstMove<'a> {
    pub dm: &'a Dm,
    pub name: &'a DmName,
    /// The alias of the disk libcryptsetup's init used (removed by the caller, or by the
    /// guardian after a death).
    pub alias: &'a DmName,
    pub disk: &'a Path,
    /// Where the header lives: T0 there now.
    pub tail: Bytes,
    /// The data offset D, which is the moved segment's length M too.
    pub shift: Bytes,
}

/// What `stage` prepared: nothing in it is made inside the suspension.
pub struct Staged {
    header: Header,
    images: [Aligned; 2],
    table: Vec<Target>,
    buf: Aligned,
}

impl FirstMove<'_> {
    /// `t0`: the header at the tail as written; `t1`: the state to commit
    /// (`header::decrypted_to` at the moved segment's end); `key_ref`: the volume key as
    /// tables name it (in the kernel keyring).
    pub fn stage(&self, t0: Header, t1: &crate::metadata::Metadata, key_ref: &str) -> Result<Staged> {
        let table = moved_table(&self.dm.table(self.name)?, self.shift.sectors(), key_ref)?;
        let images = t0.images(t1)?;
        Ok(Staged { header: t0, images, table, buf: Aligned::new(direct::CHUNK) })
    }

    /// The suspension. Returns how long NAME was suspended.
    pub fn run(&self, s: &mut Staged) -> Result<Duration, Written> {
        sys::sync();
        let f = direct::open(self.disk).or_fail(|| format!("Cannot open {}", self.disk.display()))?;
        sys::protect_from_oom_killer();
        let guardian = Guardian::spawn(&Watch::FirstMove {
            name: self.name.clone(),
            disk: self.disk.to_path_buf(),
            tail: self.tail.0,
            alias: self.alias.clone(),
        })?;
        let t0 = Instant::now();
        let mut frozen = Frozen::new(self.dm, 1);
        frozen.suspend(self.name)?;
        fault::trace("decrypt-suspended");
        let moved = self.move_suspended(&f, s);
        if let Err(failed) = moved {
            // NAME runs what the header at the tail says, whatever the error left there.
            frozen.keep_suspended(self.name);
            let settled = guardian::settle_first_move(self.dm, self.name, &f, self.tail.0);
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
        crate::dm::udev_catch_up(&[self.dm.device_of(self.name)?]);
        resumed?;
        Ok(took)
    }

    /// The copy again, NAME's table for T1 loaded, T1 written: each step durable before the next.
    fn move_suspended(&self, f: &std::fs::File, s: &mut Staged) -> Result<()> {
        direct::copy(f, &mut s.buf, self.shift, Bytes(0), self.shift)
            .or_fail(|| format!("Cannot copy the first {} of {} to its head", self.shift, self.disk.display()))?;
        self.dm.load_verified(self.name, &s.table)?;
        fault::point("decrypt-loaded");
        s.header.write(f, &s.images).and_then(|()| Header::flush(f)).or_fail(|| "Cannot write the LUKS2 header".into())?;
        fault::point("decrypt-committed");
        Ok(())
    }
}

/// NAME's table once the first `m` sectors' ciphertext lies at the head: its one dm-crypt
/// target (the data at D) split at `m`, the first part at offset 0 of the disk, the rest
/// where it was; each byte keeps its IV. `key` replaces the key: libcryptsetup's keyring key
/// is gone with the process that opened NAME.
fn moved_table(live: &[Target], m: Sectors, key: &str) -> Result<Vec<Target>> {
    let [t] = live else { return fail(format!("{} targets where one dm-crypt target was expected", live.len())) };
    let p: Vec<&str> = t.params.split_whitespace().collect();
    let num = |i: usize| p.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(iv), Some(offset)) = (num(2), num(4)) else { return fail(format!("Unexpected dm-crypt table: {}", t.kind)) };
    if t.kind != "crypt" || t.start != Sectors(0) || t.len <= m || offset != m.0 {
        return fail(format!("{} does not map one dm-crypt segment at the data offset", t.kind));
    }
    let rest = p[5..].join(" ");
    let part = |at: Sectors, len: Sectors, iv: u64, offset: u64| {
        let params = format!("{} {key} {iv} {} {offset}{}{rest}", p[0], p[3], if rest.is_empty() { "" } else { " " });
        Target::new(at, len, "crypt", params)
    };
    Ok(vec![part(Sectors(0), m, iv, 0), part(m, Sectors(t.len.0 - m.0), iv + m.0, offset + m.0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moved_table_splits_the_segment_and_keeps_each_iv() {
        let live = [Target::new(
            Sectors(0),
            Sectors(65536),
            "crypt",
            "aes-xts-plain64 :64:logon:cryptsetup:u-d0 0 254:0 32768 2 allow_discards sector_size:4096",
        )];
        let t = moved_table(&live, Sectors(32768), ":64:logon:pvencrypt:u").unwrap();
        let shown: Vec<(u64, u64, &str)> = t.iter().map(|t| (t.start.0, t.len.0, t.params.as_str())).collect();
        assert_eq!(
            shown,
            [
                (0, 32768, "aes-xts-plain64 :64:logon:pvencrypt:u 0 254:0 0 2 allow_discards sector_size:4096"),
                (32768, 32768, "aes-xts-plain64 :64:logon:pvencrypt:u 32768 254:0 65536 2 allow_discards sector_size:4096"),
            ]
        );
        let plain = [Target::new(Sectors(0), Sectors(65536), "crypt", "aes-xts-plain64 :64:logon:x 0 8:0 32768")];
        assert_eq!(moved_table(&plain, Sectors(32768), "K").unwrap()[1].params, "aes-xts-plain64 K 32768 8:0 65536");
        assert!(moved_table(&plain, Sectors(16384), "K").is_err(), "the data offset is not the shift");
        assert!(moved_table(&[], Sectors(32768), "K").is_err());
    }
}
