//! The model check at the design's bounds and at bounds from the
//! environment, and the planted bugs it must catch.

use stateright::{Checker, HasDiscoveries, Model};

use super::protocol::{Bug, ConsensusModel};
use crate::proto::*;

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

/// The bounds of the design: terms <= 3, <= 3 WAL entries (minutes of CPU:
/// `make test-full`).
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
