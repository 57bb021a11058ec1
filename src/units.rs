//! Sizes with their unit: 512-byte sectors and VG extents (whose size is a number of
//! sectors), never bare integers, so that the units cannot be mixed up by accident.

use std::{
    fmt,
    ops::{Add, Mul, Sub},
};

/// A count of 512-byte sectors: LVM's and the kernel's unit for block
/// addresses, whatever the device's logical block size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sectors(pub u64);

impl Sectors {
    pub const SIZE: u64 = 512;
    pub const MIB: Sectors = Sectors(2048);

    /// Whole MiB, rounded down.
    pub fn mib(self) -> u64 {
        self.0 / Self::MIB.0
    }

    pub fn saturating_sub(self, rhs: Sectors) -> Sectors {
        Sectors(self.0.saturating_sub(rhs.0))
    }

    /// The whole extents of `extent_size` these sectors hold (rounded down).
    pub fn whole_extents(self, extent_size: Sectors) -> Extents {
        Extents(self.0 / extent_size.0.max(1))
    }

    /// The extents of `extent_size` needed to cover these sectors (rounded up).
    pub fn extents_to_cover(self, extent_size: Sectors) -> Extents {
        Extents(self.0.div_ceil(extent_size.0.max(1)))
    }

    pub fn bytes(self) -> u64 {
        self.0 * Self::SIZE
    }

    /// For byte offsets that are whole sectors by construction (LUKS2 segments, the
    /// data mover's chunks, all 4 KiB-aligned).
    pub fn from_aligned_bytes(bytes: u64) -> Sectors {
        debug_assert!(bytes.is_multiple_of(Self::SIZE), "{bytes} bytes is not a whole number of sectors");
        Sectors(bytes / Self::SIZE)
    }

    /// `None` unless `bytes` is a whole number of sectors.
    pub fn from_bytes(bytes: u64) -> Option<Sectors> {
        bytes.is_multiple_of(Self::SIZE).then_some(Sectors(bytes / Self::SIZE))
    }
}

impl Add for Sectors {
    type Output = Sectors;
    fn add(self, rhs: Sectors) -> Sectors {
        Sectors(self.0 + rhs.0)
    }
}

impl Sub for Sectors {
    type Output = Sectors;
    fn sub(self, rhs: Sectors) -> Sectors {
        Sectors(self.0 - rhs.0)
    }
}

impl Mul<u64> for Sectors {
    type Output = Sectors;
    fn mul(self, rhs: u64) -> Sectors {
        Sectors(self.0 * rhs)
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// A count (or index) of physical/logical extents. Only meaningful together
/// with the VG's extent size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extents(pub u64);

impl Extents {
    pub fn to_sectors(self, extent_size: Sectors) -> Sectors {
        Sectors(self.0 * extent_size.0)
    }
}

impl Add for Extents {
    type Output = Extents;
    fn add(self, rhs: Extents) -> Extents {
        Extents(self.0 + rhs.0)
    }
}

impl Sub for Extents {
    type Output = Extents;
    fn sub(self, rhs: Extents) -> Extents {
        Extents(self.0 - rhs.0)
    }
}

impl fmt::Display for Extents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} extents", self.0)
    }
}

/// A size with an optional binary suffix, in bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'S' => 512,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size too large: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(Sectors(3).bytes(), 1536);
        assert_eq!(Sectors::from_bytes(1536), Some(Sectors(3)));
        assert_eq!(Sectors::from_bytes(1537), None);
        assert_eq!(Extents(49).to_sectors(Sectors(8192)), Sectors(401408));
        assert_eq!(Sectors(2048) + Sectors(1), Sectors(2049));
        assert_eq!(Sectors(2048) - Sectors(48), Sectors(2000));
        assert_eq!(Extents(2) + Extents(3), Extents(5));
        assert_eq!(Sectors(8).to_string(), "8s");
        assert_eq!(Extents(8).to_string(), "8 extents");
        assert_eq!(Sectors(4095).mib(), 1);
        assert_eq!(Sectors(5).saturating_sub(Sectors(6)), Sectors(0));
        assert_eq!(Sectors(8191).whole_extents(Sectors(8192)), Extents(0));
        assert_eq!(Sectors(8193).extents_to_cover(Sectors(8192)), Extents(2));
        assert_eq!(Sectors(3) * 4, Sectors(12));
        assert_eq!(Extents(5) - Extents(3), Extents(2));
        assert_eq!(Sectors::from_aligned_bytes(4096), Sectors(8));
    }
}
