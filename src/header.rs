//! The LUKS2 header on the disk, read and committed by hand for the kernel data mover
//! (mover.rs), in the format libcryptsetup reads (its luks2_disk_metadata.c): two copies
//! (the secondary right after the primary), each a 4 KiB binary header followed by the
//! JSON area, with a sequence number and a sha256 over the whole copy.
//!
//! A commit writes the primary copy, flushes, then the secondary, and flushes. A crash
//! at any instant leaves at least one intact copy: libcryptsetup's loader takes the
//! intact copy with the highest seqid and repairs the other. So every commit must move
//! between two states that are both right for the data on the disk at that instant
//! (mover.rs keeps that promise).
//!
//! Each commit is made from the header on the disk, read again under libcryptsetup's
//! metadata lock, and numbered after it (`next_commit`): what another writer changed
//! meanwhile (a keyslot killed with `cryptsetup luksKillSlot`) stays.
//!
//! Only the active segments change in a commit (the reencryption digest covers the
//! backup segments and the reencrypt keyslot, not them: no volume key is needed),
//! except the last commit, which ends the reencryption as libcryptsetup's own teardown
//! does (`reencrypt_teardown_ok`): the reencrypt keyslot, its digest, the backup
//! segments and the requirement flag go.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    os::unix::fs::FileExt,
};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    direct::Aligned,
    error::{fail, Context, Error, Kind, Result},
    metadata::{Id, Keyslot, Metadata, Segment, Size},
    units::{Bytes, Sectors},
};

const BIN_LEN: usize = 4096;
/// The magic of the primary and of the secondary binary header (LUKS2 on-disk format).
pub const MAGIC_1ST: &[u8; 6] = b"LUKS\xba\xbe";
pub const MAGIC_2ND: &[u8; 6] = b"SKUL\xba\xbe";
const CSUM: std::ops::Range<usize> = 448..512;
/// Where libcryptsetup looks for a secondary header when the primary is damaged.
pub const SECONDARY_OFFSETS: [u64; 9] = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header as it is on the disk: the newest intact copy.
#[derive(Clone)]
pub struct Header {
    /// Where the header starts on its file: 0, or the tail of a device being decrypted
    /// (DECRYPT.md); the offsets inside the copies are relative to it.
    base: u64,
    /// The binary part of the copy read (magic, offsets, seqid and checksum are redone).
    bin: Vec<u8>,
    pub hdr_size: u64,
    pub seqid: u64,
    pub meta: Metadata,
}

/// One copy at `offset` of the header at `base`, if its magic, size and checksum hold.
fn read_copy(f: &File, base: u64, offset: u64) -> Option<(Vec<u8>, u64, Metadata)> {
    let mut bin = Aligned::new(BIN_LEN);
    f.read_exact_at(&mut bin[..BIN_LEN], base + offset).ok()?;
    let magic: &[u8] = if offset == 0 { MAGIC_1ST } else { MAGIC_2ND };
    let hdr_size = be64(&bin, 8);
    if &bin[..6] != magic || u16::from_be_bytes([bin[6], bin[7]]) != 2 || be64(&bin, 256) != offset {
        return None;
    }
    if !(0x4000..=0x400000).contains(&hdr_size) || !hdr_size.is_power_of_two() {
        return None;
    }
    let mut area = Aligned::new(hdr_size as usize - BIN_LEN);
    f.read_exact_at(&mut area[..hdr_size as usize - BIN_LEN], base + offset + BIN_LEN as u64).ok()?;
    let area = &area[..hdr_size as usize - BIN_LEN];
    let mut h = bin[..BIN_LEN].to_vec();
    let want = h[CSUM].to_vec();
    h[CSUM].fill(0);
    let sum = Sha256::new().chain_update(&h).chain_update(area).finalize();
    if sum[..] != want[..32] {
        return None;
    }
    let end = area.iter().position(|&b| b == 0)?;
    let json = serde_json::from_slice(&area[..end]).ok()?;
    Some((h, hdr_size, json))
}

impl Header {
    /// The newest intact copy, as libcryptsetup's loader chooses it.
    pub fn read(f: &File) -> Result<Header> {
        Self::read_at(f, 0)
    }

    /// The same for a header that starts `base` bytes into `f`.
    pub fn read_at(f: &File, base: u64) -> Result<Header> {
        let primary = read_copy(f, base, 0);
        let at = primary.as_ref().map(|p| vec![p.1]).unwrap_or(SECONDARY_OFFSETS.to_vec());
        let secondary = at.into_iter().find_map(|o| read_copy(f, base, o));
        let newest = match (primary, secondary) {
            (Some(p), Some(s)) => {
                if be64(&s.0, 16) > be64(&p.0, 16) {
                    s
                } else {
                    p
                }
            }
            (Some(c), None) | (None, Some(c)) => c,
            (None, None) => return fail("No intact LUKS2 header copy".to_string()),
        };
        let (bin, hdr_size, meta) = newest;
        Ok(Header { base, seqid: be64(&bin, 16), bin, hdr_size, meta })
    }

    /// Both copies of the header with `meta`, the next seqid, ready to write.
    pub fn images(&self, meta: &Metadata) -> Result<[Aligned; 2]> {
        let text = serde_json::to_vec(meta).expect("LUKS2 metadata serializes");
        let area = self.hdr_size as usize - BIN_LEN;
        if text.len() >= area {
            return fail(format!("The new LUKS2 metadata ({} bytes) does not fit its area ({area} bytes)", text.len()));
        }
        let seqid = self.seqid + 1;
        let copy = |offset: u64, magic: &[u8; 6]| {
            let mut img = Aligned::new(self.hdr_size as usize);
            img[..BIN_LEN].copy_from_slice(&self.bin);
            img[..6].copy_from_slice(magic);
            img[16..24].copy_from_slice(&seqid.to_be_bytes());
            img[256..264].copy_from_slice(&offset.to_be_bytes());
            img[CSUM].fill(0);
            img[BIN_LEN..BIN_LEN + text.len()].copy_from_slice(&text);
            let sum = Sha256::digest(&img[..self.hdr_size as usize]);
            img[CSUM.start..CSUM.start + 32].copy_from_slice(&sum);
            img
        };
        Ok([copy(0, MAGIC_1ST), copy(self.hdr_size, MAGIC_2ND)])
    }

    /// Writes prepared copies: the primary, a flush, then the secondary. Allocates nothing
    /// (it runs while NAME is suspended). The secondary is left to the caller's next flush
    /// (`flush`, which must come before the next `write`): until then the primary, durable
    /// and newer, is the copy libcryptsetup loads.
    pub fn write(&self, f: &File, images: &[Aligned; 2]) -> std::io::Result<()> {
        let len = self.hdr_size as usize;
        f.write_all_at(&images[0][..len], self.base)?;
        f.sync_data()?;
        crate::fault::point("commit-primary");
        f.write_all_at(&images[1][..len], self.base + self.hdr_size)
    }

    /// Makes everything written to the device durable: the previous commit's secondary,
    /// and data the next commit will declare authoritative.
    pub fn flush(f: &File) -> std::io::Result<()> {
        f.sync_data()
    }

    /// Bookkeeping after a successful `write` of `meta`.
    pub fn committed(&mut self, meta: Metadata) {
        self.seqid += 1;
        self.meta = meta;
    }
}

/// The LUKS2 metadata of `path` as libcryptsetup would load it, read without writing:
/// libcryptsetup's loader repairs a stale copy on the spot (a crash between a commit's
/// two writes leaves one), which a read-only command must not do.
pub fn read_metadata(path: &std::path::Path) -> Option<Metadata> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok()?;
    Header::read(&f).ok().map(|h| h.meta)
}

/// The LUKS2 UUID of `path`, from its newest intact header copy, read without writing.
pub fn read_uuid(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok()?;
    Header::read(&f).ok()?.uuid()
}

impl Header {
    /// The LUKS2 UUID from the binary header: 40 bytes at 168, NUL-padded.
    pub fn uuid(&self) -> Option<String> {
        let uuid = self.bin.get(168..208)?.split(|&b| b == 0).next()?;
        let uuid = std::str::from_utf8(uuid).ok()?;
        (!uuid.is_empty() && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then(|| uuid.to_string())
    }
}

/// Which way the data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Backward, each byte up by the shift into its dm-crypt place; the moved first segment last.
    Encrypt,
    /// Forward, each byte down by the shift into its plain place; the moved first segment
    /// (encrypted at the head) is left to the switch back (DECRYPT.md).
    Decrypt,
}

/// Where everything lies in a LUKS2 encryption with a data shift and a moved first
/// segment, backward, or in a decryption with a data shift, forward (DECRYPT.md), read
/// from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub direction: Direction,
    /// The size of the data: the sum of the active segments.
    pub total: Bytes,
    /// The data shift: also the length of the moved first segment.
    pub shift: Bytes,
    /// Where the plaintext of logical [0, shift) lies during an encryption; its ciphertext
    /// during a decryption (0: the head).
    pub moved_offset: Bytes,
    /// Where the ciphertext of logical 0 would lie (the final segment's offset when
    /// encrypting, the old one's when decrypting): logical x is encrypted at `data_offset + x`.
    pub data_offset: Bytes,
    /// The encrypted segment's IV offset.
    pub iv_tweak: Sectors,
    pub encryption: String,
    pub sector_size: u32,
    /// Encrypting: logical [boundary, total) is encrypted, below it is plaintext.
    /// Decrypting: [shift, boundary) is plaintext, [boundary, total) still encrypted.
    pub boundary: Bytes,
}

impl Layout {
    /// The layout of a clean state (no hotzone in flight) of the encryption pvencrypt
    /// starts: plaintext of [0, shift) at the moved segment, of [shift, b) in place,
    /// [b, total) encrypted at `data_offset + b`. Anything else is refused.
    pub fn of(m: &Metadata) -> Result<Layout> {
        if m.flagged("backup-final").is_some_and(|(_, f)| !f.is_crypt()) {
            return Self::of_decryption(m);
        }
        let bad = |why: &str| Error::new(Kind::Failed, format!("Unexpected LUKS2 reencryption state: {why}"));
        let crypt_of = |s: &Segment, what: &str| {
            let cipher = s.encryption.clone().ok_or_else(|| bad(&format!("{what} segment encryption")))?;
            let sector_size = s.sector_size.ok_or_else(|| bad(&format!("{what} segment sector_size")))?;
            let iv_tweak = s.iv_tweak.ok_or_else(|| bad(&format!("{what} segment iv_tweak")))?;
            Ok::<_, Error>((cipher, sector_size, iv_tweak))
        };
        let Some((_, fin)) = m.flagged("backup-final") else {
            // Finished: one crypt segment to the end of the device (whose size the
            // header does not say: `total` is 0).
            let active: Vec<&Segment> = m.active().collect();
            return match active[..] {
                [s] if s.is_crypt() && s.size == Size::Dynamic => {
                    let (encryption, sector_size, iv_tweak) = crypt_of(s, "the")?;
                    Ok(Layout {
                        direction: Direction::Encrypt,
                        total: Bytes(0),
                        shift: Bytes(0),
                        moved_offset: Bytes(0),
                        data_offset: s.offset,
                        iv_tweak,
                        encryption,
                        sector_size,
                        boundary: Bytes(0),
                    })
                }
                _ => Err(bad("no backup-final segment")),
            };
        };
        let (_, moved) = m.flagged("backup-moved-segment").ok_or_else(|| bad("no moved segment"))?;
        let (encryption, sector_size, iv_tweak) = crypt_of(fin, "final")?;
        let mut l = Layout {
            direction: Direction::Encrypt,
            total: Bytes(0),
            shift: moved.size.fixed().ok_or_else(|| bad("moved segment size"))?,
            moved_offset: moved.offset,
            data_offset: fin.offset,
            iv_tweak,
            encryption,
            sector_size,
            boundary: Bytes(0),
        };
        let mut at = Bytes(0);
        let mut crypt = None;
        for s in m.active() {
            let size = s.size.fixed().ok_or_else(|| bad("an active segment has no fixed size"))?;
            if s.flags.as_ref().is_some_and(|f| !f.is_empty()) {
                return Err(bad("a step in flight (segment flags)"));
            }
            match s.kind.as_str() {
                "linear" if crypt.is_none() => {
                    let want = if at < l.shift { l.moved_offset + at } else { at };
                    if s.offset != want || (at < l.shift && at + size > l.shift) {
                        return Err(bad("plaintext segment not where the shift puts it"));
                    }
                }
                "crypt" if crypt.is_none() => {
                    if s.offset != l.data_offset + at || s.iv_tweak != Some(l.iv_tweak + at.sectors()) {
                        return Err(bad("encrypted segment not where the shift puts it"));
                    }
                    crypt = Some(at);
                }
                _ => return Err(bad("segments out of order")),
            }
            at = at + size;
        }
        l.total = at;
        l.boundary = crypt.unwrap_or(at);
        if l.total == Bytes(0) {
            return Err(bad("no data"));
        }
        Ok(l)
    }
}

impl Layout {
    /// A clean state of a decryption with a data shift as pvencrypt writes them
    /// (`decrypted_to`): the moved segment encrypted at the head, [shift, b) plaintext in
    /// place, [b, total) encrypted one shift up. Anything else is refused.
    fn of_decryption(m: &Metadata) -> Result<Layout> {
        let bad = |why: &str| Error::new(Kind::Failed, format!("Unexpected LUKS2 decryption state: {why}"));
        let (_, prev) = m.flagged("backup-previous").ok_or_else(|| bad("no backup-previous segment"))?;
        let (_, moved) = m.flagged("backup-moved-segment").ok_or_else(|| bad("no moved segment"))?;
        let (Some(encryption), Some(sector_size), Some(shift), Some(total)) =
            (prev.encryption.clone(), prev.sector_size, moved.size.fixed(), prev.size.fixed())
        else {
            return Err(bad("the old segment's cipher, sector size or size, or the moved segment's size"));
        };
        let iv_tweak = prev.iv_tweak.unwrap_or_default();
        let mut l = Layout {
            direction: Direction::Decrypt,
            total,
            shift,
            moved_offset: Bytes(0),
            data_offset: prev.offset,
            iv_tweak,
            encryption,
            sector_size,
            boundary: shift,
        };
        let mut at = Bytes(0);
        for (i, s) in m.active().enumerate() {
            let size = s.size.fixed().ok_or_else(|| bad("an active segment has no fixed size"))?;
            if s.flags.as_ref().is_some_and(|f| !f.is_empty()) {
                return Err(bad("a step in flight (segment flags)"));
            }
            let ok = match (i, s.kind.as_str()) {
                (0, "crypt") => s.offset == l.moved_offset && size == shift && s.iv_tweak == Some(iv_tweak),
                (_, "linear") if at == l.boundary && i == 1 => s.offset == at,
                (_, "crypt") if at == l.boundary && i > 0 => {
                    s.offset == l.data_offset + at && s.iv_tweak == Some(iv_tweak + at.sectors())
                }
                _ => false,
            };
            if !ok {
                return Err(bad("segments not where the shift puts them"));
            }
            at = at + size;
            if s.kind == "linear" {
                l.boundary = at;
            }
        }
        if at != total {
            return Err(bad("the segments do not end where the old one ends"));
        }
        Ok(l)
    }

    /// Whether the chunk starting at logical `start` lies on the side of the boundary the
    /// header makes final (its new place authoritative).
    pub fn committed(&self, start: Bytes) -> bool {
        match self.direction {
            Direction::Encrypt => start >= self.boundary,
            Direction::Decrypt => start < self.boundary,
        }
    }
}

/// The metadata with the boundary moved to `b` (`shift <= b <= total`); the backup
/// segments keep their relative order after the new active ones.
pub fn at_boundary(m: &Metadata, l: &Layout, b: Bytes) -> Result<Metadata> {
    if b < l.shift || b > l.total || (b != l.total && !b.is_multiple_of(u64::from(l.sector_size))) {
        return fail(format!("Cannot put the boundary at {b}"));
    }
    let (fin_id, fin) = m.flagged("backup-final").expect("Layout::of checked");
    let linear = |offset, size| Segment {
        kind: "linear".into(),
        offset,
        size: Size::Fixed(size),
        iv_tweak: None,
        encryption: None,
        sector_size: None,
        flags: None,
        rest: Default::default(),
    };
    let mut live = vec![linear(l.moved_offset, l.shift)];
    if b > l.shift {
        live.push(linear(l.shift, b - l.shift));
    }
    if b < l.total {
        live.push(Segment {
            offset: l.data_offset + b,
            size: Size::Fixed(l.total - b),
            iv_tweak: Some(l.iv_tweak + b.sectors()),
            flags: None,
            ..fin.clone()
        });
    }
    let crypt_id = (b < l.total).then(|| Id(live.len() as u32 - 1));
    Ok(rebuild(m, live, crypt_id.as_slice(), fin_id))
}

/// Decryption's T0 (DECRYPT.md): the clean header of an encrypted device, to be copied to the
/// device's tail, with its one data segment's size fixed to `span` (the PV's), so that no
/// mapping made from it reaches into the tail that holds it.
pub fn relocated(m: &Metadata, span: Bytes) -> Result<Metadata> {
    let mut segments = m.segments.iter();
    let (Some((id, seg)), None) = (segments.next(), segments.next()) else {
        return fail("The LUKS2 header has not exactly one data segment");
    };
    if m.in_reencryption() || seg.kind != "crypt" {
        return fail("The LUKS2 device is in a reencryption, or its data segment is not encrypted");
    }
    if let Some(size) = seg.size.fixed().filter(|&s| s < span) {
        return fail(format!("The LUKS2 data segment ({size}) is smaller than the physical volume ({span})"));
    }
    let mut out = m.clone();
    out.segments.insert(*id, Segment { size: Size::Fixed(span), ..seg.clone() });
    Ok(out)
}

/// Writes T0 (`relocated`) at `tail` in `f`, the device: the head's header bytes copied there
/// (binary headers, JSON areas and keyslot areas: the key material), flushed, then both
/// copies rewritten with the fixed segment size and the next seqid, and flushed. The head is
/// left as it is; until the first move both describe the same data. The caller holds
/// libcryptsetup's metadata lock.
pub fn copy_to_tail(f: &File, tail: Bytes, span: Bytes) -> Result<Header> {
    let head = Header::read(f)?;
    let Some(extent) = head.meta.header_extent() else {
        return fail("The LUKS2 header has no keyslot layout");
    };
    if tail.0 < extent.0 || span.0 == 0 {
        return fail(format!("No room for the LUKS2 header ({extent}) at {tail}"));
    }
    let mut bytes = Aligned::new(extent.0 as usize);
    f.read_exact_at(&mut bytes[..extent.0 as usize], 0).or_fail(|| "Cannot read the LUKS2 header".into())?;
    f.write_all_at(&bytes[..extent.0 as usize], tail.0).or_fail(|| "Cannot copy the LUKS2 header".into())?;
    Header::flush(f).or_fail(|| "Cannot flush the copied LUKS2 header".into())?;
    let mut at_tail = Header::read_at(f, tail.0)?;
    let meta = relocated(&at_tail.meta, span)?;
    let images = at_tail.images(&meta)?;
    at_tail.write(f, &images).and_then(|()| Header::flush(f)).or_fail(|| "Cannot write the LUKS2 header".into())?;
    at_tail.committed(meta);
    Ok(at_tail)
}

/// Decryption with a data shift (DECRYPT.md; the state libcryptsetup's init wrote is `m`):
/// the clean state with the logical bytes [0, b) decrypted, `b` from the moved segment's end
/// (T1 as pvencrypt commits it) to the old segment's end (only the moved segment left). The
/// moved segment stays encrypted at the head (it is decrypted in place, last); [its end, b)
/// is plaintext at its final place; the rest is still ciphertext, one shift higher, and ends
/// where the old segment ends: at the PV's end when that is fixed (libcryptsetup's init
/// leaves the active rest "dynamic", which would reach the header at the tail).
pub fn decrypted_to(m: &Metadata, b: Bytes) -> Result<Metadata> {
    let flagged = |f: &str| m.flagged(f).ok_or_else(|| Error::new(Kind::Failed, format!("no {f} segment")));
    let (prev_id, prev) = flagged("backup-previous")?;
    let (_, moved) = flagged("backup-moved-segment")?;
    let (Some(moved_len), Some(sector)) = (moved.size.fixed(), prev.sector_size) else {
        return fail("The moved segment has no fixed size, or the old segment no sector size");
    };
    let end = prev.size.fixed();
    if b < moved_len || end.is_some_and(|e| b > e) || !b.is_multiple_of(u64::from(sector)) {
        return fail(format!("Cannot put the decryption boundary at {b}"));
    }
    let mut live = vec![Segment { flags: None, ..moved.clone() }];
    if b > moved_len {
        live.push(Segment {
            kind: "linear".into(),
            offset: moved_len,
            size: Size::Fixed(b - moved_len),
            iv_tweak: None,
            encryption: None,
            sector_size: None,
            flags: None,
            rest: Default::default(),
        });
    }
    let mut crypt_ids = vec![Id(0)];
    if end != Some(b) {
        live.push(Segment {
            offset: prev.offset + b,
            size: end.map_or(Size::Dynamic, |e| Size::Fixed(e - b)),
            iv_tweak: Some(prev.iv_tweak.unwrap_or_default() + b.sectors()),
            flags: None,
            ..prev.clone()
        });
        crypt_ids.push(Id(live.len() as u32 - 1));
    }
    Ok(rebuild(m, live, &crypt_ids, prev_id))
}

/// The switch back's first write (DECRYPT.md): everything past the moved segment decrypted
/// (`m`), the moved segment `[0, M)` in reencryption, to be decrypted in place. Its
/// ciphertext's checksums (`moved_checksums`) must be in the reencrypt keyslot's area
/// before this is written: cryptsetup's recovery of this state decrypts the blocks whose
/// checksum still matches.
pub fn decrypt_moved_hot(m: &Metadata) -> Result<Metadata> {
    let (prev_id, _) = m.flagged("backup-previous").ok_or_else(|| Error::new(Kind::Failed, "no backup-previous segment"))?;
    let active: Vec<&Segment> = m.active().collect();
    let (moved_len, rest) = match active[..] {
        [moved, rest] if moved.is_crypt() && moved.offset == Bytes(0) && rest.kind == "linear" => (moved.size.fixed(), rest),
        _ => return fail("Not every byte past the moved segment is decrypted"),
    };
    let Some(moved_len) = moved_len.filter(|&l| l == rest.offset) else {
        return fail("The moved segment does not end where the decrypted bytes start");
    };
    let linear = |offset, size, flags| Segment {
        kind: "linear".into(),
        offset,
        size,
        iv_tweak: None,
        encryption: None,
        sector_size: None,
        flags,
        rest: Default::default(),
    };
    let live = vec![
        linear(Bytes(0), Size::Fixed(moved_len), Some(vec!["in-reencryption".to_string()])),
        linear(moved_len, rest.size, None),
    ];
    Ok(rebuild(m, live, &[], prev_id))
}

/// libcryptsetup's checksum resilience: the sha256 of each `block` bytes of `data`, one
/// after the other, as it reads them back from the reencrypt keyslot's area.
pub fn checksums(data: &[u8], block: usize) -> Vec<u8> {
    data.chunks(block).flat_map(|b| Sha256::digest(b).to_vec()).collect()
}

/// Renumbers: `live` become 0..n-1, the backup segments follow in their order; every
/// digest keeps its backup segments (renumbered), and the digest of the segment `key_of`
/// (the one whose key the active crypt segments use) also gets those, `crypt_ids`.
fn rebuild(m: &Metadata, live: Vec<Segment>, crypt_ids: &[Id], key_of: Id) -> Metadata {
    let n = live.len() as u32;
    let backups = m.segments.iter().filter(|(_, s)| s.is_backup());
    let renamed: HashMap<Id, Id> = backups.clone().enumerate().map(|(i, (id, _))| (*id, Id(n + i as u32))).collect();
    let mut new = m.clone();
    new.segments = (0..n).map(Id).zip(live).chain(backups.map(|(id, s)| (renamed[id], s.clone()))).collect();
    for d in new.digests.values_mut() {
        let mut segs: Vec<Id> = Vec::new();
        if d.segments.contains(&key_of) {
            segs.extend(crypt_ids);
        }
        segs.extend(d.segments.iter().filter_map(|s| renamed.get(s)));
        segs.sort();
        d.segments = segs;
    }
    new
}

/// The metadata once everything is encrypted: one crypt segment, as a fresh LUKS2
/// device has it; no reencrypt keyslot, its digest, backup segments, or requirement.
pub fn finished(m: &Metadata) -> Result<Metadata> {
    only(m, "backup-final")
}

/// A decryption's metadata as it was before it (its old segment alone): libcryptsetup
/// unlocks a volume key only for the default segment, which a decryption's is not (its
/// final segment is plain), so a resumed decryption takes the key from this, in memory.
pub fn before_decryption(m: &Metadata) -> Result<Metadata> {
    only(m, "backup-previous")
}

/// The metadata with the segment flagged `flag` alone, as a fresh LUKS2 device has it.
fn only(m: &Metadata, flag: &str) -> Result<Metadata> {
    let (fin_id, fin) = m.flagged(flag).ok_or_else(|| Error::new(Kind::Failed, format!("no {flag} segment")))?;
    let mut new = m.clone();
    new.segments = BTreeMap::from([(Id(0), Segment { flags: None, ..fin.clone() })]);
    let reenc: Vec<Id> = m.keyslots.iter().filter(|(_, k)| k.kind == "reencrypt").map(|(id, _)| *id).collect();
    new.keyslots.retain(|id, _| !reenc.contains(id));
    new.digests.retain(|_, d| {
        d.keyslots.retain(|k| !reenc.contains(k));
        let had_final = d.segments.contains(&fin_id);
        d.segments = if had_final { vec![Id(0)] } else { vec![] };
        !d.keyslots.is_empty() || had_final
    });
    if let Some(req) = &mut new.config.requirements {
        req.mandatory.retain(|r| !r.starts_with("online-reencrypt"));
        if req.mandatory.is_empty() && req.rest.is_empty() {
            new.config.requirements = None;
        }
    }
    Ok(new)
}

/// The metadata of the next commit, the boundary at `b` (encrypting, 0: the last commit,
/// `finished`; decrypting, `decrypted_to`),
/// made from the header on the disk now (`disk`, read under the metadata lock) rather than
/// from our last commit (`ours`): libcryptsetup lets `cryptsetup luksKillSlot` and
/// `luksRemoveKey` write the header during a reencryption (keyslot and token additions,
/// labels and flags it refuses there, 2.6.1 as upstream today; another tool may not), and
/// writing ours over theirs would undo them. What they changed is kept; what the
/// reencryption owns must still be what we committed, or nothing is written.
fn value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("LUKS2 metadata serializes")
}

pub fn next_commit(disk: &Metadata, ours: &Metadata, l: &Layout, b: Bytes) -> Result<Metadata> {
    let parts = |m: &Metadata| -> [(&'static str, Value); 4] {
        // What only the reencryption changes: the segments, which segments each digest
        // covers, the reencrypt keyslot, and the requirement flag.
        let digests: BTreeMap<&Id, &Vec<Id>> =
            m.digests.iter().filter(|(_, d)| !d.segments.is_empty()).map(|(id, d)| (id, &d.segments)).collect();
        let reencrypt: BTreeMap<&Id, &Keyslot> = m.keyslots.iter().filter(|(_, k)| k.kind == "reencrypt").collect();
        [
            ("segments", value(&m.segments)),
            ("digests' segments", value(&digests)),
            ("reencrypt keyslot", value(&reencrypt)),
            ("reencryption requirement", m.in_reencryption().into()),
        ]
    };
    if let Some(((part, _), _)) = parts(disk).into_iter().zip(parts(ours)).find(|(d, o)| d != o) {
        return fail(format!(
            "The LUKS2 header changed under the conversion: its {part} are not the ones pvencrypt committed \
             (another program rewrote the reencryption). Stopped at the last commit, nothing written."
        ));
    }
    match l.direction {
        Direction::Decrypt => decrypted_to(disk, b),
        Direction::Encrypt if b == Bytes(0) => finished(disk),
        Direction::Encrypt => at_boundary(disk, l, b),
    }
}

/// One of libcryptsetup's locks: an flock on a file in /run/cryptsetup, which libcryptsetup
/// unlinks when it lets go (so a lock is only good on the file still at that path).
pub struct CryptsetupLock {
    _held: File,
}

impl CryptsetupLock {
    /// Its lock against a second reencryption of the device (`reencrypt_lock_internal`):
    /// held, a stock `cryptsetup reencrypt` of it refuses to run beside us.
    pub fn reencryption(uuid: &str) -> Result<CryptsetupLock> {
        Self::take(&format!("LN_LUKS2-reencryption-{uuid}"), false)?.ok_or_else(|| {
            Error::new(
                Kind::Refused,
                format!("Another reencryption of LUKS2 device {uuid} is running (cryptsetup holds its lock)."),
            )
        })
    }

    /// Its lock on a device's metadata (`L_MAJOR:MINOR`, taken shared to read a header and
    /// exclusive to write one): no stock cryptsetup reads a header half committed.
    pub fn metadata(dev: devicemapper::Device) -> Result<CryptsetupLock> {
        Ok(Self::take(&format!("L_{}:{}", dev.major, dev.minor), true)?.expect("a blocking lock is taken"))
    }

    fn take(resource: &str, wait: bool) -> Result<Option<CryptsetupLock>> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let dir = std::path::Path::new("/run/cryptsetup");
        let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
        let path = dir.join(resource);
        loop {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .or_fail(|| format!("Cannot open {}", path.display()))?;
            let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
            if crate::sys::flock(&f, op).is_err() {
                return Ok(None);
            }
            let (a, b) = (f.metadata(), std::fs::metadata(&path));
            if let (Ok(a), Ok(b)) = (a, b) {
                if a.ino() == b.ino() && a.dev() == b.dev() {
                    return Ok(Some(CryptsetupLock { _held: f }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta(v: Value) -> Metadata {
        Metadata::from_value(v).unwrap()
    }

    /// The clean state of the research note (256 MiB, shift 16 MiB, boundary at 64 MiB).
    fn state_json() -> Value {
        json!({
            "keyslots": {"0": {"type": "luks2"}, "1": {"type": "luks2"}, "2": {"type": "reencrypt", "mode": "encrypt"}},
            "tokens": {},
            "segments": {
                "0": {"type": "linear", "offset": "251658240", "size": "16777216"},
                "1": {"type": "linear", "offset": "16777216", "size": "50331648"},
                "2": {"type": "crypt", "offset": "83886080", "size": "167772160", "iv_tweak": "131072",
                      "encryption": "aes-xts-plain64", "sector_size": 512},
                "3": {"type": "linear", "offset": "0", "size": "234881024", "flags": ["backup-previous"]},
                "4": {"type": "crypt", "offset": "16777216", "size": "dynamic", "iv_tweak": "0",
                      "encryption": "aes-xts-plain64", "sector_size": 512, "flags": ["backup-final"]},
                "5": {"type": "linear", "offset": "251658240", "size": "16777216", "flags": ["backup-moved-segment"]}},
            "digests": {
                "0": {"type": "pbkdf2", "keyslots": ["0", "1"], "segments": ["2", "4"]},
                "1": {"type": "pbkdf2", "keyslots": ["2"], "segments": []}},
            "config": {"json_size": "12288", "keyslots_size": "16744448",
                       "requirements": {"mandatory": ["online-reencrypt-v2"]}}
        })
    }

    fn state() -> Metadata {
        meta(state_json())
    }

    #[test]
    fn layout_of_a_clean_state() {
        let l = Layout::of(&state()).unwrap();
        assert_eq!(l.total, Bytes(234881024));
        assert_eq!(l.shift, Bytes(16 << 20));
        assert_eq!(l.moved_offset, Bytes(251658240));
        assert_eq!(l.data_offset, Bytes(16 << 20));
        assert_eq!(l.boundary, Bytes(64 << 20));
        assert_eq!((l.sector_size, l.iv_tweak), (512, Sectors(0)));
    }

    #[test]
    fn moving_the_boundary_changes_only_the_active_segments() {
        let (j, jv) = (state(), state_json());
        let l = Layout::of(&j).unwrap();
        let b = Bytes((60 << 20) - 4096);
        let n = at_boundary(&j, &l, b).unwrap();
        let l2 = Layout::of(&n).unwrap();
        assert_eq!(l2, Layout { boundary: b, ..l.clone() });
        let n = value(&n);
        assert_eq!(n["segments"]["2"]["iv_tweak"], (b.0 / 512).to_string());
        assert_eq!(n["segments"]["2"]["offset"], ((16 << 20) + b.0).to_string());
        assert_eq!(n["segments"]["4"], jv["segments"]["4"]);
        assert_eq!(n["digests"]["0"]["segments"], json!(["2", "4"]));
        assert_eq!(n["keyslots"], jv["keyslots"]);
        // At the shift, the in-place plaintext segment goes and the keys shift down.
        let s = value(at_boundary(&j, &l, Bytes(16 << 20)).unwrap());
        assert_eq!(s["segments"].as_object().unwrap().len(), 5);
        assert_eq!(s["segments"]["1"]["type"], "crypt");
        assert_eq!(s["segments"]["3"]["flags"], json!(["backup-final"]));
        assert_eq!(s["digests"]["0"]["segments"], json!(["1", "3"]));
        assert_eq!(Layout::of(&meta(s)).unwrap().boundary, Bytes(16 << 20));
        // Nothing encrypted yet: no active crypt segment, the digest keeps the backup.
        let t = value(at_boundary(&j, &l, l.total).unwrap());
        assert_eq!(t["digests"]["0"]["segments"], json!(["3"]));
        assert_eq!(t["segments"]["3"]["flags"], json!(["backup-final"]));
        assert_eq!(Layout::of(&meta(t)).unwrap().boundary, l.total);
        assert!(at_boundary(&j, &l, Bytes((16 << 20) - 4096)).is_err());
        assert!(at_boundary(&j, &l, Bytes((40 << 20) + 100)).is_err());
    }

    #[test]
    fn finishing_leaves_a_plain_luks2_header() {
        let fm = finished(&state()).unwrap();
        let f = value(&fm);
        assert_eq!(
            f["segments"],
            json!({"0": {"type": "crypt", "offset": "16777216", "size": "dynamic",
            "iv_tweak": "0", "encryption": "aes-xts-plain64", "sector_size": 512}})
        );
        assert_eq!(f["digests"], json!({"0": {"type": "pbkdf2", "keyslots": ["0", "1"], "segments": ["0"]}}));
        assert!(f["keyslots"].get("2").is_none());
        assert!(f["config"].get("requirements").is_none());
        let l = Layout::of(&fm).unwrap();
        assert_eq!(
            (l.total, l.boundary, l.data_offset, l.encryption.as_str()),
            (Bytes(0), Bytes(0), Bytes(16 << 20), "aes-xts-plain64")
        );
        assert!(state().in_reencryption() && !fm.in_reencryption());
    }

    /// `state()` after another writer: keyslot 1 killed, keyslot 5 and a token added.
    fn changed_by_someone_else() -> Metadata {
        let mut j = state_json();
        j["keyslots"].as_object_mut().unwrap().remove("1");
        j["keyslots"]["5"] = json!({"type": "luks2", "area": {"offset": "32768"}});
        j["digests"]["0"]["keyslots"] = json!(["0", "5"]);
        j["tokens"]["1"] = json!({"type": "systemd-tpm2", "keyslots": ["5"]});
        j["config"]["label"] = json!("theirs");
        meta(j)
    }

    #[test]
    fn another_writers_keyslots_and_tokens_survive_every_commit() {
        let (ours, disk) = (state(), changed_by_someone_else());
        let l = Layout::of(&ours).unwrap();
        for b in [l.total, Bytes(32 << 20), Bytes(16 << 20)] {
            let n = next_commit(&disk, &ours, &l, b).unwrap();
            assert_eq!(n.segments, at_boundary(&ours, &l, b).unwrap().segments, "boundary {b}");
            assert_eq!((&n.keyslots, &n.tokens, &n.config), (&disk.keyslots, &disk.tokens, &disk.config));
            assert_eq!(n.digests[&Id(0)].keyslots, [Id(0), Id(5)]);
        }
        let f = next_commit(&disk, &ours, &l, Bytes(0)).unwrap();
        assert_eq!(f.segments, finished(&ours).unwrap().segments);
        let (f, disk) = (value(&f), value(&disk));
        assert_eq!(f["keyslots"].as_object().unwrap().keys().collect::<Vec<_>>(), ["0", "5"]);
        assert_eq!(f["tokens"], disk["tokens"]);
        assert_eq!(f["digests"], json!({"0": {"type": "pbkdf2", "keyslots": ["0", "5"], "segments": ["0"]}}));
        assert_eq!(f["config"], json!({"json_size": "12288", "keyslots_size": "16744448", "label": "theirs"}));
        // Nothing changed: the same as from our own copy.
        assert_eq!(next_commit(&ours, &ours, &l, Bytes(32 << 20)).unwrap(), at_boundary(&ours, &l, Bytes(32 << 20)).unwrap());
    }

    #[test]
    fn a_header_whose_reencryption_changed_under_us_is_refused() {
        let ours = state();
        let l = Layout::of(&ours).unwrap();
        let refused = |disk: Metadata, part: &str| {
            for b in [Bytes(32 << 20), Bytes(0)] {
                let e = next_commit(&disk, &ours, &l, b).unwrap_err();
                assert!(e.to_string().contains(&format!("its {part} are not")), "{part}: {e}");
            }
        };
        // Segments: the boundary elsewhere (an old header restored), or the reencryption ended.
        refused(at_boundary(&changed_by_someone_else(), &l, Bytes(48 << 20)).unwrap(), "segments");
        refused(finished(&ours).unwrap(), "segments");
        let mut d = ours.clone();
        d.digests.get_mut(&Id(0)).unwrap().segments = vec![Id(4)];
        refused(d, "digests' segments");
        let mut d = ours.clone();
        d.keyslots.get_mut(&Id(2)).unwrap().rest.insert("mode".into(), json!("decrypt"));
        refused(d, "reencrypt keyslot");
        let mut d = ours.clone();
        d.config.requirements = None;
        refused(d, "reencryption requirement");
    }

    /// A zeroed image file of `mib` MiB, and a header for it (none written yet) with 16 KiB
    /// copies, after `seqid`.
    fn image(dir: &std::path::Path, mib: usize, seqid: u64, meta: Metadata) -> (std::path::PathBuf, File, Header) {
        let path = dir.join("img");
        std::fs::write(&path, vec![0u8; mib << 20]).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut bin = vec![0u8; BIN_LEN];
        bin[..6].copy_from_slice(MAGIC_1ST);
        bin[6..8].copy_from_slice(&2u16.to_be_bytes());
        bin[8..16].copy_from_slice(&0x4000u64.to_be_bytes());
        bin[72..78].copy_from_slice(b"sha256");
        (path, f, Header { base: 0, bin, hdr_size: 0x4000, seqid, meta })
    }

    #[test]
    fn copies_round_trip_and_the_newest_intact_one_wins() {
        let dir = crate::testing::TempDir::new("header");
        let (_, f, mut h) = image(&dir, 1, 7, state());
        assert!(Header::read(&f).is_err());
        let imgs = h.images(&state()).unwrap();
        h.write(&f, &imgs).unwrap();
        Header::flush(&f).unwrap();
        h.committed(state());
        let r = Header::read(&f).unwrap();
        assert_eq!((r.seqid, r.hdr_size), (8, 0x4000));
        assert_eq!(r.meta, state());
        // The next commit torn inside the primary: the secondary (older) wins.
        let next = at_boundary(&state(), &Layout::of(&state()).unwrap(), Bytes(32 << 20)).unwrap();
        let imgs = h.images(&next).unwrap();
        f.write_all_at(&imgs[0][..5000], 0).unwrap();
        assert_eq!(Header::read(&f).unwrap().seqid, 8);
        // The primary complete, the secondary not yet: the primary (newer) wins.
        f.write_all_at(&imgs[0][..0x4000], 0).unwrap();
        let r = Header::read(&f).unwrap();
        assert_eq!((r.seqid, Layout::of(&r.meta).unwrap().boundary), (9, Bytes(32 << 20)));
        // Primary gone: the secondary is found at its offset.
        f.write_all_at(&[0u8; 512], 0).unwrap();
        assert_eq!(Header::read(&f).unwrap().seqid, 8);
    }

    fn clean_json() -> Value {
        json!({
            "keyslots": {"0": {"type": "luks2", "area": {"type": "raw", "offset": "32768", "size": "258048"}}},
            "tokens": {},
            "segments": {"0": {"type": "crypt", "offset": "16777216", "size": "dynamic", "iv_tweak": "0",
                               "encryption": "aes-xts-plain64", "sector_size": 512}},
            "digests": {"0": {"type": "pbkdf2", "keyslots": ["0"], "segments": ["0"]}},
            "config": {"json_size": "12288", "keyslots_size": "16744448"}
        })
    }

    #[test]
    fn relocated_fixes_the_one_segment_and_refuses_the_rest() {
        let r = relocated(&meta(clean_json()), Bytes(200 << 20)).unwrap();
        let mut want = clean_json();
        want["segments"]["0"]["size"] = json!("209715200");
        assert_eq!(r, meta(want));
        assert!(relocated(&state(), Bytes(200 << 20)).is_err(), "a header in reencryption");
        let mut two = clean_json();
        two["segments"]["1"] = two["segments"]["0"].clone();
        assert!(relocated(&meta(two), Bytes(200 << 20)).is_err(), "two segments");
        let mut small = clean_json();
        small["segments"]["0"]["size"] = json!("104857600");
        assert!(relocated(&meta(small), Bytes(200 << 20)).is_err(), "a segment shorter than the PV");
    }

    /// T0 on a file: the head's bytes (key material included) at the tail, the tail's copies
    /// newer, with the fixed size; the head untouched.
    #[test]
    fn copy_to_tail_leaves_the_head_and_writes_a_newer_fixed_copy() {
        let dir = crate::testing::TempDir::new("tail");
        let (path, f, h) = image(&dir, 8, 3, meta(clean_json()));
        let imgs = h.images(&meta(clean_json())).unwrap();
        h.write(&f, &imgs).unwrap();
        Header::flush(&f).unwrap();
        let slot: Vec<u8> = (0..258048u32).map(|i| (i % 251) as u8).collect();
        f.write_all_at(&slot, 32768).unwrap();
        let head_before = std::fs::read(&path).unwrap()[..4 << 20].to_vec();

        let t = copy_to_tail(&f, Bytes(4 << 20), Bytes(200 << 20)).unwrap();
        let disk = std::fs::read(&path).unwrap();
        assert!(disk[..4 << 20] == head_before[..], "the head is left as it was");
        assert!(disk[(4 << 20) + 32768..(4 << 20) + 32768 + 258048] == slot[..], "the keyslot area is copied");
        let r = Header::read_at(&f, 4 << 20).unwrap();
        assert_eq!(r.seqid, 5, "the copy's seqid, then one more for the fixed size");
        assert_eq!((r.seqid, r.meta.segments[&Id(0)].size), (t.seqid, Size::Fixed(Bytes(200 << 20))));
        assert_eq!(Header::read(&f).unwrap().seqid, 4, "the head keeps its own");
    }
}
