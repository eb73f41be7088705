//! Exhaustive model check of the consensus protocol (stateright).
//!
//! Acceptors are the daemon's own [`Acceptor`] state machine over an
//! in-memory [`MemStore`]; a crash throws away everything but what the
//! store persisted. Proposers follow `proposer.rs`: any proposer may start
//! an election in any higher term (a compute restarting, or a second
//! compute), send VoteRequests, take the WAL of the most advanced voter once
//! a quorum voted for it, send ProposerElected and AppendRequests, add WAL
//! entries, and count a commit when a quorum has flushed. Messages travel
//! encoded with the real codec through a network that may lose and reorder
//! them: any message in flight may be delivered next, and a lost message is
//! one that is never delivered, which the checker explores too (for safety,
//! an explicit drop adds no behaviour, only states). Within one connection
//! TCP neither reorders nor duplicates, so this network allows more than the
//! real one; a proposer that reconnects starts over with a vote request and
//! a fresh ProposerElected, which is what the model's proposers do in a new
//! term.
//!
//! Invariants:
//! - **ElectionSafety**: at most one proposer is elected in a term;
//! - **LogIsMonotonic**: an acceptor's term never goes back, and its term
//!   history ascends;
//! - **LogSafety**: committed WAL never conflicts: every commit extends (or
//!   is a prefix of) every earlier one;
//! - **CommittedNotTruncated**: an acceptor that holds the committed WAL
//!   keeps it, and a proposer elected after the commit has it.

use std::collections::{BTreeMap, BTreeSet};

use stateright::{Model, Property};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::acceptor::{Acceptor, AcceptorState, StoreError, WalStore};
use crate::proposer::{commit_lsn, elect, quorum, start_streaming_at, Election};
use crate::proto::*;

/// WAL in memory; `persisted` is the last control file written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MemStore {
    pub wal_start: u64,
    pub wal: Vec<u8>,
    pub persisted: Option<AcceptorState>,
}

impl WalStore for MemStore {
    fn flush_lsn(&self) -> Lsn {
        if self.wal_start == 0 {
            Lsn(0)
        } else {
            Lsn(self.wal_start + self.wal.len() as u64)
        }
    }

    fn write_wal(&mut self, lsn: Lsn, buf: &[u8]) -> Result<(), StoreError> {
        if lsn != self.flush_lsn() || self.wal_start == 0 {
            return Err(StoreError(format!(
                "write at {lsn}, WAL ends at {}",
                self.flush_lsn()
            )));
        }
        self.wal.extend_from_slice(buf);
        Ok(())
    }

    fn truncate_wal(&mut self, lsn: Lsn) -> Result<(), StoreError> {
        if self.wal_start == 0 || lsn.0 < self.wal_start {
            self.wal_start = lsn.0;
            self.wal.clear();
        } else {
            self.wal.truncate((lsn.0 - self.wal_start) as usize);
        }
        Ok(())
    }

    fn persist(&mut self, state: &AcceptorState) -> Result<(), StoreError> {
        self.persisted = Some(state.clone());
        Ok(())
    }
}

impl MemStore {
    /// The WAL from LSN 1 (the model's start of WAL), if it starts there.
    fn log(&self) -> Option<&[u8]> {
        (self.wal_start == 1 || self.wal_start == 0).then_some(&self.wal[..])
    }
}

const START: Lsn = Lsn(1);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Phase {
    Idle,
    Voting(BTreeMap<usize, VoteResponse>),
    Elected {
        election: Election,
        voters: BTreeMap<usize, VoteResponse>,
        acked: BTreeMap<usize, Lsn>,
        commit: Lsn,
    },
    Deposed,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Proposer {
    term: Term,
    phase: Phase,
    /// Its WAL from LSN 1.
    log: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Envelope {
    to_acceptor: bool,
    proposer: usize,
    acceptor: usize,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    acceptors: Vec<Acceptor<MemStore>>,
    proposers: Vec<Proposer>,
    network: BTreeSet<Envelope>,
    /// Ghost: the WAL each acceptor had when it answered a vote request,
    /// by (proposer, acceptor, term) (what recovery from it reads).
    vote_wal: BTreeMap<(usize, usize, Term), Vec<u8>>,
    /// Ghost: who was elected in each term.
    elected: BTreeMap<Term, BTreeSet<usize>>,
    /// Ghost: the longest committed WAL and the term that committed it.
    committed: Vec<u8>,
    committed_term: Term,
    commit_conflict: bool,
    /// Ghost: acceptors holding `committed`.
    holders: BTreeSet<usize>,
    truncated_committed: bool,
    /// Ghost: the highest term each acceptor has had.
    max_term: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    StartElection { proposer: usize, term: Term },
    Deliver(Envelope),
    Append { proposer: usize },
    Crash { acceptor: usize },
}

/// The model: its bounds, and whether acceptors carry the planted bug.
pub struct ConsensusModel {
    pub acceptors: usize,
    pub proposers: usize,
    pub max_term: Term,
    pub max_entries: usize,
    pub bug_vote_before_persist: bool,
}

fn ids() -> (TenantId, TimelineId) {
    (
        TenantId::from_array([1; 16]),
        TimelineId::from_array([2; 16]),
    )
}

impl ConsensusModel {
    fn send(
        state: &mut State,
        to_acceptor: bool,
        proposer: usize,
        acceptor: usize,
        bytes: Vec<u8>,
    ) {
        state.network.insert(Envelope {
            to_acceptor,
            proposer,
            acceptor,
            bytes,
        });
    }

    fn append_request(p: &Proposer, election: &Election, from: Lsn, commit: Lsn) -> Vec<u8> {
        let begin = from.max(START);
        let end = Lsn(START.0 + p.log.len() as u64);
        let data = p.log[(begin.0 - START.0) as usize..].to_vec();
        ProposerMessage::Append(AppendRequest {
            term: p.term,
            epoch_start_lsn: election.epoch_start_lsn,
            begin_lsn: begin,
            end_lsn: end,
            commit_lsn: commit,
            truncate_lsn: election.truncate_lsn,
            proposer_id: [0; 16],
            wal_data: data.into(),
        })
        .to_bytes()
        .to_vec()
    }

    fn on_vote(&self, s: &mut State, pi: usize, ai: usize, v: VoteResponse) {
        let p = &mut s.proposers[pi];
        if v.term > p.term {
            p.phase = Phase::Deposed;
            return;
        }
        let Phase::Voting(votes) = &mut p.phase else {
            return;
        };
        if v.term != p.term || !v.vote_given {
            return;
        }
        votes.insert(ai, v);
        if votes.len() < quorum(self.acceptors) {
            return;
        }
        let voters = votes.clone();
        let list: Vec<VoteResponse> = voters.values().cloned().collect();
        let Some(election) = elect(p.term, &list, START) else {
            return;
        };
        // Recovery: the donor's WAL as it was when it voted.
        let donor = *voters
            .iter()
            .max_by_key(|(_, v)| (crate::proposer::epoch(v), v.flush_lsn))
            .map(|(a, _)| a)
            .expect("a quorum of voters");
        let Some(wal) = s.vote_wal.get(&(pi, donor, p.term)) else {
            return;
        };
        let want = (election.epoch_start_lsn.0 - START.0) as usize;
        if wal.len() < want {
            return;
        }
        p.log = wal[..want].to_vec();
        s.elected.entry(p.term).or_default().insert(pi);
        if s.committed_term < p.term && !p.log.starts_with(&s.committed) {
            s.truncated_committed = true;
        }
        let mut out = Vec::new();
        for (a, v) in &voters {
            let start = start_streaming_at(
                &election.history,
                &v.term_history,
                v.flush_lsn,
                election.truncate_lsn,
            );
            let elected = ProposerMessage::Elected(ProposerElected {
                term: p.term,
                start_streaming_at: start,
                term_history: election.history.clone(),
                timeline_start_lsn: election.timeline_start_lsn,
            });
            out.push((*a, elected.to_bytes().to_vec()));
            out.push((*a, Self::append_request(p, &election, start, Lsn(0))));
        }
        p.phase = Phase::Elected {
            election,
            voters,
            acked: BTreeMap::new(),
            commit: Lsn(0),
        };
        for (a, b) in out {
            Self::send(s, true, pi, a, b);
        }
    }

    fn on_append_response(&self, s: &mut State, pi: usize, ai: usize, r: AppendResponse) {
        let p = &mut s.proposers[pi];
        if r.term > p.term {
            p.phase = Phase::Deposed;
            return;
        }
        if r.term < p.term {
            // An answer to this proposer's request of an earlier term.
            return;
        }
        let term = p.term;
        let Phase::Elected {
            acked,
            commit,
            election,
            ..
        } = &mut p.phase
        else {
            return;
        };
        let e = acked.entry(ai).or_insert(Lsn(0));
        *e = (*e).max(r.flush_lsn);
        let flushes: Vec<Lsn> = acked.values().copied().collect();
        let c = commit_lsn(&flushes, quorum(self.acceptors), election.epoch_start_lsn);
        *commit = (*commit).max(c);
        let (commit, election) = (*commit, election.clone());
        let committed = p.log[..(commit.0.saturating_sub(START.0)) as usize].to_vec();
        let next = (r.flush_lsn.0 < START.0 + p.log.len() as u64)
            .then(|| Self::append_request(p, &election, r.flush_lsn, commit));
        if committed.len() > s.committed.len() {
            if !committed.starts_with(&s.committed) {
                s.commit_conflict = true;
            }
            s.committed = committed;
            s.committed_term = term;
            s.holders = (0..s.acceptors.len())
                .filter(|a| {
                    s.acceptors[*a]
                        .store
                        .log()
                        .is_some_and(|l| l.starts_with(&s.committed))
                })
                .collect();
        } else if !s.committed.starts_with(&committed) {
            s.commit_conflict = true;
        }
        if let Some(b) = next {
            Self::send(s, true, pi, ai, b);
        }
    }

    /// Whether delivering `e` can still change anything but depose a
    /// proposer. Messages that cannot are removed from the network: for
    /// safety that loses nothing (a deposed proposer only stops, which an
    /// undeposed one may also do), and it keeps stale messages from
    /// multiplying the states.
    fn useful(s: &State, e: &Envelope) -> bool {
        // Every message here starts with its u64 tag and u64 term (read
        // straight from the bytes: this runs for every message of every
        // state); a VoteResponse has `vote_given` next.
        let word =
            |i: usize| u64::from_le_bytes(e.bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let (tag, term) = (word(0) as u8, word(1));
        if e.to_acceptor {
            let acc = s.acceptors[e.acceptor].state.term;
            match tag {
                b'v' => term > acc,
                b'e' | b'a' => term >= acc,
                _ => false,
            }
        } else {
            let p = &s.proposers[e.proposer];
            match tag {
                b'v' => e.bytes[16] == 1 && term == p.term && matches!(p.phase, Phase::Voting(_)),
                b'a' => term == p.term && matches!(p.phase, Phase::Elected { .. }),
                _ => false,
            }
        }
    }

    fn after_step(s: &mut State) {
        let network = std::mem::take(&mut s.network);
        s.network = network.into_iter().filter(|e| Self::useful(s, e)).collect();
        // Ghost WAL at vote time is needed only while its proposer counts
        // votes in that term.
        let proposers = s.proposers.clone();
        s.vote_wal.retain(|(p, _, term), _| {
            proposers[*p].term == *term && matches!(proposers[*p].phase, Phase::Voting(_))
        });
        for (a, acc) in s.acceptors.iter().enumerate() {
            if acc.state.term > s.max_term[a] {
                s.max_term[a] = acc.state.term;
            }
        }
        let lost: Vec<usize> = s
            .holders
            .iter()
            .copied()
            .filter(|a| {
                !s.acceptors[*a]
                    .store
                    .log()
                    .is_some_and(|l| l.starts_with(&s.committed))
            })
            .collect();
        if !lost.is_empty() {
            s.truncated_committed = true;
        }
        for a in 0..s.acceptors.len() {
            if s.acceptors[a]
                .store
                .log()
                .is_some_and(|l| l.starts_with(&s.committed))
            {
                s.holders.insert(a);
            }
        }
    }
}

impl Model for ConsensusModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let (tenant, timeline) = ids();
        let acceptors = (0..self.acceptors)
            .map(|i| {
                let mut st = AcceptorState::new(tenant, timeline);
                st.server.wal_seg_size = 1 << 24;
                let mut a = Acceptor::new(st, MemStore::default(), i as NodeId);
                a.bug_vote_before_persist = self.bug_vote_before_persist;
                let state = a.state.clone();
                a.store.persisted = Some(state);
                a
            })
            .collect();
        vec![State {
            acceptors,
            proposers: vec![
                Proposer {
                    term: 0,
                    phase: Phase::Idle,
                    log: Vec::new()
                };
                self.proposers
            ],
            network: BTreeSet::new(),
            vote_wal: BTreeMap::new(),
            elected: BTreeMap::new(),
            committed: Vec::new(),
            committed_term: 0,
            commit_conflict: false,
            holders: (0..self.acceptors).collect(),
            truncated_committed: false,
            max_term: vec![0; self.acceptors],
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for (pi, p) in s.proposers.iter().enumerate() {
            for term in p.term + 1..=self.max_term {
                actions.push(Action::StartElection { proposer: pi, term });
            }
            if matches!(p.phase, Phase::Elected { .. }) && p.log.len() < self.max_entries {
                actions.push(Action::Append { proposer: pi });
            }
        }
        for e in &s.network {
            actions.push(Action::Deliver(e.clone()));
        }
        for a in 0..s.acceptors.len() {
            if s.acceptors[a].store.persisted.as_ref() != Some(&s.acceptors[a].state) {
                actions.push(Action::Crash { acceptor: a });
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::StartElection { proposer, term } => {
                let p = &mut s.proposers[proposer];
                p.term = term;
                p.phase = Phase::Voting(BTreeMap::new());
                p.log.clear();
                let req = ProposerMessage::VoteRequest(VoteRequest {
                    term,
                    proposer_id: [proposer as u8; 16],
                })
                .to_bytes()
                .to_vec();
                for a in 0..self.acceptors {
                    Self::send(&mut s, true, proposer, a, req.clone());
                }
            }
            Action::Append { proposer } => {
                let p = &mut s.proposers[proposer];
                p.log.push((p.term as u8) << 4 | proposer as u8);
                let Phase::Elected {
                    election,
                    voters,
                    acked,
                    commit,
                } = &p.phase
                else {
                    return None;
                };
                let out: Vec<(usize, Vec<u8>)> = voters
                    .keys()
                    .map(|a| {
                        let from = acked
                            .get(a)
                            .copied()
                            .unwrap_or(Lsn(START.0 + p.log.len() as u64 - 1));
                        (*a, Self::append_request(p, election, from, *commit))
                    })
                    .collect();
                for (a, b) in out {
                    Self::send(&mut s, true, proposer, a, b);
                }
            }
            Action::Crash { acceptor } => {
                let acc = &s.acceptors[acceptor];
                let persisted = acc.store.persisted.clone()?;
                let mut fresh = Acceptor::new(persisted, acc.store.clone(), acc.node_id);
                fresh.bug_vote_before_persist = acc.bug_vote_before_persist;
                s.acceptors[acceptor] = fresh;
            }
            Action::Deliver(e) => {
                if e.to_acceptor {
                    let msg =
                        ProposerMessage::parse(&e.bytes).expect("the model sends valid messages");
                    let acc = &mut s.acceptors[e.acceptor];
                    let reply = acc.process(&msg);
                    if let ProposerMessage::VoteRequest(v) = &msg {
                        // Only the first delivery can grant the vote.
                        let wal = acc.store.log().map(|l| l.to_vec()).unwrap_or_default();
                        s.vote_wal
                            .entry((e.proposer, e.acceptor, v.term))
                            .or_insert(wal);
                    }
                    if let Ok(Some(r)) = reply {
                        Self::send(&mut s, false, e.proposer, e.acceptor, r.to_bytes().to_vec());
                    }
                } else {
                    match AcceptorMessage::parse(&e.bytes).expect("acceptors send valid messages") {
                        AcceptorMessage::VoteResponse(v) => {
                            self.on_vote(&mut s, e.proposer, e.acceptor, v)
                        }
                        AcceptorMessage::AppendResponse(r) => {
                            self.on_append_response(&mut s, e.proposer, e.acceptor, r)
                        }
                        AcceptorMessage::Greeting(_) => {}
                    }
                }
            }
        }
        Self::after_step(&mut s);
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("ElectionSafety", |_, s: &State| {
                s.elected.values().all(|p| p.len() <= 1)
            }),
            Property::always("LogIsMonotonic", |_, s: &State| {
                s.acceptors.iter().enumerate().all(|(a, acc)| {
                    acc.state.term >= s.max_term[a]
                        && acc.state.history().is_well_formed()
                        && acc
                            .state
                            .term_history
                            .last()
                            .is_none_or(|t| t.0 <= acc.state.term)
                })
            }),
            Property::always("LogSafety", |_, s: &State| !s.commit_conflict),
            Property::always("CommittedNotTruncated", |_, s: &State| {
                !s.truncated_committed
            }),
            Property::sometimes("SomethingCommitted", |m: &ConsensusModel, s: &State| {
                s.committed.len() >= m.max_entries.clamp(1, 2)
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stateright::Checker;

    fn model(bug: bool, max_term: Term, max_entries: usize) -> ConsensusModel {
        ConsensusModel {
            acceptors: 3,
            proposers: 2,
            max_term,
            max_entries,
            bug_vote_before_persist: bug,
        }
    }

    /// The bounds: `ZENITH_MODEL_TERMS` (default 2) and
    /// `ZENITH_MODEL_ENTRIES` (default 1); the full bounds are 3 and
    /// 3 (far more states than a test run can afford today).
    fn bounds() -> (Term, usize) {
        let get = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        (
            get("ZENITH_MODEL_TERMS", 2),
            get("ZENITH_MODEL_ENTRIES", 1) as usize,
        )
    }

    #[test]
    fn consensus_invariants_hold_exhaustively() {
        let (terms, entries) = bounds();
        let checker = model(false, terms, entries).checker().spawn_dfs().join();
        println!(
            "model: 2 proposers, 3 acceptors, terms <= {terms}, <= {entries} entries, loss/duplication/reordering, crashes: {} states explored",
            checker.unique_state_count()
        );
        checker.assert_properties();
    }

    #[test]
    fn the_planted_bug_is_caught() {
        // Replying to a vote before persisting the term: after a crash the
        // acceptor votes again in the same term.
        let checker = model(true, 1, 0).checker().spawn_dfs().join();
        let path = checker.discovery("ElectionSafety");
        assert!(
            path.is_some(),
            "the model did not catch a vote that was not persisted"
        );
        println!(
            "planted bug caught: {} states explored",
            checker.unique_state_count()
        );
    }
}
