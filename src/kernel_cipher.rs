//! Has the kernel, not OpenSSL, encrypt the data during the reencryption.
//!
//! libcryptsetup 2.6 encrypts each reencryption step in user space, on one CPU, when its
//! crypto backend (OpenSSL on Debian) has the cipher. Only when the backend lacks it
//! does it write through a temporary dm-crypt mapping instead, which the kernel encrypts
//! on every CPU: stock `cryptsetup reencrypt` took 15.8 s instead of 24.7 s on 1.2 GiB in
//! the test VM, against 13.5 s for a dd through dm-crypt. There is no switch for it, so
//! pvencrypt exports `EVP_CIPHER_fetch` (build.rs), which libcryptsetup's calls reach
//! before OpenSSL's, and answers "unknown" for the segment's cipher while a [`Hidden`]
//! guard lives. Keyslots are then decrypted through the kernel's AF_ALG socket, which is
//! probed first; the data written is the same either way (cipher, IVs and offsets come
//! from the header).

use std::{
    ffi::{c_char, c_void, CStr},
    sync::Mutex,
};

/// The OpenSSL cipher names hidden: (`aes`, `xts`) stands for `aes-<bits>-xts`.
static HIDDEN: Mutex<Option<(String, String)>> = Mutex::new(None);

/// While alive, OpenSSL seems to lack the cipher of a LUKS2 segment.
pub struct Hidden(());

impl Hidden {
    /// `encryption`: the segment's cipher spec, e.g. `aes-xts-plain64`. None when the
    /// kernel cannot stand in for OpenSSL (no AF_ALG, or a spec it does not know): the
    /// data is then encrypted in user space, as without pvencrypt.
    pub fn new(encryption: &str) -> Option<Hidden> {
        let mut parts = encryption.splitn(3, '-');
        let (cipher, chain) = (parts.next()?, parts.next()?);
        if cipher.is_empty() || cipher.contains(':') || !af_alg_has(&format!("{chain}({cipher})")) {
            return None;
        }
        *HIDDEN.lock().ok()? = Some((cipher.to_ascii_lowercase(), chain.to_ascii_lowercase()));
        Some(Hidden(()))
    }
}

impl Drop for Hidden {
    fn drop(&mut self) {
        if let Ok(mut h) = HIDDEN.lock() {
            *h = None;
        }
    }
}

fn hides(name: &str) -> bool {
    let Ok(h) = HIDDEN.try_lock() else { return false };
    let Some((cipher, chain)) = h.as_ref() else { return false };
    let name = name.to_ascii_lowercase();
    name.strip_prefix(&format!("{cipher}-"))
        .and_then(|r| r.strip_suffix(&format!("-{chain}")))
        .is_some_and(|bits| !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the kernel offers `alg` (e.g. `xts(aes)`) to user space as an skcipher.
fn af_alg_has(alg: &str) -> bool {
    // SAFETY: sockaddr_alg is plain data; all zeros is a valid value.
    let mut sa: libc::sockaddr_alg = unsafe { std::mem::zeroed() };
    sa.salg_family = libc::AF_ALG as u16;
    sa.salg_type[..8].copy_from_slice(b"skcipher");
    if alg.len() >= sa.salg_name.len() {
        return false;
    }
    sa.salg_name[..alg.len()].copy_from_slice(alg.as_bytes());
    // SAFETY: a plain socket, closed below; `sa` is a valid sockaddr_alg.
    unsafe {
        let fd = libc::socket(libc::AF_ALG, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let ok = libc::bind(fd, &sa as *const _ as *const libc::sockaddr, std::mem::size_of_val(&sa) as u32) == 0;
        libc::close(fd);
        ok
    }
}

type Fetch = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> *mut c_void;

/// OpenSSL 3's `EVP_CIPHER_fetch`, seen first by libcryptsetup's calls: NULL ("no such
/// cipher") for the hidden names, OpenSSL's answer otherwise. Must not unwind.
///
/// # Safety
/// Called by C with OpenSSL's contract: `name` NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn EVP_CIPHER_fetch(ctx: *mut c_void, name: *const c_char, props: *const c_char) -> *mut c_void {
    // SAFETY: OpenSSL's contract: `name` is NULL or a C string valid for the call.
    if !name.is_null() && unsafe { CStr::from_ptr(name) }.to_str().is_ok_and(hides) {
        return std::ptr::null_mut();
    }
    // SAFETY: a constant, NUL-terminated symbol name.
    let real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"EVP_CIPHER_fetch".as_ptr()) };
    if real.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the next definition of this very symbol has this signature (OpenSSL 3),
    // and is called with the caller's own arguments.
    unsafe {
        let real: Fetch = std::mem::transmute(real);
        real(ctx, name, props)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_segment_cipher_is_hidden_and_only_while_guarded() {
        *HIDDEN.lock().unwrap() = Some(("aes".into(), "xts".into()));
        assert!(hides("aes-256-xts") && hides("AES-128-XTS"));
        assert!(!hides("aes-256-cbc") && !hides("aes-256-ecb") && !hides("serpent-256-xts") && !hides("aes--xts"));
        *HIDDEN.lock().unwrap() = None;
        assert!(!hides("aes-256-xts"));
    }
}
