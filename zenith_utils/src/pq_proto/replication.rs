//! The messages of a physical replication stream, carried inside CopyData
//! after `START_REPLICATION` (PostgreSQL 15 docs, §55.4 "Streaming
//! Replication Protocol"). Defined once for both ends: the WAL receiver of
//! the pageserver reads XLogData and keepalives and writes status updates;
//! the walkeeper will write the former and read the latter.
//!
//! | tag | direction | body (big-endian) |
//! |---|---|---|
//! | `w` XLogData | server → client | `u64 wal_start, u64 wal_end, i64 send_time`, then WAL bytes starting at `wal_start` |
//! | `k` primary keepalive | server → client | `u64 wal_end, i64 send_time, u8 reply_requested` |
//! | `r` standby status update | client → server | `u64 write, u64 flush, u64 apply, i64 send_time, u8 reply_requested` |
//! | `h` hot-standby feedback | client → server | `i64 send_time, u32 xmin, u32 xmin_epoch, u32 catalog_xmin, u32 catalog_xmin_epoch` |
//!
//! Times are microseconds since 2000-01-01 00:00 UTC (PostgreSQL's
//! `TimestampTz`, `postgres_ffi::xlog_utils::to_pg_timestamp`). Parsing never panics: a short, long or unknown message is
//! a [`ProtocolError`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtocolError;
use crate::lsn::Lsn;

/// One message of a replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    XLogData(XLogData),
    PrimaryKeepalive(PrimaryKeepalive),
    StandbyStatusUpdate(StandbyStatusUpdate),
    HotStandbyFeedback(HotStandbyFeedback),
}

/// `w`: WAL bytes starting at `wal_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    pub wal_start: Lsn,
    /// The end of WAL on the server when it sent this.
    pub wal_end: Lsn,
    pub send_time: i64,
    pub data: Bytes,
}

/// `k`: the server's WAL end; a reply is wanted at once if
/// `reply_requested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    pub wal_end: Lsn,
    pub send_time: i64,
    pub reply_requested: bool,
}

/// `r`: how far the client has written, flushed and applied WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    pub write_lsn: Lsn,
    pub flush_lsn: Lsn,
    pub apply_lsn: Lsn,
    pub send_time: i64,
    pub reply_requested: bool,
}

/// `h`: the client's oldest running transaction ids, to hold back vacuum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotStandbyFeedback {
    pub send_time: i64,
    pub xmin: u32,
    pub xmin_epoch: u32,
    pub catalog_xmin: u32,
    pub catalog_xmin_epoch: u32,
}

const XLOG_DATA_HEADER: usize = 24;
const KEEPALIVE_LEN: usize = 17;
const STATUS_UPDATE_LEN: usize = 33;
const FEEDBACK_LEN: usize = 24;

impl ReplicationMessage {
    /// The type byte.
    pub fn tag(&self) -> u8 {
        match self {
            ReplicationMessage::XLogData(_) => b'w',
            ReplicationMessage::PrimaryKeepalive(_) => b'k',
            ReplicationMessage::StandbyStatusUpdate(_) => b'r',
            ReplicationMessage::HotStandbyFeedback(_) => b'h',
        }
    }

    /// Parses the payload of one CopyData. The WAL bytes of XLogData share
    /// `data`'s buffer (no copy).
    pub fn parse(data: &Bytes) -> Result<ReplicationMessage, ProtocolError> {
        let Some((&tag, _)) = data.split_first() else {
            return Err(ProtocolError::Truncated("replication message"));
        };
        let mut b = data.slice(1..);
        let exact = |b: &Bytes, len: usize, what: &'static str| match b.len() {
            l if l < len => Err(ProtocolError::Truncated(what)),
            l if l > len => Err(ProtocolError::TrailingBytes(what)),
            _ => Ok(()),
        };
        let flag = |v: u8, what: &'static str| match v {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ProtocolError::InvalidValue {
                what,
                value: v.into(),
            }),
        };
        Ok(match tag {
            b'w' => {
                if b.len() < XLOG_DATA_HEADER {
                    return Err(ProtocolError::Truncated("XLogData message"));
                }
                ReplicationMessage::XLogData(XLogData {
                    wal_start: Lsn(b.get_u64()),
                    wal_end: Lsn(b.get_u64()),
                    send_time: b.get_i64(),
                    data: b,
                })
            }
            b'k' => {
                exact(&b, KEEPALIVE_LEN, "primary keepalive message")?;
                ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end: Lsn(b.get_u64()),
                    send_time: b.get_i64(),
                    reply_requested: flag(b.get_u8(), "keepalive reply flag")?,
                })
            }
            b'r' => {
                exact(&b, STATUS_UPDATE_LEN, "standby status update")?;
                ReplicationMessage::StandbyStatusUpdate(StandbyStatusUpdate {
                    write_lsn: Lsn(b.get_u64()),
                    flush_lsn: Lsn(b.get_u64()),
                    apply_lsn: Lsn(b.get_u64()),
                    send_time: b.get_i64(),
                    reply_requested: flag(b.get_u8(), "status update reply flag")?,
                })
            }
            b'h' => {
                exact(&b, FEEDBACK_LEN, "hot standby feedback")?;
                ReplicationMessage::HotStandbyFeedback(HotStandbyFeedback {
                    send_time: b.get_i64(),
                    xmin: b.get_u32(),
                    xmin_epoch: b.get_u32(),
                    catalog_xmin: b.get_u32(),
                    catalog_xmin_epoch: b.get_u32(),
                })
            }
            other => {
                return Err(ProtocolError::InvalidValue {
                    what: "replication message type",
                    value: other.into(),
                })
            }
        })
    }

    /// Appends the CopyData payload of this message.
    pub fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(self.tag());
        match self {
            ReplicationMessage::XLogData(m) => {
                buf.reserve(XLOG_DATA_HEADER + m.data.len());
                buf.put_u64(m.wal_start.0);
                buf.put_u64(m.wal_end.0);
                buf.put_i64(m.send_time);
                buf.put_slice(&m.data);
            }
            ReplicationMessage::PrimaryKeepalive(m) => {
                buf.put_u64(m.wal_end.0);
                buf.put_i64(m.send_time);
                buf.put_u8(m.reply_requested.into());
            }
            ReplicationMessage::StandbyStatusUpdate(m) => {
                buf.put_u64(m.write_lsn.0);
                buf.put_u64(m.flush_lsn.0);
                buf.put_u64(m.apply_lsn.0);
                buf.put_i64(m.send_time);
                buf.put_u8(m.reply_requested.into());
            }
            ReplicationMessage::HotStandbyFeedback(m) => {
                buf.put_i64(m.send_time);
                buf.put_u32(m.xmin);
                buf.put_u32(m.xmin_epoch);
                buf.put_u32(m.catalog_xmin);
                buf.put_u32(m.catalog_xmin_epoch);
            }
        }
    }

    /// The payload as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.write(&mut buf);
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(bytes: &[u8]) -> Result<ReplicationMessage, ProtocolError> {
        ReplicationMessage::parse(&Bytes::copy_from_slice(bytes))
    }

    /// Byte layouts as §55.4 of the PostgreSQL 15 manual lists them, field
    /// by field.
    #[test]
    fn messages_match_the_documented_layouts() {
        let xlog = [
            &b"w"[..],
            &0x0000_0001_0000_0028u64.to_be_bytes(), // start of WAL data
            &0x0000_0001_0000_0100u64.to_be_bytes(), // current end of WAL
            &777i64.to_be_bytes(),                   // send time
            b"WAL!",
        ]
        .concat();
        let m = parse(&xlog).unwrap();
        assert_eq!(
            m,
            ReplicationMessage::XLogData(XLogData {
                wal_start: Lsn(0x1_0000_0028),
                wal_end: Lsn(0x1_0000_0100),
                send_time: 777,
                data: Bytes::from_static(b"WAL!"),
            })
        );
        assert_eq!(m.to_bytes()[..], xlog[..]);

        let keepalive = [
            &b"k"[..],
            &0x0000_0002_0000_0000u64.to_be_bytes(),
            &(-5i64).to_be_bytes(),
            &[1],
        ]
        .concat();
        let m = parse(&keepalive).unwrap();
        assert_eq!(
            m,
            ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn(0x2_0000_0000),
                send_time: -5,
                reply_requested: true,
            })
        );
        assert_eq!(m.to_bytes()[..], keepalive[..]);

        let status = [
            &b"r"[..],
            &10u64.to_be_bytes(),
            &9u64.to_be_bytes(),
            &8u64.to_be_bytes(),
            &1234i64.to_be_bytes(),
            &[0],
        ]
        .concat();
        assert_eq!(status.len(), 34);
        let m = parse(&status).unwrap();
        assert_eq!(
            m,
            ReplicationMessage::StandbyStatusUpdate(StandbyStatusUpdate {
                write_lsn: Lsn(10),
                flush_lsn: Lsn(9),
                apply_lsn: Lsn(8),
                send_time: 1234,
                reply_requested: false,
            })
        );
        assert_eq!(m.to_bytes()[..], status[..]);

        let feedback = [
            &b"h"[..],
            &99i64.to_be_bytes(),
            &700u32.to_be_bytes(),
            &1u32.to_be_bytes(),
            &650u32.to_be_bytes(),
            &0u32.to_be_bytes(),
        ]
        .concat();
        let m = parse(&feedback).unwrap();
        assert_eq!(
            m,
            ReplicationMessage::HotStandbyFeedback(HotStandbyFeedback {
                send_time: 99,
                xmin: 700,
                xmin_epoch: 1,
                catalog_xmin: 650,
                catalog_xmin_epoch: 0,
            })
        );
        assert_eq!(m.to_bytes()[..], feedback[..]);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(
            parse(b""),
            Err(ProtocolError::Truncated("replication message"))
        );
        assert!(matches!(parse(b"w\0\0"), Err(ProtocolError::Truncated(_))));
        assert!(matches!(
            parse(&[b'k'; 18]),
            Err(ProtocolError::InvalidValue { .. })
        ));
        assert!(matches!(
            parse(&[&b"k"[..], &[0; 17], &[0]].concat()),
            Err(ProtocolError::TrailingBytes(_))
        ));
        assert!(matches!(
            parse(&[b'r'; 10]),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            parse(b"x123"),
            Err(ProtocolError::InvalidValue { .. })
        ));
    }

    fn message() -> impl Strategy<Value = ReplicationMessage> {
        let lsn = any::<u64>().prop_map(Lsn);
        prop_oneof![
            (
                lsn.clone(),
                lsn.clone(),
                any::<i64>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(s, e, t, d)| ReplicationMessage::XLogData(XLogData {
                    wal_start: s,
                    wal_end: e,
                    send_time: t,
                    data: d.into(),
                })),
            (lsn.clone(), any::<i64>(), any::<bool>()).prop_map(|(e, t, r)| {
                ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end: e,
                    send_time: t,
                    reply_requested: r,
                })
            }),
            (lsn.clone(), lsn.clone(), lsn, any::<i64>(), any::<bool>()).prop_map(
                |(w, f, a, t, r)| ReplicationMessage::StandbyStatusUpdate(StandbyStatusUpdate {
                    write_lsn: w,
                    flush_lsn: f,
                    apply_lsn: a,
                    send_time: t,
                    reply_requested: r,
                })
            ),
            (any::<i64>(), any::<[u32; 4]>()).prop_map(|(t, x)| {
                ReplicationMessage::HotStandbyFeedback(HotStandbyFeedback {
                    send_time: t,
                    xmin: x[0],
                    xmin_epoch: x[1],
                    catalog_xmin: x[2],
                    catalog_xmin_epoch: x[3],
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in message()) {
            prop_assert_eq!(ReplicationMessage::parse(&m.to_bytes()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse(&data);
        }

        #[test]
        fn truncated_or_extended_fixed_messages_are_errors(m in message(), cut in 1usize..40) {
            if !matches!(m, ReplicationMessage::XLogData(_)) {
                let bytes = m.to_bytes();
                let shorter = &bytes[..bytes.len().saturating_sub(cut).max(1)];
                if shorter.len() < bytes.len() {
                    prop_assert!(parse(shorter).is_err());
                }
                let longer = [&bytes[..], &vec![0u8; cut]].concat();
                prop_assert!(parse(&longer).is_err());
            }
        }
    }
}
