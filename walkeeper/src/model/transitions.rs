//! The model as stateright sees it: the initial state, the actions of a
//! state, and the state an action leads to.

use std::collections::BTreeMap;

use stateright::{Model, Property};

use super::properties;
use super::protocol::{ids, ConsensusModel};
use super::state::{Action, Instance, Phase, State};
use crate::acceptor::mem_store::MemStore;
use crate::acceptor::{Acceptor, AcceptorState};
use crate::proposer::quorum;

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
        properties::properties()
    }
}
