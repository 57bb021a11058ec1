//! The LUKS2 metadata, the JSON area of the header, as one typed model: the header
//! commits (header.rs), the states read back (inspect.rs), the steps through
//! libcryptsetup (luks.rs) and the boot integration all read and write it through these
//! types. The fields are those of cryptsetup's on-disk format (docs/on-disk-format-luks2
//! and lib/luks2/luks2_json_metadata.c); what pvencrypt does not name stays as it was
//! (`rest`), so a commit rewrites only what the reencryption owns. Numbers that can
//! exceed 2^53 are JSON strings there, and are `Bytes` here.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::units::{Bytes, Sectors};

/// A keyslot, token, segment or digest id: a decimal string in the JSON, ordered as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub u32);

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Id).map_err(|_| serde::de::Error::custom(format!("not an id: {s:?}")))
    }
}

/// A count with its unit as LUKS2 writes it: a decimal string.
mod text {
    use super::*;
    use crate::units::Sectors;

    pub trait Count: Copy {
        fn new(n: u64) -> Self;
        fn get(self) -> u64;
    }

    impl Count for Bytes {
        fn new(n: u64) -> Self {
            Bytes(n)
        }
        fn get(self) -> u64 {
            self.0
        }
    }

    impl Count for Sectors {
        fn new(n: u64) -> Self {
            Sectors(n)
        }
        fn get(self) -> u64 {
            self.0
        }
    }

    pub fn serialize<C: Count, S: Serializer>(c: &C, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&c.get())
    }

    pub fn deserialize<'de, C: Count, D: Deserializer<'de>>(d: D) -> Result<C, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(C::new).map_err(|_| serde::de::Error::custom(format!("not a number: {s:?}")))
    }

    pub mod opt {
        use super::*;

        pub fn serialize<C: Count, S: Serializer>(c: &Option<C>, s: S) -> Result<S::Ok, S::Error> {
            match c {
                Some(c) => super::serialize(c, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, C: Count, D: Deserializer<'de>>(d: D) -> Result<Option<C>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// The metadata of one LUKS2 device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub keyslots: BTreeMap<Id, Keyslot>,
    /// Tokens are other programs' records (systemd's, ours: `luks::Marker`): kept as JSON.
    #[serde(default)]
    pub tokens: BTreeMap<Id, Value>,
    #[serde(default)]
    pub segments: BTreeMap<Id, Segment>,
    #[serde(default)]
    pub digests: BTreeMap<Id, Digest>,
    #[serde(default)]
    pub config: Config,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyslot {
    /// "luks2", or "reencrypt" for the reencryption's own keyslot.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<Area>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Where a keyslot's material lies in the header area; a reencrypt keyslot's area also
/// records the data shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Area {
    #[serde(default, with = "text::opt", skip_serializing_if = "Option::is_none")]
    pub offset: Option<Bytes>,
    #[serde(default, with = "text::opt", skip_serializing_if = "Option::is_none")]
    pub size: Option<Bytes>,
    #[serde(default, with = "text::opt", skip_serializing_if = "Option::is_none")]
    pub shift_size: Option<Bytes>,
    /// A checksum resilience's block: one hash per this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_size: Option<u32>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A segment's size: fixed, or to the end of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Fixed(Bytes),
    Dynamic,
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Size::Fixed(b) => text::serialize(b, s),
            Size::Dynamic => s.serialize_str("dynamic"),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        let s = String::deserialize(d)?;
        if s == "dynamic" {
            return Ok(Size::Dynamic);
        }
        s.parse().map(|n| Size::Fixed(Bytes(n))).map_err(|_| serde::de::Error::custom(format!("not a size: {s:?}")))
    }
}

impl Size {
    pub fn fixed(self) -> Option<Bytes> {
        match self {
            Size::Fixed(b) => Some(b),
            Size::Dynamic => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// "linear" (plaintext) or "crypt".
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "text")]
    pub offset: Bytes,
    pub size: Size,
    /// The IV of the segment's first sector, in 512-byte sectors.
    #[serde(default, with = "text::opt", skip_serializing_if = "Option::is_none")]
    pub iv_tweak: Option<Sectors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_size: Option<u32>,
    /// A reencryption's bookkeeping: "backup-previous", "backup-final",
    /// "backup-moved-segment", "in-reencryption".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Segment {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().flatten().any(|f| f == flag)
    }

    /// A backup segment only records where a reencryption came from or goes to.
    pub fn is_backup(&self) -> bool {
        self.flags.iter().flatten().any(|f| f.starts_with("backup-"))
    }

    pub fn is_crypt(&self) -> bool {
        self.kind == "crypt"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    #[serde(default)]
    pub keyslots: Vec<Id>,
    #[serde(default)]
    pub segments: Vec<Id>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, with = "text::opt", skip_serializing_if = "Option::is_none")]
    pub json_size: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    #[serde(default)]
    pub mandatory: Vec<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The binary header before each copy's JSON area.
const BIN_LEN: u64 = 4096;

impl Metadata {
    pub fn from_value(v: Value) -> Result<Metadata, String> {
        serde_json::from_value(v).map_err(|e| format!("Unexpected LUKS2 metadata: {e}"))
    }

    /// Whether it carries the online reencryption requirement (libcryptsetup's
    /// `online-reencrypt`, `online-reencrypt-v2`, ...).
    pub fn in_reencryption(&self) -> bool {
        self.config.requirements.iter().flat_map(|r| &r.mandatory).any(|r| r.starts_with("online-reencrypt"))
    }

    /// The segment carrying `flag`.
    pub fn flagged(&self, flag: &str) -> Option<(Id, &Segment)> {
        self.segments.iter().find(|(_, s)| s.has_flag(flag)).map(|(id, s)| (*id, s))
    }

    /// The segments that map the data now, in id order; the backup ones only record
    /// where the reencryption came from and goes to.
    pub fn active(&self) -> impl Iterator<Item = &Segment> {
        self.segments.values().filter(|s| !s.is_backup())
    }

    /// (bytes encrypted, bytes in all) of a device in reencryption: the crypt segments
    /// among the active ones are what is done. None once one segment maps everything.
    pub fn progress(&self) -> Option<(Bytes, Bytes)> {
        let (mut done, mut total) = (Bytes(0), Bytes(0));
        for s in self.active() {
            let size = s.size.fixed()?;
            total = total + size;
            if s.is_crypt() {
                done = done + size;
            }
        }
        (total > Bytes(0)).then_some((done, total))
    }

    /// True when a device still in reencryption has no plaintext segment left.
    pub fn all_encrypted(&self) -> bool {
        let mut active = self.active().peekable();
        active.peek().is_some() && active.all(Segment::is_crypt)
    }

    /// The cipher spec the reencryption encrypts with (its backup-final segment).
    pub fn final_encryption(&self) -> Option<&str> {
        self.flagged("backup-final")?.1.encryption.as_deref()
    }

    /// The name libcryptsetup gives the volume key of the encrypted data in the kernel
    /// keyring (`get_key_description_by_digest`: `cryptsetup:UUID-dN`, N the digest of that
    /// segment). Tables that name the key so are the ones stock `cryptsetup reencrypt
    /// --active-name` accepts: it compares key descriptions, not keys.
    pub fn key_description(&self, uuid: &str) -> Option<String> {
        let crypt = ["backup-final", "backup-previous"]
            .iter()
            .filter_map(|f| self.flagged(f))
            .chain(self.segments.iter().map(|(id, s)| (*id, s)))
            .find(|(_, s)| s.is_crypt())?
            .0;
        let (digest, _) = self.digests.iter().find(|(_, d)| d.segments.contains(&crypt))?;
        Some(format!("cryptsetup:{uuid}-d{}", digest.0))
    }

    /// The copy of the first data segment during a datashift encryption: (offset, length).
    pub fn moved_segment(&self) -> Option<(Bytes, Bytes)> {
        let (_, s) = self.flagged("backup-moved-segment")?;
        Some((s.offset, s.size.fixed()?))
    }

    /// The data shift recorded in the reencrypt keyslot.
    pub fn reencrypt_shift(&self) -> Option<Bytes> {
        self.keyslots.values().find(|k| k.kind == "reencrypt")?.area.as_ref()?.shift_size
    }

    /// The first token of type `kind`, read as `T`.
    pub fn token<T: DeserializeOwned>(&self, kind: &str) -> Option<(Id, T)> {
        self.tokens.iter().find(|(_, t)| t["type"] == kind).and_then(|(id, t)| Some((*id, T::deserialize(t).ok()?)))
    }

    /// Both header copies' binary headers and JSON areas; keyslot areas follow.
    fn headers_end(&self) -> Option<Bytes> {
        Some(Bytes(2 * (self.config.json_size?.0 + BIN_LEN)))
    }

    /// Keyslot areas as (offset, size), in offset order; None if one is not known (no
    /// extent or wipe may then be guessed).
    fn keyslot_areas(&self) -> Option<Vec<(Bytes, Bytes)>> {
        let mut used: Vec<(Bytes, Bytes)> =
            self.keyslots.values().map(|k| k.area.as_ref().and_then(|a| Some((a.offset?, a.size?)))).collect::<Option<_>>()?;
        used.sort();
        Some(used)
    }

    /// The header's declared size: both binary headers with their JSON areas, and the
    /// keyslots area (`keyslots_size`), which new keyslots may use up to its end.
    pub fn header_size(&self) -> Option<Bytes> {
        let keyslots = self.config.rest.get("keyslots_size")?.as_str()?.parse::<u64>().ok()?;
        Some(self.headers_end()? + Bytes(keyslots))
    }

    /// The end of the last keyslot area, 4 KiB aligned: the header's extent.
    pub fn header_extent(&self) -> Option<Bytes> {
        let end = self.keyslot_areas()?.into_iter().map(|(o, s)| o + s).fold(self.headers_end()?, Bytes::max);
        Some(Bytes(end.0.next_multiple_of(4096)))
    }

    /// The parts of the header area no keyslot uses, up to `data_offset`: after a
    /// conversion they held the PV's first extents in plaintext.
    pub fn unused_areas(&self, data_offset: Bytes) -> Option<Vec<(Bytes, Bytes)>> {
        let mut free = Vec::new();
        let mut at = self.headers_end()?;
        for (off, size) in self.keyslot_areas()? {
            if off > at {
                free.push((at, off - at));
            }
            at = at.max(off + size);
        }
        if data_offset > at {
            free.push((at, data_offset - at));
        }
        Some(free)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta(v: Value) -> Metadata {
        Metadata::from_value(v).unwrap()
    }

    /// Recorded from `cryptsetup reencrypt --encrypt --reduce-device-size 32M` on 4 GiB,
    /// interrupted at 20.47%.
    fn interrupted() -> Value {
        json!({"segments": {
            "0": {"type": "linear", "offset": "4278190080", "size": "16777216"},
            "1": {"type": "linear", "offset": "16777216", "size": "3372220416"},
            "2": {"type": "crypt", "offset": "3405774848", "size": "872415232", "iv_tweak": "6619136",
                  "encryption": "aes-xts-plain64", "sector_size": 512},
            "3": {"type": "linear", "offset": "0", "size": "4261412864", "flags": ["backup-previous"]},
            "4": {"type": "crypt", "offset": "16777216", "size": "dynamic", "iv_tweak": "0",
                  "encryption": "aes-xts-plain64", "sector_size": 512, "flags": ["backup-final"]},
            "5": {"type": "linear", "offset": "4278190080", "size": "16777216", "flags": ["backup-moved-segment"]}
        }})
    }

    #[test]
    fn what_it_does_not_name_survives_a_round_trip() {
        let v = json!({
            "keyslots": {"0": {"type": "luks2", "key_size": 64, "af": {"type": "luks1", "stripes": 4000},
                               "area": {"type": "raw", "offset": "32768", "size": "258048", "key_size": 64}}},
            "tokens": {"0": {"type": "systemd-tpm2", "keyslots": ["0"], "tpm2-pcrs": [7]}},
            "segments": {"0": {"type": "crypt", "offset": "16777216", "size": "dynamic", "iv_tweak": "0",
                               "encryption": "aes-xts-plain64", "sector_size": 4096, "flags": []}},
            "digests": {"0": {"type": "pbkdf2", "keyslots": ["0"], "segments": ["0"], "hash": "sha256"}},
            "config": {"json_size": "12288", "keyslots_size": "16744448", "flags": ["allow-discards"]},
            "future": {"x": 1}
        });
        let m = meta(v.clone());
        assert_eq!(serde_json::to_value(&m).unwrap(), v);
        assert_eq!(m.segments[&Id(0)].sector_size, Some(4096));
        assert_eq!(m.keyslots[&Id(0)].area.as_ref().unwrap().size, Some(Bytes(258048)));
        assert_eq!(m.header_size(), Some(Bytes(2 * (12288 + 4096) + 16744448)), "luksFormat's 16 MiB");
        assert!(Metadata::from_value(json!({"segments": {"0": {"type": "linear", "offset": "x", "size": "1"}}})).is_err());
    }

    #[test]
    fn the_key_is_named_as_libcryptsetup_names_it() {
        let mut v = interrupted();
        let digest = |segments: &[&str]| json!({"type": "pbkdf2", "keyslots": [], "segments": segments});
        v["digests"] = json!({"0": digest(&[]), "3": digest(&["2", "4"])});
        assert_eq!(meta(v.clone()).key_description("u").as_deref(), Some("cryptsetup:u-d3"), "backup-final's");
        v["digests"] = json!({"0": digest(&["2"])});
        assert_eq!(meta(v).key_description("u"), None, "no digest of the final segment");
        let clean = json!({"segments": {"0": {"type": "crypt", "offset": "16777216", "size": "dynamic"}},
                           "digests": {"1": digest(&["0"])}});
        assert_eq!(meta(clean).key_description("u").as_deref(), Some("cryptsetup:u-d1"));
    }

    #[test]
    fn ids_order_as_numbers() {
        let m = meta(json!({"segments": {
            "10": {"type": "linear", "offset": "0", "size": "1"},
            "9": {"type": "linear", "offset": "0", "size": "2"}}}));
        assert_eq!(m.segments.keys().copied().collect::<Vec<_>>(), [Id(9), Id(10)]);
    }

    #[test]
    fn a_reencryption_read_from_its_segments() {
        let m = meta(interrupted());
        assert_eq!(m.progress(), Some((Bytes(872415232), Bytes(4261412864))));
        assert!(!m.all_encrypted());
        assert_eq!(m.final_encryption(), Some("aes-xts-plain64"));
        assert_eq!(m.moved_segment(), Some((Bytes(4278190080), Bytes(16777216))));
        let done = meta(json!({"segments": {"0": {"type": "crypt", "offset": "16777216", "size": "dynamic"}}}));
        assert_eq!((done.progress(), done.moved_segment()), (None, None));
        // The state a crash in the last step leaves: the active segment is the final one.
        let stuck = meta(json!({"segments": {
            "0": {"type": "crypt", "offset": "16777216", "size": "dynamic"},
            "1": {"type": "linear", "offset": "0", "size": "503316480", "flags": ["backup-previous"]},
            "2": {"type": "crypt", "offset": "16777216", "size": "dynamic", "flags": ["backup-final"]},
            "3": {"type": "linear", "offset": "520093696", "size": "16777216", "flags": ["backup-moved-segment"]}
        }}));
        assert!(stuck.all_encrypted());
        assert!(!meta(json!({})).all_encrypted());
    }

    #[test]
    fn shift_token_and_requirement() {
        let m = meta(json!({
            "keyslots": {"0": {"type": "luks2"},
                         "2": {"type": "reencrypt", "area": {"type": "datashift", "shift_size": "16777216"}}},
            "tokens": {"0": {"type": "systemd-tpm2", "keyslots": ["0"]}, "3": {"type": "pvencrypt", "version": 1}},
            "config": {"requirements": {"mandatory": ["online-reencrypt-v2"]}}}));
        assert_eq!(m.reencrypt_shift(), Some(Bytes(16 << 20)));
        assert_eq!(m.token::<Value>("pvencrypt").map(|(id, t)| (id, t["version"].clone())), Some((Id(3), json!(1))));
        assert!(m.token::<Value>("other").is_none());
        assert!(m.in_reencryption());
        assert!(!meta(json!({"config": {"requirements": {"mandatory": []}}})).in_reencryption());
    }

    #[test]
    fn unused_areas_are_the_gaps_between_keyslots() {
        let m = meta(json!({"config": {"json_size": "12288"}, "keyslots": {
            "0": {"type": "luks2", "area": {"offset": "32768", "size": "258048"}},
            "2": {"type": "luks2", "area": {"offset": "548864", "size": "4096"}}}}));
        assert_eq!(m.header_extent(), Some(Bytes(552960)));
        assert_eq!(
            m.unused_areas(Bytes(16 << 20)),
            Some(vec![(Bytes(290816), Bytes(258048)), (Bytes(552960), Bytes((16 << 20) - 552960))])
        );
    }
}
