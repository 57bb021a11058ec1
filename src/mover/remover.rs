//! Discarded mover devices are removed off the commit path.

use crate::{
    dm::{Dm, DmName},
    error::{Context, Result},
    output,
};

/// Removes discarded devices on a thread of its own: a removal waits for RCU grace
/// periods and workqueue teardown (tens of milliseconds in the VM), which would otherwise
/// hold up every commit. In order: a mirror is queued before its dm-crypt device.
pub(super) struct Remover {
    tx: Option<std::sync::mpsc::Sender<DmName>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Remover {
    pub(super) fn start() -> Result<Remover> {
        let dm = Dm::open()?;
        let (tx, rx) = std::sync::mpsc::channel::<DmName>();
        let thread = crate::sys::spawn_unsignalled("pvencrypt-rm", move || rx.iter().for_each(|n| remove_patiently(&dm, &n)))
            .or_fail(|| "Cannot start a thread".into())?;
        Ok(Remover { tx: Some(tx), thread: Some(thread) })
    }

    pub(super) fn remove(&self, name: &DmName) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(name.clone());
        }
    }

    /// Waits until everything queued is removed.
    pub(super) fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Remover {
    fn drop(&mut self) {
        self.finish();
    }
}

/// udev may hold a device open for a moment after its events; the remove is retried
/// (outside any suspension), then left to the kernel for when the last opener closes it: a
/// device left behind holds the PV, and stock cryptsetup would refuse to open it.
pub(crate) fn remove_patiently(dm: &Dm, name: &DmName) {
    for _ in 0..100 {
        dm.remove(name);
        if !dm.exists(name) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    dm.remove_deferred(name);
    if dm.exists(name) {
        output::error(&format!("WARNING: {name} is still open; the kernel removes it once it is closed."));
    }
}
