//! What the model checks: the invariants of the module documentation, and
//! that something gets committed at all.

use stateright::Property;

use super::protocol::ConsensusModel;
use super::state::State;

/// ElectionSafety, LogIsMonotonic, LogSafety and CommittedNotTruncated
/// always; SomethingCommitted at least once.
pub(super) fn properties() -> Vec<Property<ConsensusModel>> {
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
