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
    fs,
    io::Write,
    os::fd::AsRawFd,
    path::Path,
    process::{Command, Stdio},
};

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
    let out = Command::new(tool)
        .arg(format!("--unlock-key-file=/proc/{}/fd/{}", std::process::id(), key.as_raw_fd()))
        .arg(format!("--tpm2-device={device}"))
        .arg(format!("--tpm2-pcrs={pcrs}"))
        .arg(header)
        .stdin(Stdio::null())
        .output();
    let _ = key.set_len(0);
    let out = out.map_err(|e| format!("cannot run systemd-cryptenroll: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(format!("systemd-cryptenroll failed: {}", said.trim()));
    }
    Ok(())
}

/// Whether the LUKS2 metadata JSON has a TPM2 token.
pub fn bound(json: &serde_json::Value) -> bool {
    json["tokens"].as_object().is_some_and(|t| t.values().any(|t| t["type"] == TOKEN_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(files: &[&str]) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = std::env::temp_dir().join(format!("pvencrypt-tpm2-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&r);
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
        let json = serde_json::json!({"tokens": {"0": {"type": "pvencrypt"}, "1": {"type": "systemd-tpm2"}}});
        assert!(bound(&json));
        assert!(!bound(&serde_json::json!({"tokens": {"0": {"type": "pvencrypt"}}})));
        assert!(!bound(&serde_json::json!({"tokens": {}})));
    }
}
