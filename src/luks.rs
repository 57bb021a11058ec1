//! LUKS2 operations, all through libcryptsetup: the header prepared in memory before
//! the freeze, the reencryption init and header placement inside it, activation, the
//! online run, and reading the state of a device (including our marker token).
//!
//! The new header is built in a memfd, never in a file: it goes to the disk only
//! after libcryptsetup has moved the first data segment out of its way.

use std::{
    ffi::{c_int, c_void},
    fs::File,
    mem::ManuallyDrop,
    ops::{Deref, DerefMut},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Mutex,
};

use libcryptsetup_rs::{
    consts::{
        flags::{CryptActivate, CryptPbkdf, CryptReencrypt, CryptVolumeKey},
        vals::{
            CryptKdf, CryptLogLevel, CryptReencryptDirectionInfo, CryptReencryptInfo, CryptReencryptModeInfo, EncryptionFormat,
            KeyslotInfo,
        },
    },
    CryptDevice, CryptInit, CryptParamsLuks2, CryptParamsReencrypt, CryptPbkdfType, Either, LibcryptErr, TokenInput,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    dm::DmName,
    error::{Context, Error, Kind, Result},
    key::Passphrase,
    lvm::VgName,
    metadata::{Id, Metadata},
    units::{Bytes, Sectors},
};

/// The LUKS2 token that marks a device as ours and says how to finish it.
pub const TOKEN_TYPE: &str = "pvencrypt";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Marker {
    #[serde(rename = "type")]
    pub type_: String,
    pub keyslots: Vec<String>,
    pub version: u32,
    /// The name the device is opened under.
    pub name: DmName,
    /// `None` for a PV that was in no VG (an orphan): no VG to back up or to boot from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vg_name: Option<VgName>,
    pub pv_uuid: String,
    /// The throw-away keyslot used inside the freeze; destroyed at the end.
    pub temp_keyslot: Option<u32>,
}

/// What the user asked for the new header.
pub struct Format {
    pub cipher: String,
    pub cipher_mode: String,
    pub key_bytes: usize,
    pub sector_size: u32,
    pub label: Option<String>,
    pub uuid: Uuid,
    /// Data offset = data shift.
    pub shift: Sectors,
    pub pbkdf: CryptPbkdfType,
    /// `--tpm2-device` and its PCRs: the header gets a TPM2 keyslot and token.
    pub tpm2: Option<(String, String)>,
}

/// "aes-xts-plain64" → ("aes", "xts-plain64"), as cryptsetup splits it.
pub fn split_cipher(spec: &str) -> Result<(String, String)> {
    match spec.split_once('-') {
        Some((c, m)) if !c.is_empty() && !m.is_empty() => Ok((c.into(), m.into())),
        _ => Err(Error::new(Kind::Refused, format!("Invalid cipher specification {spec:?} (expected e.g. aes-xts-plain64)."))),
    }
}

static LOG: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn log_cb(level: c_int, msg: *const std::ffi::c_char, _: *mut c_void) {
    // Inside the freeze nothing may be written to a filesystem: keep messages until later.
    if let (Ok(mut log), false) = (LOG.lock(), msg.is_null()) {
        // SAFETY: libcryptsetup passes a C string valid for the call (checked non-NULL).
        let s = unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy().trim_end().to_string();
        crate::fault::trace(format_args!("libcryptsetup[{level}]: {s}"));
        // Under --debug every line is printed as it comes; errors are kept anyway, for
        // the report after the operation.
        if !crate::fault::debug_line("libcryptsetup", &s) || level == CryptLogLevel::Error as i32 {
            log.push((level, s));
        }
    }
}

/// Routes libcryptsetup's messages into memory; `take_log` hands them out. Under
/// `--debug` (`fault::set_debug`, called first) they also go to stderr as they come.
pub fn capture_log() {
    LOG.lock().unwrap().reserve(256);
    if crate::fault::debug() {
        libcryptsetup_rs::set_debug_level(libcryptsetup_rs::consts::vals::CryptDebugLevel::All);
    }
    libcryptsetup_rs::set_log_callback::<()>(Some(log_cb), None);
}

/// The library's messages since the last call: errors, and with `debug` everything
/// (under `--debug`, the lines held back during the freeze).
pub fn take_log(debug: bool) -> Vec<String> {
    let debug = debug || crate::fault::debug();
    let error = CryptLogLevel::Error as i32;
    std::mem::take(&mut *LOG.lock().unwrap()).into_iter().filter(|(l, _)| debug || *l == error).map(|(_, m)| m).collect()
}

/// The header being prepared, in anonymous memory.
pub struct MemHeader {
    pub file: File,
}

impl MemHeader {
    /// `len`: bytes; libcryptsetup refuses a header file smaller than the header.
    fn new(len: Bytes) -> Result<MemHeader> {
        let file = crate::sys::memfd("pvencrypt-luks2-header").or_fail(|| "memfd_create".into())?;
        file.set_len(len.0).or_fail(|| "Cannot size the in-memory header".into())?;
        Ok(MemHeader { file })
    }

    /// A path libcryptsetup can open; it reopens the same memory.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// The same for a program this process runs (root may open another's fds).
    pub fn path_for_children(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd()))
    }
}

/// The user's keyslot and the temporary one, numbered so that the user's is 0 as
/// cryptsetup's luksFormat makes it, although the temporary one is added first.
const USER_SLOT: u32 = 0;
const TEMP_SLOT: u32 = 1;

/// A header formatted in memory with its temporary keyslot: all of it that needs no
/// passphrase, so it can be made while the passphrase is typed. libcryptsetup fills the
/// keyslots area with random bytes, the slow part.
pub struct Formatted {
    pub fmt: Format,
    header: MemHeader,
    /// Generated here rather than by libcryptsetup, to add the user's keyslot later with
    /// no keyslot unlocked (an AF merge: a quarter second under TCG).
    volume_key: Passphrase,
    temp_key: Passphrase,
}

/// A header ready to be placed: the user's keyslot and a temporary one whose key
/// needs no PBKDF (random, 256 bits), so that nothing slow runs inside the freeze.
pub struct Prepared {
    pub fmt: Format,
    pub header: MemHeader,
    #[cfg_attr(not(test), allow(dead_code))]
    pub user_slot: u32,
    pub temp_slot: u32,
    pub temp_key: Passphrase,
    pub volume_key: Passphrase,
}

fn temp_pbkdf() -> CryptPbkdfType {
    // The key is 32 random bytes, so iterations add nothing to its strength.
    CryptPbkdfType {
        type_: CryptKdf::Pbkdf2,
        hash: Some("sha256".into()),
        time_ms: 0,
        iterations: 1000,
        max_memory_kb: 0,
        parallel_threads: 0,
        flags: CryptPbkdf::NO_BENCHMARK,
    }
}

/// A libcryptsetup context, made and freed under `sys::libdm`: libcryptsetup's
/// first context sets libdevmapper's log function and its last one releases libdevmapper
/// (dm_backend_init and dm_backend_exit in its lib/libdevmapper.c), globals that LVM's
/// commands use too; and the header formatted ahead (modes.rs) makes and frees contexts on
/// a thread of its own beside preflight's LVM commands (a double free in libdevmapper, seen
/// once at a refusal).
pub struct Ctx(ManuallyDrop<CryptDevice>);

impl Ctx {
    pub fn init(dev: &Path) -> std::result::Result<Ctx, LibcryptErr> {
        let _dm = crate::sys::libdm();
        CryptInit::init(dev).map(Ctx::adopt)
    }

    /// A detached header `header` for `data`.
    pub fn with_header(header: &Path, data: &Path) -> std::result::Result<Ctx, LibcryptErr> {
        let _dm = crate::sys::libdm();
        CryptInit::init_with_data_device(Either::Right((header, data))).map(Ctx::adopt)
    }

    /// A context made under `sys::libdm`.
    pub fn adopt(cd: CryptDevice) -> Ctx {
        Ctx(ManuallyDrop::new(cd))
    }
}

impl Deref for Ctx {
    type Target = CryptDevice;
    fn deref(&self) -> &CryptDevice {
        &self.0
    }
}

impl DerefMut for Ctx {
    fn deref_mut(&mut self) -> &mut CryptDevice {
        &mut self.0
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _dm = crate::sys::libdm();
        // SAFETY: dropped here only, once.
        unsafe { ManuallyDrop::drop(&mut self.0) }
    }
}

/// Formats the header in memory for `data` (the PV: only its size is read), with the
/// temporary keyslot.
pub fn format(fmt: Format, data: &Path) -> Result<Formatted> {
    let header = MemHeader::new(fmt.shift.bytes())?;
    let mut cd = Ctx::with_header(&header.path(), data).or_fail(|| "Cannot initialise the new LUKS2 header".into())?;
    cd.set_data_offset(fmt.shift.0).or_fail(|| "Cannot set the data offset".into())?;
    // The volume key's digest takes its iterations from the user's PBKDF settings, as
    // with luksFormat.
    cd.settings_handle().set_pbkdf_type(&fmt.pbkdf).or_fail(|| "Invalid PBKDF parameters".into())?;
    let params = CryptParamsLuks2 {
        pbkdf: None,
        integrity: None,
        integrity_params: None,
        data_alignment: 0,
        data_device: None,
        sector_size: fmt.sector_size,
        label: fmt.label.clone(),
        subsystem: None,
    };
    let mut params: libcryptsetup_rs::CryptParamsLuks2Ref<'_> =
        (&params).try_into().or_fail(|| "Invalid LUKS2 parameters".into())?;
    let volume_key = Passphrase::random(fmt.key_bytes)?;
    cd.context_handle()
        .format(
            EncryptionFormat::Luks2,
            (&fmt.cipher, &fmt.cipher_mode),
            Some(fmt.uuid),
            Either::Left(volume_key.bytes()),
            Some(&mut params),
        )
        .or_fail(|| format!("Cannot format LUKS2 with cipher {}-{}", fmt.cipher, fmt.cipher_mode))?;
    crate::fault::trace("formatted");
    let temp_key = Passphrase::random(32)?;
    cd.settings_handle().set_pbkdf_type(&temp_pbkdf()).or_fail(|| "Cannot set the PBKDF".into())?;
    cd.keyslot_handle()
        .add_by_key(Some(TEMP_SLOT), Some(Either::Left(volume_key.bytes())), temp_key.bytes(), CryptVolumeKey::empty())
        .or_fail(|| "Cannot add the temporary keyslot".into())?;
    crate::fault::trace("temporary keyslot");
    Ok(Formatted { fmt, header, volume_key, temp_key })
}

/// The header `format` made, made ready for `data` (the alias of the PV): the user's
/// keyslot (the user's PBKDF runs here), the TPM2's, our marker.
pub fn prepare(f: Formatted, data: &Path, passphrase: &Passphrase, marker: &Marker) -> Result<Prepared> {
    let Formatted { fmt, header, volume_key, temp_key } = f;
    let hpath = header.path();
    let load = || -> Result<Ctx> {
        let mut cd = Ctx::with_header(&hpath, data).or_fail(|| "Cannot open the new LUKS2 header".into())?;
        cd.context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
            .or_fail(|| "Cannot load the new LUKS2 header".into())?;
        Ok(cd)
    };
    let mut cd = load()?;
    cd.settings_handle().set_pbkdf_type(&fmt.pbkdf).or_fail(|| "Invalid PBKDF parameters".into())?;
    let user_slot = cd
        .keyslot_handle()
        .add_by_key(Some(USER_SLOT), Some(Either::Left(volume_key.bytes())), passphrase.bytes(), CryptVolumeKey::empty())
        .or_fail(|| "Cannot add the passphrase keyslot".into())?;
    crate::fault::trace("passphrase keyslot");
    if let Some((device, pcrs)) = &fmt.tpm2 {
        // Not later: libcryptsetup adds no keyslot to a header marked for reencryption.
        drop(cd);
        // The header is in memory still: a refusal, the disk unchanged.
        crate::boot::tpm2::enroll(&header.path_for_children(), &temp_key, device, pcrs).map_err(|e| {
            Error::new(Kind::Refused, format!("Cannot bind the new header to the TPM2: {e}. Nothing was changed."))
        })?;
        cd = load()?;
    }
    let mut m = marker.clone();
    m.temp_keyslot = Some(TEMP_SLOT);
    set_marker(&mut cd, &m)?;
    Ok(Prepared { fmt, header, user_slot, temp_slot: TEMP_SLOT, temp_key, volume_key })
}

fn reencrypt_params(shift: Sectors, sector_size: u32, flags: CryptReencrypt) -> CryptParamsReencrypt {
    CryptParamsReencrypt {
        mode: CryptReencryptModeInfo::Encrypt,
        direction: CryptReencryptDirectionInfo::Backward,
        resilience: "datashift".into(),
        hash: "sha256".into(),
        data_shift: shift.0,
        max_hotzone_size: 0,
        device_size: 0,
        luks2: Some(CryptParamsLuks2 {
            pbkdf: None,
            integrity: None,
            integrity_params: None,
            data_alignment: 0,
            data_device: None,
            sector_size,
            label: None,
            subsystem: None,
        }),
        flags,
    }
}

/// The in-memory header, with `data` as its data device.
fn open_prepared(p: &Prepared, data: &Path) -> Result<Ctx> {
    let hpath = p.header.path();
    let mut cd = Ctx::with_header(&hpath, data).or_fail(|| "Cannot open the new LUKS2 header".into())?;
    cd.context_handle().load::<()>(Some(EncryptionFormat::Luks2), None).or_fail(|| "Cannot load the new LUKS2 header".into())?;
    Ok(cd)
}

/// Before the freeze: libcryptsetup copies the PV's first `shift` sectors to the end of
/// the device (free space) and records that in the in-memory header. The copy goes
/// stale as the LVs write; the freeze repeats it (switch.rs). The disk's start is
/// untouched.
pub fn init_reencryption(p: &Prepared, data: &Path) -> Result<()> {
    let fmt = &p.fmt;
    let mut cd = open_prepared(p, data)?;
    // The digest libcryptsetup adds over the reencryption metadata is keyed by the volume
    // key; without this it benchmarks PBKDF2 for two seconds to choose its iterations.
    cd.settings_handle().set_pbkdf_type(&temp_pbkdf()).or_fail(|| "Cannot set the PBKDF".into())?;
    let flags = CryptReencrypt::INITIALIZE_ONLY | CryptReencrypt::MOVE_FIRST_SEGMENT;
    cd.reencrypt_handle()
        .reencrypt_init_by_passphrase(
            None,
            p.temp_key.bytes(),
            None,
            Some(p.temp_slot),
            Some((&fmt.cipher, &fmt.cipher_mode)),
            reencrypt_params(fmt.shift, fmt.sector_size, flags),
        )
        .or_fail(|| "Cannot initialise the encryption".into())?;
    Ok(())
}

/// Decryption's T1 (DECRYPT.md), made before the freeze: libcryptsetup's own decryption init
/// (forward, `datashift-checksum`, the first segment moved, the shift `shift` = the data
/// offset) on an in-memory copy of T0 (`t0`, the tail's bytes), with `data` as its data
/// device and `size` the PV's span (the data decrypted; without it libcryptsetup takes the
/// whole device, tail and all). It copies the first segment's ciphertext to the head of
/// `data`, over the header there (T0 at the tail describes the data meanwhile; the copy goes
/// stale as the LVs write, and the freeze copies again), and leaves T1 in memory, to be
/// written at the tail.
pub fn init_decryption(t0: &[u8], data: &Path, key: &Passphrase, shift: Sectors, size: Bytes) -> Result<MemHeader> {
    let header = MemHeader::new(Bytes(t0.len() as u64))?;
    std::os::unix::fs::FileExt::write_all_at(&header.file, t0, 0).or_fail(|| "Cannot copy the LUKS2 header".into())?;
    let mut cd = Ctx::with_header(&header.path(), data).or_fail(|| "Cannot open the LUKS2 header".into())?;
    cd.context_handle().load::<()>(Some(EncryptionFormat::Luks2), None).or_fail(|| "Cannot load the LUKS2 header".into())?;
    // As for encryption: the reencryption digest's PBKDF, not a two-second benchmark.
    cd.settings_handle().set_pbkdf_type(&temp_pbkdf()).or_fail(|| "Cannot set the PBKDF".into())?;
    let params = CryptParamsReencrypt {
        mode: CryptReencryptModeInfo::Decrypt,
        direction: CryptReencryptDirectionInfo::Forward,
        resilience: "datashift-checksum".into(),
        hash: "sha256".into(),
        data_shift: shift.0,
        max_hotzone_size: 0,
        device_size: size.0 >> 9,
        luks2: None,
        flags: CryptReencrypt::INITIALIZE_ONLY | CryptReencrypt::MOVE_FIRST_SEGMENT,
    };
    cd.reencrypt_handle()
        .reencrypt_init_by_passphrase(None, key.bytes(), None, None, None, params)
        .map_err(|e| key_error(e, || "Cannot initialise the decryption".into()))?;
    Ok(header)
}

/// The volume key of a decryption under way (or of T0), from its header's bytes (`tail`,
/// read from the device's tail): libcryptsetup unlocks keys for a reencryption's default
/// segment only, which a decryption's plain final segment is not, so it unlocks them from an
/// in-memory copy of the header as it was before the decryption (`before_decryption`).
pub fn decryption_volume_key(tail: &[u8], key: &Passphrase) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::os::unix::fs::FileExt;
    let header = MemHeader::new(Bytes(tail.len() as u64))?;
    header.file.write_all_at(tail, 0).or_fail(|| "Cannot copy the LUKS2 header".into())?;
    let h = crate::header::Header::read(&header.file)?;
    // T0 (the decryption not begun) is a plain LUKS2 header already.
    if h.meta.in_reencryption() {
        let images = h.images(&crate::header::before_decryption(&h.meta)?)?;
        let len = h.hdr_size as usize;
        header
            .file
            .write_all_at(&images[0][..len], 0)
            .and_then(|()| header.file.write_all_at(&images[1][..len], h.hdr_size))
            .or_fail(|| "Cannot write the LUKS2 header in memory".into())?;
    }
    volume_key(&mut *open(&header.path())?, None, key)
}

/// The prepared header as bytes for the start of the device, cut after the last
/// keyslot area: the rest of the header area is unused (wiped when the conversion
/// finishes, in one go with the tail).
pub fn header_image(p: &Prepared) -> Result<Vec<u8>> {
    let mut cd = open(&p.header.path())?;
    let len = metadata(&mut cd)?.header_extent().ok_or_else(|| Error::new(Kind::Failed, "The new header has no layout"))?;
    let mut bytes = vec![0u8; len.0 as usize];
    std::os::unix::fs::FileExt::read_exact_at(&p.header.file, &mut bytes, 0).or_fail(|| "Cannot read the new header".into())?;
    Ok(bytes)
}

/// The LUKS2 metadata as libcryptsetup loaded it.
pub fn metadata(cd: &mut CryptDevice) -> Result<Metadata> {
    let json = cd.status_handle().dump_json().or_fail(|| "Cannot read the LUKS2 metadata".into())?;
    Metadata::from_value(json).map_err(|e| Error::new(Kind::Failed, e))
}

pub fn open(dev: &Path) -> Result<Ctx> {
    let mut cd = Ctx::init(dev).or_fail(|| format!("Cannot open {}", dev.display()))?;
    cd.context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
        .context(Kind::Refused, || format!("{} is not a LUKS2 device", dev.display()))?;
    Ok(cd)
}

/// Before the freeze: opens `name` on the alias of the PV with the in-memory header.
/// Nothing is encrypted yet, so its table is plain linear segments; the freeze points
/// them at the PV. Private: udev must not scan it while it shows the stale copy.
pub fn activate_staged(p: &Prepared, name: &str, data: &Path) -> Result<()> {
    let mut cd = open_prepared(p, data)?;
    cd.activate_handle()
        .activate_by_passphrase(Some(name), Some(p.temp_slot), p.temp_key.bytes(), CryptActivate::PRIVATE)
        .map_err(|e| key_error(e, || format!("Cannot open {name}")))?;
    Ok(())
}

/// Opens `name` on the PV itself. Never with CRYPT_ACTIVATE_SHARED: libcryptsetup's
/// exclusive open of the device is what refuses to map it while something else holds
/// it (the VG activated on the raw device, a multipath or md member), which would show
/// the PV to LVM twice.
pub fn activate(cd: &mut CryptDevice, path: &Path, name: &str, slot: Option<u32>, key: &Passphrase) -> Result<()> {
    cd.activate_handle().activate_by_passphrase(Some(name), slot, key.bytes(), CryptActivate::empty()).map_err(|e| {
        if matches!(e, libcryptsetup_rs::LibcryptErr::IOError(ref io) if io.raw_os_error() == Some(libc::EBUSY)) {
            Error::new(
                Kind::Failed,
                format!(
                    "Cannot open {name}: {} is in use by something else (its volume group activated on the raw \
                     device, a device-mapper or md device stacked on it). Opening it beside that would show the PV \
                     twice. Stop what holds it (see lsblk {}), then run pvencrypt again.",
                    path.display(),
                    path.display()
                ),
            )
        } else {
            key_error(e, || format!("Cannot open {name}"))
        }
    })?;
    Ok(())
}

fn key_error(e: libcryptsetup_rs::LibcryptErr, what: impl FnOnce() -> String) -> Error {
    if matches!(e, libcryptsetup_rs::LibcryptErr::IOError(ref io) if io.raw_os_error() == Some(libc::EPERM)) {
        Error::new(Kind::WrongPassphrase, "No key available with this passphrase.")
    } else {
        Error::new(Kind::Failed, format!("{}: {e}", what()))
    }
}

/// Checks a passphrase against the device's keyslots without activating anything.
pub fn check_key(cd: &mut CryptDevice, key: &Passphrase) -> Result<u32> {
    cd.activate_handle()
        .activate_by_passphrase(None, None, key.bytes(), CryptActivate::empty())
        .map_err(|e| key_error(e, || "Cannot check the passphrase".into()))
}

/// The volume key, unlocked by `key` (from `slot`, or any).
pub fn volume_key(cd: &mut CryptDevice, slot: Option<u32>, key: &Passphrase) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let len = cd.status_handle().get_volume_key_size().max(0) as usize;
    let mut vk = zeroize::Zeroizing::new(vec![0u8; len.max(1)]);
    let (_, n) = cd
        .volume_key_handle()
        .get(slot, &mut vk, Some(key.bytes()))
        .map_err(|e| key_error(e, || "Cannot unlock the volume key".into()))?;
    vk.truncate(n);
    Ok(vk)
}

/// Progress callback: (bytes done, bytes total) → keep going?
pub type Progress<'a> = dyn FnMut(u64, u64) -> bool + 'a;

unsafe extern "C" fn progress_cb(size: u64, offset: u64, usrptr: *mut c_void) -> c_int {
    // SAFETY: `usrptr` is the `&mut &mut Progress` that `run` passed to reencrypt2,
    // alive for the whole call.
    let f = unsafe { &mut *(usrptr as *mut &mut Progress) };
    // Backward direction: `offset` counts what is done from the end.
    if f(offset, size) {
        0
    } else {
        1
    }
}

/// The online reencryption of active device `name`, checkpoint after checkpoint.
/// Returns false when `progress` asked to stop (at a checkpoint).
pub fn run(cd: &mut CryptDevice, name: &str, slot: Option<u32>, key: &Passphrase, progress: &mut Progress) -> Result<bool> {
    // libcryptsetup checks the resilience parameters even on resume; datashift's must
    // repeat the recorded shift.
    let shift = metadata(cd)?.reencrypt_shift().and_then(Bytes::whole_sectors).unwrap_or_default();
    cd.reencrypt_handle()
        .reencrypt_init_by_passphrase(
            Some(name),
            key.bytes(),
            None,
            slot,
            None,
            CryptParamsReencrypt { luks2: None, ..reencrypt_params(shift, 0, CryptReencrypt::RESUME_ONLY) },
        )
        .map_err(|e| key_error(e, || "Cannot resume the encryption".into()))?;
    let mut stopped = false;
    let mut wrapped = |done: u64, total: u64| {
        let go = progress(done, total);
        stopped |= !go;
        go
    };
    let mut f: &mut Progress = &mut wrapped;
    cd.reencrypt_handle()
        .reencrypt2(Some(progress_cb), Some(&mut f))
        .or_fail(|| "The encryption stopped with an error".into())?;
    Ok(!stopped)
}

pub fn reencrypt_state(cd: &mut CryptDevice) -> Result<CryptReencryptInfo> {
    cd.reencrypt_handle()
        .status(reencrypt_params(Sectors(0), 0, CryptReencrypt::empty()))
        .or_fail(|| "Cannot read the reencryption state".into())
}

/// Gone already is done: a finish that died after it, or `cryptsetup luksKillSlot` during
/// the conversion (libcryptsetup allows it; the mover's commits keep it).
pub fn destroy_keyslot(cd: &mut CryptDevice, slot: u32) -> Result<()> {
    if cd.keyslot_handle().status(slot).is_ok_and(|s| s == KeyslotInfo::Inactive) {
        return Ok(());
    }
    cd.keyslot_handle().destroy(slot).or_fail(|| format!("Cannot remove the temporary keyslot {slot}"))
}

fn set_marker(cd: &mut CryptDevice, m: &Marker) -> Result<()> {
    let v = serde_json::to_value(m).expect("marker serializes");
    cd.token_handle().json_set(TokenInput::AddToken(&v)).or_fail(|| "Cannot add the pvencrypt token".into())?;
    Ok(())
}

/// Our marker token, and its token id, if the device carries one.
pub fn marker(cd: &mut CryptDevice) -> Option<(Id, Marker)> {
    metadata(cd).ok()?.token(TOKEN_TYPE)
}

pub fn progress(cd: &mut CryptDevice) -> Option<(Bytes, Bytes)> {
    metadata(cd).ok()?.progress()
}

/// The helper devices libcryptsetup stacks under NAME during an online reencryption
/// step: its overlay, and the hotzone of the step (suspended while the step runs).
/// libcryptsetup's helper devices of NAME's reencryption: the overlay, then the hotzones.
/// A name too long for the kernel names no device.
pub fn helpers_of(name: &DmName) -> Vec<DmName> {
    ["overlay", "hotzone-backward", "hotzone-forward"].iter().filter_map(|h| DmName::new(format!("{name}-{h}")).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_spec_split() {
        assert_eq!(split_cipher("aes-xts-plain64").unwrap(), ("aes".into(), "xts-plain64".into()));
        assert_eq!(split_cipher("serpent-cbc-essiv:sha256").unwrap().1, "cbc-essiv:sha256");
        assert!(split_cipher("aes").is_err());
        assert!(split_cipher("-xts").is_err());
    }

    #[test]
    fn marker_found_among_tokens() {
        let json = serde_json::json!({"tokens": {
            "0": {"type": "systemd-tpm2", "keyslots": ["0"]},
            "3": {"type": "pvencrypt", "keyslots": [], "version": 1, "name": "sda5_crypt",
                  "vg_name": "vg0", "pv_uuid": "abc", "temp_keyslot": 1}}});
        let (id, m): (_, Marker) = Metadata::from_value(json).unwrap().token(TOKEN_TYPE).unwrap();
        assert_eq!(id, Id(3));
        assert_eq!(m.name.as_str(), "sda5_crypt");
        assert_eq!(m.temp_keyslot, Some(1));
    }
}

/// Root-only: builds real headers with libcryptsetup on a loop device (no device-mapper needed).
#[cfg(test)]
mod loop_tests {
    use super::*;

    pub(crate) use crate::testing::Loop;

    pub(crate) fn cheap_format(shift: u64) -> Format {
        Format {
            cipher: "aes".into(),
            cipher_mode: "xts-plain64".into(),
            key_bytes: 64,
            sector_size: 512,
            label: Some("test".into()),
            uuid: Uuid::new_v4(),
            shift: Sectors(shift),
            pbkdf: CryptPbkdfType { iterations: 1000, ..temp_pbkdf() },
            tpm2: None,
        }
    }

    pub(crate) fn test_marker() -> Marker {
        Marker {
            type_: TOKEN_TYPE.into(),
            keyslots: vec![],
            version: 1,
            name: DmName::new("t_crypt").unwrap(),
            vg_name: Some(VgName("vg".into())),
            pv_uuid: "u".into(),
            temp_keyslot: None,
        }
    }

    /// `format` then `prepare`, as a conversion does them.
    pub(super) fn prepared(fmt: Format, dev: &Path, key: &Passphrase) -> Result<Prepared> {
        prepare(format(fmt, dev)?, dev, key, &test_marker())
    }

    #[test]
    fn header_prepared_in_memory_leaves_the_disk_alone() {
        let Some(lo) = Loop::zeroed(64) else { return };
        capture_log();
        libcryptsetup_rs::set_debug_level(libcryptsetup_rs::consts::vals::CryptDebugLevel::All);
        let before = std::fs::read(&lo.dev).unwrap();
        let key = Passphrase::checked(zeroize::Zeroizing::new(b"pass phrase".to_vec()), "t").unwrap();
        let p = prepared(cheap_format(32768), &lo.dev, &key).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        assert_eq!((p.user_slot, p.temp_slot), (0, 1), "the user's keyslot is 0 although the temporary one came first");
        assert!(std::fs::read(&lo.dev).unwrap() == before, "preparing must not write to the device");
        let mut cd = open(&p.header.path()).unwrap();
        let (_, m) = super::marker(&mut cd).expect("token present");
        assert_eq!(m.temp_keyslot, Some(p.temp_slot));
        assert_eq!(check_key(&mut cd, &key).unwrap(), p.user_slot);
        assert_eq!(check_key(&mut cd, &p.temp_key).unwrap(), p.temp_slot);
        let wrong = Passphrase::checked(zeroize::Zeroizing::new(b"nope".to_vec()), "t").unwrap();
        assert_eq!(check_key(&mut cd, &wrong).unwrap_err().kind, Kind::WrongPassphrase);
    }
}

/// The freeze's disk writes, replayed on a loop device: libcryptsetup's copy, then the
/// header image written as switch.rs writes it, must give a device libcryptsetup opens.
#[cfg(test)]
mod image_tests {
    use super::loop_tests::{cheap_format, Loop};
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A 64 MiB loop device filled with a pattern no two 4 KiB blocks share, and a passphrase.
    fn patterned() -> Option<(Loop, Vec<u8>, Passphrase)> {
        let lo = Loop::zeroed(64)?;
        capture_log();
        let pattern: Vec<u8> = (0..64u64 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(&lo.dev, &pattern).unwrap();
        Some((lo, pattern, Passphrase::checked(zeroize::Zeroizing::new(b"pass phrase".to_vec()), "t").unwrap()))
    }

    #[test]
    fn header_image_placed_by_hand_is_a_luks2_device_in_reencryption() {
        let Some((lo, pattern, key)) = patterned() else { return };
        let fmt = cheap_format(32768);
        let p = super::loop_tests::prepared(fmt, &lo.dev, &key).unwrap();
        init_reencryption(&p, &lo.dev).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let disk = std::fs::read(&lo.dev).unwrap();
        assert!(disk[..48 << 20] == pattern[..48 << 20], "the start and the PV must be untouched");
        assert!(disk[48 << 20..] == pattern[..16 << 20], "the first segment is copied to the end");

        let img = header_image(&p).unwrap();
        assert!(img.len() < 2 << 20, "only the used part: {}", img.len());
        let end = img.len() as u64;
        let f = std::fs::OpenOptions::new().write(true).open(&lo.dev).unwrap();
        f.write_all_at(&img[4096..], 4096).unwrap();
        f.write_all_at(&img[..4096], 0).unwrap();
        f.sync_all().unwrap();

        let mut cd = open(&lo.dev).unwrap();
        let unused = metadata(&mut cd).unwrap().unused_areas(Sectors(cd.status_handle().get_data_offset()).bytes()).unwrap();
        assert_eq!(unused, vec![(Bytes(end), Bytes((16 << 20) - end))]);
        crate::direct::zero(&lo.dev, &unused).unwrap();
        assert_ne!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::None);
        assert_eq!(check_key(&mut cd, &key).unwrap(), p.user_slot);
        let meta = metadata(&mut cd).unwrap();
        assert_eq!(meta.moved_segment(), Some((Bytes(48 << 20), Bytes(16 << 20))));
        // The PV may use the device up to S - 2H.
        assert_eq!(meta.progress(), Some((Bytes(0), Bytes(32 << 20))));
        let disk = std::fs::read(&lo.dev).unwrap();
        assert!(disk[end as usize..16 << 20].iter().all(|&b| b == 0), "unused header area wiped");
        assert!(disk[16 << 20..48 << 20] == pattern[16 << 20..48 << 20], "the PV's data beyond the header untouched");
    }

    /// The in-memory header's 16 MiB written to the head of `dev`, as luksFormat leaves a
    /// device (no reencryption); the device opened read-write, and the bytes written.
    fn at_head(h: &MemHeader, dev: &Path) -> (File, Vec<u8>) {
        let mut img = vec![0u8; 16 << 20];
        h.file.read_exact_at(&mut img, 0).unwrap();
        let disk = std::fs::OpenOptions::new().read(true).write(true).open(dev).unwrap();
        disk.write_all_at(&img, 0).unwrap();
        disk.sync_all().unwrap();
        (disk, img)
    }

    type LuksFormatted = (Loop, Formatted, File, Vec<u8>, Vec<u8>);

    /// A device as luksFormat leaves it (`at_head`): the loop device, its format, the device
    /// opened read-write, the head's 16 MiB and the PV's 32 MiB after them, as written.
    fn luks_formatted() -> Option<LuksFormatted> {
        let (lo, _, _) = patterned()?;
        let f = format(cheap_format(32768), &lo.dev).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let (disk, img) = at_head(&f.header, &lo.dev);
        let pv = std::fs::read(&lo.dev).unwrap()[16 << 20..48 << 20].to_vec();
        Some((lo, f, disk, img, pv))
    }

    /// Decryption's T0 (DECRYPT.md) on a device formatted as luksFormat leaves it: the header
    /// copied to the last 16 MiB (`header::copy_to_tail`) is one libcryptsetup loads as a
    /// detached header of the same device: the same volume key behind the same keyslot, the
    /// data at the same offset, its segment sized to the PV instead of "dynamic".
    #[test]
    fn the_header_copied_to_the_tail_is_a_detached_header_of_the_device() {
        use crate::header;
        let Some((lo, f, disk, img, pv)) = luks_formatted() else { return };

        let t = header::copy_to_tail(&disk, Bytes(48 << 20), Bytes(32 << 20)).unwrap();
        let after = std::fs::read(&lo.dev).unwrap();
        assert!(after[..16 << 20] == img[..], "the head header is left as it was");
        assert!(after[16 << 20..48 << 20] == pv[..], "the PV is left as it was");
        let tail = MemHeader::new(Bytes(16 << 20)).unwrap();
        tail.file.write_all_at(&after[48 << 20..], 0).unwrap();
        let mut cd = Ctx::with_header(&tail.path(), &lo.dev).unwrap();
        cd.context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
            .unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        assert_eq!(Sectors(cd.status_handle().get_data_offset()), Sectors(32768));
        let m = metadata(&mut cd).unwrap();
        assert_eq!(m, t.meta);
        assert_eq!(m.active().map(|s| s.size).collect::<Vec<_>>(), vec![crate::metadata::Size::Fixed(Bytes(32 << 20))]);
        assert_eq!(check_key(&mut cd, &f.temp_key).unwrap(), TEMP_SLOT);
        assert!(volume_key(&mut cd, Some(TEMP_SLOT), &f.temp_key).unwrap()[..] == f.volume_key.bytes()[..]);
    }

    /// `--decrypt`'s first half of step 5: T0 at the tail, then NAME's line in the headers
    /// list and crypttab's entry naming the disk by its stable name and the header by its
    /// UUID; the head and the PV untouched.
    #[test]
    fn tail_and_boot_writes_t0_then_the_boot_configuration() {
        use crate::{boot, decrypt::Target, dm::DmName, header::Header};
        let Some((lo, f, disk, img, pv)) = luks_formatted() else { return };
        let root = crate::testing::TempDir::new("decrypt-root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let uuid = f.fmt.uuid.to_string();
        let entry = format!("lo_crypt UUID={uuid} none luks,discard");
        std::fs::write(root.join("etc/crypttab"), format!("# kept\n{entry}\n")).unwrap();
        let meta = std::fs::metadata(&lo.dev).unwrap();
        let t = Target {
            path: lo.dev.clone(),
            dev: devicemapper::Device::from_kdev_t(std::os::unix::fs::MetadataExt::rdev(&meta) as u32),
            size: Bytes(64 << 20),
            name: DmName::new("lo_crypt").unwrap(),
            uuid: uuid.clone(),
            data_offset: Bytes(16 << 20),
            span: Bytes(32 << 20),
            tail: Bytes(48 << 20),
            vg: crate::lvm::VgName("vg".into()),
            lvs: vec![],
            source: Some("/dev/disk/by-id/virtio-pv0".into()),
            crypttab: Some(entry),
            boot: None,
            under_way: None,
        };

        let written = crate::decrypt::tail_and_boot(&t, &root).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let after = std::fs::read(&lo.dev).unwrap();
        assert!(after[..16 << 20] == img[..] && after[16 << 20..48 << 20] == pv[..], "the head and the PV as they were");
        assert_eq!(Header::read_at(&disk, 48 << 20).unwrap().meta, written.meta, "T0 at the tail");
        assert_eq!(
            std::fs::read_to_string(root.join(boot::headers::HEADERS)).unwrap(),
            format!("lo_crypt /dev/disk/by-id/virtio-pv0 {} {uuid}\n", 48u64 << 20)
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/crypttab")).unwrap(),
            format!("# kept\nlo_crypt /dev/disk/by-id/virtio-pv0 none luks,discard,header=/dev/disk/by-uuid/{uuid}\n")
        );
    }

    /// The tail attached as the boot attaches it (`boot::headers::attach`): a loop device that
    /// libcryptsetup reads as LUKS2 with the device's UUID, found again rather than doubled.
    #[test]
    fn the_tail_attached_is_a_luks2_device_with_the_uuid() {
        use crate::boot::headers;
        let Some((lo, f, disk, _, _)) = luks_formatted() else { return };
        crate::header::copy_to_tail(&disk, Bytes(48 << 20), Bytes(32 << 20)).unwrap();
        assert_eq!(headers::attached(&lo.dev, Bytes(48 << 20)), None);

        let tail = headers::attach(&lo.dev, Bytes(48 << 20)).unwrap();
        let detach = crate::testing::Detach(tail.clone());
        assert_eq!(headers::attached(&lo.dev, Bytes(48 << 20)).as_ref(), Some(&tail));
        assert_eq!(headers::attach(&lo.dev, Bytes(48 << 20)).unwrap(), tail, "attached once");
        let sys = std::path::Path::new("/sys/block").join(tail.file_name().unwrap()).join("loop");
        assert_eq!(std::fs::read_to_string(sys.join("dio")).unwrap().trim(), "1", "direct I/O");
        assert_eq!(headers::attached(&lo.dev, Bytes(32 << 20)), None, "another offset");
        let mut cd = open(&tail).unwrap();
        assert_eq!(cd.status_handle().get_uuid().unwrap(), f.fmt.uuid);
        drop(cd);
        drop(detach);
        assert_eq!(headers::attached(&lo.dev, Bytes(48 << 20)), None);
    }

    /// Decryption's T1 made from T0 (`init_decryption`): libcryptsetup moved the first
    /// segment's ciphertext to the head and wrote the stock initialized state in memory.
    #[test]
    fn t1_is_libcryptsetups_decryption_init_on_the_tail_copy() {
        use crate::header;
        let Some((lo, _, key)) = patterned() else { return };
        let p = super::loop_tests::prepared(cheap_format(32768), &lo.dev, &key).unwrap();
        let (disk, _) = at_head(&p.header, &lo.dev);
        header::copy_to_tail(&disk, Bytes(48 << 20), Bytes(32 << 20)).unwrap();
        let before = std::fs::read(&lo.dev).unwrap();
        let vk = volume_key(&mut open(&p.header.path()).unwrap(), Some(p.user_slot), &key).unwrap();

        let t1 = init_decryption(&before[48 << 20..], &lo.dev, &key, Sectors(32768), Bytes(32 << 20))
            .unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let after = std::fs::read(&lo.dev).unwrap();
        assert!(after[..16 << 20] == before[16 << 20..32 << 20], "the first segment's ciphertext is at the head");
        assert!(after[16 << 20..] == before[16 << 20..], "nothing else on the device changed");
        let mut cd = Ctx::with_header(&t1.path(), &lo.dev).unwrap();
        cd.context_handle().load::<()>(Some(EncryptionFormat::Luks2), None).unwrap();
        assert_ne!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::None);
        let m = metadata(&mut cd).unwrap();
        let active: Vec<(String, Bytes)> = m.active().map(|s| (s.kind.clone(), s.offset)).collect();
        let crypt = |o: u64| ("crypt".to_string(), Bytes(o));
        assert_eq!(active, vec![crypt(0), crypt(32 << 20)], "the moved segment at the head, the rest one shift up");
        assert_eq!(m.moved_segment().map(|(_, l)| l), Some(Bytes(16 << 20)));
        // The size given bounds the old segment (stock resumes stop at the PV's end, short of
        // the tail); the active rest libcryptsetup leaves "dynamic" (pvencrypt sizes it).
        let prev = m.flagged("backup-previous").unwrap().1;
        assert_eq!(prev.size, crate::metadata::Size::Fixed(Bytes(32 << 20)));
        assert_eq!(check_key(&mut cd, &key).unwrap(), p.user_slot);

        // The states pvencrypt commits from there all end at the PV's end (32 MiB).
        use crate::metadata::Size::Fixed;
        let segs = |b: u64| -> Vec<(String, Bytes, crate::metadata::Size)> {
            let d = header::decrypted_to(&m, Bytes(b << 20)).unwrap();
            d.active().map(|s| (s.kind.clone(), s.offset, s.size)).collect()
        };
        let seg = |k: &str, o: u64, l: u64| (k.to_string(), Bytes(o << 20), Fixed(Bytes(l << 20)));
        assert_eq!(segs(16), vec![seg("crypt", 0, 16), seg("crypt", 32, 16)], "T1 as committed");
        assert_eq!(segs(24), vec![seg("crypt", 0, 16), seg("linear", 16, 8), seg("crypt", 40, 8)]);
        assert_eq!(segs(32), vec![seg("crypt", 0, 16), seg("linear", 16, 16)], "only the moved segment left");
        assert!(header::decrypted_to(&m, Bytes(40 << 20)).is_err(), "past the PV's end");
        // The mover reads each of them back: the boundary where it was put.
        for b in [16, 24, 32] {
            let l = header::Layout::of(&header::decrypted_to(&m, Bytes(b << 20)).unwrap()).unwrap();
            assert_eq!((l.direction, l.boundary, l.total), (header::Direction::Decrypt, Bytes(b << 20), Bytes(32 << 20)));
            assert_eq!((l.shift, l.moved_offset, l.data_offset), (Bytes(16 << 20), Bytes(0), Bytes(16 << 20)));
            assert!(l.committed(Bytes(16 << 20)) == (b > 16) && !l.committed(Bytes(b << 20)));
        }
        assert!(header::Layout::of(&m).is_err(), "libcryptsetup's own T1: its rest is not sized");
        let hot = header::decrypt_moved_hot(&header::decrypted_to(&m, Bytes(32 << 20)).unwrap()).unwrap();
        let hot: Vec<_> = hot.active().map(|s| (s.kind.clone(), s.offset, s.size)).collect();
        assert_eq!(hot, vec![seg("linear", 0, 16), seg("linear", 16, 16)]);
        // libcryptsetup takes T1 as committed for a clean decryption.
        let f = std::fs::OpenOptions::new().read(true).write(true).open(t1.path()).unwrap();
        let h = header::Header::read(&f).unwrap();
        h.write(&f, &h.images(&header::decrypted_to(&m, Bytes(16 << 20)).unwrap()).unwrap()).unwrap();
        let mut cd = Ctx::with_header(&t1.path(), &lo.dev).unwrap();
        cd.context_handle().load::<()>(Some(EncryptionFormat::Luks2), None).unwrap();
        assert_eq!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::Clean);
        // A resumed decryption's volume key: libcryptsetup's own unlock fails on this state.
        assert!(volume_key(&mut cd, None, &key).is_err());
        let bytes = std::fs::read(t1.path()).unwrap();
        assert_eq!(*decryption_volume_key(&bytes, &key).unwrap(), *vk, "the volume key the device had");
        assert_eq!(metadata(&mut cd).unwrap().active().last().map(|s| s.size), Some(Fixed(Bytes(16 << 20))));
    }

    /// Issue 24's format (DECRYPT.md), tried on libcryptsetup itself: a device encrypted
    /// with a data shift, its header exported, its decryption with a data shift initialised
    /// by libcryptsetup (datashift-checksum, the first segment moved) and one step of it run;
    /// then pvencrypt writes the clean state with the boundary elsewhere, at no multiple of
    /// the shift (`header::decrypted_to`). libcryptsetup loads it and resumes from there up to
    /// the moved segment. pvencrypt then writes the switch back's first step (the checksums
    /// of the moved segment's ciphertext, its hot state: `header::decrypt_moved_hot`), and
    /// half of the moved segment is decrypted in place before a "crash": libcryptsetup's
    /// recovery finishes it. The device holds the plaintext it began with, from its first byte.
    #[test]
    fn a_decryption_state_written_at_any_boundary_is_resumed_by_libcryptsetup() {
        use crate::header::{self, Header};
        let Some((lo, pattern, key)) = patterned() else { return };
        let shift = Sectors(8192);
        let params = |mode, direction, resilience: &str, flags| CryptParamsReencrypt {
            mode,
            direction,
            resilience: resilience.into(),
            hash: "sha256".into(),
            data_shift: shift.0,
            max_hotzone_size: 0,
            device_size: 0,
            luks2: None,
            flags,
        };
        // Runs the reencryption the header holds, offline, the progress reports it made (bytes
        // done) in `seen`, until `done` says so.
        let run = |cd: &mut CryptDevice, p: CryptParamsReencrypt, done: &dyn Fn(&[u64]) -> bool| -> Vec<u64> {
            cd.reencrypt_handle()
                .reencrypt_init_by_passphrase(None, key.bytes(), None, None, None, p)
                .unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
            let mut seen = Vec::new();
            let mut each = |d: u64, _: u64| {
                seen.push(d);
                !done(&seen)
            };
            let mut f: &mut Progress = &mut each;
            cd.reencrypt_handle()
                .reencrypt2(Some(progress_cb), Some(&mut f))
                .unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
            seen
        };

        // Encrypted as pvencrypt starts it (header placed by hand), finished by libcryptsetup.
        let p = super::loop_tests::prepared(cheap_format(shift.0), &lo.dev, &key).unwrap();
        init_reencryption(&p, &lo.dev).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let img = header_image(&p).unwrap();
        std::fs::OpenOptions::new().write(true).open(&lo.dev).unwrap().write_all_at(&img, 0).unwrap();
        let mut cd = open(&lo.dev).unwrap();
        let encrypt = params(
            CryptReencryptModeInfo::Encrypt,
            CryptReencryptDirectionInfo::Backward,
            "datashift",
            CryptReencrypt::RESUME_ONLY,
        );
        run(&mut cd, encrypt, &|_| false);
        assert_eq!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::None);

        // Decryption as `cryptsetup reencrypt --decrypt --header FILE` starts it.
        let hdr = lo.file.with_file_name("hdr");
        cd.backup_handle().header_backup(Some(EncryptionFormat::Luks2), &hdr).unwrap();
        drop(cd);
        std::fs::OpenOptions::new().write(true).open(&lo.dev).unwrap().write_all_at(&[0; 32768], 0).unwrap();
        let load = || {
            let mut cd = Ctx::with_header(&hdr, &lo.dev).unwrap();
            cd.context_handle().load::<()>(Some(EncryptionFormat::Luks2), None).unwrap();
            cd
        };
        let (decrypt, checksum) = (CryptReencryptModeInfo::Decrypt, "datashift-checksum");
        let init = CryptReencrypt::INITIALIZE_ONLY | CryptReencrypt::MOVE_FIRST_SEGMENT;
        load()
            .reencrypt_handle()
            .reencrypt_init_by_passphrase(
                None,
                key.bytes(),
                None,
                None,
                None,
                params(decrypt, CryptReencryptDirectionInfo::Forward, checksum, init),
            )
            .unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let resume = || params(decrypt, CryptReencryptDirectionInfo::Forward, checksum, CryptReencrypt::RESUME_ONLY);
        run(&mut load(), resume(), &|seen| seen.len() > 1);
        let moved = shift.bytes();
        let active: Vec<(String, Bytes)> = metadata(&mut load()).unwrap().active().map(|s| (s.kind.clone(), s.offset)).collect();
        let step = [("crypt", Bytes(0)), ("linear", moved), ("crypt", Bytes(moved.0 * 3))].map(|(k, o)| (k.to_string(), o));
        assert_eq!(active, step, "one step: the moved segment, a shift decrypted, the rest");

        // pvencrypt's state: the boundary back inside the step libcryptsetup made (the
        // ciphertext there is still in place), at no multiple of the shift.
        let b = moved + Bytes((2 << 20) + 12288);
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&hdr).unwrap();
        let h = Header::read(&f).unwrap();
        // At libcryptsetup's own boundary, the state pvencrypt would write is libcryptsetup's
        // (offline it reads only the backup segments: the active ones matter to dm tables).
        // (Digests list their segments in any order.)
        let covers = |m: &crate::metadata::Metadata| -> Vec<Vec<Id>> {
            m.digests
                .values()
                .map(|d| d.segments.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect())
                .collect()
        };
        let same = header::decrypted_to(&h.meta, moved + moved).unwrap();
        assert_eq!((&same.segments, covers(&same)), (&h.meta.segments, covers(&h.meta)));
        let json = header::decrypted_to(&h.meta, b).unwrap();
        h.write(&f, &h.images(&json).unwrap()).unwrap();
        drop(f);
        let mut cd = load();
        assert_eq!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::Clean);
        // Up to the moved segment: the header says so between two steps.
        let only_moved_left = |_: &[u64]| {
            let m = Header::read(&std::fs::File::open(&hdr).unwrap()).unwrap().meta;
            m.active().map(|s| (s.kind.as_str(), s.size.fixed())).eq([("crypt", Some(moved)), ("linear", None)])
        };
        let seen = run(&mut cd, resume(), &only_moved_left);
        assert_eq!(seen.first(), Some(&(b - moved).0), "libcryptsetup resumes at pvencrypt's boundary");

        // The switch back's first step, then half of the moved segment decrypted in place.
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&hdr).unwrap();
        let h = Header::read(&f).unwrap();
        let area = h.meta.keyslots.values().find(|k| k.kind == "reencrypt").and_then(|k| k.area.clone()).unwrap();
        assert_eq!(area.rest["type"], "datashift-checksum");
        let ciphertext = &std::fs::read(&lo.dev).unwrap()[..moved.0 as usize];
        let sums = header::checksums(ciphertext, area.sector_size.unwrap() as usize);
        f.write_all_at(&sums, area.offset.unwrap().0).unwrap();
        f.sync_data().unwrap();
        let json = header::decrypt_moved_hot(&h.meta).unwrap();
        h.write(&f, &h.images(&json).unwrap()).unwrap();
        drop(f);
        assert_eq!(reencrypt_state(&mut load()).unwrap(), CryptReencryptInfo::Crash);
        let half = moved.0 as usize / 2;
        std::fs::OpenOptions::new().write(true).open(&lo.dev).unwrap().write_all_at(&pattern[..half], 0).unwrap();
        // What `cryptsetup repair --header` does (and any open of the device, online).
        let repair = params(decrypt, CryptReencryptDirectionInfo::Forward, checksum, CryptReencrypt::RECOVERY);
        load()
            .reencrypt_handle()
            .reencrypt_init_by_passphrase(None, key.bytes(), None, None, None, repair)
            .unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        assert_eq!(reencrypt_state(&mut load()).unwrap(), CryptReencryptInfo::None);
        let disk = std::fs::read(&lo.dev).unwrap();
        let pv = 56 << 20;
        assert!(disk[..pv] == pattern[..pv], "the device holds its plaintext again, from its first byte");
    }

    /// `--tpm2-device`, with swtpm as the TPM2 (tpm2-tss's swtpm TCTI): the keyslot and
    /// token systemd-cryptenroll adds to the header in memory stay through the marking for
    /// reencryption and the placement, beside the passphrase's.
    #[test]
    fn a_tpm2_binding_made_before_the_marking_is_in_the_placed_header() {
        let Some(lo) = Loop::zeroed(64) else { return };
        let tcti = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libtss2-tcti-swtpm.so.0");
        if crate::boot::which(std::path::Path::new("/"), "swtpm").is_none() || !tcti.exists() {
            return eprintln!("skipped: needs swtpm and libtss2-tcti-swtpm0");
        }
        let state = crate::testing::TempDir::new("swtpm");
        let port = 20000 + std::process::id() % 20000;
        let mut swtpm = crate::testing::unshared("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--server", &format!("type=tcp,port={port}"), "--ctrl", &format!("type=tcp,port={}", port + 1)])
            .spawn()
            .unwrap();
        let up = (0..100).any(|_| {
            std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_ok()
                || (std::thread::sleep(std::time::Duration::from_millis(50)), false).1
        });
        capture_log();
        let key = Passphrase::checked(zeroize::Zeroizing::new(b"pass phrase".to_vec()), "t").unwrap();
        let fmt = Format { tpm2: Some((format!("swtpm:host=127.0.0.1,port={port}"), "7".into())), ..cheap_format(32768) };
        let prepared = up.then(|| super::loop_tests::prepared(fmt, &lo.dev, &key));
        let _ = swtpm.kill();
        let _ = swtpm.wait();
        assert!(up, "swtpm did not listen on port {port}");
        let p = prepared.unwrap().unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        init_reencryption(&p, &lo.dev).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let img = header_image(&p).unwrap();
        let f = crate::direct::open(&lo.dev).unwrap();
        f.write_all_at(&crate::direct::Aligned::from_bytes(&img), 0).unwrap();

        let mut cd = open(&lo.dev).unwrap();
        assert_ne!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::None);
        let meta = metadata(&mut cd).unwrap();
        assert!(crate::boot::tpm2::bound(&meta), "{meta:?}");
        let (_, token): (_, serde_json::Value) = meta.token("systemd-tpm2").unwrap();
        let slot: u32 = token["keyslots"][0].as_str().unwrap().parse().unwrap();
        assert!(slot != p.user_slot && slot != p.temp_slot, "the TPM2's own keyslot: {meta:?}");
        assert_eq!(meta.keyslots[&Id(slot)].kind, "luks2", "{meta:?}");
        assert_eq!(check_key(&mut cd, &key).unwrap(), p.user_slot, "the passphrase still opens it");
        assert!(super::marker(&mut cd).is_some(), "pvencrypt's token too");
        // The token's plugin finds no TPM2 that unseals it (swtpm is gone; systemd's plugin
        // uses the machine's own TPM2, as crypttab's tpm2-device=auto): nothing, and the
        // resume asks. The VM test t_dracut_root unseals with a TPM2.
        assert!(crate::boot::tpm2::unseal(&lo.dev).is_none(), "unsealed without the TPM2");
        assert!(crate::boot::tpm2::unseal(&p.header.path()).is_none(), "the header before the binding has no token");
    }

    /// The mover's hand-made commits (header.rs), read back by libcryptsetup: every
    /// boundary is a reencryption it loads with the right progress, and the last commit
    /// gives exactly the header the conversion began with, before the reencryption.
    #[test]
    fn hand_committed_states_are_what_libcryptsetup_reads() {
        use crate::header::{self, Header, Layout};
        let Some(lo) = Loop::zeroed(64) else { return };
        capture_log();
        let key = Passphrase::checked(zeroize::Zeroizing::new(b"pass phrase".to_vec()), "t").unwrap();
        let fmt = cheap_format(8192);
        let p = super::loop_tests::prepared(fmt, &lo.dev, &key).unwrap();
        let before = open(&p.header.path()).unwrap().status_handle().dump_json().unwrap();
        init_reencryption(&p, &lo.dev).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let img = header_image(&p).unwrap();
        let f = crate::direct::open(&lo.dev).unwrap();
        f.write_all_at(&crate::direct::Aligned::from_bytes(&img), 0).unwrap();

        let mut h = Header::read(&f).unwrap();
        let l = Layout::of(&h.meta).unwrap();
        let mut cd = open(&lo.dev).unwrap();
        let vk = volume_key(&mut cd, None, &key).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        assert_eq!(vk.len(), 64);
        assert_eq!(*volume_key(&mut cd, Some(p.temp_slot), &p.temp_key).unwrap(), *vk);
        drop(cd);
        assert_eq!(
            (l.total, l.shift, l.boundary, l.data_offset),
            (Bytes(56 << 20), Bytes(4 << 20), Bytes(56 << 20), Bytes(4 << 20))
        );
        for b in [(52 << 20) + 4096, 40 << 20, 4 << 20].map(Bytes) {
            let json = header::at_boundary(&h.meta, &l, b).unwrap();
            h.write(&f, &h.images(&json).unwrap()).unwrap();
            h.committed(json);
            let mut cd = open(&lo.dev).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
            assert_eq!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::Clean, "at {b}");
            assert_eq!(progress(&mut cd), Some((l.total - b, l.total)), "at {b}");
            assert_eq!(check_key(&mut cd, &key).unwrap(), p.user_slot);
        }
        let json = header::finished(&h.meta).unwrap();
        h.write(&f, &h.images(&json).unwrap()).unwrap();
        let mut cd = open(&lo.dev).unwrap();
        assert_eq!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::None);
        assert_eq!(check_key(&mut cd, &key).unwrap(), p.user_slot);
        let after = cd.status_handle().dump_json().unwrap();
        assert_eq!(after, before, "the finished header is the one formatted before the reencryption");
    }

    /// libcryptsetup destroys a keyslot (`cryptsetup luksKillSlot`) between two of the
    /// mover's commits, each made from the header on the disk (`header::next_commit`):
    /// the keyslot stays destroyed, libcryptsetup loads every state, and seqids go up.
    #[test]
    fn a_keyslot_destroyed_by_libcryptsetup_between_commits_stays_destroyed() {
        use crate::header::{self, Header, Layout};
        let Some(lo) = Loop::zeroed(64) else { return };
        capture_log();
        let key = Passphrase::checked(zeroize::Zeroizing::new(b"pass phrase".to_vec()), "t").unwrap();
        let fmt = cheap_format(8192);
        let p = super::loop_tests::prepared(fmt, &lo.dev, &key).unwrap();
        init_reencryption(&p, &lo.dev).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        let img = header_image(&p).unwrap();
        let f = crate::direct::open(&lo.dev).unwrap();
        f.write_all_at(&crate::direct::Aligned::from_bytes(&img), 0).unwrap();
        let mut ours = Header::read(&f).unwrap();
        let l = Layout::of(&ours.meta).unwrap();
        let commit = |ours: &mut Header, b: Bytes| {
            let disk = Header::read(&f).unwrap();
            assert!(disk.seqid >= ours.seqid);
            let json = header::next_commit(&disk.meta, &ours.meta, &l, b).unwrap();
            disk.write(&f, &disk.images(&json).unwrap()).unwrap();
            *ours = disk;
            ours.committed(json);
            assert_eq!(Header::read(&f).unwrap().seqid, ours.seqid);
        };
        commit(&mut ours, Bytes(40 << 20));
        let mut cd = open(&lo.dev).unwrap();
        destroy_keyslot(&mut cd, p.temp_slot).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
        drop(cd);
        let killed = Header::read(&f).unwrap().seqid;
        assert!(killed > ours.seqid, "libcryptsetup's write is numbered after ours");
        for b in [Bytes(4 << 20), Bytes(0)] {
            commit(&mut ours, b);
            assert!(ours.seqid > killed);
            let mut cd = open(&lo.dev).unwrap_or_else(|e| panic!("{e}: {:?}", take_log(true)));
            assert_eq!(check_key(&mut cd, &key).unwrap(), p.user_slot);
            assert!(volume_key(&mut cd, Some(p.temp_slot), &p.temp_key).is_err(), "at {b}: the killed keyslot is back");
            assert!(!ours.meta.keyslots.contains_key(&Id(p.temp_slot)));
        }
        let mut cd = open(&lo.dev).unwrap();
        assert_eq!(reencrypt_state(&mut cd).unwrap(), CryptReencryptInfo::None);
        // finish() again after it: nothing left to destroy is not an error.
        destroy_keyslot(&mut cd, p.temp_slot).unwrap();
    }
}
