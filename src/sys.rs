//! The libc calls pvencrypt makes on its own process and files, behind safe functions:
//! the one place where plain syscalls are `unsafe`. FFI that needs the caller's context
//! (the dm ioctl, libcryptsetup's and LVM's callbacks, the OpenSSL hook, aligned
//! allocation) stays where it is used, each block with its `SAFETY:` note.

use std::{
    ffi::{c_int, CString},
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, RawFd},
    path::{Path, PathBuf},
};

fn check(rc: c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Flushes every filesystem's dirty data (sync(2)).
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// flock(2) on `f`: `op` is LOCK_EX, LOCK_SH, possibly with LOCK_NB.
pub fn flock(f: &impl AsRawFd, op: c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor `f` keeps open for the call.
    check(unsafe { libc::flock(f.as_raw_fd(), op) })
}

/// An exclusive flock on `path` (created 0600 with its directory), held until the file
/// is dropped; waits for it.
pub fn lock_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        create_dir_durably(dir)?;
    }
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)?;
    flock(&f, libc::LOCK_EX)?;
    Ok(f)
}

/// Replaces `path` with `contents` so that a crash leaves the old file or the new one:
/// written beside it with `mode`, synced, renamed over it, and the directory synced.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::{io::Write, os::unix::fs::PermissionsExt};
    let tmp = path.with_extension(format!("pvencrypt-new-{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir_of(path)
}

/// Removes `path` (gone already is fine) so that a crash cannot bring it back.
pub fn remove_file_durably(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(()) => sync_dir_of(path),
    }
}

/// `create_dir_all`, with every directory it creates synced into its parent, so that a
/// crash cannot lose a file synced into it.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
        Ok(()) => sync_dir_of(dir),
    }
}

fn sync_dir_of(path: &Path) -> io::Result<()> {
    File::open(path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))?.sync_all()
}

/// The block size of the filesystem mounted at `path`.
/// The logical block size of a block device (BLKSSZGET): what the kernel reads and writes
/// it in, 4096 on a 4Kn disk. sysfs has it only for whole disks, not their partitions.
pub fn logical_block_size(dev: &Path) -> io::Result<u32> {
    let f = File::open(dev)?;
    let mut size: c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which outlives the call.
    check(unsafe { libc::ioctl(f.as_raw_fd(), libc::BLKSSZGET, &mut size) })?;
    Ok(size as u32)
}

pub fn statvfs_bsize(path: &str) -> Option<u64> {
    let c = CString::new(path).ok()?;
    // SAFETY: statvfs is plain data; all zeros is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid, writable statvfs.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_bsize)
}

/// The bytes an unprivileged user may still write on the filesystem of PATH.
pub fn statvfs_avail(path: &str) -> Option<u64> {
    let c = CString::new(path).ok()?;
    // SAFETY: statvfs is plain data; all zeros is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid, writable statvfs.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_bavail * st.f_frsize)
}

/// An anonymous file in memory (memfd_create(2)), closed on exec.
pub fn memfd(name: &str) -> io::Result<File> {
    let name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `name` is NUL-terminated; the flags are valid.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Installs `handler` for `sig`. The handler may only touch atomics.
pub fn on_signal(sig: c_int, handler: extern "C" fn(c_int)) {
    // SAFETY: a valid signal number and a handler with the signature signal(2) expects.
    unsafe { libc::signal(sig, handler as *const () as libc::sighandler_t) };
}

pub fn ignore_signal(sig: c_int) {
    // SAFETY: a valid signal number; SIG_IGN is always a valid disposition.
    unsafe { libc::signal(sig, libc::SIG_IGN) };
}

pub fn default_signal(sig: c_int) {
    // SAFETY: a valid signal number; SIG_DFL is always a valid disposition.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

pub fn kill(pid: u32, sig: c_int) {
    // SAFETY: kill(2) touches no memory of ours.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// No core file, and no reading of this process's memory through /proc or ptrace by
/// anyone less than root.
pub fn no_core_dumps() {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit for the call; prctl with an integer argument.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
}

/// fork(2): `Some(pid)` in the parent, `None` in the child. Only while this process has
/// one thread (-b forks before any starts; the mover starts one): the child of a
/// multi-threaded process may only call async-signal-safe functions until it execs.
pub fn fork() -> io::Result<Option<u32>> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!("this process has {threads} threads; fork needs one")));
    }
    // SAFETY: one thread, checked above (only this thread could start another): the
    // child may run any code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid as u32)),
    }
}

/// In a forked child: a session of its own, no terminal (stdio on /dev/null), cwd /.
pub fn become_daemon() {
    // SAFETY: plain syscalls on constant, NUL-terminated paths and our own descriptors.
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
        libc::chdir(c"/".as_ptr());
    }
}

/// One message to the system log, as pvencrypt[PID], facility daemon.
pub fn syslog(prio: c_int, msg: &str) {
    static OPEN: std::sync::Once = std::sync::Once::new();
    // SAFETY: a static ident; openlog only records it.
    OPEN.call_once(|| unsafe { libc::openlog(c"pvencrypt".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) });
    let m = CString::new(msg.replace('\0', " ")).expect("no NUL left");
    // SAFETY: a constant format taking one NUL-terminated string.
    unsafe { libc::syslog(prio, c"%s".as_ptr(), m.as_ptr()) };
}

/// Gives freed heap back to the system.
pub fn malloc_trim() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

/// mlockall(2) with `flags` (MCL_CURRENT, MCL_ONFAULT...).
pub fn mlockall(flags: c_int) -> io::Result<()> {
    // SAFETY: locking pages touches no memory.
    check(unsafe { libc::mlockall(flags) })
}

/// mlock(2) of the address range [start, end).
pub fn mlock(start: usize, end: usize) -> io::Result<()> {
    // SAFETY: mlock only pins pages; a range that is not mapped is an error, not UB.
    check(unsafe { libc::mlock(start as *const libc::c_void, end - start) })
}

pub fn munlockall() {
    // SAFETY: as mlockall.
    unsafe { libc::munlockall() };
}

/// Every signal that can be blocked waits while this lives (SIGKILL and SIGSTOP cannot
/// be; the guardian answers for those). Held around every suspension: a Ctrl-Z there
/// would keep the LVs waiting until SIGCONT, and a SIGINT would interrupt the suspend
/// ioctl (EINTR) instead of stopping at the next checkpoint.
pub struct SignalsHeld(libc::sigset_t);

impl SignalsHeld {
    pub fn hold() -> SignalsHeld {
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask write only into
        // the two local sets.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsHeld(old)
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        // SAFETY: the mask saved in `hold`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// A thread born with every signal blocked, for good: a signal sent to the process then
/// finds only the main thread, which holds them while NAME is suspended. A Ctrl-Z taken
/// by another thread would stop the whole process there. A program it runs would
/// inherit that mask (std's Command passes it on across exec).
pub fn spawn_unsignalled<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    let held = SignalsHeld::hold();
    let thread = std::thread::Builder::new().name(name.into()).spawn(f);
    drop(held);
    thread
}

/// `spawn_unsignalled` for a scoped thread.
pub fn spawn_scoped_unsignalled<'s, 'e, T: Send + 's>(
    s: &'s std::thread::Scope<'s, 'e>,
    name: &str,
    f: impl FnOnce() -> T + Send + 's,
) -> io::Result<std::thread::ScopedJoinHandle<'s, T>> {
    let held = SignalsHeld::hold();
    let thread = std::thread::Builder::new().name(name.into()).spawn_scoped(s, f);
    drop(held);
    thread
}

static LIBDM: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    /// Whether this thread holds LIBDM (a `Libdm` that locked it lives).
    static HOLDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The lock on libdevmapper's globals, which LVM's commands (lvm::run) and libcryptsetup
/// (its first context sets libdevmapper's log function, its last one releases it) share,
/// unsafe from two threads: taken by every LVM command, by the making and freeing of every
/// libcryptsetup context (`luks::Ctx`), by the header formatted ahead for its whole run, and
/// by `spawn`. A thread that holds it already gets it again.
pub struct Libdm(Option<std::sync::MutexGuard<'static, ()>>);

pub fn libdm() -> Libdm {
    if HOLDING.get() {
        return Libdm(None);
    }
    let held = LIBDM.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    HOLDING.set(true);
    Libdm(Some(held))
}

impl Drop for Libdm {
    fn drop(&mut self) {
        if self.0.is_some() {
            HOLDING.set(false);
        }
    }
}

/// Starts `cmd` holding no descriptor of ours but its stdio. libcryptsetup opens devices
/// without O_CLOEXEC, O_EXCL ones too: a child started while a context is open would hold
/// the device, exclusively, for as long as it lives. They are marked close-on-exec here, in
/// this process, so that std still starts the child without a fork (posix_spawn: with a fork
/// between, t_swap_pressure's check of pvencrypt's locked memory failed); under `libdm`, which
/// the only other thread that opens devices (the header formatted ahead) holds throughout,
/// so that none is opened between the marking and the spawn.
pub fn spawn(cmd: &mut std::process::Command) -> io::Result<std::process::Child> {
    let _dm = libdm();
    // SAFETY: close_range only sets descriptor flags.
    if unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as c_int) } != 0 {
        // Kernels before 5.11: one by one.
        for fd in std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten() {
            if let Some(fd) = fd.file_name().to_str().and_then(|n| n.parse::<c_int>().ok()).filter(|&fd| fd > 2) {
                // SAFETY: fcntl on a descriptor number; a closed one only fails.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
    cmd.spawn()
}

/// `Command::output` through `spawn`: stdin null, stdout and stderr captured.
pub fn output(cmd: &mut std::process::Command) -> io::Result<std::process::Output> {
    use std::process::Stdio;
    spawn(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?.wait_with_output()
}

/// Sets the umask, returns the former one.
pub fn umask(mode: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mode) }
}

/// A new directory, mode 0700, named `prefix` and six random characters.
pub fn mkdtemp(prefix: &Path) -> io::Result<PathBuf> {
    let mut template = format!("{}XXXXXX", prefix.display()).into_bytes();
    template.push(0);
    // SAFETY: a NUL-terminated template that mkdtemp fills in place.
    if unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    template.pop();
    Ok(PathBuf::from(String::from_utf8(template).map_err(io::Error::other)?))
}

/// Ends the process at once: no destructors, no buffered output.
pub fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit never returns and touches no memory.
    unsafe { libc::_exit(code) }
}

/// Powers the machine off without a sync (crash tests only), else exits.
pub fn power_off_now() -> ! {
    // SAFETY: reboot(2) with a valid command; it returns only on failure.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    exit_now(99)
}

/// malloc's own counts: (in use, free, mmapped), in KiB.
pub fn malloc_kib() -> (usize, usize, usize) {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks >> 10, m.fordblks >> 10, m.hblkhd >> 10)
}

/// poll(2) for input on one descriptor, up to `ms`; an interrupting signal ends it too.
/// True when it is readable (or hung up).
pub fn poll_in(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// The pid of the process at the other end of a unix socket (SO_PEERCRED), as it was
/// when it connected.
pub fn peer_pid(sock: &impl AsRawFd) -> io::Result<libc::pid_t> {
    // SAFETY: ucred is plain data; all zeros is a valid value for it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    check(unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len)
    })?;
    Ok(cred.pid)
}

/// Puts `payload` in this process's keyring as a "logon" key (readable by the kernel
/// only, as dm-crypt reads it: `:LEN:logon:DESC` in a table) and returns its serial.
pub fn add_logon_key(desc: &str, payload: &[u8]) -> io::Result<i64> {
    add_key("logon", desc, payload)
}

/// add_key(2) into this process's keyring.
fn add_key(ty: &str, desc: &str, payload: &[u8]) -> io::Result<i64> {
    let (ty, desc) = (CString::new(ty).map_err(io::Error::other)?, CString::new(desc).map_err(io::Error::other)?);
    // SAFETY: add_key(2) with NUL-terminated strings and a payload valid for its length.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            libc::KEY_SPEC_PROCESS_KEYRING,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Revokes a key: no table loaded later can name it (loaded ones keep their copy).
pub fn revoke_key(serial: i64) {
    // SAFETY: keyctl(KEYCTL_REVOKE) takes a serial; a stale one is an error, not UB.
    unsafe { libc::syscall(libc::SYS_keyctl, libc::KEYCTL_REVOKE, serial) };
}

/// -1000: the OOM killer never picks this process (LVM does the same while it holds
/// devices suspended, lib/mm/memlock.c).
pub fn protect_from_oom_killer() {
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
}

/// setsid(2): out of the terminal's session, so that its hang-up does not reach us.
pub fn setsid() {
    // SAFETY: no arguments; failure (already a group leader) is harmless.
    unsafe { libc::setsid() };
}

/// <linux/loop.h>'s `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (LOOP_CONFIGURE, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_SET_DIRECT_IO: libc::c_ulong = 0x4C08;
const LOOP_SET_BLOCK_SIZE: libc::c_ulong = 0x4C09;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// A new loop device over `backing` from byte `offset` on, in `block_size` blocks with
/// direct I/O (as `losetup --direct-io=on --sector-size`): its path. A device another
/// process takes between the kernel's offer and ours is skipped.
pub fn loop_attach(backing: &File, offset: u64, block_size: u32, name: &str) -> io::Result<PathBuf> {
    let ctl = std::fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    let mut info = LoopInfo64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset,
        sizelimit: 0,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        flags: LO_FLAGS_DIRECT_IO,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    };
    for (d, s) in info.file_name.iter_mut().take(63).zip(name.bytes()) {
        *d = s;
    }
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let lo = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
        let config = LoopConfig { fd: backing.as_raw_fd() as u32, block_size, info, reserved: [0; 8] };
        // SAFETY: LOOP_CONFIGURE reads one loop_config, which outlives the call.
        let r = unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
        info = config.info;
        let e = io::Error::last_os_error();
        match (r, e.raw_os_error()) {
            (0, _) => return Ok(path),
            (_, Some(libc::EBUSY)) => last = e,
            // Before 5.8: the same in three steps.
            (_, Some(libc::EINVAL | libc::ENOTTY)) => {
                // SAFETY: LOOP_SET_FD takes a descriptor that outlives the call.
                if unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) } != 0 {
                    last = io::Error::last_os_error();
                    continue;
                }
                // SAFETY: LOOP_SET_STATUS64 reads one loop_info64, which outlives the call;
                // the others take integers.
                let ok = unsafe {
                    libc::ioctl(lo.as_raw_fd(), LOOP_SET_STATUS64, &info as *const LoopInfo64) == 0
                        && libc::ioctl(lo.as_raw_fd(), LOOP_SET_BLOCK_SIZE, block_size as libc::c_ulong) == 0
                };
                if !ok {
                    let e = io::Error::last_os_error();
                    // SAFETY: LOOP_CLR_FD takes no argument.
                    unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_CLR_FD) };
                    return Err(e);
                }
                // SAFETY: as above. Best effort: buffered is what older kernels did anyway.
                unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_SET_DIRECT_IO, 1 as libc::c_ulong) };
                return Ok(path);
            }
            _ => return Err(e),
        }
    }
    Err(last)
}

/// Detaches a loop device; one still open (udev's probe) goes when its last opener closes it
/// (the kernel sets autoclear then).
pub fn loop_detach(path: &Path) -> io::Result<()> {
    let lo = std::fs::OpenOptions::new().read(true).open(path)?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    if unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_CLR_FD) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIGSTOP to this process: it waits for a SIGCONT.
pub fn stop_self() {
    // SAFETY: raise(3) with a valid signal number.
    unsafe { libc::raise(libc::SIGSTOP) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor opened as libcryptsetup opens devices (no O_CLOEXEC) does not reach a
    /// program run with `command`; it does reach one run by std's Command alone.
    /// The header formatted ahead holds the lock while its libcryptsetup contexts take it
    /// again; another thread waits for it meanwhile.
    #[test]
    fn libdm_is_taken_again_by_its_holder_only() {
        let outer = libdm();
        let inner = libdm();
        assert!(outer.0.is_some() && inner.0.is_none());
        let other = std::thread::spawn(|| LIBDM.try_lock().is_err());
        assert!(other.join().unwrap(), "another thread took the lock while it was held");
        drop(inner);
        assert!(HOLDING.get(), "the inner guard let go of the outer one's lock");
        drop(outer);
        assert!(!HOLDING.get());
    }

    #[test]
    fn a_program_run_inherits_no_descriptor_but_its_stdio() {
        let path = CString::new("/dev/null").unwrap();
        // SAFETY: a NUL-terminated path; the descriptor is closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        assert!(fd > 2);
        let mut sh = std::process::Command::new("sh");
        let out = output(sh.args(["-c", &format!("test -e /proc/self/fd/{fd} && echo open")])).unwrap();
        // SAFETY: ours, opened above.
        unsafe { libc::close(fd) };
        let ours = String::from_utf8(out.stdout).unwrap().trim() == "open";
        assert!(!ours, "the child holds the descriptor");
    }

    /// The child of a multi-threaded process may not run arbitrary code: refused, never
    /// forked.
    #[test]
    fn fork_refuses_a_process_with_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let e = fork().expect_err("forked with two threads");
        assert!(e.to_string().contains("threads; fork needs one"), "{e}");
        drop(tx);
        let _ = other.join();
    }

    #[test]
    fn creates_every_missing_directory() {
        let top = crate::testing::TempDir::new("dirs");
        let deep = top.join("var/lib/pvencrypt/aborted");
        create_dir_durably(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durably(&deep).expect("an existing directory is fine");
        replace_file(&deep.join("uuid"), b"/dev/sda5\n", 0o644).unwrap();
        assert_eq!(std::fs::read(deep.join("uuid")).unwrap(), b"/dev/sda5\n");
    }

    /// The payload of key `serial` into `buf`; returns its length (larger than `buf`: cut).
    fn read_key(serial: i64, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: keyctl(KEYCTL_READ) writes at most `buf.len()` bytes into `buf`.
        let r = unsafe { libc::syscall(libc::SYS_keyctl, libc::KEYCTL_READ, serial, buf.as_mut_ptr(), buf.len()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    #[test]
    fn logon_key_unreadable() {
        let desc = format!("pvencrypt:test-{}", std::process::id());
        let mut buf = [0u8; 64];
        let logon = match add_logon_key(&desc, b"volume key") {
            Ok(s) => s,
            // A kernel without keyrings (or a sandbox refusing them): nothing to test here.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("add_key: {e}"),
        };
        assert!(read_key(logon, &mut buf).is_err(), "a logon key is never readable from user space");
        revoke_key(logon);
    }
}
