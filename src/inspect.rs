//! What a device holds, read without changing a byte (`probe`: a LUKS2 header, the
//! record the switch leaves while it places the header, or anything else), and the state
//! of a conversion on it (`inspect` → `State`). `--status`, `--test`, preflight and
//! resume all ask here first; only a run meant to change the disk repairs what it finds
//! (resume.rs, `repair`).
//!
//! The switch (switch.rs) writes the header in three steps, each flushed:
//! 1. the first 4 KiB: this record in sector 0, zeros after it. The PV label (sectors
//!    0–3) is gone before any header byte lands where LVM reads metadata or extents;
//! 2. the header from 4 KiB on (the secondary binary header, JSON, keyslots);
//! 3. the first 4 KiB of the header: the primary binary header, with the magic.
//!
//! A crash after step 1 leaves neither an LVM label nor a LUKS2 header, so nothing at
//! boot uses the device; the record says where the copy of the first segment lies, and
//! the repair (resume.rs, `restore_plain`) puts the plain PV back from it. After step 2 stock libcryptsetup
//! restores the primary header from the secondary one; after step 3 it is LUKS2.

use std::{fs::File, io, os::unix::fs::FileExt, path::Path};

use crate::{
    dm::Dm,
    header::{MAGIC_1ST, MAGIC_2ND, SECONDARY_OFFSETS},
    luks::{self, Marker},
    units::Bytes,
};

const RECORD_MAGIC: &[u8; 16] = b"PVENCRYPT-SWITCH";
const TOKEN_JSON: &[u8] = br#""type":"pvencrypt""#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Neither LUKS nor a torn switch: for us, possibly a PV.
    Other,
    /// A LUKS header with its magic at the start (libcryptsetup takes it from here).
    Luks,
    /// A switch cut between its header writes (see the module doc).
    TornSwitch(SwitchRecord),
    /// Our secondary header behind a first sector that is not LUKS and holds no record:
    /// libcryptsetup can restore the primary one once nothing else claims the device.
    TornHeader,
}

/// Sector 0 while the switch places the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchRecord {
    /// The copy of the first segment: byte offset and length.
    pub moved: (Bytes, Bytes),
    /// LVM's dashed PV uuid, as the label in the copy must show it.
    pub pv_uuid: String,
    pub name: String,
}

const UUID_LEN: usize = 40;
const NAME_LEN: usize = 128;
const RECORD_LEN: usize = 16 + 8 + 8 + UUID_LEN + NAME_LEN + 8;

/// FNV-1a: enough to tell a record from stale bytes; nothing here is adversarial.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3))
}

impl SwitchRecord {
    pub fn encode(&self) -> Option<[u8; 512]> {
        if self.pv_uuid.len() > UUID_LEN || self.name.len() > NAME_LEN {
            return None;
        }
        let mut s = [0u8; 512];
        s[..16].copy_from_slice(RECORD_MAGIC);
        s[16..24].copy_from_slice(&self.moved.0 .0.to_le_bytes());
        s[24..32].copy_from_slice(&self.moved.1 .0.to_le_bytes());
        s[32..32 + self.pv_uuid.len()].copy_from_slice(self.pv_uuid.as_bytes());
        let n = 32 + UUID_LEN;
        s[n..n + self.name.len()].copy_from_slice(self.name.as_bytes());
        let sum = fnv(&s[..RECORD_LEN - 8]);
        s[RECORD_LEN - 8..RECORD_LEN].copy_from_slice(&sum.to_le_bytes());
        Some(s)
    }

    pub fn decode(s: &[u8]) -> Option<SwitchRecord> {
        if s.len() < RECORD_LEN || &s[..16] != RECORD_MAGIC {
            return None;
        }
        if fnv(&s[..RECORD_LEN - 8]).to_le_bytes() != s[RECORD_LEN - 8..RECORD_LEN] {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(s[o..o + 8].try_into().unwrap());
        let text = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8(b[..end].to_vec()).ok()
        };
        let n = 32 + UUID_LEN;
        Some(SwitchRecord {
            moved: (Bytes(u64_at(16)), Bytes(u64_at(24))),
            pv_uuid: text(&s[32..n])?,
            name: text(&s[n..n + NAME_LEN])?,
        })
    }
}

/// Reads the start of `path` (read-only) and says what it holds. With O_DIRECT where the
/// device allows it: the header is written through another device (the alias, then
/// NAME), so the raw device's page cache may still hold what an earlier read found.
pub fn probe(path: &Path) -> io::Result<Found> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => File::open(path)?,
        r => r?,
    };
    let mut buf = crate::direct::Aligned::new(4096 + 12288);
    f.read_exact_at(&mut buf[..4096], 0)?;
    let start = &buf[..4096];
    if start.starts_with(MAGIC_1ST) {
        return Ok(Found::Luks);
    }
    if let Some(r) = SwitchRecord::decode(start) {
        return Ok(Found::TornSwitch(r));
    }
    let second = &mut buf[..];
    for off in SECONDARY_OFFSETS {
        if f.read_exact_at(second, off).is_err() {
            break;
        }
        if second.starts_with(MAGIC_2ND) && second.windows(TOKEN_JSON.len()).any(|w| w == TOKEN_JSON) {
            return Ok(Found::TornHeader);
        }
    }
    Ok(Found::Other)
}

/// Everything a device can be found in, as far as pvencrypt is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Neither LUKS nor a torn switch: a PV to convert, or nothing of ours.
    Other,
    /// LUKS without our marker: not ours, or a conversion that is done.
    Foreign,
    /// A switch cut after its first header write.
    TornSwitch(SwitchRecord),
    /// Our secondary header behind a first sector that is not LUKS.
    TornHeader,
    /// Our conversion in its data phase: stopped, crashed or running.
    Converting(Marker),
    /// Killed in the data phase, the machine still up: NAME maps libcryptsetup's overlay.
    Killed(Marker),
    /// Every block encrypted, but a crash hit the very last step.
    LastStep(Marker),
    /// Encrypted; the marker and temporary keyslot are still to go.
    Finishing(Marker),
}

impl State {
    /// A conversion of ours that `pvencrypt` takes up.
    pub fn is_ours(&self) -> bool {
        !matches!(self, State::Other | State::Foreign)
    }

    /// The name NAME is (or will be) opened under, when the device says it.
    pub fn name(&self) -> &str {
        match self {
            State::TornSwitch(r) => &r.name,
            State::Converting(m) | State::Killed(m) | State::LastStep(m) | State::Finishing(m) => m.name.as_str(),
            State::Other | State::Foreign | State::TornHeader => "",
        }
    }
}

/// What `path` holds, read-only: `probe`, then for LUKS2 our marker, the reencryption
/// state (libcryptsetup) and what libcryptsetup left in device-mapper.
pub fn inspect(path: &Path) -> State {
    match probe(path) {
        Err(_) | Ok(Found::Other) => State::Other,
        Ok(Found::TornSwitch(r)) => State::TornSwitch(r),
        Ok(Found::TornHeader) => State::TornHeader,
        Ok(Found::Luks) => luks_state(path),
    }
}

fn luks_state(path: &Path) -> State {
    // Read by hand, not through libcryptsetup, whose loader would repair a stale copy.
    let Some(meta) = crate::header::read_metadata(path) else { return State::Foreign };
    let Some((_, m)) = meta.token::<Marker>(luks::TOKEN_TYPE) else { return State::Foreign };
    if !meta.in_reencryption() {
        return State::Finishing(m);
    }
    if Dm::open().is_ok_and(|dm| luks::helpers_of(&m.name).iter().any(|h| dm.exists(h))) {
        return State::Killed(m);
    }
    if meta.all_encrypted() {
        return State::LastStep(m);
    }
    State::Converting(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_rejects_damage() {
        let r = SwitchRecord { moved: (Bytes(520093696), Bytes(16777216)), pv_uuid: "a".repeat(38), name: "sda5_crypt".into() };
        let s = r.encode().unwrap();
        assert!(!s.starts_with(MAGIC_1ST));
        assert_eq!(SwitchRecord::decode(&s), Some(r.clone()));
        for i in [0, 20, 40, 100, RECORD_LEN - 1] {
            let mut bad = s;
            bad[i] ^= 1;
            assert_eq!(SwitchRecord::decode(&bad), None, "byte {i}");
        }
        assert!(SwitchRecord { name: "n".repeat(129), ..r }.encode().is_none());
    }

    #[test]
    fn probe_tells_the_states_apart() {
        let dir = crate::testing::TempDir::new("probe");
        let img = dir.join("img");
        let mut disk = vec![0u8; 1 << 20];
        std::fs::write(&img, &disk).unwrap();
        assert_eq!(probe(&img).unwrap(), Found::Other);
        disk[0x4000..0x4006].copy_from_slice(MAGIC_2ND);
        disk[0x5000..0x5000 + TOKEN_JSON.len()].copy_from_slice(TOKEN_JSON);
        std::fs::write(&img, &disk).unwrap();
        assert_eq!(probe(&img).unwrap(), Found::TornHeader);
        let r = SwitchRecord { moved: (Bytes(1), Bytes(2)), pv_uuid: "u".into(), name: "n".into() };
        disk[..512].copy_from_slice(&r.encode().unwrap());
        std::fs::write(&img, &disk).unwrap();
        assert_eq!(probe(&img).unwrap(), Found::TornSwitch(r));
        disk[..6].copy_from_slice(MAGIC_1ST);
        std::fs::write(&img, &disk).unwrap();
        assert_eq!(probe(&img).unwrap(), Found::Luks);
    }
}
