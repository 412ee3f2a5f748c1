//! The `local` tree (path → [`LocalEntry`]) and the chunk-location index derived from it.
//!
//! Every change to `local` goes through [`Store::commit_local`], which updates the chunk-location
//! index in the same atomic batch over both trees: after a crash either both reflect a
//! commit or neither does. The index answers "where on disk can I read chunk X?"
//! ([`Store::locate_chunk`]), so a renamed or copied file is rebuilt from local bytes instead of
//! being fetched again. Locations describe what the index believes; readers verify the bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::backend::{Order, Span, Tree, Write};
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
        let raw = self.get(Tree::Local, path.as_str().as_bytes(), || {
            format!("reading local entry {path}")
        })?;
        Ok(raw.and_then(|v| self.decode_or_report("local", path.as_str().as_bytes(), &v)))
    }

    /// Every recorded entry, tombstones included, by path. Undecodable records are skipped and
    /// reported.
    pub fn local_all(&self) -> Result<BTreeMap<RelPath, LocalEntry>, StoreError> {
        let mut out = BTreeMap::new();
        self.scan(
            Tree::Local,
            &Span::all(),
            Order::Ascending,
            || "listing local entries".into(),
            |k, v| {
                if let Some(e) = self.decode_or_report::<LocalEntry>("local", k, v) {
                    if e.entry.path.as_str().as_bytes() == k {
                        out.insert(e.entry.path.clone(), e);
                    } else {
                        self.report("local", k, "entry path does not match its key");
                    }
                }
                true
            },
        )?;
        Ok(out)
    }

    /// Apply `changes` atomically to the local tree and the chunk-location index.
    ///
    /// One batch covers both trees; later changes to the same path see earlier ones.
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
            source: super::backend::BackendError::new(crate::error::injected(arg)),
        }));
        let _turn = self.turn();
        // What each path holds as the batch is built: an earlier change of the same path in
        // this commit is what a later one replaces.
        let mut current: HashMap<&[u8], Option<Vec<u8>>> = HashMap::new();
        let mut batch = Vec::new();
        for p in &prepared {
            let key = p.path.as_str().as_bytes();
            let old = match current.get(key) {
                Some(v) => v.clone(),
                None => self.get(Tree::Local, key, || {
                    format!("reading local entry {}", p.path)
                })?,
            };
            let stale: BTreeSet<Vec<u8>> = match old {
                Some(old) => match decode::<LocalEntry>(&old) {
                    Ok(old) => location_keys(&old.entry).collect(),
                    Err(reason) => {
                        self.report("local", key, reason);
                        BTreeSet::new()
                    }
                },
                None => BTreeSet::new(),
            };
            let fresh: BTreeSet<&[u8]> = p.locations.iter().map(|(k, _)| k.as_slice()).collect();
            for k in stale.into_iter().filter(|k| !fresh.contains(k.as_slice())) {
                batch.push(Write::Remove(Tree::Chunks, k));
            }
            for (k, v) in &p.locations {
                batch.push(Write::Put(Tree::Chunks, k.clone(), v.clone()));
            }
            match &p.value {
                Some(v) => batch.push(Write::Put(Tree::Local, key.to_vec(), v.clone())),
                None => batch.push(Write::Remove(Tree::Local, key.to_vec())),
            }
            current.insert(key, p.value.clone());
        }
        self.write(batch, || "committing local changes".into())
    }

    /// Where the chunk `id` can be read from local files, per the index (not verified: the file
    /// may have changed since it was recorded; readers check the bytes' hash). Every location:
    /// a reader that needs one should ask [`Store::find_chunk`], which stops at the first.
    pub fn locate_chunk(&self, id: &Hash) -> Result<Vec<ChunkLocation>, StoreError> {
        let mut out = Vec::new();
        self.find_chunk(id, |loc| {
            out.push(loc.clone());
            None::<()>
        })?;
        Ok(out)
    }

    /// Offer the locations of chunk `id` to `try_one`, in index order, until it returns
    /// something (a location that still holds the bytes). A chunk shared by many files (a
    /// template, an empty line) has as many locations: reading all of them for every file
    /// made an apply of 24,000 identical files quadratic.
    pub fn find_chunk<T>(
        &self,
        id: &Hash,
        mut try_one: impl FnMut(&ChunkLocation) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let mut found = None;
        self.scan(
            Tree::Chunks,
            &Span::prefix(id.as_bytes()),
            Order::Ascending,
            || format!("locating chunk {id}"),
            |k, v| {
                let parsed = codec::parse_chunk_key(k)
                    .and_then(|(path, offset)| Ok((path, offset, decode::<LocationValue>(v)?)));
                match parsed {
                    Ok((path, offset, value)) => {
                        let loc = ChunkLocation {
                            path,
                            offset,
                            len: value.len,
                            content: value.content,
                        };
                        found = try_one(&loc);
                    }
                    Err(reason) => self.report("chunks", k, reason),
                }
                found.is_none()
            },
        )?;
        Ok(found)
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
            let (_tmp, on_disk) = open();
            let in_memory = Store::in_memory();
            for store in [&on_disk, &in_memory] {
                for commit in &commits {
                    store.commit_local(commit.clone()).unwrap();
                }
                let mut expected = BTreeSet::new();
                for e in store.local_all().unwrap().values() {
                    expected.extend(location_keys(&e.entry));
                }
                let actual: BTreeSet<Vec<u8>> =
                    store.rows(Tree::Chunks).into_iter().map(|(k, _)| k).collect();
                prop_assert_eq!(actual, expected);
            }
            prop_assert_eq!(on_disk.rows(Tree::Local), in_memory.rows(Tree::Local));
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
    fn finding_a_chunk_shared_by_many_files_stops_at_the_first_good_location() {
        let (_tmp, store) = open();
        let files: Vec<_> = (0..1000)
            .map(|i| LocalUpdate::Put(entry(&format!("t/{i:04}.md"), &[b"same"])))
            .collect();
        store.commit_local(files).unwrap();
        let mut offered = 0;
        let found = store
            .find_chunk(&Hash::of(b"same"), |loc| {
                offered += 1;
                (loc.path.as_str() == "t/0002.md").then(|| loc.path.clone())
            })
            .unwrap();
        assert_eq!(found.unwrap().as_str(), "t/0002.md");
        assert_eq!(offered, 3, "the locations after the good one are not read");
        assert_eq!(store.locate_chunk(&Hash::of(b"same")).unwrap().len(), 1000);
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
        store.put_raw(Tree::Local, b"bad.md", b"\xff\x00garbage");
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
