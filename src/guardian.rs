//! The guardians: a child process that puts the LVs back to work should pvencrypt die
//! (SIGKILL, the OOM killer, `systemctl kill`) while devices of the PV are suspended,
//! since nothing else would. One watches the switch's freeze (`Watch::Switch`), one the
//! data phase's commits (`Watch::Mover`). Each acts on one rule, which the error paths
//! and the take-over follow too (ARCHITECTURE.md, "Deaths and errors, step by step"):
//! whatever it restores maps every range to bytes that no running copy overwrites.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::Child,
    time::Duration,
};

use crate::{
    direct::{self, Aligned},
    dm::{self, Dm, DmName, Target},
    error::{fail, Context, Result},
    sys,
    units::{Bytes, Sectors},
};

/// What a guardian watches, handed to it in its environment (no secret in it).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Watch {
    /// The data phase: NAME, suspended for each commit.
    Mover { name: DmName },
    /// The switch's freeze: the devices on the PV in suspend order (top-down), NAME, the
    /// alias the header is written through, and where the first segment's copy lies.
    /// `moved`: (offset, length) in bytes.
    Switch { holders: Vec<DmName>, name: DmName, alias: DmName, alias_path: PathBuf, moved: (u64, u64) },
    /// Decryption's first move: NAME, suspended while the first segment moves to the head
    /// and T1 is committed at `tail` bytes into `disk` (decrypt/first_move.rs), and the alias
    /// libcryptsetup's init used.
    FirstMove { name: DmName, disk: PathBuf, tail: u64, alias: DmName },
    /// Decryption's switch back: the devices on NAME in suspend order (top-down), suspended
    /// while the head is decrypted in place and their tables move to `disk`, whose header
    /// is at `tail` (decrypt/switch_back.rs).
    SwitchBack { holders: Vec<DmName>, name: DmName, disk: PathBuf, tail: u64 },
}

/// What the switch tells its guardian: the first segment's copy in the tail is exact
/// (the LVs have been suspended since it was made), and the header writes may start.
const COPIED: u8 = b'C';
/// What the guardian says once it can act without touching a disk.
const READY: u8 = b'R';
/// What pvencrypt says as it lets its guardian go: it lives, and what it left suspended
/// (said loudly) is on purpose. Only a death leaves the pipe closed without it.
const ENDED: u8 = b'E';

/// A guardian process; it acts when its stdin closes without `ENDED`: pvencrypt died.
pub struct Guardian(Child);

impl Guardian {
    pub fn spawn(watch: &Watch) -> Result<Guardian> {
        let child = crate::sys::spawn(
            std::process::Command::new("/proc/self/exe")
                .env(GUARD_ENV, serde_json::to_string(watch).expect("serializes"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped()),
        )
        .or_fail(|| "Cannot start the guardian process".into())?;
        // Not before it is ready: until its memory is locked it may fault pages in from the
        // root filesystem, which the suspension it watches can hold.
        let mut ready = [0u8; 1];
        let mut g = Guardian(child);
        match g.0.stdout.take().map(|mut o| o.read_exact(&mut ready)) {
            Some(Ok(())) if ready[0] == READY => Ok(g),
            _ => fail("The guardian process did not start".to_string()),
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// One write(2) to a pipe: safe inside the freeze.
    pub fn copied(&mut self) {
        if let Some(i) = self.0.stdin.as_mut() {
            let _ = i.write_all(&[COPIED]);
        }
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        if let Some(mut i) = self.0.stdin.take() {
            let _ = i.write_all(&[ENDED]);
        }
        let _ = self.0.wait();
    }
}

pub const GUARD_ENV: &str = "PVENCRYPT_GUARD";

/// The guardian's whole life (main.rs runs it when GUARD_ENV is set).
pub fn guard(watch: &str) -> ! {
    let Ok(watch) = serde_json::from_str::<Watch>(watch) else { sys::exit_now(2) };
    sys::setsid();
    // Out of the unit's cgroup (`-b`, the boot's resume unit): `systemctl kill` and the
    // SIGKILL that ends a stop signal every process of the unit, and we must outlive it.
    // The root cgroup belongs to no unit; on a cgroup v1 system this fails, harmlessly.
    let _ = std::fs::write("/sys/fs/cgroup/cgroup.procs", "0");
    for s in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGQUIT, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        sys::ignore_signal(s);
    }
    sys::protect_from_oom_killer();
    // What the switch's rollback needs, taken while nothing is suspended.
    let (disk_file, mut buf) = match &watch {
        Watch::Switch { alias_path, .. } => (direct::open(alias_path).ok(), Aligned::new(direct::CHUNK)),
        Watch::FirstMove { disk, .. } | Watch::SwitchBack { disk, .. } => (direct::open(disk).ok(), Aligned::new(4096)),
        Watch::Mover { .. } => (None, Aligned::new(4096)),
    };
    // The switch back's: NAME to read the plaintext through, and the buffers its recovery
    // decrypts in, sized by the header at the tail as it is before the suspension.
    let mut back = match (&watch, &disk_file) {
        (Watch::SwitchBack { name, tail, .. }, Some(f)) => {
            let through = direct::open(&std::path::Path::new("/dev/mapper").join(name.as_str())).ok();
            let header = crate::header::Header::read_at(f, *tail).ok();
            let scratch = header.and_then(|h| crate::in_place::Scratch::new(&h.meta, Bytes(*tail)).ok());
            through.zip(scratch)
        }
        _ => None,
    };
    // Without the disk it could not tell which tables the LVs must run: pvencrypt then does
    // not suspend anything (no READY).
    let needs_disk = matches!(watch, Watch::FirstMove { .. } | Watch::SwitchBack { .. });
    if needs_disk && disk_file.is_none() || matches!(watch, Watch::SwitchBack { .. }) && back.is_none() {
        sys::exit_now(1);
    }
    let _ = sys::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE);
    let dm = Dm::open();
    let _ = std::io::stdout().write_all(&[READY]).and_then(|_| std::io::stdout().flush());
    let (mut copied, mut ended, mut b) = (false, false, [0u8; 64]);
    loop {
        // While pvencrypt lives, stopped included, a chunk whose mirror lost a leg must not
        // hold its writes until pvencrypt looks: release it within a second. Not while NAME
        // is suspended: a commit's header write may be under way, and its table may name
        // chunks that header makes encrypted (nothing is written through NAME meanwhile).
        if let (Watch::Mover { name }, Ok(dm)) = (&watch, &dm) {
            if !sys::poll_in(0, 1000) {
                if !dm.is_suspended(name) {
                    let _ = release_failed(dm, name, None);
                }
                continue;
            }
        }
        match std::io::stdin().read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                copied |= b[..n].contains(&COPIED);
                ended |= b[..n].contains(&ENDED);
            }
        }
    }
    if ended {
        sys::exit_now(0);
    }
    let Ok(dm) = dm else { sys::exit_now(1) };
    let settled = match &watch {
        Watch::Mover { name } => Some(settle(&dm, name)),
        Watch::Switch { .. } | Watch::FirstMove { .. } | Watch::SwitchBack { .. } => None,
    };
    // Found running, NAME maps through mirrors only chunks the header leaves in plaintext.
    let lingers = matches!(settled, Some(Ok(Settled { resumed: false, .. })));
    let said = match &watch {
        Watch::Mover { name } => match settled.expect("settled") {
            Ok(Settled { resumed: true, .. }) => Some(format!("pvencrypt died while {name} was suspended; resumed it")),
            Ok(Settled { started: n, .. }) if n > 0 => {
                Some(format!("pvencrypt died while {name} was starting its chunks' copies; started {n}"))
            }
            Ok(_) => None,
            Err(e) => Some(format!("pvencrypt died inside a commit of {name}; {e}")),
        },
        Watch::Switch { holders, name, alias, moved, .. } => {
            let copy = disk_file.as_ref().filter(|_| copied).map(|f| (f, &mut buf, *moved));
            let r = settle_switch(&dm, holders, name, copy);
            drop(disk_file);
            if !matches!(r, Ok(None)) {
                // The dead process's, in the way of the next run.
                dm.remove(alias);
            }
            match r {
                Ok(None) => None,
                Ok(Some(m)) => Some(format!("pvencrypt died in the switch's freeze; {m}")),
                Err(e) => Some(format!("pvencrypt died in the switch's freeze; {e}")),
            }
        }
        Watch::FirstMove { name, tail, alias, .. } => {
            let r = disk_file.as_ref().map(|f| settle_first_move(&dm, name, f, *tail));
            drop(disk_file);
            if !matches!(r, Some(Ok(None))) {
                // The dead process's: it holds the disk, and stock cryptsetup would refuse to
                // open the device beside it.
                dm.remove(alias);
            }
            let died = format!("pvencrypt died while {name} was suspended for decryption's first move");
            match r {
                Some(Ok(None)) => None,
                Some(Ok(Some(m))) => Some(format!("{died}; {m}")),
                Some(Err(e)) => Some(format!("{died}; {e}")),
                None => Some(format!("{died}, and the disk could not be opened to read its header; {name} stays SUSPENDED")),
            }
        }
        Watch::SwitchBack { holders, name, tail, .. } => {
            let (Some(f), Some((through, scratch))) = (disk_file.as_ref(), back.as_mut()) else { sys::exit_now(1) };
            let died = format!("pvencrypt died while the LVs on {name} were suspended for decryption's switch back");
            match settle_switch_back(&dm, name, holders, f, through, scratch, *tail) {
                Ok(None) => None,
                Ok(Some(m)) => Some(format!("{died}; {m}")),
                Err(e) => Some(format!("{died}; {e}")),
            }
        }
    };
    if let Some(m) = said {
        sys::syslog(libc::LOG_WARNING, &m);
        kmsg(&m);
    }
    // The dead run's mirrors keep serving until the next run takes over: a leg that fails
    // meanwhile must not hold their writes either. Nothing is suspended now: a shutdown's
    // SIGTERM may end this. After a death inside a commit only the next run, which reads
    // the header, knows which copy each chunk must go back to.
    if let (Watch::Mover { name }, true) = (&watch, lingers) {
        sys::default_signal(libc::SIGTERM);
        while maps_mirrors(&dm, name) {
            let _ = release_failed(&dm, name, None);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    sys::exit_now(0)
}

/// Whether NAME's live table still sends I/O through a mover's mirror.
fn maps_mirrors(dm: &Dm, name: &DmName) -> bool {
    let Ok(live) = dm.table(name).map(|t| dm::referenced(&t)) else { return false };
    dm.named_with_uuid("CRYPT-TEMP-pvencrypt-").is_ok_and(|ours| {
        ours.iter().any(|(m, _)| {
            dm.device_of(m).is_ok_and(|d| live.contains(&d)) && dm.table(m).is_ok_and(|t| t.iter().any(|t| t.kind == "mirror"))
        })
    })
}

/// The kernel log outlives a terminal that is gone; never a file on the PV.
fn kmsg(m: &str) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut k| k.write_all(format!("<4>pvencrypt: {m}\n").as_bytes()));
}

/// After a death in the switch's freeze (the process's own errors roll back in switch.rs):
/// - some LV already runs on NAME (the death came while the LVs were being resumed, after
///   every header write and table load): the others follow onto their loaded tables; the
///   device is LUKS2 in reencryption and `pvencrypt` goes on;
/// - else, back to the plain PV: the loaded tables are dropped, NAME removed, and, when
///   every device is still suspended since the first segment was copied to the tail
///   (`copy`), that copy is put back over whatever header bytes were written. A device
///   already running is one the process resumed after its own rollback: nothing is copied.
fn settle_switch(
    dm: &Dm,
    holders: &[DmName],
    name: &DmName,
    copy: Option<(&std::fs::File, &mut Aligned, (u64, u64))>,
) -> Result<Option<String>> {
    let suspended: Vec<&DmName> = holders.iter().filter(|h| dm.is_suspended(h)).collect();
    if suspended.is_empty() {
        return Ok(None);
    }
    let on_name = dm.device_of(name).ok().is_some_and(|c| {
        holders.iter().any(|h| !dm.is_suspended(h) && dm.table(h).is_ok_and(|t| dm::referenced(&t).contains(&c)))
    });
    if on_name {
        for h in holders.iter().rev().filter(|h| suspended.contains(h)) {
            resume_patiently(dm, h)?;
        }
        return Ok(Some(format!("the LVs run on /dev/mapper/{name}; run pvencrypt to go on")));
    }
    let mut kept = Vec::new();
    for h in holders {
        if dm.has_inactive(h)? && dm.clear_inactive(h).is_err() {
            kept.push(h);
        }
    }
    dm.remove(name);
    if let Some((f, buf, (from, len))) = copy.filter(|_| suspended.len() == holders.len()) {
        direct::copy(f, buf, Bytes(from), Bytes(0), Bytes(len))
            .or_fail(|| format!("the LVs stay SUSPENDED: putting the first {len} bytes back from offset {from} failed"))?;
    }
    for h in holders.iter().rev().filter(|h| suspended.contains(h) && !kept.contains(h)) {
        resume_patiently(dm, h)?;
    }
    if !kept.is_empty() {
        return fail(format!(
            "{kept:?} stay SUSPENDED: their tables for {name} cannot be dropped (`dmsetup clear`, then `dmsetup resume`)"
        ));
    }
    Ok(Some("the LVs run on the plain PV again".into()))
}

/// After a death or an error while NAME is suspended for decryption's first move: NAME runs
/// the table the header at the tail describes. T1 there (the decryption begun): the table
/// loaded for it, which maps the first segment at the head, where the copy made inside the
/// suspension lies, goes live; pvencrypt loads it before it writes T1. Else (T0, or a tail
/// that cannot be read, where T0 was last seen): the table NAME ran, whose bytes at the data
/// offset the copy only read.
pub fn settle_first_move(dm: &Dm, name: &DmName, disk: &std::fs::File, tail: u64) -> Result<Option<String>> {
    if !dm.is_suspended(name) {
        return Ok(None);
    }
    let moved = crate::header::Header::read_at(disk, tail).is_ok_and(|h| h.meta.in_reencryption());
    if moved {
        if !dm.has_inactive(name)? {
            return fail(format!(
                "{name} stays SUSPENDED: the header at the tail says the first segment moved, but no table for that is \
                 loaded; load one that maps it at offset 0 of the disk (pvencrypt --decrypt does), then `dmsetup resume {name}`"
            ));
        }
        resume_patiently(dm, name)?;
        return Ok(Some(format!("{name} maps the first segment at the head, as the header at the tail says")));
    }
    if dm.has_inactive(name)? {
        dm.clear_inactive(name)?;
    }
    resume_patiently(dm, name)?;
    Ok(Some(format!("{name} runs as before; the header at the tail says nothing moved")))
}

/// After a death or an error while the LVs are suspended for decryption's switch back: they
/// run what the header at the tail says. The switch back's hot state there: the head is made
/// plaintext throughout by the checksums (`in_place::decrypt_by_checksums`), and the LVs
/// resume on the tables for the raw device, which pvencrypt loads before it writes that
/// header. Else (the head untouched): those tables are dropped and the LVs resume on NAME.
pub fn settle_switch_back(
    dm: &Dm,
    name: &DmName,
    holders: &[DmName],
    disk: &std::fs::File,
    through: &std::fs::File,
    scratch: &mut crate::in_place::Scratch,
    tail: u64,
) -> Result<Option<String>> {
    let suspended: Vec<&DmName> = holders.iter().filter(|h| dm.is_suspended(h)).collect();
    if suspended.is_empty() {
        return Ok(None);
    }
    let stay =
        |why: String| crate::error::Error::new(crate::error::Kind::Unrecovered, format!("{suspended:?} stay SUSPENDED: {why}"));
    let header = crate::header::Header::read_at(disk, tail).map_err(|e| stay(format!("the header at the tail: {}", e.msg)))?;
    if !crate::in_place::is_hot(&header.meta) {
        for h in holders {
            if dm.has_inactive(h)? {
                dm.clear_inactive(h)?;
            }
        }
        for h in holders.iter().rev().filter(|h| suspended.contains(h)) {
            resume_patiently(dm, h)?;
        }
        return Ok(Some("they run on it as before; the header at the tail says its head was not decrypted".into()));
    }
    crate::in_place::decrypt_by_checksums(disk, through, &header.meta, scratch).map_err(|e| stay(e.msg))?;
    // One whose live table maps NAME, with no table for the raw device loaded, must not run:
    // NAME's head now decrypts plaintext.
    let crypt = dm.device_of(name)?;
    for h in &suspended {
        if !dm.has_inactive(h)? && dm.table(h).is_ok_and(|t| dm::referenced(&t).contains(&crypt)) {
            return Err(stay(format!("{h} has no table for the raw device loaded")));
        }
    }
    for h in holders.iter().rev().filter(|h| suspended.contains(h)) {
        resume_patiently(dm, h)?;
    }
    Ok(Some("the head is decrypted; they run on the raw device".into()))
}

/// What `settle` did.
#[derive(Debug, Default)]
pub struct Settled {
    /// NAME was suspended and runs again, on its live table.
    pub resumed: bool,
    /// Mirrors NAME's table named that had not started, and now run.
    pub started: usize,
}

/// How often a resume is tried before it counts as failed.
const TRIES: u32 = 5;

fn resume_patiently(dm: &Dm, name: &DmName) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match dm.resume(name) {
            Err(e) if tries >= TRIES => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10 << tries)),
            Ok(()) => return Ok(()),
        }
    }
}

/// Puts NAME back to work after a death or an error at any step of a commit:
/// - NAME suspended: it runs its live table again, never the one loaded for the next
///   commit (cleared). Until NAME runs a new table no new chunk's copy has started, so
///   nothing overwrites a byte the live table reads; the chunks being committed are
///   mirrored with both legs equal, right for the header before the commit and after it.
/// - NAME running: every mover device its table names that still waits for its mirror
///   (a linear map of the chunk's plaintext, the mirror loaded inactive) is resumed onto
///   it, which starts the copy. NAME runs a table naming a new chunk only once the header
///   that frees the chunk's new place is on the disk. One that will not resume stays (or
///   becomes) a linear map of its plaintext leg, which no copy has touched.
pub fn settle(dm: &Dm, name: &DmName) -> Result<Settled> {
    let mut s = Settled::default();
    if dm.is_suspended(name) {
        if dm.has_inactive(name)? {
            dm.clear_inactive(name)?;
        }
        resume_patiently(dm, name)?;
        s.resumed = true;
    } else if dm.has_inactive(name)? {
        // A table loaded for a commit that never suspended: a later resume must not
        // make it live.
        dm.clear_inactive(name)?;
    }
    let live = dm::referenced(&dm.table(name)?);
    for (m, _) in dm.named_with_uuid("CRYPT-TEMP-pvencrypt-")? {
        // A committed chunk's, which the remover may take away meanwhile.
        let dev = match dm.device_of(&m) {
            Err(_) if !dm.exists(&m) => continue,
            r => r?,
        };
        if !live.contains(&dev) || !(dm.has_inactive(&m)? || dm.is_suspended(&m)) {
            continue;
        }
        if resume_patiently(dm, &m).is_err() {
            plain_instead(dm, &m)?;
        }
        s.started += 1;
    }
    Ok(s)
}

/// Takes every chunk NAME maps through a mirror that reports a failed leg off that mirror,
/// onto the copy that has every acknowledged write: the one the mirror copies from (leg 0:
/// the plaintext when encrypting, the ciphertext when decrypting), or, for a chunk the
/// header's `layout` (when the caller read it) says is committed, its new place (leg 1). With `handle_errors`, dm-raid1 acknowledges no write that missed a leg
/// of a region it mirrors, nor, once a leg failed, any write to a region not yet copied:
/// it holds them until the mirror is suspended, and a suspension without flush sends them
/// again through the new map (ARCHITECTURE.md, "Disk faults"). One that fails there fails
/// to its writer. The mover's guardian runs this every second with no boundary, when NAME
/// maps only chunks the header leaves in plaintext; the mover with the header's.
pub fn release_failed(dm: &Dm, name: &DmName, layout: Option<&crate::header::Layout>) -> Result<Vec<DmName>> {
    let live = dm::referenced(&dm.table(name)?);
    let mut released = Vec::new();
    for (m, u) in dm.named_with_uuid("CRYPT-TEMP-pvencrypt-")? {
        // The remover may take a committed chunk's devices away meanwhile.
        let (dev, table, status) = match dm.device_of(&m).and_then(|d| Ok((d, dm.table(&m)?, dm.status(&m)?))) {
            Err(_) if !dm.exists(&m) => continue,
            r => r?,
        };
        if !live.contains(&dev)
            || !table.iter().any(|t| t.kind == "mirror")
            || status.first().and_then(|s| dm::mirror_status(&s.params)).is_some_and(|s| s.health.bytes().all(|h| h == b'A'))
        {
            continue;
        }
        // Mirror uuids end in `-m<start in sectors>` (Mover::prepare).
        let start = u.rsplit_once("-m").and_then(|(_, t)| t.parse().ok()).map(|s| Sectors(s).bytes());
        let committed = matches!((start, layout), (Some(s), Some(l)) if l.committed(s));
        onto_leg(dm, &m, usize::from(committed))?;
        let copy = if committed { "new place" } else { "copy it was copied from" };
        kmsg(&format!("{m}: a leg failed; its chunk runs on its {copy} again"));
        released.push(m);
    }
    Ok(released)
}

/// Puts a mover device back on its plaintext: the linear map it ran before (its mirror
/// dropped), or, when the mirror was swapped in but would not resume, a linear map of the
/// mirror's first leg. Below the boundary the plaintext is authoritative.
fn plain_instead(dm: &Dm, m: &DmName) -> Result<()> {
    onto_leg(dm, m, 0)
}

/// A mover device onto a linear map of its mirror's leg `leg` (0: the copy it copies from,
/// 1: the chunk's new place), or, with no mirror live, on the map it runs. A running mirror is
/// suspended without flush: it may hold writes (`release_failed`).
///
/// The mover's unwind and its guardian's release (every second) may act on the same mirror at
/// once, each taking it onto the same leg: a step the other did first (a suspension, the
/// loaded table cleared) fails this one's (EINVAL; seen in t_disk_faults, which then found the
/// chunk's devices left on the disk), so the whole is tried again until the mirror runs its leg.
fn onto_leg(dm: &Dm, m: &DmName, leg: usize) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        let r = onto_leg_once(dm, m, leg);
        let done = || dm.table(m).is_ok_and(|t| t.iter().all(|t| t.kind != "mirror")) && !dm.is_suspended(m);
        match r {
            Ok(()) => return Ok(()),
            Err(_) if done() => return Ok(()),
            Err(e) if tries >= TRIES => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10 << tries)),
        }
    }
}

fn onto_leg_once(dm: &Dm, m: &DmName, leg: usize) -> Result<()> {
    if dm.has_inactive(m)? {
        dm.clear_inactive(m)?;
    }
    if let Some(Target { start, len, params, .. }) = dm.table(m)?.into_iter().find(|t| t.kind == "mirror") {
        let Some(leg) = dm::Mirror::parse(&params).and_then(|p| p.legs.get(leg).copied()) else {
            return fail(format!("{m}: unexpected mirror table {params}"));
        };
        dm.load_verified(m, &[Target::of(start, len, &leg)])?;
        if let Err(e) = dm.suspend_noflush(m) {
            if !dm.is_suspended(m) {
                return Err(e);
            }
        }
    }
    resume_patiently(dm, m).or_fail(|| format!("{m} will not resume, and I/O to its chunk waits: run `dmsetup resume {m}`"))
}
