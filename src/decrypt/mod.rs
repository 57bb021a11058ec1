//! `pvencrypt --decrypt`: the way back (DECRYPT.md). So far its first step, as encryption's:
//! what the device is and whether it can be decrypted live, read without changing a byte,
//! and the plan `--test` prints. The run itself is DECRYPT.md's steps 5 to 7.

use std::{
    fs,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use devicemapper::Device;

mod first_move;
mod switch_back;

use crate::in_place::is_hot;

use crate::{
    boot, direct,
    dm::{block_device, Dm, DmName},
    error::{refuse, Context, Error, Kind, Result, Written},
    key::Passphrase,
    lvm,
    options::Options,
    units::Bytes,
};

/// What preflight found: everything the later steps need, nothing changed yet.
pub struct Target {
    /// The LUKS2 device.
    pub path: PathBuf,
    pub dev: Device,
    pub size: Bytes,
    /// The open mapping the PV is on.
    pub name: DmName,
    pub uuid: String,
    /// Where the data starts on the device (D): the first move's length too (M = D).
    pub data_offset: Bytes,
    /// The end of the PV's last extent on the mapping: what stays on the device.
    pub span: Bytes,
    /// Where the header lives during the run: the device's last bytes.
    pub tail: Bytes,
    pub vg: lvm::VgName,
    pub lvs: Vec<String>,
    /// How crypttab and the headers list name the device once its UUID leaves the head.
    pub source: Option<String>,
    /// NAME's crypttab entry, as it is.
    pub crypttab: Option<String>,
    /// Why the initramfs must open the device, and its tool.
    pub boot: Option<(String, boot::Tool)>,
    /// A decryption of ours under way: the header at the tail (T0, or a state of the
    /// decryption), the head's being gone.
    pub under_way: Option<crate::header::Header>,
}

impl Target {
    /// Whether the run needs the passphrase: not once the data is all plaintext (the
    /// switch back's hot state, or stock's end of the decryption).
    pub fn needs_passphrase(&self) -> bool {
        self.under_way.as_ref().is_none_or(|h| !is_hot(&h.meta) && !finished_by_stock(&h.meta))
    }
}

/// Step 1 of `--decrypt`. Read-only. `path`: the LUKS2 device or its mapping.
pub fn preflight(opts: &Options, path: &Path) -> Result<Target> {
    let (given, _) = block_device(path)?;
    let dm = Dm::open()?;
    // /dev/mapper/NAME (or dm-N) given: the LUKS2 device under it.
    let (dev, path) = match crypt_mapping(given) {
        Some((_, _, Some(lower))) => (lower, node_of(lower)),
        Some((name, _, None)) => return refuse(format!("{} ({name}) is not a LUKS2 mapping of one device.", path.display())),
        None => (given, path.to_path_buf()),
    };
    let (_, size) = block_device(&path)?;
    let size = size.bytes();
    if luks1(&path) {
        return refuse(format!(
            "{} is LUKS1, which has no online reencryption: cryptsetup convert --type luks2 (offline) first.",
            path.display()
        ));
    }
    let (uuid, meta, under_way) = match crate::luks::open(&path) {
        Ok(mut cd) => {
            let uuid = cd.status_handle().get_uuid().map(|u| u.to_string()).unwrap_or_default();
            (uuid, crate::luks::metadata(&mut cd)?, None)
        }
        Err(e) => match find_tail(&path, size) {
            Some((at, h)) => (h.uuid().unwrap_or_default(), h.meta.clone(), Some((at, h))),
            None => return Err(e),
        },
    };
    if under_way.is_none() && meta.in_reencryption() {
        return refuse(format!(
            "{} is in a reencryption; let it finish first (pvencrypt, or cryptsetup reencrypt --resume-only).",
            path.display()
        ));
    }
    let prefix = format!("CRYPT-LUKS2-{}-", uuid.replace('-', ""));
    let by_stock = under_way.as_ref().is_some_and(|(_, h)| finished_by_stock(&h.meta));
    let name = match &dm.named_with_uuid(&prefix)?[..] {
        [(name, _)] if by_stock => {
            return refuse(format!(
                "{}: cryptsetup finished its decryption, and /dev/mapper/{name} maps it in plaintext; pvencrypt does not \
                 move LVs off such a mapping yet. Deactivate the volume group, close {name} (cryptsetup close), \
                 activate the volume group again (from the raw device), then run pvencrypt --decrypt again.",
                path.display()
            ))
        }
        [(name, _)] => name.clone(),
        // Its name: the headers list's, if it has one (crypttab's entry is found by it).
        [] if by_stock => DmName::new(
            boot::headers::read(Path::new(boot::ROOT))
                .into_iter()
                .find(|t| t.uuid == uuid)
                .map_or_else(|| format!("luks-{uuid}"), |t| t.name),
        )?,
        [] if under_way.is_some() => {
            let at = under_way.as_ref().map_or(0, |(at, _)| at.0);
            return refuse(format!(
                "{p}: its decryption is under way, its LUKS2 header at the device's tail, and it is not open. Open it \
                 with that header (LOOP=$(losetup --offset {at} --find --show {p}); cryptsetup open --header $LOOP {p} \
                 NAME), then run pvencrypt --decrypt again.",
                p = path.display()
            ));
        }
        [] => {
            return refuse(format!(
                "{} is not open: --decrypt decrypts a device in use. Open it (cryptsetup open), or decrypt it offline \
                 (cryptsetup reencrypt --decrypt --header FILE).",
                path.display()
            ))
        }
        more => return refuse(format!("{} is open {} times; close all but one.", path.display(), more.len())),
    };
    let mapping = PathBuf::from("/dev/mapper").join(name.as_str());
    let crypt = if by_stock { None } else { Some(dm.device_of(&name)?) };
    // The switch back's hot state with the LVs moved (its guardian finished it), or stock's
    // end of the decryption: the PV is on the raw device now (NAME's head, if NAME is there,
    // decrypts plaintext).
    let hot = under_way.as_ref().is_some_and(|(_, h)| is_hot(&h.meta));
    let moved_back = by_stock || hot && crypt.map_or(Ok(true), |c| dm.holders(c).map(|h| h.is_empty()))?;
    let pv_on = if moved_back { &path } else { &mapping };
    let pv = lvm::pv(pv_on)
        .context(Kind::Refused, || format!("Cannot read {} as an LVM physical volume", pv_on.display()))?
        .ok_or_else(|| Error::new(Kind::Refused, format!("{} holds no LVM physical volume.", pv_on.display())))?;
    let Some(vg_name) = pv.vg_name.clone() else {
        return refuse(format!(
            "The PV on {} is in no volume group; pvremove it and close the device instead.",
            mapping.display()
        ));
    };
    let vg = crate::preflight::usable_vg(&vg_name)?;

    // The whole header at the tail (a keyslot added meanwhile may use its keyslots area to
    // the end), the data D lower: the PV must end D + the header short of the device's end.
    let Some(header) = meta.header_size() else {
        return refuse(format!("{}: the LUKS2 header has no keyslots size.", path.display()));
    };
    let tail = match &under_way {
        Some((at, _)) => *at,
        None => Bytes(size.0.saturating_sub(header.0.next_multiple_of(1 << 20))),
    };
    let span = pv.data_end().bytes();
    let data_offset = if by_stock {
        Bytes(0)
    } else if hot {
        meta.reencrypt_shift().ok_or_else(|| Error::new(Kind::Refused, format!("{}: no data shift.", path.display())))?
    } else if meta.in_reencryption() {
        crate::header::Layout::of(&meta)
            .map_err(|e| Error::new(Kind::Refused, format!("{}: {}.", path.display(), e.msg)))?
            .data_offset
    } else {
        let relocated = crate::header::relocated(&meta, span)
            .map_err(|e| Error::new(Kind::Refused, format!("{}: {}.", path.display(), e.msg)))?;
        relocated.segments.values().next().map(|s| s.offset).unwrap_or_default()
    };
    if !by_stock && data_offset + span > tail {
        let short = data_offset + span - tail;
        return refuse(format!(
            "{path}: the PV on {mapping} ends at {end} MiB; while it is decrypted the LUKS2 header lives in the \
             device's last {h} MiB, so the PV may use {room} MiB. Shrink it by {short} MiB first (pvmove the \
             extents there, then pvresize --setphysicalvolumesize {room}m {mapping}).",
            path = path.display(),
            mapping = mapping.display(),
            end = span.mib(),
            h = (size - tail).mib(),
            room = (tail - data_offset).0 >> 20,
            short = short.0.div_ceil(1 << 20),
        ));
    }

    let vg_prefix = lvm::lv_uuid_prefix(&vg.vg_uuid);
    let holders = match crypt {
        Some(c) => dm.holders(c)?,
        None => Vec::new(),
    };
    if let Some(h) = holders.iter().find(|h| h.direct && !h.uuid.as_deref().unwrap_or("").starts_with(&vg_prefix)) {
        return refuse(format!("{} is in use by {}, which is not a logical volume of {vg_name}.", mapping.display(), h.name));
    }
    // A run of ours that died leaves its mover devices on the disk, which the next run takes over.
    let ours = |n: &str| {
        fs::read_to_string(format!("/sys/class/block/{n}/dm/uuid"))
            .is_ok_and(|u| u.starts_with(&format!("CRYPT-TEMP-pvencrypt-{uuid}-")) || moved_back && u.starts_with(&vg_prefix))
    };
    let lower = crate::dm::holders_of(dev);
    if let Some(n) = lower.into_iter().find(|n| crypt.is_none_or(|c| *n != format!("dm-{}", c.minor)) && !ours(n)) {
        return refuse(format!("{} is held by {n} besides {name}.", path.display()));
    }

    let root = Path::new(boot::ROOT);
    let crypttab = fs::read_to_string(root.join(boot::CRYPTTAB.trim_start_matches('/'))).unwrap_or_default();
    let crypttab = boot::crypttab::find_entry(&crypttab, name.as_str(), Some(&uuid)).map(str::to_string);
    let source = boot::headers::stable_source(dev);
    let boot = boot_stack(opts, &path, &name, &vg.vg_uuid)?;
    if source.is_none() && (crypttab.is_some() || boot.is_some()) {
        return refuse(format!(
            "udev gives {} no stable name (by-id, PARTUUID, by-path): the next boot could not find it once its UUID \
             leaves its head with the header.",
            path.display()
        ));
    }
    let lvs = holders.iter().map(|h| h.name.to_string()).collect();
    let under_way = under_way.map(|(_, h)| h);
    Ok(Target { path, dev, size, name, uuid, data_offset, span, tail, vg: vg_name, lvs, source, crypttab, boot, under_way })
}

/// The header of a decryption of ours at the tail of `path`, whose head no longer holds it:
/// where /etc/pvencrypt/headers says, else where a 16 MiB header (luksFormat's and
/// pvencrypt's) puts it.
fn find_tail(path: &Path, size: Bytes) -> Option<(Bytes, crate::header::Header)> {
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(path).ok()?.rdev();
    let listed = boot::headers::read(Path::new(boot::ROOT)).into_iter().filter_map(|t| {
        let source = match t.source.strip_prefix("PARTUUID=") {
            Some(u) => PathBuf::from("/dev/disk/by-partuuid").join(u),
            None => PathBuf::from(&t.source),
        };
        (fs::metadata(source).ok()?.rdev() == rdev).then_some((t.offset, Some(t.uuid)))
    });
    let f = crate::direct::open(path).ok()?;
    listed.chain([(Bytes(size.0.saturating_sub(16 << 20)), None)]).find_map(|(at, uuid)| {
        let h = crate::header::Header::read_at(&f, at.0).ok()?;
        // T0 (its one segment encrypted), a state of the decryption or its switch back's hot
        // state: nothing else of ours lives at a tail.
        let ours = if h.meta.in_reencryption() {
            is_hot(&h.meta) || crate::header::Layout::of(&h.meta).is_ok_and(|l| l.direction == crate::header::Direction::Decrypt)
        } else {
            h.meta.active().next().is_some_and(|s| s.is_crypt()) || finished_by_stock(&h.meta)
        };
        (ours && (uuid.is_none() || h.uuid() == uuid)).then_some((at, h))
    })
}

/// The decryptions of ours no process runs, for `--status`: each device whose head holds
/// no LUKS2 header and whose tail holds a header of ours (`find_tail`), with how much of
/// it is plaintext in place. Running ones are listed from their status files.
pub fn stopped_statuses() -> Vec<crate::running::Status> {
    let Ok(rd) = fs::read_dir("/sys/class/block") else { return Vec::new() };
    let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    let dm = Dm::open().ok();
    names
        .into_iter()
        .filter(|n| crate::resume::could_be_ours(n))
        .filter_map(|n| {
            let path = PathBuf::from("/dev").join(&n);
            let (_, size) = block_device(&path).ok()?;
            if crate::header::read_metadata(&path).is_some() {
                return None;
            }
            let (_, h) = find_tail(&path, size.bytes())?;
            let uuid = h.uuid().unwrap_or_default();
            let prefix = format!("CRYPT-LUKS2-{}-", uuid.replace('-', ""));
            let name =
                dm.as_ref().and_then(|dm| dm.named_with_uuid(&prefix).ok()).and_then(|v| v.first().map(|(n, _)| n.to_string()));
            let (mut done, mut total) = (0, 0);
            for s in h.meta.active() {
                let size = s.size.fixed().map_or(0, |b| b.0);
                total += size;
                if !s.is_crypt() {
                    done += size;
                }
            }
            let state =
                if crate::abort::is_aborted(&path) { crate::running::Phase::Aborted } else { crate::running::Phase::Stopped };
            Some(crate::running::Status {
                pv: path.display().to_string(),
                name: name.unwrap_or_default(),
                state,
                bytes_done: done,
                bytes_total: total,
                ..Default::default()
            })
        })
        .collect()
}

/// A header that stock cryptsetup left at the end of a decryption (its `reencrypt
/// --resume-only`, or its open's recovery of the switch back's hot state): no reencryption,
/// its segments all linear, its keyslots destroyed with the key.
fn finished_by_stock(m: &crate::metadata::Metadata) -> bool {
    let mut active = m.active().peekable();
    !m.in_reencryption() && active.peek().is_some() && active.all(|s| !s.is_crypt())
}

/// DECRYPT.md's step 5, its first half: T0 at the tail (`header::copy_to_tail`), then the
/// boot configuration that finds it there: NAME's line in the headers list, crypttab's entry
/// naming the disk by `source` and the header by its UUID, the initramfs rebuilt and checked.
/// Nothing has moved: a crash anywhere here boots from the head's header as before, and the
/// tail holds the same header. `root`: the system's root (`boot::ROOT`; a test's directory).
pub fn tail_and_boot(t: &Target, root: &Path) -> Result<crate::header::Header> {
    let written = {
        // No stock cryptsetup reads or writes the header meanwhile.
        let _lock = crate::header::CryptsetupLock::metadata(t.dev)?;
        let f = crate::direct::open(&t.path).or_fail(|| format!("Cannot open {}", t.path.display()))?;
        crate::header::copy_to_tail(&f, t.tail, t.span)?
    };
    crate::fault::point("decrypt-tail");
    let Some(source) = &t.source else { return Ok(written) };
    let tail = boot::headers::Tail { name: t.name.to_string(), source: source.clone(), offset: t.tail, uuid: t.uuid.clone() };
    boot::headers::add(root, &tail)?;
    if t.crypttab.is_some() {
        let path = root.join(boot::CRYPTTAB.trim_start_matches('/'));
        boot::crypttab::with_tail_header(&path, t.name.as_str(), source, &t.uuid)?;
    }
    if let Some((why, tool)) = &t.boot {
        let cmd = tool.rebuild().join(" ");
        boot::initramfs::rebuild(root, *tool).map_err(|e| Error::new(Kind::Failed, format!("{why}: {e}.")))?;
        let problems = boot::initramfs::verify_headers(root, *tool);
        if !problems.is_empty() {
            // The head's header still opens the device: stop before it goes.
            return Err(Error::new(
                Kind::Failed,
                format!(
                    "{why}, but the initramfs {cmd} built could not find the header at the device's tail: {}. Nothing \
                     was moved.",
                    problems.join("; ")
                ),
            ));
        }
    }
    Ok(written)
}

/// What `run` did.
pub struct Decrypted {
    /// How long NAME was suspended for the first move (None: a run before made it).
    pub first_move: Option<std::time::Duration>,
    /// How long the data phase took, and whether it ran to its end (else it was stopped).
    pub data: std::time::Duration,
    pub finished: bool,
    /// How long the LVs were suspended for the switch back (None: a run before made it).
    pub switch_back: Option<std::time::Duration>,
    /// What the end left for the admin to do (the boot configuration).
    pub warnings: Vec<String>,
}

/// DECRYPT.md's steps 5 to 7: the first move (`first_steps`), the data phase (the kernel
/// mover with its legs the other way, mover/) up to the moved segment, the switch back
/// (switch_back.rs), then the end (`finish`). A run again goes on from the header at the
/// tail, at any of them.
pub fn run(t: &Target, key: Option<&Passphrase>, opts: &Options, run: &mut crate::running::Run) -> Result<Decrypted, Written> {
    if t.under_way.as_ref().is_some_and(|h| finished_by_stock(&h.meta)) {
        let warnings = finish(t, Path::new(boot::ROOT))?;
        return Ok(Decrypted { first_move: None, data: Default::default(), finished: true, switch_back: None, warnings });
    }
    let hot = t.under_way.as_ref().is_some_and(|h| is_hot(&h.meta));
    let (mut first_move, mut data, mut finished) = (None, std::time::Duration::ZERO, true);
    if !hot {
        let key = key.ok_or_else(|| Error::new(Kind::Failed, "No passphrase to unlock the device with"))?;
        let volume_key = match &t.under_way {
            None => {
                // The passphrase must open the device before anything is written.
                let volume_key = crate::luks::volume_key(&mut *crate::luks::open(&t.path)?, None, key)?;
                first_move = Some(first_steps(t, key, &volume_key, None)?);
                volume_key
            }
            Some(h) => {
                boot::headers::attach(&t.path, t.tail)?;
                let size =
                    h.meta.header_size().ok_or_else(|| Error::new(Kind::Failed, "The LUKS2 header has no keyslots size"))?;
                let volume_key = crate::luks::decryption_volume_key(&read_tail(t, size)?[..size.0 as usize], key)?;
                // T0 at the tail, the head overwritten by a run that died before T1: the
                // first move again, from T0.
                if !h.meta.in_reencryption() {
                    first_move = Some(first_steps(t, key, &volume_key, Some(h.clone()))?);
                }
                volume_key
            }
        };
        let dm = Dm::open()?;
        let mut mover = crate::mover::Mover::new(&dm, &t.name, &t.path, t.dev, &t.uuid, &volume_key, t.tail.0)?;
        crate::sys::protect_from_oom_killer();
        let _locked = crate::switch::MemoryLock::take()?;
        let mut shown = crate::progress::Progress::new(&t.path.display().to_string(), "Decrypted", opts.interval, opts.quiet);
        let mut before = 0;
        finished = mover.run(&mut |done, total| {
            shown.update(done, total);
            run.progress(done, total);
            crate::fault::data_marks(before, done, total);
            before = done;
            !crate::abort::STOP.load(std::sync::atomic::Ordering::Relaxed)
        })?;
        data = shown.finish();
    }
    if !finished {
        return Ok(Decrypted { first_move, data, finished, switch_back: None, warnings: Vec::new() });
    }
    let switch_back = if on_name(t)? { Some(switch_back(t)?) } else { None };
    let warnings = finish(t, Path::new(boot::ROOT))?;
    Ok(Decrypted { first_move, data, finished, switch_back, warnings })
}

/// Whether any device still maps NAME (the LVs, before the switch back).
fn on_name(t: &Target) -> Result<bool> {
    let dm = Dm::open()?;
    Ok(dm.exists(&t.name) && !dm.holders(dm.device_of(&t.name)?)?.is_empty())
}

/// DECRYPT.md's step 7: the LVs move from NAME to the raw device under one suspension
/// (switch_back.rs), with the VG locked: no LV can appear or change meanwhile.
fn switch_back(t: &Target) -> Result<std::time::Duration, Written> {
    let dm = Dm::open()?;
    let sb = switch_back::SwitchBack { dm: &dm, name: &t.name, disk: &t.path, raw: t.dev, tail: t.tail };
    let _vg = lvm::VgLock::take(&lvm::locking_dir(), &t.vg)?;
    // From the read of the header the hot one is made from to its write: no stock
    // cryptsetup writes it meanwhile.
    let _metadata = crate::header::CryptsetupLock::metadata(t.dev)?;
    let mut staged = sb.stage()?;
    crate::sys::malloc_trim();
    let _locked = crate::switch::MemoryLock::take()?;
    sb.run(&mut staged)
}

/// The end, once the LVs run on the raw device: LVM's devices file lists it again, the
/// header at the tail is wiped (keyslots and all), NAME and the tail's loop device go, and
/// the boot configuration is put back (the headers list's line, crypttab's entry, the
/// initramfs rebuilt). Each step is skipped when done, so a run again repeats it safely.
/// The disk is plain from the wipe on: what fails after it is said, for the admin to do.
fn finish(t: &Target, root: &Path) -> Result<Vec<String>, Written> {
    let mut warnings = Vec::new();
    let raw = t.path.to_string_lossy();
    let mapping = format!("/dev/mapper/{}", t.name);
    if let Err(e) = lvm::devices_file_replace(&raw, &mapping) {
        warnings.push(format!(
            "updating {}: {e}; run lvmdevices --adddev {raw}, then lvmdevices --deldev {mapping}.",
            lvm::devices_file().display()
        ));
    }
    {
        let _lock = crate::header::CryptsetupLock::metadata(t.dev)?;
        direct::zero(&t.path, &[(t.tail, t.size - t.tail)]).or_fail(|| format!("Cannot wipe the header at the tail of {raw}"))?;
    }
    crate::fault::point("back-wiped");
    let dm = Dm::open()?;
    if dm.exists(&t.name) {
        crate::mover::remove_patiently(&dm, &t.name);
    }
    if let Some(lo) = boot::headers::attached(&t.path, t.tail) {
        if let Err(e) = crate::sys::loop_detach(&lo) {
            warnings.push(format!("Cannot detach {} (the header's place): {e}; losetup -d {0}.", lo.display()));
        }
    }
    let mut warn = |r: Result<()>| {
        if let Err(e) = r {
            warnings.push(e.msg);
        }
    };
    // LVM learns that the PV lives on the raw device again; its metadata is backed up.
    lvm::see_device(&raw);
    warn(lvm::pvscan_cache().or_fail(|| "pvscan --cache".into()));
    warn(lvm::vgcfgbackup(&t.vg, None).or_fail(|| format!("vgcfgbackup {}", t.vg)));
    warn(boot::headers::remove(root, t.name.as_str()));
    warn(boot::crypttab::remove_entry(&root.join(boot::CRYPTTAB.trim_start_matches('/')), t.name.as_str()).map(|_| ()));
    if let Some((why, tool)) = &t.boot {
        warn(boot::initramfs::rebuild(root, *tool).map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("{why}, but rebuilding the initramfs failed: {e}; run {} before rebooting.", tool.rebuild().join(" ")),
            )
        }));
    }
    crate::sys::sync();
    Ok(warnings)
}

/// DECRYPT.md's step 5: T0 and the boot configuration (`tail_and_boot`), the tail attached
/// as the boot attaches it, libcryptsetup's decryption init (the first segment copied to the
/// head, over the head's header), then the first move under one suspension of NAME
/// (first_move.rs). Returns how long NAME was suspended.
fn first_steps(
    t: &Target,
    key: &Passphrase,
    volume_key: &[u8],
    t0: Option<crate::header::Header>,
) -> Result<std::time::Duration, Written> {
    let t0 = match t0 {
        Some(h) => h,
        None => tail_and_boot(t, Path::new(boot::ROOT))?,
    };
    boot::headers::attach(&t.path, t.tail)?;
    // udev's by-uuid link on the tail before the head's header goes.
    crate::dm::udev_catch_up(&[]);
    let dm = Dm::open()?;
    // libcryptsetup opens its data device exclusively, which NAME's claim on the disk refuses.
    let alias = DmName::new(format!("{}-pvencrypt-alias", t.name))?;
    let alias_uuid = format!("CRYPT-SUBDEV-pvencrypt-{}", t.uuid.replace('-', ""));
    let alias_dev = dm.create_alias(&alias, &alias_uuid, t.dev, t.size.sectors())?;
    let moved = (|| -> Result<std::time::Duration, Written> {
        // Its declared size: libcryptsetup refuses a header file smaller, and the reencrypt
        // keyslot it adds may take an area up to its end.
        let extent = t0.meta.header_size().ok_or_else(|| Error::new(Kind::Failed, "The LUKS2 header has no keyslots size"))?;
        let bytes = read_tail(t, extent)?;
        let alias_path = PathBuf::from(format!("/dev/dm-{}", alias_dev.minor));
        let t1 = crate::luks::init_decryption(&bytes[..extent.0 as usize], &alias_path, key, t.data_offset.sectors(), t.span)?;
        crate::fault::point("decrypt-head");
        // From here on a stock `cryptsetup reencrypt` would take this decryption for its own.
        let _reencryption = crate::header::CryptsetupLock::reencryption(&t.uuid)?;
        let t1 = crate::luks::metadata(&mut *crate::luks::open(&t1.path())?)?;
        let commit = crate::header::decrypted_to(&t1, t.data_offset)?;
        let desc = commit
            .key_description(&t.uuid)
            .ok_or_else(|| Error::new(Kind::Failed, "The decryption's LUKS2 header names no key for its encrypted data"))?;
        let serial =
            crate::sys::add_logon_key(&desc, volume_key).or_fail(|| "Cannot put the volume key in the kernel keyring".into())?;
        let fm =
            first_move::FirstMove { dm: &dm, name: &t.name, alias: &alias, disk: &t.path, tail: t.tail, shift: t.data_offset };
        let moved = fm.stage(t0, &commit, &format!(":{}:logon:{desc}", volume_key.len())).map_err(Written::from).and_then(
            |mut staged| {
                let _locked = crate::switch::MemoryLock::take()?;
                let _metadata = crate::header::CryptsetupLock::metadata(t.dev)?;
                fm.run(&mut staged)
            },
        );
        // The table holds its own copy; no later table may name the key.
        crate::sys::revoke_key(serial);
        moved
    })();
    dm.remove(&alias);
    moved
}

/// The header's `len` bytes at the tail, from the disk itself: the loop device's cache may
/// predate the last write.
fn read_tail(t: &Target, len: Bytes) -> Result<crate::direct::Aligned> {
    let mut bytes = crate::direct::Aligned::new(len.0 as usize);
    let f = crate::direct::open(&t.path).or_fail(|| format!("Cannot open {}", t.path.display()))?;
    f.read_exact_at(&mut bytes[..len.0 as usize], t.tail.0).or_fail(|| format!("Cannot read {}", t.path.display()))?;
    Ok(bytes)
}

/// The dm name, uuid and (single) lower device of a dm-crypt LUKS2 mapping; None for any
/// other device.
fn crypt_mapping(dev: Device) -> Option<(String, String, Option<Device>)> {
    let sys = format!("/sys/dev/block/{dev}");
    let uuid = fs::read_to_string(format!("{sys}/dm/uuid")).ok()?.trim().to_string();
    if !uuid.starts_with("CRYPT-LUKS2-") {
        return None;
    }
    let name = fs::read_to_string(format!("{sys}/dm/name")).ok()?.trim().to_string();
    let lower: Vec<Device> = fs::read_dir(format!("{sys}/slaves"))
        .ok()?
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("dev")).ok())
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    Some((name, uuid, (lower.len() == 1).then(|| lower[0])))
}

/// The device's node as the kernel names it (/dev/sda5), else its /dev/block link.
fn node_of(dev: Device) -> PathBuf {
    let uevent = fs::read_to_string(format!("/sys/dev/block/{dev}/uevent")).unwrap_or_default();
    match uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")) {
        Some(name) if Path::new("/dev").join(name).exists() => Path::new("/dev").join(name),
        _ => PathBuf::from(format!("/dev/block/{dev}")),
    }
}

/// A LUKS1 header at the start of `path` (libcryptsetup's LUKS2 load just fails on it).
fn luks1(path: &Path) -> bool {
    let mut b = [0u8; 8];
    fs::File::open(path).and_then(|f| f.read_exact_at(&mut b, 0)).is_ok()
        && b[..6] == *crate::header::MAGIC_1ST
        && b[6..8] == [0, 1]
}

/// When the system boots from the VG, the initramfs must attach the header at the tail
/// before it opens NAME: initramfs-tools with pvencrypt's hook, or dracut with its module in
/// a systemd initramfs. mkinitcpio is not checked against its sources yet.
fn boot_stack(opts: &Options, path: &Path, name: &DmName, vg_uuid: &str) -> Result<Option<(String, boot::Tool)>> {
    let Some(why) = boot::boot_needs(&lvm::active_lvs(Some(vg_uuid))) else { return Ok(None) };
    let root = Path::new(boot::ROOT);
    let missing = match boot::initramfs::detect(root) {
        Ok(boot::Tool::InitramfsTools) if root.join("usr/share/initramfs-tools/hooks/pvencrypt").is_file() => {
            return Ok(Some((why, boot::Tool::InitramfsTools)))
        }
        Ok(boot::Tool::Dracut) if root.join("usr/lib/dracut/modules.d/91pvencrypt").is_dir() => {
            return Ok(Some((why, boot::Tool::Dracut)))
        }
        Ok(boot::Tool::InitramfsTools | boot::Tool::Dracut) => {
            "pvencrypt's initramfs hook is not installed (install pvencrypt's package)".to_string()
        }
        Ok(boot::Tool::Mkinitcpio(_)) => "--decrypt does not support mkinitcpio yet".to_string(),
        Err(e) => e,
    };
    if opts.no_initramfs {
        crate::output::error(&format!(
            "WARNING: {}: {why}, but {missing}. With --no-initramfs, an initramfs that opens {name} with its header at the \
             device's tail is yours to build before rebooting.",
            path.display()
        ));
        return Ok(None);
    }
    refuse(format!(
        "{}: {why}, so the next boot must open {name} during the decryption, but {missing}. Nothing was changed.",
        path.display()
    ))
}

/// The plan `--test` prints.
pub fn describe(t: &Target) -> String {
    let mib = |b: Bytes| b.0 >> 20;
    if t.under_way.as_ref().is_some_and(|h| finished_by_stock(&h.meta)) {
        return format!(
            "{}: cryptsetup finished its decryption; it holds the plain PV of volume group {}. The header it left at the \
             device's tail is wiped, and the boot configuration put back (/etc/crypttab, /etc/pvencrypt/headers{}).",
            t.path.display(),
            t.vg,
            if t.boot.is_some() { ", the initramfs" } else { "" }
        );
    }
    let mut out = String::new();
    if let Some(h) = &t.under_way {
        let from = if h.meta.in_reencryption() { "from where it stopped" } else { "from its first move" };
        out += &format!(
            "{}: a decryption by pvencrypt is under way (its LUKS2 header at the device's tail); it goes on {from}.\n",
            t.path.display()
        );
    }
    out += &format!(
        "{path}: LUKS2 device opened as /dev/mapper/{name}, PV of volume group {vg}, {size} MiB. It becomes the plain PV \
         again, in place.\n  \
         the LUKS2 header moves to the device's last {h} MiB (from {tail} MiB) for the run; the data moves down \
         {d} MiB, onto the PV's first {span} MiB.\n  \
         suspended for the first move and the switch back: {lvs}.",
        path = t.path.display(),
        name = t.name,
        vg = t.vg,
        size = mib(t.size),
        h = mib(t.size - t.tail),
        tail = mib(t.tail),
        d = mib(t.data_offset),
        span = mib(t.span),
        lvs = if t.lvs.is_empty() { "none (no LV is active)".to_string() } else { t.lvs.join(", ") },
    );
    match (&t.crypttab, &t.source) {
        (Some(line), Some(source)) => {
            out += &format!(
                "\n  /etc/crypttab's \"{line}\" names the disk as {source}, its header as /dev/disk/by-uuid/{uuid} \
                 (the tail, attached at boot by pvencrypt-headers) for the run; removed at the end.",
                uuid = t.uuid
            )
        }
        _ => out += &format!("\n  /etc/crypttab has no entry for {}: nothing there to change.", t.name),
    }
    if let Some((why, tool)) = &t.boot {
        out += &format!(
            "\n  the initramfs is rebuilt with {} and checked before the first move and after the end ({why}).",
            tool.rebuild().join(" ")
        );
    }
    out += &format!(
        "\n  at the end: the header and its keyslots wiped; the PV may grow by {} MiB (pvresize {}).",
        mib(t.size - t.span),
        t.path.display()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_stock_leaves_at_the_end_is_told_from_our_states() {
        let m = |v: serde_json::Value| crate::metadata::Metadata::from_value(v).unwrap();
        let seg = |kind: &str| serde_json::json!({"type": kind, "offset": "0", "size": "1048576"});
        let left = m(serde_json::json!({"segments": {"0": seg("linear")}}));
        assert!(finished_by_stock(&left));
        assert!(!finished_by_stock(&m(serde_json::json!({"segments": {"0": seg("crypt")}}))), "T0");
        assert!(!finished_by_stock(&m(serde_json::json!({"segments": {}}))));
        let running = serde_json::json!({"segments": {"0": seg("linear")},
            "config": {"requirements": {"mandatory": ["online-reencrypt-v3"]}}});
        assert!(!finished_by_stock(&m(running)), "a reencryption");
    }

    #[test]
    fn only_a_luks1_header_is_luks1() {
        let Some(lo) = crate::testing::Loop::new(b"LUKS\xba\xbe\x00\x01", 1 << 20) else { return };
        assert!(luks1(&lo.dev));
        let Some(two) = crate::testing::Loop::new(b"LUKS\xba\xbe\x00\x02", 1 << 20) else { return };
        assert!(!luks1(&two.dev));
        assert!(!luks1(Path::new("/nonexistent")));
    }

    #[test]
    fn the_plan_says_where_the_header_goes_and_what_the_pv_may_gain() {
        let t = Target {
            path: "/dev/vda".into(),
            dev: Device { major: 252, minor: 0 },
            size: Bytes(1024 << 20),
            name: DmName::new("vda_crypt").unwrap(),
            uuid: "u-1".into(),
            data_offset: Bytes(16 << 20),
            span: Bytes(992 << 20),
            tail: Bytes(1008 << 20),
            vg: lvm::VgName("vg".into()),
            lvs: vec!["vg-root".into()],
            source: Some("/dev/disk/by-path/pci-0000:00:05.0".into()),
            crypttab: Some("vda_crypt UUID=u-1 none luks,discard".into()),
            boot: None,
            under_way: None,
        };
        let plan = describe(&t);
        assert!(plan.contains("last 16 MiB (from 1008 MiB)"), "{plan}");
        assert!(
            plan.contains("names the disk as /dev/disk/by-path/pci-0000:00:05.0, its header as /dev/disk/by-uuid/u-1"),
            "{plan}"
        );
        assert!(plan.contains("may grow by 32 MiB (pvresize /dev/vda)"), "{plan}");
    }
}
