//! Fake systems in temporary directories, one per tool and configuration, and listings
//! captured from the real tools (shortened; their format kept).

use std::fs;

use crate::testing::TempDir;

use super::*;

/// An empty root with FILES (path, content) in it.
fn root(files: &[(&str, &str)]) -> TempDir {
    let r = TempDir::new("root");
    fs::create_dir_all(r.join("etc")).unwrap();
    for (path, content) in files {
        let p = r.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        if path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
        } else {
            fs::write(&p, content).unwrap();
        }
    }
    r
}

const DEBIAN: [(&str, &str); 3] = [
    ("usr/sbin/update-initramfs", "#!/bin/sh\n"),
    ("usr/sbin/mkinitramfs", "#!/bin/sh\n"),
    ("usr/share/initramfs-tools/hooks/cryptroot", ""),
];
/// dracut with its crypt module, cryptsetup and pvencrypt's module.
const DRACUT: [(&str, &str); 4] = [
    ("usr/bin/dracut", ""),
    ("usr/lib/dracut/modules.d/90crypt/module-setup.sh", ""),
    ("usr/sbin/cryptsetup", ""),
    ("usr/lib/dracut/modules.d/91pvencrypt/module-setup.sh", ""),
];

fn line(discard: bool) -> crypttab::Line<'static> {
    crypttab::Line { name: "sda5_crypt", uuid: "u-1", discard, tpm2: false }
}

fn ln<'a>(name: &'a str, uuid: &'a str) -> crypttab::Line<'a> {
    crypttab::Line { name, uuid, discard: false, tpm2: false }
}

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> TempDir {
    root(&[base, more].concat())
}

#[test]
fn initramfs_tools_needs_cryptsetup_initramfs() {
    assert_eq!(detect(&root(&DEBIAN)), Ok(Tool::InitramfsTools));
    let err = detect(&root(&DEBIAN[..2])).unwrap_err();
    assert!(err.contains("apt install cryptsetup-initramfs"), "{err}");
    assert!(err.contains("/usr/share/initramfs-tools/hooks/cryptroot"), "{err}");
}

#[test]
fn no_tool_at_all() {
    let err = detect(&root(&[("usr/sbin/cryptsetup", "")])).unwrap_err();
    assert!(err.starts_with("no initramfs tool is installed (update-initramfs, dracut or mkinitcpio)"), "{err}");
}

#[test]
fn the_refusal_says_why_and_what_to_install() {
    let missing = can_open(&root(&DEBIAN[..2]), "").unwrap_err();
    assert_eq!(
        refusal("/ is on the volume group", "sda5_crypt", &missing),
        "/ is on the volume group, so the next boot must open sda5_crypt in the initramfs, but the initramfs \
         (update-initramfs) cannot open LUKS devices without cryptsetup-initramfs (no \
         /usr/share/initramfs-tools/hooks/cryptroot): apt install cryptsetup-initramfs. Nothing was changed; run \
         pvencrypt again afterwards (or with --no-initramfs, to see to the initramfs yourself)."
    );
    assert_eq!(can_open(&root(&DEBIAN), "root=/dev/mapper/vg-root ro"), Ok(Tool::InitramfsTools));
}

#[test]
fn the_encrypt_hook_opens_one_device_only() {
    let r = root(&[("usr/bin/mkinitcpio", ""), ("etc/mkinitcpio.conf", "HOOKS=(base udev block encrypt lvm2)\n")]);
    assert_eq!(can_open(&r, "root=/dev/vg/root rw"), Ok(Tool::Mkinitcpio(Hook::Encrypt)));
    let err = can_open(&r, "cryptdevice=UUID=other:sdb1_crypt root=/dev/vg/root rw").unwrap_err();
    assert!(err.contains("gives it cryptdevice=UUID=other:sdb1_crypt already: use sd-encrypt"), "{err}");
    let sd = root(&[("usr/bin/mkinitcpio", ""), ("etc/mkinitcpio.conf", "HOOKS=(base systemd block sd-encrypt lvm2)\n")]);
    assert_eq!(can_open(&sd, "cryptdevice=UUID=other:sdb1_crypt"), Ok(Tool::Mkinitcpio(Hook::SdEncrypt)));
}

#[test]
fn dracut_needs_its_crypt_module_and_cryptsetup() {
    assert_eq!(detect(&root(&DRACUT)), Ok(Tool::Dracut));
    // Another number in front of the module's name is still the module.
    assert_eq!(detect(&root(&[DRACUT[0], ("usr/lib/dracut/modules.d/70crypt/", ""), DRACUT[2], DRACUT[3]])), Ok(Tool::Dracut));
    let err = detect(&root(&[DRACUT[0], ("usr/lib/dracut/modules.d/90crypt-loop/", ""), DRACUT[2], DRACUT[3]])).unwrap_err();
    assert!(err.starts_with("dracut has no crypt module (no /usr/lib/dracut/modules.d/90crypt)"), "{err}");
    let err = detect(&root(&DRACUT[..2])).unwrap_err();
    assert!(err.contains("install cryptsetup"), "{err}");
}

#[test]
fn dracut_needs_pvencrypts_module() {
    let err = detect(&root(&DRACUT[..3])).unwrap_err();
    assert_eq!(
        err,
        "pvencrypt's dracut module, which puts the device into dracut's images, is not installed (no \
         /usr/lib/dracut/modules.d/91pvencrypt): install pvencrypt from its package (generic images open a LUKS device \
         only when the kernel command line names it, and host-only ones built during the conversion do not see it)"
    );
    // Host-only too.
    let hostonly = ("etc/dracut.conf.d/10-h.conf", "hostonly=\"yes\"\n");
    assert!(detect(&with(&DRACUT[..3], &[hostonly])).is_err());
    assert_eq!(detect(&with(&DRACUT, &[hostonly])), Ok(Tool::Dracut));
}

#[test]
fn ubuntus_update_initramfs_that_runs_dracut() {
    let wrapper = ("usr/sbin/update-initramfs", "#!/bin/sh\nexec dracut \"$@\"\n");
    assert_eq!(detect(&with(&DRACUT, &[wrapper])), Ok(Tool::Dracut));
    // Without dracut, an update-initramfs alone is initramfs-tools' (lacking its hook here).
    assert!(detect(&root(&[wrapper])).unwrap_err().contains("apt install cryptsetup-initramfs"));
}

#[test]
fn dracut_configuration_that_leaves_crypt_out() {
    let omit = (
        "etc/dracut.conf.d/10-slim.conf",
        "# no crypt here: omit_dracutmodules+=\" crypt \"\nomit_dracutmodules+=\" plymouth crypt \"\n",
    );
    let err = detect(&with(&DRACUT, &[omit])).unwrap_err();
    assert!(err.contains("omit_dracutmodules in /etc/dracut.conf.d/10-slim.conf: remove crypt"), "{err}");
    // A later file that sets the list anew wins; an earlier one does not.
    assert_eq!(detect(&with(&DRACUT, &[omit, ("etc/dracut.conf.d/20-x.conf", "omit_dracutmodules=\"\"\n")])), Ok(Tool::Dracut));
    let err = detect(&with(&DRACUT, &[omit, ("etc/dracut.conf.d/05-x.conf", "omit_dracutmodules=\"\"\n")])).unwrap_err();
    assert!(err.contains("10-slim.conf"), "{err}");
    // /etc/dracut.conf.d replaces the file of the same name in /usr/lib/dracut/dracut.conf.d.
    let vendor = ("usr/lib/dracut/dracut.conf.d/10-slim.conf", omit.1);
    assert!(detect(&with(&DRACUT, &[vendor])).is_err());
    assert_eq!(detect(&with(&DRACUT, &[vendor, ("etc/dracut.conf.d/10-slim.conf", "hostonly=yes\n")])), Ok(Tool::Dracut));
    // In /etc/dracut.conf itself, and omitting other modules only.
    assert!(detect(&with(&DRACUT, &[("etc/dracut.conf", "omit_dracutmodules='crypt'\n")])).is_err());
    assert_eq!(detect(&with(&DRACUT, &[("etc/dracut.conf", "omit_dracutmodules+=\" cryptfoo \"\n")])), Ok(Tool::Dracut));

    let only = ("etc/dracut.conf", "dracutmodules=\"base dm lvm rootfs-block\"\n");
    let err = detect(&with(&DRACUT, &[only])).unwrap_err();
    assert!(err.contains("dracutmodules in /etc/dracut.conf names every module"), "{err}");
    assert!(err.contains("add_dracutmodules+=\" crypt \""), "{err}");
    assert_eq!(
        detect(&with(&DRACUT, &[only, ("etc/dracut.conf.d/c.conf", "add_dracutmodules+=\" crypt \"\n")])),
        Ok(Tool::Dracut)
    );
}

fn arch(conf: &str, more: &[(&str, &str)]) -> Result<Tool, String> {
    detect(&root(&[&[("usr/bin/mkinitcpio", ""), ("etc/mkinitcpio.conf", conf)], more].concat()))
}

#[test]
fn mkinitcpio_hooks() {
    let sd = "MODULES=()\n# HOOKS=(base udev encrypt)\nHOOKS=(base systemd autodetect microcode modconf kms keyboard sd-vconsole block sd-encrypt lvm2 filesystems fsck)\n";
    assert_eq!(arch(sd, &[]), Ok(Tool::Mkinitcpio(Hook::SdEncrypt)));
    let enc = "HOOKS=\"base udev autodetect modconf block keymap encrypt lvm2 filesystems keyboard fsck\"\n";
    assert_eq!(arch(enc, &[]), Ok(Tool::Mkinitcpio(Hook::Encrypt)));
    // An array over several lines, with comments.
    let multi = "HOOKS=(base udev # the usual\n  autodetect block\n  # encrypt is not wanted here\n  lvm2 filesystems)\n";
    let err = arch(multi, &[]).unwrap_err();
    assert_eq!(
        err,
        "mkinitcpio's HOOKS has neither sd-encrypt nor encrypt, so the initramfs cannot open LUKS devices: add \
         sd-encrypt (or encrypt) to HOOKS in /etc/mkinitcpio.conf, before lvm2"
    );
    let multi_enc = "HOOKS=(base udev\n  autodetect block encrypt\n  lvm2 filesystems)\nCOMPRESSION=zstd\n";
    assert_eq!(arch(multi_enc, &[]), Ok(Tool::Mkinitcpio(Hook::Encrypt)));
    // Drop-ins override the main file, or add to it.
    assert!(arch(enc, &[("etc/mkinitcpio.conf.d/plain.conf", "HOOKS=(base udev block lvm2 filesystems)\n")]).is_err());
    assert_eq!(arch(multi, &[("etc/mkinitcpio.conf.d/crypt.conf", "HOOKS+=(encrypt)\n")]), Ok(Tool::Mkinitcpio(Hook::Encrypt)));
    // Each hook with its own init.
    assert!(arch("HOOKS=(base udev block sd-encrypt lvm2)\n", &[]).unwrap_err().contains("needs the systemd hook"));
    assert!(arch("HOOKS=(base systemd block encrypt lvm2)\n", &[]).unwrap_err().contains("replace encrypt with sd-encrypt"));
    assert!(arch("", &[]).is_err());
}

#[test]
fn update_initramfs_comes_first_when_several_are_installed() {
    assert_eq!(detect(&root(&[&DEBIAN[..], &DRACUT[..]].concat())), Ok(Tool::InitramfsTools));
    assert!(detect(&root(&[&DEBIAN[..2], &DRACUT[..]].concat())).is_err());
    // The package of initramfs-tools is the one with mkinitramfs.
    assert_eq!(detect(&root(&[&DEBIAN[..1], &DEBIAN[2..], &DRACUT[..]].concat())), Ok(Tool::Dracut));
}

#[test]
fn rebuild_commands() {
    assert_eq!(Tool::InitramfsTools.rebuild(), ["update-initramfs", "-u", "-k", "all"]);
    assert_eq!(Tool::Dracut.rebuild(), ["dracut", "-f", "--regenerate-all"]);
    assert_eq!(Tool::Mkinitcpio(Hook::SdEncrypt).rebuild(), ["mkinitcpio", "-P"]);
}

#[test]
fn sd_encrypt_gets_crypttab_initramfs() {
    let r = root(&[("etc/crypttab.initramfs", "# <name> <device> <password> <options>\n")]);
    let notes = prepare(&r, Tool::Mkinitcpio(Hook::SdEncrypt), &line(true), false, "");
    assert_eq!(notes, [Note::Info("added sda5_crypt to /etc/crypttab.initramfs (the crypttab of the initramfs).".into())]);
    assert_eq!(
        fs::read_to_string(r.join("etc/crypttab.initramfs")).unwrap(),
        "# <name> <device> <password> <options>\nsda5_crypt UUID=u-1 none luks,discard\n"
    );
    let again = prepare(&r, Tool::Mkinitcpio(Hook::SdEncrypt), &line(true), false, "");
    assert!(matches!(&again[..], [Note::Info(m)] if m.contains("already has")), "{again:?}");
    assert!(!r.join("etc/crypttab").exists());

    let r = root(&[]);
    let notes = prepare(&r, Tool::Mkinitcpio(Hook::SdEncrypt), &line(false), true, "");
    assert_eq!(
        notes,
        [Note::Todo(
            "add \"sda5_crypt UUID=u-1 none luks\" to /etc/crypttab.initramfs (not touched: --no-crypttab), then run \
             mkinitcpio -P"
                .into()
        )]
    );
    assert!(!r.join("etc/crypttab.initramfs").exists());
}

#[test]
fn encrypt_hook_gets_a_kernel_argument_for_the_admin() {
    let r = root(&[]);
    let notes = prepare(&r, Tool::Mkinitcpio(Hook::Encrypt), &line(false), false, "root=/dev/vg/root rw");
    assert!(
        matches!(&notes[..], [Note::Todo(m)] if m.starts_with("add cryptdevice=UUID=u-1:sda5_crypt to the kernel command line")),
        "{notes:?}"
    );
    assert!(prepare(&r, Tool::Mkinitcpio(Hook::Encrypt), &line(false), false, "cryptdevice=UUID=u-1:sda5_crypt rw").is_empty());
    assert!(fs::read_dir(r.join("etc")).unwrap().next().is_none(), "nothing written");
    for t in [Tool::InitramfsTools, Tool::Dracut] {
        assert!(prepare(&r, t, &line(false), false, "").is_empty());
    }
    assert!(fs::read_dir(r.join("etc")).unwrap().next().is_none(), "nothing written");
}

#[test]
fn dracut_gets_a_drop_in_for_pvencrypts_module() {
    let r = with(&DRACUT, &[("etc/crypttab", "# <target name> <source device> <key file> <options>\n")]);
    let notes = prepare(&r, Tool::Dracut, &line(false), false, "");
    assert_eq!(
        notes,
        [Note::Info("wrote /etc/dracut.conf.d/pvencrypt-sda5_crypt.conf: dracut's images carry sda5_crypt.".into())]
    );
    let conf = fs::read_to_string(r.join("etc/dracut.conf.d/pvencrypt-sda5_crypt.conf")).unwrap();
    assert!(conf.starts_with("# Written by pvencrypt: dracut's images open sda5_crypt (LUKS2 UUID u-1,"), "{conf}");
    let vars = settings(&[("c".into(), conf)]);
    let words = |k: &str| vars[k].iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>();
    assert_eq!(words("add_dracutmodules"), ["pvencrypt"]);
    assert_eq!(words("pvencrypt_crypttab"), ["sda5_crypt"]);
    // The admin's own line for the UUID, under another name: that name goes to the image.
    let r = with(&DRACUT, &[("etc/crypttab", "cryptroot UUID=U-1 none luks\n")]);
    prepare(&r, Tool::Dracut, &line(false), false, "");
    assert!(r.join("etc/dracut.conf.d/pvencrypt-cryptroot.conf").is_file());
    // --no-crypttab: the line to add, and the drop-in that takes it from there.
    let r = with(&DRACUT, &[]);
    let notes = prepare(&r, Tool::Dracut, &line(true), true, "");
    assert!(
        matches!(&notes[1], Note::Todo(m) if m.starts_with("add \"sda5_crypt UUID=u-1 none luks,discard\" to /etc/crypttab"))
    );
}

#[test]
fn images_of_installed_kernels() {
    let r = root(&[
        ("lib/modules/6.1.0-13-amd64/modules.dep", ""),
        ("lib/modules/6.1.0-9-amd64/updates/", ""),
        ("boot/vmlinuz-6.1.0-13-amd64", ""),
        ("boot/initrd.img-6.1.0-13-amd64", ""),
        ("boot/initrd.img-6.1.0-9-amd64", ""),
    ]);
    assert_eq!(kernels(&r), ["6.1.0-13-amd64"]);
    let img = r.join("boot/initrd.img-6.1.0-13-amd64");
    let p = img.to_string_lossy().to_string();
    assert_eq!(
        images(&r, Tool::InitramfsTools),
        [Image { label: p.clone(), list: vec!["lsinitramfs".into(), p.clone()], crypttab: Crypttab::Unpack(img) }]
    );
    // dracut on Debian names the image as initramfs-tools does.
    assert_eq!(
        images(&r, Tool::Dracut),
        [Image {
            label: p.clone(),
            list: vec!["lsinitrd".into(), p.clone()],
            crypttab: Crypttab::Print(vec!["lsinitrd".into(), p])
        }]
    );
    // Fedora: the kernel beside its modules, the image found by lsinitrd.
    let r = root(&[("lib/modules/6.5.6-300.fc39.x86_64/vmlinuz", "")]);
    assert_eq!(images(&r, Tool::Dracut)[0].list, ["lsinitrd", "--kver", "6.5.6-300.fc39.x86_64"]);
}

#[test]
fn mkinitcpio_images_come_from_the_presets() {
    let preset = "ALL_kver=\"/boot/vmlinuz-linux\"\nPRESETS=('default' 'fallback')\n\
                  default_image=\"/boot/initramfs-linux.img\"\nfallback_image=\"/boot/initramfs-linux-fallback.img\"\n\
                  fallback_options=\"-S autodetect\"\n";
    let r = root(&[
        ("etc/mkinitcpio.d/linux.preset", preset),
        ("etc/mkinitcpio.d/linux-lts.preset", "PRESETS=('default')\n#default_uki=\"/efi/EFI/Linux/arch-linux-lts.efi\"\ndefault_image=\"/boot/initramfs-linux-lts.img\"\n"),
        ("boot/initramfs-linux.img", ""),
        ("boot/initramfs-linux-fallback.img", ""),
    ]);
    let lists: Vec<Vec<String>> = images(&r, Tool::Mkinitcpio(Hook::Encrypt)).into_iter().map(|i| i.list).collect();
    let p = |f: &str| r.join(f).to_string_lossy().to_string();
    assert_eq!(
        lists,
        [
            vec!["lsinitcpio".to_string(), p("boot/initramfs-linux-fallback.img")],
            vec!["lsinitcpio".to_string(), p("boot/initramfs-linux.img")]
        ]
    );
}

/// `lsinitramfs /boot/initrd.img-6.1.0-13-amd64` on Debian 12 with cryptsetup-initramfs.
const LSINITRAMFS: &str = "/boot/initrd.img-6.1.0-13-amd64
.
kernel
kernel/x86
kernel/x86/microcode
kernel/x86/microcode/AuthenticAMD.bin
.
bin
conf
conf/arch.conf
conf/conf.d
conf/conf.d/cryptroot
conf/initramfs.conf
cryptroot
cryptroot/crypttab
etc
etc/lvm/lvm.conf
init
lib
sbin
scripts/local-top/cryptroot
scripts/local-top/lvm2
usr/lib/cryptsetup/askpass
usr/sbin/cryptsetup
usr/sbin/lvm
";

/// `lsinitrd` on Fedora 39 (hostonly, the root on LUKS).
const LSINITRD: &str = "Image: /boot/initramfs-6.5.6-300.fc39.x86_64.img: 36M
========================================================================
Early CPIO image
========================================================================
drwxr-xr-x   3 root     root            0 Oct 10 02:00 .
-rw-r--r--   1 root     root            2 Oct 10 02:00 early_cpio
========================================================================
Version: dracut-059-15.fc39

Arguments:  --kver '6.5.6-300.fc39.x86_64' -f

dracut modules:
bash
systemd
systemd-initrd
crypt
dm
kernel-modules
lvm
rootfs-block
========================================================================
crw-r--r--   1 root     root       5,   1 Oct 10 02:00 dev/console
-rw-r--r--   1 root     root           68 Oct 10 02:00 etc/crypttab
-rw-r--r--   1 root     root           52 Oct 10 02:00 etc/cmdline.d/90crypt.conf
lrwxrwxrwx   1 root     root            7 Oct 10 02:00 sbin -> usr/sbin
-rwxr-xr-x   1 root     root        47696 Oct 10 02:00 usr/lib/systemd/system-generators/systemd-cryptsetup-generator
-rwxr-xr-x   1 root     root       253040 Oct 10 02:00 usr/sbin/cryptsetup
========================================================================
";

/// `lsinitcpio /boot/initramfs-linux.img` on Arch, HOOKS with systemd and sd-encrypt.
const LSINITCPIO_SD: &str = "bin
buildconfig
config
etc/
etc/crypttab
etc/initrd-release
hooks/
init
usr/lib/systemd/systemd-cryptsetup
usr/lib/systemd/system-generators/systemd-cryptsetup-generator
";

/// The same with udev and encrypt.
const LSINITCPIO_ENC: &str = "./bin\n./hooks/\n./hooks/udev\n./hooks/encrypt\n./usr/bin/cryptsetup\n./init\n";

#[test]
fn listings_that_carry_the_unlock() {
    assert!(lacks(Tool::InitramfsTools, LSINITRAMFS).is_empty());
    assert!(lacks(Tool::Dracut, LSINITRD).is_empty());
    assert!(lacks(Tool::Mkinitcpio(Hook::SdEncrypt), LSINITCPIO_SD).is_empty());
    assert!(lacks(Tool::Mkinitcpio(Hook::Encrypt), LSINITCPIO_ENC).is_empty());
    assert!(lists(LSINITRD, "etc/crypttab"));
    assert!(!lists(LSINITRD, "etc/crypttab.initramfs"));
    assert_eq!(
        dracut_modules(LSINITRD).unwrap(),
        ["bash", "systemd", "systemd-initrd", "crypt", "dm", "kernel-modules", "lvm", "rootfs-block"]
    );
}

#[test]
fn listings_that_do_not() {
    let no_crypt = LSINITRAMFS.replace("cryptroot/crypttab\n", "").replace("usr/sbin/cryptsetup\n", "");
    assert_eq!(lacks(Tool::InitramfsTools, &no_crypt), ["cryptroot/crypttab", "cryptsetup"]);
    // `cryptroot` alone (the directory) is not the file.
    assert!(lists(&no_crypt, "cryptroot") && !lists(&no_crypt, "cryptroot/crypttab"));
    assert_eq!(lacks(Tool::Dracut, &LSINITRD.replace("\ncrypt\n", "\n")), ["the crypt dracut module"]);
    // Without the modules section (lsinitrd of another version): the files decide.
    let files_only = &LSINITRD[LSINITRD.rfind("dracut modules:").unwrap() + 15..];
    let files_only = files_only.replace("\ncrypt\n", "\n");
    assert!(lacks(Tool::Dracut, &files_only).is_empty());
    assert_eq!(lacks(Tool::Dracut, &files_only.replace("usr/sbin/cryptsetup", "usr/sbin/lvm")), ["cryptsetup"]);
    assert_eq!(lacks(Tool::Mkinitcpio(Hook::SdEncrypt), LSINITCPIO_ENC), ["etc/crypttab", "systemd-cryptsetup"]);
    assert_eq!(lacks(Tool::Mkinitcpio(Hook::Encrypt), LSINITCPIO_SD), ["hooks/encrypt", "cryptsetup"]);
    assert_eq!(lacks(Tool::Mkinitcpio(Hook::Encrypt), ""), ["hooks/encrypt", "cryptsetup"]);
}

#[test]
fn bash_assignments() {
    let a = assignments("A=1\nB+=\" x  y \"\n C=(p\n q # r s\n t) # done\nD='z'\n#E=1\nexport F=2\nG=\nH=(a)\n");
    let got: Vec<(&str, bool, Vec<&str>)> =
        a.iter().map(|(n, ap, w)| (n.as_str(), *ap, w.iter().map(String::as_str).collect())).collect();
    assert_eq!(
        got,
        [
            ("A", false, vec!["1"]),
            ("B", true, vec!["x", "y"]),
            ("C", false, vec!["p", "q", "t"]),
            ("D", false, vec!["z"]),
            ("G", false, vec![]),
            ("H", false, vec!["a"])
        ]
    );
}

/// ROOT with stand-ins for the listing tools (shell scripts: an image file holds its own
/// listing, IMAGE.crypttab the crypttab inside it) and one installed kernel.
fn with_stubs(tool_files: &[(&str, &str)], image: &str, listing: &str, crypttab: Option<&str>) -> TempDir {
    let mut files = vec![("lib/modules/6.1.0-13-amd64/modules.dep", ""), ("boot/vmlinuz-6.1.0-13-amd64", ""), (image, listing)];
    let ct = format!("{image}.crypttab");
    if let Some(c) = crypttab {
        files.push((&ct, c));
    }
    files.extend_from_slice(tool_files);
    let r = root(&files);
    for (f, _) in tool_files {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(r.join(f), fs::Permissions::from_mode(0o755)).unwrap();
    }
    r
}

const DEBIAN_STUBS: [(&str, &str); 4] = [
    DEBIAN[0],
    DEBIAN[1],
    ("usr/bin/lsinitramfs", "#!/bin/sh\necho \"$1\"; cat \"$1\"\n"),
    (
        "usr/bin/unmkinitramfs",
        "#!/bin/sh\n[ -d \"$2\" ] && mkdir -p \"$2/main/cryptroot\" \"$2/main/etc/lvm/devices\" && { [ ! -f \"$1.crypttab\" ] || cp \"$1.crypttab\" \"$2/main/cryptroot/crypttab\"; } && { [ ! -f \"$1.devices\" ] || cp \"$1.devices\" \"$2/main/etc/lvm/devices/system.devices\"; }\n",
    ),
];

#[test]
fn a_debian_image_that_opens_the_device() {
    if !crate::sys::is_root() {
        return eprintln!("skipped: needs root (the image is unpacked under /run or /var/tmp)");
    }
    let img = "boot/initrd.img-6.1.0-13-amd64";
    let good = "vda_crypt UUID=1234 none luks,discard\n";
    let r = with_stubs(&DEBIAN_STUBS, img, LSINITRAMFS, Some(good));
    assert_eq!(verify(&r, Tool::InitramfsTools, &ln("vda_crypt", "1234"), None), Vec::<String>::new());
    let p = |r: &Path| r.join(img).to_string_lossy().to_string();
    // The hook wrote another device's entry only.
    assert_eq!(
        verify(&r, Tool::InitramfsTools, &ln("sda5_crypt", "9999"), None),
        [format!("the crypttab inside {} has no entry for sda5_crypt", p(&r))]
    );
    let r = with_stubs(&DEBIAN_STUBS, img, LSINITRAMFS, None);
    assert_eq!(
        verify(&r, Tool::InitramfsTools, &ln("vda_crypt", "1234"), None),
        [format!("cannot read the crypttab inside {}: no cryptroot/crypttab in it", p(&r))]
    );
    let r = with_stubs(&DEBIAN_STUBS, img, &LSINITRAMFS.replace("cryptroot/crypttab\n", ""), Some(good));
    assert_eq!(verify(&r, Tool::InitramfsTools, &ln("vda_crypt", "1234"), None), [format!("{} lacks cryptroot/crypttab", p(&r))]);
    // The image's copy of LVM's devices file.
    let r = with_stubs(&DEBIAN_STUBS, img, LSINITRAMFS, Some(good));
    let devices = Path::new("/etc/lvm/devices/system.devices");
    assert_eq!(verify(&r, Tool::InitramfsTools, &ln("vda_crypt", "1234"), Some(devices)), Vec::<String>::new());
    fs::write(r.join(format!("{img}.devices")), "IDTYPE=devname IDNAME=/dev/vda DEVNAME=/dev/vda PVID=x\n").unwrap();
    assert_eq!(
        verify(&r, Tool::InitramfsTools, &ln("vda_crypt", "1234"), Some(devices)),
        [format!(
            "LVM's devices file inside {} does not list /dev/mapper/vda_crypt: LVM there would not find the volume group",
            p(&r)
        )]
    );
    // Nothing unpacked is left behind.
    let left =
        |d: &str| fs::read_dir(d).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("pvencrypt-initramfs-"));
    assert!(!left("/run") && !left("/var/tmp"));
    // No image, or no lister: said, not passed over.
    let r = root(&DEBIAN_STUBS);
    assert_eq!(
        verify(&r, Tool::InitramfsTools, &ln("vda_crypt", "1234"), None),
        ["found no initramfs image of update-initramfs to check"]
    );
    let r = with_stubs(&DEBIAN_STUBS[..2], img, LSINITRAMFS, Some(good));
    assert_eq!(
        verify(&r, Tool::InitramfsTools, &ln("vda_crypt", "1234"), None),
        [format!("cannot list {}: lsinitramfs is not installed", p(&r))]
    );
}

#[test]
fn a_dracut_image_opens_the_device_or_says_why_not() {
    // lsinitrd IMAGE lists IMAGE; lsinitrd IMAGE -f FILE prints IMAGE.<FILE's name>.
    let lsinitrd = ("usr/bin/lsinitrd", "#!/bin/sh\nif [ \"$2\" = -f ]; then cat \"$1.${3##*/}\"; else cat \"$1\"; fi\n");
    let img = "boot/initramfs-6.1.0-13-amd64.img";
    let p = |r: &Path| r.join(img).to_string_lossy().to_string();
    let ct = "luks-1234 UUID=1234 none\nvda_crypt UUID=5 none luks\n";
    // Host-only, systemd: the crypttab entry, which systemd-cryptsetup-generator opens.
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, LSINITRD, Some(ct));
    assert_eq!(verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), None), Vec::<String>::new());
    assert_eq!(
        verify(&r, Tool::Dracut, &ln("sdb_crypt", "6"), None),
        [format!("the crypttab inside {} has no entry for sdb_crypt", p(&r))]
    );
    // A generic image without pvencrypt's module: no crypttab, so nothing opens the device
    // (Debian 12's dracut: the next boot stopped with "Could not boot").
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, &LSINITRD.replace("etc/crypttab", "etc/fstab"), None);
    assert_eq!(
        verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), None),
        [format!("{} has no etc/crypttab, so it does not know vda_crypt", p(&r))]
    );
    // systemd without its cryptsetup generator.
    let no_gen = LSINITRD.replace("systemd-cryptsetup-generator", "systemd-fstab-generator");
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, &no_gen, Some(ct));
    assert_eq!(
        verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), None),
        [format!("{}: its systemd lacks systemd-cryptsetup-generator, which opens what etc/crypttab lists", p(&r))]
    );
    // A shell image (no systemd): it needs rd.luks.uuid in etc/cmdline.d.
    let shell = LSINITRD.replace("\nsystemd\nsystemd-initrd\n", "\n");
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, &shell, Some(ct));
    fs::write(r.join(format!("{img}.90crypt.conf")), " rd.luks.uuid=luks-1234\n").unwrap();
    assert_eq!(
        verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), None),
        [format!(
            "{}: no rd.luks.uuid=5 in its etc/cmdline.d: without systemd, it opens only the LUKS devices named there or \
             on the kernel command line",
            p(&r)
        )]
    );
    assert_eq!(verify(&r, Tool::Dracut, &ln("luks-1234", "1234"), None), Vec::<String>::new());
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, &shell.replace("90crypt.conf", "91pvencrypt.conf"), Some(ct));
    fs::write(r.join(format!("{img}.91pvencrypt.conf")), " rd.luks.uuid=luks-5\n").unwrap();
    assert_eq!(verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), None), Vec::<String>::new());

    // --tpm2-device: the entry says tpm2-device=, and the TPM2 libraries are in the image.
    let tpm = crypttab::Line { name: "vda_crypt", uuid: "5", discard: false, tpm2: true };
    let with_libs = format!("{LSINITRD}-rwxr-xr-x   1 root root 0 Oct 10 02:00 usr/lib/x86_64-linux-gnu/libtss2-esys.so.0\n");
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, &with_libs, Some("vda_crypt UUID=5 none luks,tpm2-device=auto\n"));
    assert_eq!(verify(&r, Tool::Dracut, &tpm, None), Vec::<String>::new());
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, LSINITRD, Some("vda_crypt UUID=5 none luks,tpm2-device=auto\n"));
    assert_eq!(
        verify(&r, Tool::Dracut, &tpm, None),
        [format!("{} lacks the TPM2 libraries (libtss2-esys): it would ask for the passphrase of vda_crypt", p(&r))]
    );
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, &with_libs, Some(ct));
    assert_eq!(
        verify(&r, Tool::Dracut, &tpm, None),
        [format!("the entry for vda_crypt inside {} has no tpm2-device=: it would ask for the passphrase", p(&r))]
    );

    // LVM's devices file in the image must list the new device (it lists the raw PV before).
    let devices = Path::new("/etc/lvm/devices/system.devices");
    let listing = format!("{LSINITRD}-rw-r--r--   1 root root 0 Oct 10 02:00 etc/lvm/devices/system.devices\n");
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, &listing, Some(ct));
    let raw = "VERSION=1.1.3\nIDTYPE=devname IDNAME=/dev/vda DEVNAME=/dev/vda PVID=b0fhhyKS2UW6tJqOz97g3pKc3MaecQbJ\n";
    fs::write(r.join(format!("{img}.system.devices")), raw).unwrap();
    assert_eq!(
        verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), Some(devices)),
        [format!(
            "LVM's devices file inside {} does not list /dev/mapper/vda_crypt: LVM there would not find the volume group",
            p(&r)
        )]
    );
    let crypt = "IDTYPE=crypt_uuid IDNAME=CRYPT-LUKS2-d55779749ef241ab80727bdf26dc1037-vda_crypt DEVNAME=/dev/mapper/vda_crypt\n";
    fs::write(r.join(format!("{img}.system.devices")), crypt).unwrap();
    assert_eq!(verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), Some(devices)), Vec::<String>::new());
    // An image without the file: LVM there uses every device.
    let r = with_stubs(&[DRACUT[0], lsinitrd], img, LSINITRD, Some(ct));
    assert_eq!(verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), Some(devices)), Vec::<String>::new());

    let r = with_stubs(&[DRACUT[0], lsinitrd], img, &LSINITRD.replace("\ncrypt\n", "\n"), None);
    assert_eq!(verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), None), [format!("{} lacks the crypt dracut module", p(&r))]);
    let failing = ("usr/bin/lsinitrd", "#!/bin/sh\necho 'Need zstd to unpack the initramfs.' >&2; exit 1\n");
    let r = with_stubs(&[DRACUT[0], failing], img, LSINITRD, None);
    let got = verify(&r, Tool::Dracut, &ln("vda_crypt", "5"), None);
    assert_eq!(got, [format!("cannot list {0}: lsinitrd {0} failed: Need zstd to unpack the initramfs.", p(&r))]);
}

#[test]
fn mkinitcpio_images_by_hook() {
    let lsinitcpio = ("usr/bin/lsinitcpio", "#!/bin/sh\ncat \"$1\"\n");
    let preset = ("etc/mkinitcpio.d/linux.preset", "PRESETS=('default')\ndefault_image=\"/boot/initramfs-linux.img\"\n");
    let img = "boot/initramfs-linux.img";
    let r = with_stubs(&[lsinitcpio, preset], img, LSINITCPIO_SD, None);
    assert!(verify(&r, Tool::Mkinitcpio(Hook::SdEncrypt), &ln("vda_crypt", "1234"), None).is_empty());
    let got = verify(&r, Tool::Mkinitcpio(Hook::Encrypt), &ln("vda_crypt", "1234"), None);
    assert_eq!(got, [format!("{} lacks hooks/encrypt and cryptsetup", r.join(img).display())]);
}

/// lsinitramfs and lsinitrd listings (their formats) of images built while --decrypt runs.
#[test]
fn images_that_attach_the_tail_headers() {
    let tools =
        "etc/pvencrypt\netc/pvencrypt/headers\nsbin/pvencrypt-headers\nscripts/init-premount/pvencrypt\nusr/sbin/losetup\n";
    assert_eq!(lacks_headers(Tool::InitramfsTools, tools), Vec::<&str>::new());
    assert_eq!(
        lacks_headers(Tool::InitramfsTools, "etc/pvencrypt/headers\nusr/sbin/losetup\n"),
        ["pvencrypt-headers", "scripts/init-premount/pvencrypt"]
    );
    let dracut = "-rw-r--r--   1 root root  61 Dec  7 10:00 etc/pvencrypt/headers\n\
        -rwxr-xr-x   1 root root 2100 Dec  7 10:00 usr/lib/pvencrypt/pvencrypt-headers\n\
        -rw-r--r--   1 root root  600 Dec  7 10:00 usr/lib/systemd/system/pvencrypt-headers.service\n\
        lrwxrwxrwx   1 root root   35 Dec  7 10:00 etc/systemd/system/sysinit.target.wants/pvencrypt-headers.service -> /usr/lib/systemd/system/pvencrypt-headers.service\n\
        -rwxr-xr-x   1 root root 99000 Dec  7 10:00 usr/sbin/losetup\n";
    assert_eq!(lacks_headers(Tool::Dracut, dracut), Vec::<&str>::new());
    let not_enabled: String = dracut.lines().filter(|l| !l.contains("wants")).map(|l| format!("{l}\n")).collect();
    assert_eq!(lacks_headers(Tool::Dracut, &not_enabled), ["pvencrypt-headers.service enabled"]);
    assert_eq!(lacks_headers(Tool::Mkinitcpio(Hook::SdEncrypt), tools).len(), 1);
}
