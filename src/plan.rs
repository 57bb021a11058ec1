//! Planning arithmetic, free of I/O: where the LUKS2 header and the shift buffer go,
//! and whether the PV leaves them room.
//!
//! Layout (S = device size, H = shift = header size):
//!   before: [PV ............................][free ≥ 2H]
//!   during: [header H][PV data, shifting right as it is encrypted][gap H][first H of PV]
//!   after:  [header H][encrypted PV (≥ S-2H)                  ][wiped tail]
//! The PV, as LVM records it, must end at S-2H at the latest.

use crate::{
    error::{refuse, Result},
    lvm::VgName,
    units::{Bytes, Extents, Sectors},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// The data shift and LUKS2 data offset.
    pub shift: Sectors,
    /// Where the PV must end.
    pub limit: Sectors,
    /// Where the PV ends now: its recorded size, or its last extent if further.
    pub pv_end: Sectors,
}

pub struct PvShape {
    pub dev_size: Sectors,
    pub pe_start: Sectors,
    pub pe_count: Extents,
    pub extent_size: Sectors,
    /// The PV size LVM recorded (pvcreate/pvresize); the device may be larger.
    pub pv_size: Sectors,
}

/// `reduce`: cryptsetup's --reduce-device-size, in bytes. The PV may not fit yet:
/// see [`Room::short`].
pub fn room(pv: &PvShape, reduce: u64, sector_size: u32) -> Result<Room> {
    if !reduce.is_multiple_of(2 << 20) || reduce < (8 << 20) {
        return refuse(format!("--reduce-device-size must be a multiple of 2 MiB and at least 8 MiB (got {reduce} bytes)."));
    }
    // libcryptsetup caps a reencryption step at 1 GiB and the step is the shift here.
    if reduce > (2 << 30) {
        return refuse("--reduce-device-size may be at most 2 GiB (the data shift is capped at 1 GiB).".to_string());
    }
    let shift = Bytes(reduce / 2).sectors();
    if !shift.bytes().is_multiple_of(u64::from(sector_size)) {
        return refuse(format!("The data shift must be a multiple of the {sector_size}-byte sector size."));
    }
    let pv_end = (pv.pe_start + pv.pe_count.to_sectors(pv.extent_size)).max(pv.pv_size);
    let limit = pv.dev_size.saturating_sub(shift * 2);
    Ok(Room { shift, limit, pv_end })
}

impl Room {
    /// The PV reaches into the space LUKS2 needs.
    pub fn short(&self) -> bool {
        self.pv_end > self.limit
    }

    /// The refusal for a PV that does not fit, with the numbers and the ways out.
    pub fn shortage(&self, pv: &PvShape) -> String {
        let need = self.pv_end - self.limit;
        let new_size = (self.limit - pv.pe_start).whole_extents(pv.extent_size).to_sectors(pv.extent_size) + pv.pe_start;
        format!(
            "Not enough room: LUKS2 needs {} MiB free at the end of the device (half for the header, half to shift the data), \
             but the PV ends {} MiB before the end. Shrink the PV by at least {} MiB ({}): \
             --make-room does it (pvmove of the extents there to free ones, then pvresize), \
             or by hand: pvmove them away and run pvresize --setphysicalvolumesize {new_size}.",
            (self.shift * 2).mib(),
            (pv.dev_size - self.pv_end.min(pv.dev_size)).mib(),
            need.0.div_ceil(Sectors::MIB.0),
            need.extents_to_cover(pv.extent_size),
        )
    }
}

/// A run of extents on the PV: (first extent, count, used by an LV).
pub type Segment = (Extents, Extents, bool);

/// What `--make-room` does: move the used extents from `keep` on to free extents below
/// it (pvmove, same PV), then shrink the PV to `keep` extents (pvresize to `size`).
#[derive(Debug, PartialEq, Eq)]
pub struct MakeRoom {
    pub keep: Extents,
    /// Extent ranges to move, first and last (inclusive, as pvmove writes them).
    pub ranges: Vec<(Extents, Extents)>,
    /// The new PV size.
    pub size: Sectors,
}

impl MakeRoom {
    /// How many extents move.
    pub fn moved(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b.0 - a.0 + 1).sum()
    }
}

pub fn make_room(room: &Room, pv: &PvShape, segments: &[Segment], vg: &VgName) -> Result<MakeRoom> {
    let keep = room.limit.saturating_sub(pv.pe_start).whole_extents(pv.extent_size);
    let ranges: Vec<(Extents, Extents)> = segments
        .iter()
        .filter(|&&(start, count, used)| used && start + count > keep)
        .map(|&(start, count, _)| (start.max(keep), Extents(start.0 + count.0 - 1)))
        .collect();
    let moved: u64 = ranges.iter().map(|(a, b)| b.0 - a.0 + 1).sum();
    let free: u64 = segments.iter().filter(|s| !s.2 && s.0 < keep).map(|&(start, count, _)| count.min(keep - start).0).sum();
    if moved > free {
        return refuse(format!(
            "Not enough free extents to make room: {moved} extents at the end of the PV must move, and only {free} \
             below them are free ({} missing). Add a disk to the volume group (vgextend {vg} DISK), move \
             them there (pvmove), and take it out again afterwards (pvmove, vgreduce); or free space (lvreduce).",
            moved - free
        ));
    }
    Ok(MakeRoom { keep, ranges, size: pv.pe_start + keep.to_sectors(pv.extent_size) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(dev_size: u64, pe_count: u64, pv_size: u64) -> PvShape {
        PvShape {
            dev_size: Sectors(dev_size),
            pe_start: Sectors(2048),
            pe_count: Extents(pe_count),
            extent_size: Sectors(8192),
            pv_size: Sectors(pv_size),
        }
    }

    fn segments(s: &[(u64, u64, bool)]) -> Vec<Segment> {
        s.iter().map(|&(a, n, used)| (Extents(a), Extents(n), used)).collect()
    }

    fn ranges(r: &[(u64, u64)]) -> Vec<(Extents, Extents)> {
        r.iter().map(|&(a, b)| (Extents(a), Extents(b))).collect()
    }

    #[test]
    fn default_shift_is_16_mib() {
        // 512 MiB disk, PV of 440 MiB: 109 extents of 4 MiB after a 1 MiB pe_start.
        let r = room(&pv(1048576, 109, 901120), 32 << 20, 512).unwrap();
        assert_eq!(r.shift, Sectors(32768));
        assert_eq!(r.limit, Sectors(1048576 - 65536));
        assert_eq!(r.pv_end, Sectors(901120));
    }

    #[test]
    fn pv_filling_the_device_is_short_with_the_numbers() {
        let p = pv(1048576, 127, 1048576);
        let r = room(&p, 32 << 20, 512).unwrap();
        assert!(r.short());
        let msg = r.shortage(&p);
        assert!(msg.contains("32 MiB free"), "{msg}");
        assert!(msg.contains("at least 32 MiB (8 extents)"), "{msg}");
        assert!(msg.contains("--make-room"), "{msg}");
    }

    #[test]
    fn exact_fit_is_accepted_one_sector_more_is_not() {
        let dev = 1048576;
        assert!(!room(&pv(dev, 0, dev - 65536), 32 << 20, 512).unwrap().short());
        assert!(room(&pv(dev, 0, dev - 65535), 32 << 20, 512).unwrap().short());
    }

    #[test]
    fn extents_beyond_the_recorded_size_count() {
        // Recorded size small, but the last extent reaches into the reserved tail.
        assert!(room(&pv(1048576, 127, 500000), 32 << 20, 512).unwrap().short());
    }

    #[test]
    fn make_room_moves_the_tail_extents_into_free_ones_below() {
        // 512 MiB device, 127 extents of 4 MiB: the room needed starts at 480 MiB, so
        // 119 extents are kept; an LV holds extents 100..126, extents 10..29 are free.
        let p = pv(1048576, 127, 1048576);
        let r = room(&p, 32 << 20, 512).unwrap();
        let segs = segments(&[(0, 10, true), (10, 20, false), (30, 70, true), (100, 27, true)]);
        let m = make_room(&r, &p, &segs, &VgName("vg".into())).unwrap();
        assert_eq!(m.keep, Extents(119));
        assert_eq!(m.ranges, ranges(&[(119, 126)]));
        assert_eq!(m.moved(), 8);
        assert_eq!(m.size, Sectors(2048 + 119 * 8192));
        assert!(m.size <= r.limit);
        // Free extents beyond the kept ones count for nothing.
        let segs = segments(&[(0, 100, true), (100, 19, false), (119, 4, true), (123, 4, false)]);
        assert_eq!(make_room(&r, &p, &segs, &VgName("vg".into())).unwrap().ranges, ranges(&[(119, 122)]));
        let segs = segments(&[(0, 100, true), (100, 19, false), (119, 8, true)]);
        assert_eq!(make_room(&r, &p, &segs, &VgName("vg".into())).unwrap().ranges, ranges(&[(119, 126)]));
        let segs = segments(&[(0, 117, true), (117, 10, false)]);
        assert_eq!(make_room(&r, &p, &segs, &VgName("vg".into())).unwrap().moved(), 0);
    }

    #[test]
    fn make_room_without_enough_free_extents_says_how_many_are_missing() {
        let p = pv(1048576, 127, 1048576);
        let r = room(&p, 32 << 20, 512).unwrap();
        let segs = segments(&[(0, 116, true), (116, 3, false), (119, 8, true)]);
        let e = make_room(&r, &p, &segs, &VgName("vg0".into())).unwrap_err();
        assert!(e.to_string().contains("8 extents at the end of the PV must move, and only 3"), "{e}");
        assert!(e.to_string().contains("(5 missing)") && e.to_string().contains("vgextend vg0"), "{e}");
    }

    #[test]
    fn bad_reduce_sizes() {
        let p = pv(1048576, 10, 100000);
        assert!(room(&p, 3 << 20, 512).is_err());
        assert!(room(&p, 4 << 20, 512).is_err());
        assert!(room(&p, 4 << 30, 512).is_err());
        assert_eq!(room(&p, 64 << 20, 4096).unwrap().shift, Sectors(65536));
    }
}
