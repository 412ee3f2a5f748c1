//! The lock table's Raft storage: the log and the vote kept durable in the index (the engine's
//! `store::RaftLog`, sled), and the state machine (the engine's pure `LockTable`) with its
//! snapshot. Entries, votes and snapshots are stored as JSON.

// openraft's error types are large by design and its traits fix them as return types.
#![allow(clippy::result_large_err)]
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use botsync_engine::locks::{Answer, LockTable};
use botsync_engine::store::RaftLog;
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use botsync_proto::coordination::rpc::{self, LockRaft, NodeId};

type StorageResult<T> = Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

/// The Raft log and vote, in the index.
#[derive(Debug, Clone)]
pub struct LogStore {
    log: RaftLog,
}

impl LogStore {
    /// The log kept in `log`.
    pub fn new(log: RaftLog) -> LogStore {
        LogStore { log }
    }

    fn value<T: for<'de> Deserialize<'de>>(&self, name: &str) -> StorageResult<Option<T>> {
        let Some(bytes) = self.log.value(name).map_err(read_err)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(read_err)
    }

    fn set_value<T: Serialize>(&self, name: &str, value: &T) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        self.log.set_value(name, &bytes).map_err(write_err)
    }
}

impl RaftLogReader<LockRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<LockRaft>>> {
        self.log
            .range(range)
            .map_err(read_err)?
            .into_iter()
            .map(|(_, bytes)| serde_json::from_slice(&bytes).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<LockRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<LockRaft>> {
        let last_purged: Option<LogId<NodeId>> = self.value("purged")?;
        let last = match self.log.last().map_err(read_err)? {
            Some((_, bytes)) => {
                let e: Entry<LockRaft> = serde_json::from_slice(&bytes).map_err(read_err)?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.set_value("vote", vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.value("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.set_value("committed", &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.value::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<LockRaft>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<LockRaft>> + Send,
        I::IntoIter: Send,
    {
        let rows: Result<Vec<(u64, Vec<u8>)>, _> = entries
            .into_iter()
            .map(|e| serde_json::to_vec(&e).map(|b| (e.log_id.index, b)))
            .collect();
        let result = rows
            .map_err(std::io::Error::other)
            .and_then(|rows| self.log.append(rows).map_err(std::io::Error::other));
        let failed = result.as_ref().err().map(|e| write_err(e.to_string()));
        callback.log_io_completed(result);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.log.truncate_from(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.set_value("purged", &Some(log_id))?;
        self.log.purge_to(log_id.index).map_err(write_err)
    }
}

/// What a snapshot holds besides its metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    table: LockTable,
}

/// A snapshot as kept in the index.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The lock table as Raft applies it; shared with the daemon, which reads it for `lock status`.
#[derive(Debug, Clone)]
pub struct StateMachine {
    state: Arc<Mutex<Stored>>,
    log: RaftLog,
}

impl StateMachine {
    /// The state machine, starting from the snapshot kept in `log` (if any).
    pub fn new(log: RaftLog) -> Result<StateMachine, String> {
        let mut state = Stored::default();
        if let Some(bytes) = log.value("snapshot").map_err(|e| e.to_string())? {
            let snap: StoredSnapshot = serde_json::from_slice(&bytes)
                .map_err(|e| format!("reading the lock snapshot: {e}"))?;
            state.table = serde_json::from_slice(&snap.data)
                .map_err(|e| format!("reading the lock snapshot: {e}"))?;
            state.last_applied = snap.meta.last_log_id;
            state.membership = snap.meta.last_membership;
        }
        Ok(StateMachine {
            state: Arc::new(Mutex::new(state)),
            log,
        })
    }

    /// A copy of the table as applied so far.
    pub fn table(&self) -> LockTable {
        self.lock().table.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        // Every update below is a plain assignment: a poisoned lock holds a consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<LockRaft> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<LockRaft>> {
        let (data, last_applied, membership) = {
            let st = self.lock();
            let data = serde_json::to_vec(&st.table).map_err(write_err)?;
            (data, st.last_applied, st.membership.clone())
        };
        let snapshot_id = last_applied.map_or_else(
            || "empty".to_owned(),
            |l| format!("{}-{}", l.leader_id, l.index),
        );
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(write_err)?;
        self.log.set_value("snapshot", &bytes).map_err(write_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<LockRaft> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        let st = self.lock();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Answer>>
    where
        I: IntoIterator<Item = Entry<LockRaft>> + Send,
        I::IntoIter: Send,
    {
        let mut st = self.lock();
        let mut out = Vec::new();
        for e in entries {
            st.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Normal(cmd) => st.table.apply(&cmd),
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(e.log_id), m);
                    Answer::Invalid("a membership change, not a command".into())
                }
                EntryPayload::Blank => Answer::Invalid("a blank entry, not a command".into()),
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let table: LockTable = rpc::decode_table(&data).map_err(read_err)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let bytes = serde_json::to_vec(&stored).map_err(write_err)?;
        self.log.set_value("snapshot", &bytes).map_err(write_err)?;
        let mut st = self.lock();
        st.table = table;
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<LockRaft>>> {
        let Some(bytes) = self.log.value("snapshot").map_err(read_err)? else {
            return Ok(None);
        };
        let snap: StoredSnapshot = serde_json::from_slice(&bytes).map_err(read_err)?;
        Ok(Some(Snapshot {
            meta: snap.meta,
            snapshot: Box::new(Cursor::new(snap.data)),
        }))
    }
}

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::read_logs(AnyError::error(e.to_string())),
    }
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write_logs(AnyError::error(e.to_string())),
    }
}
