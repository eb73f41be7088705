//! The proposer's decisions, as pure functions: whom to take the WAL from
//! after an election, the elected term history, where each acceptor starts
//! streaming, and the commit LSN. The walproposer in the compute (C) makes
//! the same decisions (docs/walkeeper_protocol.md); the model checker and the
//! Rust test proposer use these.

use zenith_utils::lsn::Lsn;

use crate::proto::{Term, TermHistory, TermSwitch, VoteResponse};

/// The epoch of a voter: the last term of its history starting at or below
/// its flush LSN ([`TermHistory::epoch_at`]).
pub fn epoch(v: &VoteResponse) -> Term {
    v.term_history.epoch_at(v.flush_lsn).unwrap_or(0)
}

/// The index of the voter with the most advanced log: the highest
/// (epoch, flush LSN). `None` for no voters.
pub fn choose_donor(votes: &[VoteResponse]) -> Option<usize> {
    (0..votes.len()).max_by_key(|&i| (epoch(&votes[i]), votes[i].flush_lsn))
}

/// What an election decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Election {
    pub term: Term,
    /// Where the new term's WAL starts: the donor's end of WAL (or the
    /// bootstrap LSN when no voter has any WAL).
    pub epoch_start_lsn: Lsn,
    /// The donor's history up to its WAL end, then (term, epoch_start_lsn).
    pub history: TermHistory,
    /// WAL below this is on every acceptor.
    pub truncate_lsn: Lsn,
    pub timeline_start_lsn: Lsn,
}

/// Decide an election won in `term` with the votes of a quorum.
/// `bootstrap_lsn`: where WAL starts if no voter has any.
pub fn elect(term: Term, votes: &[VoteResponse], bootstrap_lsn: Lsn) -> Option<Election> {
    let donor = &votes[choose_donor(votes)?];
    let truncate_lsn = votes.iter().map(|v| v.truncate_lsn).max().unwrap_or(Lsn(0));
    let timeline_start_lsn = votes
        .iter()
        .map(|v| v.timeline_start_lsn)
        .filter(|l| *l != Lsn(0))
        .min()
        .unwrap_or(bootstrap_lsn);
    let (epoch_start_lsn, mut history) = if donor.flush_lsn == Lsn(0) {
        (bootstrap_lsn, TermHistory::default())
    } else {
        (donor.flush_lsn, donor.term_history.up_to(donor.flush_lsn))
    };
    history.0.push(TermSwitch {
        term,
        lsn: epoch_start_lsn,
    });
    Some(Election {
        term,
        epoch_start_lsn,
        history,
        truncate_lsn,
        timeline_start_lsn,
    })
}

/// Where an acceptor whose log ends at `flush_lsn` with history `theirs`
/// starts receiving the proposer's WAL (history `ours`, own term last):
/// after the last entry both histories share, and not past the acceptor's
/// WAL end nor into a term it does not share.
pub fn start_streaming_at(
    ours: &TermHistory,
    theirs: &TermHistory,
    flush_lsn: Lsn,
    truncate_lsn: Lsn,
) -> Lsn {
    let common = ours
        .0
        .iter()
        .zip(theirs.0.iter())
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 || flush_lsn == Lsn(0) {
        // Nothing shared: all of the proposer's WAL (what every acceptor
        // has, below the truncate LSN, is not resent).
        let first = ours.0.first().map_or(Lsn(0), |s| s.lsn);
        let last = ours.0.last().map_or(first, |s| s.lsn);
        return first.max(truncate_lsn.min(last));
    }
    if common == ours.0.len() {
        // It already follows this term.
        return flush_lsn;
    }
    flush_lsn.min(ours.0[common].lsn)
}

/// The commit LSN given the acceptors' flush LSNs in this term: the highest
/// LSN a quorum has, counting an acceptor still below `epoch_start_lsn` as
/// having nothing (WAL of older terms is committed only through this
/// term's).
pub fn commit_lsn(flush_lsns: &[Lsn], quorum: usize, epoch_start_lsn: Lsn) -> Lsn {
    let mut v: Vec<Lsn> = flush_lsns
        .iter()
        .map(|f| if *f < epoch_start_lsn { Lsn(0) } else { *f })
        .collect();
    if v.len() < quorum || quorum == 0 {
        return Lsn(0);
    }
    v.sort_unstable_by(|a, b| b.cmp(a));
    v[quorum - 1]
}

/// Majority of `n`.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(u64, u64)]) -> TermHistory {
        TermHistory(
            v.iter()
                .map(|&(term, lsn)| TermSwitch {
                    term,
                    lsn: Lsn(lsn),
                })
                .collect(),
        )
    }

    fn vote(flush: u64, hist: &[(u64, u64)]) -> VoteResponse {
        VoteResponse {
            term: 9,
            vote_given: true,
            flush_lsn: Lsn(flush),
            truncate_lsn: Lsn(0),
            term_history: h(hist),
            timeline_start_lsn: Lsn(if flush == 0 { 0 } else { 10 }),
        }
    }

    #[test]
    fn donor_is_the_highest_epoch_then_flush() {
        // A longer log of an older term loses to a shorter log of a newer one.
        let votes = [
            vote(500, &[(1, 10)]),
            vote(300, &[(1, 10), (2, 200)]),
            vote(0, &[]),
        ];
        assert_eq!(choose_donor(&votes), Some(1));
        let e = elect(3, &votes, Lsn(10)).unwrap();
        assert_eq!(e.epoch_start_lsn, Lsn(300));
        assert_eq!(e.history, h(&[(1, 10), (2, 200), (3, 300)]));
        // Bootstrap: nobody has WAL.
        let e = elect(1, &[vote(0, &[]), vote(0, &[])], Lsn(0x1000)).unwrap();
        assert_eq!(e.epoch_start_lsn, Lsn(0x1000));
        assert_eq!(e.history, h(&[(1, 0x1000)]));
    }

    #[test]
    fn streaming_starts_at_the_divergence_point() {
        let ours = h(&[(1, 10), (2, 200), (3, 300)]);
        // Same history up to term 2 but more WAL of term 1 than we have of it:
        // diverges at 200, where term 2 starts.
        assert_eq!(
            start_streaming_at(&ours, &h(&[(1, 10)]), Lsn(500), Lsn(0)),
            Lsn(200)
        );
        // Shares term 2 and is behind: from its end.
        assert_eq!(
            start_streaming_at(&ours, &h(&[(1, 10), (2, 200)]), Lsn(250), Lsn(0)),
            Lsn(250)
        );
        // Already in our term (reconnect): from its end.
        assert_eq!(start_streaming_at(&ours, &ours, Lsn(350), Lsn(0)), Lsn(350));
        // Empty: everything from the first entry.
        assert_eq!(start_streaming_at(&ours, &h(&[]), Lsn(0), Lsn(0)), Lsn(10));
        // A term the proposer never had: from where they diverge.
        assert_eq!(
            start_streaming_at(&ours, &h(&[(1, 10), (4, 220)]), Lsn(260), Lsn(0)),
            Lsn(200)
        );
    }

    #[test]
    fn commit_needs_a_quorum_in_this_term() {
        assert_eq!(
            commit_lsn(&[Lsn(100), Lsn(90), Lsn(80)], 2, Lsn(50)),
            Lsn(90)
        );
        // The second-highest is below the epoch start: nothing new is committed.
        assert_eq!(
            commit_lsn(&[Lsn(100), Lsn(40), Lsn(30)], 2, Lsn(50)),
            Lsn(0)
        );
        assert_eq!(commit_lsn(&[Lsn(100)], 2, Lsn(0)), Lsn(0));
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
    }
}
