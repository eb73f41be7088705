//! [`Lsn`]: a byte position in the WAL stream of a timeline.
//!
//! Printed as PostgreSQL prints `pg_lsn`: the upper and lower 32 bits in
//! upper-case hex separated by a slash (`16/B374D848`). Parsing accepts either
//! case.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in the WAL (log sequence number).
#[derive(Clone, Copy, Default, Eq, Ord, PartialEq, PartialOrd, Hash)]
pub struct Lsn(pub u64);

/// An `X/Y` string that is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hex numbers separated by '/', like 0/16B3748")]
pub struct LsnParseError(pub String);

impl Lsn {
    /// The invalid LSN (`InvalidXLogRecPtr`).
    pub const INVALID: Lsn = Lsn(0);
    /// The largest LSN; in requests it means "the latest".
    pub const MAX: Lsn = Lsn(u64::MAX);

    pub fn is_valid(self) -> bool {
        self != Lsn::INVALID
    }

    /// Subtraction that returns `None` instead of wrapping.
    pub fn checked_sub<T: Into<u64>>(self, other: T) -> Option<Lsn> {
        self.0.checked_sub(other.into()).map(Lsn)
    }

    /// Addition that returns `None` instead of wrapping.
    pub fn checked_add<T: Into<u64>>(self, other: T) -> Option<Lsn> {
        self.0.checked_add(other.into()).map(Lsn)
    }

    /// Offset within a WAL segment of `seg_sz` bytes.
    pub fn segment_offset(self, seg_sz: usize) -> usize {
        (self.0 % seg_sz as u64) as usize
    }

    /// Segment number (`XLogSegNo`) containing this LSN.
    pub fn segment_number(self, seg_sz: usize) -> u64 {
        self.0 / seg_sz as u64
    }

    /// Start LSN of the segment containing this LSN.
    pub fn segment_lsn(self, seg_sz: usize) -> Lsn {
        Lsn(self.0 - self.0 % seg_sz as u64)
    }

    /// Offset within a WAL page of `page_sz` bytes.
    pub fn page_offset_in(self, page_sz: usize) -> u64 {
        self.0 % page_sz as u64
    }

    /// Start LSN of the WAL page of `page_sz` bytes containing this LSN.
    pub fn page_lsn_in(self, page_sz: usize) -> Lsn {
        Lsn(self.0 - self.0 % page_sz as u64)
    }

    /// Round up to the next multiple of `align` (a power of two).
    pub fn align_up(self, align: u64) -> Lsn {
        debug_assert!(align.is_power_of_two());
        Lsn((self.0 + align - 1) & !(align - 1))
    }

    /// Round up to the next 8-byte boundary, where WAL records start.
    pub fn align(self) -> Lsn {
        self.align_up(8)
    }

    /// True if this LSN is on an 8-byte boundary.
    pub fn is_aligned(self) -> bool {
        self.0.is_multiple_of(8)
    }

    /// Parse `X/Y` (hex); same as [`FromStr`].
    pub fn from_hex_pair(s: &str) -> Result<Lsn, LsnParseError> {
        s.parse()
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Lsn {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(l: Lsn) -> u64 {
        l.0
    }
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Lsn, LsnParseError> {
        let err = || LsnParseError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Add<u64> for Lsn {
    type Output = Lsn;
    fn add(self, other: u64) -> Lsn {
        Lsn(self.0.checked_add(other).expect("Lsn overflow"))
    }
}

impl AddAssign<u64> for Lsn {
    fn add_assign(&mut self, other: u64) {
        *self = *self + other;
    }
}

impl Sub<Lsn> for Lsn {
    type Output = u64;
    fn sub(self, other: Lsn) -> u64 {
        self.0.checked_sub(other.0).expect("Lsn underflow")
    }
}

impl Sub<u64> for Lsn {
    type Output = Lsn;
    fn sub(self, other: u64) -> Lsn {
        Lsn(self.0.checked_sub(other).expect("Lsn underflow"))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_like_postgres() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0x0100_0028).to_string(), "0/1000028");
    }

    #[test]
    fn parses_either_case() {
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("0/1000028".parse::<Lsn>().unwrap(), Lsn(0x0100_0028));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "/",
            "0/",
            "/0",
            "12345",
            "0/123456789",
            "x/1",
            "1/1/1",
            "-1/0",
        ] {
            assert!(s.parse::<Lsn>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn segment_helpers() {
        let seg = 16 * 1024 * 1024;
        let lsn = Lsn(0x0300_0128);
        assert_eq!(lsn.segment_number(seg), 3);
        assert_eq!(lsn.segment_offset(seg), 0x128);
        assert_eq!(lsn.segment_lsn(seg), Lsn(0x0300_0000));
        assert_eq!(lsn.page_lsn_in(8192), Lsn(0x0300_0000));
        assert_eq!(Lsn(0x129).align(), Lsn(0x130));
        assert_eq!(Lsn(0x130).align(), Lsn(0x130));
    }

    #[test]
    fn serde_as_string() {
        let j = serde_json::to_string(&Lsn(0x1_0000_0010)).unwrap();
        assert_eq!(j, "\"1/10\"");
        assert_eq!(serde_json::from_str::<Lsn>(&j).unwrap(), Lsn(0x1_0000_0010));
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(v: u64) {
            prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }

        #[test]
        fn parse_never_panics(s in ".{0,24}") {
            let _ = s.parse::<Lsn>();
        }
    }
}
