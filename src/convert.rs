//! The conversion, as named steps:
//!
//! 1. `preflight`  read-only checks; a refusal leaves the disk untouched.
//! 2. `prepare`    outside any freeze: alias device, kernel modules, header + PBKDF in memory.
//! 3. `switch`     the freeze (switch.rs): header placed, LVs moved onto NAME.
//! 4. `encrypt`    libcryptsetup's online reencryption, checkpoint by checkpoint.
//! 5. `finish`     temporary keyslot and marker removed, LVM caches refreshed, metadata backed up.
//!
//! After step 3 the device is a standard LUKS2 device in reencryption: a crash anywhere
//! later is recovered by any cryptsetup open, and `pvencrypt` resumes at step 4.

use std::{
    fs,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use devicemapper::Device;
use libcryptsetup_rs::{
    consts::{
        flags::CryptPbkdf,
        vals::{CryptKdf, CryptReencryptInfo},
    },
    CryptPbkdfType, CryptSettingsHandle,
};

use crate::{
    boot,
    cli::{Cli, Pbkdf},
    direct,
    dm::Dm,
    error::{fail, refuse, Context, Error, Kind, Result},
    inspect::{self, Found},
    key::Passphrase,
    luks::{self, Format, Marker},
    lvm, plan,
    poll::{self, Run, Status},
    progress::Progress,
    switch::{self, Switch},
};

/// Set by SIGINT/SIGTERM (and --abort): stop at the next checkpoint.
pub static STOP: AtomicBool = AtomicBool::new(false);


/// What preflight found: everything the later steps need, nothing changed yet.
pub struct Target {
    pub path: PathBuf,
    pub dev: Device,
    pub size: u64,
    pub name: String,
    pub vg: lvm::Vg,
    pub pv: lvm::Pv,
    pub room: plan::Room,
    /// What --make-room has to do first, when the PV reaches into the room LUKS2 needs.
    pub make_room: Option<plan::MakeRoom>,
    pub lvs: Vec<String>,
}

pub fn device_of(path: &Path) -> Result<(Device, u64)> {
    let md = fs::metadata(path).context(Kind::Refused, || format!("Cannot use {}", path.display()))?;
    if !md.file_type().is_block_device() {
        return refuse(format!("{} is not a block device.", path.display()));
    }
    let rdev = md.rdev();
    let dev = Device { major: libc::major(rdev), minor: libc::minor(rdev) };
    let size = fs::read_to_string(format!("/sys/dev/block/{dev}/size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::new(Kind::Refused, format!("Cannot read the size of {}.", path.display())))?;
    Ok((dev, size))
}

/// What the device holds (inspect.rs); an unreadable device is "other" here, and the
/// checks that follow say why they cannot use it.
pub fn found(path: &Path) -> Found {
    inspect::probe(path).unwrap_or(Found::Other)
}

/// A conversion a crash cut inside the switch, made whole; only in a run meant to change
/// the disk, and only while nothing holds the raw device. Returns the marker when the
/// device is now LUKS2 in our conversion, `None` when the plain PV was put back.
pub fn repair(path: &Path, found: &Found) -> Result<Option<Marker>> {
    let (dev, _) = device_of(path)?;
    let held: Vec<String> = fs::read_dir(format!("/sys/dev/block/{dev}/holders"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    if !held.is_empty() {
        return fail(format!(
            "{}: a crash cut a conversion inside its switch, and {} now hold(s) the device; not repairing it \
             under them. Deactivate them, then run pvencrypt again.",
            path.display(),
            held.join(", ")
        ));
    }
    if *found == Found::TornHeader {
        // An LVM label left beside our secondary header (as written before the label
        // went first): libcryptsetup will not restore the primary while it sees one.
        if lvm::read_label(path).is_ok_and(|l| l.is_some()) {
            direct::zero(path, &[(0, 4096)]).or_fail(|| format!("Cannot clear the stale PV label of {}", path.display()))?;
        }
    }
    // A complete secondary header: libcryptsetup restores the primary one on load.
    if let Ok(mut cd) = luks::open(path) {
        if let Some((_, m)) = luks::marker(&mut cd) {
            poll::error(&format!("{}: completed a LUKS2 header whose placement a crash interrupted.", path.display()));
            return Ok(Some(m));
        }
    }
    match found {
        Found::TornSwitch(r) => {
            inspect::restore_plain(path, r).or_fail(|| format!("Cannot put the plain PV back on {}", path.display()))?;
            poll::error(&format!(
                "{}: a crash cut the switch before the LUKS2 header was complete; the plain PV is back, as it was. \
                 Run pvencrypt {} to convert it.",
                path.display(),
                path.display()
            ));
            Ok(None)
        }
        _ => fail(format!("{}: libcryptsetup cannot restore the LUKS2 header from its secondary copy.", path.display())),
    }
}

pub fn default_name(path: &Path) -> String {
    format!("{}_crypt", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// Step 1. Read-only.
pub fn preflight(cli: &Cli, path: &Path) -> Result<Target> {
    let (dev, size) = device_of(path)?;
    match found(path) {
        Found::Other => {}
        Found::Luks => return refuse(format!("{} is already a LUKS device.", path.display())),
        Found::TornSwitch(_) | Found::TornHeader => {
            return refuse(format!(
                "{} holds a conversion a crash cut inside its switch; run pvencrypt with no PV to repair it.",
                path.display()
            ))
        }
    }
    let dm = Dm::open()?;
    let name = cli.name.clone().unwrap_or_else(|| default_name(path));
    if name.is_empty() || name.contains('/') || name.len() > 127 {
        return refuse(format!("Invalid device name {name:?}."));
    }
    if dm.exists(&name) || Path::new("/dev/mapper").join(&name).exists() {
        return refuse(format!("A device named {name} already exists."));
    }

    let pv = lvm::pv(path)
        .context(Kind::Refused, || format!("Cannot read {} as an LVM physical volume", path.display()))?
        .ok_or_else(|| Error::new(Kind::Refused, format!("{} is not an LVM physical volume.", path.display())))?;
    let Some(vg_name) = pv.vg_name.clone() else {
        return refuse(format!("{} is a PV in no volume group: there is nothing to keep online; use cryptsetup.", path.display()));
    };
    let vg = lvm::vg(&vg_name).context(Kind::Refused, || format!("Cannot use volume group {vg_name}"))?;
    if vg.vg_attr.partial() || vg.vg_missing_pv_count > 0 {
        return refuse(format!("Volume group {vg_name} has missing PVs; repair it first."));
    }
    if vg.vg_attr.clustered() || vg.vg_attr.shared() || vg.vg_lock_type.as_deref().is_some_and(|t| !t.is_empty() && t != "none") {
        return refuse(format!("Volume group {vg_name} is shared or clustered; pvencrypt handles local VGs only."));
    }
    if vg.vg_attr.exported() {
        return refuse(format!("Volume group {vg_name} is exported."));
    }
    let segs = lvm::lvs(&vg_name).or_fail(|| format!("Cannot list the LVs of {vg_name}"))?;
    // Name the move's own LV (pvmove0), the one lvs -a shows, rather than an LV it locks.
    if let Some(s) = segs.iter().find(|s| s.is_pvmove()).or_else(|| segs.iter().find(|s| s.is_locked())) {
        return refuse(format!("A pvmove ({}) is in progress in {vg_name}; let it finish or abort it first.", s.lv_name.name));
    }
    // The size LVM recorded lives in the VG metadata (pvresize changes it there only);
    // the device may be larger.
    let recorded = lvm::metadata_pv_size(&vg_name, &pv.pv_uuid).or_fail(|| format!("Cannot read the metadata of {vg_name}"))?;
    let shape = plan::PvShape {
        dev_size: size,
        pe_start: pv.pe_start.0,
        pe_count: pv.pv_pe_count.0,
        extent_size: vg.vg_extent_size.0,
        pv_size: recorded.0,
    };
    let room = plan::room(&shape, cli.reduce_device_size, cli.sector_size)?;
    let make_room = if !room.short() {
        None
    } else if cli.make_room || may_ask(cli) {
        let segs = lvm::pv_segments(&path.to_string_lossy()).or_fail(|| format!("Cannot list the extents of {}", path.display()))?;
        let segs: Vec<plan::Segment> = segs.iter().map(|s| (s.pvseg_start.0, s.pvseg_size.0, s.lv_name.is_some())).collect();
        Some(plan::make_room(&room, &shape, &segs, &vg_name)?)
    } else {
        return refuse(room.shortage(&shape));
    };

    // Only this VG's LVs may sit on the device: anything else would keep reading raw
    // offsets after the data moved.
    let vg_prefix = lv_uuid_prefix(&vg.vg_uuid);
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
    if let Ok(rd) = fs::read_dir(format!("/sys/dev/block/{dev}/holders")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if !n.starts_with("dm-") {
                return refuse(format!("{} is held by {n}, which is not a device-mapper device.", path.display()));
            }
        }
    }
    check_uses(cli, &dm, dev, &holders)?;
    check_filters(path, &name, &pv.pv_uuid)?;
    // A throw-away mapping (never resumed, no I/O): the kernel must be able to run the
    // cipher. This also loads dm-crypt's modules now: inside the freeze their autoloading
    // would run modprobe from a disk that may be frozen.
    let fmt = format_of(cli, room.shift)?;
    dm.probe_crypt(&format!("{name}-pvencrypt-probe"), &cli.cipher, fmt.key_bytes, cli.sector_size, dev).map_err(|e| {
        Error::new(Kind::Refused, format!("{e}. Is dm-crypt available (modprobe dm-crypt), and does the kernel know this cipher?"))
    })?;
    let lvs = holders.iter().map(|h| h.name.to_string()).collect();
    Ok(Target { path: path.into(), dev, size, name, vg, pv, room, make_room, lvs })
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
            Err(e) => poll::error(&format!(
                "WARNING: {}: cannot check devices/{setting} ({e}); make sure it accepts /dev/mapper/{name}.",
                path.display()
            )),
        }
    }
    Ok(())
}

/// On a terminal without --yes, a missing room is planned as with --make-room and the
/// confirmation asks for it (main.rs).
fn may_ask(cli: &Cli) -> bool {
    !cli.yes && std::io::IsTerminal::is_terminal(&std::io::stdin())
}

/// The dm uuid prefix of every LV of the VG (LVM writes the VG uuid without dashes).
fn lv_uuid_prefix(vg_uuid: &str) -> String {
    format!("LVM-{}", vg_uuid.replace('-', ""))
}

/// The active LVs of the VG, on any PV.
fn active_lvs(vg_uuid: &str) -> Vec<Device> {
    Dm::open().and_then(|dm| dm.devices_with_uuid(&lv_uuid_prefix(vg_uuid))).unwrap_or_default()
}

/// What the LVs are used for must survive the conversion: /boot must stay readable by
/// the boot loader, and a larger encryption sector must not break a filesystem that
/// writes smaller blocks (the LVs inherit the crypt device's logical block size).
fn check_uses(cli: &Cli, dm: &Dm, raw: Device, holders: &[crate::dm::Holder]) -> Result<()> {
    let mounts = boot::mounts();
    let lbs = fs::read_to_string(format!("/sys/dev/block/{raw}/queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(512);
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
        if cli.sector_size <= lbs {
            continue;
        }
        for m in &mounted {
            let bsize = statvfs_bsize(&m.point);
            if !m.fstype.starts_with("ext") || bsize.is_none_or(|b| b < cli.sector_size as u64) {
                return refuse(format!(
                    "--sector-size {} is larger than what {} ({} on {}, blocks of {} bytes) may write; \
                     use --sector-size {lbs}.",
                    cli.sector_size,
                    h.name,
                    m.fstype,
                    m.point,
                    bsize.map_or("unknown".into(), |b| b.to_string())
                ));
            }
        }
        let stacked = fs::read_dir(format!("/sys/dev/block/{dev}/holders")).is_ok_and(|mut d| d.next().is_some());
        if mounted.is_empty() && !stacked && dm.open_count(&h.name)? > 0 {
            return refuse(format!(
                "--sector-size {} is larger than the {lbs}-byte blocks {} is used with now, by a user pvencrypt \
                 cannot check (swap, a process, a virtual machine); use --sector-size {lbs}.",
                cli.sector_size, h.name
            ));
        }
    }
    Ok(())
}

fn statvfs_bsize(path: &str) -> Option<u64> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_bsize)
}

fn pbkdf(cli: &Cli) -> Result<CryptPbkdfType> {
    let kdf = match cli.pbkdf {
        Some(Pbkdf::Pbkdf2) => CryptKdf::Pbkdf2,
        Some(Pbkdf::Argon2i) => CryptKdf::Argon2I,
        Some(Pbkdf::Argon2id) | None => CryptKdf::Argon2Id,
    };
    let mut p = CryptSettingsHandle::get_pbkdf_type_params(&kdf).or_fail(|| "Cannot read the PBKDF defaults".into())?;
    if let Some(m) = cli.pbkdf_memory {
        p.max_memory_kb = m;
    }
    if let Some(t) = cli.pbkdf_parallel {
        p.parallel_threads = t;
    }
    if let Some(t) = cli.iter_time {
        p.time_ms = t;
    }
    if let Some(i) = cli.pbkdf_force_iterations {
        p.iterations = i;
        p.flags |= CryptPbkdf::NO_BENCHMARK;
    }
    Ok(p)
}

pub fn format_of(cli: &Cli, shift: u64) -> Result<Format> {
    let (cipher, cipher_mode) = luks::split_cipher(&cli.cipher)?;
    if cli.key_size == 0 || cli.key_size % 8 != 0 {
        return refuse(format!("--key-size must be a multiple of 8 bits (got {}).", cli.key_size));
    }
    Ok(Format {
        cipher,
        cipher_mode,
        key_bytes: cli.key_size as usize / 8,
        sector_size: cli.sector_size,
        label: cli.label.clone(),
        uuid: uuid::Uuid::new_v4(),
        shift,
        pbkdf: pbkdf(cli)?,
    })
}

/// The plan, as `--test` prints it (and the conversion announces it).
pub fn describe(cli: &Cli, t: &Target) -> String {
    let mib = |sectors: u64| sectors / plan::MIB;
    let mut out = format!(
        "{path}: PV of volume group {vg}, {size} MiB. It becomes a LUKS2 device opened as /dev/mapper/{name}.\n  \
         header and data shift: {h} MiB each; the PV ends at {end} MiB, the room needed starts at {limit} MiB.\n  \
         suspended for the switch: {lvs}.",
        path = t.path.display(),
        vg = t.vg.vg_name,
        size = mib(t.size),
        name = t.name,
        h = mib(t.room.shift),
        end = mib(t.room.pv_end),
        limit = mib(t.room.limit),
        lvs = if t.lvs.is_empty() { "none (no LV is active)".to_string() } else { t.lvs.join(", ") },
    );
    if let Some(m) = &t.make_room {
        let ranges: Vec<String> = m.ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        out += &format!(
            "\n  first, to make room: pvmove extents {} (of LVs in use) to free extents below {}, then pvresize the PV to {} MiB.",
            if ranges.is_empty() { "none".to_string() } else { ranges.join(", ") },
            m.keep,
            mib(m.size)
        );
    }
    if !cli.no_crypttab {
        out += &format!("\n  {} gets: {}", boot::CRYPTTAB, boot::crypttab_line(&t.name, "<new LUKS UUID>", boot::supports_discard(t.dev)).trim());
    }
    let on_vg = active_lvs(&t.vg.vg_uuid);
    if let Some(why) = boot::boot_needs(&on_vg) {
        out += &format!("\n  the initramfs {} ({why}).", if cli.no_initramfs { "is NOT rebuilt (--no-initramfs)" } else { "is rebuilt" });
    }
    for a in boot::cmdline_advice(&fs::read_to_string("/proc/cmdline").unwrap_or_default(), "<new LUKS UUID>") {
        out += &format!("\n  you must change the kernel command line: {a}.");
    }
    out
}

/// Steps 2–5 for one PV.
pub fn convert(cli: &Cli, t: &Target, key: &Passphrase, run: &mut Run) -> Result<()> {
    let fmt = format_of(cli, t.room.shift)?;
    let dm = Dm::open()?;

    // Step 2: the alias is an exclusive-openable view of the raw device for
    // libcryptsetup (the LVs' claim makes the raw device itself refuse O_EXCL).
    let alias = format!("{}-pvencrypt-alias", t.name);
    let alias_uuid = format!("CRYPT-SUBDEV-pvencrypt-{}", fmt.uuid.simple());
    let alias_dev = dm.create_alias(&alias, &alias_uuid, t.dev, t.size)?;
    let alias_path = PathBuf::from(format!("/dev/dm-{}", alias_dev.minor));
    let result = (|| {
        let marker = Marker {
            type_: luks::TOKEN_TYPE.into(),
            keyslots: vec![],
            version: 1,
            name: t.name.clone(),
            vg_name: t.vg.vg_name.clone(),
            pv_uuid: t.pv.pv_uuid.clone(),
            temp_keyslot: None,
        };
        let prepared = luks::prepare(&fmt, &alias_path, key, &marker)?;
        crate::fault::memory("prepared");
        if STOP.load(Ordering::Relaxed) {
            return Err(Error::new(Kind::Interrupted, format!("{}: stopped before the switch; nothing was changed.", t.path.display())));
        }
        let sw = Switch {
            dm: &dm,
            raw: t.dev,
            raw_path: &t.path,
            alias_path: &alias_path,
            alias_name: &alias,
            name: &t.name,
            pv_uuid: &t.pv.pv_uuid,
        };
        run.state("switching");
        // Held from before the tail is written until the LVs run on NAME: no LVM command
        // can change the VG meanwhile.
        let lock_dir = lvm::locking_dir();
        crate::fault::trace(format_args!("vg lock in {}", lock_dir.display()));
        let lock = switch::VgLock::take(&lock_dir, &t.vg.vg_name)?;
        crate::fault::trace("vg locked");
        unchanged_since_preflight(t)?;
        crate::fault::trace("vg unchanged");
        let switched = sw.stage(&prepared, &fmt, t.size * 512).and_then(|mut staged| {
            // Exercised once here so that nothing it needs is first touched in the freeze.
            luks::take_log(false);
            crate::fault::memory("staged");
            let _locked = switch::MemoryLock::take()?;
            crate::fault::memory("locked");
            sw.run(&mut staged)
        });
        drop(lock);
        if switched.is_err() {
            sw.deactivate();
        }
        for m in luks::take_log(cli.verbose > 1) {
            poll::error(&format!("  {m}"));
        }
        let switched = switched?;
        if cli.verbose > 0 {
            poll::error(&format!(
                "{}: switched under a freeze of {:.1} ms; now on /dev/mapper/{} ({}).",
                t.path.display(),
                switched.freeze.as_secs_f64() * 1000.0,
                t.name,
                switched.retargeted.join(", ")
            ));
        }
        Ok((prepared.temp_slot, prepared.temp_key))
    })();
    dm.remove(&alias);
    let (temp_slot, temp_key) = result?;
    integrate_boot(cli, &t.path, &t.name, &t.vg.vg_uuid);
    encrypt(cli, &t.path, &t.name, Some(temp_slot), &temp_key, run)
}

/// Between preflight and the switch came the prompt and the PBKDF: under the VG lock,
/// the VG (its metadata sequence number: any change of a PV's size or extents, any LV
/// or pvmove bumps it), the PV and the device must be what preflight planned with.
/// Read with `--readonly`, which grants LVM's read lock without taking it: we hold it.
/// (`--nolocking` does not work in process: LVM 2.03.16 keeps the file locking a former
/// command set up in a static, lib/locking/locking.c `_locking`, and only skips setting
/// it up again; `--readonly` resets `_file_locking_readonly` at every command.)
fn unchanged_since_preflight(t: &Target) -> Result<()> {
    let dev = t.path.to_string_lossy();
    let vg = lvm::vg_with(&t.vg.vg_name, &["--readonly"]).or_fail(|| format!("Cannot read volume group {}", t.vg.vg_name))?;
    let pv = lvm::pvs_with(Some(&dev), &["--readonly"]).or_fail(|| format!("Cannot read the PV {dev}"))?;
    let segs = lvm::lvs_with(&t.vg.vg_name, &["--readonly"]).or_fail(|| format!("Cannot list the LVs of {}", t.vg.vg_name))?;
    let (_, size) = device_of(&t.path)?;
    let changed = if vg.vg_seqno != t.vg.vg_seqno {
        format!("its metadata changed (seqno {} → {})", t.vg.vg_seqno, vg.vg_seqno)
    } else if pv.first() != Some(&t.pv) {
        "the PV changed".into()
    } else if segs.iter().any(|s| s.is_pvmove() || s.is_locked()) {
        "a pvmove started".into()
    } else if size != t.size {
        format!("the device's size changed ({} → {size} sectors)", t.size)
    } else {
        return Ok(());
    };
    refuse(format!(
        "{dev}: volume group {} changed while pvencrypt was preparing: {changed}. Nothing was changed; run pvencrypt again.",
        t.vg.vg_name
    ))
}

/// `--make-room`: LVM's own live pvmove of the extents in the way to free extents lower
/// on the same PV, then pvresize. Both are crash-safe LVM operations; after a crash,
/// `pvmove` (no argument) finishes the move, as LVM documents.
pub fn make_room(cli: &Cli, t: &Target, m: &plan::MakeRoom) -> Result<()> {
    let dev = t.path.to_string_lossy().to_string();
    if !m.ranges.is_empty() {
        if !cli.quiet {
            poll::info(&format!("{dev}: moving {} extents out of the room LUKS2 needs (pvmove)...", m.moved()));
        }
        let mut args: Vec<String> = ["pvmove", "--alloc", "anywhere", "-i", "1"].map(String::from).to_vec();
        args.extend(m.ranges.iter().map(|(a, b)| format!("{dev}:{a}-{b}")));
        args.push(format!("{dev}:0-{}", m.keep - 1));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lvm::run(&args).or_fail(|| format!("pvmove on {dev}"))?;
    }
    let size = format!("{}s", m.size);
    lvm::run(&["pvresize", "-y", "--setphysicalvolumesize", &size, &dev]).or_fail(|| format!("pvresize of {dev} to {size}"))?;
    if !cli.quiet {
        poll::info(&format!("{dev}: the PV now ends at {} MiB.", m.size / plan::MIB));
    }
    Ok(())
}

/// Right after the switch (and again on resume, where it finds its work done): LVM's
/// devices file, the crypttab entry, and the initramfs when the system boots from the
/// VG. A failure here does not stop the conversion, which is safe either way; it is
/// reported for the admin to fix before the next reboot.
fn integrate_boot(cli: &Cli, path: &Path, name: &str, vg_uuid: &str) {
    update_boot_files(cli, path, name, vg_uuid);
    // A power cut during the hours of the data phase must boot with these files, and LVM
    // 2.03.16 renames its new devices file into place without an fsync of the file.
    unsafe { libc::sync() };
}

fn update_boot_files(cli: &Cli, path: &Path, name: &str, vg_uuid: &str) {
    let warn = |m: String| poll::error(&format!("WARNING: {}: {m}", path.display()));
    // With a devices file, LVM would not look at the new device at all.
    match lvm::devices_file_replace(&format!("/dev/mapper/{name}"), &path.to_string_lossy()) {
        Ok(true) if !cli.quiet => {
            poll::info(&format!("{}: {} now lists /dev/mapper/{name} instead.", path.display(), lvm::devices_file().display()))
        }
        Ok(_) => {}
        Err(e) => warn(format!(
            "updating {}: {e}; run lvmdevices --adddev /dev/mapper/{name}, then lvmdevices --deldev {}.",
            lvm::devices_file().display(),
            path.display()
        )),
    }
    let uuid = match luks::open(path).and_then(|mut cd| {
        cd.status_handle().get_uuid().map(|u| u.to_string()).or_fail(|| "The LUKS2 header has no UUID".into())
    }) {
        Ok(u) => u,
        Err(e) => return warn(format!("{e}; add /dev/mapper/{name} to /etc/crypttab by hand.")),
    };
    if cli.no_crypttab {
        if !cli.quiet {
            poll::info(&format!("{}: not touching /etc/crypttab; the next boot needs: {}", path.display(), boot::crypttab_line(name, &uuid, false).trim()));
        }
    } else {
        let discard = device_of(path).is_ok_and(|(dev, _)| boot::supports_discard(dev));
        match boot::add_crypttab(Path::new(boot::CRYPTTAB), name, &uuid, discard) {
            Ok(boot::Entry::Added) if !cli.quiet => poll::info(&format!("{}: added {name} to {}.", path.display(), boot::CRYPTTAB)),
            Ok(boot::Entry::Present(l)) if !cli.quiet => {
                poll::info(&format!("{}: {} already has \"{l}\"; left as it is.", path.display(), boot::CRYPTTAB))
            }
            Ok(_) => {}
            Err(e) => warn(format!("{e}")),
        }
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for a in boot::cmdline_advice(&cmdline, &uuid) {
        warn(format!("before rebooting, change the kernel command line (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub): {a}."));
    }
    let on_vg = active_lvs(vg_uuid);
    let Some(why) = boot::boot_needs(&on_vg) else { return };
    if cli.no_initramfs {
        return warn(format!("{why}, and --no-initramfs was given: rebuild the initramfs before rebooting."));
    }
    match boot::update_initramfs() {
        Ok(cmd) if !cli.quiet => poll::info(&format!("{}: {why}: rebuilt the initramfs ({cmd}).", path.display())),
        Ok(_) => {}
        Err(e) => warn(format!("{why}: {e}")),
    }
}

/// Steps 4 and 5, for a fresh conversion or a resumed one.
pub fn encrypt(cli: &Cli, path: &Path, name: &str, slot: Option<u32>, key: &Passphrase, run: &mut Run) -> Result<()> {
    let mut cd = luks::open(path)?;
    let label = path.display().to_string();
    let mut shown = Progress::new(&label, cli.interval, cli.quiet);
    let t0 = Instant::now();
    let mut last = (0, 0);
    let finished = luks::run(&mut cd, name, slot, key, &mut |done, total| {
        // libcryptsetup may report (0, 0) once it has torn the reencryption down.
        if total == 0 {
            return !STOP.load(Ordering::Relaxed);
        }
        let before = last.0;
        last = (done, total);
        shown.update(done, total);
        run.progress(done, total);
        // Crash tests cut the power part-way through the data, once per mark crossed.
        for p in [25, 50, 75] {
            if total > 0 && done * 100 >= total * p && before * 100 < total * p {
                crate::fault::point(["run-25", "run-50", "run-75"][p as usize / 25 - 1]);
            }
        }
        !STOP.load(Ordering::Relaxed)
    });
    let elapsed = shown.finish();
    crate::fault::memory("encrypted");
    for m in luks::take_log(cli.verbose > 1) {
        poll::error(&format!("  {m}"));
    }
    if !finished? {
        // The last checkpoint may lie past the last report.
        let last = luks::open(path).ok().and_then(|mut cd| luks::progress(&mut cd)).unwrap_or(last);
        return Err(Error::new(
            Kind::Interrupted,
            format!(
                "{label}: stopped at {} encrypted; the data is in use on /dev/mapper/{name}. Run pvencrypt again to resume.",
                crate::progress::percent(last.0, last.1)
            ),
        ));
    }
    if cli.verbose > 0 {
        let mib = last.1 as f64 / (1u64 << 20) as f64;
        poll::error(&format!(
            "{label}: encrypted {mib:.0} MiB in {:.1} s ({:.1} MiB/s).",
            elapsed.as_secs_f64(),
            mib / t0.elapsed().as_secs_f64().max(1e-6)
        ));
    }
    finish(path)
}

/// Step 5. Idempotent: a resumed run may find part of it done.
fn finish(path: &Path) -> Result<()> {
    let mut cd = luks::open(path)?;
    if luks::reencrypt_state(&mut cd)? != CryptReencryptInfo::None {
        return fail(format!("{}: the reencryption did not complete.", path.display()));
    }
    if let Some((id, m)) = luks::marker(&mut cd) {
        // Before the marker goes, so that a crash repeats it.
        wipe_leftovers(&mut cd, path, &m)?;
        if let Some(slot) = m.temp_keyslot {
            luks::destroy_keyslot(&mut cd, slot)?;
        }
        cd.token_handle()
            .json_set(libcryptsetup_rs::TokenInput::RemoveToken(id))
            .or_fail(|| "Cannot remove the pvencrypt token".into())?;
        refresh_lvm(&m.vg_name)?;
        crate::fault::memory("finished");
    }
    Ok(())
}

/// Plaintext the conversion leaves outside the encrypted data: the PV's first segment
/// in the header area no keyslot uses (it lay there before the header), and the copy
/// of that segment at the device's end, which lies beyond the PV (NAME, as opened
/// during the conversion, ends before it; opened afresh it maps it after the PV).
fn wipe_leftovers(cd: &mut libcryptsetup_rs::CryptDevice, path: &Path, m: &Marker) -> Result<()> {
    let json = cd.status_handle().dump_json().or_fail(|| "Cannot read the LUKS2 metadata".into())?;
    let offset = cd.status_handle().get_data_offset() * 512;
    let unused = luks::unused_header_areas(&json, offset)
        .ok_or_else(|| Error::new(Kind::Failed, "The LUKS2 header has no layout"))?;
    direct::zero(path, &unused).or_fail(|| format!("Cannot wipe the unused header area of {}", path.display()))?;

    let (_, size) = device_of(path)?;
    let tail = size * 512 - 2 * offset;
    let pv_end = lvm::metadata_pv_size(&m.vg_name, &m.pv_uuid).or_fail(|| format!("Cannot read the metadata of {}", m.vg_name))?.bytes();
    if pv_end > tail {
        return fail(format!(
            "The PV on /dev/mapper/{} ends at byte {pv_end}, inside the area to wipe ({tail}..{}); not wiping it.",
            m.name,
            tail + offset
        ));
    }
    direct::zero(path, &[(tail + offset, offset)]).or_fail(|| format!("Cannot wipe the end of {}", path.display()))
}

/// LVM learns that the PV now lives on the crypt device, and its metadata is backed up.
fn refresh_lvm(vg: &str) -> Result<()> {
    lvm::pvscan_cache().or_fail(|| "pvscan --cache".into())?;
    lvm::vgcfgbackup(vg, None).or_fail(|| format!("vgcfgbackup {vg}"))?;
    Ok(())
}

/// A device with an unfinished conversion of ours.
pub enum Unfinished {
    /// LUKS2 in our conversion: resume it.
    Luks(Marker),
    /// Cut inside the switch: `repair` first.
    Torn(Found),
}

/// Devices with an unfinished conversion of ours. Read-only.
pub fn unfinished() -> Vec<(PathBuf, Unfinished)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/sys/class/block") else { return out };
    let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    for n in names {
        let path = PathBuf::from("/dev").join(&n);
        if !could_be_ours(&n) {
            continue;
        }
        match found(&path) {
            Found::Other => {}
            Found::Luks => {
                if let Some((_, m)) = luks::open(&path).ok().and_then(|mut cd| luks::marker(&mut cd)) {
                    out.push((path, Unfinished::Luks(m)));
                }
            }
            torn => out.push((path, Unfinished::Torn(torn))),
        }
    }
    out
}

/// Whether block device `name` may be a PV we convert. Reading a dm device can hang: a
/// suspended one (the hotzone of a reencryption whose process was killed) blocks every
/// read, and so can the LVs and crypt devices stacked above it. None of those is a PV
/// pvencrypt converts.
fn could_be_ours(name: &str) -> bool {
    let dm = Path::new("/sys/class/block").join(name).join("dm");
    let read = |f: &str| fs::read_to_string(dm.join(f)).unwrap_or_default();
    !dm.exists() || (read("suspended").trim() == "0" && !["LVM-", "CRYPT-"].iter().any(|p| read("uuid").starts_with(p)))
}

/// Resumes one device: opens it if needed (libcryptsetup recovers a crashed step on
/// open), then runs the rest of the encryption.
pub fn resume(cli: &Cli, path: &Path, m: &Marker, key: &Passphrase, run: &mut Run) -> Result<()> {
    let mut cd = luks::open(path)?;
    luks::check_key(&mut cd, key)?;
    let dm = Dm::open()?;
    for t in dm.remove_stale_temporaries(device_of(path)?.0)? {
        if !cli.quiet {
            poll::info(&format!("{}: removed {t}, left by a crashed run.", path.display()));
        }
    }
    // We hold the device's lock, so libcryptsetup's helper devices belong to a killed
    // process. NAME still maps its overlay, and libcryptsetup 2.6 refuses to resume from
    // there ("Mismatching parameters"); a step it was in also keeps its hotzone suspended.
    let overlay = format!("{}-overlay", m.name);
    let hotzones = ["backward", "forward"].map(|d| format!("{}-hotzone-{d}", m.name));
    if dm.exists(&overlay) || hotzones.iter().any(|h| dm.exists(h)) {
        let waiting = match hotzones.iter().find(|h| dm.is_suspended(h)) {
            Some(hz) => format!(" I/O to the area of the step it was in waits on the suspended {hz}."),
            None => String::new(),
        };
        return fail(format!(
            "{}: a conversion was killed in the data phase: {} is still stacked on {overlay}, which \
             libcryptsetup cannot resume from on an open device.{waiting} Restart the machine (a hard reset \
             if the shutdown hangs): opening the device at boot recovers, and pvencrypt then goes on.",
            path.display(),
            m.name
        ));
    }
    if !dm.exists(&m.name) {
        luks::activate(&mut cd, path, &m.name, None, key)?;
        if !cli.quiet {
            poll::info(&format!("{}: opened as /dev/mapper/{}.", path.display(), m.name));
        }
    }
    drop(cd);
    if let Ok(vg) = lvm::vg(&m.vg_name) {
        integrate_boot(cli, path, &m.name, &vg.vg_uuid);
    }
    if luks::reencrypt_state(&mut luks::open(path)?)? == CryptReencryptInfo::None {
        return finish(path);
    }
    stuck_at_the_end(path)?;
    encrypt(cli, path, &m.name, None, key, run)
}

/// A crash after libcryptsetup wrote the last block but before it closed the
/// reencryption leaves a header whose data segments are all encrypted while the
/// reencryption is still flagged; libcryptsetup 2.6 cannot close it from there (it
/// would redo the last step from a stale copy, and refuses). Said plainly, not retried.
fn stuck_at_the_end(path: &Path) -> Result<()> {
    let mut cd = luks::open(path)?;
    let json = cd.status_handle().dump_json().or_fail(|| "Cannot read the LUKS2 metadata".into())?;
    if !luks::all_encrypted_in(&json) {
        return Ok(());
    }
    let mib = luks::moved_segment_in(&json).map(|(_, len)| len >> 20).unwrap_or(0);
    fail(format!(
        "{}: every block is encrypted, but the crash hit the last step of the reencryption, which \
         libcryptsetup cannot close from there. The device is safe: it opens with cryptsetup and the \
         LVs run on it. Its header keeps the online-reencrypt-v2 flag, and its last {mib} MiB still hold \
         a plaintext copy of the device's first {mib} MiB. pvencrypt cannot finish this state yet.",
        path.display(),
    ))
}

/// Stopped conversions as `--status` shows them, progress read from their headers.
pub fn unfinished_status() -> Vec<Status> {
    unfinished()
        .into_iter()
        .map(|(path, u)| {
            let pv = path.display().to_string();
            match u {
                Unfinished::Luks(m) => {
                    let (done, total) = luks::open(&path).ok().and_then(|mut cd| luks::progress(&mut cd)).unwrap_or((0, 0));
                    Status { pv, name: m.name, state: "stopped".into(), bytes_done: done, bytes_total: total, ..Default::default() }
                }
                // Cut inside the switch: nothing encrypted; `pvencrypt` repairs it.
                Unfinished::Torn(f) => {
                    let name = match f {
                        Found::TornSwitch(r) => r.name,
                        _ => String::new(),
                    };
                    Status { pv, name, state: "interrupted".into(), ..Default::default() }
                }
            }
        })
        .collect()
}

