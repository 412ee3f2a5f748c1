//! Bringing an index of an older schema up to [`SCHEMA_VERSION`] in place, so that an upgrade
//! keeps what only the index knows (version vectors, history, local versions, what each peer
//! had) instead of moving it aside and rescanning.
//!
//! Schema 3 → 4: an [`Attribution`] carries the machine's name and a [`HistoryRecord`] the name
//! of the machine its version came from. Records written by schema 3 decode with the types
//! below (the fields as they were) and are rewritten with the name empty, which `history` and
//! `conflicts` show as the author's peer name or short id, as they did before.
//!
//! The rewrite goes in atomic batches of [`BATCH`] records, each also recording in `meta` the last
//! key it rewrote, so a process killed mid-way resumes after that key and never decodes a
//! rewritten record as an old one. The schema number changes only once every tree is done. A
//! record that does not decode as schema 3 is left as it is: reading it later reports it as
//! corrupt, as any undecodable record is.

use serde::Deserialize;

use super::backend::{Order, Span, Tree, Write};
use super::codec::{self, encode};
use super::{ApplyIntent, HistoryAction, HistoryRecord, SCHEMA_VERSION, Store, StoreError};
use crate::chunk::{ChunkRef, ChunkerParams};
use crate::entry::{EntryKind, FileEntry, LocalEntry, Mode, StatSig};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
use crate::vector::VersionVector;

/// Records rewritten per transaction.
const BATCH: usize = 256;

/// The oldest schema this module brings up to date; older ones are rebuilt from a rescan.
pub(super) const OLDEST_MIGRATED: u32 = 3;

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct AttributionV3 {
    peer: PeerId,
    agent: AgentLabel,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct FileEntryV3 {
    path: RelPath,
    kind: EntryKind,
    size: u64,
    mtime_ns: i64,
    mode: Mode,
    content: Hash,
    chunks: Vec<ChunkRef>,
    chunker: ChunkerParams,
    version: VersionVector,
    parent: Option<Hash>,
    changed_by: AttributionV3,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct LocalEntryV3 {
    entry: FileEntryV3,
    stat: Option<StatSig>,
    recorded_at_ns: i64,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct HistoryRecordV3 {
    at_ns: i64,
    path: RelPath,
    action: HistoryAction,
    from_peer: PeerId,
    agent: AgentLabel,
    old_content: Option<Hash>,
    new_content: Option<Hash>,
    bytes: u64,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct ApplyIntentV3 {
    target: FileEntryV3,
    history: Option<HistoryRecordV3>,
    at_ns: i64,
}

impl From<FileEntryV3> for FileEntry {
    fn from(e: FileEntryV3) -> FileEntry {
        FileEntry {
            path: e.path,
            kind: e.kind,
            size: e.size,
            mtime_ns: e.mtime_ns,
            mode: e.mode,
            content: e.content,
            chunks: e.chunks,
            chunker: e.chunker,
            version: e.version,
            parent: e.parent,
            changed_by: Attribution {
                peer: e.changed_by.peer,
                agent: e.changed_by.agent,
                machine: MachineName::default(),
            },
        }
    }
}

impl From<LocalEntryV3> for LocalEntry {
    fn from(e: LocalEntryV3) -> LocalEntry {
        LocalEntry {
            entry: e.entry.into(),
            stat: e.stat,
            recorded_at_ns: e.recorded_at_ns,
        }
    }
}

impl From<HistoryRecordV3> for HistoryRecord {
    fn from(r: HistoryRecordV3) -> HistoryRecord {
        HistoryRecord {
            at_ns: r.at_ns,
            path: r.path,
            action: r.action,
            from_peer: r.from_peer,
            agent: r.agent,
            machine: MachineName::default(),
            old_content: r.old_content,
            new_content: r.new_content,
            bytes: r.bytes,
        }
    }
}

impl From<ApplyIntentV3> for ApplyIntent {
    fn from(i: ApplyIntentV3) -> ApplyIntent {
        ApplyIntent {
            target: i.target.into(),
            history: i.history.map(HistoryRecord::from),
            at_ns: i.at_ns,
        }
    }
}

/// Decode a whole schema-3 record (no byte left over) and encode it as it is now.
fn rewrite<Old, New>(bytes: &[u8]) -> Option<Result<Vec<u8>, StoreError>>
where
    Old: for<'de> Deserialize<'de> + Into<New>,
    New: serde::Serialize,
{
    let old: Old = codec::decode_exact(bytes).ok()?;
    Some(encode("migrated record", &old.into()))
}

type Rewrite = fn(&[u8]) -> Option<Result<Vec<u8>, StoreError>>;

impl Store {
    /// Bring an index of schema `from` (≥ [`OLDEST_MIGRATED`]) up to [`SCHEMA_VERSION`].
    pub(super) fn migrate(&self, from: u32) -> Result<(), StoreError> {
        if from == 3 {
            let trees: [(Tree, Rewrite); 4] = [
                (Tree::Local, rewrite::<LocalEntryV3, LocalEntry>),
                (Tree::Peers, rewrite::<FileEntryV3, FileEntry>),
                (Tree::History, rewrite::<HistoryRecordV3, HistoryRecord>),
                (Tree::Intents, rewrite::<ApplyIntentV3, ApplyIntent>),
            ];
            for (tree, rewrite) in trees {
                self.migrate_tree(tree, rewrite)?;
            }
        }
        self.write_schema()?;
        let markers = MIGRATED
            .iter()
            .map(|t| Write::Remove(Tree::Meta, marker(t.name())))
            .collect();
        self.write_now(markers, || "clearing a migration marker".into())?;
        tracing::info!(from, to = SCHEMA_VERSION, "index brought up to date");
        Ok(())
    }

    fn migrate_tree(&self, tree: Tree, rewrite: Rewrite) -> Result<(), StoreError> {
        let marker = marker(tree.name());
        let mut after = self.get(Tree::Meta, &marker, || "reading a migration marker".into())?;
        loop {
            let span = match &after {
                Some(k) => Span::after(k),
                None => Span::all(),
            };
            let mut batch = Vec::with_capacity(BATCH + 1);
            let mut last = None;
            let mut seen = 0;
            let mut failed = None;
            self.scan(
                tree,
                &span,
                Order::Ascending,
                || "reading the index to migrate it".into(),
                |k, v| {
                    match rewrite(v) {
                        Some(Ok(new)) => batch.push(Write::Put(tree, k.to_vec(), new)),
                        Some(Err(e)) => {
                            failed = Some(e);
                            return false;
                        }
                        None => {}
                    }
                    last = Some(k.to_vec());
                    seen += 1;
                    seen < BATCH
                },
            )?;
            if let Some(e) = failed {
                return Err(e);
            }
            let Some(last) = last else {
                return Ok(());
            };
            batch.push(Write::Put(Tree::Meta, marker.clone(), last.clone()));
            self.write_now(batch, || {
                "rewriting index records of the older schema".into()
            })?;
            after = Some(last);
        }
    }
}

/// The trees a migration rewrites, each with its resume marker.
const MIGRATED: [Tree; 4] = [Tree::Local, Tree::Peers, Tree::History, Tree::Intents];

fn marker(tree: &str) -> Vec<u8> {
    format!("migrating_{tree}").into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;
    use crate::store::backend::BackendError;
    use crate::store::{LocalUpdate, META_SCHEMA, OpenOutcome};

    const LAPTOP: PeerId = PeerId([7; 32]);

    fn entry(path: &str, machine: &str) -> FileEntry {
        let chunks = vec![ChunkRef {
            id: Hash::of(path.as_bytes()),
            len: 9,
        }];
        FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            size: 9,
            mtime_ns: 1_700_000_000_000_000_000,
            mode: Mode { permissions: 0o600 },
            content: crate::chunktree::content_hash(&chunks),
            chunks,
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::from_pairs([(LAPTOP, 3)]),
            parent: None,
            changed_by: Attribution {
                peer: LAPTOP,
                agent: AgentLabel::new("claude"),
                machine: MachineName::new(machine),
            },
        }
    }

    fn local(path: &str) -> LocalEntry {
        LocalEntry {
            entry: entry(path, "laptop"),
            stat: Some(StatSig {
                size: 9,
                mtime_ns: 1,
                ctime_ns: 2,
                ino: 3,
                dev: 4,
            }),
            recorded_at_ns: 5,
        }
    }

    fn record(path: &str) -> HistoryRecord {
        HistoryRecord {
            at_ns: 9,
            path: RelPath::new(path).unwrap(),
            action: HistoryAction::Modified,
            from_peer: LAPTOP,
            agent: AgentLabel::new("claude"),
            machine: MachineName::new("laptop"),
            old_content: Some(Hash::of(b"old")),
            new_content: Some(Hash::of(b"new")),
            bytes: 9,
        }
    }

    /// What schema 3 knew of `e`.
    fn v3(e: &FileEntry) -> FileEntryV3 {
        FileEntryV3 {
            path: e.path.clone(),
            kind: e.kind,
            size: e.size,
            mtime_ns: e.mtime_ns,
            mode: e.mode,
            content: e.content,
            chunks: e.chunks.clone(),
            chunker: e.chunker,
            version: e.version.clone(),
            parent: e.parent,
            changed_by: AttributionV3 {
                peer: e.changed_by.peer,
                agent: e.changed_by.agent.clone(),
            },
        }
    }

    fn v3_record(r: &HistoryRecord) -> HistoryRecordV3 {
        HistoryRecordV3 {
            at_ns: r.at_ns,
            path: r.path.clone(),
            action: r.action,
            from_peer: r.from_peer,
            agent: r.agent.clone(),
            old_content: r.old_content,
            new_content: r.new_content,
            bytes: r.bytes,
        }
    }

    /// Rewrite every record of `tree` as schema 3 wrote it.
    fn downgrade<T: for<'de> Deserialize<'de>, O: serde::Serialize>(
        store: &Store,
        tree: Tree,
        old: impl Fn(&T) -> O,
    ) {
        for (k, v) in store.rows(tree) {
            let current: T = codec::decode(&v).unwrap();
            store.put_raw(tree, &k, &encode("v3", &old(&current)).unwrap());
        }
    }

    fn without_machine(mut e: FileEntry) -> FileEntry {
        e.changed_by.machine = MachineName::default();
        e
    }

    /// A store of schema 3 holding `paths` in every tree that carries an attribution.
    fn schema_3_store(dir: &std::path::Path, paths: &[&str]) {
        let (store, _) = Store::open(dir).unwrap();
        store
            .commit_local(paths.iter().map(|p| LocalUpdate::Put(local(p))))
            .unwrap();
        for p in paths {
            store.peer_put(&LAPTOP, &entry(p, "laptop")).unwrap();
            store.history_append(&record(p)).unwrap();
        }
        store
            .intents_put(&[ApplyIntent {
                target: entry(paths[0], "laptop"),
                history: Some(record(paths[0])),
                at_ns: 11,
            }])
            .unwrap();
        downgrade(&store, Tree::Local, |e: &LocalEntry| LocalEntryV3 {
            entry: v3(&e.entry),
            stat: e.stat,
            recorded_at_ns: e.recorded_at_ns,
        });
        downgrade(&store, Tree::Peers, v3);
        downgrade(&store, Tree::History, v3_record);
        downgrade(&store, Tree::Intents, |i: &ApplyIntent| ApplyIntentV3 {
            target: v3(&i.target),
            history: i.history.as_ref().map(v3_record),
            at_ns: i.at_ns,
        });
        store.put_raw(Tree::Meta, META_SCHEMA, &3u32.to_be_bytes());
        store.flush().unwrap();
    }

    fn assert_current(store: &Store, paths: &[&str]) {
        for p in paths {
            let path = RelPath::new(p).unwrap();
            let mut want = local(p);
            want.entry = without_machine(want.entry);
            assert_eq!(store.local_get(&path).unwrap(), Some(want), "{p}");
            assert_eq!(
                store.peer_get(&LAPTOP, &path).unwrap(),
                Some(without_machine(entry(p, "")))
            );
            let history = store.history_for(&path, 10).unwrap();
            assert_eq!(history.len(), 1, "{p}");
            assert_eq!(history[0].machine, MachineName::default());
            assert_eq!(history[0].agent, AgentLabel::new("claude"));
        }
        let intents = store.intents().unwrap();
        assert_eq!(intents.len(), 1);
        assert_eq!(intents[0].target, without_machine(entry(paths[0], "")));
        assert!(store.take_corruption().is_empty());
        let schema = store.backend.get(Tree::Meta, META_SCHEMA).unwrap().unwrap();
        assert_eq!(schema.as_slice(), &SCHEMA_VERSION.to_be_bytes()[..]);
        for t in MIGRATED {
            let marker = store.backend.get(Tree::Meta, &marker(t.name())).unwrap();
            assert!(marker.is_none(), "{}", t.name());
        }
    }

    #[test]
    fn an_index_of_schema_3_is_brought_up_to_date_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let paths = ["memory/a.md", "memory/b.md", "notes.md"];
        schema_3_store(&dir, &paths);
        let (store, outcome) = Store::open(&dir).unwrap();
        assert!(matches!(outcome, OpenOutcome::Opened), "{outcome:?}");
        assert_current(&store, &paths);
        assert!(
            !tmp.path().join("db.corrupt-1").exists(),
            "nothing moved aside"
        );
    }

    #[test]
    fn a_migration_killed_half_way_resumes_after_the_last_record_it_rewrote() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let paths = ["a.md", "b.md", "c.md"];
        schema_3_store(&dir, &paths);
        {
            // The first transaction of the local tree committed, then the process died.
            // sled lets go of the lock of the index just closed a moment later: wait for it.
            let opened =
                crate::store::wait_for_lock(crate::store::lock_pauses(), || Store::try_open(&dir));
            let Ok((store, _)) = opened else {
                panic!("the index opens")
            };
            let (first, old) = store.rows(Tree::Local).into_iter().next().unwrap();
            let new = rewrite::<LocalEntryV3, LocalEntry>(&old).unwrap().unwrap();
            store.put_raw(Tree::Local, &first, &new);
            store.put_raw(Tree::Meta, &marker("local"), &first);
            store.flush().unwrap();
        }
        let (store, _) = Store::open(&dir).unwrap();
        assert_current(&store, &paths);
    }

    /// A backend whose disk refuses every batch after the first `allowed`.
    #[derive(Debug)]
    struct FailingDisk {
        inner: crate::store::sled_backend::SledBackend,
        allowed: std::sync::atomic::AtomicUsize,
    }

    impl crate::store::backend::Backend for FailingDisk {
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
            self.inner.get(tree, key)
        }
        fn visit(
            &self,
            tree: Tree,
            span: &Span,
            order: Order,
            f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), BackendError> {
            self.inner.visit(tree, span, order, f)
        }
        fn write(&self, batch: Vec<Write>) -> Result<(), BackendError> {
            use std::sync::atomic::Ordering::SeqCst;
            let left = self.allowed.load(SeqCst);
            if left == 0 {
                return Err(BackendError::new(std::io::Error::from_raw_os_error(28)));
            }
            self.allowed.store(left - 1, SeqCst);
            self.inner.write(batch)
        }
        fn next_id(&self) -> Result<u64, BackendError> {
            self.inner.next_id()
        }
        fn flush(&self) -> Result<(), BackendError> {
            self.inner.flush()
        }
        fn is_empty(&self) -> Result<bool, BackendError> {
            self.inner.is_empty()
        }
    }

    #[test]
    fn a_migration_the_disk_refuses_fails_in_one_line_and_the_next_open_finishes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let paths = ["a.md", "b.md", "c.md"];
        schema_3_store(&dir, &paths);
        {
            let opened = crate::store::wait_for_lock(crate::store::lock_pauses(), || {
                crate::store::sled_backend::SledBackend::open(&dir)
            });
            let Ok((inner, _)) = opened else {
                panic!("the index opens")
            };
            // The first batch (the local tree's records) is written, then the disk is full.
            let disk = FailingDisk {
                inner,
                allowed: std::sync::atomic::AtomicUsize::new(1),
            };
            let store = Store::over(&dir, std::sync::Arc::new(disk));
            let err = store.migrate(3).unwrap_err();
            let line = err.to_string();
            assert!(matches!(err, StoreError::Db { .. }), "{line}");
            assert!(
                line.contains("rewriting index records of the older schema")
                    && line.contains("No space left on device")
                    && !line.contains('\n'),
                "{line}"
            );
        }
        let (store, outcome) = Store::open(&dir).unwrap();
        assert!(matches!(outcome, OpenOutcome::Opened), "{outcome:?}");
        assert_current(&store, &paths);
    }

    #[test]
    fn a_current_record_is_never_read_as_an_old_one() {
        let e = local("memory/a.md");
        let bytes = encode("current", &e).unwrap();
        assert!(rewrite::<LocalEntryV3, LocalEntry>(&bytes).is_none());
        let bytes = encode("current", &record("a.md")).unwrap();
        assert!(rewrite::<HistoryRecordV3, HistoryRecord>(&bytes).is_none());
    }
}
