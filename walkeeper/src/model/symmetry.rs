//! Symmetry reduction: acceptors are interchangeable, and so are
//! proposers.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use stateright::Representative;

use super::state::{Instance, Phase, State};

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
