//! The state of the model (acceptors, each proposer's instances, ghost
//! variables for the invariants) and its actions.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

use zenith_utils::lsn::Lsn;

use crate::acceptor::mem_store::MemStore;
use crate::acceptor::Acceptor;
use crate::proposer::Election;
use crate::proto::*;

pub(super) const START: Lsn = Lsn(1);

/// A vote as the proposer received it, with the voter's WAL at that moment
/// (what recovery from that voter reads).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Vote {
    pub(super) response: VoteResponse,
    pub(super) wal: Vec<u8>,
}

/// An elected proposer's view of its term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Leader {
    pub(super) election: Election,
    /// Where each voter starts receiving this term's WAL.
    pub(super) starts: BTreeMap<usize, Lsn>,
    /// The flush LSN each acceptor acknowledged in this term.
    pub(super) acked: BTreeMap<usize, Lsn>,
    pub(super) commit: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Phase {
    Voting(BTreeMap<usize, Vote>),
    Elected(Leader),
}

/// A proposer in one term. Once the proposer has moved to a later term it
/// acts no more, but the messages it sent may still arrive:
/// what is kept of it is what those messages carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Instance {
    pub(super) term: Term,
    pub(super) phase: Phase,
    /// Its WAL from LSN 1.
    pub(super) log: Vec<u8>,
}

impl Instance {
    /// The proposer has moved to a later term: this one answers nothing.
    pub(super) fn stop(&mut self) {
        match &mut self.phase {
            Phase::Voting(votes) => votes.clear(),
            Phase::Elected(leader) => leader.acked.clear(),
        }
    }

    pub(super) fn end(&self) -> Lsn {
        Lsn(START.0 + self.log.len() as u64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    pub(super) acceptors: Vec<Acceptor<MemStore>>,
    /// Each proposer's instances, one per term it started, oldest first;
    /// only the last one acts.
    pub(super) proposers: Vec<Vec<Instance>>,
    /// Ghost: who was elected in each term.
    pub(super) elected: BTreeMap<Term, BTreeSet<usize>>,
    /// Ghost: the longest committed WAL and the term that committed it.
    pub(super) committed: Vec<u8>,
    pub(super) committed_term: Term,
    pub(super) commit_conflict: bool,
    /// Ghost: acceptors holding `committed`.
    pub(super) holders: BTreeSet<usize>,
    pub(super) truncated_committed: bool,
    /// Ghost: the highest term each acceptor has had.
    pub(super) max_term: Vec<Term>,
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
