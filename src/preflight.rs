//! Step 1 of the conversion: what the device is and whether it can be converted, read
//! without changing anything; the plan `--test` prints; and the same facts read again
//! under the VG lock right before the switch. A refusal leaves the disk untouched.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use devicemapper::Device;
use libcryptsetup_rs::{
    consts::{flags::CryptPbkdf, vals::CryptKdf},
    CryptPbkdfType, CryptSettingsHandle,
};

use crate::{
    boot,
    cli::Pbkdf,
    dm::{block_device, Dm, DmName},
    error::{refuse, Context, Error, Kind, Result},
    inspect::{inspect, State},
    luks::{self, Format},
    lvm,
    options::Options,
    output, plan,
    units::Sectors,
};

/// What preflight found: everything the later steps need, nothing changed yet.
pub struct Target {
    pub path: PathBuf,
    pub dev: Device,
    pub size: Sectors,
    pub name: DmName,
    /// `None` for an orphan PV (pvcreate done, no VG yet).
    pub vg: Option<lvm::Vg>,
    pub pv: lvm::Pv,
    pub room: plan::Room,
    /// What --make-room has to do first, when the PV reaches into the room LUKS2 needs.
    pub make_room: Option<plan::MakeRoom>,
    pub lvs: Vec<String>,
    /// The encryption sector size: --sector-size, else the device's logical block size.
    pub sector_size: u32,
}

pub fn default_name(path: &Path) -> String {
    format!("{}_crypt", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// Step 1. Read-only.
pub fn preflight(opts: &Options, path: &Path) -> Result<Target> {
    let (dev, size) = block_device(path)?;
    let lbs = crate::sys::logical_block_size(path).context(Kind::Refused, || format!("Cannot use {}", path.display()))?;
    let sector = sector_size(opts, path, lbs)?;
    match inspect(path) {
        State::Other => {}
        State::Foreign => return refuse(format!("{} is already a LUKS device.", path.display())),
        State::TornSwitch(_) | State::TornHeader => {
            return refuse(format!(
                "{} holds a conversion a crash cut inside its switch; run pvencrypt with no PV to repair it.",
                path.display()
            ))
        }
        _ => {
            return refuse(format!(
                "{} is already LUKS, in an unfinished conversion of pvencrypt; run pvencrypt {} (without --test) \
                 to resume it.",
                path.display(),
                path.display()
            ))
        }
    }
    let dm = Dm::open()?;
    // Room for the suffixes of our own devices ("-pvencrypt-alias", libcryptsetup's
    // "-hotzone-backward").
    let name = opts.name.clone().unwrap_or_else(|| default_name(path));
    let name = match DmName::new(name.as_str()) {
        Ok(n) if name.len() <= 110 => n,
        _ => return refuse(format!("Invalid device name {name:?}: up to 110 characters, no '/'.")),
    };
    if dm.exists(&name) || Path::new("/dev/mapper").join(name.as_str()).exists() {
        return refuse(format!("A device named {name} already exists."));
    }

    let pv = lvm::pv(path)
        .context(Kind::Refused, || format!("Cannot read {} as an LVM physical volume", path.display()))?
        .ok_or_else(|| Error::new(Kind::Refused, format!("{} is not an LVM physical volume.", path.display())))?;
    let Some(vg_name) = pv.vg_name.clone() else {
        return orphan(opts, path, dev, size, sector, name, pv, &dm);
    };
    crate::fault::trace("preflight: pv");
    let vg = usable_vg(&vg_name)?;
    // The size LVM recorded lives in the VG metadata (pvresize changes it there only);
    // the device may be larger.
    let recorded = lvm::metadata_pv_size(&vg_name, &pv.pv_uuid).or_fail(|| format!("Cannot read the metadata of {vg_name}"))?;
    crate::fault::trace("preflight: metadata");
    let shape = plan::PvShape {
        dev_size: size,
        pe_start: pv.pe_start,
        pe_count: pv.pv_pe_count,
        extent_size: vg.vg_extent_size,
        pv_size: recorded,
    };
    let room = plan::room(&shape, opts.reduce_device_size, sector)?;
    let make_room = if !room.short() {
        None
    } else if opts.make_room || may_ask(opts) {
        let segs =
            lvm::pv_segments(&path.to_string_lossy()).or_fail(|| format!("Cannot list the extents of {}", path.display()))?;
        let segs: Vec<plan::Segment> = segs.iter().map(|s| (s.pvseg_start, s.pvseg_size, s.lv_name.is_some())).collect();
        Some(plan::make_room(&room, &shape, &segs, &vg_name)?)
    } else {
        return refuse(room.shortage(&shape));
    };

    // Only this VG's LVs may sit on the device: anything else would keep reading raw
    // offsets after the data moved.
    let vg_prefix = lvm::lv_uuid_prefix(&vg.vg_uuid);
    let holders = dm.holders(dev)?;
    for h in holders.iter().filter(|h| h.direct) {
        if !h.uuid.as_deref().unwrap_or("").starts_with(&vg_prefix) {
            return refuse(format!(
                "{} is in use by {} ({}), which is not a logical volume of {vg_name}.",
                path.display(),
                h.name,
                h.uuid.as_deref().unwrap_or("no uuid"),
            ));
        }
    }
    if let Some(n) = crate::dm::holders_of(dev).into_iter().find(|n| !n.starts_with("dm-")) {
        return refuse(format!("{} is held by {n}, which is not a device-mapper device.", path.display()));
    }
    check_uses(sector, lbs, &dm, &holders)?;
    crate::fault::trace("preflight: holders");
    check_filters(path, name.as_str(), &pv.pv_uuid)?;
    crate::fault::trace("preflight: filters");
    check_initramfs(opts, path, name.as_str(), &vg.vg_uuid)?;
    crate::fault::trace("preflight: initramfs");
    check_tpm2(opts, Some(&vg.vg_uuid))?;
    check_kernel(opts, path, &name, room.shift, sector, dev, &dm)?;
    crate::fault::trace("preflight: kernel");
    let lvs = holders.iter().map(|h| h.name.to_string()).collect();
    Ok(Target { path: path.into(), dev, size, name, vg: Some(vg), pv, room, make_room, lvs, sector_size: sector })
}

/// The VG as both directions need it: whole, local, not exported, no pvmove running.
pub fn usable_vg(vg_name: &lvm::VgName) -> Result<lvm::Vg> {
    let vg = lvm::vg(vg_name).context(Kind::Refused, || format!("Cannot use volume group {vg_name}"))?;
    if vg.vg_attr.partial() || vg.vg_missing_pv_count > 0 {
        return refuse(format!("Volume group {vg_name} has missing PVs; repair it first."));
    }
    if vg.vg_attr.clustered() || vg.vg_attr.shared() || vg.vg_lock_type.as_deref().is_some_and(|t| !t.is_empty() && t != "none") {
        return refuse(format!("Volume group {vg_name} is shared or clustered; pvencrypt handles local VGs only."));
    }
    if vg.vg_attr.exported() {
        return refuse(format!("Volume group {vg_name} is exported."));
    }
    crate::fault::trace("preflight: vg");
    let segs = lvm::lvs(vg_name).or_fail(|| format!("Cannot list the LVs of {vg_name}"))?;
    crate::fault::trace("preflight: lvs");
    // Name the move's own LV (pvmove0), the one lvs -a shows, rather than an LV it locks.
    if let Some(s) = segs.iter().find(|s| s.is_pvmove()).or_else(|| segs.iter().find(|s| s.is_locked())) {
        return refuse(format!("A pvmove ({}) is in progress in {vg_name}; let it finish or abort it first.", s.lv_name.name));
    }
    Ok(vg)
}

/// A PV in no VG yet (the scripted `pvcreate; pvencrypt; vgextend`): nothing may use it,
/// and it only shrinks to leave LUKS2 its room, with nothing to move (pvresize).
#[allow(clippy::too_many_arguments)]
fn orphan(
    opts: &Options,
    path: &Path,
    dev: Device,
    size: Sectors,
    sector: u32,
    name: DmName,
    pv: lvm::Pv,
    dm: &Dm,
) -> Result<Target> {
    if let Some(h) = dm.holders(dev)?.first() {
        return refuse(format!("{} is in no volume group, yet {} uses it.", path.display(), h.name));
    }
    if !crate::dm::holders_of(dev).is_empty() {
        return refuse(format!("{} is in no volume group, yet something holds it open.", path.display()));
    }
    check_filters(path, name.as_str(), &pv.pv_uuid)?;
    let shape = plan::PvShape {
        dev_size: size,
        pe_start: pv.pe_start,
        pe_count: lvm::Extents(0),
        extent_size: Sectors(0),
        pv_size: pv.pv_size,
    };
    let room = plan::room(&shape, opts.reduce_device_size, sector)?;
    if room.limit <= pv.pe_start {
        return refuse(room.shortage(&shape));
    }
    let make_room = room.short().then(|| plan::MakeRoom { keep: lvm::Extents(0), ranges: vec![], size: room.limit });
    check_tpm2(opts, None)?;
    check_kernel(opts, path, &name, room.shift, sector, dev, dm)?;
    Ok(Target { path: path.into(), dev, size, name, vg: None, pv, room, make_room, lvs: vec![], sector_size: sector })
}

/// The kernel can run what the conversion needs, before anything changes.
fn check_kernel(opts: &Options, path: &Path, name: &DmName, shift: Sectors, sector: u32, dev: Device, dm: &Dm) -> Result<()> {
    // A throw-away mapping (never resumed, no I/O): the kernel must be able to run the
    // cipher. This also loads dm-crypt's modules now: inside the freeze their autoloading
    // would run modprobe from a disk that may be frozen.
    let fmt = format_of(opts, shift, sector)?;
    dm.probe_crypt(&DmName::new(format!("{name}-pvencrypt-probe"))?, &opts.cipher, fmt.key_bytes, sector, dev).map_err(|e| {
        Error::new(
            Kind::Refused,
            format!("{e}. Is dm-crypt available (modprobe dm-crypt), and does the kernel know this cipher?"),
        )
    })?;
    // The data mover's modules too (dm-mirror, dm-log, dm-region-hash), before any suspension.
    if let Err(why) = crate::mover::usable(dm) {
        crate::output::error(&format!(
            "WARNING: {}: the kernel cannot move the data ({why}); libcryptsetup will, step by step.",
            path.display()
        ));
    }
    Ok(())
}

/// After the switch LVM must find the PV on /dev/mapper/NAME; a device filter that
/// rejects it would lose the VG at the next boot. The names are those udev and the
/// kernel will give the device (its dm minor is not known yet: dm-0 stands for it).
fn check_filters(path: &Path, name: &str, pv_uuid: &str) -> Result<()> {
    let names = [
        format!("/dev/mapper/{name}"),
        format!("/dev/disk/by-id/dm-name-{name}"),
        format!("/dev/disk/by-id/dm-uuid-CRYPT-LUKS2-{}-{name}", "0".repeat(32)),
        format!("/dev/disk/by-id/lvm-pv-uuid-{pv_uuid}"),
        "/dev/dm-0".into(),
        "/dev/block/253:0".into(),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let filters = lvm::device_filters().or_fail(|| "Cannot read LVM's device filters".into())?;
    for (setting, patterns) in &filters {
        match lvm::filter_accepts(patterns, &names) {
            Ok(true) => {}
            Ok(false) => {
                return refuse(format!(
                    "LVM's devices/{setting} rejects /dev/mapper/{name}: after the conversion LVM would not find \
                     the PV of {}. Add \"a|^/dev/mapper/{name}$|\" before the first \"r\" pattern of {setting} \
                     in /etc/lvm/lvm.conf, and run pvencrypt again.",
                    path.display()
                ))
            }
            Err(e) => output::error(&format!(
                "WARNING: {}: cannot check devices/{setting} ({e}); make sure it accepts /dev/mapper/{name}.",
                path.display()
            )),
        }
    }
    Ok(())
}

/// When the system boots from the VG, the next boot can come only through an initramfs
/// that opens NAME: refused without one. `--no-initramfs` means the admin builds it
/// (another tool, another machine): then a warning only.
fn check_initramfs(opts: &Options, path: &Path, name: &str, vg_uuid: &str) -> Result<()> {
    let Some(why) = boot::boot_needs(&lvm::active_lvs(Some(vg_uuid))) else { return Ok(()) };
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match boot::initramfs::can_open(Path::new(boot::ROOT), &cmdline) {
        Ok(_) => Ok(()),
        Err(missing) if opts.no_initramfs => {
            output::error(&format!(
                "WARNING: {}: {why}, but {missing}. With --no-initramfs, an initramfs that opens {name} is yours to \
                 build before rebooting.",
                path.display()
            ));
            Ok(())
        }
        Err(missing) => refuse(boot::initramfs::refusal(&why, name, &missing)),
    }
}

/// `--tpm2-device`: the TPM2, systemd-cryptenroll, and what unlocks with it at boot.
fn check_tpm2(opts: &Options, vg_uuid: Option<&str>) -> Result<()> {
    let Some((device, _)) = &opts.tpm2 else { return Ok(()) };
    let root = Path::new(boot::ROOT);
    // check_initramfs refused a system that boots from the VG without a tool.
    let initramfs = boot::boot_needs(&lvm::active_lvs(vg_uuid)).map(|_| {
        if opts.no_initramfs {
            None
        } else {
            boot::initramfs::detect(root).ok()
        }
    });
    boot::tpm2::check(root, device, initramfs, crate::service::systemd_booted())
        .or_else(|e| refuse(format!("{e}. Nothing was changed.")))
}

/// On a terminal without --yes, a missing room is planned as with --make-room and the
/// confirmation asks for it (main.rs).
fn may_ask(opts: &Options) -> bool {
    !opts.yes && std::io::IsTerminal::is_terminal(&std::io::stdin())
}

/// The new header's format as preflight will plan it for `path`, from the options and
/// the device alone (no LVM report): what `convert::format_ahead` needs to start early.
pub fn format_for(opts: &Options, path: &Path) -> Result<Format> {
    let lbs = crate::sys::logical_block_size(path).context(Kind::Refused, || format!("Cannot use {}", path.display()))?;
    // plan::room's shift; an invalid size is refused there.
    format_of(opts, Sectors(opts.reduce_device_size / 2 / Sectors::SIZE), sector_size(opts, path, lbs)?)
}

/// The encryption sector size: --sector-size, which dm-crypt refuses below the device's
/// logical block size (a 4Kn disk: 4096), else that block size (cryptsetup luksFormat
/// picks it too), at least 512.
fn sector_size(opts: &Options, path: &Path, lbs: u32) -> Result<u32> {
    match opts.sector_size {
        Some(s) if s < lbs => refuse(format!(
            "--sector-size {s} is smaller than the {lbs}-byte logical blocks of {}: dm-crypt cannot encrypt in \
             units smaller than the device's. Use --sector-size {lbs}, or leave it out.",
            path.display()
        )),
        Some(s) => Ok(s),
        None => Ok(lbs.max(512)),
    }
}

/// What the LVs are used for must survive the conversion: /boot must stay readable by
/// the boot loader, and a larger encryption sector must not break a filesystem that
/// writes smaller blocks (the LVs inherit the crypt device's logical block size).
/// `lbs`: the PV's logical block size.
fn check_uses(sector: u32, lbs: u32, dm: &Dm, holders: &[crate::dm::Holder]) -> Result<()> {
    let mounts = boot::mounts();
    // /boot as a mount of its own, or as a plain directory of a filesystem on the VG.
    let boot_dev = fs::metadata("/boot").ok().map(|m| Device { major: libc::major(m.dev()), minor: libc::minor(m.dev()) });
    for h in holders {
        let dev = dm.device_of(&h.name)?;
        let mounted: Vec<&boot::Mount> = mounts.iter().filter(|m| m.dev == dev).collect();
        if boot_dev == Some(dev) {
            let on = match mounted.iter().find(|m| m.point == "/boot") {
                Some(_) => format!("{} is mounted on /boot", h.name),
                None => format!("/boot is a directory of the filesystem on {}", h.name),
            };
            // GRUB_ENABLE_CRYPTODISK reads LUKS2 with PBKDF2 keyslots only, and no boot
            // loader reads a device in the middle of its reencryption.
            return refuse(format!(
                "{on}: the boot loader could not read the kernel and initramfs from an encrypted device (GRUB \
                 cannot read LUKS2 in reencryption at all). Move /boot to a partition of its own first."
            ));
        }
        if sector <= lbs {
            continue;
        }
        for m in &mounted {
            let bsize = crate::sys::statvfs_bsize(&m.point);
            if !m.fstype.starts_with("ext") || bsize.is_none_or(|b| b < sector as u64) {
                return refuse(format!(
                    "--sector-size {} is larger than what {} ({} on {}, blocks of {} bytes) may write; \
                     use --sector-size {lbs}.",
                    sector,
                    h.name,
                    m.fstype,
                    m.point,
                    bsize.map_or("unknown".into(), |b| b.to_string())
                ));
            }
        }
        let stacked = !crate::dm::holders_of(dev).is_empty();
        if mounted.is_empty() && !stacked && dm.open_count(&h.name)? > 0 {
            return refuse(format!(
                "--sector-size {} is larger than the {lbs}-byte blocks {} is used with now, by a user pvencrypt \
                 cannot check (swap, a process, a virtual machine); use --sector-size {lbs}.",
                sector, h.name
            ));
        }
    }
    Ok(())
}

fn pbkdf(opts: &Options) -> Result<CryptPbkdfType> {
    let kdf = match opts.pbkdf {
        Some(Pbkdf::Pbkdf2) => CryptKdf::Pbkdf2,
        Some(Pbkdf::Argon2i) => CryptKdf::Argon2I,
        Some(Pbkdf::Argon2id) | None => CryptKdf::Argon2Id,
    };
    let mut p = CryptSettingsHandle::get_pbkdf_type_params(&kdf).or_fail(|| "Cannot read the PBKDF defaults".into())?;
    if let Some(m) = opts.pbkdf_memory {
        p.max_memory_kb = m;
    }
    if let Some(t) = opts.pbkdf_parallel {
        p.parallel_threads = t;
    }
    if let Some(t) = opts.iter_time {
        p.time_ms = t;
    }
    if let Some(i) = opts.pbkdf_force_iterations {
        p.iterations = i;
        p.flags |= CryptPbkdf::NO_BENCHMARK;
    }
    Ok(p)
}

pub fn format_of(opts: &Options, shift: Sectors, sector_size: u32) -> Result<Format> {
    let (cipher, cipher_mode) = luks::split_cipher(&opts.cipher)?;
    if opts.key_size == 0 || !opts.key_size.is_multiple_of(8) {
        return refuse(format!("--key-size must be a multiple of 8 bits (got {}).", opts.key_size));
    }
    Ok(Format {
        cipher,
        cipher_mode,
        key_bytes: opts.key_size as usize / 8,
        sector_size,
        label: opts.label.clone(),
        uuid: match &opts.uuid {
            None => uuid::Uuid::new_v4(),
            Some(u) => uuid::Uuid::parse_str(u).map_err(|e| Error::new(Kind::Refused, format!("--uuid {u:?}: {e}.")))?,
        },
        shift,
        pbkdf: pbkdf(opts)?,
        tpm2: opts.tpm2.clone(),
    })
}

/// The plan, as `--test` prints it (and the conversion announces it).
pub fn describe(opts: &Options, t: &Target) -> String {
    let mib = Sectors::mib;
    let mut out = format!(
        "{path}: {vg}, {size} MiB. It becomes a LUKS2 device opened as /dev/mapper/{name}.\n  \
         header and data shift: {h} MiB each; the PV ends at {end} MiB, the room needed starts at {limit} MiB.\n  \
         encryption: {cipher}, {bits}-bit key, {sector}-byte sectors{why}.\n  \
         suspended for the switch: {lvs}.",
        path = t.path.display(),
        vg = t.vg.as_ref().map_or("PV in no volume group yet".into(), |v| format!("PV of volume group {}", v.vg_name)),
        size = mib(t.size),
        name = t.name,
        h = mib(t.room.shift),
        end = mib(t.room.pv_end),
        limit = mib(t.room.limit),
        cipher = opts.cipher,
        bits = opts.key_size,
        sector = t.sector_size,
        why = match opts.sector_size {
            Some(_) => " (--sector-size)",
            None if t.sector_size > 512 => " (the disk's logical block size)",
            None => "",
        },
        lvs = if t.lvs.is_empty() { "none (no LV is active)".to_string() } else { t.lvs.join(", ") },
    );
    if let Some(m) = t.make_room.as_ref().filter(|m| m.ranges.is_empty()) {
        out += &format!("\n  first, to make room: pvresize the PV to {} MiB (no extent is in use).", mib(m.size));
    } else if let Some(m) = &t.make_room {
        let ranges: Vec<String> = m.ranges.iter().map(|(a, b)| format!("{}-{}", a.0, b.0)).collect();
        out += &format!(
            "\n  first, to make room: pvmove extents {} (of LVs in use) to free extents below {}, then pvresize the PV to {} MiB.",
            if ranges.is_empty() { "none".to_string() } else { ranges.join(", ") },
            m.keep.0,
            mib(m.size)
        );
    }
    // As libcryptsetup writes it.
    let uuid =
        opts.uuid.as_deref().and_then(|u| uuid::Uuid::parse_str(u).ok()).map_or("<new LUKS UUID>".into(), |u| u.to_string());
    let uuid = uuid.as_str();
    if !opts.no_crypttab {
        let line = boot::Line { name: t.name.as_str(), uuid, discard: boot::supports_discard(t.dev), tpm2: opts.tpm2.is_some() };
        out += &format!("\n  {} gets: {line}", boot::CRYPTTAB);
    }
    let needs = boot::boot_needs(&lvm::active_lvs(t.vg.as_ref().map(|v| v.vg_uuid.as_str())));
    // Without a tool that can open the device, preflight refused (or --no-initramfs).
    let tool = needs.as_ref().and_then(|_| boot::initramfs::detect(Path::new(boot::ROOT)).ok());
    for line in boot::plan(t.name.as_str(), needs.as_deref(), tool, opts.no_initramfs, opts.no_crypttab, opts.tpm2.is_some()) {
        out += &format!("\n  {line}");
    }
    for a in boot::cmdline_advice(&fs::read_to_string("/proc/cmdline").unwrap_or_default(), uuid) {
        out += &format!("\n  you must change the kernel command line: {a}.");
    }
    out
}

/// Between preflight and the switch came the prompt and the PBKDF: under the VG lock,
/// the VG (its metadata sequence number: any change of a PV's size or extents, any LV
/// or pvmove bumps it: a pvmove commits its LV before it moves a byte), the PV and the
/// device must be what preflight planned with.
/// Read with `--readonly`, which grants LVM's read lock without taking it: we hold it.
/// (`--nolocking` does not work in process: LVM 2.03.16 keeps the file locking a former
/// command set up in a static, lib/locking/locking.c `_locking`, and only skips setting
/// it up again; `--readonly` resets `_file_locking_readonly` at every command.)
/// An orphan PV is checked under the orphans' lock the same way: still in no VG (the PV
/// row would show it), the same size.
pub fn unchanged_since_preflight(t: &Target) -> Result<()> {
    let dev = t.path.to_string_lossy();
    let pv = lvm::pvs_with(Some(&dev), &["--readonly"]).or_fail(|| format!("Cannot read the PV {dev}"))?;
    let (_, size) = block_device(&t.path)?;
    let (what, changed) = match &t.vg {
        Some(planned) => {
            let name = &planned.vg_name;
            let vg = lvm::vg_with(name, &["--readonly"]).or_fail(|| format!("Cannot read volume group {name}"))?;
            let changed = (vg.vg_seqno != planned.vg_seqno)
                .then(|| format!("its metadata changed (seqno {} → {})", planned.vg_seqno, vg.vg_seqno));
            (format!("volume group {name}"), changed)
        }
        None => ("the orphan PV".to_string(), None),
    };
    let changed = if let Some(c) = changed {
        c
    } else if pv.first() != Some(&t.pv) {
        "the PV changed".into()
    } else if size != t.size {
        format!("the device's size changed ({} → {size})", t.size)
    } else {
        return Ok(());
    };
    refuse(format!("{dev}: {what} changed while pvencrypt was preparing: {changed}. Nothing was changed; run pvencrypt again."))
}
