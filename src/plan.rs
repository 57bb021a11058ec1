//! Planning arithmetic, free of I/O: where the LUKS2 header and the shift buffer go,
//! and whether the PV leaves them room. All quantities are 512-byte sectors.
//!
//! Layout (S = device size, H = shift = header size):
//!   before: [PV ............................][free ≥ 2H]
//!   during: [header H][PV data, shifting right as it is encrypted][gap H][first H of PV]
//!   after:  [header H][encrypted PV (≥ S-2H)                  ][wiped tail]
//! The PV, as LVM records it, must end at S-2H at the latest.

use crate::error::{refuse, Result};

pub const MIB: u64 = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// The data shift and LUKS2 data offset.
    pub shift: u64,
    /// Where the PV must end.
    pub limit: u64,
    /// Where the PV ends now: its recorded size, or its last extent if further.
    pub pv_end: u64,
}

pub struct PvShape {
    pub dev_size: u64,
    pub pe_start: u64,
    pub pe_count: u64,
    pub extent_size: u64,
    /// The PV size LVM recorded (pvcreate/pvresize); the device may be larger.
    pub pv_size: u64,
}

/// `reduce`: cryptsetup's --reduce-device-size, in bytes.
pub fn room(pv: &PvShape, reduce: u64, sector_size: u32) -> Result<Room> {
    if reduce % (2 << 20) != 0 || reduce < (8 << 20) {
        return refuse(format!("--reduce-device-size must be a multiple of 2 MiB and at least 8 MiB (got {reduce} bytes)."));
    }
    // libcryptsetup caps a reencryption step at 1 GiB and the step is the shift here.
    if reduce > (2 << 30) {
        return refuse("--reduce-device-size may be at most 2 GiB (the data shift is capped at 1 GiB).".to_string());
    }
    let shift = reduce / 512 / 2;
    if shift % (sector_size as u64 / 512) != 0 {
        return refuse(format!("The data shift must be a multiple of the {sector_size}-byte sector size."));
    }
    let pv_end = (pv.pe_start + pv.pe_count * pv.extent_size).max(pv.pv_size);
    let limit = pv.dev_size.saturating_sub(2 * shift);
    if pv_end > limit {
        let need = pv_end - limit;
        let extents = need.div_ceil(pv.extent_size.max(1));
        return refuse(format!(
            "Not enough room: LUKS2 needs {} MiB free at the end of the device (half for the header, half to shift the data), \
             but the PV ends {} MiB before the end. Shrink the PV by at least {} MiB ({} extents): \
             free its last extents (pvmove) and run pvresize --setphysicalvolumesize {}s.",
            2 * shift / MIB,
            (pv.dev_size - pv_end.min(pv.dev_size)) / MIB,
            need.div_ceil(MIB),
            extents,
            (limit - pv.pe_start) / pv.extent_size.max(1) * pv.extent_size + pv.pe_start,
        ));
    }
    Ok(Room { shift, limit, pv_end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(dev_size: u64, pe_count: u64, pv_size: u64) -> PvShape {
        PvShape { dev_size, pe_start: 2048, pe_count, extent_size: 8192, pv_size }
    }

    #[test]
    fn default_shift_is_16_mib() {
        // 512 MiB disk, PV of 440 MiB: 109 extents of 4 MiB after a 1 MiB pe_start.
        let r = room(&pv(1048576, 109, 901120), 32 << 20, 512).unwrap();
        assert_eq!(r.shift, 32768);
        assert_eq!(r.limit, 1048576 - 65536);
        assert_eq!(r.pv_end, 901120);
    }

    #[test]
    fn pv_filling_the_device_is_refused_with_the_numbers() {
        let e = room(&pv(1048576, 127, 1048576), 32 << 20, 512).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Refused);
        assert!(e.msg.contains("32 MiB free"), "{}", e.msg);
        assert!(e.msg.contains("at least 32 MiB (8 extents)"), "{}", e.msg);
    }

    #[test]
    fn exact_fit_is_accepted_one_sector_more_is_not() {
        let dev = 1048576;
        assert!(room(&pv(dev, 0, dev - 65536), 32 << 20, 512).is_ok());
        assert!(room(&pv(dev, 0, dev - 65535), 32 << 20, 512).is_err());
    }

    #[test]
    fn extents_beyond_the_recorded_size_count() {
        // Recorded size small, but the last extent reaches into the reserved tail.
        let e = room(&pv(1048576, 127, 500000), 32 << 20, 512);
        assert!(e.is_err());
    }

    #[test]
    fn bad_reduce_sizes() {
        let p = pv(1048576, 10, 100000);
        assert!(room(&p, 3 << 20, 512).is_err());
        assert!(room(&p, 4 << 20, 512).is_err());
        assert!(room(&p, 4 << 30, 512).is_err());
        assert_eq!(room(&p, 64 << 20, 4096).unwrap().shift, 65536);
    }
}
