//! crypttab files: /etc/crypttab, and /etc/crypttab.initramfs for mkinitcpio's sd-encrypt
//! hook (same format, copied into the image as /etc/crypttab).

use std::{fs, os::unix::fs::MetadataExt, path::Path};

use crate::error::{fail, Context, Result};

pub const CRYPTTAB: &str = "/etc/crypttab";
pub const CRYPTTAB_INITRAMFS: &str = "/etc/crypttab.initramfs";

/// The entry of one device: NAME, the LUKS UUID (stable, unlike /dev/sdX), no key file
/// (the passphrase is asked at boot), discard when the device supports it, and
/// tpm2-device=auto when the header has a TPM2 keyslot (tpm2.rs).
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub name: &'a str,
    pub uuid: &'a str,
    pub discard: bool,
    pub tpm2: bool,
}

impl std::fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let discard = if self.discard { ",discard" } else { "" };
        let tpm2 = if self.tpm2 { ",tpm2-device=auto" } else { "" };
        write!(f, "{} UUID={} none luks{discard}{tpm2}", self.name, self.uuid)
    }
}

/// What `add_crypttab` did.
#[derive(Debug, PartialEq)]
pub enum Entry {
    Added,
    /// A line for this name or UUID exists; it is left as the admin wrote it.
    Present(String),
}

/// The first entry (not a comment) for NAME or, when given, the UUID.
pub fn find_entry<'a>(text: &'a str, name: &str, uuid: Option<&str>) -> Option<&'a str> {
    let by_uuid = uuid.map(|u| format!("UUID={u}"));
    text.lines().find(|l| {
        let mut f = l.split_whitespace();
        !l.trim_start().starts_with('#')
            && (f.next() == Some(name) || f.next().zip(by_uuid.as_deref()).is_some_and(|(d, u)| d.eq_ignore_ascii_case(u)))
    })
}

/// Appends the entry unless one for NAME or the UUID is there.
pub fn add_crypttab(path: &Path, line: &Line) -> Result<Entry> {
    let mut present = None;
    rewrite(path, |old| {
        if let Some(l) = find_entry(old, line.name, Some(line.uuid)) {
            present = Some(l.to_string());
            return None;
        }
        let mut new = old.to_string();
        if !new.is_empty() && !new.ends_with('\n') {
            new.push('\n');
        }
        Some(new + &format!("{line}\n"))
    })?;
    Ok(present.map_or(Entry::Added, Entry::Present))
}

/// NAME's entry while its header lives at the device's tail (DECRYPT.md): the device named
/// by `source` (its LUKS UUID leaves the head with the first move), and
/// `header=/dev/disk/by-uuid/UUID`, the link udev gives the loop device over the tail. The
/// other options are kept. Returns the entry as it was and as it is, or None when there is
/// no entry for NAME.
pub fn with_tail_header(path: &Path, name: &str, source: &str, uuid: &str) -> Result<Option<(String, String)>> {
    let mut changed = None;
    rewrite(path, |old| {
        let line = find_entry(old, name, None)?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let mut options: Vec<String> = (f.get(3).copied().unwrap_or_default().split(','))
            .filter(|o| !o.is_empty() && !o.starts_with("header="))
            .map(String::from)
            .collect();
        // Without its header the source is no LUKS device to probe: the type is said.
        if !options.iter().any(|o| o == "luks") {
            options.insert(0, "luks".into());
        }
        options.push(format!("header=/dev/disk/by-uuid/{uuid}"));
        let options = options.join(",");
        let key = f.get(2).copied().unwrap_or("none");
        let new = [f[0], source, key, &options].into_iter().chain(f.iter().skip(4).copied()).collect::<Vec<_>>().join(" ");
        // That line, not an earlier comment holding the same text.
        let at = line.as_ptr() as usize - old.as_ptr() as usize;
        let text = format!("{}{new}{}", &old[..at], &old[at + line.len()..]);
        changed = Some((line.to_string(), new));
        Some(text)
    })?;
    Ok(changed)
}

/// Removes NAME's entry (a decryption's end). Returns it, or None when there was none.
pub fn remove_entry(path: &Path, name: &str) -> Result<Option<String>> {
    let mut removed = None;
    rewrite(path, |old| {
        let line = find_entry(old, name, None)?;
        let at = line.as_ptr() as usize - old.as_ptr() as usize;
        let end = (at + line.len() + 1).min(old.len());
        removed = Some(line.to_string());
        Some(format!("{}{}", &old[..at], &old[end..]))
    })?;
    Ok(removed)
}

/// Rewrites the file with what `edit` makes of its text (None: leaves it as it is). Written
/// to a temporary file beside it and renamed: a crash leaves the old file or the new one.
/// Under a lock, so that two pvencrypt runs (or threads) cannot lose each other's change.
pub(super) fn rewrite(path: &Path, edit: impl FnOnce(&str) -> Option<String>) -> Result<bool> {
    let _lock = lock_for(path)?;
    let old = match fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return fail(format!("Cannot read {}: {e}", path.display())),
    };
    let Some(new) = edit(&old) else { return Ok(false) };
    let mode = fs::metadata(path).map(|m| m.mode() & 0o7777).unwrap_or(0o644);
    crate::sys::replace_file(path, new.as_bytes(), mode).or_fail(|| format!("Cannot write {}", path.display()))?;
    Ok(true)
}

/// An exclusive flock on a file of its own under /run/pvencrypt (the file itself is
/// replaced by rename, so it cannot carry the lock), released when dropped.
fn lock_for(path: &Path) -> Result<fs::File> {
    let key: String = path.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let lock = Path::new("/run/pvencrypt").join(format!("{key}.lock"));
    crate::sys::lock_file(&lock).or_fail(|| format!("Cannot lock {}", lock.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn line<'a>(name: &'a str, uuid: &'a str, discard: bool) -> Line<'a> {
        Line { name, uuid, discard, tpm2: false }
    }

    #[test]
    fn the_line_with_its_options() {
        assert_eq!(line("sda5_crypt", "u-1", false).to_string(), "sda5_crypt UUID=u-1 none luks");
        let l = Line { name: "sda5_crypt", uuid: "u-1", discard: true, tpm2: true };
        assert_eq!(l.to_string(), "sda5_crypt UUID=u-1 none luks,discard,tpm2-device=auto");
    }

    #[test]
    fn concurrent_crypttab_updates_keep_every_line() {
        if !crate::sys::is_root() {
            return eprintln!("skipped: needs root (the lock lives in /run/pvencrypt)");
        }
        let (_dir_p, p) = tmp(Some("# crypttab\n"));
        std::thread::scope(|s| {
            for t in 0..8 {
                let p = &p;
                s.spawn(move || {
                    for i in 0..25 {
                        let (name, uuid) = (format!("d{t}_{i}_crypt"), format!("{t}-{i}"));
                        add_crypttab(p, &line(&name, &uuid, false)).unwrap();
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

    /// A crypttab (None: not there yet) in a directory of its own: (the directory, the file).
    fn tmp(content: Option<&str>) -> (crate::testing::TempDir, std::path::PathBuf) {
        let dir = crate::testing::TempDir::new("boot");
        let p = dir.join("crypttab");
        if let Some(c) = content {
            fs::write(&p, c).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        }
        (dir, p)
    }

    #[test]
    fn entry_appended_once_keeping_the_file_and_its_mode() {
        let (_dir_p, p) = tmp(Some("# <target name> <source device> <key file> <options>\nhome_crypt UUID=aaa none luks"));
        assert_eq!(add_crypttab(&p, &line("sda5_crypt", "1234-abcd", true)).unwrap(), Entry::Added);
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "# <target name> <source device> <key file> <options>\nhome_crypt UUID=aaa none luks\n\
             sda5_crypt UUID=1234-abcd none luks,discard\n"
        );
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(matches!(add_crypttab(&p, &line("sda5_crypt", "1234-abcd", true)).unwrap(), Entry::Present(_)));
        assert_eq!(fs::read_to_string(&p).unwrap(), text);
    }

    #[test]
    fn an_entry_by_uuid_under_another_name_is_left_alone() {
        let (_dir_p, p) = tmp(Some("mine UUID=1234-ABCD none luks,discard,tries=3\n"));
        assert_eq!(
            add_crypttab(&p, &line("sda5_crypt", "1234-abcd", false)).unwrap(),
            Entry::Present("mine UUID=1234-ABCD none luks,discard,tries=3".into())
        );
        let (_dir_commented, commented) = tmp(Some("#sda5_crypt UUID=1234-abcd none luks\n"));
        assert_eq!(add_crypttab(&commented, &line("sda5_crypt", "1234-abcd", false)).unwrap(), Entry::Added);
    }

    #[test]
    fn missing_file_is_created() {
        let (_dir_p, p) = tmp(None);
        assert_eq!(add_crypttab(&p, &line("vda_crypt", "u", false)).unwrap(), Entry::Added);
        assert_eq!(fs::read_to_string(&p).unwrap(), "vda_crypt UUID=u none luks\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
    }

    #[test]
    fn the_entry_of_a_tail_header_names_the_disk_and_the_header_link() {
        let (_d, p) = tmp(Some("# vda_crypt UUID=u none luks,discard\nvda_crypt UUID=u none luks,discard,tpm2-device=auto\n"));
        let by_path = "/dev/disk/by-path/pci-0000:00:05.0";
        let (was, is) = with_tail_header(&p, "vda_crypt", by_path, "u").unwrap().unwrap();
        assert_eq!(was, "vda_crypt UUID=u none luks,discard,tpm2-device=auto");
        assert_eq!(is, format!("vda_crypt {by_path} none luks,discard,tpm2-device=auto,header=/dev/disk/by-uuid/u"));
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text, format!("# vda_crypt UUID=u none luks,discard\n{is}\n"), "the comment left as it was");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        // Again (a resumed run): the same line.
        assert_eq!(with_tail_header(&p, "vda_crypt", by_path, "u").unwrap().unwrap().1, is);
        assert_eq!(fs::read_to_string(&p).unwrap(), text);
        // A line without a type, key file or options says luks; no entry: nothing written.
        let (_d, bare) = tmp(Some("sdb_crypt /dev/sdb\n"));
        let is = with_tail_header(&bare, "sdb_crypt", "/dev/disk/by-id/wwn-0x5", "v").unwrap().unwrap().1;
        assert_eq!(is, "sdb_crypt /dev/disk/by-id/wwn-0x5 none luks,header=/dev/disk/by-uuid/v");
        assert_eq!(with_tail_header(&bare, "other", "/dev/x", "v").unwrap(), None);
        assert_eq!(fs::read_to_string(&bare).unwrap(), format!("{is}\n"));
    }

    #[test]
    fn entries_found_by_name_or_uuid_never_in_comments() {
        let text = "# vda_crypt UUID=u none luks\nother UUID=X none luks\n  vda_crypt /dev/vda none luks\n";
        assert_eq!(find_entry(text, "vda_crypt", None), Some("  vda_crypt /dev/vda none luks"));
        assert_eq!(find_entry(text, "mine", Some("x")), Some("other UUID=X none luks"));
        assert_eq!(find_entry(text, "mine", None), None);
        assert_eq!(find_entry("", "vda_crypt", Some("u")), None);
    }
}
