//! `--tpm2-device`: the new device unlocks with the machine's TPM2 at boot, as
//! systemd-cryptenroll binds it, the passphrase keyslot staying as the fallback.
//!
//! libcryptsetup refuses to add a keyslot or a token to a device marked for reencryption
//! (`_onlyLUKS2`'s requirement check: "Operation incompatible with device marked for LUKS2
//! reencryption"), so the binding cannot come after the switch, nor from a later
//! `systemd-cryptenroll` while the data moves. pvencrypt runs systemd-cryptenroll on the
//! header it prepares in memory, before that header is marked: the TPM2 keyslot and its
//! `systemd-tpm2` token are in the header the switch writes, and the first boot after it
//! unlocks with the TPM2 already.
//!
//! At boot, systemd-cryptsetup reads `tpm2-device=` in crypttab: in the initramfs when the
//! system boots from the volume group (dracut with its systemd and tpm2-tss modules, or
//! mkinitcpio's sd-encrypt), otherwise once the root filesystem is up.

use std::{
    ffi::{c_char, c_int, c_void, CStr, CString, OsStr},
    fs,
    io::Write,
    mem::transmute,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::Path,
    process::Command,
    ptr,
};

use libcryptsetup_rs_sys as cs;

use crate::metadata::Metadata;

use super::{initramfs, initramfs::Hook, which, Tool};
use crate::key::Passphrase;

/// The token systemd-cryptenroll adds.
pub const TOKEN_TYPE: &str = "systemd-tpm2";

/// The PCRs sealed against when `--tpm2-pcrs` is not given: systemd-cryptenroll's default,
/// the Secure Boot state.
pub const DEFAULT_PCRS: &str = "7";

/// What `--tpm2-device` needs before anything changes: systemd-cryptenroll, the TPM2 (a
/// device path, "auto", or a tpm2-tss TCTI such as `swtpm:port=2321`, which systemd
/// passes through), and something that reads `tpm2-device=` at boot. `boot`: the
/// initramfs tool when the system boots from the volume group (`Some(None)`: with
/// --no-initramfs, the admin's); `systemd`: systemd is PID 1.
pub fn check(root: &Path, device: &str, boot: Option<Option<Tool>>, systemd: bool) -> Result<(), String> {
    if which(root, "systemd-cryptenroll").is_none() {
        return Err("--tpm2-device binds the TPM2 with systemd-cryptenroll, which is not installed: install systemd \
                    (248 or later)"
            .into());
    }
    if device == "auto" {
        if !tpm2_present(root) {
            return Err("--tpm2-device=auto: this machine has no TPM2 (nothing in /sys/class/tpm with \
                        tpm_version_major 2): enable it in the firmware, or convert without --tpm2-device"
                .into());
        }
    } else if !device.contains(':') && !Path::new(device).exists() {
        return Err(format!("--tpm2-device={device}: no such device"));
    }
    match boot {
        None if !systemd => Err("--tpm2-device: without systemd as init, nothing reads tpm2-device= in /etc/crypttab at \
                                 boot"
            .into()),
        None | Some(None) => Ok(()),
        Some(Some(Tool::InitramfsTools)) => Err("the initramfs of initramfs-tools cannot unlock with a TPM2 (its \
            cryptroot script asks for a passphrase only): install dracut and tpm2-tools (apt install dracut tpm2-tools; \
            dracut replaces initramfs-tools), or convert without --tpm2-device and bind the device with clevis \
            afterwards (clevis-initramfs, clevis-tpm2)"
            .into()),
        Some(Some(Tool::Dracut)) => dracut(root),
        Some(Some(Tool::Mkinitcpio(Hook::SdEncrypt))) => Ok(()),
        Some(Some(Tool::Mkinitcpio(Hook::Encrypt))) => Err("mkinitcpio's encrypt hook cannot unlock with a TPM2: use \
            sd-encrypt with the systemd hook in HOOKS in /etc/mkinitcpio.conf"
            .into()),
    }
}

/// dracut unlocks with a TPM2 through systemd-cryptsetup in a systemd image, with the
/// tpm2-tss module (its check() wants the `tpm2` program of tpm2-tools).
fn dracut(root: &Path) -> Result<(), String> {
    if !initramfs::has_module(root, "systemd-initrd") {
        return Err("dracut has no systemd-initrd module, and only systemd's initramfs unlocks with a TPM2: install \
                    dracut's systemd modules (dracut-core)"
            .into());
    }
    if !initramfs::has_module(root, "tpm2-tss") {
        return Err("dracut has no tpm2-tss module, which puts the TPM2 libraries into the initramfs: install dracut's \
                    (dracut-core on Debian and Ubuntu)"
            .into());
    }
    if which(root, "tpm2").is_none() {
        return Err("dracut's tpm2-tss module needs the tpm2 program, which is not installed: install tpm2-tools".into());
    }
    Ok(())
}

fn tpm2_present(root: &Path) -> bool {
    fs::read_dir(root.join("sys/class/tpm"))
        .is_ok_and(|d| d.flatten().any(|e| fs::read_to_string(e.path().join("tpm_version_major")).is_ok_and(|v| v.trim() == "2")))
}

/// Binds the LUKS2 header HEADER (a file; no reencryption marked yet) to the TPM2: a new
/// keyslot and its token, as `systemd-cryptenroll --tpm2-device=DEVICE --tpm2-pcrs=PCRS`
/// makes them. UNLOCK opens a keyslot of HEADER. systemd-cryptenroll reads it from a file
/// it can seek in (a pipe fails with ESPIPE): anonymous memory, emptied after the run.
pub fn enroll(header: &Path, unlock: &Passphrase, device: &str, pcrs: &str) -> Result<(), String> {
    let tool = which(Path::new(super::ROOT), "systemd-cryptenroll").ok_or("systemd-cryptenroll is not installed")?;
    let mut key = crate::sys::memfd("pvencrypt-tpm2-unlock").map_err(|e| format!("memfd_create: {e}"))?;
    key.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .and_then(|()| key.write_all(unlock.bytes()))
        .map_err(|e| format!("cannot write the key to memory: {e}"))?;
    let out = crate::sys::output(
        Command::new(tool)
            .arg(format!("--unlock-key-file=/proc/{}/fd/{}", std::process::id(), key.as_raw_fd()))
            .arg(format!("--tpm2-device={device}"))
            .arg(format!("--tpm2-pcrs={pcrs}"))
            .arg(header),
    );
    let _ = key.set_len(0);
    let out = out.map_err(|e| format!("cannot run systemd-cryptenroll: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(format!("systemd-cryptenroll failed: {}", said.trim()));
    }
    Ok(())
}

/// Whether the LUKS2 metadata JSON has a TPM2 token.
pub fn bound(m: &Metadata) -> bool {
    m.tokens.values().any(|t| t["type"] == TOKEN_TYPE)
}

/// The keyslot passphrase the device's `systemd-tpm2` token unseals with this machine's TPM2:
/// a stopped conversion resumes at boot with nobody at the console, as the device was
/// opened. None: no such token, or the TPM2 does not unseal it (another machine, other PCR
/// values, no TPM2, no plugin): the caller asks for the passphrase.
///
/// libcryptsetup opens a device with a token but has no call that hands out the token's
/// passphrase, and a resume works with a passphrase throughout (it opens, checks and unlocks
/// keyslots with it). So this calls the token's plugin as libcryptsetup does: the
/// `cryptsetup_token_open` of `libcryptsetup-token-systemd-tpm2.so` in libcryptsetup's token
/// directory (the plugin ABI of libcryptsetup.h), without parameters: the machine's TPM2, as
/// crypttab's `tpm2-device=auto` (the plugin's parameters are systemd's private struct). The
/// calls are libcryptsetup's own, outside libcryptsetup-rs's lock: call it before a run
/// starts threads that use libcryptsetup.
pub fn unseal(dev: &Path) -> Option<Passphrase> {
    // SAFETY: returns NULL or a static string.
    let dir = unsafe { cs::crypt_token_external_path() };
    if dir.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated, static.
    let plugin = Path::new(OsStr::from_bytes(unsafe { CStr::from_ptr(dir) }.to_bytes()))
        .join(format!("libcryptsetup-token-{TOKEN_TYPE}.so"));
    let plugin = CString::new(plugin.as_os_str().as_bytes()).ok()?;
    let dev = CString::new(dev.as_os_str().as_bytes()).ok()?;
    let mut cd = ptr::null_mut();
    // Made and freed under sys::libdm, as every context (luks::Ctx).
    let dm = crate::sys::libdm();
    // SAFETY: `cd` receives a handle that the guard below frees; `dev` outlives the call.
    let rc = unsafe { cs::crypt_init(&mut cd, dev.as_ptr()) };
    drop(dm);
    if rc < 0 {
        return None;
    }
    struct Free(*mut cs::crypt_device);
    impl Drop for Free {
        fn drop(&mut self) {
            let _dm = crate::sys::libdm();
            // SAFETY: the handle crypt_init made, freed once.
            unsafe { cs::crypt_free(self.0) }
        }
    }
    let _free = Free(cd);
    // SAFETY: a live handle; the type is a static C string.
    if unsafe { cs::crypt_load(cd, cs::CRYPT_LUKS2.as_ptr().cast(), ptr::null_mut()) } < 0 {
        return None;
    }
    let tokens = tokens(cd);
    if tokens.is_empty() {
        return None;
    }
    open_with(&plugin, cd, &tokens)
}

/// The ids of the `systemd-tpm2` tokens of the LUKS2 header `cd` has loaded.
fn tokens(cd: *mut cs::crypt_device) -> Vec<c_int> {
    (0..32)
        .filter(|&t| {
            let mut ty: *const c_char = ptr::null();
            // SAFETY: a loaded handle; `ty` receives NULL or a string owned by the handle.
            let status = unsafe { cs::crypt_token_status(cd, t, &mut ty) };
            status >= cs::crypt_token_info_CRYPT_TOKEN_INTERNAL
                && !ty.is_null()
                // SAFETY: non-NULL, NUL-terminated, alive as long as the handle.
                && unsafe { CStr::from_ptr(ty) }.to_bytes() == TOKEN_TYPE.as_bytes()
        })
        .collect()
}

/// The first passphrase the plugin at `plugin` gives for one of `tokens`.
fn open_with(plugin: &CStr, cd: *mut cs::crypt_device, tokens: &[c_int]) -> Option<Passphrase> {
    type Open = unsafe extern "C" fn(*mut cs::crypt_device, c_int, *mut *mut c_char, *mut usize, *mut c_void) -> c_int;
    type Free = unsafe extern "C" fn(*mut c_void, usize);
    // SAFETY: a NUL-terminated path; the plugin is the one libcryptsetup itself would load.
    let lib = unsafe { libc::dlopen(plugin.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if lib.is_null() {
        return None;
    }
    // SAFETY: a live handle from dlopen; the symbols have the types libcryptsetup.h gives them.
    let (open, free) = unsafe {
        (libc::dlsym(lib, c"cryptsetup_token_open".as_ptr()), libc::dlsym(lib, c"cryptsetup_token_buffer_free".as_ptr()))
    };
    let mut found = None;
    if !open.is_null() {
        // SAFETY: the ABI's prototypes (crypt_token_open_func, crypt_token_buffer_free_func).
        let (open, free) =
            unsafe { (transmute::<*mut c_void, Open>(open), (!free.is_null()).then(|| transmute::<*mut c_void, Free>(free))) };
        for &t in tokens {
            let (mut buf, mut len) = (ptr::null_mut::<c_char>(), 0usize);
            // SAFETY: a loaded LUKS2 handle and a token of the plugin's type; no parameters
            // (usrptr NULL: the plugin's defaults).
            if unsafe { open(cd, t, &mut buf, &mut len, ptr::null_mut()) } < 0 || buf.is_null() {
                continue;
            }
            // SAFETY: the plugin returned `len` bytes at `buf`, ours to copy, wipe and free.
            let secret = zeroize::Zeroizing::new(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }.to_vec());
            // SAFETY: as above; the plugin's free function or, without one, what libcryptsetup
            // does (wipe, free(3)).
            unsafe {
                match free {
                    Some(f) => f(buf.cast(), len),
                    None => {
                        zeroize::Zeroize::zeroize(std::slice::from_raw_parts_mut(buf.cast::<u8>(), len));
                        libc::free(buf.cast());
                    }
                }
            }
            found = Passphrase::checked(secret, "The TPM2 token").ok();
            if found.is_some() {
                break;
            }
        }
    }
    // SAFETY: nothing of the library is used past this point.
    unsafe { libc::dlclose(lib) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(files: &[&str]) -> crate::testing::TempDir {
        let r = crate::testing::TempDir::new("tpm2");
        for f in files {
            let p = r.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            if f.ends_with('/') {
                fs::create_dir_all(&p).unwrap();
            } else {
                fs::write(&p, if f.ends_with("tpm_version_major") { "2\n" } else { "" }).unwrap();
            }
        }
        r
    }

    const BASE: [&str; 2] = ["usr/bin/systemd-cryptenroll", "sys/class/tpm/tpm0/tpm_version_major"];

    #[test]
    fn what_a_tpm2_binding_needs() {
        let r = root(&BASE);
        assert_eq!(check(&r, "auto", None, true), Ok(()));
        assert!(check(&r, "auto", None, false).unwrap_err().contains("without systemd as init"));
        assert_eq!(check(&r, "auto", Some(None), false), Ok(()), "--no-initramfs: the admin's initramfs");
        let err = check(&r, "auto", Some(Some(Tool::InitramfsTools)), true).unwrap_err();
        assert!(err.starts_with("the initramfs of initramfs-tools cannot unlock with a TPM2"), "{err}");
        assert!(err.contains("apt install dracut tpm2-tools") && err.contains("clevis"), "{err}");
        assert!(check(&r, "auto", Some(Some(Tool::Mkinitcpio(Hook::Encrypt))), true).is_err());
        assert_eq!(check(&r, "auto", Some(Some(Tool::Mkinitcpio(Hook::SdEncrypt))), true), Ok(()));

        let err = check(&root(&BASE[..1]), "auto", None, true).unwrap_err();
        assert!(err.starts_with("--tpm2-device=auto: this machine has no TPM2"), "{err}");
        let err = check(&root(&BASE[1..]), "auto", None, true).unwrap_err();
        assert!(err.contains("systemd-cryptenroll, which is not installed"), "{err}");
        assert!(check(&r, "/dev/nonexistent-tpm", None, true).unwrap_err().ends_with("no such device"));
        assert_eq!(check(&r, "swtpm:port=2321", None, true), Ok(()), "a TCTI is systemd's to resolve");
    }

    #[test]
    fn dracut_needs_systemd_and_tpm2_tss() {
        let modules = "usr/lib/dracut/modules.d/";
        let full = [BASE[0], BASE[1], &format!("{modules}01systemd-initrd/"), &format!("{modules}91tpm2-tss/"), "usr/bin/tpm2"]
            .map(String::from);
        let with =
            |n: usize| root(&full.iter().enumerate().filter(|(i, _)| *i != n).map(|(_, f)| f.as_str()).collect::<Vec<_>>());
        let dracut = Some(Some(Tool::Dracut));
        assert_eq!(check(&with(99), "auto", dracut, true), Ok(()));
        assert!(check(&with(2), "auto", dracut, true).unwrap_err().contains("no systemd-initrd module"));
        assert!(check(&with(3), "auto", dracut, true).unwrap_err().contains("no tpm2-tss module"));
        assert!(check(&with(4), "auto", dracut, true).unwrap_err().ends_with("install tpm2-tools"));
    }

    #[test]
    fn a_token_of_systemd_cryptenroll() {
        let m = |v| Metadata::from_value(v).unwrap();
        assert!(bound(&m(serde_json::json!({"tokens": {"0": {"type": "pvencrypt"}, "1": {"type": "systemd-tpm2"}}}))));
        assert!(!bound(&m(serde_json::json!({"tokens": {"0": {"type": "pvencrypt"}}}))));
        assert!(!bound(&m(serde_json::json!({"tokens": {}}))));
    }
}
