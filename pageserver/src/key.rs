//! [`Key`]: the fixed-width, bytewise-ordered key of everything the pageserver
//! stores (docs/architecture.md §7).
//!
//! A key is 18 bytes: `field1: u8, field2: u32, field3: u32, field4: u32,
//! field5: u8, field6: u32`, compared and serialized big-endian so that byte
//! order equals key order. Keys of one relation are adjacent, its size key
//! sorting after its blocks.
//!
//! | what | field1 | field2 | field3 | field4 | field5 | field6 |
//! |---|---|---|---|---|---|---|
//! | database directory | 0x00 | 0 | 0 | 0 | 0 | 0 |
//! | relmapper file of (spc, db) | 0x00 | spc | db | 0 | 0 | 0 |
//! | relation directory of (spc, db) | 0x00 | spc | db | 0 | 0 | 1 |
//! | relation block | 0x00 | spc | db | rel (≠0) | fork | blkno |
//! | relation size | 0x00 | spc | db | rel | fork | 0xFFFFFFFF |
//! | SLRU segment directory of kind | 0x01 | kind | 0 | 0 | 0 | 0 |
//! | SLRU block | 0x01 | kind | 1 | segno | 0 | blkno |
//! | SLRU segment size | 0x01 | kind | 1 | segno | 0 | 0xFFFFFFFF |
//! | two-phase directory | 0x02 | 0 | 0 | 0 | 0 | 0 |
//! | two-phase file of xid | 0x02 | 0 | 0 | 0 | 0 | xid |
//! | pg_control | 0x03 | 0 | 0 | 0 | 0 | 0 |
//! | checkpoint | 0x03 | 0 | 0 | 0 | 0 | 1 |
//!
//! Block numbers 0xFFFFFFFF (`InvalidBlockNumber`) are never stored as blocks.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use postgres_ffi::relfile::RelTag;
use postgres_ffi::slru::SlruKind;

/// Size of a serialized key.
pub const KEY_SIZE: usize = 18;

/// A storage key. See the module documentation for the layout.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub field1: u8,
    pub field2: u32,
    pub field3: u32,
    pub field4: u32,
    pub field5: u8,
    pub field6: u32,
}

/// Bytes that are not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key {0:?}: expected {KEY_SIZE} bytes as 36 hex characters")]
pub struct KeyParseError(pub String);

impl Key {
    pub const MIN: Key = Key {
        field1: 0,
        field2: 0,
        field3: 0,
        field4: 0,
        field5: 0,
        field6: 0,
    };
    pub const MAX: Key = Key {
        field1: 0xff,
        field2: u32::MAX,
        field3: u32::MAX,
        field4: u32::MAX,
        field5: 0xff,
        field6: u32::MAX,
    };

    /// Serialize big-endian (byte order = key order).
    pub fn to_bytes(&self) -> [u8; KEY_SIZE] {
        let mut b = [0u8; KEY_SIZE];
        b[0] = self.field1;
        b[1..5].copy_from_slice(&self.field2.to_be_bytes());
        b[5..9].copy_from_slice(&self.field3.to_be_bytes());
        b[9..13].copy_from_slice(&self.field4.to_be_bytes());
        b[13] = self.field5;
        b[14..18].copy_from_slice(&self.field6.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; KEY_SIZE]) -> Key {
        let u32at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Key {
            field1: b[0],
            field2: u32at(1),
            field3: u32at(5),
            field4: u32at(9),
            field5: b[13],
            field6: u32at(14),
        }
    }

    /// The 144-bit key as an integer (for splitting key ranges).
    pub fn to_u128_lossy(&self) -> u128 {
        // The top 16 bits (field1 and the first byte of field2) are kept in
        // order; this is only used for size estimates.
        let b = self.to_bytes();
        let mut v = [0u8; 16];
        v.copy_from_slice(&b[2..18]);
        u128::from_be_bytes(v) | ((b[0] as u128) << 120)
    }

    /// The next key in order (saturating at [`Key::MAX`]).
    pub fn next(&self) -> Key {
        self.add(1)
    }

    /// `self + n` in key order, carrying across fields (saturating at MAX).
    pub fn add(&self, n: u32) -> Key {
        let mut b = self.to_bytes();
        let mut carry = n as u64;
        for i in (0..KEY_SIZE).rev() {
            if carry == 0 {
                break;
            }
            let v = b[i] as u64 + (carry & 0xff);
            b[i] = v as u8;
            carry = (carry >> 8) + (v >> 8);
        }
        if carry != 0 {
            return Key::MAX;
        }
        Key::from_bytes(&b)
    }

    /// True for a relation block key.
    pub fn is_rel_block_key(&self) -> bool {
        self.field1 == 0x00 && self.field4 != 0 && self.field6 != u32::MAX
    }

    /// The relation of a relation block or size key.
    pub fn rel_tag(&self) -> Option<RelTag> {
        (self.field1 == 0x00 && self.field4 != 0).then_some(RelTag {
            spcnode: self.field2,
            dbnode: self.field3,
            relnode: self.field4,
            forknum: self.field5,
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.to_bytes() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Key {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Key, KeyParseError> {
        let err = || KeyParseError(s.to_string());
        if s.len() != KEY_SIZE * 2 {
            return Err(err());
        }
        let mut b = [0u8; KEY_SIZE];
        hex::decode_to_slice(s, &mut b).map_err(|_| err())?;
        Ok(Key::from_bytes(&b))
    }
}

/// Key of the database directory (which databases exist).
pub const DBDIR_KEY: Key = Key {
    field1: 0x00,
    field2: 0,
    field3: 0,
    field4: 0,
    field5: 0,
    field6: 0,
};

/// Key of the two-phase directory (which prepared transactions exist).
pub const TWOPHASEDIR_KEY: Key = Key {
    field1: 0x02,
    field2: 0,
    field3: 0,
    field4: 0,
    field5: 0,
    field6: 0,
};

/// Key of pg_control.
pub const CONTROLFILE_KEY: Key = Key {
    field1: 0x03,
    field2: 0,
    field3: 0,
    field4: 0,
    field5: 0,
    field6: 0,
};

/// Key of the latest checkpoint (`CheckPoint` as ingest keeps it up to date).
pub const CHECKPOINT_KEY: Key = Key {
    field1: 0x03,
    field2: 0,
    field3: 0,
    field4: 0,
    field5: 0,
    field6: 1,
};

/// Key of the relmapper file (`pg_filenode.map`) of a database (or the shared one).
pub fn relmap_file_key(spcnode: u32, dbnode: u32) -> Key {
    Key {
        field1: 0x00,
        field2: spcnode,
        field3: dbnode,
        field4: 0,
        field5: 0,
        field6: 0,
    }
}

/// Key of the relation directory of a database.
pub fn rel_dir_key(spcnode: u32, dbnode: u32) -> Key {
    Key {
        field1: 0x00,
        field2: spcnode,
        field3: dbnode,
        field4: 0,
        field5: 0,
        field6: 1,
    }
}

/// Key of one block of a relation fork.
pub fn rel_block_key(rel: RelTag, blkno: u32) -> Key {
    Key {
        field1: 0x00,
        field2: rel.spcnode,
        field3: rel.dbnode,
        field4: rel.relnode,
        field5: rel.forknum,
        field6: blkno,
    }
}

/// Key of the size (in blocks) of a relation fork.
pub fn rel_size_key(rel: RelTag) -> Key {
    rel_block_key(rel, u32::MAX)
}

/// All keys of a relation fork (its blocks and its size).
pub fn rel_key_range(rel: RelTag) -> Range<Key> {
    rel_block_key(rel, 0)..rel_size_key(rel).next()
}

/// All keys of a database: its relmapper file, relation directory, relations.
pub fn db_key_range(spcnode: u32, dbnode: u32) -> Range<Key> {
    let start = relmap_file_key(spcnode, dbnode);
    let end = Key {
        field1: 0x00,
        field2: spcnode,
        field3: dbnode,
        field4: u32::MAX,
        field5: 0xff,
        field6: u32::MAX,
    };
    start..end.next()
}

/// Key of the segment directory of an SLRU.
pub fn slru_dir_key(kind: SlruKind) -> Key {
    Key {
        field1: 0x01,
        field2: kind.to_u8() as u32,
        field3: 0,
        field4: 0,
        field5: 0,
        field6: 0,
    }
}

/// Key of one page of an SLRU segment.
pub fn slru_block_key(kind: SlruKind, segno: u32, blkno: u32) -> Key {
    Key {
        field1: 0x01,
        field2: kind.to_u8() as u32,
        field3: 1,
        field4: segno,
        field5: 0,
        field6: blkno,
    }
}

/// Key of the size (in pages) of an SLRU segment.
pub fn slru_segment_size_key(kind: SlruKind, segno: u32) -> Key {
    slru_block_key(kind, segno, u32::MAX)
}

/// Key of the two-phase state file of a prepared transaction.
pub fn twophase_file_key(xid: u32) -> Key {
    Key {
        field6: xid,
        ..TWOPHASEDIR_KEY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_ffi::pg_constants::*;
    use proptest::prelude::*;

    fn rel(relnode: u32, forknum: u8) -> RelTag {
        RelTag {
            spcnode: DEFAULTTABLESPACE_OID,
            dbnode: 5,
            relnode,
            forknum,
        }
    }

    #[test]
    fn keys_of_a_relation_are_adjacent() {
        let r = rel(16384, MAIN_FORKNUM);
        let range = rel_key_range(r);
        assert!(range.contains(&rel_block_key(r, 0)));
        assert!(range.contains(&rel_block_key(r, 1000)));
        assert!(range.contains(&rel_size_key(r)));
        assert!(!range.contains(&rel_block_key(rel(16384, FSM_FORKNUM), 0)));
        assert!(!range.contains(&rel_block_key(rel(16385, MAIN_FORKNUM), 0)));
        assert!(rel_block_key(r, 7) < rel_size_key(r));
        let db = db_key_range(DEFAULTTABLESPACE_OID, 5);
        assert!(db.contains(&rel_dir_key(DEFAULTTABLESPACE_OID, 5)));
        assert!(db.contains(&relmap_file_key(DEFAULTTABLESPACE_OID, 5)));
        assert!(db.contains(&rel_size_key(r)));
        assert!(!db.contains(&rel_dir_key(DEFAULTTABLESPACE_OID, 6)));
        assert!(rel_block_key(r, 0).is_rel_block_key());
        assert!(!rel_size_key(r).is_rel_block_key());
        assert!(!rel_dir_key(1663, 5).is_rel_block_key());
        assert_eq!(rel_size_key(r).rel_tag(), Some(r));
    }

    #[test]
    fn special_keys_are_distinct_and_ordered() {
        let keys = [
            DBDIR_KEY,
            relmap_file_key(1663, 5),
            rel_dir_key(1663, 5),
            slru_dir_key(SlruKind::Clog),
            slru_block_key(SlruKind::Clog, 0, 0),
            slru_segment_size_key(SlruKind::Clog, 0),
            slru_dir_key(SlruKind::MultiXactOffsets),
            TWOPHASEDIR_KEY,
            twophase_file_key(1234),
            CONTROLFILE_KEY,
            CHECKPOINT_KEY,
        ];
        for w in keys.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
    }

    #[test]
    fn add_carries() {
        let k = Key {
            field6: u32::MAX,
            ..DBDIR_KEY
        };
        assert_eq!(
            k.next(),
            Key {
                field5: 1,
                field6: 0,
                ..DBDIR_KEY
            }
        );
        assert_eq!(Key::MAX.next(), Key::MAX);
    }

    proptest! {
        #[test]
        fn byte_order_is_key_order(a: [u8; KEY_SIZE], b: [u8; KEY_SIZE]) {
            let (ka, kb) = (Key::from_bytes(&a), Key::from_bytes(&b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka.to_bytes(), a);
            prop_assert_eq!(ka.to_string().parse::<Key>().unwrap(), ka);
        }

        #[test]
        fn next_is_the_successor(a: [u8; KEY_SIZE]) {
            let k = Key::from_bytes(&a);
            prop_assume!(k != Key::MAX);
            prop_assert!(k.next() > k);
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<Key>();
        }
    }
}
