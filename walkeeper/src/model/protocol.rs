//! The model's bounds and planted bugs, and the protocol steps: what a
//! proposer sends, what an answer does, elections, commits, and what is
//! forgotten after every step.

use std::collections::BTreeMap;

use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::state::{Action, Instance, Leader, Msg, Phase, State, Vote, START};
use crate::acceptor::mem_store::MemStore;
use crate::acceptor::Acceptor;
use crate::proposer::{commit_lsn, elect, epoch, quorum, start_streaming_at};
use crate::proto::*;

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

pub(super) fn ids() -> (TenantId, TimelineId) {
    (
        TenantId::from_array([1; 16]),
        TimelineId::from_array([2; 16]),
    )
}

impl ConsensusModel {
    pub(super) fn plant(&self, a: &mut Acceptor<MemStore>) {
        a.bug_vote_before_persist = self.bug == Some(Bug::VoteBeforePersist);
        a.bug_repeated_elected_truncates = self.bug == Some(Bug::RepeatedElectedTruncates);
    }

    /// The message, encoded with the real codec.
    pub(super) fn encode(
        proposer: usize,
        inst: &Instance,
        acceptor: usize,
        msg: Msg,
    ) -> Option<Vec<u8>> {
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
    pub(super) fn messages(&self, p: usize, inst: &Instance, a: usize, out: &mut Vec<Action>) {
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

    pub(super) fn on_vote(s: &mut State, pi: usize, ai: usize, v: VoteResponse, wal: Vec<u8>) {
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

    pub(super) fn elect(s: &mut State, pi: usize, voters: &[usize]) -> Option<()> {
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

    pub(super) fn on_append_response(
        &self,
        s: &mut State,
        pi: usize,
        ai: usize,
        r: AppendResponse,
    ) {
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
    pub(super) fn deliver(
        &self,
        last: &State,
        pi: usize,
        term: Term,
        ai: usize,
        msg: Msg,
    ) -> Option<State> {
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

    pub(super) fn after_step(&self, s: &mut State) {
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
    pub(super) fn forget_what_cannot_matter(&self, s: &mut State) {
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
