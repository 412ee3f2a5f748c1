//! Skill state between peers (issue 14), on a real workspace: the records a session sends and
//! the records it takes (through the store's `state_take`: claims checked, merged per key,
//! losers kept).

use botsync_engine::PeerId;
use botsync_engine::state::{Patterns, SharedKeys};
use botsync_engine::store::StateTaken;
use botsync_engine::workspace::Workspace;
use botsync_proto::messages::WireState;
use botsync_proto::replica::{ReplicaError, StateApplied};

/// Our records of the keys shared with a peer whose `state_sync` is `theirs`.
pub fn records(ws: &Workspace, theirs: &[String]) -> Result<Vec<WireState>, ReplicaError> {
    let ours = &ws.config().state_sync;
    let shared = SharedKeys::new(ours, theirs).map_err(ReplicaError::from_display)?;
    if ours.is_empty() || theirs.is_empty() {
        return Ok(Vec::new());
    }
    let all = Patterns::new(ours).map_err(ReplicaError::from_display)?;
    Ok(ws
        .store()
        .state_list(&all)
        .map_err(|e| ReplicaError::from_error(&e))?
        .into_iter()
        .filter(|(k, _)| shared.matches(k))
        .map(|(k, r)| WireState::new(k, r))
        .collect())
}

/// Take records from `peer`: keys outside our `state_sync` are ignored, the rest checked and
/// merged per key by the store.
pub fn apply(
    ws: &Workspace,
    records: Vec<WireState>,
    peer: PeerId,
) -> Result<StateApplied, ReplicaError> {
    let ours = &ws.config().state_sync;
    let shared = SharedKeys::new(ours, ours).map_err(ReplicaError::from_display)?;
    let me = ws.local().peer;
    let mut out = StateApplied::default();
    for wire in records {
        let (key, record) = wire.into_record();
        if !shared.matches(&key) {
            tracing::debug!(peer = %peer, key, "state key outside state_sync ignored");
            continue;
        }
        match ws
            .store()
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
