//! Typed rows of `pvs`, `vgs`, `lvs` and `pvs --segments` (JSON reports).

use super::*;

// LVM 2.03.16 only has `--reportformat json`, where every value is a string
// (json_std, with real numbers, came later). With `--units s --nosuffix`
// sizes are bare sector counts; with `--binary` flags are "0"/"1".

pub const REPORT_ARGS: [&str; 6] = ["--reportformat", "json", "--units", "s", "--nosuffix", "--binary"];

fn parse_num<'de, D: Deserializer<'de>, T: std::str::FromStr>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom(format!("not a number: {s:?}")))
}

fn de_sectors<'de, D: Deserializer<'de>>(d: D) -> Result<Sectors, D::Error> {
    parse_num(d).map(Sectors)
}

fn de_extents<'de, D: Deserializer<'de>>(d: D) -> Result<Extents, D::Error> {
    parse_num(d).map(Extents)
}

fn de_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match String::deserialize(d)?.as_str() {
        "1" => Ok(true),
        "0" => Ok(false),
        s => Err(serde::de::Error::custom(format!("not a 0/1 flag: {s:?}"))),
    }
}

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then_some(s))
}

/// Kernel device numbers: "-1" when the LV has no device.
fn de_kernel_num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n: i64 = parse_num(d)?;
    if n < 0 {
        Ok(None)
    } else {
        u32::try_from(n).map(Some).map_err(serde::de::Error::custom)
    }
}

/// A VG name, as LVM reports it: the LVM calls below that act on a VG take nothing
/// else, so a dm name or a device path cannot reach them by mistake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(transparent)]
pub struct VgName(pub String);

impl VgName {
    /// The VG orphan PVs belong to, as far as LVM's locks go (lib/locking/locking.h
    /// VG_ORPHANS: vgcreate, vgextend and pvcreate take its lock, V_#orphans).
    pub fn orphans() -> VgName {
        VgName("#orphans".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

fn de_opt_vg_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<VgName>, D::Error> {
    de_opt_string(d).map(|s| s.map(VgName))
}

/// An LV name as reports give it. Hidden (internal) LVs such as `pvmove0`,
/// `pool_tdata`, `pool_tmeta`, `lvol0_pmspare` or raid/mirror images are
/// reported as "[name]" by `lvs -a` and `pvs --segments`, but referred to by
/// bare name in `devices` and `seg_pe_ranges`; `name` is always the bare
/// name. (An old-style snapshot's COW extents belong to the visible
/// snapshot LV itself; its internal `snapshotN` LV is never listed.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvName {
    pub name: String,
    pub hidden: bool,
}

impl LvName {
    fn parse(s: String) -> LvName {
        match s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(bare) => LvName { name: bare.to_owned(), hidden: true },
            None => LvName { name: s, hidden: false },
        }
    }
}

impl<'de> Deserialize<'de> for LvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(LvName::parse)
    }
}

impl fmt::Display for LvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Takes the rows under `key` out of `{"report":[{key:[...]}]}`.
fn parse_report<T: DeserializeOwned>(cmd: &str, json: &str, key: &str) -> Result<Vec<T>, Error> {
    #[derive(Deserialize)]
    struct Envelope {
        report: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let env: Envelope = serde_json::from_str(json).map_err(|e| Error::report(cmd, format!("bad JSON: {e}")))?;
    let mut rows = Vec::new();
    for mut section in env.report {
        let Some(list) = section.remove(key) else {
            return Err(Error::report(cmd, format!("no {key:?} section")));
        };
        let serde_json::Value::Array(list) = list else {
            return Err(Error::report(cmd, format!("{key:?} is not a list")));
        };
        for (i, row) in list.into_iter().enumerate() {
            rows.push(T::deserialize(row).map_err(|e| Error::report(cmd, format!("row {i}: {e}")))?);
        }
    }
    Ok(rows)
}

/// Runs a reporting command with our fixed output options and field list.
/// Positional names go after "--" so a name starting with '-' can't be
/// taken for an option.
fn report<T: DeserializeOwned>(
    cmd: &str,
    pre: &[&str],
    fields: &str,
    key: &str,
    names: &[&str],
    extra: &[&str],
) -> Result<Vec<T>, Error> {
    let mut args = vec![cmd];
    args.extend_from_slice(pre);
    args.extend_from_slice(&REPORT_ARGS);
    args.extend_from_slice(&["-o", fields]);
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(names);
    let out = run(&args)?;
    parse_report(&args.join(" "), &out.report, key)
}

// ---------------------------------------------------------------------------
// PVs

/// One PV as `pvs` reports it. Field names are LVM's report field names.
///
/// What the sizes mean (measured with LVM 2.03.16 on a 256 MiB loop device):
/// - `dev_size` is the device's *current* size from the kernel, not what is
///   recorded in the PV.
/// - `pv_size` depends on whether the PV is in a VG:
///   - orphan PV (no VG, `pv_pe_count` 0): the size recorded in the PV
///     label, i.e. `dev_size` at pvcreate time or the
///     `--setphysicalvolumesize` value, *including* pe_start and the
///     metadata areas. 256M device: 524288; `--setphysicalvolumesize 200M`:
///     409600.
///   - PV in a VG: exactly `pv_pe_count * vg_extent_size`, only the extent
///     area. Neither pe_start nor the unusable tail (the remainder of a
///     partial extent, and a second metadata area) is counted, so it is
///     *not* `dev_size - pe_start`. 256M device, 4 MiB extents: 63 extents,
///     516096; with `--setphysicalvolumesize 200M`: 49 extents, 401408.
/// - `pe_start + pv_pe_count * vg_extent_size` ([`Pv::data_end`]) is where
///   the last extent ends; nothing LVM uses lies between it and the recorded
///   end except the second metadata area.
/// - A missing PV is reported as `[unknown]` with `dev_size` 0 and the rest
///   from the VG metadata.
/// - No report field gives the recorded PV end for a PV in a VG, nor where a
///   second metadata area (`--pvmetadatacopies 2`) lies. It sits in the
///   last 1 MiB (default size) *of the recorded size*, not of the device:
///   at 200 MiB - 1 MiB for `--setphysicalvolumesize 200M` on 256 MiB, and
///   it shrinks the extent count accordingly (201M: 49 extents instead of
///   50). The recorded size is in the PV label (`device_size`, see
///   [`read_label`]) and in the VG metadata (`dev_size` per PV in
///   `vgcfgbackup` output).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pv {
    pub pv_name: String,
    pub pv_uuid: String,
    #[serde(deserialize_with = "de_sectors")]
    pub dev_size: Sectors,
    #[serde(deserialize_with = "de_sectors")]
    pub pv_size: Sectors,
    #[serde(deserialize_with = "de_sectors")]
    pub pe_start: Sectors,
    #[serde(deserialize_with = "de_extents")]
    pub pv_pe_count: Extents,
    #[serde(deserialize_with = "de_extents")]
    pub pv_pe_alloc_count: Extents,
    #[serde(deserialize_with = "parse_num")]
    pub pv_mda_count: u32,
    /// Of the smallest metadata area on this PV.
    #[serde(deserialize_with = "de_sectors")]
    pub pv_mda_size: Sectors,
    #[serde(deserialize_with = "de_sectors")]
    pub pv_ba_start: Sectors,
    #[serde(deserialize_with = "de_sectors")]
    pub pv_ba_size: Sectors,
    #[serde(deserialize_with = "de_flag")]
    pub pv_missing: bool,
    /// Set for a PV that belongs to a VG.
    #[serde(deserialize_with = "de_flag")]
    pub pv_in_use: bool,
    #[serde(deserialize_with = "de_flag")]
    pub pv_allocatable: bool,
    /// `None` for an orphan PV.
    #[serde(deserialize_with = "de_opt_vg_name")]
    pub vg_name: Option<VgName>,
    #[serde(deserialize_with = "de_opt_string")]
    pub vg_uuid: Option<String>,
    /// 0 for an orphan PV.
    #[serde(deserialize_with = "de_sectors")]
    pub vg_extent_size: Sectors,
}

/// What [`report`] asks for; the fixtures were recorded with the same.
pub const PV_FIELDS: &str = "pv_name,pv_uuid,dev_size,pv_size,pe_start,pv_pe_count,\
pv_pe_alloc_count,pv_mda_count,pv_mda_size,pv_ba_start,pv_ba_size,pv_missing,pv_in_use,\
pv_allocatable,vg_name,vg_uuid,vg_extent_size";

impl Pv {
    /// The end of the last extent on the device.
    pub fn data_end(&self) -> Sectors {
        self.pe_start + self.pv_pe_count.to_sectors(self.vg_extent_size)
    }
}

/// All PVs LVM sees, or just `dev` (which then must be a PV).
pub fn pvs(dev: Option<&str>) -> Result<Vec<Pv>, Error> {
    pvs_with(dev, &[])
}

/// [`pvs`] with extra arguments, e.g. `--config` or `--devices`.
pub fn pvs_with(dev: Option<&str>, extra: &[&str]) -> Result<Vec<Pv>, Error> {
    let names: Vec<&str> = dev.into_iter().collect();
    report("pvs", &[], PV_FIELDS, "pv", &names, extra)
}

/// The PV on `dev`, `None` if `dev` carries no LVM label. (Asking `pvs`
/// alone can't tell "not a PV" from other failures but by its message.)
pub fn pv(dev: &Path) -> Result<Option<Pv>, Error> {
    let name = dev.to_str().ok_or_else(|| Error::Argument { arg: dev.display().to_string(), why: "not UTF-8" })?;
    // A label we can't read is for LVM to explain.
    if let Ok(None) = read_label(dev) {
        return Ok(None);
    }
    let mut rows = pvs(Some(name))?;
    match rows.len() {
        1 => Ok(rows.pop()),
        n => Err(Error::report(&format!("pvs {name}"), format!("{n} rows, expected 1"))),
    }
}

/// One row of `pvs --segments`: a run of extents on a PV and its user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PvSeg {
    pub pv_name: String,
    #[serde(deserialize_with = "de_extents")]
    pub pvseg_start: Extents,
    #[serde(deserialize_with = "de_extents")]
    pub pvseg_size: Extents,
    /// The LV using these extents, `None` for free space.
    #[serde(deserialize_with = "de_pvseg_lv")]
    pub lv_name: Option<LvName>,
}

fn de_pvseg_lv<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LvName>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then(|| LvName::parse(s)))
}

pub const PVSEG_FIELDS: &str = "pv_name,pvseg_start,pvseg_size,lv_name";

/// The extent runs of the PV `dev` in order, free ones included.
pub fn pv_segments(dev: &str) -> Result<Vec<PvSeg>, Error> {
    pv_segments_with(dev, &[])
}

pub fn pv_segments_with(dev: &str, extra: &[&str]) -> Result<Vec<PvSeg>, Error> {
    report("pvs", &["--segments"], PVSEG_FIELDS, "pvseg", &[dev], extra)
}

// ---------------------------------------------------------------------------
// VGs

/// `vg_attr`, e.g. "wz--n-"; see vgs(8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgAttr(String);

impl VgAttr {
    fn at(&self, i: usize) -> u8 {
        self.0.as_bytes()[i]
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn writeable(&self) -> bool {
        self.at(0) == b'w'
    }
    pub fn resizeable(&self) -> bool {
        self.at(1) == b'z'
    }
    pub fn exported(&self) -> bool {
        self.at(2) == b'x'
    }
    /// One or more PVs are missing.
    pub fn partial(&self) -> bool {
        self.at(3) == b'p'
    }
    /// Old clvm VG. LVM 2.03 refuses to process one at all ("Cannot access
    /// clustered VG"), so [`vg`] returns that error rather than this flag.
    pub fn clustered(&self) -> bool {
        self.at(5) == b'c'
    }
    /// lvmlockd VG (`vg_lock_type` says which lock manager). Without
    /// lvmlockd, [`vg`] fails instead ("... requires lvmlockd"), and so does
    /// [`pvs`] for its PVs.
    pub fn shared(&self) -> bool {
        self.at(5) == b's'
    }
}

impl<'de> Deserialize<'de> for VgAttr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 6 || !s.is_ascii() {
            return Err(serde::de::Error::custom(format!("vg_attr not 6 characters: {s:?}")));
        }
        Ok(VgAttr(s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Vg {
    pub vg_name: VgName,
    pub vg_uuid: String,
    pub vg_attr: VgAttr,
    /// "sanlock", "dlm", ... for shared VGs; `None` for local ones.
    #[serde(deserialize_with = "de_opt_string")]
    pub vg_lock_type: Option<String>,
    #[serde(deserialize_with = "parse_num")]
    pub pv_count: u32,
    #[serde(deserialize_with = "parse_num")]
    pub vg_missing_pv_count: u32,
    /// Visible LVs only.
    #[serde(deserialize_with = "parse_num")]
    pub lv_count: u32,
    #[serde(deserialize_with = "de_sectors")]
    pub vg_extent_size: Sectors,
    #[serde(deserialize_with = "de_extents")]
    pub vg_extent_count: Extents,
    #[serde(deserialize_with = "de_extents")]
    pub vg_free_count: Extents,
    /// Bumped by every metadata commit: compare to detect concurrent changes.
    #[serde(deserialize_with = "parse_num")]
    pub vg_seqno: u64,
}

/// What [`report`] asks for; the fixtures were recorded with the same.
pub const VG_FIELDS: &str = "vg_name,vg_uuid,vg_attr,vg_lock_type,pv_count,vg_missing_pv_count,\
lv_count,vg_extent_size,vg_extent_count,vg_free_count,vg_seqno";

pub fn vg(name: &VgName) -> Result<Vg, Error> {
    vg_with(name, &[])
}

pub fn vg_with(name: &VgName, extra: &[&str]) -> Result<Vg, Error> {
    let mut rows: Vec<Vg> = report("vgs", &[], VG_FIELDS, "vg", &[name.as_str()], extra)?;
    match rows.len() {
        1 => Ok(rows.remove(0)),
        n => Err(Error::report(&format!("vgs {name}"), format!("{n} rows, expected 1"))),
    }
}

// ---------------------------------------------------------------------------
// LVs

/// `lv_attr`, e.g. "-wi-a-----"; see lvs(8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvAttr(String);

impl LvAttr {
    fn at(&self, i: usize) -> u8 {
        self.0.as_bytes()[i]
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// First character: volume type ('-' plain, 'p' pvmove, 's' snapshot,
    /// 'o' origin, 't' thin pool, 'T' pool data, 'e' pool metadata or
    /// spare, 'V' thin volume, 'i'/'I' raid or mirror image, ...).
    pub fn volume_type(&self) -> char {
        self.at(0) as char
    }
    /// The temporary mirror LV of a running or interrupted pvmove.
    pub fn is_pvmove(&self) -> bool {
        self.at(0) == b'p'
    }
    /// Locked against allocation changes, as LVs with extents under a
    /// pvmove are: the allocation policy letter is upper case then.
    pub fn is_locked(&self) -> bool {
        self.at(2).is_ascii_uppercase()
    }
    /// State letter 'a'. 'X' means LVM couldn't ask the kernel (no dm).
    pub fn is_active(&self) -> bool {
        self.at(4) == b'a'
    }
}

impl<'de> Deserialize<'de> for LvAttr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 10 || !s.is_ascii() {
            return Err(serde::de::Error::custom(format!("lv_attr not 10 characters: {s:?}")));
        }
        Ok(LvAttr(s))
    }
}

/// One `devices` entry: the segment area on `device` starting at extent
/// `start`. `device` is a PV path, or for stacked segments an LV name
/// (`pvmove0`, `pool_tdata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegDevice {
    pub device: String,
    pub start: Extents,
}

/// One `seg_pe_ranges` entry: extents `start .. start + count` of `device`
/// (a PV path or an LV name, as in [`SegDevice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeRange {
    pub device: String,
    pub start: Extents,
    pub count: Extents,
}

/// "/dev/loop0(0),/dev/loop1(0)"
fn de_devices<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SegDevice>, D::Error> {
    let s = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("bad devices: {s:?}"));
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (dev, rest) = p.rsplit_once('(').ok_or_else(bad)?;
            let start = rest.strip_suffix(')').ok_or_else(bad)?.parse().map_err(|_| bad())?;
            Ok(SegDevice { device: dev.to_owned(), start: Extents(start) })
        })
        .collect()
}

/// "/dev/loop0:0-1 /dev/loop1:0-1", inclusive ranges.
fn de_pe_ranges<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PeRange>, D::Error> {
    let s = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("bad seg_pe_ranges: {s:?}"));
    s.split_whitespace()
        .map(|p| {
            let (dev, range) = p.rsplit_once(':').ok_or_else(bad)?;
            let (a, b) = range.split_once('-').ok_or_else(bad)?;
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if b < a {
                return Err(bad());
            }
            Ok(PeRange { device: dev.to_owned(), start: Extents(a), count: Extents(b - a + 1) })
        })
        .collect()
}

/// One segment of one LV: a row of `lvs -a --segments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LvSeg {
    pub vg_name: VgName,
    pub lv_name: LvName,
    pub lv_uuid: String,
    pub lv_attr: LvAttr,
    /// "active", "" (inactive), "unknown"...; prefer `lv_kernel_major`.
    pub lv_active: String,
    #[serde(deserialize_with = "de_sectors")]
    pub lv_size: Sectors,
    /// /dev/mapper path the LV has (or would have) when active.
    #[serde(deserialize_with = "de_opt_string")]
    pub lv_dm_path: Option<String>,
    /// The LV this one is a component of (pool for `pool_tdata`, ...).
    #[serde(deserialize_with = "de_opt_string")]
    pub lv_parent: Option<String>,
    /// `None` unless the LV has a kernel device.
    #[serde(deserialize_with = "de_kernel_num")]
    pub lv_kernel_major: Option<u32>,
    #[serde(deserialize_with = "de_kernel_num")]
    pub lv_kernel_minor: Option<u32>,
    pub segtype: String,
    /// Where the segment starts within the LV.
    #[serde(deserialize_with = "de_extents")]
    pub seg_start_pe: Extents,
    #[serde(deserialize_with = "de_extents")]
    pub seg_size_pe: Extents,
    #[serde(deserialize_with = "de_devices")]
    pub devices: Vec<SegDevice>,
    #[serde(deserialize_with = "de_pe_ranges")]
    pub seg_pe_ranges: Vec<PeRange>,
}

/// What [`report`] asks for; the fixtures were recorded with the same.
pub const LV_FIELDS: &str = "vg_name,lv_name,lv_uuid,lv_attr,lv_active,lv_size,lv_dm_path,lv_parent,\
lv_kernel_major,lv_kernel_minor,segtype,seg_start_pe,seg_size_pe,devices,seg_pe_ranges";

impl LvSeg {
    pub fn is_pvmove(&self) -> bool {
        self.lv_attr.is_pvmove()
    }
    pub fn is_locked(&self) -> bool {
        self.lv_attr.is_locked()
    }
}

/// Every segment of every LV in `vg`, hidden LVs included (`-a`).
pub fn lvs(vg: &VgName) -> Result<Vec<LvSeg>, Error> {
    lvs_with(vg, &[])
}

pub fn lvs_with(vg: &VgName, extra: &[&str]) -> Result<Vec<LvSeg>, Error> {
    report("lvs", &["-a", "--segments"], LV_FIELDS, "seg", &[vg.as_str()], extra)
}

#[cfg(test)]
mod tests {
    //! Parsing of reports recorded on Debian 12 / LVM 2.03.16 from in-process
    //! runs on loop devices (tests/lvm_loop.rs `record_fixtures`).

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/lvm/", $name))
        };
    }

    fn rows<T: DeserializeOwned>(json: &str, key: &str) -> Vec<T> {
        parse_report("test", json, key).unwrap_or_else(|e| panic!("{e}"))
    }

    const MIB: u64 = 2048; // sectors

    #[test]
    fn pvs_orphans() {
        let pvs: Vec<Pv> = rows(fixture!("pvs_orphan.json"), "pv");
        assert_eq!(pvs.len(), 4);
        // --setphysicalvolumesize 200M on 256 MiB: pv_size is the recorded
        // size, pe_start included.
        assert_eq!(
            pvs[0],
            Pv {
                pv_name: "/dev/loop0".into(),
                pv_uuid: "GjRbba-xSwr-zw31-8H60-6BWU-Th5C-4qcVq2".into(),
                dev_size: Sectors(256 * MIB),
                pv_size: Sectors(200 * MIB),
                pe_start: Sectors(MIB),
                pv_pe_count: Extents(0),
                pv_pe_alloc_count: Extents(0),
                pv_mda_count: 1,
                pv_mda_size: Sectors(2040),
                pv_ba_start: Sectors(0),
                pv_ba_size: Sectors(0),
                pv_missing: false,
                pv_in_use: false,
                pv_allocatable: false,
                vg_name: None,
                vg_uuid: None,
                vg_extent_size: Sectors(0),
            }
        );
        // Plain: pv_size = dev_size.
        assert_eq!((pvs[1].dev_size, pvs[1].pv_size), (Sectors(64 * MIB), Sectors(64 * MIB)));
        // --bootloaderareasize 1M: the area sits between the first mda and
        // the data, pushing pe_start to 2 MiB.
        let ba = &pvs[2];
        assert_eq!((ba.pv_ba_start, ba.pv_ba_size, ba.pe_start), (Sectors(MIB), Sectors(MIB), Sectors(2 * MIB)));
        // --pvmetadatacopies 2.
        assert_eq!((pvs[3].pv_mda_count, pvs[3].pv_size), (2, Sectors(256 * MIB)));
    }

    #[test]
    fn pvs_in_vg() {
        let pvs: Vec<Pv> = rows(fixture!("pvs_vg.json"), "pv");
        let [p] = &pvs[..] else { panic!("{pvs:?}") };
        assert_eq!(p.pv_uuid, "GjRbba-xSwr-zw31-8H60-6BWU-Th5C-4qcVq2");
        assert_eq!(p.vg_name.as_ref().map(VgName::as_str), Some("pvenc_fx_30758"));
        assert_eq!(p.vg_uuid.as_deref(), Some("JMtIjG-aFe9-lSdx-VUrJ-Pc0j-yDVn-prqo7d"));
        assert_eq!(p.vg_extent_size, Sectors(4 * MIB));
        // In a VG pv_size is only the extents: 49 × 4 MiB, not 200 - 1 MiB.
        assert_eq!((p.pv_pe_count, p.pv_pe_alloc_count), (Extents(49), Extents(7)));
        assert_eq!(p.pv_size, Sectors(49 * 4 * MIB));
        assert_eq!(p.dev_size, Sectors(256 * MIB));
        assert_eq!(p.data_end(), Sectors(MIB + 49 * 4 * MIB));
        assert!(p.pv_in_use && p.pv_allocatable && !p.pv_missing);
    }

    #[test]
    fn pvs_missing() {
        let pvs: Vec<Pv> = rows(fixture!("pvs_partial.json"), "pv");
        assert_eq!(pvs.len(), 2);
        assert_eq!((pvs[0].pv_name.as_str(), pvs[0].pv_missing), ("/dev/loop1", false));
        // What LVM still knows from the metadata about a PV it can't find.
        let m = &pvs[1];
        assert_eq!(m.pv_name, "[unknown]");
        assert!(m.pv_missing && m.pv_in_use);
        assert_eq!(m.pv_uuid, "ZuD1v8-0589-VNPe-08z3-pBj1-ublf-Pbp2gX");
        assert_eq!((m.dev_size, m.pv_size, m.pe_start), (Sectors(0), Sectors(15 * 4 * MIB), Sectors(2 * MIB)));
        assert_eq!((m.pv_pe_count, m.pv_pe_alloc_count, m.pv_mda_count), (Extents(15), Extents(2), 0));
    }

    #[test]
    fn pv_segments() {
        let segs: Vec<PvSeg> = rows(fixture!("pvsegs.json"), "pvseg");
        let got: Vec<_> = segs
            .iter()
            .map(|s| (s.pv_name.as_str(), s.pvseg_start, s.pvseg_size, s.lv_name.as_ref().map(|n| n.name.as_str())))
            .collect();
        let loop0 = "/dev/loop0";
        assert_eq!(
            got,
            [
                (loop0, Extents(0), Extents(2), Some("lv1")),
                (loop0, Extents(2), Extents(3), Some("lv2")),
                (loop0, Extents(5), Extents(2), Some("lv1")),
                (loop0, Extents(7), Extents(42), None),
            ]
        );
        assert!(segs.iter().all(|s| s.lv_name.as_ref().is_none_or(|n| !n.hidden)));

        let segs: Vec<PvSeg> = rows(fixture!("pvsegs_pvmove.json"), "pvseg");
        let pvmove0 = Some(LvName { name: "pvmove0".into(), hidden: true });
        let got: Vec<_> = segs.iter().map(|s| (s.pv_name.as_str(), s.pvseg_start.0, s.pvseg_size.0, s.lv_name.clone())).collect();
        assert_eq!(
            got,
            [
                ("/dev/loop1", 0, 2, pvmove0.clone()),
                ("/dev/loop1", 2, 1, Some(LvName { name: "lv2".into(), hidden: false })),
                ("/dev/loop1", 3, 12, None),
                ("/dev/loop2", 0, 2, pvmove0),
                ("/dev/loop2", 2, 13, None),
            ]
        );
    }

    #[test]
    fn vgs() {
        let vgs: Vec<Vg> = rows(fixture!("vgs.json"), "vg");
        assert_eq!(
            vgs,
            [Vg {
                vg_name: VgName("pvenc_fx_30758".into()),
                vg_uuid: "JMtIjG-aFe9-lSdx-VUrJ-Pc0j-yDVn-prqo7d".into(),
                vg_attr: VgAttr("wz--n-".into()),
                vg_lock_type: None,
                pv_count: 1,
                vg_missing_pv_count: 0,
                lv_count: 2,
                vg_extent_size: Sectors(4 * MIB),
                vg_extent_count: Extents(49),
                vg_free_count: Extents(42),
                vg_seqno: 4,
            }]
        );
        let a = &vgs[0].vg_attr;
        assert!(a.writeable() && a.resizeable());
        assert!(!a.exported() && !a.partial() && !a.clustered() && !a.shared());

        let two: Vec<Vg> = rows(fixture!("vgs_two.json"), "vg");
        let got: Vec<_> = two.iter().map(|v| (v.vg_name.as_str(), v.pv_count, v.lv_count, v.vg_free_count.0)).collect();
        // lv_count counts visible LVs only: the pvmove VG has pvmove0 too,
        // the thin VG also pool_tdata, pool_tmeta, lvol0_pmspare.
        assert_eq!(got, [("pvenc_fxmove_30758", 2, 2, 25), ("pvenc_fxthin_30758", 1, 4, 53)]);
    }

    #[test]
    fn vg_flags() {
        let v: Vec<Vg> = rows(fixture!("vgs_exported.json"), "vg");
        let a = &v[0].vg_attr;
        assert_eq!(a.as_str(), "wzx-n-");
        assert!(a.exported() && !a.partial() && !a.shared() && !a.clustered());

        let v: Vec<Vg> = rows(fixture!("vgs_partial.json"), "vg");
        let a = &v[0].vg_attr;
        assert_eq!(a.as_str(), "wz-pn-");
        assert!(a.partial() && !a.exported() && !a.shared() && !a.clustered());
        assert_eq!((v[0].pv_count, v[0].vg_missing_pv_count), (2, 1));

        // Never seen in a report without a lock manager (tests/lvm_loop.rs
        // loop_vg_states), decoded per vgs(8).
        assert!(VgAttr("wz--nc".into()).clustered());
        assert!(VgAttr("wz--ns".into()).shared());
        assert!(!VgAttr("wz--ns".into()).clustered());
        assert!(!VgAttr("r---n-".into()).writeable());
    }

    #[test]
    fn lvs_segments() {
        let segs: Vec<LvSeg> = rows(fixture!("lvs.json"), "seg");
        assert_eq!(segs.len(), 3);
        assert_eq!(
            segs[1],
            LvSeg {
                vg_name: VgName("pvenc_fx_30758".into()),
                lv_name: LvName { name: "lv1".into(), hidden: false },
                lv_uuid: "if3gc0-egUc-M2Ku-0emx-2rIE-D5l9-aYykKN".into(),
                lv_attr: LvAttr("-wi-XX----".into()),
                lv_active: "".into(),
                lv_size: Sectors(16 * MIB),
                lv_dm_path: Some("/dev/mapper/pvenc_fx_30758-lv1".into()),
                lv_parent: None,
                lv_kernel_major: None,
                lv_kernel_minor: None,
                segtype: "linear".into(),
                seg_start_pe: Extents(2),
                seg_size_pe: Extents(2),
                devices: vec![SegDevice { device: "/dev/loop0".into(), start: Extents(5) }],
                seg_pe_ranges: vec![PeRange { device: "/dev/loop0".into(), start: Extents(5), count: Extents(2) }],
            }
        );
        let got: Vec<_> = segs
            .iter()
            .map(|s| (s.lv_name.name.as_str(), s.seg_start_pe.0, s.seg_size_pe.0, s.seg_pe_ranges[0].start.0))
            .collect();
        assert_eq!(got, [("lv1", 0, 2, 0), ("lv1", 2, 2, 5), ("lv2", 0, 3, 2)]);
        for s in &segs {
            assert!(!s.is_pvmove() && !s.is_locked() && !s.lv_attr.is_active());
            assert_eq!(s.lv_attr.volume_type(), '-');
        }
    }

    #[test]
    fn lvs_interrupted_pvmove() {
        let segs: Vec<LvSeg> = rows(fixture!("lvs_pvmove.json"), "seg");
        let got: Vec<_> = segs
            .iter()
            .map(|s| (s.lv_name.name.as_str(), s.lv_name.hidden, s.is_pvmove(), s.is_locked(), s.segtype.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("lv1", false, false, true, "linear"),
                ("lv2", false, false, false, "linear"),
                ("pvmove0", true, true, true, "mirror"),
            ]
        );
        let dev = |d: &str, s| SegDevice { device: d.into(), start: Extents(s) };
        let range = |d: &str, s, c| PeRange { device: d.into(), start: Extents(s), count: Extents(c) };
        // The moved LV sits on pvmove0, which mirrors source and destination.
        assert_eq!(segs[0].devices, [dev("pvmove0", 0)]);
        assert_eq!(segs[0].seg_pe_ranges, [range("pvmove0", 0, 2)]);
        assert_eq!(segs[2].devices, [dev("/dev/loop1", 0), dev("/dev/loop2", 0)]);
        assert_eq!(segs[2].seg_pe_ranges, [range("/dev/loop1", 0, 2), range("/dev/loop2", 0, 2)]);
        assert_eq!(segs[2].lv_dm_path.as_deref(), Some("/dev/mapper/pvenc_fxmove_30758-pvmove0"));
        assert_eq!(segs[2].lv_uuid, "LxYAh3-3VJo-o5wH-20qe-Ldve-cbXN-N9mvSD");
    }

    #[test]
    fn lvs_thin_pool_and_snapshot() {
        let segs: Vec<LvSeg> = rows(fixture!("lvs_thin_snap.json"), "seg");
        let got: Vec<_> = segs
            .iter()
            .map(|s| {
                let n = &s.lv_name;
                (n.name.as_str(), n.hidden, s.lv_attr.volume_type(), s.segtype.as_str(), s.lv_parent.as_deref())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("lv1", false, 'o', "linear", None),
                ("lvol0_pmspare", true, 'e', "linear", None),
                ("pool", false, 't', "thin-pool", None),
                ("pool_tdata", true, 'T', "linear", Some("pool")),
                ("pool_tmeta", true, 'e', "linear", Some("pool")),
                // The snapshot's own rows are its COW store; LVM never lists
                // the internal snapshotN LV, not even with -a.
                ("snap", false, 's', "linear", None),
                ("thin1", false, 'V', "thin", None),
            ]
        );
        let ranges: Vec<_> = segs
            .iter()
            .map(|s| s.seg_pe_ranges.iter().map(|r| (r.device.as_str(), r.start.0, r.count.0)).collect::<Vec<_>>())
            .collect();
        let l3 = "/dev/loop3";
        assert_eq!(
            ranges,
            [
                vec![(l3, 0, 2)],
                vec![(l3, 3, 1)],
                vec![("pool_tdata", 0, 5)],
                vec![(l3, 5, 5)],
                vec![(l3, 4, 1)],
                vec![(l3, 2, 1)],
                vec![],
            ]
        );
        assert_eq!(segs[2].devices, [SegDevice { device: "pool_tdata".into(), start: Extents(0) }]);
        assert!(segs[6].devices.is_empty());
        assert_eq!(segs[6].lv_size, Sectors(40 * MIB));
        assert_eq!(segs[1].lv_uuid, "spare0-0000-0000-0000-0000-0000-000005");
    }

    #[test]
    fn bad_reports_are_errors() {
        let err = |json: &str, key: &str| match parse_report::<Vg>("vgs x", json, key) {
            Err(Error::Report { msg, .. }) => msg,
            other => panic!("{other:?}"),
        };
        let good = fixture!("vgs.json");
        assert!(err(good, "lv").contains(r#"no "lv" section"#));
        assert!(err("{", "vg").starts_with("bad JSON"));
        let msg = err(&good.replace(r#""vg_seqno":"4""#, r#""vg_seqno":"4S""#), "vg");
        assert!(msg.starts_with("row 0: not a number: \"4S\""), "{msg}");
        let msg = err(&good.replace("wz--n-", "wz--n"), "vg");
        assert!(msg.contains("vg_attr not 6 characters"), "{msg}");
        let msg = err(&good.replace(r#", "vg_lock_type":"""#, ""), "vg");
        assert!(msg.contains("missing field `vg_lock_type`"), "{msg}");

        let lvs = fixture!("lvs.json");
        let e = parse_report::<LvSeg>("lvs", &lvs.replace("/dev/loop0:5-6", "/dev/loop0:6-5"), "seg");
        assert!(e.unwrap_err().to_string().contains("bad seg_pe_ranges"));
        let e = parse_report::<LvSeg>("lvs", &lvs.replace("/dev/loop0(5)", "/dev/loop0 5"), "seg");
        assert!(e.unwrap_err().to_string().contains("bad devices"));
    }
}
