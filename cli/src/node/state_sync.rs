//! Skill state between peers (issue 14), on a real workspace: the records a session sends, the
//! records it takes (`botsync_proto::replica::take_state`: claims checked, merged per key,
//! losers kept), and [`StateChanges`], the keys changed since the daemon last looked, which drives
//! regeneration.

use std::collections::BTreeSet;
use std::sync::Mutex;

use botsync_engine::PeerId;
use botsync_engine::workspace::Workspace;
use botsync_proto::messages::WireState;
use botsync_proto::replica::{self, ReplicaError, StateApplied};

/// Our records of the keys shared with a peer whose `state_sync` is `theirs`.
pub fn records(ws: &Workspace, theirs: &[String]) -> Result<Vec<WireState>, ReplicaError> {
    replica::state_records(ws.store(), &ws.config().state_sync, theirs)
}

/// Take records from `peer`: keys outside our `state_sync` are ignored, the rest checked and
/// merged per key by the store.
pub fn apply(
    ws: &Workspace,
    records: Vec<WireState>,
    peer: PeerId,
) -> Result<StateApplied, ReplicaError> {
    let ours = &ws.config().state_sync;
    replica::take_state(ws.store(), ours, ws.local().peer, records, peer)
}

/// Skill state keys changed since the daemon last took them: by a `state set|del` served here
/// or by a peer's records. Each change also bumps a counter the daemon waits on.
#[derive(Debug)]
pub struct StateChanges {
    keys: Mutex<Pending>,
    tick: tokio::sync::watch::Sender<u64>,
}

/// The changed keys, and whether any change was made here (not by a peer).
#[derive(Debug, Default)]
pub struct Pending {
    /// The keys.
    pub keys: BTreeSet<String>,
    /// True if a `state set|del` here changed one of them.
    pub local: bool,
}

impl Default for StateChanges {
    fn default() -> StateChanges {
        StateChanges {
            keys: Mutex::new(Pending::default()),
            tick: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl StateChanges {
    /// `keys` changed, here (`local`) or by a peer.
    pub fn note<I: IntoIterator<Item = String>>(&self, keys: I, local: bool) {
        let mut p = self.lock();
        let before = (p.keys.len(), p.local);
        p.keys.extend(keys);
        p.local |= local;
        if (p.keys.len(), p.local) != before {
            self.tick.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The changes since the last call, forgotten here.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }

    /// A receiver woken after every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tick.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A set of names extended whole: a poisoned lock holds no half-made state.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_taken_once_and_wake_the_waiter() {
        let c = StateChanges::default();
        let mut rx = c.subscribe();
        c.note(["memory:a".to_owned(), "memory:b".to_owned()], false);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        c.note(["memory:a".to_owned()], false);
        assert!(
            !rx.has_changed().unwrap(),
            "a key already pending wakes nobody"
        );
        c.note(["memory:a".to_owned()], true);
        assert!(rx.has_changed().unwrap(), "a local change of it does");
        let p = c.take();
        assert_eq!((p.keys.len(), p.local), (2, true));
        assert!(c.take().keys.is_empty());
    }
}
