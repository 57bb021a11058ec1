//! Boot integration: once the LVs run on /dev/mapper/NAME, the next boot must open it
//! before it can find the VG. This adds the crypttab entry and, when the system boots
//! from the VG (root, /usr or the resume device on it), rebuilds the initramfs, which
//! picks the entry up. Both happen right after the switch, not at the end: a reboot
//! during a long conversion must find the device too.

use std::{
    fs,
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::Command,
};

use devicemapper::Device;

use crate::error::{fail, Context, Result};

pub const CRYPTTAB: &str = "/etc/crypttab";

/// The crypttab line for NAME: the LUKS UUID (stable, unlike /dev/sdX), no key file
/// (asked at boot), and discard when the device supports it.
pub fn crypttab_line(name: &str, uuid: &str, discard: bool) -> String {
    format!("{name} UUID={uuid} none luks{}\n", if discard { ",discard" } else { "" })
}

/// What `add_crypttab` did.
#[derive(Debug, PartialEq)]
pub enum Entry {
    Added,
    /// A line for this name or UUID exists; it is left as the admin wrote it.
    Present(String),
}

/// Appends the entry unless one for NAME or the UUID is there. Written to a temporary
/// file beside it and renamed: a crash leaves the old file or the new one. Under a lock,
/// so that two pvencrypt runs (or threads) cannot lose each other's line.
pub fn add_crypttab(path: &Path, name: &str, uuid: &str, discard: bool) -> Result<Entry> {
    let _lock = lock_for(path)?;
    let old = match fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return fail(format!("Cannot read {}: {e}", path.display())),
    };
    let by_uuid = format!("UUID={uuid}");
    if let Some(line) = old.lines().find(|l| {
        let mut f = l.split_whitespace();
        !l.trim_start().starts_with('#') && (f.next() == Some(name) || f.next().is_some_and(|d| d.eq_ignore_ascii_case(&by_uuid)))
    }) {
        return Ok(Entry::Present(line.to_string()));
    }
    let mut new = old.clone();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&crypttab_line(name, uuid, discard));
    let mode = fs::metadata(path).map(|m| m.mode() & 0o7777).unwrap_or(0o644);
    let tmp = path.with_extension(format!("pvencrypt-new-{}", std::process::id()));
    (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(new.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })()
    .or_fail(|| format!("Cannot write {}", path.display()))?;
    Ok(Entry::Added)
}

/// An exclusive flock on a file of its own under /run/pvencrypt (the file itself is
/// replaced by rename, so it cannot carry the lock), released when dropped.
fn lock_for(path: &Path) -> Result<fs::File> {
    let key: String = path.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let lock = Path::new("/run/pvencrypt").join(format!("{key}.lock"));
    crate::sys::lock_file(&lock).or_fail(|| format!("Cannot lock {}", lock.display()))
}

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

/// Rebuilds the initramfs with the distribution's tool. Err explains what to run.
pub fn update_initramfs() -> Result<String> {
    let tools: [(&str, &[&str]); 2] = [("update-initramfs", &["-u", "-k", "all"]), ("dracut", &["-f", "--regenerate-all"])];
    for (tool, args) in tools {
        let Some(path) = which(tool) else { continue };
        let out = Command::new(&path).args(args).output().or_fail(|| format!("Cannot run {}", path.display()))?;
        if !out.status.success() {
            return fail(format!(
                "{} {} failed: {}. Run it again by hand before rebooting.",
                tool,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        return Ok(format!("{tool} {}", args.join(" ")));
    }
    fail(
        "Neither update-initramfs nor dracut is installed: rebuild the initramfs with the crypttab entry before rebooting."
            .to_string(),
    )
}

/// What the kernel command line (`/proc/cmdline`) would keep from opening the device at
/// boot, as changes for the admin to make; empty when nothing. systemd-cryptsetup-generator(8):
/// `luks=no` turns crypttab off, and once any `luks.uuid=` is given only the listed
/// devices are opened; the `rd.` forms do the same in the initramfs.
pub fn cmdline_advice(cmdline: &str, uuid: &str) -> Vec<String> {
    let mut advice = Vec::new();
    let args: Vec<(&str, &str)> = cmdline.split_whitespace().map(|a| a.split_once('=').unwrap_or((a, ""))).collect();
    let no = |v: &str| ["no", "0", "false", "off"].contains(&v.to_ascii_lowercase().as_str());
    for (k, v) in &args {
        if ["luks", "rd.luks", "luks.crypttab", "rd.luks.crypttab"].contains(k) && no(v) {
            advice.push(format!("remove {k}={v}, which keeps the device from being opened"));
        }
    }
    for key in ["luks.uuid", "rd.luks.uuid"] {
        let listed: Vec<&str> = args.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v).collect();
        let ours = |v: &&str| v.trim_start_matches("luks-").eq_ignore_ascii_case(uuid);
        if !listed.is_empty() && !listed.iter().any(ours) {
            advice.push(format!("add {key}={uuid}: only the devices listed by {key}= are opened"));
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

fn which(tool: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_crypttab_updates_keep_every_line() {
        if !crate::sys::is_root() {
            return eprintln!("skipped: needs root (the lock lives in /run/pvencrypt)");
        }
        let p = tmp(Some("# crypttab\n"));
        std::thread::scope(|s| {
            for t in 0..8 {
                let p = &p;
                s.spawn(move || {
                    for i in 0..25 {
                        add_crypttab(p, &format!("d{t}_{i}_crypt"), &format!("{t}-{i}"), false).unwrap();
                    }
                });
            }
        });
        let text = fs::read_to_string(&p).unwrap();
        for t in 0..8 {
            for i in 0..25 {
                assert!(text.contains(&format!("d{t}_{i}_crypt UUID={t}-{i} ")), "lost d{t}_{i}_crypt");
            }
        }
        assert_eq!(text.lines().count(), 1 + 8 * 25);
    }

    fn tmp(content: Option<&str>) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pvencrypt-boot-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("crypttab");
        if let Some(c) = content {
            fs::write(&p, c).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        }
        p
    }

    #[test]
    fn entry_appended_once_keeping_the_file_and_its_mode() {
        let p = tmp(Some("# <target name> <source device> <key file> <options>\nhome_crypt UUID=aaa none luks"));
        assert_eq!(add_crypttab(&p, "sda5_crypt", "1234-abcd", true).unwrap(), Entry::Added);
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "# <target name> <source device> <key file> <options>\nhome_crypt UUID=aaa none luks\n\
             sda5_crypt UUID=1234-abcd none luks,discard\n"
        );
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(matches!(add_crypttab(&p, "sda5_crypt", "1234-abcd", true).unwrap(), Entry::Present(_)));
        assert_eq!(fs::read_to_string(&p).unwrap(), text);
    }

    #[test]
    fn an_entry_by_uuid_under_another_name_is_left_alone() {
        let p = tmp(Some("mine UUID=1234-ABCD none luks,discard,tries=3\n"));
        assert_eq!(
            add_crypttab(&p, "sda5_crypt", "1234-abcd", false).unwrap(),
            Entry::Present("mine UUID=1234-ABCD none luks,discard,tries=3".into())
        );
        let commented = tmp(Some("#sda5_crypt UUID=1234-abcd none luks\n"));
        assert_eq!(add_crypttab(&commented, "sda5_crypt", "1234-abcd", false).unwrap(), Entry::Added);
    }

    #[test]
    fn missing_file_is_created() {
        let p = tmp(None);
        assert_eq!(add_crypttab(&p, "vda_crypt", "u", false).unwrap(), Entry::Added);
        assert_eq!(fs::read_to_string(&p).unwrap(), "vda_crypt UUID=u none luks\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
    }

    #[test]
    fn kernel_command_line_that_would_not_open_the_device() {
        let u = "1234-abcd";
        assert!(cmdline_advice("BOOT_IMAGE=/vmlinuz root=/dev/mapper/vg-root ro quiet", u).is_empty());
        assert!(cmdline_advice("root=/dev/vg/root rd.luks.uuid=luks-1234-ABCD rd.luks.uuid=other", u).is_empty());
        assert_eq!(
            cmdline_advice("root=/dev/vg/root rd.luks.uuid=luks-5678 luks.uuid=5678", u),
            [
                "add luks.uuid=1234-abcd: only the devices listed by luks.uuid= are opened",
                "add rd.luks.uuid=1234-abcd: only the devices listed by rd.luks.uuid= are opened"
            ]
        );
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
