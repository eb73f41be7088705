//! What is stored under a [`Key`](crate::key::Key) at an LSN: a [`Value`].
//!
//! A value is either a complete page image, or a record that changes the
//! previous version of the page: a PostgreSQL WAL record (replayed by
//! `postgres --wal-redo`) or a Rust-native pseudo-record for the simple
//! changes the pageserver applies itself (CLOG status bits, visibility-map
//! bit clears, multixact offsets and members).
//!
//! Serialized form (big-endian), used in layer files:
//!
//! | tag | value | body |
//! |---|---|---|
//! | 0 | `Image` | the bytes |
//! | 1 | `WalRecord(Postgres)` | `u8 will_init`, the whole XLogRecord |
//! | 2 | `ClogSetCommitted` | `u32 n`, n × `u32 xid`, `i64 timestamp` |
//! | 3 | `ClogSetAborted` | `u32 n`, n × `u32 xid` |
//! | 4 | `ClearVisibilityMapFlags` | `u32 new_heap_blkno`, `u32 old_heap_blkno` (`u32::MAX` = none), `u8 flags` |
//! | 5 | `MultixactOffsetCreate` | `u32 mid`, `u32 moff` |
//! | 6 | `MultixactMembersCreate` | `u32 moff`, `u32 n`, n × (`u32 xid`, `u32 status`) |

use bytes::{BufMut, Bytes, BytesMut};

/// A change record for a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZenithWalRecord {
    /// A PostgreSQL WAL record, replayed by PostgreSQL's redo code.
    Postgres {
        /// The record initializes the page (FPI or an init record): no older
        /// version is needed to apply it.
        will_init: bool,
        /// The complete XLogRecord, header included.
        rec: Bytes,
    },
    /// Mark these xids committed (with this commit timestamp) on a CLOG page.
    ClogSetCommitted { xids: Vec<u32>, timestamp: i64 },
    /// Mark these xids aborted on a CLOG page.
    ClogSetAborted { xids: Vec<u32> },
    /// Clear visibility-map bits of these heap blocks on a VM page.
    ClearVisibilityMapFlags {
        new_heap_blkno: Option<u32>,
        old_heap_blkno: Option<u32>,
        flags: u8,
    },
    /// Set the offset of multixact `mid` on a pg_multixact/offsets page.
    MultixactOffsetCreate { mid: u32, moff: u32 },
    /// Set members starting at offset `moff` on a pg_multixact/members page.
    MultixactMembersCreate { moff: u32, members: Vec<(u32, u32)> },
}

impl ZenithWalRecord {
    /// True if the record does not need an older version of the page.
    pub fn will_init(&self) -> bool {
        matches!(
            self,
            ZenithWalRecord::Postgres {
                will_init: true,
                ..
            }
        )
    }
}

/// The all-zeros page that fills the gap when a relation is extended by a
/// far block: every gap block shares this one, so a gap costs no page
/// allocations.
pub static ZERO_PAGE: [u8; postgres_ffi::BLCKSZ as usize] = [0; postgres_ffi::BLCKSZ as usize];

/// [`ZERO_PAGE`] as a value, without copying it.
pub fn zero_page() -> Bytes {
    Bytes::from_static(&ZERO_PAGE)
}

/// A stored version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The complete value (a page image, or a whole non-page value such as a
    /// directory listing or pg_control).
    Image(Bytes),
    /// A change to the previous version.
    WalRecord(ZenithWalRecord),
}

impl Value {
    /// Whether this is an image that shares [`ZERO_PAGE`] (it holds no
    /// memory of its own).
    pub fn is_shared_zero_page(&self) -> bool {
        matches!(self, Value::Image(b) if b.as_ptr() == ZERO_PAGE.as_ptr())
    }

    /// True if the value can be reconstructed without older versions.
    pub fn will_init(&self) -> bool {
        match self {
            Value::Image(_) => true,
            Value::WalRecord(r) => r.will_init(),
        }
    }

    pub fn is_image(&self) -> bool {
        matches!(self, Value::Image(_))
    }

    /// Serialize (see the module documentation).
    pub fn ser(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Value::Image(img) => {
                b.put_u8(0);
                b.put_slice(img);
            }
            Value::WalRecord(r) => match r {
                ZenithWalRecord::Postgres { will_init, rec } => {
                    b.put_u8(1);
                    b.put_u8(*will_init as u8);
                    b.put_slice(rec);
                }
                ZenithWalRecord::ClogSetCommitted { xids, timestamp } => {
                    b.put_u8(2);
                    b.put_u32(xids.len() as u32);
                    xids.iter().for_each(|x| b.put_u32(*x));
                    b.put_i64(*timestamp);
                }
                ZenithWalRecord::ClogSetAborted { xids } => {
                    b.put_u8(3);
                    b.put_u32(xids.len() as u32);
                    xids.iter().for_each(|x| b.put_u32(*x));
                }
                ZenithWalRecord::ClearVisibilityMapFlags {
                    new_heap_blkno,
                    old_heap_blkno,
                    flags,
                } => {
                    b.put_u8(4);
                    b.put_u32(new_heap_blkno.unwrap_or(u32::MAX));
                    b.put_u32(old_heap_blkno.unwrap_or(u32::MAX));
                    b.put_u8(*flags);
                }
                ZenithWalRecord::MultixactOffsetCreate { mid, moff } => {
                    b.put_u8(5);
                    b.put_u32(*mid);
                    b.put_u32(*moff);
                }
                ZenithWalRecord::MultixactMembersCreate { moff, members } => {
                    b.put_u8(6);
                    b.put_u32(*moff);
                    b.put_u32(members.len() as u32);
                    for (xid, status) in members {
                        b.put_u32(*xid);
                        b.put_u32(*status);
                    }
                }
            },
        }
        b.freeze()
    }

    /// Deserialize; `buf` must be exactly one serialized value.
    pub fn des(buf: &Bytes) -> Result<Value, ValueError> {
        let mut r = Rd { buf, pos: 0 };
        let tag = r.u8()?;
        let v = match tag {
            0 => Value::Image(buf.slice(1..)),
            1 => {
                let will_init = r.u8()? != 0;
                Value::WalRecord(ZenithWalRecord::Postgres {
                    will_init,
                    rec: buf.slice(2..),
                })
            }
            2 => {
                let xids = r.u32_list()?;
                let timestamp = r.u64()? as i64;
                Value::WalRecord(ZenithWalRecord::ClogSetCommitted { xids, timestamp })
            }
            3 => Value::WalRecord(ZenithWalRecord::ClogSetAborted {
                xids: r.u32_list()?,
            }),
            4 => {
                let opt = |v: u32| (v != u32::MAX).then_some(v);
                let new_heap_blkno = opt(r.u32()?);
                let old_heap_blkno = opt(r.u32()?);
                let flags = r.u8()?;
                Value::WalRecord(ZenithWalRecord::ClearVisibilityMapFlags {
                    new_heap_blkno,
                    old_heap_blkno,
                    flags,
                })
            }
            5 => {
                let mid = r.u32()?;
                let moff = r.u32()?;
                Value::WalRecord(ZenithWalRecord::MultixactOffsetCreate { mid, moff })
            }
            6 => {
                let moff = r.u32()?;
                let n = r.u32()? as usize;
                if n > (buf.len() - r.pos) / 8 {
                    return Err(ValueError::Truncated);
                }
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    members.push((r.u32()?, r.u32()?));
                }
                Value::WalRecord(ZenithWalRecord::MultixactMembersCreate { moff, members })
            }
            other => return Err(ValueError::UnknownTag(other)),
        };
        if tag >= 2 && r.pos != buf.len() {
            return Err(ValueError::TrailingBytes(buf.len() - r.pos));
        }
        Ok(v)
    }
}

/// A serialized value that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("serialized value is truncated")]
    Truncated,
    #[error("unknown value tag {0}")]
    UnknownTag(u8),
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

struct Rd<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Rd<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ValueError> {
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(ValueError::Truncated)?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ValueError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, ValueError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, ValueError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn u32_list(&mut self) -> Result<Vec<u32>, ValueError> {
        let n = self.u32()? as usize;
        if n > (self.buf.len() - self.pos) / 4 {
            return Err(ValueError::Truncated);
        }
        (0..n).map(|_| self.u32()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Value> {
        vec![
            Value::Image(Bytes::from(vec![7u8; 8192])),
            Value::Image(Bytes::new()),
            Value::WalRecord(ZenithWalRecord::Postgres {
                will_init: true,
                rec: Bytes::from_static(b"record bytes"),
            }),
            Value::WalRecord(ZenithWalRecord::ClogSetCommitted {
                xids: vec![3, 4, 1000],
                timestamp: -5,
            }),
            Value::WalRecord(ZenithWalRecord::ClogSetAborted { xids: vec![] }),
            Value::WalRecord(ZenithWalRecord::ClearVisibilityMapFlags {
                new_heap_blkno: Some(10),
                old_heap_blkno: None,
                flags: 3,
            }),
            Value::WalRecord(ZenithWalRecord::MultixactOffsetCreate { mid: 9, moff: 40 }),
            Value::WalRecord(ZenithWalRecord::MultixactMembersCreate {
                moff: 40,
                members: vec![(700, 1), (701, 5)],
            }),
        ]
    }

    #[test]
    fn roundtrip() {
        for v in samples() {
            assert_eq!(Value::des(&v.ser()).unwrap(), v);
        }
    }

    #[test]
    fn will_init() {
        let s = samples();
        assert!(s[0].will_init() && s[2].will_init());
        assert!(!s[3].will_init() && !s[5].will_init());
    }

    #[test]
    fn truncations_are_errors() {
        for v in samples().into_iter().skip(3) {
            let b = v.ser();
            for n in 0..b.len() {
                assert!(Value::des(&b.slice(..n)).is_err(), "{v:?} cut at {n}");
            }
        }
        assert_eq!(
            Value::des(&Bytes::from_static(&[9])),
            Err(ValueError::UnknownTag(9))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Value::des(&Bytes::from(b));
        }
    }
}
