//! Sizes with their unit: bytes (LUKS2's unit), 512-byte sectors (LVM's and the kernel's)
//! and VG extents (whose size is a number of sectors), never bare integers, so that the
//! units cannot be mixed up by accident.

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

    pub fn bytes(self) -> Bytes {
        Bytes(self.0 * Self::SIZE)
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

/// A count of bytes, or a byte offset: LUKS2's unit for offsets and sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Bytes {
    /// For byte offsets that are whole sectors by construction (LUKS2 segments, the
    /// data mover's chunks, all 4 KiB-aligned).
    pub fn sectors(self) -> Sectors {
        debug_assert!(self.0.is_multiple_of(Sectors::SIZE), "{self} is not a whole number of sectors");
        Sectors(self.0 / Sectors::SIZE)
    }

    /// `None` unless these bytes are a whole number of sectors.
    pub fn whole_sectors(self) -> Option<Sectors> {
        self.0.is_multiple_of(Sectors::SIZE).then_some(Sectors(self.0 / Sectors::SIZE))
    }

    pub fn is_multiple_of(self, n: u64) -> bool {
        self.0.is_multiple_of(n)
    }

    /// Whole MiB, rounded down.
    pub fn mib(self) -> u64 {
        self.0 >> 20
    }
}

impl Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0 + rhs.0)
    }
}

impl Sub for Bytes {
    type Output = Bytes;
    fn sub(self, rhs: Bytes) -> Bytes {
        Bytes(self.0 - rhs.0)
    }
}

impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        Bytes(iter.map(|b| b.0).sum())
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
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
        assert_eq!(Sectors(3).bytes(), Bytes(1536));
        assert_eq!(Bytes(1536).whole_sectors(), Some(Sectors(3)));
        assert_eq!(Bytes(1537).whole_sectors(), None);
        assert_eq!(Bytes(5 << 20) - Bytes(1 << 20) + Bytes(4096), Bytes((4 << 20) + 4096));
        assert_eq!(Bytes(3 << 20).mib(), 3);
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
        assert_eq!(Bytes(4096).sectors(), Sectors(8));
    }
}
