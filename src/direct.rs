//! Direct I/O on the devices: page-aligned buffers, copies and wipes that bypass the
//! page cache. The LVs write through device-mapper, never through a page cache we
//! could read, so everything that must see (or leave) the device's real bytes uses
//! O_DIRECT and ends with a flush of the disk's cache.

use std::{
    alloc::{self, Layout},
    fs::{File, OpenOptions},
    io,
    ops::{Deref, DerefMut},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
};

use crate::units::Bytes;

const ALIGN: usize = 4096;
/// The unit of every copy: large enough for full-speed I/O, small enough to stay
/// resident at no cost.
pub const CHUNK: usize = 1 << 20;

/// A zeroed, 4 KiB-aligned buffer (O_DIRECT needs the alignment).
pub struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    pub fn new(len: usize) -> Aligned {
        let len = len.next_multiple_of(ALIGN).max(ALIGN);
        let layout = Layout::from_size_align(len, ALIGN).expect("aligned layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        Aligned { ptr, len }
    }

    pub fn from_bytes(b: &[u8]) -> Aligned {
        let mut a = Aligned::new(b.len());
        a[..b.len()].copy_from_slice(b);
        a
    }
}

impl Deref for Aligned {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { alloc::dealloc(self.ptr, Layout::from_size_align(self.len, ALIGN).expect("aligned layout")) };
    }
}

pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(path)
}

/// Copies `len` bytes from `from` to `to` on one device, through `buf`.
pub fn copy(f: &File, buf: &mut Aligned, Bytes(from): Bytes, Bytes(to): Bytes, Bytes(len): Bytes) -> io::Result<()> {
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], from + off)?;
        f.write_all_at(&buf[..n], to + off)?;
        off += n as u64;
    }
    f.sync_data()
}

/// Fails unless the device holds `data` at `at`.
pub fn verify(f: &File, buf: &mut Aligned, data: &[u8], at: u64) -> io::Result<()> {
    let step = buf.len();
    for (i, want) in data.chunks(step).enumerate() {
        let pos = at + (i * step) as u64;
        let got = &mut buf[..want.len()];
        f.read_exact_at(got, pos)?;
        if got != want {
            return Err(io::Error::other(format!("the bytes read back at {pos} differ from those written")));
        }
    }
    Ok(())
}

/// Overwrites each (offset, length) with zeros.
pub fn zero(path: &Path, ranges: &[(Bytes, Bytes)]) -> io::Result<()> {
    let f = open(path)?;
    let zeros = Aligned::new(CHUNK);
    for &(Bytes(at), Bytes(len)) in ranges {
        let mut off = 0;
        while off < len {
            let n = (len - off).min(CHUNK as u64) as usize;
            f.write_all_at(&zeros[..n], at + off)?;
            off += n as u64;
        }
    }
    f.sync_data()
}
