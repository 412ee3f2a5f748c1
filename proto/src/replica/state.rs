//! Skill state between peers over any index (issue 14): the records a session sends and the
//! records it takes, checked and merged per key by the engine's store ([`Store::state_take`]).
//! The CLI's replica and the test replica both go through here.

use botsync_engine::PeerId;
use botsync_engine::state::{Patterns, SharedKeys};
use botsync_engine::store::{StateTaken, Store};

use super::{ReplicaError, StateApplied};
use crate::messages::WireState;

/// Our records of the keys shared between our `state_sync` patterns (`ours`) and a peer's
/// (`theirs`).
pub fn state_records(
    store: &Store,
    ours: &[String],
    theirs: &[String],
) -> Result<Vec<WireState>, ReplicaError> {
    let shared = SharedKeys::new(ours, theirs).map_err(ReplicaError::from_display)?;
    if ours.is_empty() || theirs.is_empty() {
        return Ok(Vec::new());
    }
    let all = Patterns::new(ours).map_err(ReplicaError::from_display)?;
    Ok(store
        .state_list(&all)
        .map_err(|e| ReplicaError::from_error(&e))?
        .into_iter()
        .filter(|(k, _)| shared.matches(k))
        .map(|(k, r)| WireState::new(k, r))
        .collect())
}

/// Take `records` from `peer` into the store of replica `me`: keys outside our `state_sync`
/// patterns (`ours`) are ignored, the rest checked and merged per key by the store.
pub fn take_state(
    store: &Store,
    ours: &[String],
    me: PeerId,
    records: Vec<WireState>,
    peer: PeerId,
) -> Result<StateApplied, ReplicaError> {
    let shared = SharedKeys::new(ours, ours).map_err(ReplicaError::from_display)?;
    let mut out = StateApplied::default();
    for wire in records {
        let (key, record) = wire.into_record();
        if !shared.matches(&key) {
            tracing::debug!(peer = %peer, key, "state key outside state_sync ignored");
            continue;
        }
        match store
            .state_take(&key, &record, me)
            .map_err(|e| ReplicaError::from_error(&e))?
        {
            Ok(StateTaken::Unchanged) => {}
            Ok(StateTaken::Changed { conflict }) => {
                if conflict {
                    out.conflicts.push(key.clone());
                }
                out.changed.push(key);
            }
            Err(refusal) => {
                tracing::warn!(peer = %peer, "{refusal}");
                out.refused.push(refusal.to_string());
            }
        }
    }
    Ok(out)
}
