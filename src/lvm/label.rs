//! The PV label, read from the device itself.

use super::*;

/// An area listed in the PV header. A data area's size of 0 means "up to
/// the end of the PV".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskArea {
    pub offset: Sectors,
    pub size: Sectors,
}

/// The on-disk PV label (label_header + pv_header), which holds what the
/// report fields don't: the PV size recorded at pvcreate time and where the
/// metadata areas are, including a second one at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// Which of the first four sectors holds the label (normally 1).
    pub sector: u64,
    /// In LVM's dashed form, as `pv_uuid` reports it.
    pub pv_uuid: String,
    /// The recorded PV size: where LVM thinks the PV ends.
    pub device_size: Sectors,
    pub data_areas: Vec<DiskArea>,
    pub metadata_areas: Vec<DiskArea>,
    /// Only in version 2 headers (`pvcreate --bootloaderareasize`).
    pub bootloader_areas: Vec<DiskArea>,
}

const LABEL_SCAN_SECTORS: usize = 4;

/// Reads the LVM label of `dev`, `Ok(None)` if it has none. With O_DIRECT, so that it
/// is what the disk holds now, whatever was written since an earlier read.
pub fn read_label(dev: &Path) -> io::Result<Option<PvLabel>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const LEN: usize = 4096;
    let f = match fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(dev) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => fs::File::open(dev)?,
        r => r?,
    };
    let mut raw = vec![0u8; 2 * LEN];
    let at = raw.as_ptr().align_offset(LEN);
    let buf = &mut raw[at..at + LEN];
    // One aligned read: a device is read in whole blocks, so it returns them all.
    let got = f.read_at(buf, 0)?.min(LABEL_SCAN_SECTORS * 512);
    parse_label(&buf[..got - got % 512])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", dev.display())))
}

/// The LVM label among the first sectors in `buf` (as read from a device's start).
pub fn label_in(buf: &[u8]) -> Result<Option<PvLabel>, String> {
    let n = buf.len().min(LABEL_SCAN_SECTORS * 512);
    parse_label(&buf[..n - n % 512])
}

/// LVM's checksum (`calc_crc`): CRC-32 (reflected 0xedb88320) with its own
/// initial value and no final inversion.
fn lvm_crc(buf: &[u8]) -> u32 {
    let mut crc: u32 = 0xf597a6cf;
    for &b in buf {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    crc
}

fn parse_label(buf: &[u8]) -> Result<Option<PvLabel>, String> {
    let u32_at = |s: &[u8], o: usize| u32::from_le_bytes(s[o..o + 4].try_into().unwrap());
    let u64_at = |s: &[u8], o: usize| u64::from_le_bytes(s[o..o + 8].try_into().unwrap());
    for (i, s) in buf.chunks_exact(512).enumerate() {
        // label_header: id[8] sector_xl crc_xl offset_xl type[8]
        if &s[..8] != b"LABELONE" || u64_at(s, 8) != i as u64 {
            continue;
        }
        if lvm_crc(&s[20..]) != u32_at(s, 16) {
            return Err(format!("LVM label in sector {i} has a bad checksum"));
        }
        if &s[24..32] != b"LVM2 001" {
            return Err(format!("label in sector {i} is not an LVM2 label"));
        }
        // pv_header: uuid[32] device_size_xl, then zero-terminated
        // {offset, size} lists in bytes: data areas, metadata areas, and
        // after a {version, flags} extension, bootloader areas.
        let mut o = u32_at(s, 20) as usize;
        if o + 40 > s.len() {
            return Err(format!("pv_header offset {o} out of the label sector"));
        }
        let uuid = String::from_utf8_lossy(&s[o..o + 32]).into_owned();
        let sectors = |bytes: u64| Bytes(bytes).whole_sectors().ok_or_else(|| format!("{bytes} bytes is not whole sectors"));
        let device_size = sectors(u64_at(s, o + 32))?;
        o += 40;
        let list = |o: &mut usize| -> Result<Vec<DiskArea>, String> {
            let mut v = Vec::new();
            loop {
                if *o + 16 > s.len() {
                    return Err("pv_header area list runs past the sector".into());
                }
                let (off, size) = (u64_at(s, *o), u64_at(s, *o + 8));
                *o += 16;
                if off == 0 {
                    return Ok(v);
                }
                v.push(DiskArea { offset: sectors(off)?, size: sectors(size)? });
            }
        };
        let data_areas = list(&mut o)?;
        let metadata_areas = list(&mut o)?;
        let bootloader_areas = if o + 8 <= s.len() && u32_at(s, o) >= 2 {
            o += 8;
            list(&mut o)?
        } else {
            Vec::new()
        };
        return Ok(Some(PvLabel {
            sector: i as u64,
            pv_uuid: dashed_uuid(&uuid),
            device_size,
            data_areas,
            metadata_areas,
            bootloader_areas,
        }));
    }
    Ok(None)
}

/// LVM prints its 32-character ids as 6-4-4-4-4-4-6.
fn dashed_uuid(raw: &str) -> String {
    if raw.len() != 32 || !raw.is_ascii() {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(38);
    let mut at = 0;
    for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(&raw[at..at + n]);
        at += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 2048; // sectors

    #[test]
    fn label_with_recorded_size() {
        let l = parse_label(include_bytes!("../../tests/fixtures/lvm/label_200m.bin")).unwrap().unwrap();
        assert_eq!(
            l,
            PvLabel {
                sector: 1,
                pv_uuid: "GjRbba-xSwr-zw31-8H60-6BWU-Th5C-4qcVq2".into(),
                device_size: Sectors(200 * MIB),
                data_areas: vec![DiskArea { offset: Sectors(MIB), size: Sectors(0) }],
                metadata_areas: vec![DiskArea { offset: Sectors(8), size: Sectors(2040) }],
                bootloader_areas: vec![],
            }
        );
    }

    #[test]
    fn label_with_second_mda_and_bootloader_area() {
        let l = parse_label(include_bytes!("../../tests/fixtures/lvm/label_mda2.bin")).unwrap().unwrap();
        assert_eq!(l.device_size, Sectors(256 * MIB));
        // The second mda fills the last MiB of the recorded size.
        assert_eq!(
            l.metadata_areas,
            [DiskArea { offset: Sectors(8), size: Sectors(2040) }, DiskArea { offset: Sectors(255 * MIB), size: Sectors(MIB) }]
        );
        let l = parse_label(include_bytes!("../../tests/fixtures/lvm/label_ba.bin")).unwrap().unwrap();
        assert_eq!(l.pv_uuid, "ZuD1v8-0589-VNPe-08z3-pBj1-ublf-Pbp2gX");
        assert_eq!(l.data_areas, [DiskArea { offset: Sectors(2 * MIB), size: Sectors(0) }]);
        assert_eq!(l.bootloader_areas, [DiskArea { offset: Sectors(MIB), size: Sectors(MIB) }]);
    }

    #[test]
    fn label_damage_is_detected() {
        let good = include_bytes!("../../tests/fixtures/lvm/label_200m.bin");
        assert_eq!(parse_label(&[0u8; 2048]), Ok(None));
        let mut bad = good.to_vec();
        bad[512 + 40] ^= 1; // in the pv_header, covered by the checksum
        assert_eq!(parse_label(&bad), Err("LVM label in sector 1 has a bad checksum".into()));
        // A label claiming another sector than the one it's in is no label.
        let mut moved = vec![0u8; 2048];
        moved[1024..1536].copy_from_slice(&good[512..1024]);
        assert_eq!(parse_label(&moved), Ok(None));
    }
}
