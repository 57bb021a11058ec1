//! LVM's configuration as this system has it: where its files live, its device filters.

use super::command::output_file;
use super::*;

/// Where LVM keeps what pvencrypt must find, as this system configures it.
#[derive(Debug, PartialEq)]
pub(super) struct Settings {
    locking_dir: PathBuf,
    pub(super) devices_file: PathBuf,
}

pub(super) fn settings() -> &'static Settings {
    static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(|| {
        let text = output_file("lvmconfig", |file| {
            let file = file.to_string_lossy();
            run(&["lvmconfig", "--typeconfig", "full", "--file", &file, "global/locking_dir", "devices/devicesfile"]).map(drop)
        })
        .unwrap_or_default();
        // LVM reads its files from LVM_SYSTEM_DIR (default /etc/lvm).
        let system = std::env::var_os("LVM_SYSTEM_DIR").map(PathBuf::from).unwrap_or_else(|| "/etc/lvm".into());
        settings_in(&text, &system)
    })
}

/// From lvmconfig's output; the devices file is devices/<devicesfile> under the system
/// directory (lvm2 lib/device/device_id.c).
fn settings_in(text: &str, system: &Path) -> Settings {
    let value = |name: &str, default: &str| {
        text.lines()
            .filter_map(parse_setting)
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.into_iter().next())
            .unwrap_or_else(|| default.into())
    };
    Settings {
        locking_dir: value("locking_dir", "/run/lock/lvm").into(),
        devices_file: system.join("devices").join(value("devicesfile", "system.devices")),
    }
}

/// global/locking_dir: where LVM's VG lock files live.
pub fn locking_dir() -> PathBuf {
    settings().locking_dir.clone()
}

/// A device filter setting as configured: its name (`global_filter`, `filter`) and
/// its patterns (`a|regex|`, `r|regex|`, any delimiter).
pub type Filter = (String, Vec<String>);

/// devices/global_filter and devices/filter, defaults included.
pub fn device_filters() -> Result<Vec<Filter>, Error> {
    // lvmconfig prints to stdout itself, past the log capture.
    let text = output_file("lvmconfig", |file| {
        let file = file.to_string_lossy();
        run(&["lvmconfig", "--typeconfig", "full", "--file", &file, "devices/global_filter", "devices/filter"]).map(drop)
    })?;
    let filters: Vec<Filter> = text.lines().filter_map(parse_setting).collect();
    if filters.len() != 2 {
        return Err(Error::report("lvmconfig", format!("expected global_filter and filter, read {filters:?}")));
    }
    Ok(filters)
}

/// `name=["a","b"]` or `name="a"` as lvmconfig prints it.
fn parse_setting(line: &str) -> Option<Filter> {
    let (name, value) = line.trim().split_once('=')?;
    let mut items = Vec::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        loop {
            match chars.next()? {
                '\\' => s.push(chars.next()?),
                '"' => break,
                c => s.push(c),
            }
        }
        items.push(s);
    }
    Some((name.trim().to_string(), items))
}

/// Whether a filter accepts a device known by `names`, as lvm.conf(5) defines it: each
/// name takes the verdict of the first pattern it matches; one accepted name accepts the
/// device, names matching nothing do not count, and a device no name matches is accepted.
pub fn filter_accepts(patterns: &[String], names: &[&str]) -> Result<bool, String> {
    let mut rules = Vec::new();
    for p in patterns {
        let mut cs = p.chars();
        let (Some(verdict @ ('a' | 'r')), Some(delim)) = (cs.next(), cs.next()) else {
            return Err(format!("cannot read the pattern {p:?}"));
        };
        let body = cs.as_str().strip_suffix(delim).ok_or_else(|| format!("the pattern {p:?} is not closed"))?;
        let re = regex::Regex::new(body).map_err(|e| format!("the pattern {p:?}: {e}"))?;
        rules.push((verdict == 'a', re));
    }
    let verdicts: Vec<bool> =
        names.iter().filter_map(|n| rules.iter().find(|(_, re)| re.is_match(n)).map(|(accept, _)| *accept)).collect();
    Ok(verdicts.is_empty() || verdicts.contains(&true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_as_lvmconfig_prints_them() {
        let text = "locking_dir=\"/var/lock/lvm2\"\ndevicesfile=\"test.devices\"\n";
        let s = settings_in(text, Path::new("/srv/lvm"));
        assert_eq!(s.locking_dir, PathBuf::from("/var/lock/lvm2"));
        assert_eq!(s.devices_file, PathBuf::from("/srv/lvm/devices/test.devices"));
        let d = settings_in("", Path::new("/etc/lvm"));
        assert_eq!(d, Settings { locking_dir: "/run/lock/lvm".into(), devices_file: "/etc/lvm/devices/system.devices".into() });
    }

    #[test]
    fn filter_settings_parsed_as_lvmconfig_prints_them() {
        assert_eq!(parse_setting(r#"filter=["a|.*|"]"#), Some(("filter".into(), vec!["a|.*|".into()])));
        assert_eq!(
            parse_setting(r#"global_filter=["a|^/dev/sda5$|","r|\"q\".*|"]"#),
            Some(("global_filter".into(), vec!["a|^/dev/sda5$|".into(), r#"r|"q".*|"#.into()]))
        );
        assert_eq!(parse_setting(r#"filter="r/cdrom/""#), Some(("filter".into(), vec!["r/cdrom/".into()])));
    }

    #[test]
    fn filters_judged_as_lvm_conf_describes() {
        let f = |ps: &[&str], names: &[&str]| filter_accepts(&ps.iter().map(|p| p.to_string()).collect::<Vec<_>>(), names);
        let crypt = ["/dev/mapper/sda5_crypt", "/dev/disk/by-id/dm-name-sda5_crypt"];
        assert_eq!(f(&["a|.*|"], &crypt), Ok(true));
        assert_eq!(f(&[], &crypt), Ok(true));
        // The common hand-written filter of one disk rejects the new device.
        assert_eq!(f(&["a|^/dev/sda5$|", "r|.*|"], &crypt), Ok(false));
        assert_eq!(f(&["a|^/dev/sda|", "r/.*/"], &crypt), Ok(false));
        // First match wins; one accepted name is enough; unmatched names do not count.
        assert_eq!(f(&["r|/dev/mapper/|", "a|.*|"], &crypt), Ok(true));
        assert_eq!(f(&["r|/dev/mapper/|", "r|dm-name|", "a|.*|"], &crypt), Ok(false));
        assert_eq!(f(&["a|/dev/mapper/|", "r|.*|"], &crypt), Ok(true));
        assert_eq!(f(&["r|/dev/cdrom|"], &crypt), Ok(true));
        assert!(f(&["x|.*|"], &crypt).is_err());
        assert!(f(&["a|.*"], &crypt).is_err());
    }
}
