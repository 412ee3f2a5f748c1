//! The sync log: one [`SessionRecord`] per session (peer, direction, counts), for
//! `botsync history`. Kept in the `kv` tree under the `sessions` namespace, keyed by the time
//! (zero-padded, so key order is time order), and bounded to the newest [`SESSIONS_KEPT`].

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::{Store, StoreError};

const NAMESPACE: &str = "sessions";

/// How many session records are kept; older ones are dropped as new ones arrive.
pub const SESSIONS_KEPT: usize = 1000;

/// One finished (or failed) session with a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// When it ended (ns since the epoch).
    pub at_ns: i64,
    /// The peer's local name.
    pub peer: String,
    /// `sync`, `push` or `pull`.
    pub direction: String,
    /// Files written or deleted here.
    pub received: u64,
    /// Files written or deleted on the peer.
    pub sent: u64,
    /// Conflicts reported (both directions).
    pub conflicts: u64,
    /// The one-line error, if the session failed.
    pub error: Option<String>,
}

impl Store {
    /// Append a session record, dropping the oldest beyond [`SESSIONS_KEPT`].
    pub fn session_append(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let key = format!("{:020}", record.at_ns.max(0));
        self.kv_put(NAMESPACE, &key, &encode("session record", record)?)?;
        let all = self.kv_list(NAMESPACE)?;
        for (old, _) in all.iter().take(all.len().saturating_sub(SESSIONS_KEPT)) {
            self.kv_del(NAMESPACE, old)?;
        }
        Ok(())
    }

    /// The newest `limit` session records, newest first.
    pub fn sessions_recent(&self, limit: usize) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .kv_list(NAMESPACE)?
            .into_iter()
            .rev()
            .filter_map(|(k, v)| match decode::<SessionRecord>(&v) {
                Ok(r) => Some(r),
                Err(reason) => {
                    self.report("kv", k.as_bytes(), &reason);
                    None
                }
            })
            .take(limit)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_newest_first_and_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        for at in 0..(SESSIONS_KEPT as i64 + 3) {
            store
                .session_append(&SessionRecord {
                    at_ns: at,
                    peer: "beta".into(),
                    direction: "sync".into(),
                    received: 1,
                    sent: 0,
                    conflicts: 0,
                    error: None,
                })
                .unwrap();
        }
        let recent = store.sessions_recent(2).unwrap();
        assert_eq!(
            recent.iter().map(|r| r.at_ns).collect::<Vec<_>>(),
            vec![SESSIONS_KEPT as i64 + 2, SESSIONS_KEPT as i64 + 1]
        );
        assert_eq!(
            store.sessions_recent(usize::MAX).unwrap().len(),
            SESSIONS_KEPT
        );
    }
}
