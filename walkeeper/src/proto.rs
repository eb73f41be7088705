//! The walproposer ↔ walkeeper consensus protocol: message layouts and their
//! codec (docs/walkeeper_protocol.md has the byte layouts).
//!
//! After `START_WAL_PUSH` on a connection whose startup options name the
//! tenant and timeline, every message in both directions is the payload of
//! one CopyData. All integers are little-endian (the proposer is C and sends
//! its structs' fields one by one in host order; the format fixes it to
//! little-endian), and every message starts with a `u64` tag holding one
//! ASCII character.
//!
//! Decoding never panics and never allocates more than the input holds: a
//! message that is short, long, or has an unknown tag is an error
//! ([`ProtoError`]), and the daemon answers it with an ErrorResponse.

use bytes::{BufMut, Bytes, BytesMut};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

/// The protocol version of this implementation.
pub const PROTOCOL_VERSION: u32 = 1;

/// Most WAL bytes one AppendRequest may carry.
pub const MAX_SEND_SIZE: usize = 16 * 8192;

/// Most entries a term history may have on the wire (one per election that
/// wrote WAL; far more than a timeline ever sees).
pub const MAX_TERM_HISTORY: usize = 100_000;

pub type Term = u64;
pub type NodeId = u64;

/// One entry of a term history: from `lsn` on, WAL was written in `term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TermSwitch {
    pub term: Term,
    pub lsn: Lsn,
}

/// Where each term's WAL starts, ascending in both term and LSN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TermHistory(pub Vec<TermSwitch>);

impl TermHistory {
    /// The *epoch* of an acceptor whose WAL ends at `flush_lsn`: the term of
    /// the last entry starting at or below it, if any. A term elected at the
    /// acceptor's WAL end counts although it wrote nothing yet (like a
    /// leader's no-op entry in Raft): after a term was elected at X on a
    /// quorum (`postgres --sync-walkeepers`), a later election picks a
    /// member of that quorum over a walkeeper of an older term with a longer
    /// log, so the log it elects ends at X, where the next compute's
    /// basebackup starts.
    pub fn epoch_at(&self, flush_lsn: Lsn) -> Option<Term> {
        self.0
            .iter()
            .rev()
            .find(|s| s.lsn <= flush_lsn)
            .map(|s| s.term)
    }

    pub fn last_term(&self) -> Option<Term> {
        self.0.last().map(|s| s.term)
    }

    /// Terms and LSNs both strictly ascending (LSNs may repeat when a term
    /// wrote nothing).
    pub fn is_well_formed(&self) -> bool {
        self.0
            .windows(2)
            .all(|w| w[0].term < w[1].term && w[0].lsn <= w[1].lsn)
    }

    /// The history up to (and excluding WAL from) `lsn`: entries starting
    /// at or after `lsn` go, except that an empty history stays empty.
    pub fn up_to(&self, lsn: Lsn) -> TermHistory {
        TermHistory(self.0.iter().copied().filter(|s| s.lsn < lsn).collect())
    }
}

/// Pageserver feedback relayed to the proposer: how far the pageserver has
/// received, made durable and uploaded WAL, for backpressure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PageserverFeedback {
    pub current_timeline_size: u64,
    pub ps_writelsn: Lsn,
    pub ps_flushlsn: Lsn,
    pub ps_applylsn: Lsn,
    /// PostgreSQL timestamp (microseconds since 2000-01-01).
    pub ps_replytime: i64,
}

/// Proposer → acceptor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProposerMessage {
    Greeting(ProposerGreeting),
    VoteRequest(VoteRequest),
    Elected(ProposerElected),
    Append(AppendRequest),
}

/// Acceptor → proposer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AcceptorMessage {
    Greeting(AcceptorGreeting),
    VoteResponse(VoteResponse),
    AppendResponse(AppendResponse),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProposerGreeting {
    pub protocol_version: u32,
    /// `PG_VERSION_NUM` of the compute, e.g. 150002.
    pub pg_version: u32,
    pub proposer_id: [u8; 16],
    pub system_id: u64,
    pub timeline_id: TimelineId,
    pub tenant_id: TenantId,
    /// PostgreSQL timeline (always 1).
    pub tli: u32,
    pub wal_seg_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AcceptorGreeting {
    /// The highest term this acceptor has voted in.
    pub term: Term,
    pub node_id: NodeId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoteRequest {
    pub term: Term,
    pub proposer_id: [u8; 16],
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VoteResponse {
    /// The acceptor's term after handling the request.
    pub term: Term,
    pub vote_given: bool,
    pub flush_lsn: Lsn,
    /// WAL below this LSN is on every acceptor.
    pub truncate_lsn: Lsn,
    pub term_history: TermHistory,
    pub timeline_start_lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProposerElected {
    pub term: Term,
    /// The acceptor keeps its WAL below this LSN and drops the rest.
    pub start_streaming_at: Lsn,
    /// The proposer's history, its own term last.
    pub term_history: TermHistory,
    pub timeline_start_lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppendRequest {
    pub term: Term,
    /// Where the proposer's own term starts.
    pub epoch_start_lsn: Lsn,
    pub begin_lsn: Lsn,
    pub end_lsn: Lsn,
    /// What the proposer knows to be committed.
    pub commit_lsn: Lsn,
    /// WAL below this LSN is on every acceptor.
    pub truncate_lsn: Lsn,
    pub proposer_id: [u8; 16],
    /// `end_lsn - begin_lsn` bytes of WAL.
    pub wal_data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppendResponse {
    /// The acceptor's term: above the request's, the proposer was deposed.
    pub term: Term,
    pub flush_lsn: Lsn,
    pub commit_lsn: Lsn,
    /// Hot-standby feedback (unused: 0).
    pub hs_ts: i64,
    pub hs_xmin: u64,
    pub hs_catalog_xmin: u64,
    pub pageserver_feedback: Option<PageserverFeedback>,
}

/// A message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("empty message")]
    Empty,
    #[error("unknown message tag {0:#x}")]
    UnknownTag(u64),
    #[error("message '{tag}' is truncated: {what} needs {need} more bytes")]
    Truncated {
        tag: char,
        what: &'static str,
        need: usize,
    },
    #[error("message '{tag}' has {0} bytes after its end", .extra)]
    Trailing { tag: char, extra: usize },
    #[error("message '{tag}': {reason}")]
    Invalid { tag: char, reason: String },
}

const TAG_GREETING: u8 = b'g';
const TAG_VOTE: u8 = b'v';
const TAG_ELECTED: u8 = b'e';
const TAG_APPEND: u8 = b'a';

/// A little-endian reader over a message body that reports what is missing.
struct Reader<'a> {
    tag: char,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Truncated {
                tag: self.tag,
                what,
                need: n - self.buf.len(),
            });
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, ProtoError> {
        Ok(self.u64(what)? as i64)
    }

    fn lsn(&mut self, what: &'static str) -> Result<Lsn, ProtoError> {
        Ok(Lsn(self.u64(what)?))
    }

    fn id(&mut self, what: &'static str) -> Result<[u8; 16], ProtoError> {
        let b = self.take(16, what)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn term_history(&mut self) -> Result<TermHistory, ProtoError> {
        let n = self.u32("term history length")? as usize;
        if n > MAX_TERM_HISTORY || n * 16 > self.buf.len() {
            return Err(ProtoError::Invalid {
                tag: self.tag,
                reason: format!("term history of {n} entries in {} bytes", self.buf.len()),
            });
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let term = self.u64("term history term")?;
            let lsn = self.lsn("term history LSN")?;
            v.push(TermSwitch { term, lsn });
        }
        Ok(TermHistory(v))
    }

    fn finish(self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Trailing {
                tag: self.tag,
                extra: self.buf.len(),
            })
        }
    }
}

/// The tag of a message (its first 8 bytes).
fn read_tag(buf: &[u8]) -> Result<(u8, &[u8]), ProtoError> {
    if buf.is_empty() {
        return Err(ProtoError::Empty);
    }
    if buf.len() < 8 {
        return Err(ProtoError::Truncated {
            tag: '?',
            what: "tag",
            need: 8 - buf.len(),
        });
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[..8]);
    let tag = u64::from_le_bytes(a);
    if tag > 0x7f {
        return Err(ProtoError::UnknownTag(tag));
    }
    Ok((tag as u8, &buf[8..]))
}

fn put_tag(b: &mut BytesMut, tag: u8) {
    b.put_u64_le(u64::from(tag));
}

fn put_history(b: &mut BytesMut, h: &TermHistory) {
    b.put_u32_le(h.0.len() as u32);
    for s in &h.0 {
        b.put_u64_le(s.term);
        b.put_u64_le(s.lsn.0);
    }
}

impl ProposerMessage {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ProposerMessage::Greeting(_) => "ProposerGreeting",
            ProposerMessage::VoteRequest(_) => "VoteRequest",
            ProposerMessage::Elected(_) => "ProposerElected",
            ProposerMessage::Append(_) => "AppendRequest",
        }
    }

    pub fn parse(buf: &[u8]) -> Result<ProposerMessage, ProtoError> {
        let (tag, body) = read_tag(buf)?;
        let mut r = Reader {
            tag: tag as char,
            buf: body,
        };
        let msg = match tag {
            TAG_GREETING => ProposerMessage::Greeting(ProposerGreeting {
                protocol_version: r.u32("protocol version")?,
                pg_version: r.u32("pg_version")?,
                proposer_id: r.id("proposer id")?,
                system_id: r.u64("system id")?,
                timeline_id: TimelineId::from_array(r.id("timeline id")?),
                tenant_id: TenantId::from_array(r.id("tenant id")?),
                tli: r.u32("tli")?,
                wal_seg_size: r.u32("wal_seg_size")?,
            }),
            TAG_VOTE => ProposerMessage::VoteRequest(VoteRequest {
                term: r.u64("term")?,
                proposer_id: r.id("proposer id")?,
            }),
            TAG_ELECTED => ProposerMessage::Elected(ProposerElected {
                term: r.u64("term")?,
                start_streaming_at: r.lsn("start_streaming_at")?,
                term_history: r.term_history()?,
                timeline_start_lsn: r.lsn("timeline_start_lsn")?,
            }),
            TAG_APPEND => {
                let term = r.u64("term")?;
                let epoch_start_lsn = r.lsn("epoch_start_lsn")?;
                let begin_lsn = r.lsn("begin_lsn")?;
                let end_lsn = r.lsn("end_lsn")?;
                let commit_lsn = r.lsn("commit_lsn")?;
                let truncate_lsn = r.lsn("truncate_lsn")?;
                let proposer_id = r.id("proposer id")?;
                let len = end_lsn
                    .0
                    .checked_sub(begin_lsn.0)
                    .filter(|l| *l as usize <= MAX_SEND_SIZE)
                    .ok_or_else(|| ProtoError::Invalid {
                        tag: 'a',
                        reason: format!(
                            "WAL range {begin_lsn}..{end_lsn} is reversed or over {MAX_SEND_SIZE} bytes"
                        ),
                    })?;
                let wal = r.take(len as usize, "WAL data")?;
                ProposerMessage::Append(AppendRequest {
                    term,
                    epoch_start_lsn,
                    begin_lsn,
                    end_lsn,
                    commit_lsn,
                    truncate_lsn,
                    proposer_id,
                    wal_data: Bytes::copy_from_slice(wal),
                })
            }
            other => return Err(ProtoError::UnknownTag(u64::from(other))),
        };
        r.finish()?;
        Ok(msg)
    }

    pub fn write(&self, b: &mut BytesMut) {
        match self {
            ProposerMessage::Greeting(g) => {
                put_tag(b, TAG_GREETING);
                b.put_u32_le(g.protocol_version);
                b.put_u32_le(g.pg_version);
                b.put_slice(&g.proposer_id);
                b.put_u64_le(g.system_id);
                b.put_slice(g.timeline_id.as_array());
                b.put_slice(g.tenant_id.as_array());
                b.put_u32_le(g.tli);
                b.put_u32_le(g.wal_seg_size);
            }
            ProposerMessage::VoteRequest(v) => {
                put_tag(b, TAG_VOTE);
                b.put_u64_le(v.term);
                b.put_slice(&v.proposer_id);
            }
            ProposerMessage::Elected(e) => {
                put_tag(b, TAG_ELECTED);
                b.put_u64_le(e.term);
                b.put_u64_le(e.start_streaming_at.0);
                put_history(b, &e.term_history);
                b.put_u64_le(e.timeline_start_lsn.0);
            }
            ProposerMessage::Append(a) => {
                put_tag(b, TAG_APPEND);
                b.put_u64_le(a.term);
                b.put_u64_le(a.epoch_start_lsn.0);
                b.put_u64_le(a.begin_lsn.0);
                b.put_u64_le(a.end_lsn.0);
                b.put_u64_le(a.commit_lsn.0);
                b.put_u64_le(a.truncate_lsn.0);
                b.put_slice(&a.proposer_id);
                b.put_slice(&a.wal_data);
            }
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.write(&mut b);
        b.freeze()
    }
}

const FEEDBACK_KEYS: [&str; 5] = [
    "current_timeline_size",
    "ps_writelsn",
    "ps_flushlsn",
    "ps_applylsn",
    "ps_replytime",
];

impl PageserverFeedback {
    /// `u8 nkeys`, then per key: the NUL-terminated name, `i32 len` and the
    /// big-endian value (8 bytes for every key defined so far). Unknown keys
    /// are skipped on parse, so either side can add keys.
    pub fn write(&self, b: &mut BytesMut) {
        b.put_u8(FEEDBACK_KEYS.len() as u8);
        let values = [
            self.current_timeline_size,
            self.ps_writelsn.0,
            self.ps_flushlsn.0,
            self.ps_applylsn.0,
            self.ps_replytime as u64,
        ];
        for (k, v) in FEEDBACK_KEYS.iter().zip(values) {
            b.put_slice(k.as_bytes());
            b.put_u8(0);
            b.put_i32(8);
            b.put_u64(v);
        }
    }

    pub fn parse(buf: &[u8]) -> Result<(PageserverFeedback, usize), ProtoError> {
        let invalid = |reason: String| ProtoError::Invalid { tag: 'a', reason };
        let mut pos = 0;
        let n = *buf.first().ok_or(ProtoError::Truncated {
            tag: 'a',
            what: "feedback key count",
            need: 1,
        })?;
        pos += 1;
        let mut f = PageserverFeedback::default();
        for _ in 0..n {
            let nul = buf[pos..]
                .iter()
                .position(|c| *c == 0)
                .ok_or_else(|| invalid("feedback key without its NUL".into()))?;
            let key = &buf[pos..pos + nul];
            pos += nul + 1;
            let len_bytes = buf.get(pos..pos + 4).ok_or(ProtoError::Truncated {
                tag: 'a',
                what: "feedback value length",
                need: 4,
            })?;
            let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            pos += 4;
            let len = usize::try_from(len)
                .map_err(|_| invalid(format!("feedback value length {len}")))?;
            let value = buf.get(pos..pos + len).ok_or(ProtoError::Truncated {
                tag: 'a',
                what: "feedback value",
                need: len,
            })?;
            pos += len;
            let as_u64 = || -> Result<u64, ProtoError> {
                let a: [u8; 8] = value
                    .try_into()
                    .map_err(|_| invalid(format!("feedback value of {len} bytes, expected 8")))?;
                Ok(u64::from_be_bytes(a))
            };
            match key {
                b"current_timeline_size" => f.current_timeline_size = as_u64()?,
                b"ps_writelsn" => f.ps_writelsn = Lsn(as_u64()?),
                b"ps_flushlsn" => f.ps_flushlsn = Lsn(as_u64()?),
                b"ps_applylsn" => f.ps_applylsn = Lsn(as_u64()?),
                b"ps_replytime" => f.ps_replytime = as_u64()? as i64,
                _ => {}
            }
        }
        Ok((f, pos))
    }
}

impl AcceptorMessage {
    pub fn parse(buf: &[u8]) -> Result<AcceptorMessage, ProtoError> {
        let (tag, body) = read_tag(buf)?;
        let mut r = Reader {
            tag: tag as char,
            buf: body,
        };
        let msg = match tag {
            TAG_GREETING => AcceptorMessage::Greeting(AcceptorGreeting {
                term: r.u64("term")?,
                node_id: r.u64("node id")?,
            }),
            TAG_VOTE => {
                let term = r.u64("term")?;
                let vote_given = match r.u64("vote_given")? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(ProtoError::Invalid {
                            tag: 'v',
                            reason: format!("vote_given {v}"),
                        })
                    }
                };
                AcceptorMessage::VoteResponse(VoteResponse {
                    term,
                    vote_given,
                    flush_lsn: r.lsn("flush_lsn")?,
                    truncate_lsn: r.lsn("truncate_lsn")?,
                    term_history: r.term_history()?,
                    timeline_start_lsn: r.lsn("timeline_start_lsn")?,
                })
            }
            TAG_APPEND => {
                let term = r.u64("term")?;
                let flush_lsn = r.lsn("flush_lsn")?;
                let commit_lsn = r.lsn("commit_lsn")?;
                let hs_ts = r.i64("hs_ts")?;
                let hs_xmin = r.u64("hs_xmin")?;
                let hs_catalog_xmin = r.u64("hs_catalog_xmin")?;
                let pageserver_feedback = if r.buf.is_empty() {
                    None
                } else {
                    let (f, used) = PageserverFeedback::parse(r.buf)?;
                    r.buf = &r.buf[used..];
                    Some(f)
                };
                AcceptorMessage::AppendResponse(AppendResponse {
                    term,
                    flush_lsn,
                    commit_lsn,
                    hs_ts,
                    hs_xmin,
                    hs_catalog_xmin,
                    pageserver_feedback,
                })
            }
            other => return Err(ProtoError::UnknownTag(u64::from(other))),
        };
        r.finish()?;
        Ok(msg)
    }

    pub fn write(&self, b: &mut BytesMut) {
        match self {
            AcceptorMessage::Greeting(g) => {
                put_tag(b, TAG_GREETING);
                b.put_u64_le(g.term);
                b.put_u64_le(g.node_id);
            }
            AcceptorMessage::VoteResponse(v) => {
                put_tag(b, TAG_VOTE);
                b.put_u64_le(v.term);
                b.put_u64_le(u64::from(v.vote_given));
                b.put_u64_le(v.flush_lsn.0);
                b.put_u64_le(v.truncate_lsn.0);
                put_history(b, &v.term_history);
                b.put_u64_le(v.timeline_start_lsn.0);
            }
            AcceptorMessage::AppendResponse(a) => {
                put_tag(b, TAG_APPEND);
                b.put_u64_le(a.term);
                b.put_u64_le(a.flush_lsn.0);
                b.put_u64_le(a.commit_lsn.0);
                b.put_i64_le(a.hs_ts);
                b.put_u64_le(a.hs_xmin);
                b.put_u64_le(a.hs_catalog_xmin);
                if let Some(f) = &a.pageserver_feedback {
                    f.write(b);
                }
            }
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.write(&mut b);
        b.freeze()
    }
}

#[cfg(test)]
mod tests;
