//! Exhaustive model check of the consensus protocol (stateright).
//!
//! Acceptors are the daemon's own [`Acceptor`] state machine over an
//! in-memory [`MemStore`]; a crash throws away everything but what the
//! store persisted. Proposers follow `proposer.rs` and the walproposer: a
//! proposer starts an election in its next term (a compute restarting, or a
//! second compute), is elected by any quorum of the votes it has, takes the
//! WAL of the most advanced of those voters, sends ProposerElected to every
//! acceptor that answered its vote request in its term (also later ones, as
//! the walproposer does after a reconnection), adds WAL entries, and counts
//! a commit when a quorum has flushed.
//!
//! The network is implicit, which keeps the state small enough to check
//! terms <= 3 and 3 WAL entries exhaustively. Every message a proposer sends
//! is a function of its state in the term it sent it in, and that state is
//! kept after the proposer has moved on (an [`Instance`] per term), so:
//! - **reordering and delay**: any message any instance could have sent,
//!   of its current term or an older one, may be delivered in any state;
//! - **duplication**: a message may be delivered any number of times;
//! - **loss**: a message need never be delivered.
//!
//! AppendRequests are summarised by what the acceptor does with them: the
//! WAL end and commit LSN they carry (every request of a term starts at the
//! acceptor's start of streaming; within a term the proposer's WAL only
//! grows, so a request from a later point has the same effect when it is
//! accepted).
//!
//! Answers are delivered at once. What an answer does is add to what its
//! proposer knows (a vote, an acknowledged flush LSN), and knowing more
//! only lets a proposer do more: a lost or late answer leaves it in a state
//! the model also has, with fewer choices. Which votes elect it is a choice
//! of the model (any quorum of those it has), as arrival order makes it in
//! the real system; a commit is counted as soon as a quorum has flushed,
//! which checks the invariants from the earliest point on. A proposer told
//! of a higher term stops in the real system; here it may carry on, which
//! it also does when that answer is lost. This network allows more than TCP
//! does (which neither reorders nor duplicates within a connection), so it
//! loses no real behaviour.
//!
//! Acceptors are interchangeable, and so are proposers: states that differ
//! only by a permutation of acceptors or of proposers are checked once
//! ([`Representative`]). What a proposer keeps that can no longer change
//! anything is dropped after every step
//! ([`ConsensusModel::forget_what_cannot_matter`]): an acceptor whose term
//! is above `t` takes nothing of term `t`, and terms never go back
//! (LogIsMonotonic, checked), so what an instance of term `t` knows of such
//! acceptors goes; flush LSNs below the start of a term's WAL count for
//! nothing; who was elected in a term nobody can still be elected in goes
//! once ElectionSafety has been checked for it. That keeps the bounds of the
//! design, terms <= 3 with 3 WAL entries, to a few million states.
//!
//! Planted bugs ([`Bug`]) show what the invariants catch: a vote answered
//! before it is persisted, a repeated ProposerElected that truncates (the
//! bug this model found in the acceptor), and a proposer committing older
//! terms' WAL by counting replicas (Raft's "figure 8", which needs terms <=
//! 4 to show).
//!
//! Invariants:
//! - **ElectionSafety**: at most one proposer is elected in a term;
//! - **LogIsMonotonic**: an acceptor's term never goes back, and its term
//!   history ascends;
//! - **LogSafety**: committed WAL never conflicts: every commit extends (or
//!   is a prefix of) every earlier one;
//! - **CommittedNotTruncated**: an acceptor that holds the committed WAL
//!   keeps it, and a proposer elected after the commit has it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use stateright::{Model, Property, Representative};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::acceptor::{Acceptor, AcceptorState, StoreError, WalStore};
use crate::proposer::{commit_lsn, elect, epoch, quorum, start_streaming_at, Election};
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

/// A vote as the proposer received it, with the voter's WAL at that moment
/// (what recovery from that voter reads).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Vote {
    response: VoteResponse,
    wal: Vec<u8>,
}

/// An elected proposer's view of its term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Leader {
    election: Election,
    /// Where each voter starts receiving this term's WAL.
    starts: BTreeMap<usize, Lsn>,
    /// The flush LSN each acceptor acknowledged in this term.
    acked: BTreeMap<usize, Lsn>,
    commit: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Phase {
    Voting(BTreeMap<usize, Vote>),
    Elected(Leader),
}

/// A proposer in one term. Once the proposer has moved to a later term it
/// acts no more, but the messages it sent may still arrive:
/// what is kept of it is what those messages carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Instance {
    term: Term,
    phase: Phase,
    /// Its WAL from LSN 1.
    log: Vec<u8>,
}

impl Instance {
    /// The proposer has moved to a later term: this one answers nothing.
    fn stop(&mut self) {
        match &mut self.phase {
            Phase::Voting(votes) => votes.clear(),
            Phase::Elected(leader) => leader.acked.clear(),
        }
    }

    fn end(&self) -> Lsn {
        Lsn(START.0 + self.log.len() as u64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    acceptors: Vec<Acceptor<MemStore>>,
    /// Each proposer's instances, one per term it started, oldest first;
    /// only the last one acts.
    proposers: Vec<Vec<Instance>>,
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

/// A message of `proposer`'s instance in `term` to `acceptor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Msg {
    Vote,
    Elected,
    Append { end: Lsn, commit: Lsn },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    StartElection {
        proposer: usize,
    },
    Append {
        proposer: usize,
    },
    /// Elected by these voters (a quorum of the votes it has).
    Elect {
        proposer: usize,
        voters: Vec<usize>,
    },
    Crash {
        acceptor: usize,
    },
    Deliver {
        proposer: usize,
        term: Term,
        acceptor: usize,
        msg: Msg,
    },
}

/// A bug planted to show that the model finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// An acceptor answers a vote before persisting the term.
    VoteBeforePersist,
    /// A repeated ProposerElected of the acceptor's current term truncates
    /// that term's WAL (the bug this model found in the acceptor).
    RepeatedElectedTruncates,
    /// The proposer counts flush LSNs below the start of its own term's WAL
    /// towards a commit (committing older terms' WAL by counting replicas).
    CommitOldTerms,
}

/// The model: its bounds, and the planted bug if any.
pub struct ConsensusModel {
    pub acceptors: usize,
    pub proposers: usize,
    pub max_term: Term,
    pub max_entries: usize,
    /// Whether AppendRequests carry commit LSNs other than 0 (see
    /// [`ConsensusModel::messages`]).
    pub commit_hints: bool,
    pub bug: Option<Bug>,
}

fn ids() -> (TenantId, TimelineId) {
    (
        TenantId::from_array([1; 16]),
        TimelineId::from_array([2; 16]),
    )
}

impl ConsensusModel {
    fn plant(&self, a: &mut Acceptor<MemStore>) {
        a.bug_vote_before_persist = self.bug == Some(Bug::VoteBeforePersist);
        a.bug_repeated_elected_truncates = self.bug == Some(Bug::RepeatedElectedTruncates);
    }

    /// The message, encoded with the real codec.
    fn encode(proposer: usize, inst: &Instance, acceptor: usize, msg: Msg) -> Option<Vec<u8>> {
        let m = match (msg, &inst.phase) {
            (Msg::Vote, _) => ProposerMessage::VoteRequest(VoteRequest {
                term: inst.term,
                proposer_id: [proposer as u8; 16],
            }),
            (Msg::Elected, Phase::Elected(l)) => ProposerMessage::Elected(ProposerElected {
                term: inst.term,
                start_streaming_at: *l.starts.get(&acceptor)?,
                term_history: l.election.history.clone(),
                timeline_start_lsn: l.election.timeline_start_lsn,
            }),
            (Msg::Append { end, commit }, Phase::Elected(l)) => {
                let begin = *l.starts.get(&acceptor)?;
                if end < begin || end > inst.end() || commit > l.commit.min(end) {
                    return None;
                }
                let data =
                    inst.log[(begin.0 - START.0) as usize..(end.0 - START.0) as usize].to_vec();
                ProposerMessage::Append(AppendRequest {
                    term: inst.term,
                    epoch_start_lsn: l.election.epoch_start_lsn,
                    begin_lsn: begin,
                    end_lsn: end,
                    commit_lsn: commit,
                    truncate_lsn: l.election.truncate_lsn,
                    proposer_id: [0; 16],
                    wal_data: data.into(),
                })
            }
            _ => return None,
        };
        Some(m.to_bytes().to_vec())
    }

    /// Every message `inst` (the last instance of its proposer when `live`)
    /// can have sent to acceptor `a`. None is left out for what the acceptor
    /// is expected to do with it (refuse it, or find nothing new in it):
    /// that is the code under test.
    fn messages(&self, p: usize, inst: &Instance, a: usize, out: &mut Vec<Action>) {
        let mut push = |msg: Msg| {
            out.push(Action::Deliver {
                proposer: p,
                term: inst.term,
                acceptor: a,
                msg,
            })
        };
        push(Msg::Vote);
        let Phase::Elected(l) = &inst.phase else {
            return;
        };
        let Some(&begin) = l.starts.get(&a) else {
            return;
        };
        push(Msg::Elected);
        // Without commit hints every request carries commit LSN 0. That
        // loses no behaviour of the protocol: an acceptor's commit LSN only
        // makes it refuse a ProposerElected that would truncate below it
        // (the same, to everyone else, as that message being lost) and
        // decides when it is persisted along with the rest of the state, and
        // no invariant reads it. It multiplies the states by ten, so the
        // largest bounds run without it.
        for end in begin.0..=inst.end().0 {
            let commits = if self.commit_hints {
                l.commit.0.min(end)
            } else {
                0
            };
            for commit in 0..=commits {
                push(Msg::Append {
                    end: Lsn(end),
                    commit: Lsn(commit),
                });
            }
        }
    }

    fn on_vote(s: &mut State, pi: usize, ai: usize, v: VoteResponse, wal: Vec<u8>) {
        let Some(p) = s.proposers[pi].last_mut() else {
            return;
        };
        if v.term != p.term {
            return;
        }
        match &mut p.phase {
            Phase::Voting(votes) => {
                if v.vote_given {
                    votes.insert(ai, Vote { response: v, wal });
                }
            }
            Phase::Elected(l) => {
                let start = start_streaming_at(
                    &l.election.history,
                    &v.term_history,
                    v.flush_lsn,
                    l.election.truncate_lsn,
                );
                l.starts.entry(ai).or_insert(start.max(START));
            }
        }
    }

    fn elect(s: &mut State, pi: usize, voters: &[usize]) -> Option<()> {
        let p = s.proposers[pi].last_mut()?;
        let Phase::Voting(votes) = &p.phase else {
            return None;
        };
        let chosen: Vec<&Vote> = voters.iter().map(|a| votes.get(a)).collect::<Option<_>>()?;
        let list: Vec<VoteResponse> = chosen.iter().map(|v| v.response.clone()).collect();
        let election = elect(p.term, &list, START)?;
        // Recovery: the donor's WAL as it was when it voted.
        let donor = chosen
            .iter()
            .max_by_key(|v| (epoch(&v.response), v.response.flush_lsn))?;
        let want = (election.epoch_start_lsn.0 - START.0) as usize;
        let log = donor.wal.get(..want)?.to_vec();
        // Every acceptor that voted streams, the chosen ones and any other.
        let starts = votes
            .iter()
            .map(|(a, v)| {
                let start = start_streaming_at(
                    &election.history,
                    &v.response.term_history,
                    v.response.flush_lsn,
                    election.truncate_lsn,
                );
                (*a, start.max(START))
            })
            .collect();
        p.log = log;
        p.phase = Phase::Elected(Leader {
            election,
            starts,
            acked: BTreeMap::new(),
            commit: Lsn(0),
        });
        let term = p.term;
        let has_committed = p.log.starts_with(&s.committed);
        s.elected.entry(term).or_default().insert(pi);
        if s.committed_term < term && !has_committed {
            s.truncated_committed = true;
        }
        Some(())
    }

    fn on_append_response(&self, s: &mut State, pi: usize, ai: usize, r: AppendResponse) {
        let Some(p) = s.proposers[pi].last_mut() else {
            return;
        };
        if r.term != p.term {
            return;
        }
        let term = p.term;
        let Phase::Elected(l) = &mut p.phase else {
            return;
        };
        let e = l.acked.entry(ai).or_insert(Lsn(0));
        *e = (*e).max(r.flush_lsn);
        let flushes: Vec<Lsn> = l.acked.values().copied().collect();
        let epoch_start = if self.bug == Some(Bug::CommitOldTerms) {
            Lsn(0)
        } else {
            l.election.epoch_start_lsn
        };
        let c = commit_lsn(&flushes, quorum(self.acceptors), epoch_start);
        l.commit = l.commit.max(c);
        let committed = p.log[..(l.commit.0.saturating_sub(START.0)) as usize].to_vec();
        if committed.len() > s.committed.len() {
            if !committed.starts_with(&s.committed) {
                s.commit_conflict = true;
            }
            s.committed = committed;
            s.committed_term = term;
            // `after_step` counts who holds the new commit.
            s.holders.clear();
        } else if !s.committed.starts_with(&committed) {
            s.commit_conflict = true;
        }
    }

    /// Deliver a message and its answer; `None` when that changes nothing
    /// (most deliveries: the model offers every message in every state, so
    /// this is checked before the state is copied).
    fn deliver(&self, last: &State, pi: usize, term: Term, ai: usize, msg: Msg) -> Option<State> {
        let insts = &last.proposers[pi];
        let live = insts.last().is_some_and(|i| i.term == term);
        let inst = insts.iter().find(|i| i.term == term)?;
        let bytes = Self::encode(pi, inst, ai, msg)?;
        let msg = ProposerMessage::parse(&bytes).expect("the model sends valid messages");
        let mut acc = last.acceptors[ai].clone();
        let answer = acc.process(&msg);
        // An instance the proposer has left behind hears nothing.
        let answer = match answer {
            Ok(Some(answer)) if live => Some(answer),
            _ => None,
        };
        if answer.is_none() && acc == last.acceptors[ai] {
            return None;
        }
        let wal = acc.store.log().map(|l| l.to_vec()).unwrap_or_default();
        let mut s = last.clone();
        s.acceptors[ai] = acc;
        if let Some(answer) = answer {
            match AcceptorMessage::parse(&answer.to_bytes()).expect("acceptors send valid messages")
            {
                AcceptorMessage::VoteResponse(v) => Self::on_vote(&mut s, pi, ai, v, wal),
                AcceptorMessage::AppendResponse(r) => self.on_append_response(&mut s, pi, ai, r),
                AcceptorMessage::Greeting(_) => {}
            }
        }
        (s != *last).then_some(s)
    }

    fn after_step(&self, s: &mut State) {
        for (a, acc) in s.acceptors.iter().enumerate() {
            if acc.state.term > s.max_term[a] {
                s.max_term[a] = acc.state.term;
            }
        }
        let committed = &s.committed;
        let holds =
            |acc: &Acceptor<MemStore>| acc.store.log().is_some_and(|l| l.starts_with(committed));
        if s.holders.iter().any(|a| !holds(&s.acceptors[*a])) {
            s.truncated_committed = true;
        }
        for a in 0..s.acceptors.len() {
            if holds(&s.acceptors[a]) {
                s.holders.insert(a);
            }
        }
        self.forget_what_cannot_matter(s);
    }

    /// Drop what a proposer keeps that can no longer change anything, so
    /// that states that differ only there are checked once. The lower of an
    /// acceptor's term and its persisted term never goes back (the persisted
    /// term is a copy of an in-memory one, and a crash returns to it; with
    /// the planted VoteBeforePersist the in-memory term can go back, which
    /// is why the lower one is used), and an acceptor
    /// whose term is above `t` ignores every message of term `t` (a
    /// ProposerElected or AppendRequest of an older term is refused or
    /// answered with the newer term, which the proposer ignores; a vote is
    /// not granted). So:
    /// - where an instance of term `t` starts streaming to such an acceptor
    ///   is forgotten (only its ProposerElected and AppendRequests use it);
    /// - an instance the proposer has left, with nobody left to stream to,
    ///   is only its term (its VoteRequest can still be granted), as is one
    ///   still live whose term is below every acceptor's (nothing it sends
    ///   is taken, nothing it hears is of its term: its WAL, flush LSNs and
    ///   commit LSN never count again);
    /// - without commit hints, the commit LSN of an instance left behind
    ///   (only AppendRequests carry it, with hints).
    fn forget_what_cannot_matter(&self, s: &mut State) {
        let floor: Vec<Term> = s
            .acceptors
            .iter()
            .map(|acc| {
                let persisted = acc.store.persisted.as_ref().map_or(0, |p| p.term);
                acc.state.term.min(persisted)
            })
            .collect();
        let min_floor = floor.iter().copied().min().unwrap_or(0);
        // Who was elected in a term nobody can be elected in any more
        // (every proposer has left it, or is elected in it) is checked
        // (ElectionSafety) and forgotten.
        let open = |t: Term| {
            s.proposers.iter().any(|insts| {
                insts.last().is_none_or(|i| {
                    i.term < t || (i.term == t && matches!(i.phase, Phase::Voting(_)))
                })
            })
        };
        let closed: Vec<Term> = s
            .elected
            .iter()
            .filter(|(t, who)| who.len() <= 1 && !open(**t))
            .map(|(t, _)| *t)
            .collect();
        for t in closed {
            s.elected.remove(&t);
        }
        for insts in &mut s.proposers {
            let n = insts.len();
            for (i, inst) in insts.iter_mut().enumerate() {
                let live = i + 1 == n;
                let t = inst.term;
                let Phase::Elected(l) = &mut inst.phase else {
                    continue;
                };
                l.starts.retain(|a, _| floor[*a] <= t);
                // A flush LSN below the start of this term's WAL counts as
                // nothing towards a commit (`commit_lsn`).
                if self.bug != Some(Bug::CommitOldTerms) {
                    let epoch_start = l.election.epoch_start_lsn;
                    l.acked.retain(|_, f| *f >= epoch_start);
                }
                if !live && !self.commit_hints {
                    l.commit = Lsn(0);
                }
                let dead = if live {
                    min_floor > t
                } else {
                    l.starts.is_empty()
                };
                if dead {
                    inst.log.clear();
                    if live {
                        // (`starts` is already empty: every floor is above t.)
                        l.acked.clear();
                        l.commit = Lsn(0);
                    } else {
                        inst.phase = Phase::Voting(BTreeMap::new());
                    }
                }
            }
        }
    }
}

impl Representative for State {
    /// Acceptors sorted by everything the state says about each (their
    /// state, and what proposers and ghosts hold of them), then proposers
    /// sorted by their instances: a permutation of acceptors and one of
    /// proposers, so only states that are such permutations of one another
    /// share a representative. Proposers are interchangeable: a proposer's
    /// index is in no message an acceptor keeps, nor in the WAL (an entry is
    /// its term).
    fn representative(&self) -> Self {
        let n = self.acceptors.len();
        let key = |a: usize| {
            let mut h = DefaultHasher::new();
            self.acceptors[a].hash(&mut h);
            self.max_term[a].hash(&mut h);
            self.holders.contains(&a).hash(&mut h);
            // What the proposers hold of it, in no proposer order.
            let mut of_proposers: Vec<u64> = self
                .proposers
                .iter()
                .map(|insts| {
                    let mut h = DefaultHasher::new();
                    for inst in insts {
                        inst.term.hash(&mut h);
                        match &inst.phase {
                            Phase::Voting(votes) => votes.get(&a).hash(&mut h),
                            Phase::Elected(l) => (l.starts.get(&a), l.acked.get(&a)).hash(&mut h),
                        }
                    }
                    h.finish()
                })
                .collect();
            of_proposers.sort_unstable();
            of_proposers.hash(&mut h);
            h.finish()
        };
        let keys: Vec<u64> = (0..n).map(key).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&a| keys[a]);
        let mut new_index = vec![0; n];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        fn remap<V: Clone>(m: &BTreeMap<usize, V>, to: &[usize]) -> BTreeMap<usize, V> {
            m.iter().map(|(k, v)| (to[*k], v.clone())).collect()
        }
        let mut s = self.clone();
        s.acceptors = order.iter().map(|&a| self.acceptors[a].clone()).collect();
        s.max_term = order.iter().map(|&a| self.max_term[a]).collect();
        s.holders = self.holders.iter().map(|a| new_index[*a]).collect();
        for inst in s.proposers.iter_mut().flatten() {
            match &mut inst.phase {
                Phase::Voting(votes) => *votes = remap(votes, &new_index),
                Phase::Elected(l) => {
                    l.starts = remap(&l.starts, &new_index);
                    l.acked = remap(&l.acked, &new_index);
                }
            }
        }
        // Then the proposers, by their (renumbered) instances.
        let mut porder: Vec<usize> = (0..s.proposers.len()).collect();
        let pkeys: Vec<u64> = s
            .proposers
            .iter()
            .map(|insts| {
                let mut h = DefaultHasher::new();
                insts.hash(&mut h);
                h.finish()
            })
            .collect();
        porder.sort_by_key(|&p| pkeys[p]);
        let mut pnew = vec![0; porder.len()];
        for (new, &old) in porder.iter().enumerate() {
            pnew[old] = new;
        }
        let proposers = std::mem::take(&mut s.proposers);
        let mut slots: Vec<Option<Vec<Instance>>> = proposers.into_iter().map(Some).collect();
        s.proposers = porder
            .iter()
            .map(|&p| slots[p].take().unwrap_or_default())
            .collect();
        for who in s.elected.values_mut() {
            *who = who.iter().map(|p| pnew[*p]).collect();
        }
        s
    }
}

impl Model for ConsensusModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let (tenant, timeline) = ids();
        let acceptors = (0..self.acceptors)
            .map(|_| {
                let mut st = AcceptorState::new(tenant, timeline);
                st.server.wal_seg_size = 1 << 24;
                // One node id for all: acceptors are interchangeable.
                let mut a = Acceptor::new(st, MemStore::default(), 0);
                self.plant(&mut a);
                let state = a.state.clone();
                a.store.persisted = Some(state);
                a
            })
            .collect();
        vec![State {
            acceptors,
            proposers: vec![Vec::new(); self.proposers],
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
        for (pi, insts) in s.proposers.iter().enumerate() {
            let last = insts.last();
            if last.map_or(0, |i| i.term) < self.max_term {
                actions.push(Action::StartElection { proposer: pi });
            }
            match last.map(|i| &i.phase) {
                Some(Phase::Elected(_)) if last.is_some_and(|i| i.log.len() < self.max_entries) => {
                    actions.push(Action::Append { proposer: pi });
                }
                Some(Phase::Voting(votes)) => {
                    // Any quorum of the votes it has (the ones that arrived
                    // first).
                    let have: Vec<usize> = votes.keys().copied().collect();
                    for mask in 0u32..1 << have.len() {
                        if mask.count_ones() as usize == quorum(self.acceptors) {
                            let voters = (0..have.len())
                                .filter(|i| mask & 1 << i != 0)
                                .map(|i| have[i])
                                .collect();
                            actions.push(Action::Elect {
                                proposer: pi,
                                voters,
                            });
                        }
                    }
                }
                _ => {}
            }
            for inst in insts {
                for a in 0..self.acceptors {
                    self.messages(pi, inst, a, actions);
                }
            }
        }
        for a in 0..s.acceptors.len() {
            if s.acceptors[a].store.persisted.as_ref() != Some(&s.acceptors[a].state) {
                actions.push(Action::Crash { acceptor: a });
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = match action {
            Action::Deliver {
                proposer,
                term,
                acceptor,
                msg,
            } => self.deliver(last, proposer, term, acceptor, msg)?,
            _ => last.clone(),
        };
        match action {
            Action::StartElection { proposer } => {
                let insts = &mut s.proposers[proposer];
                let term = insts.last().map_or(0, |i| i.term) + 1;
                if let Some(i) = insts.last_mut() {
                    i.stop();
                }
                insts.push(Instance {
                    term,
                    phase: Phase::Voting(BTreeMap::new()),
                    log: Vec::new(),
                });
            }
            Action::Append { proposer } => {
                // An entry is its term and its position: one proposer
                // writes a term's WAL (ElectionSafety), so the proposer is
                // not in the bytes and proposers are interchangeable; the
                // position makes WAL written at the wrong offset visible.
                let p = s.proposers[proposer].last_mut()?;
                p.log.push((p.term as u8) << 4 | (p.log.len() as u8 & 0xF));
            }
            Action::Elect { proposer, voters } => {
                Self::elect(&mut s, proposer, &voters)?;
            }
            Action::Crash { acceptor } => {
                let acc = &s.acceptors[acceptor];
                let persisted = acc.store.persisted.clone()?;
                let mut fresh = Acceptor::new(persisted, acc.store.clone(), acc.node_id);
                self.plant(&mut fresh);
                s.acceptors[acceptor] = fresh;
            }
            Action::Deliver { .. } => {}
        }
        self.after_step(&mut s);
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
    use stateright::{Checker, HasDiscoveries};

    fn model(
        bug: Option<Bug>,
        max_term: Term,
        max_entries: usize,
        commit_hints: bool,
    ) -> ConsensusModel {
        ConsensusModel {
            acceptors: 3,
            proposers: 2,
            max_term,
            max_entries,
            commit_hints,
            bug,
        }
    }

    fn run(
        bug: Option<(Bug, &'static str)>,
        max_term: Term,
        max_entries: usize,
        commit_hints: bool,
    ) -> (impl Checker<ConsensusModel>, std::time::Duration) {
        let property = bug.map(|(_, p)| p);
        let bug = bug.map(|(b, _)| b);
        let started = std::time::Instant::now();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // With a planted bug, stop once the invariant it must break is.
        let finish = match property {
            Some(p) => HasDiscoveries::AnyOf([p].into_iter().collect()),
            None => HasDiscoveries::All,
        };
        let checker = model(bug, max_term, max_entries, commit_hints)
            .checker()
            .finish_when(finish)
            .symmetry()
            .threads(threads)
            .spawn_dfs()
            .join();
        (checker, started.elapsed())
    }

    fn check(max_term: Term, max_entries: usize, commit_hints: bool) {
        let (checker, took) = run(None, max_term, max_entries, commit_hints);
        println!(
            "model: 2 proposers, 3 acceptors, terms <= {max_term}, <= {max_entries} entries, commit hints {}, loss/duplication/reordering, crashes: {} states explored in {:.0?}",
            if commit_hints { "on" } else { "off" },
            checker.unique_state_count(),
            took
        );
        checker.assert_properties();
    }

    /// What `make test` checks: terms <= 3, <= 2 WAL entries.
    #[test]
    fn three_terms_two_entries() {
        check(3, 2, false);
    }

    /// The bounds of the design: terms <= 3, <= 3 WAL entries (minutes of
    /// CPU: `make test-full`).
    #[test]
    #[ignore = "the design's bounds take minutes: make test-full runs them"]
    fn three_terms_three_entries() {
        check(3, 3, false);
    }

    /// Commit LSNs on AppendRequests, and so crashes that lose a commit LSN
    /// not yet persisted.
    #[test]
    fn two_terms_two_entries_with_commit_hints() {
        check(2, 2, true);
    }

    /// `ZENITH_MODEL_TERMS`, `ZENITH_MODEL_ENTRIES` and
    /// `ZENITH_MODEL_COMMIT_HINTS` (0/1); run with `--ignored`.
    #[test]
    #[ignore = "bounds chosen by hand through the environment (make test-full: the design's, with commit hints)"]
    fn bounds_from_the_environment() {
        let get = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        check(
            get("ZENITH_MODEL_TERMS", 3),
            get("ZENITH_MODEL_ENTRIES", 3) as usize,
            get("ZENITH_MODEL_COMMIT_HINTS", 0) != 0,
        );
    }

    /// The planted bug is found, and breaks the invariant it should.
    fn caught(
        bug: Bug,
        max_term: Term,
        max_entries: usize,
        commit_hints: bool,
        property: &'static str,
    ) {
        let (checker, took) = run(Some((bug, property)), max_term, max_entries, commit_hints);
        assert!(
            checker.discovery(property).is_some(),
            "the model did not catch {bug:?} ({property})"
        );
        println!(
            "planted bug {bug:?} caught ({property} violated): {} states explored in {:.0?}",
            checker.unique_state_count(),
            took
        );
    }

    #[test]
    fn a_vote_answered_before_it_is_persisted_is_caught() {
        // After a crash the acceptor votes again in the same term.
        caught(Bug::VoteBeforePersist, 1, 0, false, "ElectionSafety");
    }

    #[test]
    fn a_repeated_proposer_elected_that_truncates_is_caught() {
        caught(
            Bug::RepeatedElectedTruncates,
            2,
            2,
            false,
            "CommittedNotTruncated",
        );
    }

    #[test]
    fn committing_older_terms_by_counting_replicas_is_caught() {
        caught(Bug::CommitOldTerms, 4, 2, false, "CommittedNotTruncated");
    }
}
