//! Commands on a VG's metadata: backups, the PV size it records, cache refreshes.

use super::command::output_file;
use super::*;

/// Writes the VG metadata to `file`, or to LVM's backup directory
/// (/etc/lvm/backup/<vg>) when `None`.
pub fn vgcfgbackup(vg: &VgName, file: Option<&Path>) -> Result<(), Error> {
    let file =
        file.map(|p| p.to_str().ok_or_else(|| Error::Argument { arg: p.display().to_string(), why: "not UTF-8" })).transpose()?;
    let mut args = vec!["vgcfgbackup"];
    if let Some(f) = file {
        args.extend(["-f", f]);
    }
    args.extend(["--", vg.as_str()]);
    run(&args).map(drop)
}

/// Rescans all devices and rewrites LVM's caches in /run/lvm: the online PV
/// records (pvs_online, for event activation) and the device hints (which
/// devices later commands scan). For after a PV appeared or moved behind
/// LVM's back, e.g. into a new dm-crypt mapping.
pub fn pvscan_cache() -> Result<(), Error> {
    run(&["pvscan", "--cache"]).map(drop)
}

/// The size of the PV `pv_uuid` as the metadata of `vg` records it (`dev_size`, in
/// sectors): what pvresize sets. pvresize leaves the label's copy as it was (seen in
/// the VM), so the label cannot tell where the PV ends.
pub fn metadata_pv_size(vg: &VgName, pv_uuid: &str) -> Result<Sectors, Error> {
    let cmd = format!("vgcfgbackup {vg}");
    let text = output_file(&cmd, |file| vgcfgbackup(vg, Some(file)))?;
    let bad = || Error::report(&cmd, format!("no dev_size for PV {pv_uuid}"));
    metadata_dev_size(&text, pv_uuid).map(Sectors).ok_or_else(bad)
}

/// `dev_size` in the section of the PV whose `id` is `pv_uuid`.
fn metadata_dev_size(text: &str, pv_uuid: &str) -> Option<u64> {
    let id = format!("id = \"{pv_uuid}\"");
    let after = &text[text.find(&id)? + id.len()..];
    let section = &after[..after.find('}')?];
    section.lines().find_map(|l| l.trim().strip_prefix("dev_size = ")?.split_whitespace().next()?.parse().ok())
}

/// Reloads the kernel tables of the VG's active LVs from its metadata
/// (`vgchange --refresh`). Needs device-mapper.
pub fn vg_refresh(vg: &VgName) -> Result<(), Error> {
    run(&["vgchange", "--refresh", "--", vg.as_str()]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_size_read_from_the_pv_section() {
        let text = "vg {\n\tphysical_volumes {\n\t\tpv0 {\n\t\t\tid = \"aaaa-1\"\n\t\t\tdevice = \"/dev/vda\"\t# Hint only\n\
                    \t\t\tdev_size = 524288\t# 256 Megabytes\n\t\t}\n\t\tpv1 {\n\t\t\tid = \"bbbb-2\"\n\t\t\tdev_size = 131072\n\t\t}\n\t}\n}\n";
        assert_eq!(metadata_dev_size(text, "aaaa-1"), Some(524288));
        assert_eq!(metadata_dev_size(text, "bbbb-2"), Some(131072));
        assert_eq!(metadata_dev_size(text, "cccc-3"), None);
    }
}
