//! LVM's devices file: which devices LVM looks at when it is in use.

use super::config::settings;
use super::*;

/// LVM's devices file (`--devicesfile NAME`: devices/NAME beside the configured one).
/// When it exists and lists a PV, LVM looks only at the devices it lists (with
/// devices/use_devicesfile = 1).
pub fn devices_file() -> PathBuf {
    let configured = settings().devices_file.clone();
    match common().devicesfile {
        Some(name) => configured.with_file_name(name),
        None => configured,
    }
}

/// True when the devices file has an entry for `dev` (a path, or a dm-crypt device's
/// name: LVM lists those by their dm uuid, CRYPT-LUKS2-<uuid>-NAME).
pub fn devices_file_lists(dev: &str) -> bool {
    lists(&fs::read_to_string(devices_file()).unwrap_or_default(), dev)
}

/// NAME of `IDNAME=CRYPT-<type>-<uuid, 32 hex digits>-<NAME>`.
fn crypt_name(field: &str) -> Option<&str> {
    let (_, rest) = field.strip_prefix("IDNAME=CRYPT-")?.split_once('-')?;
    rest.get(32..)?.strip_prefix('-')
}

/// Whether a devices file's TEXT lists `dev` (as `devices_file_lists`).
pub fn lists(text: &str, dev: &str) -> bool {
    let (by_name, by_id) = (format!("DEVNAME={dev}"), format!("IDNAME={dev}"));
    let name = dev.strip_prefix("/dev/mapper/");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.split_whitespace().any(|f| f == by_name || f == by_id || (name.is_some() && crypt_name(f) == name)))
}

/// The devices file lists `new` instead of `old`, if it listed `old` (the crypt device
/// instead of the raw one after the switch, the other way after `--decrypt`); each half is
/// skipped when done, so a resumed run repeats it safely. Ok(false): nothing to do.
pub fn devices_file_replace(new: &str, old: &str) -> Result<bool, Error> {
    if !devices_file_lists(old) {
        return Ok(false);
    }
    if !devices_file_lists(new) {
        run(&["lvmdevices", "-y", "--adddev", new])?;
    }
    run(&["lvmdevices", "-y", "--deldev", old])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_file_entries_found_by_path_or_crypt_name() {
        // As LVM 2.03.16 wrote them in the VM (t_devices_file).
        let text = "# LVM uses devices listed in this file.\nVERSION=1.1.3\n\
            IDTYPE=devname IDNAME=/dev/vda DEVNAME=/dev/vda PVID=b0fhhyKS2UW6tJqOz97g3pKc3MaecQbJ\n\
            IDTYPE=crypt_uuid IDNAME=CRYPT-LUKS2-d55779749ef241ab80727bdf26dc1037-vda_crypt \
            DEVNAME=/dev/mapper/vda_crypt PVID=q4MVXuqqMJVbvfgBTuXKl3L2IMIP9chJ\n";
        assert!(lists(text, "/dev/vda") && lists(text, "/dev/mapper/vda_crypt"));
        assert!(!lists(text, "/dev/vdb") && !lists(text, "/dev/mapper/crypt") && !lists(text, "/dev/vd"));
        let only_id = "IDTYPE=crypt_uuid IDNAME=CRYPT-LUKS2-d55779749ef241ab80727bdf26dc1037-vda_crypt DEVNAME=/dev/dm-3\n";
        assert!(lists(only_id, "/dev/mapper/vda_crypt"));
        assert!(!lists(only_id, "/dev/mapper/crypt") && !lists(only_id, "/dev/mapper/a_crypt"));
    }
}
