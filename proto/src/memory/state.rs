//! Skill state of a [`super::MemoryReplica`]: keys, their records and the losing values of
//! conflicts, in memory, merged by the engine's own rules ([`botsync_engine::state_merge`]) so
//! proto's session tests exercise the state phase as a workspace would.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use botsync_engine::PeerId;
use botsync_engine::state::{SharedKeys, StateRecord};
use botsync_engine::state_merge::{self, StateMerge};

use crate::messages::WireState;
use crate::replica::{ReplicaError, StateApplied};

/// The state store of one in-memory replica.
#[derive(Debug, Default)]
pub(super) struct MemoryState(Mutex<Inner>);

#[derive(Debug, Default)]
struct Inner {
    patterns: Vec<String>,
    records: BTreeMap<String, StateRecord>,
    /// Losing values of conflicts, in the order they lost.
    losers: Vec<(String, StateRecord)>,
    clock: i64,
}

impl MemoryState {
    pub(super) fn set_patterns(&self, patterns: &[&str]) {
        self.lock().patterns = patterns.iter().map(|p| (*p).to_owned()).collect();
    }

    /// A local write (`None`: a delete) by `peer`.
    pub(super) fn write(&self, key: &str, value: Option<&[u8]>, peer: PeerId) {
        let mut st = self.lock();
        st.clock += 1_000;
        let at = st.clock;
        let prev = st.records.get(key);
        // As the store: a write whose counter cannot advance is not recorded.
        if let Ok(rec) = StateRecord::next(
            prev,
            value.unwrap_or_default().to_vec(),
            value.is_none(),
            peer,
            "memory",
            at,
        ) {
            st.records.insert(key.to_owned(), rec);
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<StateRecord> {
        self.lock().records.get(key).cloned()
    }

    pub(super) fn losers(&self) -> Vec<(String, StateRecord)> {
        self.lock().losers.clone()
    }

    pub(super) fn patterns(&self) -> Vec<String> {
        self.lock().patterns.clone()
    }

    pub(super) fn records(&self, theirs: &[String]) -> Result<Vec<WireState>, ReplicaError> {
        let st = self.lock();
        let shared = SharedKeys::new(&st.patterns, theirs).map_err(ReplicaError::from_display)?;
        Ok(st
            .records
            .iter()
            .filter(|(k, _)| shared.matches(k))
            .map(|(k, r)| WireState::new(k.clone(), r.clone()))
            .collect())
    }

    pub(super) fn apply(
        &self,
        records: Vec<WireState>,
        receiver: PeerId,
    ) -> Result<StateApplied, ReplicaError> {
        let mut st = self.lock();
        let shared =
            SharedKeys::new(&st.patterns, &st.patterns).map_err(ReplicaError::from_display)?;
        let mut out = StateApplied::default();
        for wire in records {
            let (key, remote) = wire.into_record();
            if !shared.matches(&key) {
                continue;
            }
            let local = st.records.get(&key);
            if let Err(refusal) = state_merge::check_claims(&key, local, &remote, receiver) {
                out.refused.push(refusal.to_string());
                continue;
            }
            match state_merge::merge(local, &remote) {
                StateMerge::Keep => {}
                StateMerge::Store { record, loser } => {
                    if let Some(loser) = loser {
                        out.conflicts.push(key.clone());
                        st.losers.push((key.clone(), *loser));
                    }
                    st.records.insert(key.clone(), record);
                    out.changed.push(key);
                }
            }
        }
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain maps replaced entry by entry: a poisoned lock holds no half-made record.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
