//! The initramfs, when the system boots from the VG: which tool builds it and whether it
//! can open a LUKS2 device (asked in preflight, before anything changes), what it reads
//! (a crypttab, or a kernel argument), its rebuild after the switch, and a look inside
//! the new images before the admin reboots.
//!
//! What each tool needs, from its sources:
//! - initramfs-tools (Debian, Ubuntu): cryptsetup-initramfs's hook
//!   /usr/share/initramfs-tools/hooks/cryptroot copies the /etc/crypttab entries that /,
//!   /usr and the resume device sit on into the image as cryptroot/crypttab.
//! - dracut: modules.d/90crypt (check() requires cryptsetup). In hostonly mode it copies
//!   the needed /etc/crypttab lines and writes rd.luks.uuid into the image's own
//!   etc/cmdline.d. A generic image (hostonly unset: Debian's default) opens a LUKS device
//!   only when the kernel command line names it (parse-crypt.sh: rd.luks.uuid=, or rd.auto,
//!   off since dracut 024), so pvencrypt's own module (dracut/91pvencrypt, from its package)
//!   puts the entry in, asked for by /etc/dracut.conf.d/pvencrypt-NAME.conf. A systemd
//!   image opens what its etc/crypttab lists (systemd-cryptsetup-generator reads the real
//!   kernel command line, never etc/cmdline.d); a shell one what etc/cmdline.d names.
//!   omit_dracutmodules drops crypt; dracutmodules, when set, is the whole list
//!   (dracut.conf(5)).
//! - mkinitcpio (Arch): install/sd-encrypt copies /etc/crypttab.initramfs into the image as
//!   /etc/crypttab and needs the systemd hook; install/encrypt opens only the device named
//!   by cryptdevice= on the kernel command line and runs in a busybox (udev) initramfs.
//!   HOOKS comes from /etc/mkinitcpio.conf, overridden by /etc/mkinitcpio.conf.d/*.conf.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::{crypttab, which};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    InitramfsTools,
    Dracut,
    Mkinitcpio(Hook),
}

/// mkinitcpio's hook that opens LUKS devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// systemd's: reads /etc/crypttab.initramfs.
    SdEncrypt,
    /// busybox's: reads cryptdevice= from the kernel command line.
    Encrypt,
}

const CRYPTROOT_HOOK: &str = "usr/share/initramfs-tools/hooks/cryptroot";
const DRACUT_MODULES: &str = "usr/lib/dracut/modules.d";
/// pvencrypt's dracut module (dracut/91pvencrypt in the source), by the name dracut knows.
pub const DRACUT_OURS: &str = "pvencrypt";

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::InitramfsTools => "update-initramfs",
            Tool::Dracut => "dracut",
            Tool::Mkinitcpio(_) => "mkinitcpio",
        }
    }

    /// The rebuild of every installed kernel's image.
    pub fn rebuild(self) -> Vec<&'static str> {
        match self {
            Tool::InitramfsTools => vec!["update-initramfs", "-u", "-k", "all"],
            Tool::Dracut => vec!["dracut", "-f", "--regenerate-all"],
            Tool::Mkinitcpio(_) => vec!["mkinitcpio", "-P"],
        }
    }

    /// What lists an image's files.
    pub fn lister(self) -> &'static str {
        match self {
            Tool::InitramfsTools => "lsinitramfs",
            Tool::Dracut => "lsinitrd",
            Tool::Mkinitcpio(_) => "lsinitcpio",
        }
    }
}

/// The tool that builds the initramfs under ROOT, if it can open a LUKS2 device there;
/// otherwise what is missing and what to install or add. With several tools installed,
/// the first of update-initramfs, dracut, mkinitcpio is the one pvencrypt runs.
pub fn detect(root: &Path) -> Result<Tool, String> {
    // Ubuntu's dracut (25.10 on) ships an update-initramfs of its own that runs dracut;
    // initramfs-tools is the one whose update-initramfs comes with mkinitramfs.
    let dracut_wrapper = which(root, "mkinitramfs").is_none() && which(root, "dracut").is_some();
    if which(root, "update-initramfs").is_some() && !dracut_wrapper {
        if root.join(CRYPTROOT_HOOK).is_file() {
            return Ok(Tool::InitramfsTools);
        }
        return Err(format!(
            "the initramfs (update-initramfs) cannot open LUKS devices without cryptsetup-initramfs (no /{CRYPTROOT_HOOK}): \
             apt install cryptsetup-initramfs"
        ));
    }
    if which(root, "dracut").is_some() {
        return dracut(root).map(|()| Tool::Dracut);
    }
    if which(root, "mkinitcpio").is_some() {
        return mkinitcpio(root).map(Tool::Mkinitcpio);
    }
    Err("no initramfs tool is installed (update-initramfs, dracut or mkinitcpio): install your distribution's, \
         with its LUKS support (Debian and Ubuntu: apt install initramfs-tools cryptsetup-initramfs)"
        .into())
}

/// Preflight, when the system boots from the VG: the tool, if the initramfs it builds can
/// open the device; otherwise what is missing. `cmdline`: the kernel's, as now.
pub fn can_open(root: &Path, cmdline: &str) -> Result<Tool, String> {
    let tool = detect(root)?;
    // The encrypt hook reads a single cryptdevice=; before the conversion, one there is
    // another device's.
    if let (Tool::Mkinitcpio(Hook::Encrypt), Some(other)) =
        (tool, cmdline.split_whitespace().find(|a| a.starts_with("cryptdevice=")))
    {
        return Err(format!(
            "mkinitcpio's encrypt hook opens one device only, and the kernel command line gives it {other} already: \
             use sd-encrypt (with the systemd hook) in HOOKS in /etc/mkinitcpio.conf"
        ));
    }
    Ok(tool)
}

/// The whole refusal, when the system boots from the VG (WHY) and the initramfs cannot
/// open NAME (MISSING, from `can_open`).
pub fn refusal(why: &str, name: &str, missing: &str) -> String {
    format!(
        "{why}, so the next boot must open {name} in the initramfs, but {missing}. Nothing was changed; run pvencrypt \
         again afterwards (or with --no-initramfs, to see to the initramfs yourself)."
    )
}

/// Whether dracut has the module NAME, under any number: the number only orders the
/// modules, and a distribution may patch it.
pub fn has_module(root: &Path, name: &str) -> bool {
    fs::read_dir(root.join(DRACUT_MODULES)).is_ok_and(|d| {
        d.flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.len() > name.len() && n.trim_start_matches(|c: char| c.is_ascii_digit()) == name
        })
    })
}

fn dracut(root: &Path) -> Result<(), String> {
    if !has_module(root, "crypt") {
        return Err(format!(
            "dracut has no crypt module (no /{DRACUT_MODULES}/90crypt): install it (dracut-core on Debian and Ubuntu; \
             the dracut package elsewhere)"
        ));
    }
    if which(root, "cryptsetup").is_none() {
        return Err("dracut's crypt module needs cryptsetup, which is not installed: install cryptsetup".into());
    }
    let vars = settings(&dracut_conf(root));
    // Generic images open a LUKS device only when the kernel command line names it, and a
    // host-only one built during the conversion misses it too: 90crypt looks for LUKS among
    // the root's devices, and finds pvencrypt's mover there (seen in t_dracut_root).
    if !has_module(root, DRACUT_OURS) {
        return Err(format!(
            "pvencrypt's dracut module, which puts the device into dracut's images, is not installed (no \
             /{DRACUT_MODULES}/91pvencrypt): install pvencrypt from its package (generic images open a LUKS device only \
             when the kernel command line names it, and host-only ones built during the conversion do not see it)"
        ));
    }
    let origin = |var: &str| vars.get(var).and_then(|w| w.iter().find(|(w, _)| w == "crypt")).map(|(_, f)| f.clone());
    if let Some(file) = origin("omit_dracutmodules") {
        return Err(format!(
            "dracut's crypt module is left out by omit_dracutmodules in {file}: remove crypt from it (add the crypt dracut \
             module back)"
        ));
    }
    if let Some(only) = vars.get("dracutmodules").filter(|w| !w.is_empty()) {
        if origin("dracutmodules").is_none() && origin("add_dracutmodules").is_none() {
            return Err(format!(
                "dracutmodules in {} names every module dracut includes, and crypt is not among them: add the crypt \
                 dracut module (add_dracutmodules+=\" crypt \" in /etc/dracut.conf.d/crypt.conf)",
                only[0].1
            ));
        }
    }
    Ok(())
}

/// dracut.conf(5): /etc/dracut.conf, then the *.conf of /usr/lib/dracut/dracut.conf.d and
/// /etc/dracut.conf.d by name (a name in /etc replaces the same name in /usr/lib).
fn dracut_conf(root: &Path) -> Vec<(String, String)> {
    let mut files = read_conf(root, "etc/dracut.conf").into_iter().collect::<Vec<_>>();
    let mut by_name = std::collections::BTreeMap::new();
    for dir in ["usr/lib/dracut/dracut.conf.d", "etc/dracut.conf.d"] {
        for f in conf_dir(root, dir, ".conf") {
            by_name.insert(f.rsplit('/').next().unwrap_or_default().to_string(), f);
        }
    }
    files.extend(by_name.values().filter_map(|f| read_conf(root, f)));
    files
}

fn mkinitcpio(root: &Path) -> Result<Hook, String> {
    let mut files: Vec<(String, String)> = read_conf(root, "etc/mkinitcpio.conf").into_iter().collect();
    files.extend(conf_dir(root, "etc/mkinitcpio.conf.d", ".conf").iter().filter_map(|f| read_conf(root, f)));
    let vars = settings(&files);
    let hooks: Vec<&str> = vars.get("HOOKS").map(|w| w.iter().map(|(h, _)| h.as_str()).collect()).unwrap_or_default();
    let systemd = hooks.contains(&"systemd");
    if hooks.contains(&"sd-encrypt") {
        if !systemd {
            return Err("mkinitcpio's sd-encrypt hook needs the systemd hook, which HOOKS lacks: add systemd to HOOKS \
                        in /etc/mkinitcpio.conf (or use encrypt with udev)"
                .into());
        }
        return Ok(Hook::SdEncrypt);
    }
    if hooks.contains(&"encrypt") {
        if systemd {
            return Err("mkinitcpio's encrypt hook does not run in a systemd initramfs: replace encrypt with sd-encrypt \
                        in HOOKS in /etc/mkinitcpio.conf"
                .into());
        }
        return Ok(Hook::Encrypt);
    }
    Err("mkinitcpio's HOOKS has neither sd-encrypt nor encrypt, so the initramfs cannot open LUKS devices: add \
         sd-encrypt (or encrypt) to HOOKS in /etc/mkinitcpio.conf, before lvm2"
        .into())
}

fn read_conf(root: &Path, rel: &str) -> Option<(String, String)> {
    fs::read_to_string(root.join(rel)).ok().map(|text| (format!("/{rel}"), text))
}

/// The files of DIR (relative to ROOT) whose names end in EXT, sorted.
fn conf_dir(root: &Path, dir: &str, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join(dir))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(ext)).collect())
        .unwrap_or_default();
    names.sort();
    names.into_iter().map(|n| format!("{dir}/{n}")).collect()
}

/// The words of each variable once these bash files are sourced in order, each with the
/// file it came from: `X=v`, `X="a b"`, `X=(a b)` (over several lines too) replace,
/// `X+=...` appends; `#` starts a comment. Enough for dracut.conf and mkinitcpio.conf,
/// which are plain assignments.
fn settings(files: &[(String, String)]) -> HashMap<String, Vec<(String, String)>> {
    let mut vars: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (file, text) in files {
        for (name, append, words) in assignments(text) {
            let v = vars.entry(name).or_default();
            if !append {
                v.clear();
            }
            v.extend(words.into_iter().map(|w| (w, file.clone())));
        }
    }
    vars
}

fn assignments(text: &str) -> Vec<(String, bool, Vec<String>)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((lhs, value)) = line.trim_start().split_once('=') else { continue };
        let (name, append) = lhs.strip_suffix('+').map_or((lhs, false), |n| (n, true));
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            continue;
        }
        let close = match value.chars().next() {
            Some('(') => ')',
            Some(q @ ('"' | '\'')) => q,
            _ => {
                let word = value.split([' ', '\t', ';']).next().unwrap_or_default();
                out.push((name.to_string(), append, [word].iter().filter(|w| !w.is_empty()).map(|w| w.to_string()).collect()));
                continue;
            }
        };
        let mut body = String::new();
        let mut rest = &value[1..];
        loop {
            // Inside an array a word starting with # comments out the rest of its line.
            let part = if close == ')' { rest.split(" #").next().unwrap_or_default() } else { rest };
            let part = if close == ')' && part.trim_start().starts_with('#') { "" } else { part };
            if let Some(i) = part.find(close) {
                body.push_str(&part[..i]);
                break;
            }
            body.push_str(part);
            body.push(' ');
            match lines.next() {
                Some(l) => rest = l,
                None => break,
            }
        }
        let words = body.split_whitespace().map(|w| w.trim_matches(['"', '\'']).to_string()).filter(|w| !w.is_empty());
        out.push((name.to_string(), append, words.collect()));
    }
    out
}

/// What is told after the files the initramfs reads are written.
#[derive(Debug, PartialEq)]
pub enum Note {
    Info(String),
    /// Something the admin must do before rebooting.
    Todo(String),
}

/// Before the rebuild: what the tool reads besides /etc/crypttab. sd-encrypt: the entry
/// in /etc/crypttab.initramfs (unless `no_crypttab`: then the line to add); encrypt: the
/// cryptdevice= argument, which pvencrypt leaves to the admin (it does not edit the boot
/// loader) unless `cmdline` has it already; dracut: the drop-in that has pvencrypt's module
/// put the crypttab entry into every image, when the module is there (preflight refused a
/// generic image without it).
pub fn prepare(root: &Path, tool: Tool, line: &crypttab::Line, no_crypttab: bool, cmdline: &str) -> Vec<Note> {
    let (name, uuid) = (line.name, line.uuid);
    match tool {
        Tool::Mkinitcpio(Hook::SdEncrypt) if no_crypttab => vec![Note::Todo(format!(
            "add \"{}\" to {} (not touched: --no-crypttab), then run mkinitcpio -P",
            line,
            crypttab::CRYPTTAB_INITRAMFS
        ))],
        Tool::Mkinitcpio(Hook::SdEncrypt) => {
            let path = root.join(crypttab::CRYPTTAB_INITRAMFS.trim_start_matches('/'));
            match crypttab::add_crypttab(&path, line) {
                Ok(crypttab::Entry::Added) => {
                    vec![Note::Info(format!("added {name} to {} (the crypttab of the initramfs).", crypttab::CRYPTTAB_INITRAMFS))]
                }
                Ok(crypttab::Entry::Present(l)) => {
                    vec![Note::Info(format!("{} already has \"{l}\"; left as it is.", crypttab::CRYPTTAB_INITRAMFS))]
                }
                Err(e) => vec![Note::Todo(format!("{e}; add {name} to {} by hand", crypttab::CRYPTTAB_INITRAMFS))],
            }
        }
        Tool::Mkinitcpio(Hook::Encrypt) => {
            let arg = cryptdevice(name, uuid);
            if cmdline.split_whitespace().any(|a| a.eq_ignore_ascii_case(&arg)) {
                return vec![];
            }
            vec![Note::Todo(format!(
                "add {arg} to the kernel command line (mkinitcpio's encrypt hook opens only the device it names; e.g. \
                 GRUB_CMDLINE_LINUX in /etc/default/grub, then grub-mkconfig -o /boot/grub/grub.cfg); pvencrypt does not \
                 edit the boot loader"
            ))]
        }
        Tool::Dracut if !has_module(root, DRACUT_OURS) => vec![],
        Tool::Dracut => {
            // The admin's own line for the device, if there is one, under its name.
            let text = fs::read_to_string(root.join(crypttab::CRYPTTAB.trim_start_matches('/'))).unwrap_or_default();
            let entry = crypttab::find_entry(&text, name, Some(uuid)).and_then(|l| l.split_whitespace().next()).unwrap_or(name);
            let path = dracut_drop_in(root, entry);
            let _ = fs::create_dir_all(path.parent().unwrap_or(root));
            let settings = format!("add_dracutmodules+=\" {DRACUT_OURS} \"\npvencrypt_crypttab+=\" {entry} \"\n");
            let conf = format!(
                "# Written by pvencrypt: dracut's images open {entry} (LUKS2 UUID {uuid}, the PV of a volume group the \
                 system boots from),\n# from its /etc/crypttab entry, host-only or generic (pvencrypt's dracut module, \
                 /{DRACUT_MODULES}/91pvencrypt).\n{settings}"
            );
            let shown = Path::new("/").join(path.strip_prefix(root).unwrap_or(&path));
            let mut notes = match crate::sys::replace_file(&path, conf.as_bytes(), 0o644) {
                Ok(()) => vec![Note::Info(format!("wrote {}: dracut's images carry {entry}.", shown.display()))],
                Err(e) => vec![Note::Todo(format!("write {} ({e}) with: {}", shown.display(), settings.replace('\n', " ")))],
            };
            if no_crypttab {
                notes.push(Note::Todo(format!(
                    "add \"{}\" to {} (not touched: --no-crypttab): the initramfs takes it from there; then run dracut \
                     -f --regenerate-all",
                    line,
                    crypttab::CRYPTTAB
                )));
            }
            notes
        }
        Tool::InitramfsTools => vec![],
    }
}

/// The dracut configuration file that names the crypttab entry ENTRY for pvencrypt's module.
pub fn dracut_drop_in(root: &Path, entry: &str) -> PathBuf {
    root.join(format!("etc/dracut.conf.d/pvencrypt-{entry}.conf"))
}

pub fn cryptdevice(name: &str, uuid: &str) -> String {
    format!("cryptdevice=UUID={uuid}:{name}")
}

/// One image the rebuild wrote, and how to look into it.
#[derive(Debug, PartialEq)]
pub struct Image {
    pub label: String,
    /// Lists its files.
    pub list: Vec<String>,
    pub crypttab: Crypttab,
}

/// How to read the files inside an image.
#[derive(Debug, PartialEq)]
pub enum Crypttab {
    /// Not needed: the listing says enough.
    Unread,
    /// initramfs-tools: `unmkinitramfs IMAGE DIR`, then DIR/[main/]cryptroot/crypttab.
    Unpack(PathBuf),
    /// dracut: this command, with `-f FILE` after it, prints FILE.
    Print(Vec<String>),
}

/// The kernels installed under ROOT: a /lib/modules directory with its kernel image
/// beside it or in /boot (a leftover modules directory has neither).
pub fn kernels(root: &Path) -> Vec<String> {
    let mut k: Vec<String> = fs::read_dir(root.join("lib/modules"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    k.retain(|v| root.join(format!("lib/modules/{v}/vmlinuz")).is_file() || root.join(format!("boot/vmlinuz-{v}")).is_file());
    k.sort();
    k
}

/// The images to check after the rebuild.
pub fn images(root: &Path, tool: Tool) -> Vec<Image> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    match tool {
        Tool::InitramfsTools => kernels(root)
            .iter()
            .map(|k| root.join(format!("boot/initrd.img-{k}")))
            .filter(|p| p.is_file())
            .map(|p| Image { label: path(&p), list: vec!["lsinitramfs".into(), path(&p)], crypttab: Crypttab::Unpack(p) })
            .collect(),
        // lsinitrd finds an image by kernel version in the boot loader spec layouts, but
        // not Debian's or SUSE's names: those are given by path.
        Tool::Dracut => kernels(root)
            .iter()
            .map(|k| {
                let file = [format!("boot/initramfs-{k}.img"), format!("boot/initrd.img-{k}"), format!("boot/initrd-{k}")]
                    .into_iter()
                    .map(|f| root.join(f))
                    .find(|p| p.is_file());
                let (label, which) = match file {
                    Some(p) => (path(&p), vec![path(&p)]),
                    None => (format!("dracut's image for {k}"), vec!["--kver".into(), k.clone()]),
                };
                let list: Vec<String> = ["lsinitrd".to_string()].into_iter().chain(which).collect();
                Image { label, list: list.clone(), crypttab: Crypttab::Print(list) }
            })
            .collect(),
        // mkinitcpio -P builds what the presets name (default_image=, fallback_image=,
        // or *_uki= for unified kernel images, which lsinitcpio reads too).
        Tool::Mkinitcpio(_) => {
            let presets: Vec<(String, String)> =
                conf_dir(root, "etc/mkinitcpio.d", ".preset").iter().filter_map(|f| read_conf(root, f)).collect();
            let mut files: Vec<String> = settings(&presets)
                .into_iter()
                .filter(|(k, _)| k.ends_with("_image") || k.ends_with("_uki"))
                .flat_map(|(_, v)| v.into_iter().map(|(w, _)| w))
                .collect();
            files.sort();
            files.dedup();
            files
                .iter()
                .map(|f| root.join(f.trim_start_matches('/')))
                .filter(|p| p.is_file())
                .map(|p| Image { label: path(&p), list: vec!["lsinitcpio".into(), path(&p)], crypttab: Crypttab::Unread })
                .collect()
        }
    }
}

/// Whether a listing (one path per line, as lsinitramfs and lsinitcpio print it, or
/// `ls -l` lines, as lsinitrd does) holds PATH.
pub fn lists(listing: &str, path: &str) -> bool {
    listing.lines().any(|l| l.split_whitespace().any(|w| w.trim_start_matches("./").trim_start_matches('/') == path))
}

/// The dracut modules lsinitrd names in its header, if it printed that section.
pub fn dracut_modules(listing: &str) -> Option<Vec<&str>> {
    let mut lines = listing.lines().skip_while(|l| l.trim() != "dracut modules:");
    lines.next()?;
    Some(lines.take_while(|l| !l.starts_with("====")).map(str::trim).filter(|l| !l.is_empty()).collect())
}

const CRYPTSETUP: [&str; 4] = ["usr/sbin/cryptsetup", "usr/bin/cryptsetup", "sbin/cryptsetup", "bin/cryptsetup"];

/// What the image must carry to open the device at boot and the listing lacks.
pub fn lacks(tool: Tool, listing: &str) -> Vec<&'static str> {
    let needs: Vec<(&'static str, &[&str])> = match tool {
        Tool::InitramfsTools => vec![("cryptroot/crypttab", &["cryptroot/crypttab"]), ("cryptsetup", &CRYPTSETUP)],
        Tool::Dracut => match dracut_modules(listing) {
            Some(m) if m.contains(&"crypt") => vec![],
            Some(_) => vec![("the crypt dracut module", &[])],
            None => vec![("cryptsetup", &CRYPTSETUP)],
        },
        Tool::Mkinitcpio(Hook::SdEncrypt) => {
            vec![("etc/crypttab", &["etc/crypttab"]), ("systemd-cryptsetup", &["usr/lib/systemd/systemd-cryptsetup"])]
        }
        Tool::Mkinitcpio(Hook::Encrypt) => vec![("hooks/encrypt", &["hooks/encrypt"]), ("cryptsetup", &CRYPTSETUP)],
    };
    needs.into_iter().filter(|(_, any)| !any.iter().any(|p| lists(listing, p))).map(|(what, _)| what).collect()
}

/// What an image must carry to attach the LUKS2 headers `--decrypt` keeps at the devices'
/// tails (boot::headers) before it opens them, and the listing lacks: the list, the helper and
/// what runs it (initramfs-tools' init-premount script; the unit, enabled, in dracut's systemd
/// initramfs), util-linux's losetup. mkinitcpio: not supported, all of it.
pub fn lacks_headers(tool: Tool, listing: &str) -> Vec<&'static str> {
    let unit = ["usr/lib/systemd/system/pvencrypt-headers.service", "lib/systemd/system/pvencrypt-headers.service"];
    let wanted = [
        "usr/lib/systemd/system/sysinit.target.wants/pvencrypt-headers.service",
        "lib/systemd/system/sysinit.target.wants/pvencrypt-headers.service",
        "etc/systemd/system/sysinit.target.wants/pvencrypt-headers.service",
    ];
    let losetup = ["sbin/losetup", "usr/sbin/losetup", "bin/losetup", "usr/bin/losetup"];
    let needs: Vec<(&'static str, &[&str])> = match tool {
        Tool::InitramfsTools => vec![
            ("etc/pvencrypt/headers", &["etc/pvencrypt/headers"]),
            ("pvencrypt-headers", &["sbin/pvencrypt-headers", "usr/sbin/pvencrypt-headers"]),
            ("scripts/init-premount/pvencrypt", &["scripts/init-premount/pvencrypt"]),
            ("losetup", &losetup),
        ],
        Tool::Dracut => vec![
            ("etc/pvencrypt/headers", &["etc/pvencrypt/headers"]),
            ("pvencrypt-headers", &["usr/lib/pvencrypt/pvencrypt-headers"]),
            ("pvencrypt-headers.service", &unit),
            ("pvencrypt-headers.service enabled", &wanted),
            ("losetup", &losetup),
        ],
        Tool::Mkinitcpio(_) => vec![("pvencrypt's support (mkinitcpio has none yet)", &[])],
    };
    needs.into_iter().filter(|(_, any)| !any.iter().any(|p| lists(listing, p))).map(|(what, _)| what).collect()
}

/// Looks into every image for what attaches the headers at the devices' tails
/// (`lacks_headers`); empty when each one has it all, otherwise what is wrong.
pub fn verify_headers(root: &Path, tool: Tool) -> Vec<String> {
    let images = images(root, tool);
    if images.is_empty() {
        return vec![format!("found no initramfs image of {} to check", tool.name())];
    }
    images
        .iter()
        .filter_map(|img| match run(root, &img.list) {
            Err(e) => Some(format!("cannot list {}: {e}", img.label)),
            Ok(listing) => {
                let lacking = lacks_headers(tool, &listing);
                (!lacking.is_empty()).then(|| format!("{} lacks {}", img.label, lacking.join(" and ")))
            }
        })
        .collect()
}

/// Looks into every image the rebuild wrote. Empty when each one opens the device of LINE
/// (with the TPM2 when LINE says so) and, when `devices` (LVM's devices file, when it lists
/// /dev/mapper/NAME) is in the image, LVM there finds the PV on it; otherwise what is wrong,
/// for a loud warning before the admin reboots.
pub fn verify(root: &Path, tool: Tool, line: &crypttab::Line, devices: Option<&Path>) -> Vec<String> {
    let (name, uuid) = (line.name, line.uuid);
    let devices = devices.map(|p| p.to_string_lossy().trim_start_matches('/').to_string());
    let images = images(root, tool);
    if images.is_empty() {
        return vec![format!("found no initramfs image of {} to check", tool.name())];
    }
    let mut problems = Vec::new();
    for img in &images {
        let listing = match run(root, &img.list) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("cannot list {}: {e}", img.label));
                continue;
            }
        };
        let lacking = lacks(tool, &listing);
        if !lacking.is_empty() {
            problems.push(format!("{} lacks {}", img.label, lacking.join(" and ")));
            continue;
        }
        // systemd-cryptsetup loads them when crypttab says tpm2-device=.
        if line.tpm2 && !listing.contains("libtss2-esys.so") {
            problems.push(format!(
                "{} lacks the TPM2 libraries (libtss2-esys): it would ask for the passphrase of {name}",
                img.label
            ));
        }
        let print = |file: &str, cmd: &[String]| run(root, &[cmd, &["-f".to_string(), file.to_string()]].concat());
        // The image's copy of the devices file, if it has one.
        let mut devices_text = None;
        let text = match &img.crypttab {
            Crypttab::Unread => continue,
            Crypttab::Print(_) if !lists(&listing, "etc/crypttab") => {
                problems.push(format!("{} has no etc/crypttab, so it does not know {name}", img.label));
                continue;
            }
            Crypttab::Print(cmd) => {
                devices_text = devices.as_deref().filter(|d| lists(&listing, d)).map(|d| print(d, cmd));
                print("etc/crypttab", cmd)
            }
            Crypttab::Unpack(image) => unpacked(root, image, devices.as_deref()).map(|(c, d)| {
                devices_text = d.map(Ok);
                c
            }),
        };
        let mapper = format!("/dev/mapper/{name}");
        match devices_text {
            Some(Ok(t)) if !crate::lvm::lists(&t, &mapper) => problems.push(format!(
                "LVM's devices file inside {} does not list {mapper}: LVM there would not find the volume group",
                img.label
            )),
            Some(Err(e)) => problems.push(format!("cannot read LVM's devices file inside {}: {e}", img.label)),
            _ => {}
        }
        match text.as_deref().map(|t| crypttab::find_entry(t, name, Some(uuid))) {
            Ok(Some(e)) if line.tpm2 && !e.contains("tpm2-device=") => problems
                .push(format!("the entry for {name} inside {} has no tpm2-device=: it would ask for the passphrase", img.label)),
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!("the crypttab inside {} has no entry for {name}", img.label)),
            Err(e) => problems.push(format!("cannot read the crypttab inside {}: {e}", img.label)),
        }
        if let Crypttab::Print(cmd) = &img.crypttab {
            problems.extend(dracut_opens(&listing, uuid, |f| print(f, cmd)).map(|p| format!("{}: {p}", img.label)));
        }
    }
    problems
}

/// What keeps a dracut image whose etc/crypttab lists the device from opening it: a systemd
/// image needs systemd-cryptsetup's generator; a shell one, rd.luks.uuid in etc/cmdline.d
/// (the kernel's own command line is the admin's; cmdline_advice looks at it).
fn dracut_opens(listing: &str, uuid: &str, print: impl Fn(&str) -> Result<String, String>) -> Option<String> {
    let systemd = dracut_modules(listing).map_or_else(
        || lists(listing, "usr/lib/systemd/systemd") || lists(listing, "lib/systemd/systemd"),
        |m| m.contains(&"systemd"),
    );
    if systemd {
        let generator = "systemd/system-generators/systemd-cryptsetup-generator";
        return (!lists(listing, &format!("usr/lib/{generator}")) && !lists(listing, &format!("lib/{generator}")))
            .then(|| "its systemd lacks systemd-cryptsetup-generator, which opens what etc/crypttab lists".into());
    }
    let confs = listing.lines().filter_map(|l| l.split_whitespace().last()).filter(|f| {
        let f = f.trim_start_matches("./");
        f.starts_with("etc/cmdline.d/") && f.ends_with(".conf")
    });
    let names = |text: &str| {
        text.split_whitespace()
            .filter_map(|a| a.strip_prefix("rd.luks.uuid="))
            .any(|u| u.trim_start_matches("luks-").eq_ignore_ascii_case(uuid))
    };
    if confs.map(|f| print(f.trim_start_matches("./"))).any(|t| t.is_ok_and(|t| names(&t))) {
        return None;
    }
    Some(format!(
        "no rd.luks.uuid={uuid} in its etc/cmdline.d: without systemd, it opens only the LUKS devices named there or \
         on the kernel command line"
    ))
}

/// Runs the rebuild; Err says how it failed.
pub fn rebuild(root: &Path, tool: Tool) -> Result<(), String> {
    let argv: Vec<String> = tool.rebuild().iter().map(|a| a.to_string()).collect();
    run(root, &argv).map(drop)
}

/// Runs a command of these tools, as installed under ROOT; its output, or why it failed.
fn run(root: &Path, argv: &[String]) -> Result<String, String> {
    let tool = which(root, &argv[0]).ok_or_else(|| format!("{} is not installed", argv[0]))?;
    let out = crate::sys::output(Command::new(tool).args(&argv[1..])).map_err(|e| format!("{}: {e}", argv[0]))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The crypttab of an initramfs-tools image, and the file DEVICES (relative) if it has it.
/// unmkinitramfs unpacks the whole image (it cannot pick one file): into whichever of
/// /run and /var/tmp has more room, removed right after.
fn unpacked(root: &Path, image: &Path, devices: Option<&str>) -> Result<(String, Option<String>), String> {
    let parent = ["/run", "/var/tmp"].into_iter().max_by_key(|d| crate::sys::statvfs_avail(d).unwrap_or(0)).unwrap_or("/var/tmp");
    let dir = crate::sys::mkdtemp(&Path::new(parent).join("pvencrypt-initramfs-")).map_err(|e| format!("{parent}: {e}"))?;
    let argv = ["unmkinitramfs".to_string(), image.to_string_lossy().into_owned(), dir.to_string_lossy().into_owned()];
    let text = run(root, &argv).and_then(|_| {
        ["cryptroot/crypttab", "main/cryptroot/crypttab"]
            .iter()
            .find_map(|p| fs::read_to_string(dir.join(p)).ok())
            .ok_or_else(|| "no cryptroot/crypttab in it".to_string())
    });
    let found = devices.and_then(|d| ["", "main/"].iter().find_map(|p| fs::read_to_string(dir.join(p).join(d)).ok()));
    let text = text.map(|t| (t, found));
    let _ = fs::remove_dir_all(&dir);
    text
}

#[cfg(test)]
mod tests;
