//! `pvencrypt A B C` converts one PV after another. The ones not finished yet are
//! recorded on the disk, so that an interruption during A (a signal, a reboot) does not
//! forget B and C: `--status` lists them as queued, and `pvencrypt` with no PV goes on
//! with them, with the options they were queued with. `--abort` drops them.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Context, Error, Kind, Result},
    options::Options,
    running::{Phase, Status},
};

/// Persistent, as a pvmove in progress is: a reboot must not forget B and C.
pub const QUEUE: &str = "/var/lib/pvencrypt/queue.json";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Queued {
    pub pv: PathBuf,
    /// Device names may change across a reboot; the PV uuid does not.
    pub pv_uuid: String,
    /// The command line it was queued with, for its conversion options. pvencrypt never
    /// takes a passphrase in its arguments, so there is no secret here.
    pub args: Vec<String>,
}

impl Queued {
    /// The conversion options it was queued with; what the current run is asked to do
    /// (confirmation, progress, verbosity) comes from `now`.
    pub fn options(&self, now: &Options) -> Result<Options> {
        let queued = Options::from_args(&self.args).map_err(|e| {
            Error::new(Kind::Failed, format!("{}: the queued command line no longer parses: {e}", self.pv.display()))
        })?;
        Ok(Options { yes: now.yes, interval: now.interval, verbose: now.verbose, quiet: now.quiet, ..queued })
    }
}

/// Where the queued PV is now: at its recorded path if that still holds it as a plain
/// PV, else wherever LVM finds its uuid on a device that is not device-mapper's (a
/// converted PV shows on /dev/mapper/NAME). `None` once it is converted or gone.
pub fn find(q: &Queued) -> Option<PathBuf> {
    let plain = |p: &Path| {
        crate::inspect::inspect(p) == crate::inspect::State::Other
            && crate::lvm::pv(p).ok().flatten().is_some_and(|pv| pv.pv_uuid == q.pv_uuid)
    };
    if plain(&q.pv) {
        return Some(q.pv.clone());
    }
    let pvs = crate::lvm::pvs(None).ok()?;
    pvs.into_iter().filter(|pv| pv.pv_uuid == q.pv_uuid).map(|pv| PathBuf::from(pv.pv_name)).find(|p| !is_dm(p) && plain(p))
}

/// By device number: without udev, /dev/mapper/NAME is a node of its own, not a link.
fn is_dm(p: &Path) -> bool {
    crate::dm::block_device(p).is_ok_and(|(dev, _)| Path::new(&format!("/sys/dev/block/{dev}/dm")).exists())
}

pub struct Queue {
    path: PathBuf,
}

impl Queue {
    pub fn system() -> Queue {
        Queue::at(Path::new(QUEUE))
    }

    pub fn at(path: &Path) -> Queue {
        Queue { path: path.into() }
    }

    /// What is queued; a missing or unreadable file is an empty queue.
    pub fn load(&self) -> Vec<Queued> {
        fs::read(&self.path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Appends `items`, replacing any entry for the same PV.
    pub fn add(&self, items: &[Queued]) -> Result<()> {
        self.update(|q| {
            q.retain(|o| !items.iter().any(|i| i.pv_uuid == o.pv_uuid));
            q.extend(items.iter().cloned());
        })
    }

    /// As `--status` lists them: their names are not known before preflight.
    pub fn statuses(&self) -> Vec<Status> {
        self.load()
            .into_iter()
            .map(|q| Status { pv: q.pv.display().to_string(), state: Phase::Queued, ..Default::default() })
            .collect()
    }

    /// `--abort`: drops the queued PVs in `which` (all if empty); returns them.
    pub fn drop_pvs(&self, which: &[PathBuf]) -> Result<Vec<Queued>> {
        let mut dropped = Vec::new();
        self.update(|q| {
            q.retain(|o| {
                let hit = which.is_empty() || which.iter().any(|p| crate::running::same_device(p, &o.pv));
                if hit {
                    dropped.push(o.clone());
                }
                !hit
            })
        })?;
        Ok(dropped)
    }

    pub fn remove(&self, pv_uuid: &str) -> Result<()> {
        self.update(|q| q.retain(|o| o.pv_uuid != pv_uuid))
    }

    /// Under a lock, so that two runs cannot lose each other's change; written beside
    /// and renamed, so that a crash leaves the old queue or the new one.
    fn update(&self, change: impl FnOnce(&mut Vec<Queued>)) -> Result<()> {
        let _lock = crate::sys::lock_file(&self.path.with_extension("lock"))
            .or_fail(|| format!("Cannot lock {}", self.path.display()))?;
        let mut q = self.load();
        let before = q.clone();
        change(&mut q);
        if q == before {
            return Ok(());
        }
        let written = if q.is_empty() {
            crate::sys::remove_file_durably(&self.path)
        } else {
            crate::sys::replace_file(&self.path, &serde_json::to_vec_pretty(&q).expect("serializes"), 0o644)
        };
        written.or_fail(|| format!("Cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pv: &str, uuid: &str) -> Queued {
        Queued { pv: pv.into(), pv_uuid: uuid.into(), args: vec!["--cipher".into(), "serpent-xts-plain64".into(), pv.into()] }
    }

    #[test]
    fn queue_survives_in_its_file_and_empties_to_nothing() {
        let dir = crate::testing::TempDir::new("queue");
        let q = Queue::at(&dir.join("queue.json"));
        assert!(q.load().is_empty());
        q.add(&[item("/dev/sdb", "u-b"), item("/dev/sdc", "u-c")]).unwrap();
        // A second run queuing sdc again (renamed since) keeps one entry for it.
        q.add(&[item("/dev/sdd", "u-c")]).unwrap();
        let again = Queue::at(&dir.join("queue.json")).load();
        assert_eq!(again, vec![item("/dev/sdb", "u-b"), item("/dev/sdd", "u-c")]);
        q.remove("u-b").unwrap();
        q.remove("u-c").unwrap();
        assert!(!dir.join("queue.json").exists(), "an empty queue leaves no file");
    }

    #[test]
    fn queued_options_come_from_the_queued_command_line_and_the_mode_from_now() {
        let now = Options::from_args(&["-y".into(), "-i".into(), "5".into()]).unwrap();
        let o = item("/dev/sdb", "u").options(&now).unwrap();
        assert_eq!(o.cipher, "serpent-xts-plain64");
        assert!(o.yes);
        assert_eq!(o.interval, Some(5));
        let bad = Queued { args: vec!["--no-such-option".into()], ..item("/dev/sdb", "u") };
        assert!(bad.options(&now).is_err());
    }
}
