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

use std::{fs::File, os::unix::fs::FileExt};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{
    direct::Aligned,
    error::{fail, Context, Error, Kind, Result},
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
    /// The binary part of the copy read (magic, offsets, seqid and checksum are redone).
    bin: Vec<u8>,
    pub hdr_size: u64,
    pub seqid: u64,
    pub json: Value,
}

/// One copy at `offset`, if its magic, size and checksum hold.
fn read_copy(f: &File, offset: u64) -> Option<(Vec<u8>, u64, Value)> {
    let mut bin = Aligned::new(BIN_LEN);
    f.read_exact_at(&mut bin[..BIN_LEN], offset).ok()?;
    let magic: &[u8] = if offset == 0 { MAGIC_1ST } else { MAGIC_2ND };
    let hdr_size = be64(&bin, 8);
    if &bin[..6] != magic || u16::from_be_bytes([bin[6], bin[7]]) != 2 || be64(&bin, 256) != offset {
        return None;
    }
    if !(0x4000..=0x400000).contains(&hdr_size) || !hdr_size.is_power_of_two() {
        return None;
    }
    let mut area = Aligned::new(hdr_size as usize - BIN_LEN);
    f.read_exact_at(&mut area[..hdr_size as usize - BIN_LEN], offset + BIN_LEN as u64).ok()?;
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
        let primary = read_copy(f, 0);
        let at = primary.as_ref().map(|p| vec![p.1]).unwrap_or(SECONDARY_OFFSETS.to_vec());
        let secondary = at.into_iter().find_map(|o| read_copy(f, o));
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
        let (bin, hdr_size, json) = newest;
        Ok(Header { seqid: be64(&bin, 16), bin, hdr_size, json })
    }

    /// Both copies of the header with `json`, the next seqid, ready to write.
    pub fn images(&self, json: &Value) -> Result<[Aligned; 2]> {
        let text = serde_json::to_vec(json).expect("JSON serializes");
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
        f.write_all_at(&images[0][..len], 0)?;
        f.sync_data()?;
        crate::fault::point("commit-primary");
        f.write_all_at(&images[1][..len], self.hdr_size)
    }

    /// Makes everything written to the device durable: the previous commit's secondary,
    /// and data the next commit will declare authoritative.
    pub fn flush(f: &File) -> std::io::Result<()> {
        f.sync_data()
    }

    /// Bookkeeping after a successful `write` of `json`.
    pub fn committed(&mut self, json: Value) {
        self.seqid += 1;
        self.json = json;
    }
}

/// The LUKS2 metadata of `path` as libcryptsetup would load it, read without writing:
/// libcryptsetup's loader repairs a stale copy on the spot (a crash between a commit's
/// two writes leaves one), which a read-only command must not do.
pub fn read_json(path: &std::path::Path) -> Option<Value> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok()?;
    Header::read(&f).ok().map(|h| h.json)
}

/// The LUKS2 UUID of `path`, from its newest intact header copy, read without writing.
pub fn read_uuid(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok()?;
    let bin = Header::read(&f).ok()?.bin;
    // The binary header's uuid field: 40 bytes at 168, NUL-padded.
    let uuid = bin.get(168..208)?.split(|&b| b == 0).next()?;
    let uuid = std::str::from_utf8(uuid).ok()?;
    (!uuid.is_empty() && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then(|| uuid.to_string())
}

/// Whether the metadata carries the online reencryption requirement (libcryptsetup's
/// `online-reencrypt`, `online-reencrypt-v2`, ...).
pub fn in_reencryption(json: &Value) -> bool {
    json["config"]["requirements"]["mandatory"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r.as_str().is_some_and(|r| r.starts_with("online-reencrypt"))))
}

/// Where everything lies in a LUKS2 encryption with a data shift and a moved first
/// segment, backward, read from the header. Bytes throughout.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The size of the data: the sum of the active segments.
    pub total: u64,
    /// The data shift: also the length of the moved first segment.
    pub shift: u64,
    /// Where the plaintext of logical [0, shift) lies during the conversion.
    pub moved_offset: u64,
    /// Where logical 0 lies once encrypted (the final segment's offset).
    pub data_offset: u64,
    /// The final segment's IV offset, in 512-byte sectors.
    pub iv_tweak: u64,
    pub encryption: String,
    pub sector_size: u32,
    /// Logical [boundary, total) is encrypted; below it is plaintext.
    pub boundary: u64,
}

fn num(v: &Value) -> Option<u64> {
    v.as_str()?.parse().ok()
}

fn flagged<'a>(json: &'a Value, flag: &str) -> Option<(&'a String, &'a Value)> {
    json["segments"].as_object()?.iter().find(|(_, s)| s["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == flag)))
}

fn is_backup(s: &Value) -> bool {
    s["flags"].as_array().is_some_and(|f| f.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with("backup-"))))
}

/// The active segments in key order ("0", "1", ...).
fn active(json: &Value) -> Vec<&Value> {
    let Some(segs) = json["segments"].as_object() else { return vec![] };
    let mut v: Vec<(u64, &Value)> =
        segs.iter().filter(|(_, s)| !is_backup(s)).filter_map(|(k, s)| Some((k.parse().ok()?, s))).collect();
    v.sort_by_key(|(k, _)| *k);
    v.into_iter().map(|(_, s)| s).collect()
}

impl Layout {
    /// The layout of a clean state (no hotzone in flight) of the encryption pvencrypt
    /// starts: plaintext of [0, shift) at the moved segment, of [shift, b) in place,
    /// [b, total) encrypted at `data_offset + b`. Anything else is refused.
    pub fn of(json: &Value) -> Result<Layout> {
        let bad = |why: &str| Error::new(Kind::Failed, format!("Unexpected LUKS2 reencryption state: {why}"));
        let Some((_, fin)) = flagged(json, "backup-final") else {
            // Finished: one crypt segment to the end of the device (whose size the
            // header does not say: `total` is 0).
            return match active(json)[..] {
                [s] if s["type"] == "crypt" && s["size"] == "dynamic" => Ok(Layout {
                    total: 0,
                    shift: 0,
                    moved_offset: 0,
                    data_offset: num(&s["offset"]).ok_or_else(|| bad("segment offset"))?,
                    iv_tweak: num(&s["iv_tweak"]).ok_or_else(|| bad("segment iv_tweak"))?,
                    encryption: s["encryption"].as_str().ok_or_else(|| bad("segment encryption"))?.to_string(),
                    sector_size: s["sector_size"].as_u64().ok_or_else(|| bad("segment sector_size"))? as u32,
                    boundary: 0,
                }),
                _ => Err(bad("no backup-final segment")),
            };
        };
        let (_, moved) = flagged(json, "backup-moved-segment").ok_or_else(|| bad("no moved segment"))?;
        let mut l = Layout {
            total: 0,
            shift: num(&moved["size"]).ok_or_else(|| bad("moved segment size"))?,
            moved_offset: num(&moved["offset"]).ok_or_else(|| bad("moved segment offset"))?,
            data_offset: num(&fin["offset"]).ok_or_else(|| bad("final segment offset"))?,
            iv_tweak: num(&fin["iv_tweak"]).ok_or_else(|| bad("final segment iv_tweak"))?,
            encryption: fin["encryption"].as_str().ok_or_else(|| bad("final segment encryption"))?.to_string(),
            sector_size: fin["sector_size"].as_u64().ok_or_else(|| bad("final segment sector_size"))? as u32,
            boundary: 0,
        };
        let segs = active(json);
        let mut at = 0u64;
        let mut crypt = None;
        for s in &segs {
            let size = num(&s["size"]).ok_or_else(|| bad("an active segment has no fixed size"))?;
            let offset = num(&s["offset"]).ok_or_else(|| bad("segment offset"))?;
            if s["flags"].as_array().is_some_and(|f| !f.is_empty()) {
                return Err(bad("a step in flight (segment flags)"));
            }
            match s["type"].as_str() {
                Some("linear") if crypt.is_none() => {
                    let want = if at < l.shift { l.moved_offset + at } else { at };
                    if offset != want || (at < l.shift && at + size > l.shift) {
                        return Err(bad("plaintext segment not where the shift puts it"));
                    }
                }
                Some("crypt") if crypt.is_none() => {
                    if offset != l.data_offset + at || num(&s["iv_tweak"]) != Some(l.iv_tweak + at / 512) {
                        return Err(bad("encrypted segment not where the shift puts it"));
                    }
                    crypt = Some(at);
                }
                _ => return Err(bad("segments out of order")),
            }
            at += size;
        }
        l.total = at;
        l.boundary = crypt.unwrap_or(at);
        if l.total == 0 {
            return Err(bad("no data"));
        }
        Ok(l)
    }
}

/// The header's JSON with the boundary moved to `b` (`shift <= b <= total`); the
/// backup segments keep their relative order after the new active ones.
pub fn at_boundary(json: &Value, l: &Layout, b: u64) -> Result<Value> {
    if b < l.shift || b > l.total || (b != l.total && !b.is_multiple_of(u64::from(l.sector_size))) {
        return fail(format!("Cannot put the boundary at {b}"));
    }
    let (fin_key, fin) = flagged(json, "backup-final").expect("Layout::of checked");
    let mut live = vec![json!({"type": "linear", "offset": l.moved_offset.to_string(), "size": l.shift.to_string()})];
    if b > l.shift {
        live.push(json!({"type": "linear", "offset": l.shift.to_string(), "size": (b - l.shift).to_string()}));
    }
    if b < l.total {
        let mut c = fin.clone();
        let o = c.as_object_mut().expect("segment object");
        o.remove("flags");
        o.insert("offset".into(), (l.data_offset + b).to_string().into());
        o.insert("size".into(), (l.total - b).to_string().into());
        o.insert("iv_tweak".into(), (l.iv_tweak + b / 512).to_string().into());
        live.push(c);
    }
    let crypt_key = (b < l.total).then(|| (live.len() - 1).to_string());
    rebuild(json, live, crypt_key, fin_key)
}

/// Renumbers: `live` become "0".."n-1", the backup segments follow in their order; every
/// digest keeps its backup segments (renumbered), and the digest of the final segment
/// also gets the active crypt segment.
fn rebuild(json: &Value, live: Vec<Value>, crypt_key: Option<String>, fin_key: &str) -> Result<Value> {
    let segs = json["segments"].as_object().expect("Layout::of checked");
    let mut backups: Vec<(u64, &String, &Value)> =
        segs.iter().filter(|(_, s)| is_backup(s)).filter_map(|(k, s)| Some((k.parse().ok()?, k, s))).collect();
    backups.sort_by_key(|(n, _, _)| *n);
    let mut out = serde_json::Map::new();
    let n = live.len();
    for (i, s) in live.into_iter().enumerate() {
        out.insert(i.to_string(), s);
    }
    let mut renamed = std::collections::HashMap::new();
    for (i, (_, k, s)) in backups.into_iter().enumerate() {
        renamed.insert(k.clone(), (n + i).to_string());
        out.insert((n + i).to_string(), s.clone());
    }
    let mut new = json.clone();
    new["segments"] = Value::Object(out);
    for d in
        new["digests"].as_object_mut().ok_or_else(|| Error::new(Kind::Failed, "LUKS2 metadata without digests"))?.values_mut()
    {
        let old: Vec<String> =
            d["segments"].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
        let mut segs: Vec<String> = Vec::new();
        if old.iter().any(|s| s == fin_key) {
            segs.extend(crypt_key.clone());
        }
        segs.extend(old.iter().filter_map(|s| renamed.get(s).cloned()));
        segs.sort_by_key(|s| s.parse::<u64>().unwrap_or(u64::MAX));
        d["segments"] = segs.into_iter().map(Value::from).collect();
    }
    Ok(new)
}

/// The header's JSON once everything is encrypted: one crypt segment, as a fresh LUKS2
/// device has it; no reencrypt keyslot, its digest, backup segments, or requirement.
pub fn finished(json: &Value) -> Result<Value> {
    let (fin_key, fin) = flagged(json, "backup-final").ok_or_else(|| Error::new(Kind::Failed, "no backup-final segment"))?;
    let fin_key = fin_key.clone();
    let mut seg = fin.clone();
    seg.as_object_mut().expect("segment object").remove("flags");
    let mut new = json.clone();
    new["segments"] = json!({ "0": seg });
    let keyslots = new["keyslots"].as_object_mut().ok_or_else(|| Error::new(Kind::Failed, "no keyslots"))?;
    let reenc: Vec<String> = keyslots.iter().filter(|(_, k)| k["type"] == "reencrypt").map(|(id, _)| id.clone()).collect();
    for id in &reenc {
        keyslots.remove(id);
    }
    let digests = new["digests"].as_object_mut().ok_or_else(|| Error::new(Kind::Failed, "no digests"))?;
    digests.retain(|_, d| {
        let ks = d["keyslots"].as_array().cloned().unwrap_or_default();
        let kept: Vec<Value> = ks.into_iter().filter(|k| !k.as_str().is_some_and(|k| reenc.iter().any(|r| r == k))).collect();
        let had_final = d["segments"].as_array().is_some_and(|s| s.iter().any(|s| s == fin_key.as_str()));
        d["keyslots"] = Value::Array(kept.clone());
        d["segments"] = if had_final { json!(["0"]) } else { json!([]) };
        !kept.is_empty() || had_final
    });
    let config = new["config"].as_object_mut().ok_or_else(|| Error::new(Kind::Failed, "no config"))?;
    if let Some(req) = config.get_mut("requirements").and_then(|r| r["mandatory"].as_array_mut()) {
        req.retain(|r| !r.as_str().is_some_and(|r| r.starts_with("online-reencrypt")));
        if req.is_empty() {
            config.remove("requirements");
        }
    }
    Ok(new)
}

/// The JSON of the next commit, the boundary at `b` (0: the last commit, `finished`), made
/// from the header on the disk now (`disk`, read under the metadata lock) rather than from
/// our last commit (`ours`): libcryptsetup lets `cryptsetup luksKillSlot` and `luksRemoveKey`
/// write the header during a reencryption (keyslot and token additions, labels and flags it
/// refuses there, 2.6.1 as upstream today; another tool may not), and writing ours over theirs would
/// undo them. What they changed is kept; what the reencryption owns must still be what we
/// committed, or nothing is written.
pub fn next_commit(disk: &Value, ours: &Value, l: &Layout, b: u64) -> Result<Value> {
    if let Some(part) = reencryption_parts(disk).into_iter().zip(reencryption_parts(ours)).find(|(d, o)| d != o).map(|(d, _)| d.0)
    {
        return fail(format!(
            "The LUKS2 header changed under the conversion: its {part} are not the ones pvencrypt committed \
             (another program rewrote the reencryption). Stopped at the last commit, nothing written."
        ));
    }
    if b == 0 {
        finished(disk)
    } else {
        at_boundary(disk, l, b)
    }
}

/// What only the reencryption changes, named: the segments, which segments each digest
/// covers, the reencrypt keyslot, and the requirement flag.
fn reencryption_parts(json: &Value) -> [(&'static str, Value); 4] {
    let digests: serde_json::Map<String, Value> = json["digests"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, d)| d["segments"].as_array().is_some_and(|s| !s.is_empty()))
        .map(|(id, d)| (id.clone(), d["segments"].clone()))
        .collect();
    let reencrypt: serde_json::Map<String, Value> = json["keyslots"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, k)| k["type"] == "reencrypt")
        .map(|(id, k)| (id.clone(), k.clone()))
        .collect();
    [
        ("segments", json["segments"].clone()),
        ("digests' segments", digests.into()),
        ("reencrypt keyslot", reencrypt.into()),
        ("reencryption requirement", in_reencryption(json).into()),
    ]
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
    use super::*;

    /// The clean state of the research note (256 MiB, shift 16 MiB, boundary at 64 MiB).
    fn state() -> Value {
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

    #[test]
    fn layout_of_a_clean_state() {
        let l = Layout::of(&state()).unwrap();
        assert_eq!(l.total, 234881024);
        assert_eq!(l.shift, 16 << 20);
        assert_eq!(l.moved_offset, 251658240);
        assert_eq!(l.data_offset, 16 << 20);
        assert_eq!(l.boundary, 64 << 20);
        assert_eq!((l.sector_size, l.iv_tweak), (512, 0));
    }

    #[test]
    fn moving_the_boundary_changes_only_the_active_segments() {
        let j = state();
        let l = Layout::of(&j).unwrap();
        let b = (60 << 20) - 4096;
        let n = at_boundary(&j, &l, b).unwrap();
        let l2 = Layout::of(&n).unwrap();
        assert_eq!(l2, Layout { boundary: b, ..l.clone() });
        assert_eq!(n["segments"]["2"]["iv_tweak"], (b / 512).to_string());
        assert_eq!(n["segments"]["2"]["offset"], ((16 << 20) + b).to_string());
        assert_eq!(n["segments"]["4"], j["segments"]["4"]);
        assert_eq!(n["digests"]["0"]["segments"], json!(["2", "4"]));
        assert_eq!(n["keyslots"], j["keyslots"]);
        // At the shift, the in-place plaintext segment goes and the keys shift down.
        let s = at_boundary(&j, &l, 16 << 20).unwrap();
        assert_eq!(s["segments"].as_object().unwrap().len(), 5);
        assert_eq!(s["segments"]["1"]["type"], "crypt");
        assert_eq!(s["segments"]["3"]["flags"], json!(["backup-final"]));
        assert_eq!(s["digests"]["0"]["segments"], json!(["1", "3"]));
        assert_eq!(Layout::of(&s).unwrap().boundary, 16 << 20);
        // Nothing encrypted yet: no active crypt segment, the digest keeps the backup.
        let t = at_boundary(&j, &l, l.total).unwrap();
        assert_eq!(t["digests"]["0"]["segments"], json!(["3"]));
        assert_eq!(t["segments"]["3"]["flags"], json!(["backup-final"]));
        assert_eq!(Layout::of(&t).unwrap().boundary, l.total);
        assert!(at_boundary(&j, &l, (16 << 20) - 4096).is_err());
        assert!(at_boundary(&j, &l, (40 << 20) + 100).is_err());
    }

    #[test]
    fn finishing_leaves_a_plain_luks2_header() {
        let f = finished(&state()).unwrap();
        assert_eq!(
            f["segments"],
            json!({"0": {"type": "crypt", "offset": "16777216", "size": "dynamic",
            "iv_tweak": "0", "encryption": "aes-xts-plain64", "sector_size": 512}})
        );
        assert_eq!(f["digests"], json!({"0": {"type": "pbkdf2", "keyslots": ["0", "1"], "segments": ["0"]}}));
        assert!(f["keyslots"].get("2").is_none());
        assert!(f["config"].get("requirements").is_none());
        let l = Layout::of(&f).unwrap();
        assert_eq!((l.total, l.boundary, l.data_offset, l.encryption.as_str()), (0, 0, 16 << 20, "aes-xts-plain64"));
        assert!(in_reencryption(&state()) && !in_reencryption(&f));
    }

    /// `state()` after another writer: keyslot 1 killed, keyslot 5 and a token added.
    fn changed_by_someone_else() -> Value {
        let mut j = state();
        j["keyslots"].as_object_mut().unwrap().remove("1");
        j["keyslots"]["5"] = json!({"type": "luks2", "area": {"offset": "32768"}});
        j["digests"]["0"]["keyslots"] = json!(["0", "5"]);
        j["tokens"]["1"] = json!({"type": "systemd-tpm2", "keyslots": ["5"]});
        j["config"]["label"] = json!("theirs");
        j
    }

    #[test]
    fn another_writers_keyslots_and_tokens_survive_every_commit() {
        let (ours, disk) = (state(), changed_by_someone_else());
        let l = Layout::of(&ours).unwrap();
        for b in [l.total, 32 << 20, 16 << 20] {
            let n = next_commit(&disk, &ours, &l, b).unwrap();
            assert_eq!(n["segments"], at_boundary(&ours, &l, b).unwrap()["segments"], "boundary {b}");
            assert_eq!((&n["keyslots"], &n["tokens"], &n["config"]), (&disk["keyslots"], &disk["tokens"], &disk["config"]));
            assert_eq!(n["digests"]["0"]["keyslots"], json!(["0", "5"]));
        }
        let f = next_commit(&disk, &ours, &l, 0).unwrap();
        assert_eq!(f["segments"], finished(&ours).unwrap()["segments"]);
        assert_eq!(f["keyslots"].as_object().unwrap().keys().collect::<Vec<_>>(), ["0", "5"]);
        assert_eq!(f["tokens"], disk["tokens"]);
        assert_eq!(f["digests"], json!({"0": {"type": "pbkdf2", "keyslots": ["0", "5"], "segments": ["0"]}}));
        assert_eq!(f["config"], json!({"json_size": "12288", "keyslots_size": "16744448", "label": "theirs"}));
        // Nothing changed: the same as from our own copy.
        assert_eq!(next_commit(&ours, &ours, &l, 32 << 20).unwrap(), at_boundary(&ours, &l, 32 << 20).unwrap());
    }

    #[test]
    fn a_header_whose_reencryption_changed_under_us_is_refused() {
        let ours = state();
        let l = Layout::of(&ours).unwrap();
        let refused = |disk: Value, part: &str| {
            for b in [32 << 20, 0] {
                let e = next_commit(&disk, &ours, &l, b).unwrap_err();
                assert!(e.to_string().contains(&format!("its {part} are not")), "{part}: {e}");
            }
        };
        // Segments: the boundary elsewhere (an old header restored), or the reencryption ended.
        refused(at_boundary(&changed_by_someone_else(), &l, 48 << 20).unwrap(), "segments");
        refused(finished(&ours).unwrap(), "segments");
        let mut d = ours.clone();
        d["digests"]["0"]["segments"] = json!(["4"]);
        refused(d, "digests' segments");
        let mut d = ours.clone();
        d["keyslots"]["2"]["mode"] = json!("decrypt");
        refused(d, "reencrypt keyslot");
        let mut d = ours.clone();
        d["config"].as_object_mut().unwrap().remove("requirements");
        refused(d, "reencryption requirement");
    }

    #[test]
    fn copies_round_trip_and_the_newest_intact_one_wins() {
        let dir = crate::testing::TempDir::new("header");
        let path = dir.join("img");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut bin = vec![0u8; BIN_LEN];
        bin[..6].copy_from_slice(MAGIC_1ST);
        bin[6..8].copy_from_slice(&2u16.to_be_bytes());
        bin[8..16].copy_from_slice(&0x4000u64.to_be_bytes());
        bin[72..78].copy_from_slice(b"sha256");
        let mut h = Header { bin, hdr_size: 0x4000, seqid: 7, json: state() };
        assert!(Header::read(&f).is_err());
        let imgs = h.images(&state()).unwrap();
        h.write(&f, &imgs).unwrap();
        Header::flush(&f).unwrap();
        h.committed(state());
        let r = Header::read(&f).unwrap();
        assert_eq!((r.seqid, r.hdr_size), (8, 0x4000));
        assert_eq!(r.json, state());
        // The next commit torn inside the primary: the secondary (older) wins.
        let next = at_boundary(&state(), &Layout::of(&state()).unwrap(), 32 << 20).unwrap();
        let imgs = h.images(&next).unwrap();
        f.write_all_at(&imgs[0][..5000], 0).unwrap();
        assert_eq!(Header::read(&f).unwrap().seqid, 8);
        // The primary complete, the secondary not yet: the primary (newer) wins.
        f.write_all_at(&imgs[0][..0x4000], 0).unwrap();
        let r = Header::read(&f).unwrap();
        assert_eq!((r.seqid, Layout::of(&r.json).unwrap().boundary), (9, 32 << 20));
        // Primary gone: the secondary is found at its offset.
        f.write_all_at(&[0u8; 512], 0).unwrap();
        assert_eq!(Header::read(&f).unwrap().seqid, 8);
    }
}
