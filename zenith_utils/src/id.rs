//! Tenant and timeline identifiers.
//!
//! Both are 16 random bytes ([`Id16`]), printed as exactly 32 lower-case hex
//! characters (docs/architecture.md §4). Parsing accepts either case but exactly
//! 32 hex digits, nothing else (no prefix, no whitespace, no dashes). Serde
//! represents an id as that same hex string in every format, so ids look the
//! same in TOML configs, JSON APIs and log lines.
//!
//! [`TenantId`] and [`TimelineId`] are distinct types over one shared
//! implementation so that one can never be passed where the other is meant.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that is not a 32-hex-digit id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("invalid id: expected 32 hex characters, got {0}")]
    WrongLength(usize),
    #[error("invalid id {0:?}: not a hex string")]
    NotHex(String),
}

/// 16 bytes, shown as 32 lower-case hex characters. The common representation
/// of [`TenantId`] and [`TimelineId`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id16([u8; 16]);

impl Id16 {
    /// Length of the textual form.
    pub const HEX_LEN: usize = 32;

    /// A fresh random id from the thread-local CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        Id16(bytes)
    }

    pub const fn from_array(bytes: [u8; 16]) -> Self {
        Id16(bytes)
    }

    pub const fn as_array(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id from a byte slice, if it is exactly 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Id16)
    }

    /// The 32 lower-case hex characters, without allocating.
    fn hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Cannot fail: the output is exactly twice the input length.
        if hex::encode_to_slice(self.0, &mut out).is_err() {
            unreachable!("32-byte buffer for 16 bytes of hex");
        }
        out
    }
}

impl fmt::Display for Id16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // hex::encode_to_slice only writes ASCII hex digits.
        f.pad(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Id16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Id16 {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != Self::HEX_LEN {
            return Err(IdParseError::WrongLength(s.len()));
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| IdParseError::NotHex(s.to_string()))?;
        Ok(Id16(bytes))
    }
}

impl Serialize for Id16 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        let s = std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(s)
    }
}

impl<'de> Deserialize<'de> for Id16 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id16;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string of 32 hex characters")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id16, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(IdVisitor)
    }
}

/// Defines a distinct id type wrapping [`Id16`] with the same text, serde and
/// constructor behaviour.
macro_rules! id16_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Id16);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                $name(Id16::generate())
            }

            pub const fn from_array(bytes: [u8; 16]) -> Self {
                $name(Id16::from_array(bytes))
            }

            pub const fn as_array(&self) -> &[u8; 16] {
                self.0.as_array()
            }

            /// The id from a byte slice, if it is exactly 16 bytes long.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Id16::from_slice(bytes).map($name)
            }

            pub const fn as_id16(&self) -> Id16 {
                self.0
            }
        }

        impl From<[u8; 16]> for $name {
            fn from(bytes: [u8; 16]) -> Self {
                Self::from_array(bytes)
            }
        }

        impl From<Id16> for $name {
            fn from(id: Id16) -> Self {
                $name(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

id16_newtype!(
    /// Identifies a tenant: an isolated set of databases and timelines.
    TenantId
);

id16_newtype!(
    /// Identifies a timeline (a WAL history) within a tenant.
    TimelineId
);

/// A timeline together with its tenant: the full address of a timeline.
/// Printed as `<tenant>/<timeline>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct TenantTimelineId {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
}

impl TenantTimelineId {
    pub fn new(tenant_id: TenantId, timeline_id: TimelineId) -> Self {
        TenantTimelineId {
            tenant_id,
            timeline_id,
        }
    }
}

impl fmt::Display for TenantTimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant_id, self.timeline_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef00112233445566ff";

    #[test]
    fn display_is_32_lowercase_hex() {
        let id = TenantId::from_array([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x66, 0xff,
        ]);
        assert_eq!(id.to_string(), HEX);
        assert_eq!(format!("{id:?}"), HEX);
    }

    #[test]
    fn parse_accepts_upper_case_and_round_trips() {
        let id: TimelineId = HEX.to_uppercase().parse().unwrap();
        assert_eq!(id.to_string(), HEX);
        assert_eq!(HEX.parse::<TimelineId>().unwrap(), id);
    }

    #[test]
    fn parse_rejects_wrong_length_and_non_hex() {
        assert_eq!("abc".parse::<TenantId>(), Err(IdParseError::WrongLength(3)));
        assert_eq!(
            format!("{HEX}00").parse::<TenantId>(),
            Err(IdParseError::WrongLength(34))
        );
        assert!(matches!(
            "0123456789abcdef00112233445566fg".parse::<TenantId>(),
            Err(IdParseError::NotHex(_))
        ));
        // 32 bytes, but not 32 hex characters.
        assert!("0123456789abcdef0011223344556é"
            .parse::<TenantId>()
            .is_err());
        assert!("".parse::<TenantId>().is_err());
    }

    #[test]
    fn generated_ids_differ() {
        let a = TenantId::generate();
        let b = TenantId::generate();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<TenantId>().unwrap(), a);
    }

    #[test]
    fn serde_uses_the_hex_string() {
        let id: TenantId = HEX.parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{HEX}\""));
        assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TenantId>("\"nothex\"").is_err());
        assert!(serde_json::from_str::<TenantId>("[1,2,3]").is_err());

        let both = TenantTimelineId::new(id, TimelineId::from_array([0xaa; 16]));
        let json = serde_json::to_string(&both).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"tenant_id\":\"{HEX}\",\"timeline_id\":\"{}\"}}",
                "aa".repeat(16)
            )
        );
        assert_eq!(
            serde_json::from_str::<TenantTimelineId>(&json).unwrap(),
            both
        );
        assert_eq!(both.to_string(), format!("{HEX}/{}", "aa".repeat(16)));
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(TimelineId::from_slice(&[0; 15]).is_none());
        assert_eq!(
            TimelineId::from_slice(&[7; 16]),
            Some(TimelineId::from_array([7; 16]))
        );
    }

    #[test]
    fn display_honours_padding() {
        let id = Id16::from_array([0; 16]);
        assert_eq!(format!("{id:>34}"), format!("  {}", "0".repeat(32)));
    }
}
