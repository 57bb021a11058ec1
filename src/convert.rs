//! The conversion, as named steps:
//!
//! 1. `preflight`  read-only checks; a refusal leaves the disk untouched.
//! 2. `prepare`    outside any freeze: alias device, kernel modules, header + PBKDF in memory.
//! 3. `switch`     the freeze (switch.rs): header placed, LVs moved onto NAME.
//! 4. `encrypt`    libcryptsetup's online reencryption, checkpoint by checkpoint.
//! 5. `finish`     temporary keyslot and marker removed, LVM caches refreshed, metadata backed up.
//!
//! After step 3 the device is a standard LUKS2 device in reencryption: a crash anywhere
//! later is recovered by any cryptsetup open, and `pvencrypt` resumes at step 4
//! (resume.rs). Step 1 lives in preflight.rs, step 3 in switch.rs.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Instant,
};

use libcryptsetup_rs::consts::vals::CryptReencryptInfo;

use crate::{
    boot::{self, initramfs},
    direct,
    dm::{block_device, Dm, DmName},
    error::{fail, Context, Error, Kind, Result, Written},
    key::Passphrase,
    luks::{self, Marker},
    lvm,
    mover::{self, Mover},
    options::Options,
    output, plan,
    preflight::{self, format_of, unchanged_since_preflight, Target},
    progress::Progress,
    running::{self, Phase, Run},
    switch::{self, Switch},
    units::Sectors,
};

/// The part of step 2 that needs no passphrase, started before preflight (modes.rs): the
/// header formatted in memory, with its temporary keyslot. It holds `sys::libdm` throughout:
/// libcryptsetup and LVM share libdevmapper's globals, unsafe from two threads, and with
/// only its contexts' making and freeing locked (`luks::Ctx`) a refusal still ended in
/// malloc's "invalid chunk size" (t_debian_root, with preflight's LVM commands beside it).
pub fn format_ahead(opts: &Options, path: &Path) -> Result<luks::Formatted> {
    let _dm = crate::sys::libdm();
    luks::format(preflight::format_for(opts, path)?, path)
}

/// Steps 2–5 for one PV; `early`: its header, if formatted ahead.
pub fn convert(opts: &Options, t: &Target, early: Option<luks::Formatted>, key: &Passphrase, run: &mut Run) -> Result<()> {
    // Made before preflight planned the conversion (and before --make-room changed the PV).
    let formatted = match early {
        Some(f) if f.fmt.shift == t.room.shift && f.fmt.sector_size == t.sector_size => f,
        _ => luks::format(format_of(opts, t.room.shift, t.sector_size)?, &t.path)?,
    };
    let dm = Dm::open()?;

    // Step 2: the alias is an exclusive-openable view of the raw device for
    // libcryptsetup (the LVs' claim makes the raw device itself refuse O_EXCL).
    let alias = DmName::new(format!("{}-pvencrypt-alias", t.name))?;
    let alias_uuid = format!("CRYPT-SUBDEV-pvencrypt-{}", formatted.fmt.uuid.simple());
    let alias_dev = dm.create_alias(&alias, &alias_uuid, t.dev, t.size)?;
    let alias_path = PathBuf::from(format!("/dev/dm-{}", alias_dev.minor));
    let result = (|| {
        let marker = Marker {
            type_: luks::TOKEN_TYPE.into(),
            keyslots: vec![],
            version: 1,
            name: t.name.clone(),
            vg_name: t.vg.as_ref().map(|v| v.vg_name.clone()),
            pv_uuid: t.pv.pv_uuid.clone(),
            temp_keyslot: None,
        };
        let prepared = luks::prepare(formatted, &alias_path, key, &marker)?;
        crate::fault::trace("prepared");
        crate::fault::memory("prepared");
        if crate::abort::STOP.load(Ordering::Relaxed) {
            return Err(Error::new(
                Kind::Interrupted,
                format!("{}: stopped before the switch; nothing was changed.", t.path.display()),
            ));
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
        run.state(Phase::Switching);
        // Held from before the tail is written until the LVs run on NAME: no LVM command
        // can change the VG meanwhile.
        let lock_dir = lvm::locking_dir();
        crate::fault::trace(format_args!("vg lock in {}", lock_dir.display()));
        let lock = lvm::VgLock::take(&lock_dir, &t.vg.as_ref().map_or_else(lvm::VgName::orphans, |v| v.vg_name.clone()))?;
        crate::fault::trace("vg locked");
        unchanged_since_preflight(t)?;
        crate::fault::trace("vg unchanged");
        // LVM's reports leave megabytes of freed heap resident; libcryptsetup's init adds a
        // buffer of the data shift on top (the process's peak).
        crate::sys::malloc_trim();
        let switched = sw.stage(&prepared, t.size.bytes()).and_then(|mut staged| {
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
        for m in luks::take_log(opts.verbose > 1) {
            output::error(&format!("  {m}"));
        }
        let switched = switched?;
        if opts.verbose > 0 {
            output::error(&format!(
                "{}: switched under a freeze of {:.1} ms; now on /dev/mapper/{} ({}).",
                t.path.display(),
                switched.freeze.as_secs_f64() * 1000.0,
                t.name,
                switched.retargeted.join(", ")
            ));
        }
        // The in-memory header (16 MiB) goes now; the keys stay for the data phase.
        Ok((prepared.temp_slot, prepared.temp_key, prepared.volume_key))
    })();
    dm.remove(&alias);
    let (temp_slot, temp_key, volume_key) = result?;
    // Before the data phase, not beside it: a power cut anywhere in the data phase must
    // find the rebuilt initramfs.
    integrate_boot(opts, &t.path, &t.name, t.vg.as_ref().map(|v| v.vg_uuid.as_str()), false);
    let unlock = Unlock { slot: Some(temp_slot), key: &temp_key, volume_key: Some(volume_key) };
    Ok(encrypt(opts, &t.path, &t.name, unlock, run)?)
}

/// `--make-room`: LVM's own live pvmove of the extents in the way to free extents lower
/// on the same PV, then pvresize. Both are crash-safe LVM operations; after a crash,
/// `pvmove` (no argument) finishes the move, as LVM documents.
pub fn make_room(opts: &Options, t: &Target, m: &plan::MakeRoom) -> Result<()> {
    let dev = t.path.to_string_lossy().to_string();
    if !m.ranges.is_empty() {
        if !opts.quiet {
            output::info(&format!("{dev}: moving {} extents out of the room LUKS2 needs (pvmove)...", m.moved()));
        }
        let mut args: Vec<String> = ["pvmove", "--alloc", "anywhere", "-i", "1"].map(String::from).to_vec();
        if let Some(a) = opts.autobackup {
            args.extend(["--autobackup".into(), if a { "y" } else { "n" }.into()]);
        }
        args.extend(m.ranges.iter().map(|(a, b)| format!("{dev}:{}-{}", a.0, b.0)));
        args.push(format!("{dev}:0-{}", m.keep.0 - 1));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lvm::run(&args).or_fail(|| format!("pvmove on {dev}"))?;
    }
    let size = m.size.to_string();
    lvm::run(&["pvresize", "-y", "--setphysicalvolumesize", &size, &dev]).or_fail(|| format!("pvresize of {dev} to {size}"))?;
    if !opts.quiet {
        output::info(&format!("{dev}: the PV now ends at {} MiB.", m.size.mib()));
    }
    Ok(())
}

/// Right after the switch (and again on resume, where it finds its work done): LVM's
/// devices file, the crypttab entry, and the initramfs when the system boots from the
/// VG. A failure here does not stop the conversion, which is safe either way; it is
/// reported for the admin to fix before the next reboot. `resumed`: the images may be the
/// ones a run before built; checked first, rebuilt only if they would not open the device.
pub(crate) fn integrate_boot(opts: &Options, path: &Path, name: &DmName, vg_uuid: Option<&str>, resumed: bool) {
    // The PV is on NAME now: an LVM restricted to --devices must see it there.
    lvm::see_device(&format!("/dev/mapper/{name}"));
    update_boot_files(opts, path, name, vg_uuid, resumed);
    // A power cut during the hours of the data phase must boot with these files, and LVM
    // 2.03.16 renames its new devices file into place without an fsync of the file.
    crate::sys::sync();
}

fn update_boot_files(opts: &Options, path: &Path, name: &DmName, vg_uuid: Option<&str>, resumed: bool) {
    running::clear_warnings(path);
    let warn = |m: String| {
        output::error(&format!("WARNING: {}: {m}", path.display()));
        running::add_warning(path, name.as_str(), &m);
    };
    // With a devices file, LVM would not look at the new device at all.
    match lvm::devices_file_replace(&format!("/dev/mapper/{name}"), &path.to_string_lossy()) {
        Ok(true) if !opts.quiet => {
            output::info(&format!("{}: {} now lists /dev/mapper/{name} instead.", path.display(), lvm::devices_file().display()))
        }
        Ok(_) => {}
        Err(e) => warn(format!(
            "updating {}: {e}; run lvmdevices --adddev /dev/mapper/{name}, then lvmdevices --deldev {}.",
            lvm::devices_file().display(),
            path.display()
        )),
    }
    let header = luks::open(path).and_then(|mut cd| {
        let uuid = cd.status_handle().get_uuid().map(|u| u.to_string()).or_fail(|| "The LUKS2 header has no UUID".into())?;
        Ok((uuid, boot::tpm2::bound(&luks::metadata(&mut cd)?)))
    });
    let (uuid, tpm2) = match header {
        Ok(h) => h,
        Err(e) => return warn(format!("{e}; add /dev/mapper/{name} to /etc/crypttab by hand.")),
    };
    let discard = block_device(path).is_ok_and(|(dev, _)| boot::supports_discard(dev));
    let line = boot::Line { name: name.as_str(), uuid: &uuid, discard, tpm2 };
    if opts.no_crypttab {
        if !opts.quiet {
            output::info(&format!("{}: not touching /etc/crypttab; the next boot needs: {line}", path.display()));
        }
    } else {
        match boot::add_crypttab(&Path::new(boot::ROOT).join("etc/crypttab"), &line) {
            Ok(boot::Entry::Added) if !opts.quiet => {
                output::info(&format!("{}: added {name} to {}.", path.display(), boot::CRYPTTAB))
            }
            Ok(boot::Entry::Present(l)) if !opts.quiet => {
                output::info(&format!("{}: {} already has \"{l}\"; left as it is.", path.display(), boot::CRYPTTAB))
            }
            Ok(_) => {}
            Err(e) => warn(format!("{e}")),
        }
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for a in boot::cmdline_advice(&cmdline, &uuid) {
        warn(format!("before rebooting, change the kernel command line (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub): {a}."));
    }
    let on_vg = lvm::active_lvs(vg_uuid);
    let Some(why) = boot::boot_needs(&on_vg) else { return };
    if opts.no_initramfs {
        return warn(format!(
            "{why}, and --no-initramfs was given: before rebooting, rebuild the initramfs so that it opens {name}."
        ));
    }
    let root = Path::new(boot::ROOT);
    // Preflight refused without a tool that can open the device; a resumed run may find
    // the system changed since.
    let tool = match initramfs::detect(root) {
        Ok(t) => t,
        Err(missing) => return warn(format!("{why}, but {missing}; then rebuild the initramfs before rebooting.")),
    };
    for note in initramfs::prepare(root, tool, &line, opts.no_crypttab, &cmdline) {
        match note {
            initramfs::Note::Info(m) if !opts.quiet => output::info(&format!("{}: {m}", path.display())),
            initramfs::Note::Info(_) => {}
            initramfs::Note::Todo(m) => warn(format!("before rebooting, {m}.")),
        }
    }
    let cmd = tool.rebuild().join(" ");
    // The copy of LVM's devices file in the image must list the new device too.
    let mapper = format!("/dev/mapper/{name}");
    let devices = lvm::devices_file_lists(&mapper).then(lvm::devices_file);
    // A rebuild takes minutes on a slow machine, and a stopped conversion resumes at every
    // boot: images that open the device already are left as they are.
    if resumed && initramfs::verify(root, tool, &line, devices.as_deref()).is_empty() {
        if !opts.quiet {
            output::info(&format!("{}: {why}: the initramfs opens {name} already; not rebuilt.", path.display()));
        }
        return;
    }
    if let Err(e) = initramfs::rebuild(root, tool) {
        return warn(format!("{why}: {e}. Run {cmd} again by hand before rebooting."));
    }
    // A rebuild that "succeeded" without the unlock is the worst case: the admin reboots
    // into a prompt that never comes. Say it where it cannot be missed.
    match initramfs::verify(root, tool, &line, devices.as_deref())[..] {
        [] if opts.quiet => {}
        [] => output::info(&format!("{}: {why}: rebuilt the initramfs ({cmd}); it opens {name}.", path.display())),
        ref problems => warn(format!(
            "{why}, but the initramfs that {cmd} built may NOT open {name} at boot: {}. DO NOT REBOOT before this is \
             fixed: check /etc/crypttab and the {} configuration, run {cmd}, and look into the image with {}.",
            problems.join("; "),
            tool.name(),
            tool.lister()
        )),
    }
}

/// What opens the device for the data phase: a keyslot's passphrase, and the volume key
/// itself when this run made the header (one keyslot unlock less; dropped once the kernel
/// keyring has it).
pub(crate) struct Unlock<'a> {
    pub slot: Option<u32>,
    pub key: &'a Passphrase,
    pub volume_key: Option<Passphrase>,
}

/// Steps 4 and 5, for a fresh conversion or a resumed one: after the first write.
pub(crate) fn encrypt(opts: &Options, path: &Path, name: &DmName, unlock: Unlock, run: &mut Run) -> Result<(), Written> {
    let label = path.display().to_string();
    let mut shown = Progress::new(&label, "Encrypted", opts.interval, opts.quiet);
    let t0 = Instant::now();
    let mut last = (0, 0);
    let mut report = |done: u64, total: u64| {
        // libcryptsetup may report (0, 0) once it has torn the reencryption down.
        if total == 0 {
            return !crate::abort::STOP.load(Ordering::Relaxed);
        }
        let before = last.0;
        last = (done, total);
        shown.update(done, total);
        run.progress(done, total);
        crate::fault::data_marks(before, done, total);
        !crate::abort::STOP.load(Ordering::Relaxed)
    };
    let dm = Dm::open()?;
    let finished = match mover::usable(&dm) {
        Ok(()) => in_kernel(&dm, path, name, unlock, &mut report),
        Err(why) => {
            output::error(&format!(
                "WARNING: {label}: the kernel cannot move the data ({why}); libcryptsetup moves it instead, \
                 step by step, each step holding back the I/O of its area."
            ));
            let mut cd = luks::open(path)?;
            luks::run(&mut cd, name.as_str(), unlock.slot, unlock.key, &mut report)
        }
    };
    let elapsed = shown.finish();
    crate::fault::trace("data moved");
    crate::fault::memory("encrypted");
    for m in luks::take_log(opts.verbose > 1) {
        output::error(&format!("  {m}"));
    }
    if !finished? {
        // The last checkpoint may lie past the last report.
        let last = luks::open(path).ok().and_then(|mut cd| luks::progress(&mut cd)).map_or(last, |(d, t)| (d.0, t.0));
        return Err(Error::new(
            Kind::Interrupted,
            format!(
                "{label}: stopped at {} encrypted; the data is in use on /dev/mapper/{name}. Run pvencrypt again to resume.",
                crate::progress::percent(last.0, last.1)
            ),
        )
        .into());
    }
    if opts.verbose > 0 {
        let mib = last.1 as f64 / (1u64 << 20) as f64;
        output::error(&format!(
            "{label}: encrypted {mib:.0} MiB in {:.1} s ({:.1} MiB/s).",
            elapsed.as_secs_f64(),
            mib / t0.elapsed().as_secs_f64().max(1e-6)
        ));
    }
    Ok(finish(path)?)
}

/// The data moved by the kernel (mover.rs), under memory locked for the whole phase:
/// NAME is suspended at every commit, and a page fault on a root that lives on the VG
/// would wait for it.
fn in_kernel(dm: &Dm, path: &Path, name: &DmName, unlock: Unlock, report: &mut dyn FnMut(u64, u64) -> bool) -> Result<bool> {
    let mut mover = open_mover(dm, path, name, &unlock)?;
    drop(unlock);
    crate::sys::protect_from_oom_killer();
    let _locked = switch::MemoryLock::take()?;
    mover.run(report)
}

/// The volume key unlocked (unless given), libcryptsetup's handle closed again (it must
/// hold no lock of its own while the mover holds the device's).
pub(crate) fn open_mover<'a>(dm: &'a Dm, path: &Path, name: &'a DmName, unlock: &Unlock) -> Result<Mover<'a>> {
    let (raw, _) = block_device(path)?;
    let mut cd = luks::open(path)?;
    let unlocked;
    let vk = match &unlock.volume_key {
        Some(vk) => vk.bytes(),
        None => {
            unlocked = luks::volume_key(&mut cd, unlock.slot, unlock.key)?;
            &unlocked[..]
        }
    };
    crate::fault::trace("volume key");
    let uuid = cd.status_handle().get_uuid().map(|u| u.to_string()).or_fail(|| "The LUKS2 header has no UUID".into())?;
    drop(cd);
    Mover::new(dm, name, path, raw, &uuid, vk, 0)
}

/// Step 5. Idempotent: a resumed run may find part of it done.
pub(crate) fn finish(path: &Path) -> Result<()> {
    let mut cd = luks::open(path)?;
    if luks::reencrypt_state(&mut cd)? != CryptReencryptInfo::None {
        return fail(format!("{}: the reencryption did not complete.", path.display()));
    }
    if let Some((id, m)) = luks::marker(&mut cd) {
        // Before the marker goes, so that a crash repeats it.
        wipe_leftovers(&mut cd, path, &m)?;
        crate::fault::trace("finish: wiped");
        if let Some(slot) = m.temp_keyslot {
            luks::destroy_keyslot(&mut cd, slot)?;
        }
        cd.token_handle()
            .json_set(libcryptsetup_rs::TokenInput::RemoveToken(id.0))
            .or_fail(|| "Cannot remove the pvencrypt token".into())?;
        crate::fault::trace("finish: token removed");
        refresh_lvm(m.vg_name.as_ref())?;
        crate::fault::trace("finish: lvm refreshed");
        crate::fault::memory("finished");
    }
    Ok(())
}

/// Plaintext the conversion leaves outside the encrypted data: the PV's first segment
/// in the header area no keyslot uses (it lay there before the header), and the copy
/// of that segment at the device's end, which lies beyond the PV (NAME, as opened
/// during the conversion, ends before it; opened afresh it maps it after the PV).
fn wipe_leftovers(cd: &mut libcryptsetup_rs::CryptDevice, path: &Path, m: &Marker) -> Result<()> {
    let offset = Sectors(cd.status_handle().get_data_offset()).bytes();
    let unused =
        luks::metadata(cd)?.unused_areas(offset).ok_or_else(|| Error::new(Kind::Failed, "The LUKS2 header has no layout"))?;
    direct::zero(path, &unused).or_fail(|| format!("Cannot wipe the unused header area of {}", path.display()))?;

    let (_, size) = block_device(path)?;
    let tail = size.bytes() - offset - offset;
    let pv_end = pv_size(m)?.bytes();
    if pv_end > tail {
        return fail(format!(
            "The PV on /dev/mapper/{} ends at byte {}, inside the area to wipe ({}..{}); not wiping it.",
            m.name,
            pv_end.0,
            tail.0,
            (tail + offset).0
        ));
    }
    direct::zero(path, &[(tail + offset, offset)]).or_fail(|| format!("Cannot wipe the end of {}", path.display()))
}

/// Where the PV ends, as LVM records it: in its VG's metadata, or for a PV that was an
/// orphan, in its label (unless a vgextend took it into a VG meanwhile).
fn pv_size(m: &Marker) -> Result<lvm::Sectors> {
    let in_vg = |vg: &lvm::VgName| lvm::metadata_pv_size(vg, &m.pv_uuid).or_fail(|| format!("Cannot read the metadata of {vg}"));
    if let Some(vg) = &m.vg_name {
        return in_vg(vg);
    }
    let dev = Path::new("/dev/mapper").join(m.name.as_str());
    let pv = lvm::pv(&dev)
        .or_fail(|| format!("Cannot read the PV on {}", dev.display()))?
        .ok_or_else(|| Error::new(Kind::Failed, format!("{} holds no PV", dev.display())))?;
    match &pv.vg_name {
        Some(vg) => in_vg(vg),
        None => Ok(pv.pv_size),
    }
}

/// LVM learns that the PV now lives on the crypt device, and its metadata is backed up.
fn refresh_lvm(vg: Option<&lvm::VgName>) -> Result<()> {
    lvm::pvscan_cache().or_fail(|| "pvscan --cache".into())?;
    if let Some(vg) = vg {
        lvm::vgcfgbackup(vg, None).or_fail(|| format!("vgcfgbackup {vg}"))?;
    }
    Ok(())
}
