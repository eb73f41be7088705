//! Layer file names.
//!
//! - delta layer: `<key start>-<key end>__<lsn start>-<lsn end>`
//! - image layer: `<key start>-<key end>__<lsn>`
//!
//! Keys are 36 hex digits, LSNs 16 hex digits (upper case). Key ranges are
//! half-open; a delta layer's LSN range is half-open too; an image layer holds
//! every key of its range as of exactly `<lsn>`.

use std::fmt;
use std::ops::Range;

use zenith_utils::lsn::Lsn;

use crate::key::Key;

/// What a layer file covers, as encoded in its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LayerFileName {
    Delta {
        key_range: Range<Key>,
        lsn_range: Range<Lsn>,
    },
    Image {
        key_range: Range<Key>,
        lsn: Lsn,
    },
}

impl LayerFileName {
    pub fn key_range(&self) -> &Range<Key> {
        match self {
            LayerFileName::Delta { key_range, .. } | LayerFileName::Image { key_range, .. } => {
                key_range
            }
        }
    }

    /// LSN range: `[lsn, lsn+1)` for an image layer.
    pub fn lsn_range(&self) -> Range<Lsn> {
        match self {
            LayerFileName::Delta { lsn_range, .. } => lsn_range.clone(),
            LayerFileName::Image { lsn, .. } => *lsn..*lsn + 1,
        }
    }

    pub fn is_delta(&self) -> bool {
        matches!(self, LayerFileName::Delta { .. })
    }

    /// Parse a file name; `None` if it is not a layer file name.
    pub fn parse(name: &str) -> Option<LayerFileName> {
        let (keys, lsns) = name.split_once("__")?;
        let (k1, k2) = keys.split_once('-')?;
        let key_range = k1.parse::<Key>().ok()?..k2.parse::<Key>().ok()?;
        if key_range.start >= key_range.end {
            return None;
        }
        let lsn = |s: &str| -> Option<Lsn> {
            (s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(s, 16).ok().map(Lsn))
                .flatten()
        };
        match lsns.split_once('-') {
            Some((l1, l2)) => {
                let lsn_range = lsn(l1)?..lsn(l2)?;
                (lsn_range.start < lsn_range.end).then_some(LayerFileName::Delta {
                    key_range,
                    lsn_range,
                })
            }
            None => Some(LayerFileName::Image {
                key_range,
                lsn: lsn(lsns)?,
            }),
        }
    }
}

impl fmt::Display for LayerFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerFileName::Delta {
                key_range,
                lsn_range,
            } => write!(
                f,
                "{}-{}__{:016X}-{:016X}",
                key_range.start, key_range.end, lsn_range.start.0, lsn_range.end.0
            ),
            LayerFileName::Image { key_range, lsn } => {
                write!(f, "{}-{}__{:016X}", key_range.start, key_range.end, lsn.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        let d = LayerFileName::Delta {
            key_range: Key::MIN..Key::MAX,
            lsn_range: Lsn(0x0100_0028)..Lsn(0x0200_0000),
        };
        let i = LayerFileName::Image {
            key_range: Key::MIN.next()..Key::MAX,
            lsn: Lsn(0x0149_3008),
        };
        for n in [d, i] {
            let s = n.to_string();
            assert_eq!(LayerFileName::parse(&s), Some(n), "{s}");
        }
        assert_eq!(
            LayerFileName::Image {
                key_range: Key::MIN..Key::MAX,
                lsn: Lsn(1)
            }
            .to_string(),
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000000001"
        );
        for bad in [
            "metadata",
            "x__y",
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__1",
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF-000000000000000000000000000000000000__0000000000000001",
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000000002-0000000000000001",
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000000001.___temp",
        ] {
            assert_eq!(LayerFileName::parse(bad), None, "{bad}");
        }
    }
}
