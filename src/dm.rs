//! Device-mapper stack surgery: who sits on top of the PV, suspending and resuming
//! that stack in dependency order, and moving every table that names the raw device
//! onto the new one at the same offsets.
//!
//! Everything here goes through the dm ioctls (devicemapper crate); tables are
//! verified by reading them back, never assumed.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::Path,
};

use devicemapper::{DevId, Device, DmFlags, DmOptions, DmUuid, DM};

use crate::{
    error::{fail, refuse, Context, Error, Kind, Result},
    units::Sectors,
};

/// One line of a table (or of a status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub start: Sectors,
    pub len: Sectors,
    /// The target type: linear, crypt, mirror...
    pub kind: String,
    pub params: String,
}

impl Target {
    pub fn new(start: Sectors, len: Sectors, kind: &str, params: impl Into<String>) -> Target {
        Target { start, len, kind: kind.into(), params: params.into() }
    }

    /// A line of a target pvencrypt builds, from its typed parameters.
    pub fn of<P: Params>(start: Sectors, len: Sectors, params: &P) -> Target {
        Target::new(start, len, P::KIND, params.to_string())
    }
}

/// A target's parameters, typed as devicemapper-rs types its own (`TargetParams`): built
/// and read as values, printed as the kernel parses them.
pub trait Params: std::fmt::Display {
    const KIND: &'static str;
}

/// dm-linear: `DEV OFFSET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    pub dev: Device,
    pub offset: Sectors,
}

impl Params for Linear {
    const KIND: &'static str = "linear";
}

impl std::fmt::Display for Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.dev, self.offset.0)
    }
}

/// dm-crypt (the kernel's admin-guide/device-mapper/dm-crypt.rst): `CIPHER KEY IV_OFFSET
/// DEV OFFSET [1 sector_size:N]`. The key is a keyring reference (`:LEN:logon:DESC`) or hex.
pub struct Crypt<'a> {
    pub cipher: &'a str,
    pub key: &'a str,
    pub iv_offset: Sectors,
    pub dev: Device,
    pub offset: Sectors,
    pub sector_size: u32,
}

impl Params for Crypt<'_> {
    const KIND: &'static str = "crypt";
}

impl std::fmt::Display for Crypt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} {} {}", self.cipher, self.key, self.iv_offset.0, self.dev, self.offset.0)?;
        if self.sector_size != 512 {
            write!(f, " 1 sector_size:{}", self.sector_size)?;
        }
        Ok(())
    }
}

/// dm-raid1 with a core (in-memory) log: `core 1 REGION #LEGS DEV OFF... [1 handle_errors]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub region: Sectors,
    pub legs: Vec<Linear>,
    pub handle_errors: bool,
}

impl Params for Mirror {
    const KIND: &'static str = "mirror";
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "core 1 {} {}", self.region.0, self.legs.len())?;
        for l in &self.legs {
            write!(f, " {l}")?;
        }
        if self.handle_errors {
            write!(f, " 1 handle_errors")?;
        }
        Ok(())
    }
}

impl Mirror {
    /// A mirror table as the kernel prints it: `LOGTYPE #LOGARGS ARGS... #LEGS DEV OFF...
    /// [#FEATURES FEATURES...]`; the region size is the core log's first argument (a disk
    /// log's second).
    pub fn parse(params: &str) -> Option<Mirror> {
        let t: Vec<&str> = params.split_whitespace().collect();
        let log_args: usize = t.get(1)?.parse().ok()?;
        let region = t.get(if *t.first()? == "disk" { 3 } else { 2 })?.parse().ok().map(Sectors)?;
        let at = 2 + log_args;
        let n: usize = t.get(at)?.parse().ok()?;
        let legs = (0..n)
            .map(|i| {
                Some(Linear { dev: t.get(at + 1 + 2 * i)?.parse().ok()?, offset: Sectors(t.get(at + 2 + 2 * i)?.parse().ok()?) })
            })
            .collect::<Option<Vec<_>>>()?;
        let handle_errors = t[at + 1 + 2 * n..].contains(&"handle_errors");
        Some(Mirror { region, legs, handle_errors })
    }
}

/// devicemapper-rs's form of a table.
type RawTable = Vec<(u64, u64, String, String)>;

fn to_raw(table: &[Target]) -> RawTable {
    table.iter().map(|t| (t.start.0, t.len.0, t.kind.clone(), t.params.clone())).collect()
}

fn from_raw(raw: RawTable) -> Vec<Target> {
    raw.into_iter().map(|(s, l, kind, params)| Target { start: Sectors(s), len: Sectors(l), kind, params }).collect()
}

/// A device-mapper device name (/dev/mapper/NAME), checked once where it enters: the
/// kernel's list, `--name`, the names we make. The dm calls below take nothing else,
/// so a VG, LV or PV name cannot reach them by mistake.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DmName(String);

impl DmName {
    /// What the kernel takes (`dev_create` in dm-ioctl.c: shorter than DM_NAME_LEN, no
    /// '/') and what can be a file under /dev/mapper.
    pub fn new(name: impl Into<String>) -> Result<DmName> {
        let name = name.into();
        if name.is_empty() || name.len() >= 128 || name.contains(['/', '\0']) || name == "." || name == ".." {
            return Err(Error::new(Kind::Refused, format!("Invalid device-mapper name {name:?}.")));
        }
        Ok(DmName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn id(&self) -> DevId<'_> {
        DevId::Name(devicemapper::DmName::new(&self.0).expect("checked by DmName::new"))
    }

    fn raw(&self) -> &devicemapper::DmName {
        devicemapper::DmName::new(&self.0).expect("checked by DmName::new")
    }
}

impl TryFrom<String> for DmName {
    type Error = Error;
    fn try_from(s: String) -> Result<DmName> {
        DmName::new(s)
    }
}

impl From<DmName> for String {
    fn from(n: DmName) -> String {
        n.0
    }
}

impl std::fmt::Display for DmName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

impl PartialEq<str> for DmName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A dm device stacked (directly or not) on the PV.
#[derive(Debug, Clone)]
pub struct Holder {
    pub name: DmName,
    pub uuid: Option<String>,
    /// Its table names the PV itself (so it must be retargeted).
    pub direct: bool,
    /// 0 for a direct holder; one more than the highest holder it sits on.
    pub height: u32,
}

pub struct Dm {
    dm: DM,
}

impl Dm {
    pub fn open() -> Result<Dm> {
        let dm = DM::new().or_fail(|| "Cannot open /dev/mapper/control (is device-mapper available?)".into())?;
        Ok(Dm { dm })
    }

    /// Every dm device that depends on `base`, ordered top-down (suspend order).
    pub fn holders(&self, base: Device) -> Result<Vec<Holder>> {
        let mut deps: HashMap<Device, (DmName, Vec<Device>)> = HashMap::new();
        for (name, dev, _) in self.dm.list_devices().or_fail(|| "Cannot list dm devices".into())? {
            let name = DmName::new(name.to_string())?;
            let d = self
                .dm
                .table_deps(&name.id(), DmOptions::default())
                .or_fail(|| format!("Cannot read the dependencies of {name}"))?;
            deps.insert(dev, (name, d));
        }
        let mut height: HashMap<Device, u32> = HashMap::new();
        // Fixed point: each pass settles at least one more level of the stack.
        loop {
            let mut changed = false;
            for (dev, (_, d)) in &deps {
                let h = d.iter().filter_map(|x| if *x == base { Some(0) } else { height.get(x).map(|h| h + 1) }).max();
                if let Some(h) = h {
                    if height.get(dev) != Some(&h) {
                        if h as usize > deps.len() {
                            return fail(format!("dm dependency loop at {}", deps[dev].0));
                        }
                        height.insert(*dev, h);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut out = Vec::new();
        for (dev, h) in height {
            let (name, d) = &deps[&dev];
            let info = self.dm.device_info(&name.id()).or_fail(|| format!("Cannot query {name}"))?;
            out.push(Holder {
                name: name.clone(),
                uuid: info.uuid().map(|u| u.to_string()),
                direct: d.contains(&base),
                height: h,
            });
        }
        out.sort_by(|a, b| b.height.cmp(&a.height).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// The dm devices whose uuid starts with `prefix` (e.g. every LV of a VG).
    pub fn devices_with_uuid(&self, prefix: &str) -> Result<Vec<Device>> {
        let mut out = Vec::new();
        for (name, dev, _) in self.dm.list_devices().or_fail(|| "Cannot list dm devices".into())? {
            let info = self.dm.device_info(&DevId::Name(&name)).or_fail(|| format!("Cannot query {}", &*name))?;
            if info.uuid().is_some_and(|u| u.to_string().starts_with(prefix)) {
                out.push(dev);
            }
        }
        Ok(out)
    }

    pub fn table(&self, name: &DmName) -> Result<Vec<Target>> {
        let (_, t) = self
            .dm
            .table_status(&name.id(), DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE))
            .or_fail(|| format!("Cannot read the table of {name}"))?;
        Ok(from_raw(t))
    }

    fn inactive_table(&self, name: &DmName) -> Result<Vec<Target>> {
        let opts = DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE | DmFlags::DM_QUERY_INACTIVE_TABLE);
        let (_, t) = self.dm.table_status(&name.id(), opts).or_fail(|| format!("Cannot read the new table of {name}"))?;
        Ok(from_raw(t))
    }

    /// Suspends, flushing queued I/O; a filesystem on top is frozen by the kernel.
    pub fn suspend(&self, name: &DmName) -> Result<()> {
        self.dm
            .device_suspend(&name.id(), DmOptions::default().set_flags(DmFlags::DM_SUSPEND))
            .or_fail(|| format!("Cannot suspend {name}"))?;
        Ok(())
    }

    /// Resumes without waiting for udev (see `unsynced`): safe inside the freeze.
    pub fn resume(&self, name: &DmName) -> Result<()> {
        if crate::fault::fails("resume", name.as_str()) {
            return fail(format!("Cannot resume {name}: injected failure"));
        }
        self.unsynced(devicemapper_sys::DM_DEV_SUSPEND_CMD, name, 0).or_fail(|| format!("Cannot resume {name}"))
    }

    /// Suspends without waiting for udev, and without freezing a filesystem (none sits
    /// directly on the devices the data mover suspends).
    pub fn suspend_unsynced(&self, name: &DmName) -> Result<()> {
        let flags = (DmFlags::DM_SUSPEND | DmFlags::DM_SKIP_LOCKFS).bits();
        self.unsynced(devicemapper_sys::DM_DEV_SUSPEND_CMD, name, flags).or_fail(|| format!("Cannot suspend {name}"))
    }

    /// Suspends without flushing: a target's held I/O goes back to the device's queue
    /// and is sent again, through the table it resumes with (dm core's requeue; how LVM
    /// suspends mirrors).
    pub fn suspend_noflush(&self, name: &DmName) -> Result<()> {
        let flags = (DmFlags::DM_SUSPEND | DmFlags::DM_NOFLUSH | DmFlags::DM_SKIP_LOCKFS).bits();
        self.unsynced(devicemapper_sys::DM_DEV_SUSPEND_CMD, name, flags).or_fail(|| format!("Cannot suspend {name}"))
    }

    /// A resume or remove with no udev cookie. devicemapper-rs attaches one to every
    /// resume, remove and rename whenever udev runs, then blocks in semop until udev's
    /// rules have run `dmsetup udevcomplete` (dm_udev_sync.rs, `UdevSync::begin`/`end`).
    /// Inside the freeze the udev worker may need a page of the suspended root to get
    /// there: a deadlock. The kernel still sends its uevent; udev treats it as one not
    /// from libdevmapper and keeps the flags in its database (10-dm.rules); `udev_catch_up`
    /// lets it settle once nothing is suspended.
    fn unsynced(&self, cmd: u32, name: &DmName, flags: u32) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        type Hdr = devicemapper_sys::dm_ioctl;
        let size = std::mem::size_of::<Hdr>();
        let mut hdr = Hdr { version: [4, 0, 0], data_size: size as u32, data_start: size as u32, flags, ..Default::default() };
        if name.as_str().len() >= hdr.name.len() {
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        for (d, s) in hdr.name.iter_mut().zip(name.as_str().bytes()) {
            *d = s as libc::c_char;
        }
        // _IOWR(DM_IOCTL, cmd, struct dm_ioctl), as <linux/dm-ioctl.h> defines the requests.
        let req = (3u64 << 30) | ((size as u64) << 16) | ((devicemapper_sys::DM_IOCTL as u64) << 8) | cmd as u64;
        // SAFETY: hdr is a valid dm_ioctl whose data_size covers only itself; the kernel
        // writes back at most data_size bytes into it.
        if unsafe { libc::ioctl(self.dm.file().as_raw_fd(), req as libc::c_ulong, &mut hdr as *mut Hdr) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether `name` has a table loaded that a resume would make live.
    pub fn has_inactive(&self, name: &DmName) -> Result<bool> {
        let info = self.dm.device_info(&name.id()).or_fail(|| format!("Cannot query {name}"))?;
        Ok(info.flags().contains(DmFlags::DM_INACTIVE_PRESENT))
    }

    /// Loads `table` as the inactive table and checks the kernel's copy equals it.
    pub fn load_verified(&self, name: &DmName, table: &[Target]) -> Result<()> {
        if crate::fault::fails("load", name.as_str()) {
            return fail(format!("Cannot load the new table of {name}: injected failure"));
        }
        self.dm
            .table_load(&name.id(), &to_raw(table), DmOptions::default())
            .or_fail(|| format!("Cannot load the new table of {name}"))?;
        let back = self.inactive_table(name)?;
        if !same_table(&back, table) {
            let _ = self.dm.table_clear(&name.id());
            return fail(format!("The kernel's copy of the new table of {name} differs: {back:?}"));
        }
        Ok(())
    }

    pub fn clear_inactive(&self, name: &DmName) -> Result<()> {
        self.dm.table_clear(&name.id()).or_fail(|| format!("Cannot clear the new table of {name}"))?;
        Ok(())
    }

    /// A new device with `table` loaded but not live: a resume makes it so. Its uevents
    /// carry no udev cookie, so udev's dm rules keep it private (10-dm.rules sends such
    /// an "add" to dm_disable and later events take their flags from that).
    pub fn create(&self, name: &DmName, uuid: &str, table: &[Target]) -> Result<Device> {
        let u = DmUuid::new(uuid).or_fail(|| format!("Bad dm uuid {uuid}"))?;
        let info =
            self.dm.device_create(name.raw(), Some(u), DmOptions::private()).or_fail(|| format!("Cannot create {name}"))?;
        if let Err(e) = self.load_verified(name, table) {
            self.remove(name);
            return Err(e);
        }
        Ok(info.device())
    }

    /// The targets' status lines (not their tables).
    pub fn status(&self, name: &DmName) -> Result<Vec<Target>> {
        let (_, t) =
            self.dm.table_status(&name.id(), DmOptions::default()).or_fail(|| format!("Cannot read the status of {name}"))?;
        Ok(from_raw(t))
    }

    /// Every dm device whose uuid starts with `prefix`: (name, uuid).
    pub fn named_with_uuid(&self, prefix: &str) -> Result<Vec<(DmName, String)>> {
        let mut out = Vec::new();
        for (name, _, _) in self.dm.list_devices().or_fail(|| "Cannot list dm devices".into())? {
            let name = DmName::new(name.to_string())?;
            if let Ok(info) = self.dm.device_info(&name.id()) {
                if let Some(u) = info.uuid().map(|u| u.to_string()).filter(|u| u.starts_with(prefix)) {
                    out.push((name, u));
                }
            }
        }
        Ok(out)
    }

    /// Waits up to `ms` for an event on any dm device (a mirror in sync, a leg failing),
    /// or a signal. Arm first, then look, then wait: no event is missed.
    pub fn arm_events(&self) -> Result<()> {
        self.dm.arm_poll().or_fail(|| "Cannot arm device-mapper events".into())?;
        Ok(())
    }

    pub fn wait_events(&self, ms: i32) {
        use std::os::fd::AsRawFd;
        crate::sys::poll_in(self.dm.file().as_raw_fd(), ms);
    }

    /// A linear alias of the whole of `dev`, invisible to LVM and udev rules.
    pub fn create_alias(&self, name: &DmName, uuid: &str, dev: Device, len: Sectors) -> Result<Device> {
        let n = name;
        let u = DmUuid::new(uuid).or_fail(|| format!("Bad dm uuid {uuid}"))?;
        let info =
            self.dm.device_create(name.raw(), Some(u), DmOptions::private()).or_fail(|| format!("Cannot create {name}"))?;
        let table = [Target::of(Sectors(0), len, &Linear { dev, offset: Sectors(0) })];
        let loaded = self
            .load_verified(n, &table)
            .and_then(|_| self.dm.device_suspend(&n.id(), DmOptions::private()).or_fail(|| format!("Cannot resume {name}")));
        if let Err(e) = loaded {
            self.remove(n);
            return Err(e);
        }
        Ok(info.device())
    }

    /// Loads dm-crypt and the cipher's kernel modules now, with a throw-away mapping:
    /// inside the freeze their autoloading would run modprobe from a disk that may be
    /// frozen.
    pub fn probe_crypt(&self, name: &DmName, cipher: &str, key_bytes: usize, sector_size: u32, dev: Device) -> Result<()> {
        use std::fmt::Write;
        use zeroize::Zeroize;
        // A throw-away random key; still, no copy of it outlives this function.
        let mut raw = zeroize::Zeroizing::new(vec![0u8; key_bytes]);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
            .or_fail(|| "/dev/urandom".into())?;
        let mut hex = zeroize::Zeroizing::new(String::with_capacity(2 * key_bytes));
        for b in raw.iter() {
            let _ = write!(hex, "{b:02x}");
        }
        let crypt = Crypt { cipher, key: &hex, iv_offset: Sectors(0), dev, offset: Sectors(0), sector_size };
        let mut params = String::with_capacity(cipher.len() + 2 * key_bytes + 64);
        let _ = write!(params, "{crypt}");
        let mut table = [(0, (sector_size / 512) as u64, Crypt::KIND.to_string(), params)];
        let r = self
            .dm
            .device_create(name.raw(), None, DmOptions::private())
            .or_fail(|| format!("Cannot create {name}"))
            .and_then(|_| {
                let r = self.dm.table_load(&name.id(), &table, DmOptions::default().set_flags(DmFlags::DM_SECURE_DATA)).map_err(
                    |e| {
                        let msg = format!("The kernel cannot set up dm-crypt with cipher {cipher} ({})", errno_of(&e));
                        Error::new(Kind::Failed, msg)
                    },
                );
                self.remove(name);
                r
            });
        table[0].3.zeroize();
        r.map(|_| ())
    }

    /// Removes the dm-crypt mappings on `base` through which the reencryption of a process
    /// that died wrote (libcryptsetup's `temporary-cryptsetup-PID-N`, when its crypto library lacks the cipher):
    /// nothing else would, and each keeps the volume key in the kernel.
    pub fn remove_stale_temporaries(&self, base: Device) -> Result<Vec<DmName>> {
        let mut removed = Vec::new();
        for (name, _, _) in self.dm.list_devices().or_fail(|| "Cannot list dm devices".into())? {
            let name = DmName::new(name.to_string())?;
            let Some(pid) = name.as_str().strip_prefix("temporary-cryptsetup-").and_then(|r| r.split('-').next()) else {
                continue;
            };
            if pid.parse::<u32>().is_err() || std::path::Path::new("/proc").join(pid).exists() {
                continue;
            }
            if self.dm.table_deps(&name.id(), DmOptions::default()).is_ok_and(|d| d.contains(&base)) {
                self.dm.device_remove(&name.id(), DmOptions::private()).or_fail(|| format!("Cannot remove {name}"))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Removes `name` if nothing uses it; never waits for udev (see `unsynced`). Without
    /// udev, nobody else removes the node libcryptsetup made for it (libdevmapper's
    /// fallback creates /dev/mapper nodes itself then).
    pub fn remove(&self, name: &DmName) {
        self.remove_with(name, 0);
    }

    /// Has the kernel remove `name` once its last opener closes it (udev's probe, for
    /// one): what is left when `remove` kept failing.
    pub fn remove_deferred(&self, name: &DmName) {
        self.remove_with(name, DmFlags::DM_DEFERRED_REMOVE.bits());
    }

    fn remove_with(&self, name: &DmName, flags: u32) {
        if self.unsynced(devicemapper_sys::DM_DEV_REMOVE_CMD, name, flags).is_ok() && !Path::new(UDEV_CONTROL).exists() {
            let _ = std::fs::remove_file(Path::new("/dev/mapper").join(name.as_str()));
        }
    }

    pub fn is_suspended(&self, name: &DmName) -> bool {
        self.dm.device_info(&name.id()).is_ok_and(|i| i.flags().contains(DmFlags::DM_SUSPEND))
    }

    pub fn exists(&self, name: &DmName) -> bool {
        self.dm.device_info(&name.id()).is_ok()
    }

    /// How many openers the device has (a mount, a process, a dm device stacked on it).
    pub fn open_count(&self, name: &DmName) -> Result<i32> {
        Ok(self.dm.device_info(&name.id()).or_fail(|| format!("No dm device {name}"))?.open_count())
    }

    pub fn device_of(&self, name: &DmName) -> Result<Device> {
        Ok(self.dm.device_info(&name.id()).or_fail(|| format!("No dm device {name}"))?.device())
    }
}

/// udev's control socket: it exists while udev runs (devicemapper-rs checks the same).
const UDEV_CONTROL: &str = "/run/udev/control";

/// After the freeze: asks udev to look again at the devices the switch resumed without
/// it (a "change" uevent each, as `udevadm trigger` sends), then waits for it to settle,
/// so that symlinks and its database are current before anything else runs. Best
/// effort: udev may not run at all.
pub fn udev_catch_up(devices: &[Device]) {
    for d in devices {
        let _ = std::fs::write(format!("/sys/dev/block/{d}/uevent"), "change");
    }
    if Path::new(UDEV_CONTROL).exists() {
        let mut settle = std::process::Command::new("udevadm");
        settle.args(["settle", "--timeout=60"]);
        let _ = crate::sys::output(&mut settle);
    }
}

/// The kernel's answer alone: the crate's message also dumps the ioctl headers.
fn errno_of(e: &devicemapper::DmError) -> String {
    match e {
        devicemapper::DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)) => errno.desc().to_string(),
        other => other.to_string(),
    }
}

/// The table with every reference to `from` replaced by `to`, and how many were replaced.
///
/// The kernel prints device references as "major:minor" in decimal; a parameter is a
/// device exactly when the whole whitespace-separated token is that pair, so offsets
/// and other numbers are never touched.
pub fn retarget(table: &[Target], from: Device, to: Device) -> (Vec<Target>, usize) {
    let (from, to) = (from.to_string(), to.to_string());
    let mut n = 0;
    let out = table
        .iter()
        .map(|t| {
            let params: Vec<&str> = t
                .params
                .split_whitespace()
                .map(|tok| {
                    if tok == from {
                        n += 1;
                        to.as_str()
                    } else {
                        tok
                    }
                })
                .collect();
            Target { params: params.join(" "), ..t.clone() }
        })
        .collect();
    (out, n)
}

/// Devices a table references, parsed from its parameters.
pub fn referenced(table: &[Target]) -> HashSet<Device> {
    table
        .iter()
        .flat_map(|t| t.params.split_whitespace())
        .filter(|tok| tok.contains(':'))
        .filter_map(|tok| tok.parse::<Device>().ok())
        .collect()
}

fn same_table(a: &[Target], b: &[Target]) -> bool {
    fn norm(t: &[Target]) -> Vec<(Sectors, Sectors, &str, Vec<&str>)> {
        t.iter().map(|t| (t.start, t.len, t.kind.as_str(), t.params.split_whitespace().collect())).collect()
    }
    norm(a) == norm(b)
}

#[derive(Debug, PartialEq)]
pub struct MirrorStatus {
    pub synced: u64,
    pub regions: u64,
    pub health: String,
}

/// dm-raid1's status line: `N dev... SYNCED/REGIONS 1 HEALTH log-status...`.
pub fn mirror_status(s: &str) -> Option<MirrorStatus> {
    let t: Vec<&str> = s.split_whitespace().collect();
    let n: usize = t.first()?.parse().ok()?;
    let (synced, regions) = t.get(1 + n)?.split_once('/')?;
    let health = t.get(3 + n)?.to_string();
    (health.len() == n).then_some(MirrorStatus { synced: synced.parse().ok()?, regions: regions.parse().ok()?, health })
}

/// The block device `path` names, and its size; anything else is refused.
pub fn block_device(path: &Path) -> Result<(Device, Sectors)> {
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
    Ok((dev, Sectors(size)))
}

/// The kernel names of what holds `dev` as its lower device (sysfs `holders`): dm-N for
/// device-mapper, md, bcache...
pub fn holders_of(dev: Device) -> Vec<String> {
    fs::read_dir(format!("/sys/dev/block/{dev}/holders"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64, l: u64, ty: &str, p: &str) -> Target {
        Target::new(Sectors(s), Sectors(l), ty, p)
    }
    const RAW: Device = Device { major: 254, minor: 0 };
    const CRYPT: Device = Device { major: 253, minor: 7 };

    #[test]
    fn linear_is_retargeted_at_the_same_offset() {
        let (out, n) = retarget(&[t(0, 8192, "linear", "254:0 2048")], RAW, CRYPT);
        assert_eq!(n, 1);
        assert_eq!(out, vec![t(0, 8192, "linear", "253:7 2048")]);
    }

    #[test]
    fn striped_across_two_pvs_only_moves_ours() {
        let table = [t(0, 16384, "striped", "2 128 254:0 2048 254:16 2048")];
        let (out, n) = retarget(&table, RAW, CRYPT);
        assert_eq!(n, 1);
        assert_eq!(out[0].params, "2 128 253:7 2048 254:16 2048");
    }

    #[test]
    fn numbers_that_look_alike_are_not_devices() {
        // An offset equal to the major, a device with a longer minor, hex-looking noise.
        let table = [t(0, 8, "linear", "254:01 254"), t(8, 8, "linear", "2254:0 0"), t(16, 8, "linear", "254:00 0")];
        let (out, n) = retarget(&table, RAW, CRYPT);
        assert_eq!(n, 0);
        assert_eq!(out, table.to_vec());
    }

    #[test]
    fn multi_segment_lv_spanning_two_pvs() {
        let table = [t(0, 81920, "linear", "254:0 1050624"), t(81920, 81920, "linear", "254:16 2048")];
        let (out, n) = retarget(&table, RAW, CRYPT);
        assert_eq!(n, 1);
        assert_eq!(out[0].params, "253:7 1050624");
        assert_eq!(out[1].params, "254:16 2048");
        assert!(!referenced(&out).contains(&RAW));
        assert!(referenced(&out).contains(&Device { major: 254, minor: 16 }));
    }

    #[test]
    fn dm_names_the_kernel_would_refuse_are_refused() {
        for bad in ["", ".", "..", "a/b", "nul\0", &"x".repeat(128)] {
            assert!(DmName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(DmName::new("x".repeat(127)).unwrap().as_str().len(), 127);
        let n: DmName = serde_json::from_str("\"sda5_crypt\"").unwrap();
        assert_eq!(n.to_string(), "sda5_crypt");
        assert!(serde_json::from_str::<DmName>("\"a/b\"").is_err());
    }

    #[test]
    fn tables_compare_by_tokens() {
        assert!(same_table(&[t(0, 8, "linear", "1:2  0")], &[t(0, 8, "linear", "1:2 0")]));
        assert!(!same_table(&[t(0, 8, "linear", "1:2 0")], &[t(0, 8, "linear", "1:2 8")]));
    }

    #[test]
    fn mirror_status_parsed() {
        let m = mirror_status("2 254:0 253:5 120/128 1 AA 1 core").unwrap();
        assert_eq!(m, MirrorStatus { synced: 120, regions: 128, health: "AA".into() });
        assert_eq!(mirror_status("2 254:0 253:5 128/128 1 AD 1 core").unwrap().health, "AD");
        assert!(mirror_status("2 254:0 253:5 1 AA").is_none());
        assert!(mirror_status("").is_none());
    }

    #[test]
    fn legs_of_a_core_mirror() {
        let leg = |major, minor, offset| Linear { dev: Device { major, minor }, offset: Sectors(offset) };
        let ours = Mirror { region: Sectors(2048), legs: vec![leg(254, 0, 40960), leg(253, 7, 0)], handle_errors: true };
        assert_eq!(ours.to_string(), "core 1 2048 2 254:0 40960 253:7 0 1 handle_errors");
        assert_eq!(Mirror::parse(&ours.to_string()), Some(ours.clone()));
        let plain = Mirror { handle_errors: false, ..ours.clone() };
        assert_eq!(Mirror::parse("core 1 2048 2 254:0 40960 253:7 0"), Some(plain));
        let nosync = Mirror::parse("core 2 2048 nosync 2 8:16 0 253:7 0").unwrap();
        assert_eq!((nosync.region, nosync.legs[0]), (Sectors(2048), leg(8, 16, 0)));
        assert_eq!(Mirror::parse("disk 2 253:9 1024 2 8:16 0 253:7 0").unwrap().region, Sectors(1024));
        assert_eq!(Mirror::parse("core 1 2048"), None);
        assert_eq!(Mirror::parse("core 1 2048 2 254:0 40960"), None);
        let crypt = Crypt {
            cipher: "aes-xts-plain64",
            key: ":64:logon:pvencrypt:u",
            iv_offset: Sectors(8),
            dev: Device { major: 8, minor: 16 },
            offset: Sectors(32776),
            sector_size: 4096,
        };
        assert_eq!(crypt.to_string(), "aes-xts-plain64 :64:logon:pvencrypt:u 8 8:16 32776 1 sector_size:4096");
        assert_eq!(Crypt { sector_size: 512, ..crypt }.to_string(), "aes-xts-plain64 :64:logon:pvencrypt:u 8 8:16 32776");
    }
}
