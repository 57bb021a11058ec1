//! src/lvm/ against real LVM on loop devices. Metadata only
//! (`--driverloaded n`, LVs never activated), so it runs without
//! device-mapper. Needs root: every test returns early with a message
//! otherwise.
//!
//! `cargo test --test lvm_loop -- --ignored record_fixtures` re-records the
//! JSON under tests/fixtures/lvm/ that the unit tests in src/lvm/report.rs parse.

mod common;

use common::{is_root, Loop};
use pvencrypt::lvm;

use std::{
    env, fs,
    path::Path,
    process::Command,
    sync::{PoisonError, RwLock},
    thread,
};

use lvm::{Extents, LvName, PeRange, Sectors, SegDevice};

/// Held for reading by every test that runs LVM, for writing by the one
/// that checks the process umask: LVM sets 0077 while it runs. A failed
/// test poisons it, which must not fail the others.
static LVM_RUNNING: RwLock<()> = RwLock::new(());

fn lvm(args: &[&str]) -> lvm::Output {
    lvm::run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Loop devices plus the VGs made on them, all removed on drop, also when
/// an assertion failed halfway.
struct Setup {
    vgs: Vec<String>,
    loops: Vec<Loop>,
}

impl Setup {
    fn new(sizes_mib: &[u64]) -> Setup {
        Setup { vgs: Vec::new(), loops: sizes_mib.iter().map(|&m| Loop::zeroed(m).expect("root")).collect() }
    }
    fn dev(&self, i: usize) -> &str {
        self.loops[i].name()
    }
    /// A VG name unique to this process and test; no '-', which dm names
    /// would double.
    fn vg_name(&mut self, tag: &str) -> String {
        let name = format!("pvenc_{tag}_{}", std::process::id());
        self.vgs.push(name.clone());
        name
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for vg in &self.vgs {
            // --driverloaded n: removing a thin pool otherwise wants dm.
            let r = lvm::run(&["vgremove", "--driverloaded", "n", "-ff", "-y", "--", vg]);
            if let Err(e) = r {
                // Expected for LVs under an unfinished pvmove ("Can't remove
                // locked logical volume"): the pvremove -ff below handles it.
                eprintln!("cleanup: {e}");
            }
            // Turning backups off instead doesn't help: the next command
            // that reads the VG writes the missing backup and an archive.
            let _ = fs::remove_file(Path::new("/etc/lvm/backup").join(vg));
            if let Ok(dir) = fs::read_dir("/etc/lvm/archive") {
                for f in dir.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.strip_prefix(vg.as_str()).is_some_and(|r| r.starts_with('_')) {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        for l in &self.loops {
            if lvm::read_label(&l.dev).ok().flatten().is_some() {
                if let Err(e) = lvm::run(&["pvremove", "-ff", "-y", "--", l.name()]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }
}

const MIB: u64 = 2048; // sectors

fn pv(dev: &str) -> lvm::Pv {
    let mut v = lvm::pvs(Some(dev)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

fn range(dev: &str, start: u64, count: u64) -> PeRange {
    PeRange { device: dev.to_owned(), start: Extents(start), count: Extents(count) }
}

fn area(dev: &str, start: u64) -> SegDevice {
    SegDevice { device: dev.to_owned(), start: Extents(start) }
}

/// (start, size, (LV, hidden)) of each PV segment.
type SegRow<'a> = (u64, u64, Option<(&'a str, bool)>);

fn seg_summary(segs: &[lvm::PvSeg]) -> Vec<SegRow<'_>> {
    segs.iter()
        .map(|s| {
            let lv = s.lv_name.as_ref().map(|n| (n.name.as_str(), n.hidden));
            (s.pvseg_start.0, s.pvseg_size.0, lv)
        })
        .collect()
}

/// The main scenario: a 256 MiB device with a PV recorded as 200 MiB, one
/// VG with 4 MiB extents, lv1 (2 segments) and lv2 in between.
#[test]
fn loop_pv_vg_lvs() {
    if !is_root() {
        return;
    }
    let _lvm = LVM_RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let mut s = Setup::new(&[256]);
    let vg = s.vg_name("main");
    let dev = s.dev(0).to_owned();

    assert_eq!(lvm::pv(Path::new(&dev)).unwrap(), None);
    lvm(&["pvcreate", "-y", "--setphysicalvolumesize", "200M", "--", &dev]);
    // Orphan: pv_size is the recorded size, pe_start included.
    let p = pv(&dev);
    assert_eq!(lvm::pv(Path::new(&dev)).unwrap().as_ref(), Some(&p));
    assert_eq!(p.pv_name, dev);
    assert_eq!(p.dev_size, Sectors(256 * MIB));
    assert_eq!(p.pv_size, Sectors(200 * MIB));
    assert_eq!(p.pe_start, Sectors(MIB));
    assert_eq!(p.pv_pe_count, Extents(0));
    assert_eq!(p.pv_mda_count, 1);
    assert_eq!(p.pv_mda_size, Sectors(2040));
    assert_eq!((p.pv_ba_start, p.pv_ba_size), (Sectors(0), Sectors(0)));
    assert_eq!((p.vg_name.as_ref().map(|v| v.as_str()), p.vg_uuid.as_deref()), (None, None));
    assert_eq!(p.vg_extent_size, Sectors(0));
    assert!(!p.pv_in_use && !p.pv_missing && !p.pv_allocatable);

    lvm(&["vgcreate", "-s", "4M", "--", &vg, &dev]);
    // In a VG: pv_size is just the extents. (200 MiB - 1 MiB) / 4 MiB = 49.75.
    let p = pv(&dev);
    assert_eq!(p.vg_name.as_ref().map(|v| v.as_str()), Some(vg.as_str()));
    assert_eq!(p.vg_extent_size, Sectors(4 * MIB));
    assert_eq!(p.pv_pe_count, Extents(49));
    assert_eq!(p.pv_size, Sectors(49 * 4 * MIB));
    assert_eq!(p.pv_pe_alloc_count, Extents(0));
    assert_eq!(p.dev_size, Sectors(256 * MIB));
    assert_eq!(p.data_end(), Sectors(MIB + 49 * 4 * MIB));
    assert!(p.pv_in_use && p.pv_allocatable && !p.pv_missing);

    // The recorded 200 MiB is only in the label and the VG metadata.
    let label = lvm::read_label(Path::new(&dev)).unwrap().expect("a PV label");
    assert_eq!(label.sector, 1);
    assert_eq!(label.pv_uuid, p.pv_uuid);
    assert_eq!(label.device_size, Sectors(200 * MIB));
    assert_eq!(label.data_areas, [lvm::DiskArea { offset: Sectors(MIB), size: Sectors(0) }]);
    assert_eq!(label.metadata_areas, [lvm::DiskArea { offset: Sectors(8), size: Sectors(2040) }]);
    assert!(label.bootloader_areas.is_empty());

    let v = lvm::vg(&n(&vg)).unwrap();
    assert_eq!(v.vg_name.as_str(), vg);
    assert_eq!(Some(&v.vg_uuid), p.vg_uuid.as_ref());
    assert_eq!(v.vg_attr.as_str(), "wz--n-");
    let a = &v.vg_attr;
    assert!(a.writeable() && a.resizeable());
    assert!(!a.exported() && !a.partial() && !a.clustered() && !a.shared());
    assert_eq!(v.vg_lock_type, None);
    assert_eq!((v.pv_count, v.vg_missing_pv_count, v.lv_count), (1, 0, 0));
    assert_eq!(v.vg_extent_size, Sectors(4 * MIB));
    assert_eq!((v.vg_extent_count, v.vg_free_count), (Extents(49), Extents(49)));
    assert_eq!(v.vg_seqno, 1);

    let lvc = ["--driverloaded", "n", "-an", "-Zn"];
    lvm(&[&["lvcreate"][..], &lvc, &["-L", "8M", "-n", "lv1", "--", &vg]].concat());
    lvm(&[&["lvcreate"][..], &lvc, &["-L", "12M", "-n", "lv2", "--", &vg]].concat());
    lvm(&["lvextend", "--driverloaded", "n", "-L", "+8M", "--", &format!("{vg}/lv1")]);

    let segs = lvm::lvs(&n(&vg)).unwrap();
    let summary: Vec<_> = segs.iter().map(|l| (l.lv_name.name.as_str(), l.seg_start_pe.0, l.seg_size_pe.0, l.lv_size)).collect();
    assert_eq!(summary, [("lv1", 0, 2, Sectors(16 * MIB)), ("lv1", 2, 2, Sectors(16 * MIB)), ("lv2", 0, 3, Sectors(12 * MIB)),]);
    assert_eq!(segs[0].devices, [area(&dev, 0)]);
    assert_eq!(segs[0].seg_pe_ranges, [range(&dev, 0, 2)]);
    assert_eq!(segs[1].devices, [area(&dev, 5)]);
    assert_eq!(segs[1].seg_pe_ranges, [range(&dev, 5, 2)]);
    assert_eq!(segs[2].devices, [area(&dev, 2)]);
    assert_eq!(segs[2].seg_pe_ranges, [range(&dev, 2, 3)]);
    for l in &segs {
        assert_eq!(l.vg_name.as_str(), vg);
        assert_eq!(l.segtype, "linear");
        assert!(!l.lv_name.hidden && !l.is_pvmove() && !l.is_locked());
        assert!(!l.lv_attr.is_active());
        assert_eq!(l.lv_attr.volume_type(), '-');
        assert_eq!((l.lv_kernel_major, l.lv_kernel_minor), (None, None));
        assert_eq!(l.lv_parent, None);
        assert_eq!(l.lv_dm_path, Some(format!("/dev/mapper/{vg}-{}", l.lv_name.name)));
    }
    assert_eq!(segs[0].lv_uuid, segs[1].lv_uuid);
    assert_ne!(segs[0].lv_uuid, segs[2].lv_uuid);

    let ps = lvm::pv_segments(&dev).unwrap();
    assert!(ps.iter().all(|s| s.pv_name == dev));
    assert_eq!(
        seg_summary(&ps),
        [(0, 2, Some(("lv1", false))), (2, 3, Some(("lv2", false))), (5, 2, Some(("lv1", false))), (7, 42, None),]
    );

    let v = lvm::vg(&n(&vg)).unwrap();
    assert_eq!((v.lv_count, v.vg_free_count, v.vg_seqno), (2, Extents(42), 4));
    assert_eq!(pv(&dev).pv_pe_alloc_count, Extents(7));

    // Arguments with spaces and double quotes arrive intact.
    let only = |re: &str| format!(r#"devices {{ filter = [ "{re}", "r|.*|" ] }}"#);
    let p2 = lvm::pvs_with(Some(&dev), &["--config", &only(&format!("a|^{dev}$|"))]).unwrap();
    assert_eq!(p2, [pv(&dev)]);
    let e = lvm::pvs_with(Some(&dev), &["--config", &only("a|^/dev/nothing$|")]).unwrap_err();
    assert!(e.to_string().contains(&format!("Cannot use {dev}: device is rejected by filter config")), "{e}");

    let backup = env::temp_dir().join(format!("{vg}.vg"));
    lvm::vgcfgbackup(&n(&vg), Some(&backup)).unwrap();
    let text = fs::read_to_string(&backup).unwrap();
    fs::remove_file(&backup).unwrap();
    assert!(text.contains("dev_size = 409600\t"), "{text}");
    assert!(text.contains("pe_count = 49\t"), "{text}");

    // Any number of threads may call in; the mutex makes them take turns.
    let expect = (lvm::pvs(Some(&dev)).unwrap(), lvm::vg(&n(&vg)).unwrap(), segs);
    thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                for _ in 0..5 {
                    let got = (lvm::pvs(Some(&dev)).unwrap(), lvm::vg(&n(&vg)).unwrap(), lvm::lvs(&n(&vg)).unwrap());
                    assert_eq!(got, expect);
                }
            });
        }
    });
}

/// A second metadata area sits at the end of the *recorded* PV size and
/// costs the last extent when it doesn't fit in the remainder.
#[test]
fn loop_second_metadata_area() {
    if !is_root() {
        return;
    }
    let _lvm = LVM_RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let mut s = Setup::new(&[256, 256]);
    let vg = s.vg_name("mda2");
    let (two, one) = (s.dev(0).to_owned(), s.dev(1).to_owned());

    lvm(&["pvcreate", "-y", "--pvmetadatacopies", "2", "--setphysicalvolumesize", "201M", "--", &two]);
    lvm(&["pvcreate", "-y", "--setphysicalvolumesize", "201M", "--", &one]);
    let label = lvm::read_label(Path::new(&two)).unwrap().unwrap();
    assert_eq!(label.device_size, Sectors(201 * MIB));
    assert_eq!(
        label.metadata_areas,
        [
            lvm::DiskArea { offset: Sectors(8), size: Sectors(2040) },
            lvm::DiskArea { offset: Sectors(200 * MIB), size: Sectors(MIB) },
        ]
    );
    assert_eq!(pv(&two).pv_mda_count, 2);

    lvm(&["vgcreate", "-s", "4M", "--", &vg, &two, &one]);
    // (201 MiB - 1 MiB) / 4 MiB = 50 exactly; the second mda takes 1 MiB more.
    let (p2, p1) = (pv(&two), pv(&one));
    assert_eq!((p2.pv_pe_count, p2.pv_size), (Extents(49), Sectors(49 * 4 * MIB)));
    assert_eq!((p1.pv_pe_count, p1.pv_size), (Extents(50), Sectors(50 * 4 * MIB)));
    assert_eq!(p1.data_end(), Sectors(201 * MIB));
    assert_eq!((p2.pv_mda_count, p1.pv_mda_count), (2, 1));
    assert_eq!(lvm::vg(&n(&vg)).unwrap().pv_count, 2);
}

/// What an interrupted pvmove leaves in the metadata: the hidden mirror LV
/// `pvmove0`, and the moved LV locked and stacked on it.
#[test]
fn loop_interrupted_pvmove() {
    if !is_root() {
        return;
    }
    let _lvm = LVM_RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let mut s = Setup::new(&[64, 64]);
    let vg = s.vg_name("pvmove");
    let (src, dst) = (s.dev(0).to_owned(), s.dev(1).to_owned());

    lvm(&["pvcreate", "-y", "--", &src, &dst]);
    lvm(&["vgcreate", "-s", "4M", "--", &vg, &src, &dst]);
    lvm(&["lvcreate", "--driverloaded", "n", "-an", "-Zn", "-L", "8M", "-n", "lv1", "--", &vg, &src]);
    // Without dm the mirror can't be activated, so the move stops right
    // after writing its metadata.
    lvm(&["pvmove", "--driverloaded", "n", "--", &src, &dst]);

    let segs = lvm::lvs(&n(&vg)).unwrap();
    let names: Vec<&LvName> = segs.iter().map(|l| &l.lv_name).collect();
    assert_eq!(names, [&LvName { name: "lv1".into(), hidden: false }, &LvName { name: "pvmove0".into(), hidden: true },]);
    let (lv1, mv) = (&segs[0], &segs[1]);
    assert!(lv1.is_locked() && !lv1.is_pvmove());
    assert_eq!(lv1.segtype, "linear");
    assert_eq!(lv1.devices, [area("pvmove0", 0)]);
    assert_eq!(lv1.seg_pe_ranges, [range("pvmove0", 0, 2)]);
    assert!(mv.is_locked() && mv.is_pvmove());
    assert_eq!(mv.lv_attr.volume_type(), 'p');
    assert_eq!(mv.segtype, "mirror");
    assert_eq!(mv.devices, [area(&src, 0), area(&dst, 0)]);
    assert_eq!(mv.seg_pe_ranges, [range(&src, 0, 2), range(&dst, 0, 2)]);
    assert_eq!((mv.seg_start_pe, mv.seg_size_pe), (Extents(0), Extents(2)));

    assert_eq!(seg_summary(&lvm::pv_segments(&src).unwrap()), [(0, 2, Some(("pvmove0", true))), (2, 13, None)]);
    assert_eq!(seg_summary(&lvm::pv_segments(&dst).unwrap()), [(0, 2, Some(("pvmove0", true))), (2, 13, None)]);
    // Visible LVs only.
    assert_eq!(lvm::vg(&n(&vg)).unwrap().lv_count, 1);
}

fn n(vg: &str) -> lvm::VgName {
    lvm::VgName(vg.into())
}

fn metadata(vg: &str) -> String {
    let file = env::temp_dir().join(format!("{vg}.vg"));
    lvm::vgcfgbackup(&n(vg), Some(&file)).unwrap();
    let text = fs::read_to_string(&file).unwrap();
    fs::remove_file(&file).unwrap();
    text
}

/// Replaces the VG's metadata, for states that can't be reached without
/// device-mapper or a lock manager.
fn restore(vg: &str, text: &str) {
    let file = env::temp_dir().join(format!("{vg}.vg"));
    fs::write(&file, text).unwrap();
    let r = lvm::run(&["vgcfgrestore", "--force", "-f", file.to_str().unwrap(), "--", vg]);
    fs::remove_file(&file).unwrap();
    r.unwrap_or_else(|e| panic!("{e}"));
}

/// The VG states the conversion has to refuse: exported, clustered,
/// shared, partial.
#[test]
fn loop_vg_states() {
    if !is_root() {
        return;
    }
    let _lvm = LVM_RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let mut s = Setup::new(&[64, 64]);
    let vg = s.vg_name("states");
    let (a, b) = (s.dev(0).to_owned(), s.dev(1).to_owned());
    lvm(&["pvcreate", "-y", "--", &a, &b]);
    lvm(&["vgcreate", "--", &vg, &a, &b]);

    lvm(&["vgexport", "--", &vg]);
    let v = lvm::vg(&n(&vg)).unwrap();
    assert_eq!(v.vg_attr.as_str(), "wzx-n-");
    assert!(v.vg_attr.exported() && !v.vg_attr.partial());
    lvm(&["vgimport", "--", &vg]);
    assert!(!lvm::vg(&n(&vg)).unwrap().vg_attr.exported());

    // Without clvmd/lvmlockd (LVM 2.03 has no clvmd at all) such VGs can't
    // even be reported, so their attr flags are never seen: the report
    // commands fail instead, for the VG and for its PVs.
    let status = r#"status = ["RESIZEABLE", "READ", "WRITE"]"#;
    let original = metadata(&vg);
    assert!(original.contains(status), "{original}");
    restore(&vg, &original.replace(status, r#"status = ["RESIZEABLE", "READ", "WRITE", "CLUSTERED"]"#));
    let e = lvm::vg(&n(&vg)).unwrap_err();
    assert!(e.to_string().contains(&format!("Cannot access clustered VG {vg}.")), "{e}");
    restore(&vg, &original.replace(status, &format!("{status}\n\tlock_type = \"dlm\"\n\tlock_args = \"1.0.0:test\"")));
    let e = lvm::vg(&n(&vg)).unwrap_err();
    let msg = format!("Cannot access VG {vg} with lock type dlm that requires lvmlockd.");
    assert!(e.to_string().contains(&msg), "{e}");
    let e = lvm::pvs(Some(&a)).unwrap_err();
    assert!(e.to_string().contains(&format!("Cannot use PV {a} in shared VG {vg}.")), "{e}");
    restore(&vg, &original);
    assert_eq!(lvm::vg(&n(&vg)).unwrap().vg_attr.as_str(), "wz--n-");

    // A PV whose label is gone is missing: the VG is partial.
    let b_uuid = pv(&b).pv_uuid;
    lvm(&["pvremove", "-ff", "-y", "--", &b]);
    let v = lvm::vg(&n(&vg)).unwrap();
    assert_eq!(v.vg_attr.as_str(), "wz-pn-");
    assert!(v.vg_attr.partial() && !v.vg_attr.exported());
    assert_eq!((v.pv_count, v.vg_missing_pv_count), (2, 1));
    let mut pvs: Vec<_> =
        lvm::pvs(None).unwrap().into_iter().filter(|p| p.vg_name.as_ref().map(|v| v.as_str()) == Some(&vg)).collect();
    pvs.sort_by_key(|p| p.pv_missing);
    assert_eq!(pvs.len(), 2);
    assert_eq!((pvs[0].pv_name.as_str(), pvs[0].pv_missing), (a.as_str(), false));
    assert_eq!((pvs[1].pv_name.as_str(), pvs[1].pv_missing), ("[unknown]", true));
    assert_eq!(pvs[1].pv_uuid, b_uuid);
    assert_eq!(pvs[1].dev_size, Sectors(0));
    assert_eq!(pvs[1].pv_pe_count, Extents(15));
}

/// The device changes size between calls; each call must see the current
/// size. (A long-lived LVM context fails this: see `LVM` in src/lvm/command.rs.)
#[test]
fn loop_sees_device_changes() {
    if !is_root() {
        return;
    }
    let _lvm = LVM_RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let s = Setup::new(&[256]);
    let l = &s.loops[0];
    let resize = |mib: u64| {
        fs::OpenOptions::new().write(true).open(&l.file).unwrap().set_len(mib << 20).unwrap();
        assert!(Command::new("losetup").args(["-c", l.name()]).status().unwrap().success());
    };
    lvm(&["pvcreate", "-y", "--", l.name()]);
    assert_eq!(pv(l.name()).dev_size, Sectors(256 * MIB));
    lvm(&["pvremove", "-y", "--", l.name()]);
    resize(64);
    lvm(&["pvcreate", "-y", "--", l.name()]);
    let p = pv(l.name());
    assert_eq!((p.dev_size, p.pv_size), (Sectors(64 * MIB), Sectors(64 * MIB)));
    resize(128);
    let p = pv(l.name());
    // The recorded size stays until pvresize.
    assert_eq!((p.dev_size, p.pv_size), (Sectors(128 * MIB), Sectors(64 * MIB)));
    lvm(&["pvresize", "--", l.name()]);
    assert_eq!(pv(l.name()).pv_size, Sectors(128 * MIB));
}

#[test]
fn loop_errors_carry_lvm_lines() {
    if !is_root() {
        return;
    }
    let _lvm = LVM_RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let e = lvm::vg(&n("pvenc_no_such_vg")).unwrap_err();
    let lvm::Error::Command { rc, errors, .. } = &e else { panic!("{e:?}") };
    assert_eq!(*rc, 5);
    assert!(errors.contains(&r#"Volume group "pvenc_no_such_vg" not found"#.to_owned()), "{errors:?}");
    assert!(e.to_string().contains(r#"Volume group "pvenc_no_such_vg" not found"#), "{e}");

    let e = lvm::run(&["frobnicate"]).unwrap_err();
    assert_eq!(e.to_string(), "`frobnicate` failed (no such command, rc 2)");
    let e = lvm::run(&["vgs", "--no-such-option"]).unwrap_err();
    assert!(matches!(e, lvm::Error::Command { rc: 3, .. }), "{e:?}");
    // A leading '#' would make lvm_split drop the rest of the line: quoted.
    let e = lvm::pvs(Some("#nonexistent")).unwrap_err();
    assert!(e.to_string().contains("Cannot use #nonexistent: device not found"), "{e}");
}

#[test]
fn loop_device_filters_read_in_process() {
    if !is_root() {
        return;
    }
    let _lvm = LVM_RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let filters = lvm::device_filters().unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = filters.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["global_filter", "filter"]);
    assert!(filters.iter().all(|(_, p)| !p.is_empty()), "{filters:?}");
}

#[test]
fn loop_umask_is_restored() {
    if !is_root() {
        return;
    }
    let _only_me = LVM_RUNNING.write().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: umask can't fail.
    let set = |m| unsafe { libc::umask(m) };
    let before = set(0o022);
    // LVM sets its umask at init and whenever it reloads its config, which a
    // --config argument forces; the first may have happened in another test.
    lvm::run(&["vgs", "--config", "global { umask = 0077 }", "-o", "vg_name"]).unwrap();
    let after = set(before);
    assert_eq!(after, 0o022, "umask left at {after:04o}");
}

// ---------------------------------------------------------------------------
// Recording the fixtures for the unit tests

/// Metadata-only snapshot and thin pool, which can't be created without
/// dm: appended to a real VG's metadata and restored with vgcfgrestore.
/// Takes extents 2..=9 of pv0 (lv1 is on 0..=1).
const CRAFTED_LVS: &str = r#"
		snap {
			id = "snapLV-0000-0000-0000-0000-0000-000001"
			status = ["READ", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 2]
			}
		}
		snapshot0 {
			id = "snap00-0000-0000-0000-0000-0000-000002"
			status = ["READ"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "snapshot"
				chunk_size = 8
				origin = "lv1"
				cow_store = "snap"
			}
		}
		pool {
			id = "poolLV-0000-0000-0000-0000-0000-000003"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 5
				type = "thin-pool"
				metadata = "pool_tmeta"
				pool = "pool_tdata"
				transaction_id = 1
				chunk_size = 128
				discards = "passdown"
				zero_new_blocks = 0
			}
		}
		thin1 {
			id = "thin1L-0000-0000-0000-0000-0000-000004"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 10
				type = "thin"
				thin_pool = "pool"
				transaction_id = 0
				device_id = 1
			}
		}
		lvol0_pmspare {
			id = "spare0-0000-0000-0000-0000-0000-000005"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 3]
			}
		}
		pool_tmeta {
			id = "tmeta0-0000-0000-0000-0000-0000-000006"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 4]
			}
		}
		pool_tdata {
			id = "tdata0-0000-0000-0000-0000-0000-000007"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 5
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 5]
			}
		}
"#;

/// The report JSON of `args`, with our report options.
fn record(dir: &Path, file: &str, args: &[&str]) {
    let mut a = vec![args[0]];
    a.extend(REPORT_ARGS);
    a.extend(&args[1..]);
    let out = lvm(&a);
    fs::write(dir.join(file), out.report).unwrap();
}

use lvm::{LV_FIELDS, PVSEG_FIELDS, PV_FIELDS, REPORT_ARGS, VG_FIELDS};

#[test]
#[ignore = "writes tests/fixtures/lvm; run by hand as root"]
fn record_fixtures() {
    if !is_root() {
        return;
    }
    let _lvm = LVM_RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lvm");
    fs::create_dir_all(&dir).unwrap();
    let mut s = Setup::new(&[256, 64, 64, 256]);
    let (d0, d1, d2, d3) = (s.dev(0).to_owned(), s.dev(1).to_owned(), s.dev(2).to_owned(), s.dev(3).to_owned());
    let lvc = ["--driverloaded", "n", "-an", "-Zn"];

    // Orphans: the loop_pv_vg_lvs PV, a plain one, one with a bootloader
    // area and one with a second metadata area.
    lvm(&["pvcreate", "-y", "--setphysicalvolumesize", "200M", "--", &d0]);
    lvm(&["pvcreate", "-y", "--", &d1]);
    lvm(&["pvcreate", "-y", "--bootloaderareasize", "1M", "--", &d2]);
    lvm(&["pvcreate", "-y", "--pvmetadatacopies", "2", "--", &d3]);
    record(&dir, "pvs_orphan.json", &["pvs", "-o", PV_FIELDS, "--", &d0, &d1, &d2, &d3]);
    for (dev, file) in [(&d0, "label_200m.bin"), (&d2, "label_ba.bin"), (&d3, "label_mda2.bin")] {
        let mut head = vec![0u8; 2048];
        std::io::Read::read_exact(&mut fs::File::open(dev).unwrap(), &mut head).unwrap();
        fs::write(dir.join(file), head).unwrap();
    }
    let vg = s.vg_name("fx");
    lvm(&["vgcreate", "-s", "4M", "--", &vg, &d0]);
    lvm(&[&["lvcreate"][..], &lvc, &["-L", "8M", "-n", "lv1", "--", &vg]].concat());
    lvm(&[&["lvcreate"][..], &lvc, &["-L", "12M", "-n", "lv2", "--", &vg]].concat());
    lvm(&["lvextend", "--driverloaded", "n", "-L", "+8M", "--", &format!("{vg}/lv1")]);
    record(&dir, "pvs_vg.json", &["pvs", "-o", PV_FIELDS, "--", &d0]);
    record(&dir, "vgs.json", &["vgs", "-o", VG_FIELDS, "--", &vg]);
    record(&dir, "lvs.json", &["lvs", "-a", "--segments", "-o", LV_FIELDS, "--", &vg]);
    record(&dir, "pvsegs.json", &["pvs", "--segments", "-o", PVSEG_FIELDS, "--", &d0]);

    // Interrupted pvmove.
    let vgm = s.vg_name("fxmove");
    lvm(&["vgcreate", "-s", "4M", "--", &vgm, &d1, &d2]);
    lvm(&[&["lvcreate"][..], &lvc, &["-L", "8M", "-n", "lv1", "--", &vgm, &d1]].concat());
    lvm(&[&["lvcreate"][..], &lvc, &["-L", "4M", "-n", "lv2", "--", &vgm, &d1]].concat());
    lvm(&["pvmove", "--driverloaded", "n", "--", &format!("{d1}:0-1"), &d2]);
    record(&dir, "lvs_pvmove.json", &["lvs", "-a", "--segments", "-o", LV_FIELDS, "--", &vgm]);
    record(&dir, "pvsegs_pvmove.json", &["pvs", "--segments", "-o", PVSEG_FIELDS, "--", &d1, &d2]);

    // Snapshot and thin pool, crafted.
    let vgt = s.vg_name("fxthin");
    lvm(&["vgcreate", "-s", "4M", "--", &vgt, &d3]);
    lvm(&[&["lvcreate"][..], &lvc, &["-L", "8M", "-n", "lv1", "--", &vgt]].concat());
    let text = metadata(&vgt);
    let end = text.rfind("\t}\n\n}").expect("end of logical_volumes");
    restore(&vgt, &format!("{}{CRAFTED_LVS}{}", &text[..end], &text[end..]));
    record(&dir, "lvs_thin_snap.json", &["lvs", "-a", "--segments", "-o", LV_FIELDS, "--", &vgt]);
    record(&dir, "vgs_two.json", &["vgs", "-o", VG_FIELDS, "--", &vgm, &vgt]);

    // Exported, then partial.
    lvm(&["vgexport", "--", &vgt]);
    record(&dir, "vgs_exported.json", &["vgs", "-o", VG_FIELDS, "--", &vgt]);
    lvm(&["vgimport", "--", &vgt]);
    lvm(&["pvremove", "-ff", "-y", "--", &d2]);
    record(&dir, "vgs_partial.json", &["vgs", "-o", VG_FIELDS, "--", &vgm]);
    let sel = format!("vg_name={vgm}");
    record(&dir, "pvs_partial.json", &["pvs", "-o", PV_FIELDS, "-S", &sel]);
}
