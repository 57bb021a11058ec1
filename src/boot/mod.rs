//! Boot integration: once the LVs run on /dev/mapper/NAME, the next boot must open it
//! before it can find the VG. This adds the crypttab entry and, when the system boots
//! from the VG (root, /usr or the resume device on it), rebuilds the initramfs, which
//! picks the entry up (initramfs.rs). Both happen right after the switch, not at the end:
//! a reboot during a long conversion must find the device too.
//!
//! Files are looked up under a root directory, `ROOT` in the product, so that the host
//! tests can build a fake system in a temporary directory.

pub mod crypttab;
pub mod headers;
pub mod initramfs;
pub mod tpm2;

use std::{
    fs,
    path::{Path, PathBuf},
};

use devicemapper::Device;

pub use crypttab::{add_crypttab, Entry, Line, CRYPTTAB, CRYPTTAB_INITRAMFS};
pub use initramfs::Tool;

pub const ROOT: &str = "/";

pub fn supports_discard(dev: Device) -> bool {
    fs::read_to_string(format!("/sys/dev/block/{dev}/queue/discard_max_bytes"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// Why the initramfs must know the device, if it must: the system needs the VG to boot.
/// `on_vg`: the devices of the VG's LVs (any PV).
pub fn boot_needs(on_vg: &[Device]) -> Option<String> {
    if let Some(m) = mounts().iter().find(|m| (m.point == "/" || m.point == "/usr") && on_vg.contains(&m.dev)) {
        return Some(format!("{} is on the volume group", m.point));
    }
    let resume = fs::read_to_string("/sys/power/resume").unwrap_or_default();
    if on_vg.iter().any(|d| d.to_string() == resume.trim()) {
        return Some("the resume (hibernation) device is on the volume group".into());
    }
    None
}

/// The boot part of the plan `--test` prints: the initramfs (when the system boots from
/// the VG: NEEDS says why) and what every boot asks from now on (TPM2: `--tpm2-device`).
pub fn plan(
    name: &str,
    needs: Option<&str>,
    tool: Option<Tool>,
    no_initramfs: bool,
    no_crypttab: bool,
    tpm2: bool,
) -> Vec<String> {
    use initramfs::Hook;
    let mut out = Vec::new();
    match (needs, tool) {
        (Some(why), _) if no_initramfs => out.push(format!("the initramfs is NOT rebuilt (--no-initramfs; {why}).")),
        (Some(why), Some(tool)) => {
            out.push(format!("the initramfs is rebuilt with {} and checked ({why}).", tool.rebuild().join(" ")));
            if tool == Tool::Dracut && initramfs::has_module(Path::new(ROOT), initramfs::DRACUT_OURS) {
                out.push(format!(
                    "{} has pvencrypt's dracut module put {name}'s crypttab entry into the images, generic ones too.",
                    initramfs::dracut_drop_in(Path::new("/"), name).display()
                ));
            }
            if tool == Tool::Mkinitcpio(Hook::SdEncrypt) && !no_crypttab {
                out.push(format!("{CRYPTTAB_INITRAMFS} gets the same line."));
            }
            if tool == Tool::Mkinitcpio(Hook::Encrypt) {
                out.push(format!(
                    "you must add {} to the kernel command line (the encrypt hook of mkinitcpio reads it; pvencrypt \
                     prints it and does not edit the boot loader).",
                    initramfs::cryptdevice(name, "<new LUKS UUID>")
                ));
            }
        }
        _ => {}
    }
    if needs.is_some() || !no_crypttab {
        out.push(passphrase_note(name, needs.is_some(), tool, tpm2));
    }
    out
}

/// What every boot asks from now on, and how a headless server can avoid typing it
/// (pvencrypt sets none of these up). `in_initramfs`: the system boots from the VG, so
/// the initramfs (built by `tool`, when known) opens NAME; otherwise /etc/crypttab opens
/// it once the root filesystem is up. `tpm2`: the TPM2 unlocks it, the passphrase is the
/// fallback.
pub fn passphrase_note(name: &str, in_initramfs: bool, tool: Option<Tool>, tpm2: bool) -> String {
    let place = match (in_initramfs, tool) {
        (true, Some(t)) => format!("in the initramfs ({})", t.name()),
        (true, None) => "in the initramfs".into(),
        (false, _) => "once the root filesystem is up (from /etc/crypttab)".into(),
    };
    if tpm2 {
        return format!(
            "every boot from now on unlocks {name} with the TPM2, {place}, with nobody at the console; when the TPM2 \
             refuses (a firmware or Secure Boot change, the disk in another machine) it asks for the passphrase there \
             instead. Until the conversion has finished, a libcryptsetup older than 2.7 asks too (it opens no \
             device in reencryption with a token); pvencrypt-resume.service then resumes with the TPM2."
        );
    }
    match in_initramfs {
        true => format!(
            "every boot from now on stops in the initramfs{} until the passphrase of {name} is typed on the \
             console. On a headless server: bind a key to the TPM2 (systemd-cryptenroll --tpm2-device=auto, with a \
             systemd-based initramfs), use clevis (TPM2 or a Tang server), or unlock over ssh (dropbear-initramfs); \
             pvencrypt sets up none of them.",
            tool.map(|t| format!(" ({})", t.name())).unwrap_or_default()
        ),
        false => format!(
            "every boot from now on asks for the passphrase of {name} on the console once the root filesystem is \
             up (from /etc/crypttab), and waits for it. On a headless server: bind a key to the TPM2 \
             (systemd-cryptenroll --tpm2-device=auto, and tpm2-device=auto in /etc/crypttab) or use clevis; \
             pvencrypt sets up neither."
        ),
    }
}

/// What the kernel command line (`/proc/cmdline`) would keep from opening the device at
/// boot, as changes for the admin to make; empty when nothing. systemd-cryptsetup-generator(8):
/// `luks=no` turns crypttab off, and once any `luks.uuid=` or `luks.name=UUID=NAME` is
/// given only the listed devices are opened, crypttab entries too. The `rd.` forms count in
/// the initramfs only, the plain ones in both.
pub fn cmdline_advice(cmdline: &str, uuid: &str) -> Vec<String> {
    let mut advice = Vec::new();
    let args: Vec<(&str, &str)> = cmdline.split_whitespace().map(|a| a.split_once('=').unwrap_or((a, ""))).collect();
    let no = |v: &str| ["no", "0", "false", "off"].contains(&v.to_ascii_lowercase().as_str());
    for (k, v) in &args {
        if ["luks", "rd.luks", "luks.crypttab", "rd.luks.crypttab"].contains(k) && no(v) {
            advice.push(format!("remove {k}={v}, which keeps the device from being opened"));
        }
    }
    for (key, keys) in [("luks.uuid", &["luks"][..]), ("rd.luks.uuid", &["luks", "rd.luks"])] {
        let listed: Vec<&str> = args
            .iter()
            .filter_map(|(k, v)| match k.rsplit_once('.') {
                Some((p, "uuid")) if keys.contains(&p) => Some(*v),
                Some((p, "name")) if keys.contains(&p) => Some(v.split_once('=').map_or(*v, |(u, _)| u)),
                _ => None,
            })
            .collect();
        let ours = |v: &&str| v.trim_start_matches("luks-").eq_ignore_ascii_case(uuid);
        if !listed.is_empty() && !listed.iter().any(ours) {
            let given = keys.iter().flat_map(|p| [format!("{p}.uuid="), format!("{p}.name=")]).collect::<Vec<_>>();
            advice.push(format!("add {key}={uuid}: only the devices listed by {} are opened", given.join(", ")));
        }
    }
    advice
}

#[derive(Debug, PartialEq)]
pub struct Mount {
    pub dev: Device,
    pub point: String,
    pub fstype: String,
}

/// Every mount of this process's namespace.
pub fn mounts() -> Vec<Mount> {
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            Some(Mount {
                dev: Device { major: maj.parse().ok()?, minor: min.parse().ok()? },
                point: unescape_octal(f.get(4)?),
                fstype: right.split(' ').next()?.to_string(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of an installed program under ROOT.
pub fn which(root: &Path, tool: &str) -> Option<PathBuf> {
    ["usr/sbin", "usr/bin", "sbin", "bin"].iter().map(|d| root.join(d).join(tool)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_for_the_boot() {
        let plan = plan("sda5_crypt", Some("/ is on the volume group"), Some(Tool::InitramfsTools), false, false, false);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0], "the initramfs is rebuilt with update-initramfs -u -k all and checked (/ is on the volume group).");
        assert!(plan[1].contains("stops in the initramfs (update-initramfs) until the passphrase"), "{}", plan[1]);

        let plan = super::plan(
            "sda5_crypt",
            Some("/ is on the volume group"),
            Some(Tool::Mkinitcpio(initramfs::Hook::Encrypt)),
            false,
            false,
            false,
        );
        assert!(plan[0].starts_with("the initramfs is rebuilt with mkinitcpio -P"), "{}", plan[0]);
        assert!(
            plan[1].starts_with("you must add cryptdevice=UUID=<new LUKS UUID>:sda5_crypt to the kernel command line"),
            "{}",
            plan[1]
        );
        let plan = super::plan(
            "sda5_crypt",
            Some("/ is on the volume group"),
            Some(Tool::Mkinitcpio(initramfs::Hook::SdEncrypt)),
            false,
            false,
            false,
        );
        assert_eq!(plan[1], "/etc/crypttab.initramfs gets the same line.");

        let plan = super::plan("sda5_crypt", Some("/usr is on the volume group"), None, true, false, false);
        assert_eq!(plan[0], "the initramfs is NOT rebuilt (--no-initramfs; /usr is on the volume group).");
        assert!(plan[1].starts_with("every boot from now on stops in the initramfs until"), "{}", plan[1]);

        let plan = super::plan("sda5_crypt", None, None, false, false, false);
        assert_eq!(plan.len(), 1);
        assert!(plan[0].contains("once the root filesystem is up"), "{}", plan[0]);
        assert!(super::plan("sda5_crypt", None, None, false, true, false).is_empty(), "--no-crypttab: nothing opens it at boot");
    }

    #[test]
    fn the_passphrase_is_asked_in_the_initramfs_or_after_root() {
        let early = passphrase_note("sda5_crypt", true, Some(Tool::InitramfsTools), false);
        assert!(early.starts_with("every boot from now on stops in the initramfs (update-initramfs) until the passphrase of sda5_crypt is typed on the console."), "{early}");
        for way in ["systemd-cryptenroll --tpm2-device=auto", "clevis", "dropbear-initramfs", "sets up none"] {
            assert!(early.contains(way), "{way}: {early}");
        }
        assert!(passphrase_note("x", true, None, false).starts_with("every boot from now on stops in the initramfs until"));
        let late = passphrase_note("sda5_crypt", false, None, false);
        assert!(
            late.starts_with(
                "every boot from now on asks for the passphrase of sda5_crypt on the console once the root filesystem is up"
            ),
            "{late}"
        );
        assert!(!late.contains("initramfs"), "{late}");
        let tpm = passphrase_note("vda_crypt", true, Some(Tool::Dracut), true);
        assert!(
            tpm.starts_with("every boot from now on unlocks vda_crypt with the TPM2, in the initramfs (dracut), with nobody at the console; when the TPM2 refuses"),
            "{tpm}"
        );
    }

    #[test]
    fn kernel_command_line_that_would_not_open_the_device() {
        let u = "1234-abcd";
        assert!(cmdline_advice("BOOT_IMAGE=/vmlinuz root=/dev/mapper/vg-root ro quiet", u).is_empty());
        assert!(cmdline_advice("root=/dev/vg/root rd.luks.uuid=luks-1234-ABCD rd.luks.uuid=other", u).is_empty());
        assert_eq!(
            cmdline_advice("root=/dev/vg/root rd.luks.uuid=luks-5678 luks.uuid=5678", u),
            [
                "add luks.uuid=1234-abcd: only the devices listed by luks.uuid=, luks.name= are opened",
                "add rd.luks.uuid=1234-abcd: only the devices listed by luks.uuid=, luks.name=, rd.luks.uuid=, \
                 rd.luks.name= are opened"
            ]
        );
        // luks.name=UUID=NAME lists its UUID; the plain forms count in the initramfs too.
        assert_eq!(
            cmdline_advice("luks.name=5678=home", u),
            [
                "add luks.uuid=1234-abcd: only the devices listed by luks.uuid=, luks.name= are opened",
                "add rd.luks.uuid=1234-abcd: only the devices listed by luks.uuid=, luks.name=, rd.luks.uuid=, \
                 rd.luks.name= are opened"
            ]
        );
        assert_eq!(cmdline_advice("rd.luks.name=luks-1234-abcd=vda_crypt", u), Vec::<String>::new());
        assert_eq!(cmdline_advice("rd.luks.name=1234-abcd=vda_crypt luks.name=5678=home", u).len(), 1);
        assert_eq!(
            cmdline_advice("quiet rd.luks=0 luks.crypttab=no luks=yes", u),
            [
                "remove rd.luks=0, which keeps the device from being opened",
                "remove luks.crypttab=no, which keeps the device from being opened"
            ]
        );
    }

    #[test]
    fn mountinfo_lines_with_escapes_and_optional_fields() {
        let text = "36 35 253:3 / /boot rw,relatime shared:1 - ext4 /dev/mapper/vg-boot rw\n\
                    37 35 253:4 / /mnt/my\\040disk rw master:2 shared:7 - xfs /dev/mapper/vg-x rw\n\
                    38 35 0:22 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], Mount { dev: Device { major: 253, minor: 3 }, point: "/boot".into(), fstype: "ext4".into() });
        assert_eq!(m[1].point, "/mnt/my disk");
        assert_eq!(m[1].fstype, "xfs");
        assert_eq!(unescape_octal("a\\134b\\01"), "a\\b\\01");
    }
}
