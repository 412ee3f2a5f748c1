//! The `local` tree (path → [`LocalEntry`]) and the chunk-location index derived from it.
//!
//! Every change to `local` goes through [`Store::commit_local`], which updates the chunk-location
//! index in the same sled transaction over both trees: after a crash either both reflect a
//! commit or neither does. The index answers "where on disk can I read chunk X?"
//! ([`Store::locate_chunk`]), so a renamed or copied file is rebuilt from local bytes instead of
//! being fetched again. Locations describe what the index believes; readers verify the bytes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::codec::{self, chunk_key, decode, encode};
use super::{Store, StoreError};
use crate::entry::{FileEntry, LocalEntry};
use crate::hash::Hash;
use crate::path::RelPath;

/// One change to the local index.
// Updates are short-lived values handed straight to `commit_local`; boxing the common `Put` case
// would cost an allocation per file for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalUpdate {
    /// Record this entry (a file or a tombstone) as the current version of its path.
    Put(LocalEntry),
    /// Forget the path entirely (no tombstone kept).
    Remove(RelPath),
}

/// Where a chunk's bytes lie in a local file, according to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    /// The file holding the chunk.
    pub path: RelPath,
    /// Byte offset of the chunk in that file.
    pub offset: u64,
    /// Length of the chunk.
    pub len: u32,
    /// The content hash of the file version the location was recorded from.
    pub content: Hash,
}

/// The stored value of a chunk location (the key holds id, path and offset).
#[derive(Serialize, Deserialize)]
struct LocationValue {
    len: u32,
    content: Hash,
}

/// A [`LocalUpdate`] with its keys and values encoded, ready for the transaction.
struct Prepared {
    path: RelPath,
    /// `None` to remove the path.
    value: Option<Vec<u8>>,
    /// Chunk-location keys and values of the new version.
    locations: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Store {
    /// The recorded entry of `path`, if any. An undecodable record reads as absent (and is
    /// reported as corruption): the scanner then records the file afresh.
    pub fn local_get(&self, path: &RelPath) -> Result<Option<LocalEntry>, StoreError> {
        let raw = self
            .local
            .get(path.as_str().as_bytes())
            .map_err(|e| self.db_err(format!("reading local entry {path}"), e))?;
        Ok(raw.and_then(|v| self.decode_or_report("local", path.as_str().as_bytes(), &v)))
    }

    /// Every recorded entry, tombstones included, by path. Undecodable records are skipped and
    /// reported.
    pub fn local_all(&self) -> Result<BTreeMap<RelPath, LocalEntry>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.local.iter() {
            let (k, v) = item.map_err(|e| self.db_err("listing local entries", e))?;
            if let Some(e) = self.decode_or_report::<LocalEntry>("local", &k, &v) {
                if e.entry.path.as_str().as_bytes() == k.as_ref() {
                    out.insert(e.entry.path.clone(), e);
                } else {
                    self.report("local", &k, "entry path does not match its key");
                }
            }
        }
        Ok(out)
    }

    /// Apply `changes` atomically to the local tree and the chunk-location index.
    ///
    /// One sled transaction covers both trees; later changes to the same path see earlier ones.
    pub fn commit_local(
        &self,
        changes: impl IntoIterator<Item = LocalUpdate>,
    ) -> Result<(), StoreError> {
        let prepared = changes
            .into_iter()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;
        if prepared.is_empty() {
            return Ok(());
        }
        // A fault point (tests only): the index's disk fails this commit.
        fail::fail_point!("store::commit", |arg| Err(StoreError::Db {
            path: self.dir.clone(),
            action: "committing local entries".into(),
            source: sled::Error::Io(crate::error::injected(arg)),
        }));
        let result = (&self.local, &self.chunks).transaction(|(local, chunks)| {
            // Old records that failed to decode; collected per attempt (sled may retry).
            let mut corrupt = Vec::new();
            for p in &prepared {
                let key = p.path.as_str().as_bytes();
                let stale: BTreeSet<Vec<u8>> = match local.get(key)? {
                    Some(old) => match decode::<LocalEntry>(&old) {
                        Ok(old) => location_keys(&old.entry).collect(),
                        Err(reason) => {
                            corrupt.push((key.to_vec(), reason));
                            BTreeSet::new()
                        }
                    },
                    None => BTreeSet::new(),
                };
                let fresh: BTreeSet<&[u8]> =
                    p.locations.iter().map(|(k, _)| k.as_slice()).collect();
                for k in stale.iter().filter(|k| !fresh.contains(k.as_slice())) {
                    chunks.remove(k.as_slice())?;
                }
                for (k, v) in &p.locations {
                    chunks.insert(k.as_slice(), v.as_slice())?;
                }
                match &p.value {
                    Some(v) => local.insert(key, v.as_slice())?,
                    None => local.remove(key)?,
                };
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(corrupt)
        });
        match result {
            Ok(corrupt) => {
                for (key, reason) in corrupt {
                    self.report("local", &key, reason);
                }
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(self.db_err("committing local changes", e)),
        }
    }

    /// Where the chunk `id` can be read from local files, per the index (not verified: the file
    /// may have changed since it was recorded; readers check the bytes' hash).
    pub fn locate_chunk(&self, id: &Hash) -> Result<Vec<ChunkLocation>, StoreError> {
        let mut out = Vec::new();
        for item in self.chunks.scan_prefix(id.as_bytes()) {
            let (k, v) = item.map_err(|e| self.db_err(format!("locating chunk {id}"), e))?;
            let parsed = codec::parse_chunk_key(&k)
                .and_then(|(path, offset)| Ok((path, offset, decode::<LocationValue>(&v)?)));
            match parsed {
                Ok((path, offset, value)) => out.push(ChunkLocation {
                    path,
                    offset,
                    len: value.len,
                    content: value.content,
                }),
                Err(reason) => self.report("chunks", &k, reason),
            }
        }
        Ok(out)
    }
}

fn prepare(update: LocalUpdate) -> Result<Prepared, StoreError> {
    match update {
        LocalUpdate::Put(e) => {
            let value = encode("local entry", &e)?;
            let mut locations = Vec::with_capacity(e.entry.chunks.len());
            let mut offset = 0u64;
            if !e.entry.is_tombstone() {
                let content = e.entry.content;
                for c in &e.entry.chunks {
                    let v = encode(
                        "chunk location",
                        &LocationValue {
                            len: c.len,
                            content,
                        },
                    )?;
                    locations.push((chunk_key(&c.id, &e.entry.path, offset), v));
                    offset += u64::from(c.len);
                }
            }
            Ok(Prepared {
                path: e.entry.path,
                value: Some(value),
                locations,
            })
        }
        LocalUpdate::Remove(path) => Ok(Prepared {
            path,
            value: None,
            locations: Vec::new(),
        }),
    }
}

/// The chunk-location keys an entry contributes (none for a tombstone).
fn location_keys(entry: &FileEntry) -> impl Iterator<Item = Vec<u8>> + '_ {
    let live = !entry.is_tombstone();
    entry
        .chunks
        .iter()
        .filter(move |_| live)
        .scan(0u64, |offset, c| {
            let at = *offset;
            *offset += u64::from(c.len);
            Some((c.id, at))
        })
        .map(|(id, at)| chunk_key(&id, &entry.path, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EntryKind, Mode, StatSig};
    use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
    use crate::{ChunkRef, ChunkerParams, VersionVector};
    use proptest::prelude::*;

    fn entry(path: &str, chunks: &[&[u8]]) -> LocalEntry {
        let chunks: Vec<ChunkRef> = chunks
            .iter()
            .map(|b| ChunkRef {
                id: Hash::of(b),
                len: b.len() as u32,
            })
            .collect();
        LocalEntry {
            entry: FileEntry {
                path: RelPath::new(path).unwrap(),
                kind: EntryKind::File,
                size: chunks.iter().map(|c| u64::from(c.len)).sum(),
                mtime_ns: 0,
                mode: Mode::default(),
                content: crate::chunktree::content_hash(&chunks),
                chunks,
                chunker: ChunkerParams::DEFAULT,
                version: VersionVector::new(),
                parent: None,
                changed_by: Attribution {
                    peer: PeerId([1; 32]),
                    agent: AgentLabel::default(),
                    machine: MachineName::default(),
                },
            },
            stat: Some(StatSig {
                size: 0,
                mtime_ns: 0,
                ctime_ns: 0,
                ino: 1,
                dev: 1,
            }),
            recorded_at_ns: 0,
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        (tmp, store)
    }

    /// A random change to one of a few paths, built from a few chunk contents.
    fn update() -> impl Strategy<Value = LocalUpdate> {
        let path = prop::sample::select(vec!["a.md", "b.md", "m/c.md"]);
        let parts = proptest::collection::vec(prop::sample::select(vec!["x", "y", "zz"]), 0..4);
        (path, parts, 0u8..4).prop_map(|(path, parts, kind)| {
            let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            let mut e = entry(path, &bytes);
            match kind {
                0 => LocalUpdate::Remove(e.entry.path),
                1 => {
                    e.entry.kind = EntryKind::Tombstone;
                    LocalUpdate::Put(e)
                }
                _ => LocalUpdate::Put(e),
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Whatever the sequence of commits, the chunk-location index holds exactly the
        /// locations of the recorded live files.
        #[test]
        fn locations_always_match_local_entries(
            commits in proptest::collection::vec(proptest::collection::vec(update(), 1..4), 1..8),
        ) {
            let (_tmp, store) = open();
            for commit in commits {
                store.commit_local(commit).unwrap();
            }
            let mut expected = BTreeSet::new();
            for e in store.local_all().unwrap().values() {
                expected.extend(location_keys(&e.entry));
            }
            let actual: BTreeSet<Vec<u8>> =
                store.chunks.iter().keys().map(|k| k.unwrap().to_vec()).collect();
            prop_assert_eq!(actual, expected);
        }
    }

    #[test]
    fn locations_follow_puts_and_removes() {
        let (_tmp, store) = open();
        let a = entry("a.md", &[b"one", b"two"]);
        store.commit_local([LocalUpdate::Put(a.clone())]).unwrap();
        let locs = store.locate_chunk(&Hash::of(b"two")).unwrap();
        assert_eq!(locs.len(), 1);
        assert_eq!(
            (locs[0].path.as_str(), locs[0].offset, locs[0].len),
            ("a.md", 3, 3)
        );
        assert_eq!(locs[0].content, a.entry.content);

        // Replace a.md's content: the old chunk's location disappears, the new one appears.
        store
            .commit_local([LocalUpdate::Put(entry("a.md", &[b"one", b"three"]))])
            .unwrap();
        assert!(store.locate_chunk(&Hash::of(b"two")).unwrap().is_empty());
        assert_eq!(store.locate_chunk(&Hash::of(b"three")).unwrap().len(), 1);

        store
            .commit_local([LocalUpdate::Remove(RelPath::new("a.md").unwrap())])
            .unwrap();
        assert!(store.locate_chunk(&Hash::of(b"one")).unwrap().is_empty());
        assert!(store.local_all().unwrap().is_empty());
    }

    #[test]
    fn a_shared_chunk_is_located_in_every_file() {
        let (_tmp, store) = open();
        store
            .commit_local([
                LocalUpdate::Put(entry("a.md", &[b"same"])),
                LocalUpdate::Put(entry("b/c.md", &[b"x", b"same"])),
            ])
            .unwrap();
        let mut paths: Vec<_> = store
            .locate_chunk(&Hash::of(b"same"))
            .unwrap()
            .into_iter()
            .map(|l| (l.path.as_str().to_owned(), l.offset))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![("a.md".to_owned(), 0), ("b/c.md".to_owned(), 1)]
        );
    }

    #[test]
    fn a_tombstone_has_no_locations() {
        let (_tmp, store) = open();
        store
            .commit_local([LocalUpdate::Put(entry("a.md", &[b"one"]))])
            .unwrap();
        let mut gone = entry("a.md", &[]);
        gone.entry.kind = EntryKind::Tombstone;
        gone.stat = None;
        store
            .commit_local([LocalUpdate::Put(gone.clone())])
            .unwrap();
        assert!(store.locate_chunk(&Hash::of(b"one")).unwrap().is_empty());
        assert_eq!(store.local_get(&gone.entry.path).unwrap(), Some(gone));
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_reported() {
        let (_tmp, store) = open();
        store
            .commit_local([LocalUpdate::Put(entry("good.md", &[b"g"]))])
            .unwrap();
        store
            .local
            .insert("bad.md", &b"\xff\x00garbage"[..])
            .unwrap();
        let all = store.local_all().unwrap();
        assert_eq!(
            all.keys().map(RelPath::as_str).collect::<Vec<_>>(),
            vec!["good.md"]
        );
        let bad = RelPath::new("bad.md").unwrap();
        assert_eq!(store.local_get(&bad).unwrap(), None);
        let reports = store.take_corruption();
        assert_eq!(reports.len(), 2);
        assert!(
            reports
                .iter()
                .all(|r| r.tree == "local" && r.key == "bad.md")
        );
        // Overwriting the corrupt record works and is reported once more (its old locations
        // could not be read).
        store
            .commit_local([LocalUpdate::Put(entry("bad.md", &[b"b"]))])
            .unwrap();
        assert_eq!(store.take_corruption().len(), 1);
        assert!(store.local_get(&bad).unwrap().is_some());
    }
}
