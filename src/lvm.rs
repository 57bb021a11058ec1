//! LVM access through liblvm2cmd: LVM commands run inside this process (the
//! product never spawns the `lvm` binary) and their JSON reports are parsed
//! into typed rows.
//!
//! liblvm2cmd keeps global state (log function, umask, `/run/lock/lvm`
//! flocks) and LVM itself says it is not thread-safe, so every call goes
//! through one mutex; callers on several threads simply take turns. Each
//! call runs in a fresh LVM context, like a CLI invocation (see `LVM`
//! below for why).
//!
//! Things an in-process LVM does to *our* process, which callers must mind:
//! - it sets the umask to 0077; [`run`] puts the previous one back after each
//!   call, but another thread creating files meanwhile gets 0077;
//! - during suspend it `mlockall`s the process and raises its priority;
//! - it takes the same flocks as the CLI: never hold a VG lock yourself
//!   across a call, you would deadlock on your own flock;
//! - commands that prompt read our stdin, so pass `-y`/`-f` where they ask;
//! - never pass `-b`: the polling daemon is started by forking us;
//! - a few commands (`lvmconfig`, getopt errors) write to stdout/stderr
//!   directly instead of through the log callback, so they are not captured.
//!
//! All sizes come out as [`Sectors`] (512 bytes) or [`Extents`] (VG extents,
//! whose size is a number of sectors), never as bare integers, so that the
//! three units can't be mixed up by accident.

use std::{
    ffi::{CStr, CString},
    fmt, fs, io,
    ops::{Add, Sub},
    os::raw::{c_char, c_int},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use lvm2cmd_sys as sys;
use serde::{de::DeserializeOwned, Deserialize, Deserializer};

// ---------------------------------------------------------------------------
// Units

/// A count of 512-byte sectors: LVM's and the kernel's unit for block
/// addresses, whatever the device's logical block size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sectors(pub u64);

impl Sectors {
    pub const SIZE: u64 = 512;

    pub fn bytes(self) -> u64 {
        self.0 * Self::SIZE
    }

    /// `None` unless `bytes` is a whole number of sectors.
    pub fn from_bytes(bytes: u64) -> Option<Sectors> {
        bytes.is_multiple_of(Self::SIZE).then_some(Sectors(bytes / Self::SIZE))
    }
}

impl Add for Sectors {
    type Output = Sectors;
    fn add(self, rhs: Sectors) -> Sectors {
        Sectors(self.0 + rhs.0)
    }
}

impl Sub for Sectors {
    type Output = Sectors;
    fn sub(self, rhs: Sectors) -> Sectors {
        Sectors(self.0 - rhs.0)
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// A count (or index) of physical/logical extents. Only meaningful together
/// with the VG's extent size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extents(pub u64);

impl Extents {
    pub fn to_sectors(self, extent_size: Sectors) -> Sectors {
        Sectors(self.0 * extent_size.0)
    }
}

impl Add for Extents {
    type Output = Extents;
    fn add(self, rhs: Extents) -> Extents {
        Extents(self.0 + rhs.0)
    }
}

impl fmt::Display for Extents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} extents", self.0)
    }
}

// ---------------------------------------------------------------------------
// Errors

#[derive(Debug)]
pub enum Error {
    /// An argument that lvm's command-line splitter can't carry.
    Argument { arg: String, why: &'static str },
    /// `lvm2_init` failed; `errors` are LVM's own lines.
    Init { errors: Vec<String> },
    /// The command ran and returned something other than success.
    Command { cmd: String, rc: i32, errors: Vec<String> },
    /// The command succeeded but its report wasn't what we asked for.
    Report { cmd: String, msg: String },
}

impl Error {
    fn report(cmd: &str, msg: impl Into<String>) -> Error {
        Error::Report { cmd: cmd.to_owned(), msg: msg.into() }
    }
}

/// What lvm2_run's return codes mean (lvm2cmd.h).
fn rc_meaning(rc: i32) -> &'static str {
    match rc as u32 {
        sys::LVM2_NO_SUCH_COMMAND => "no such command",
        sys::LVM2_INVALID_PARAMETERS => "invalid command line",
        sys::LVM2_INIT_FAILED => "initialisation failed",
        sys::LVM2_PROCESSING_FAILED => "processing failed",
        _ => "unexpected return code",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Argument { arg, why } => write!(f, "cannot pass {arg:?} to LVM: {why}"),
            Error::Init { errors } => {
                f.write_str("cannot initialise liblvm2cmd")?;
                write_lines(f, errors)
            }
            Error::Command { cmd, rc, errors } => {
                write!(f, "`{cmd}` failed ({}, rc {rc})", rc_meaning(*rc))?;
                write_lines(f, errors)
            }
            Error::Report { cmd, msg } => write!(f, "unexpected report from `{cmd}`: {msg}"),
        }
    }
}

/// LVM's lines are what tells the user what went wrong, so show them all.
fn write_lines(f: &mut fmt::Formatter<'_>, lines: &[String]) -> fmt::Result {
    if !lines.is_empty() {
        write!(f, ": {}", lines.join("; "))?;
    }
    Ok(())
}

impl std::error::Error for Error {}

// ---------------------------------------------------------------------------
// The LVM context and the log callback

/// Serializes every use of liblvm2cmd, and of CAPTURE through it.
///
/// Each call gets a fresh LVM context (lvm2_init ... lvm2_exit) instead of
/// one handle kept for the life of the process: a kept handle keeps device
/// state between commands and then acts on stale devices. Seen on 2.03.16
/// with a kept handle: after a loop device shrank from 256 to 64 MiB,
/// `pvcreate` wrote a label recording 256 MiB (tests/lvm_loop.rs
/// `loop_sees_device_changes`); after a loop device was reattached with
/// another size, commands read past its end ("Error reading device
/// /dev/loop1 at 268369920"); and a VG restored with lock type dlm was
/// reported instead of refused for want of lvmlockd. The CLI gets a fresh
/// context per command too, so this is what LVM is tested for. It costs
/// about 15 ms per command (47 instead of 33 ms for a `vgs`) and leaks
/// nothing (RSS and open fds flat over 200 cycles).
static LVM: Mutex<()> = Mutex::new(());

/// Lines the log callback collected during the current call. Only written
/// while LVM is held, so this inner lock is never contended.
static CAPTURE: Mutex<Output> = Mutex::new(Output::new());

/// What one command printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    /// The report (JSON with `--reportformat json`), one line per LVM line.
    pub report: String,
    /// Error lines (log level ≤ 3). Successful commands can have some too,
    /// e.g. every `lvs` on a host without device-mapper.
    pub errors: Vec<String>,
    /// Other printed lines ("Logical volume ... created.", "WARNING: ...").
    pub messages: Vec<String>,
}

impl Output {
    const fn new() -> Output {
        Output { report: String::new(), errors: Vec::new(), messages: Vec::new() }
    }
}

/// Receives every line LVM logs, including all debug lines (LVM doesn't
/// filter for an external log function), so return early on those.
/// Must not panic: it is called from C.
unsafe extern "C" fn log_line(
    level: c_int,
    file: *const c_char,
    _line: c_int,
    _dm_errno: c_int,
    message: *const c_char,
) {
    // In case LVM's internal flag bits (_LOG_STDERR 128, _LOG_ONCE 256, ...)
    // ever reach us with the level.
    let level = (level & 0xf) as u32;
    if level > sys::LVM2_LOG_PRINT || message.is_null() {
        return;
    }
    // SAFETY: LVM passes NUL-terminated strings valid for this call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    // Report rows and plain messages share level 4; only the origin tells
    // them apart.
    let from_report =
        !file.is_null() && unsafe { CStr::from_ptr(file) }.to_bytes().ends_with(b"libdm-report.c");
    let mut out = CAPTURE.lock().unwrap_or_else(PoisonError::into_inner);
    if level < sys::LVM2_LOG_PRINT {
        out.errors.push(text.into_owned());
    } else if from_report {
        out.report.push_str(&text);
        out.report.push('\n');
    } else {
        out.messages.push(text.into_owned());
    }
}

fn take_capture() -> Output {
    std::mem::take(&mut *CAPTURE.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Runs `f` and puts the process umask back afterwards: LVM sets 0077 at
/// init and on config reloads and leaves it so, which would silently change
/// the permissions of every file the rest of the program creates.
fn keeping_umask<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: umask can't fail; reading it requires setting it.
    let old = unsafe { libc::umask(0o077) };
    let r = f();
    unsafe { libc::umask(old) };
    r
}

// ---------------------------------------------------------------------------
// Running commands

/// lvm2_run splits its one string itself (`lvm_split`): whitespace separates
/// arguments, a token that starts with ' or " runs to the next same quote,
/// there is no escaping, a token starting with `#` ends the line, and at
/// most 63 arguments fit. Quoting every argument makes `#` and whitespace
/// safe; an argument with both quote characters can't be expressed.
/// Double quotes alone are allowed because `--config` values need them
/// (`devices { filter = [ "a|...|" ] }`).
fn command_line(args: &[&str]) -> Result<CString, Error> {
    const MAX_ARGS: usize = 63;
    let bad = |arg: &str, why| Err(Error::Argument { arg: arg.to_owned(), why });
    if args.is_empty() {
        return bad("", "no command given");
    }
    if args.len() > MAX_ARGS {
        return bad(args[MAX_ARGS], "LVM takes at most 63 arguments");
    }
    let mut line = String::new();
    for arg in args {
        let quote = if !arg.contains('\'') {
            '\''
        } else if !arg.contains('"') {
            '"'
        } else {
            return bad(arg, "contains both quote characters, which lvm_split can't escape");
        };
        if arg.contains('\0') {
            return bad(arg, "contains a NUL byte");
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push(quote);
        line.push_str(arg);
        line.push(quote);
    }
    Ok(CString::new(line).expect("NUL bytes rejected above"))
}

/// Runs one LVM command in-process, `args[0]` being the command name
/// (`"pvs"`, `"vgcfgbackup"`, ...). Success is LVM's ECMD_PROCESSED (1);
/// any other code becomes [`Error::Command`] carrying LVM's error lines.
pub fn run(args: &[&str]) -> Result<Output, Error> {
    let line = command_line(args)?;
    let _lvm = LVM.lock().unwrap_or_else(PoisonError::into_inner);
    take_capture();
    // SAFETY: liblvm2cmd is used by this thread only (LVM is held), the
    // context lives only inside this block, and `line` outlives the call.
    let rc = keeping_umask(|| unsafe {
        // Before init, so that init's own complaints are captured too.
        sys::lvm2_log_fn(Some(log_line));
        let h = sys::lvm2_init();
        if h.is_null() {
            return None;
        }
        // dmeventd would be asked to monitor what we activate, and would
        // then hold those devices open. This marks the command as run by
        // dmeventd, which also turns the devices file off: not for
        // lvmdevices, which activates nothing.
        if args[0] != "lvmdevices" {
            sys::lvm2_disable_dmeventd_monitoring(h);
        }
        let rc = sys::lvm2_run(h, line.as_ptr());
        sys::lvm2_exit(h);
        Some(rc)
    });
    let out = take_capture();
    match rc {
        None => Err(Error::Init { errors: out.errors }),
        Some(rc) if rc as u32 == sys::LVM2_COMMAND_SUCCEEDED => Ok(out),
        Some(rc) => Err(Error::Command { cmd: args.join(" "), rc, errors: out.errors }),
    }
}

// ---------------------------------------------------------------------------
// Parsing report values
//
// LVM 2.03.16 only has `--reportformat json`, where every value is a string
// (json_std, with real numbers, came later). With `--units s --nosuffix`
// sizes are bare sector counts; with `--binary` flags are "0"/"1".

pub(crate) const REPORT_ARGS: [&str; 6] =
    ["--reportformat", "json", "--units", "s", "--nosuffix", "--binary"];

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
    let env: Envelope =
        serde_json::from_str(json).map_err(|e| Error::report(cmd, format!("bad JSON: {e}")))?;
    let mut rows = Vec::new();
    for mut section in env.report {
        let Some(list) = section.remove(key) else {
            return Err(Error::report(cmd, format!("no {key:?} section")));
        };
        let serde_json::Value::Array(list) = list else {
            return Err(Error::report(cmd, format!("{key:?} is not a list")));
        };
        for (i, row) in list.into_iter().enumerate() {
            rows.push(
                T::deserialize(row).map_err(|e| Error::report(cmd, format!("row {i}: {e}")))?,
            );
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
    #[serde(deserialize_with = "de_opt_string")]
    pub vg_name: Option<String>,
    #[serde(deserialize_with = "de_opt_string")]
    pub vg_uuid: Option<String>,
    /// 0 for an orphan PV.
    #[serde(deserialize_with = "de_sectors")]
    pub vg_extent_size: Sectors,
}

/// What [`report`] asks for; the fixtures were recorded with the same.
pub(crate) const PV_FIELDS: &str = "pv_name,pv_uuid,dev_size,pv_size,pe_start,pv_pe_count,\
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
    let name = dev
        .to_str()
        .ok_or_else(|| Error::Argument { arg: dev.display().to_string(), why: "not UTF-8" })?;
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

pub(crate) const PVSEG_FIELDS: &str = "pv_name,pvseg_start,pvseg_size,lv_name";

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
    pub vg_name: String,
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
pub(crate) const VG_FIELDS: &str =
    "vg_name,vg_uuid,vg_attr,vg_lock_type,pv_count,vg_missing_pv_count,\
lv_count,vg_extent_size,vg_extent_count,vg_free_count,vg_seqno";

pub fn vg(name: &str) -> Result<Vg, Error> {
    vg_with(name, &[])
}

pub fn vg_with(name: &str, extra: &[&str]) -> Result<Vg, Error> {
    let mut rows: Vec<Vg> = report("vgs", &[], VG_FIELDS, "vg", &[name], extra)?;
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
    pub vg_name: String,
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
pub(crate) const LV_FIELDS: &str =
    "vg_name,lv_name,lv_uuid,lv_attr,lv_active,lv_size,lv_dm_path,lv_parent,\
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
pub fn lvs(vg: &str) -> Result<Vec<LvSeg>, Error> {
    lvs_with(vg, &[])
}

pub fn lvs_with(vg: &str, extra: &[&str]) -> Result<Vec<LvSeg>, Error> {
    report("lvs", &["-a", "--segments"], LV_FIELDS, "seg", &[vg], extra)
}

// ---------------------------------------------------------------------------
// Small commands

/// Writes the VG metadata to `file`, or to LVM's backup directory
/// (/etc/lvm/backup/<vg>) when `None`.
pub fn vgcfgbackup(vg: &str, file: Option<&Path>) -> Result<(), Error> {
    let file = file
        .map(|p| {
            p.to_str()
                .ok_or_else(|| Error::Argument { arg: p.display().to_string(), why: "not UTF-8" })
        })
        .transpose()?;
    let mut args = vec!["vgcfgbackup"];
    if let Some(f) = file {
        args.extend(["-f", f]);
    }
    args.extend(["--", vg]);
    run(&args).map(drop)
}

/// Rescans all devices and rewrites LVM's caches in /run/lvm: the online PV
/// records (pvs_online, for event activation) and the device hints (which
/// devices later commands scan). For after a PV appeared or moved behind
/// LVM's back, e.g. into a new dm-crypt mapping.
pub fn pvscan_cache() -> Result<(), Error> {
    run(&["pvscan", "--cache"]).map(drop)
}

/// The size of the PV `pv_uuid` as the metadata of `vg` records it (`dev_size`, in
/// sectors): what pvresize sets. pvresize leaves the label's copy as it was (seen in
/// the VM), so the label cannot tell where the PV ends.
pub fn metadata_pv_size(vg: &str, pv_uuid: &str) -> Result<Sectors, Error> {
    let cmd = format!("vgcfgbackup {vg}");
    let text = output_file(&cmd, |file| vgcfgbackup(vg, Some(file)))?;
    let bad = || Error::report(&cmd, format!("no dev_size for PV {pv_uuid}"));
    metadata_dev_size(&text, pv_uuid).map(Sectors).ok_or_else(bad)
}

/// The text an LVM command writes to a file (`write` runs it with the file's path): for
/// output that only goes to a file or to stdout, past the log capture. The file lives in
/// a directory of its own, made 0700 under /run (mkdtemp): a root process must not
/// write to a predictable name in a world-writable directory.
fn output_file(cmd: &str, write: impl FnOnce(&Path) -> Result<(), Error>) -> Result<String, Error> {
    let dir = private_dir().map_err(|e| Error::report(cmd, format!("cannot make a private directory under /run: {e}")))?;
    let file = dir.join("output");
    let text = write(&file).and_then(|_| fs::read_to_string(&file).map_err(|e| Error::report(cmd, e.to_string())));
    let _ = fs::remove_dir_all(&dir);
    text
}

fn private_dir() -> io::Result<PathBuf> {
    let mut template = *b"/run/pvencrypt-XXXXXX\0";
    // SAFETY: a NUL-terminated template that mkdtemp fills in place.
    if unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(PathBuf::from(std::str::from_utf8(&template[..template.len() - 1]).expect("ASCII")))
}

/// Where LVM keeps what pvencrypt must find, as this system configures it.
#[derive(Debug, PartialEq)]
struct Settings {
    locking_dir: PathBuf,
    devices_file: PathBuf,
}

fn settings() -> &'static Settings {
    static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(|| {
        let text = output_file("lvmconfig", |file| {
            let file = file.to_string_lossy();
            run(&["lvmconfig", "--typeconfig", "full", "--file", &file, "global/locking_dir", "devices/devicesfile"]).map(drop)
        })
        .unwrap_or_default();
        // LVM reads its files from LVM_SYSTEM_DIR (default /etc/lvm).
        let system = std::env::var_os("LVM_SYSTEM_DIR").map(PathBuf::from).unwrap_or_else(|| "/etc/lvm".into());
        settings_in(&text, &system)
    })
}

/// From lvmconfig's output; the devices file is devices/<devicesfile> under the system
/// directory (lvm2 lib/device/device_id.c).
fn settings_in(text: &str, system: &Path) -> Settings {
    let value = |name: &str, default: &str| {
        text.lines()
            .filter_map(parse_setting)
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.into_iter().next())
            .unwrap_or_else(|| default.into())
    };
    Settings {
        locking_dir: value("locking_dir", "/run/lock/lvm").into(),
        devices_file: system.join("devices").join(value("devicesfile", "system.devices")),
    }
}

/// global/locking_dir: where LVM's VG lock files live.
pub fn locking_dir() -> PathBuf {
    settings().locking_dir.clone()
}

/// `dev_size` in the section of the PV whose `id` is `pv_uuid`.
fn metadata_dev_size(text: &str, pv_uuid: &str) -> Option<u64> {
    let id = format!("id = \"{pv_uuid}\"");
    let after = &text[text.find(&id)? + id.len()..];
    let section = &after[..after.find('}')?];
    section.lines().find_map(|l| l.trim().strip_prefix("dev_size = ")?.split_whitespace().next()?.parse().ok())
}

/// LVM's devices file. When it exists and lists a PV, LVM looks only at the devices it
/// lists (with devices/use_devicesfile = 1).
pub fn devices_file() -> PathBuf {
    settings().devices_file.clone()
}

/// True when the devices file has an entry for `dev` (a path, or a dm-crypt device's
/// name: LVM lists those by their dm uuid, CRYPT-LUKS2-<uuid>-NAME).
pub fn devices_file_lists(dev: &str) -> bool {
    lists(&fs::read_to_string(devices_file()).unwrap_or_default(), dev)
}

/// NAME of `IDNAME=CRYPT-<type>-<uuid, 32 hex digits>-<NAME>`.
fn crypt_name(field: &str) -> Option<&str> {
    let (_, rest) = field.strip_prefix("IDNAME=CRYPT-")?.split_once('-')?;
    rest.get(32..)?.strip_prefix('-')
}

fn lists(text: &str, dev: &str) -> bool {
    let (by_name, by_id) = (format!("DEVNAME={dev}"), format!("IDNAME={dev}"));
    let name = dev.strip_prefix("/dev/mapper/");
    text.lines().filter(|l| !l.starts_with('#')).any(|l| {
        l.split_whitespace().any(|f| f == by_name || f == by_id || (name.is_some() && crypt_name(f) == name))
    })
}

/// The devices file lists `crypt` instead of `raw`, if it listed `raw`; each half is
/// skipped when done, so a resumed conversion repeats it safely. Ok(false): nothing to do.
pub fn devices_file_replace(crypt: &str, raw: &str) -> Result<bool, Error> {
    if !devices_file_lists(raw) {
        return Ok(false);
    }
    if !devices_file_lists(crypt) {
        run(&["lvmdevices", "-y", "--adddev", crypt])?;
    }
    run(&["lvmdevices", "-y", "--deldev", raw])?;
    Ok(true)
}

/// A device filter setting as configured: its name (`global_filter`, `filter`) and
/// its patterns (`a|regex|`, `r|regex|`, any delimiter).
pub type Filter = (String, Vec<String>);

/// devices/global_filter and devices/filter, defaults included.
pub fn device_filters() -> Result<Vec<Filter>, Error> {
    // lvmconfig prints to stdout itself, past the log capture.
    let text = output_file("lvmconfig", |file| {
        let file = file.to_string_lossy();
        run(&["lvmconfig", "--typeconfig", "full", "--file", &file, "devices/global_filter", "devices/filter"]).map(drop)
    })?;
    let filters: Vec<Filter> = text.lines().filter_map(parse_setting).collect();
    if filters.len() != 2 {
        return Err(Error::report("lvmconfig", format!("expected global_filter and filter, read {filters:?}")));
    }
    Ok(filters)
}

/// `name=["a","b"]` or `name="a"` as lvmconfig prints it.
fn parse_setting(line: &str) -> Option<Filter> {
    let (name, value) = line.trim().split_once('=')?;
    let mut items = Vec::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        loop {
            match chars.next()? {
                '\\' => s.push(chars.next()?),
                '"' => break,
                c => s.push(c),
            }
        }
        items.push(s);
    }
    Some((name.trim().to_string(), items))
}

/// Whether a filter accepts a device known by `names`, as lvm.conf(5) defines it: each
/// name takes the verdict of the first pattern it matches; one accepted name accepts the
/// device, names matching nothing do not count, and a device no name matches is accepted.
pub fn filter_accepts(patterns: &[String], names: &[&str]) -> Result<bool, String> {
    let mut rules = Vec::new();
    for p in patterns {
        let mut cs = p.chars();
        let (Some(verdict @ ('a' | 'r')), Some(delim)) = (cs.next(), cs.next()) else {
            return Err(format!("cannot read the pattern {p:?}"));
        };
        let body = cs.as_str().strip_suffix(delim).ok_or_else(|| format!("the pattern {p:?} is not closed"))?;
        let re = regex::Regex::new(body).map_err(|e| format!("the pattern {p:?}: {e}"))?;
        rules.push((verdict == 'a', re));
    }
    let verdicts: Vec<bool> =
        names.iter().filter_map(|n| rules.iter().find(|(_, re)| re.is_match(n)).map(|(accept, _)| *accept)).collect();
    Ok(verdicts.is_empty() || verdicts.contains(&true))
}

/// Reloads the kernel tables of the VG's active LVs from its metadata
/// (`vgchange --refresh`). Needs device-mapper.
pub fn vg_refresh(vg: &str) -> Result<(), Error> {
    run(&["vgchange", "--refresh", "--", vg]).map(drop)
}

// ---------------------------------------------------------------------------
// The PV label, read from the device itself

/// An area listed in the PV header. A data area's size of 0 means "up to
/// the end of the PV".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskArea {
    pub offset: Sectors,
    pub size: Sectors,
}

/// The on-disk PV label (label_header + pv_header), which holds what the
/// report fields don't: the PV size recorded at pvcreate time and where the
/// metadata areas are, including a second one at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// Which of the first four sectors holds the label (normally 1).
    pub sector: u64,
    /// In LVM's dashed form, as `pv_uuid` reports it.
    pub pv_uuid: String,
    /// The recorded PV size: where LVM thinks the PV ends.
    pub device_size: Sectors,
    pub data_areas: Vec<DiskArea>,
    pub metadata_areas: Vec<DiskArea>,
    /// Only in version 2 headers (`pvcreate --bootloaderareasize`).
    pub bootloader_areas: Vec<DiskArea>,
}

const LABEL_SCAN_SECTORS: usize = 4;

/// Reads the LVM label of `dev`, `Ok(None)` if it has none. With O_DIRECT, so that it
/// is what the disk holds now, whatever was written since an earlier read.
pub fn read_label(dev: &Path) -> io::Result<Option<PvLabel>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const LEN: usize = 4096;
    let f = match fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(dev) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => fs::File::open(dev)?,
        r => r?,
    };
    let mut raw = vec![0u8; 2 * LEN];
    let at = raw.as_ptr().align_offset(LEN);
    let buf = &mut raw[at..at + LEN];
    // One aligned read: a device is read in whole blocks, so it returns them all.
    let got = f.read_at(buf, 0)?.min(LABEL_SCAN_SECTORS * 512);
    parse_label(&buf[..got - got % 512])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", dev.display())))
}

/// The LVM label among the first sectors in `buf` (as read from a device's start).
pub fn label_in(buf: &[u8]) -> Result<Option<PvLabel>, String> {
    let n = buf.len().min(LABEL_SCAN_SECTORS * 512);
    parse_label(&buf[..n - n % 512])
}

/// LVM's checksum (`calc_crc`): CRC-32 (reflected 0xedb88320) with its own
/// initial value and no final inversion.
fn lvm_crc(buf: &[u8]) -> u32 {
    let mut crc: u32 = 0xf597a6cf;
    for &b in buf {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    crc
}

fn parse_label(buf: &[u8]) -> Result<Option<PvLabel>, String> {
    let u32_at = |s: &[u8], o: usize| u32::from_le_bytes(s[o..o + 4].try_into().unwrap());
    let u64_at = |s: &[u8], o: usize| u64::from_le_bytes(s[o..o + 8].try_into().unwrap());
    for (i, s) in buf.chunks_exact(512).enumerate() {
        // label_header: id[8] sector_xl crc_xl offset_xl type[8]
        if &s[..8] != b"LABELONE" || u64_at(s, 8) != i as u64 {
            continue;
        }
        if lvm_crc(&s[20..]) != u32_at(s, 16) {
            return Err(format!("LVM label in sector {i} has a bad checksum"));
        }
        if &s[24..32] != b"LVM2 001" {
            return Err(format!("label in sector {i} is not an LVM2 label"));
        }
        // pv_header: uuid[32] device_size_xl, then zero-terminated
        // {offset, size} lists in bytes: data areas, metadata areas, and
        // after a {version, flags} extension, bootloader areas.
        let mut o = u32_at(s, 20) as usize;
        if o + 40 > s.len() {
            return Err(format!("pv_header offset {o} out of the label sector"));
        }
        let uuid = String::from_utf8_lossy(&s[o..o + 32]).into_owned();
        let sectors = |bytes: u64| {
            Sectors::from_bytes(bytes).ok_or_else(|| format!("{bytes} bytes is not whole sectors"))
        };
        let device_size = sectors(u64_at(s, o + 32))?;
        o += 40;
        let list = |o: &mut usize| -> Result<Vec<DiskArea>, String> {
            let mut v = Vec::new();
            loop {
                if *o + 16 > s.len() {
                    return Err("pv_header area list runs past the sector".into());
                }
                let (off, size) = (u64_at(s, *o), u64_at(s, *o + 8));
                *o += 16;
                if off == 0 {
                    return Ok(v);
                }
                v.push(DiskArea { offset: sectors(off)?, size: sectors(size)? });
            }
        };
        let data_areas = list(&mut o)?;
        let metadata_areas = list(&mut o)?;
        let bootloader_areas = if o + 8 <= s.len() && u32_at(s, o) >= 2 {
            o += 8;
            list(&mut o)?
        } else {
            Vec::new()
        };
        return Ok(Some(PvLabel {
            sector: i as u64,
            pv_uuid: dashed_uuid(&uuid),
            device_size,
            data_areas,
            metadata_areas,
            bootloader_areas,
        }));
    }
    Ok(None)
}

/// LVM prints its 32-character ids as 6-4-4-4-4-4-6.
fn dashed_uuid(raw: &str) -> String {
    if raw.len() != 32 || !raw.is_ascii() {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(38);
    let mut at = 0;
    for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(&raw[at..at + n]);
        at += n;
    }
    out
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    //! Parsing of reports recorded on Debian 12 / LVM 2.03.16 from in-process
    //! runs on loop devices (tests/lvm_loop.rs `record_fixtures`).

    use super::*;

    #[test]
    fn settings_read_as_lvmconfig_prints_them() {
        let text = "locking_dir=\"/var/lock/lvm2\"\ndevicesfile=\"test.devices\"\n";
        let s = settings_in(text, Path::new("/srv/lvm"));
        assert_eq!(s.locking_dir, PathBuf::from("/var/lock/lvm2"));
        assert_eq!(s.devices_file, PathBuf::from("/srv/lvm/devices/test.devices"));
        let d = settings_in("", Path::new("/etc/lvm"));
        assert_eq!(d, Settings { locking_dir: "/run/lock/lvm".into(), devices_file: "/etc/lvm/devices/system.devices".into() });
    }

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/fixtures/lvm/", $name))
        };
    }

    fn rows<T: DeserializeOwned>(json: &str, key: &str) -> Vec<T> {
        parse_report("test", json, key).unwrap_or_else(|e| panic!("{e}"))
    }

    const MIB: u64 = 2048; // sectors

    // --- command lines

    /// lvm_split from LVM 2.03.16 tools/lvmcmdline.c, to check that what
    /// we build splits back into exactly our arguments.
    fn lvm_split(line: &str) -> Vec<String> {
        let b = line.as_bytes();
        let (mut i, mut out) = (0, Vec::new());
        while i < b.len() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == b.len() || b[i] == b'#' {
                break;
            }
            let quote = (b[i] == b'\'' || b[i] == b'"').then(|| {
                i += 1;
                b[i - 1]
            });
            let start = i;
            while i < b.len() && quote.map_or(!b[i].is_ascii_whitespace(), |q| b[i] != q) {
                i += 1;
            }
            out.push(line[start..i].to_owned());
            i += 1;
        }
        out
    }

    #[test]
    fn dev_size_read_from_the_pv_section() {
        let text = "vg {\n\tphysical_volumes {\n\t\tpv0 {\n\t\t\tid = \"aaaa-1\"\n\t\t\tdevice = \"/dev/vda\"\t# Hint only\n\
                    \t\t\tdev_size = 524288\t# 256 Megabytes\n\t\t}\n\t\tpv1 {\n\t\t\tid = \"bbbb-2\"\n\t\t\tdev_size = 131072\n\t\t}\n\t}\n}\n";
        assert_eq!(metadata_dev_size(text, "aaaa-1"), Some(524288));
        assert_eq!(metadata_dev_size(text, "bbbb-2"), Some(131072));
        assert_eq!(metadata_dev_size(text, "cccc-3"), None);
    }

    #[test]
    fn command_line_splits_back_into_the_arguments() {
        let args = [
            "pvs",
            "--config",
            r#"devices { filter = [ "a|^/dev/loop0$|", "r|.*|" ] }"#,
            "#not-a-comment",
            "it's",
            "",
            "tab\there",
            "--",
            "/dev/disk/by-id/x y",
        ];
        let line = command_line(&args).unwrap();
        let line = line.to_str().unwrap();
        assert_eq!(
            line,
            r#"'pvs' '--config' 'devices { filter = [ "a|^/dev/loop0$|", "r|.*|" ] }' '#not-a-comment' "it's" '' 'tab	here' '--' '/dev/disk/by-id/x y'"#
        );
        assert_eq!(lvm_split(line), args);
        // Unquoted, the '#' would have cut the line short.
        assert_eq!(lvm_split("pvs #x y"), ["pvs"]);
    }

    #[test]
    fn command_line_rejects_what_lvm_split_cannot_carry() {
        let why = |args: &[&str]| match command_line(args) {
            Err(Error::Argument { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why(&["pvs", r#"a'b"c"#]),
            "contains both quote characters, which lvm_split can't escape"
        );
        assert_eq!(why(&["pvs", "a\0b"]), "contains a NUL byte");
        assert_eq!(why(&[]), "no command given");
        let many = vec!["x"; 64];
        assert_eq!(why(&many), "LVM takes at most 63 arguments");
        assert!(command_line(&many[..63]).is_ok());
        let e = command_line(&["pvs", r#"a'b"c"#]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"cannot pass "a'b\"c" to LVM: contains both quote characters, which lvm_split can't escape"#
        );
    }

    // --- errors

    #[test]
    fn command_error_shows_lvm_lines() {
        let e = Error::Command {
            cmd: "vgs -- nosuchvg".into(),
            rc: 5,
            errors: vec![
                r#"Volume group "nosuchvg" not found"#.into(),
                "Cannot process volume group nosuchvg".into(),
            ],
        };
        assert_eq!(
            e.to_string(),
            r#"`vgs -- nosuchvg` failed (processing failed, rc 5): Volume group "nosuchvg" not found; Cannot process volume group nosuchvg"#
        );
        let e = Error::Command { cmd: "lvs --bogus".into(), rc: 3, errors: vec![] };
        assert_eq!(e.to_string(), "`lvs --bogus` failed (invalid command line, rc 3)");
        let e = Error::Init { errors: vec!["no config".into()] };
        assert_eq!(e.to_string(), "cannot initialise liblvm2cmd: no config");
    }

    // --- units

    #[test]
    fn units() {
        assert_eq!(Sectors(3).bytes(), 1536);
        assert_eq!(Sectors::from_bytes(1536), Some(Sectors(3)));
        assert_eq!(Sectors::from_bytes(1537), None);
        assert_eq!(Extents(49).to_sectors(Sectors(8192)), Sectors(401408));
        assert_eq!(Sectors(2048) + Sectors(1), Sectors(2049));
        assert_eq!(Sectors(2048) - Sectors(48), Sectors(2000));
        assert_eq!(Extents(2) + Extents(3), Extents(5));
        assert_eq!(Sectors(8).to_string(), "8s");
        assert_eq!(Extents(8).to_string(), "8 extents");
    }

    // --- PVs

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
        assert_eq!(
            (ba.pv_ba_start, ba.pv_ba_size, ba.pe_start),
            (Sectors(MIB), Sectors(MIB), Sectors(2 * MIB))
        );
        // --pvmetadatacopies 2.
        assert_eq!((pvs[3].pv_mda_count, pvs[3].pv_size), (2, Sectors(256 * MIB)));
    }

    #[test]
    fn pvs_in_vg() {
        let pvs: Vec<Pv> = rows(fixture!("pvs_vg.json"), "pv");
        let [p] = &pvs[..] else { panic!("{pvs:?}") };
        assert_eq!(p.pv_uuid, "GjRbba-xSwr-zw31-8H60-6BWU-Th5C-4qcVq2");
        assert_eq!(p.vg_name.as_deref(), Some("pvenc_fx_30758"));
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
        assert_eq!(
            (m.dev_size, m.pv_size, m.pe_start),
            (Sectors(0), Sectors(15 * 4 * MIB), Sectors(2 * MIB))
        );
        assert_eq!(
            (m.pv_pe_count, m.pv_pe_alloc_count, m.pv_mda_count),
            (Extents(15), Extents(2), 0)
        );
    }

    #[test]
    fn pv_segments() {
        let segs: Vec<PvSeg> = rows(fixture!("pvsegs.json"), "pvseg");
        let got: Vec<_> = segs
            .iter()
            .map(|s| {
                (
                    s.pv_name.as_str(),
                    s.pvseg_start,
                    s.pvseg_size,
                    s.lv_name.as_ref().map(|n| n.name.as_str()),
                )
            })
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
        let got: Vec<_> = segs
            .iter()
            .map(|s| (s.pv_name.as_str(), s.pvseg_start.0, s.pvseg_size.0, s.lv_name.clone()))
            .collect();
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

    // --- VGs

    #[test]
    fn vgs() {
        let vgs: Vec<Vg> = rows(fixture!("vgs.json"), "vg");
        assert_eq!(
            vgs,
            [Vg {
                vg_name: "pvenc_fx_30758".into(),
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
        let got: Vec<_> = two
            .iter()
            .map(|v| (v.vg_name.as_str(), v.pv_count, v.lv_count, v.vg_free_count.0))
            .collect();
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

    // --- LVs

    #[test]
    fn lvs_segments() {
        let segs: Vec<LvSeg> = rows(fixture!("lvs.json"), "seg");
        assert_eq!(segs.len(), 3);
        assert_eq!(
            segs[1],
            LvSeg {
                vg_name: "pvenc_fx_30758".into(),
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
                seg_pe_ranges: vec![PeRange {
                    device: "/dev/loop0".into(),
                    start: Extents(5),
                    count: Extents(2)
                }],
            }
        );
        let got: Vec<_> = segs
            .iter()
            .map(|s| {
                (
                    s.lv_name.name.as_str(),
                    s.seg_start_pe.0,
                    s.seg_size_pe.0,
                    s.seg_pe_ranges[0].start.0,
                )
            })
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
            .map(|s| {
                (
                    s.lv_name.name.as_str(),
                    s.lv_name.hidden,
                    s.is_pvmove(),
                    s.is_locked(),
                    s.segtype.as_str(),
                )
            })
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
        let range =
            |d: &str, s, c| PeRange { device: d.into(), start: Extents(s), count: Extents(c) };
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
                (
                    n.name.as_str(),
                    n.hidden,
                    s.lv_attr.volume_type(),
                    s.segtype.as_str(),
                    s.lv_parent.as_deref(),
                )
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
            .map(|s| {
                s.seg_pe_ranges
                    .iter()
                    .map(|r| (r.device.as_str(), r.start.0, r.count.0))
                    .collect::<Vec<_>>()
            })
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

    // --- malformed reports

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
        let e =
            parse_report::<LvSeg>("lvs", &lvs.replace("/dev/loop0:5-6", "/dev/loop0:6-5"), "seg");
        assert!(e.unwrap_err().to_string().contains("bad seg_pe_ranges"));
        let e = parse_report::<LvSeg>("lvs", &lvs.replace("/dev/loop0(5)", "/dev/loop0 5"), "seg");
        assert!(e.unwrap_err().to_string().contains("bad devices"));
    }

    // --- the on-disk label

    #[test]
    fn label_with_recorded_size() {
        let l =
            parse_label(include_bytes!("../tests/fixtures/lvm/label_200m.bin")).unwrap().unwrap();
        assert_eq!(
            l,
            PvLabel {
                sector: 1,
                pv_uuid: "GjRbba-xSwr-zw31-8H60-6BWU-Th5C-4qcVq2".into(),
                device_size: Sectors(200 * MIB),
                data_areas: vec![DiskArea { offset: Sectors(MIB), size: Sectors(0) }],
                metadata_areas: vec![DiskArea { offset: Sectors(8), size: Sectors(2040) }],
                bootloader_areas: vec![],
            }
        );
    }

    #[test]
    fn label_with_second_mda_and_bootloader_area() {
        let l =
            parse_label(include_bytes!("../tests/fixtures/lvm/label_mda2.bin")).unwrap().unwrap();
        assert_eq!(l.device_size, Sectors(256 * MIB));
        // The second mda fills the last MiB of the recorded size.
        assert_eq!(
            l.metadata_areas,
            [
                DiskArea { offset: Sectors(8), size: Sectors(2040) },
                DiskArea { offset: Sectors(255 * MIB), size: Sectors(MIB) }
            ]
        );
        let l = parse_label(include_bytes!("../tests/fixtures/lvm/label_ba.bin")).unwrap().unwrap();
        assert_eq!(l.pv_uuid, "ZuD1v8-0589-VNPe-08z3-pBj1-ublf-Pbp2gX");
        assert_eq!(l.data_areas, [DiskArea { offset: Sectors(2 * MIB), size: Sectors(0) }]);
        assert_eq!(l.bootloader_areas, [DiskArea { offset: Sectors(MIB), size: Sectors(MIB) }]);
    }

    #[test]
    fn label_damage_is_detected() {
        let good = include_bytes!("../tests/fixtures/lvm/label_200m.bin");
        assert_eq!(parse_label(&[0u8; 2048]), Ok(None));
        let mut bad = good.to_vec();
        bad[512 + 40] ^= 1; // in the pv_header, covered by the checksum
        assert_eq!(parse_label(&bad), Err("LVM label in sector 1 has a bad checksum".into()));
        // A label claiming another sector than the one it's in is no label.
        let mut moved = vec![0u8; 2048];
        moved[1024..1536].copy_from_slice(&good[512..1024]);
        assert_eq!(parse_label(&moved), Ok(None));
    }

    #[test]
    fn filter_settings_parsed_as_lvmconfig_prints_them() {
        assert_eq!(parse_setting(r#"filter=["a|.*|"]"#), Some(("filter".into(), vec!["a|.*|".into()])));
        assert_eq!(
            parse_setting(r#"global_filter=["a|^/dev/sda5$|","r|\"q\".*|"]"#),
            Some(("global_filter".into(), vec!["a|^/dev/sda5$|".into(), r#"r|"q".*|"#.into()]))
        );
        assert_eq!(parse_setting(r#"filter="r/cdrom/""#), Some(("filter".into(), vec!["r/cdrom/".into()])));
    }

    #[test]
    fn filters_judged_as_lvm_conf_describes() {
        let f = |ps: &[&str], names: &[&str]| filter_accepts(&ps.iter().map(|p| p.to_string()).collect::<Vec<_>>(), names);
        let crypt = ["/dev/mapper/sda5_crypt", "/dev/disk/by-id/dm-name-sda5_crypt"];
        assert_eq!(f(&["a|.*|"], &crypt), Ok(true));
        assert_eq!(f(&[], &crypt), Ok(true));
        // The common hand-written filter of one disk rejects the new device.
        assert_eq!(f(&["a|^/dev/sda5$|", "r|.*|"], &crypt), Ok(false));
        assert_eq!(f(&["a|^/dev/sda|", "r/.*/"], &crypt), Ok(false));
        // First match wins; one accepted name is enough; unmatched names do not count.
        assert_eq!(f(&["r|/dev/mapper/|", "a|.*|"], &crypt), Ok(true));
        assert_eq!(f(&["r|/dev/mapper/|", "r|dm-name|", "a|.*|"], &crypt), Ok(false));
        assert_eq!(f(&["a|/dev/mapper/|", "r|.*|"], &crypt), Ok(true));
        assert_eq!(f(&["r|/dev/cdrom|"], &crypt), Ok(true));
        assert!(f(&["x|.*|"], &crypt).is_err());
        assert!(f(&["a|.*"], &crypt).is_err());
    }

    #[test]
    fn devices_file_entries_found_by_path_or_crypt_name() {
        // As LVM 2.03.16 wrote them in the VM (t_devices_file).
        let text = "# LVM uses devices listed in this file.\nVERSION=1.1.3\n\
            IDTYPE=devname IDNAME=/dev/vda DEVNAME=/dev/vda PVID=b0fhhyKS2UW6tJqOz97g3pKc3MaecQbJ\n\
            IDTYPE=crypt_uuid IDNAME=CRYPT-LUKS2-d55779749ef241ab80727bdf26dc1037-vda_crypt \
            DEVNAME=/dev/mapper/vda_crypt PVID=q4MVXuqqMJVbvfgBTuXKl3L2IMIP9chJ\n";
        assert!(lists(text, "/dev/vda") && lists(text, "/dev/mapper/vda_crypt"));
        assert!(!lists(text, "/dev/vdb") && !lists(text, "/dev/mapper/crypt") && !lists(text, "/dev/vd"));
        let only_id = "IDTYPE=crypt_uuid IDNAME=CRYPT-LUKS2-d55779749ef241ab80727bdf26dc1037-vda_crypt DEVNAME=/dev/dm-3\n";
        assert!(lists(only_id, "/dev/mapper/vda_crypt"));
        assert!(!lists(only_id, "/dev/mapper/crypt") && !lists(only_id, "/dev/mapper/a_crypt"));
    }
}
