//! Exhaustive model check of the consensus protocol (stateright).
//!
//! Acceptors are the daemon's own [`Acceptor`] state machine over an
//! in-memory [`MemStore`](crate::acceptor::mem_store::MemStore); a crash throws away everything but what the
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

mod properties;
mod protocol;
mod state;
mod symmetry;
#[cfg(test)]
mod tests;
mod transitions;
