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
    /// Up to [`PATHS_KEPT`] of the paths written or deleted here.
    pub in_paths: Vec<String>,
    /// Up to [`PATHS_KEPT`] of the paths written or deleted on the peer.
    pub out_paths: Vec<String>,
    /// Who made the versions that arrived here (`@agent on peer`, each once).
    pub in_by: Vec<String>,
    /// The agent that ran the session here (empty for one a peer started).
    pub agent: String,
}

/// How many paths a record keeps per direction.
pub const PATHS_KEPT: usize = 5;

/// The record as written before it named paths and agents; read back with those empty.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct SessionRecordV1 {
    at_ns: i64,
    peer: String,
    direction: String,
    received: u64,
    sent: u64,
    conflicts: u64,
    error: Option<String>,
}

impl From<SessionRecordV1> for SessionRecord {
    fn from(r: SessionRecordV1) -> SessionRecord {
        SessionRecord {
            at_ns: r.at_ns,
            peer: r.peer,
            direction: r.direction,
            received: r.received,
            sent: r.sent,
            conflicts: r.conflicts,
            error: r.error,
            in_paths: Vec::new(),
            out_paths: Vec::new(),
            in_by: Vec::new(),
            agent: String::new(),
        }
    }
}

/// A stored record, in the current form or the first one.
fn decode_record(bytes: &[u8]) -> Result<SessionRecord, String> {
    decode::<SessionRecord>(bytes).or_else(|e| {
        decode::<SessionRecordV1>(bytes)
            .map(SessionRecord::from)
            .map_err(|_| e)
    })
}

impl Store {
    /// Append a session record, dropping the oldest beyond [`SESSIONS_KEPT`].
    pub fn session_append(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let key = format!("{:020}", record.at_ns.max(0));
        self.kv_put(NAMESPACE, &key, &encode("session record", record)?)?;
        self.kv_trim(NAMESPACE, SESSIONS_KEPT)?;
        Ok(())
    }

    /// The newest `limit` session records, newest first.
    pub fn sessions_recent(&self, limit: usize) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .kv_list(NAMESPACE)?
            .into_iter()
            .rev()
            .filter_map(|(k, v)| match decode_record(&v) {
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
                    in_paths: vec!["memory/a.md".into()],
                    out_paths: Vec::new(),
                    in_by: vec!["@milo on beta".into()],
                    agent: "claude".into(),
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

    #[test]
    fn a_record_of_the_first_form_reads_back_without_paths_or_agents() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        let old = SessionRecordV1 {
            at_ns: 7,
            peer: "beta".into(),
            direction: "pull".into(),
            received: 2,
            sent: 0,
            conflicts: 0,
            error: None,
        };
        store
            .kv_put(
                NAMESPACE,
                "00000000000000000007",
                &encode("old", &old).unwrap(),
            )
            .unwrap();
        let read = store.sessions_recent(1).unwrap();
        assert_eq!(read[0].received, 2);
        assert!(read[0].in_paths.is_empty() && read[0].agent.is_empty());
    }
}
