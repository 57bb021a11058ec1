//! The switch back's in-place decryption of the moved segment (DECRYPT.md, "The switch
//! back"): the order its pieces are written in, and its recovery by the checksums the hot
//! header's keyslot area holds, as libcryptsetup's recovery of that state does. Used by the
//! switch back (decrypt/switch_back.rs) and by its guardian (guardian.rs), which decrypt/
//! depends on.

use std::{fs::File, os::unix::fs::FileExt};

use sha2::{Digest, Sha256};

use crate::{
    direct::{self, Aligned},
    error::{fail, Context, Result},
    metadata::Metadata,
    units::Bytes,
};

/// The first bytes of the PV, where its label is.
const LABEL: u64 = 4096;

/// The buffers the switch back's in-place decryption and its recovery use, made and touched
/// before the LVs are suspended: a page first touched inside could need reclaim, and reclaim
/// a swap LV on the PV.
pub struct Scratch {
    pub(crate) sums_at: u64,
    pub(crate) block: usize,
    pub(crate) moved: Bytes,
    pub(crate) sums: Aligned,
    pub(crate) head: Aligned,
    pub(crate) plain: Aligned,
}

impl Scratch {
    pub fn new(m: &Metadata, tail: Bytes) -> Result<Scratch> {
        let (sums_at, block, moved) = checksum_area(m, tail)?;
        if block == 0 || !moved.0.is_multiple_of(block as u64) || !LABEL.is_multiple_of(block as u64) || moved.0 <= LABEL {
            return fail(format!("Unexpected checksum block of {block} bytes for a moved segment of {moved}"));
        }
        let len = (moved.0 as usize / block * 32).next_multiple_of(4096);
        let mut s = Scratch {
            sums_at,
            block,
            moved,
            sums: Aligned::new(len),
            head: Aligned::new(direct::CHUNK),
            plain: Aligned::new(direct::CHUNK),
        };
        for b in [&mut s.sums, &mut s.head, &mut s.plain] {
            b.fill(0);
        }
        Ok(s)
    }

    /// The moved segment in the order it is decrypted: from its end down, its first 4 KiB
    /// (the PV label) last, after a flush. Until then the raw device shows no PV to LVM,
    /// which would otherwise activate the VG from a head that is still part ciphertext.
    pub(crate) fn pieces(&self) -> Vec<(u64, usize)> {
        let moved = self.moved.0;
        let mut v: Vec<(u64, usize)> = (0..moved)
            .step_by(direct::CHUNK)
            .map(|at| (at.max(LABEL), ((moved - at).min(direct::CHUNK as u64) - (LABEL - at.min(LABEL))) as usize))
            .collect();
        v.reverse();
        v.push((0, LABEL as usize));
        v
    }
}

/// The checksum area of a decryption's header (`datashift-checksum`): where it starts on
/// the disk, the block each checksum covers, and the moved segment's length.
fn checksum_area(m: &Metadata, tail: Bytes) -> Result<(u64, usize, Bytes)> {
    let area = m.keyslots.values().find(|k| k.kind == "reencrypt").and_then(|k| k.area.as_ref());
    let (Some(offset), Some(block)) = (area.and_then(|a| a.offset), area.and_then(|a| a.sector_size)) else {
        return fail("The decryption's header has no checksum area");
    };
    let Some(moved) = m.moved_segment().map(|(_, len)| len) else {
        return fail("The decryption's header has no moved segment");
    };
    Ok((tail.0 + offset.0, block as usize, moved))
}

/// Whether `m` is the switch back's hot state (the moved segment in reencryption).
pub fn is_hot(m: &Metadata) -> bool {
    m.flagged("in-reencryption").is_some()
}

/// The moved segment decrypted in place, block by block, as libcryptsetup's recovery of the
/// hot state does: a block whose sha256 is still the one recorded holds ciphertext, and
/// `through` (NAME, whose first segment maps the head encrypted) gives its plaintext; any
/// other block is plaintext already. Idempotent. The guardian runs it too, in `c`, made
/// before the suspension; the checksums are read from the disk.
pub fn decrypt_by_checksums(f: &File, through: &File, m: &Metadata, c: &mut Scratch) -> Result<()> {
    if !is_hot(m) {
        return fail("The header at the tail is not the switch back's");
    }
    let n = c.sums.len();
    f.read_exact_at(&mut c.sums[..n], c.sums_at).or_fail(|| "Cannot read the checksums at the tail".into())?;
    for (at, len) in c.pieces() {
        f.read_exact_at(&mut c.head[..len], at).or_fail(|| "Cannot read the head of the device".into())?;
        through.read_exact_at(&mut c.plain[..len], at).or_fail(|| "Cannot read through the mapping".into())?;
        let mut changed = false;
        for b in (0..len).step_by(c.block) {
            let k = (at as usize + b) / c.block * 32;
            if Sha256::digest(&c.head[b..b + c.block])[..] == c.sums[k..k + 32] {
                c.head[b..b + c.block].copy_from_slice(&c.plain[b..b + c.block]);
                changed = true;
            }
        }
        if changed {
            if at == 0 {
                f.sync_data().or_fail(|| "Cannot flush the device".into())?;
            }
            f.write_all_at(&c.head[..len], at).or_fail(|| "Cannot write the head of the device".into())?;
        }
    }
    f.sync_data().or_fail(|| "Cannot flush the device".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_decrypted_from_its_end_and_its_label_last() {
        let c = |moved: u64| Scratch {
            sums_at: 0,
            block: 512,
            moved: Bytes(moved),
            sums: Aligned::new(1),
            head: Aligned::new(1),
            plain: Aligned::new(1),
        };
        let mib = direct::CHUNK as u64;
        assert_eq!(c(3 * mib).pieces(), [(2 * mib, mib as usize), (mib, mib as usize), (4096, mib as usize - 4096), (0, 4096)]);
        let p = c(mib + 8192).pieces();
        assert_eq!(p, [(mib, 8192), (4096, mib as usize - 4096), (0, 4096)]);
        assert_eq!(p.iter().map(|(_, l)| *l as u64).sum::<u64>(), mib + 8192, "every byte once");
    }

    #[test]
    fn the_checksums_decrypt_only_what_is_still_ciphertext() {
        let (moved, sums_at, block) = ((1u64 << 20) + 8192, 2u64 << 20, 512usize);
        let meta = Metadata::from_value(serde_json::json!({
            "keyslots": {"1": {"type": "reencrypt", "area": {"type": "datashift-checksum", "offset": sums_at.to_string(),
                               "size": "1048576", "sector_size": block}}},
            "segments": {
                "0": {"type": "linear", "offset": "0", "size": moved.to_string(), "flags": ["in-reencryption"]},
                "1": {"type": "crypt", "offset": "0", "size": moved.to_string(), "flags": ["backup-moved-segment"]}}
        }))
        .unwrap();
        let pattern =
            |seed: u8| (0..moved).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect::<Vec<u8>>();
        let (cipher, plain) = (pattern(7), pattern(101));
        let dir = crate::testing::TempDir::new("in-place");
        let (disk, through) = (dir.path().join("disk"), dir.path().join("through"));
        let sums = crate::header::checksums(&cipher, block);
        let mut image = cipher.clone();
        image.resize(sums_at as usize, 0);
        image.extend_from_slice(&sums);
        image.resize(sums_at as usize + (1 << 20), 0);
        // A death halfway: the second piece and the label already plaintext.
        let half = (1 << 20) as usize;
        image[half..moved as usize].copy_from_slice(&plain[half..]);
        image[..4096].copy_from_slice(&plain[..4096]);
        std::fs::write(&disk, &image).unwrap();
        std::fs::write(&through, &plain).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&disk).unwrap();
        let t = File::open(&through).unwrap();
        let mut c = Scratch::new(&meta, Bytes(0)).unwrap();
        decrypt_by_checksums(&f, &t, &meta, &mut c).unwrap();
        let head = |d: &std::path::Path| std::fs::read(d).unwrap()[..moved as usize].to_vec();
        assert!(head(&disk) == plain, "every block plaintext");
        // Plaintext read through NAME is garbage: a block that is plaintext already is left.
        std::fs::write(&through, pattern(55)).unwrap();
        decrypt_by_checksums(&f, &File::open(&through).unwrap(), &meta, &mut c).unwrap();
        assert!(head(&disk) == plain, "run again, nothing changes");
        let cold = Metadata::from_value(serde_json::json!({"segments": {}})).unwrap();
        assert!(decrypt_by_checksums(&f, &t, &cold, &mut c).is_err(), "only in the hot state");
    }
}
