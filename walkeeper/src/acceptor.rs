//! The acceptor: a walkeeper's side of the consensus protocol for one
//! timeline, as a state machine over [`ProposerMessage`]s.
//!
//! It does no I/O of its own: WAL and the control file go through a
//! [`WalStore`], so the daemon runs it over segment files and a checksummed
//! control file, and the model checker (`model.rs`) runs the very same code
//! over memory, with crashes that keep only what was persisted.
//!
//! Rules (docs/walkeeper_protocol.md):
//! - a vote is granted only for a term above every term seen, and the new
//!   term is persisted **before** the reply;
//! - ProposerElected truncates the WAL at `start_streaming_at` (never below
//!   the commit LSN) and adopts the proposer's term history, persisted; a
//!   second one for the same term changes nothing;
//! - an AppendRequest of an older term is answered with the current term
//!   (the proposer learns it is deposed); one of a term this acceptor was
//!   not told the election of is refused; otherwise the WAL is written and
//!   made durable before the reply;
//! - `commit_lsn` never passes the acceptor's own flush LSN, and is
//!   persisted lazily (it is only a hint: the proposer recomputes it).

use serde::{Deserialize, Serialize};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::proto::*;

/// What the server is, learnt from the first greeting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pg_version: u32,
    pub system_id: u64,
    pub wal_seg_size: u32,
}

/// The persistent state of one timeline on one walkeeper (the control file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AcceptorState {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// The highest term voted in (or learnt from an election).
    pub term: Term,
    /// The term history of this acceptor's WAL.
    pub term_history: Vec<(Term, Lsn)>,
    pub server: ServerInfo,
    /// The proposer last elected.
    #[serde(with = "hex_id")]
    pub proposer_id: [u8; 16],
    /// Where the timeline's WAL starts.
    pub timeline_start_lsn: Lsn,
    /// Where this walkeeper's WAL starts.
    pub local_start_lsn: Lsn,
    /// Known committed (persisted lazily; may lag).
    pub commit_lsn: Lsn,
    /// WAL below this is on every walkeeper.
    pub peer_horizon_lsn: Lsn,
    /// What the pageserver has made durable (its feedback).
    pub remote_consistent_lsn: Lsn,
}

mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(id))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 16 bytes"))
    }
}

impl AcceptorState {
    pub fn new(tenant_id: TenantId, timeline_id: TimelineId) -> AcceptorState {
        AcceptorState {
            tenant_id,
            timeline_id,
            term: 0,
            term_history: Vec::new(),
            server: ServerInfo::default(),
            proposer_id: [0; 16],
            timeline_start_lsn: Lsn(0),
            local_start_lsn: Lsn(0),
            commit_lsn: Lsn(0),
            peer_horizon_lsn: Lsn(0),
            remote_consistent_lsn: Lsn(0),
        }
    }

    pub fn history(&self) -> TermHistory {
        TermHistory(
            self.term_history
                .iter()
                .map(|(term, lsn)| TermSwitch {
                    term: *term,
                    lsn: *lsn,
                })
                .collect(),
        )
    }
}

/// Durable storage of one timeline's WAL and control file.
pub trait WalStore {
    /// End of the durable WAL (0: no WAL yet).
    fn flush_lsn(&self) -> Lsn;
    /// Append `buf` at `lsn` (= [`flush_lsn`](WalStore::flush_lsn)) and make
    /// it durable before returning.
    fn write_wal(&mut self, lsn: Lsn, buf: &[u8]) -> Result<(), StoreError>;
    /// Drop the WAL at and above `lsn`; on an empty store, make `lsn` the
    /// start of the WAL. Durable before returning.
    fn truncate_wal(&mut self, lsn: Lsn) -> Result<(), StoreError>;
    /// Durably replace the control file with `state`.
    fn persist(&mut self, state: &AcceptorState) -> Result<(), StoreError>;
    /// While on, [`write_wal`](WalStore::write_wal) may leave its bytes
    /// unsynced until [`sync`](WalStore::sync) (one fsync for a batch).
    fn defer_sync(&mut self, _on: bool) {}
    /// Make every byte written so far durable.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> StoreError {
        StoreError(e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    #[error("protocol version {got} is not supported (this walkeeper speaks {PROTOCOL_VERSION})")]
    ProtocolVersion { got: u32 },
    #[error("PostgreSQL version {got} does not match the timeline's {have}")]
    PgVersion { got: u32, have: u32 },
    #[error("greeting for tenant {tenant_id} timeline {timeline_id}, but this connection is for {expected}")]
    WrongTimeline {
        tenant_id: TenantId,
        timeline_id: TimelineId,
        expected: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// One timeline's acceptor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acceptor<S> {
    /// The state in memory (persisted through `store` whenever the rules say).
    pub state: AcceptorState,
    pub store: S,
    pub node_id: NodeId,
    /// The latest pageserver feedback, relayed in AppendResponses.
    pub pageserver_feedback: Option<PageserverFeedback>,
    /// The commit LSN last persisted (the lazy persistence threshold).
    persisted_commit_lsn: Lsn,
    /// For the model checker only: reply to a vote before persisting the
    /// term (a planted bug the model must catch).
    #[cfg(test)]
    pub bug_vote_before_persist: bool,
    /// For the model checker only: let a repeated ProposerElected of the
    /// current term truncate (the bug the model found, planted again).
    #[cfg(test)]
    pub bug_repeated_elected_truncates: bool,
}

impl<S: WalStore> Acceptor<S> {
    pub fn new(state: AcceptorState, store: S, node_id: NodeId) -> Acceptor<S> {
        Acceptor {
            persisted_commit_lsn: state.commit_lsn,
            state,
            store,
            node_id,
            pageserver_feedback: None,
            #[cfg(test)]
            bug_vote_before_persist: false,
            #[cfg(test)]
            bug_repeated_elected_truncates: false,
        }
    }

    pub fn flush_lsn(&self) -> Lsn {
        self.store.flush_lsn()
    }

    /// The term of the WAL at the end of this acceptor's log.
    pub fn epoch(&self) -> Term {
        self.state
            .history()
            .epoch_at(self.store.flush_lsn())
            .unwrap_or(0)
    }

    fn persist(&mut self) -> Result<(), StoreError> {
        self.store.persist(&self.state)?;
        self.persisted_commit_lsn = self.state.commit_lsn;
        Ok(())
    }

    /// Handle one message; the reply, if the message has one.
    pub fn process(
        &mut self,
        msg: &ProposerMessage,
    ) -> Result<Option<AcceptorMessage>, AcceptorError> {
        match msg {
            ProposerMessage::Greeting(g) => self.greeting(g).map(Some),
            ProposerMessage::VoteRequest(v) => self.vote(v).map(Some),
            ProposerMessage::Elected(e) => self.elected(e).map(|()| None),
            ProposerMessage::Append(a) => self.append(a).map(Some),
        }
    }

    /// Handle several messages with one fsync: WAL is written as each
    /// AppendRequest comes and made durable once, before any reply is
    /// returned, so every reply still reports only durable WAL. Stops at the
    /// first error (the replies before it are returned with it).
    pub fn process_batch(
        &mut self,
        msgs: &[ProposerMessage],
    ) -> (Vec<AcceptorMessage>, Option<AcceptorError>) {
        self.store.defer_sync(true);
        let mut replies = Vec::new();
        let mut err = None;
        for m in msgs {
            match self.process(m) {
                Ok(Some(r)) => replies.push(r),
                Ok(None) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        self.store.defer_sync(false);
        if let Err(e) = self.store.sync() {
            return (Vec::new(), Some(e.into()));
        }
        (replies, err)
    }

    fn greeting(&mut self, g: &ProposerGreeting) -> Result<AcceptorMessage, AcceptorError> {
        if g.protocol_version != PROTOCOL_VERSION {
            return Err(AcceptorError::ProtocolVersion {
                got: g.protocol_version,
            });
        }
        if g.tenant_id != self.state.tenant_id || g.timeline_id != self.state.timeline_id {
            return Err(AcceptorError::WrongTimeline {
                tenant_id: g.tenant_id,
                timeline_id: g.timeline_id,
                expected: format!(
                    "tenant {} timeline {}",
                    self.state.tenant_id, self.state.timeline_id
                ),
            });
        }
        let have = self.state.server;
        if have.pg_version != 0 && have.pg_version / 10000 != g.pg_version / 10000 {
            return Err(AcceptorError::PgVersion {
                got: g.pg_version,
                have: have.pg_version,
            });
        }
        if have.wal_seg_size != 0 && have.wal_seg_size != g.wal_seg_size {
            return Err(AcceptorError::Refused(format!(
                "WAL segment size {} does not match the timeline's {}",
                g.wal_seg_size, have.wal_seg_size
            )));
        }
        if !(g.wal_seg_size as usize).is_power_of_two() || g.wal_seg_size < 1 << 20 {
            return Err(AcceptorError::Refused(format!(
                "invalid WAL segment size {}",
                g.wal_seg_size
            )));
        }
        // System id 0: the proposer does not know it (postgres
        // --sync-walkeepers before the compute exists); never adopted.
        if have.system_id != 0
            && g.system_id != 0
            && have.system_id != g.system_id
            && self.flush_lsn() != Lsn(0)
        {
            return Err(AcceptorError::Refused(format!(
                "system id {} does not match the timeline's {}",
                g.system_id, have.system_id
            )));
        }
        let server = ServerInfo {
            pg_version: g.pg_version,
            system_id: if g.system_id == 0 {
                have.system_id
            } else {
                g.system_id
            },
            wal_seg_size: g.wal_seg_size,
        };
        if server != have {
            self.state.server = server;
            self.persist()?;
        }
        Ok(AcceptorMessage::Greeting(AcceptorGreeting {
            term: self.state.term,
            node_id: self.node_id,
        }))
    }

    fn vote(&mut self, v: &VoteRequest) -> Result<AcceptorMessage, AcceptorError> {
        let mut vote_given = false;
        if v.term > self.state.term {
            self.state.term = v.term;
            vote_given = true;
            #[cfg(test)]
            let skip = self.bug_vote_before_persist;
            #[cfg(not(test))]
            let skip = false;
            if !skip {
                // Before the reply: a crash must not let this acceptor vote
                // again in the same term.
                self.persist()?;
            }
        }
        Ok(AcceptorMessage::VoteResponse(VoteResponse {
            term: self.state.term,
            vote_given,
            flush_lsn: self.flush_lsn(),
            truncate_lsn: self.state.peer_horizon_lsn,
            term_history: self.state.history(),
            timeline_start_lsn: self.state.timeline_start_lsn,
        }))
    }

    fn elected(&mut self, e: &ProposerElected) -> Result<(), AcceptorError> {
        if e.term < self.state.term {
            return Err(AcceptorError::Refused(format!(
                "ProposerElected for term {}, but term {} has begun",
                e.term, self.state.term
            )));
        }
        if !e.term_history.is_well_formed() || e.term_history.last_term() != Some(e.term) {
            return Err(AcceptorError::Refused(format!(
                "ProposerElected for term {} with a malformed term history {:?}",
                e.term, e.term_history
            )));
        }
        #[cfg(test)]
        let guard = !self.bug_repeated_elected_truncates;
        #[cfg(not(test))]
        let guard = true;
        if guard && self.state.term_history.last().map(|t| t.0) == Some(e.term) {
            // This term's election is already applied, and every byte of
            // this term's WAL here came from its one proposer: a repeated
            // (duplicated or delayed) ProposerElected must not truncate it.
            // Found by the model checker.
            return Ok(());
        }
        let flush = self.flush_lsn();
        let start = e.start_streaming_at;
        if start < self.state.commit_lsn {
            return Err(AcceptorError::Refused(format!(
                "ProposerElected would truncate committed WAL: start {start} is below commit LSN {}",
                self.state.commit_lsn
            )));
        }
        if flush != Lsn(0) && start > flush {
            return Err(AcceptorError::Refused(format!(
                "ProposerElected starts streaming at {start}, beyond this walkeeper's WAL end {flush}"
            )));
        }
        self.state.term = e.term;
        if flush != start {
            self.store.truncate_wal(start)?;
        }
        self.state.term_history = e.term_history.0.iter().map(|s| (s.term, s.lsn)).collect();
        if self.state.timeline_start_lsn == Lsn(0) {
            self.state.timeline_start_lsn = e.timeline_start_lsn;
        }
        if self.state.local_start_lsn == Lsn(0) {
            self.state.local_start_lsn = start;
        }
        self.persist()?;
        Ok(())
    }

    fn append(&mut self, a: &AppendRequest) -> Result<AcceptorMessage, AcceptorError> {
        if a.term < self.state.term {
            // Deposed: tell the proposer the current term.
            return Ok(self.append_response());
        }
        if a.term > self.state.term || self.state.term_history.last().map(|t| t.0) != Some(a.term) {
            return Err(AcceptorError::Refused(format!(
                "AppendRequest of term {} before ProposerElected",
                a.term
            )));
        }
        let flush = self.flush_lsn();
        if a.begin_lsn > flush {
            return Err(AcceptorError::Refused(format!(
                "AppendRequest at {}, beyond this walkeeper's WAL end {flush}",
                a.begin_lsn
            )));
        }
        if a.end_lsn > flush {
            // Within one term the proposer's WAL only grows: the part
            // below `flush` is what this acceptor already has.
            let skip = (flush.0 - a.begin_lsn.0) as usize;
            self.store.write_wal(flush, &a.wal_data[skip..])?;
        }
        let flush = self.flush_lsn();
        self.state.commit_lsn = self.state.commit_lsn.max(a.commit_lsn.min(flush));
        self.state.peer_horizon_lsn = self.state.peer_horizon_lsn.max(a.truncate_lsn);
        self.state.proposer_id = a.proposer_id;
        let seg = u64::from(self.state.server.wal_seg_size.max(1));
        if self.state.commit_lsn.0 >= self.persisted_commit_lsn.0 + seg
            || (self.state.commit_lsn >= a.epoch_start_lsn
                && self.persisted_commit_lsn < a.epoch_start_lsn)
        {
            self.persist()?;
        }
        Ok(self.append_response())
    }

    fn append_response(&self) -> AcceptorMessage {
        AcceptorMessage::AppendResponse(AppendResponse {
            term: self.state.term,
            flush_lsn: self.flush_lsn(),
            commit_lsn: self.state.commit_lsn,
            hs_ts: 0,
            hs_xmin: 0,
            hs_catalog_xmin: 0,
            pageserver_feedback: self.pageserver_feedback,
        })
    }

    /// Persist the planted bug's pending term (model checker only).
    #[cfg(test)]
    pub fn bug_persist_now(&mut self) -> Result<(), StoreError> {
        self.persist()
    }
}

/// An in-memory store for the tests and the model check.
#[cfg(test)]
pub(crate) mod mem_store;
#[cfg(test)]
mod tests;
