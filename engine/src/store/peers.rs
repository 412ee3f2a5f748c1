//! The `peers` and `peer_meta` trees: what we last knew each peer had.
//!
//! `peers` maps (peer id, path) to the [`FileEntry`] the peer last advertised, so a later sync
//! knows what changed on either side since. `peer_meta` holds one [`PeerMeta`] per peer. Both are
//! caches: losing them costs one full comparison with the peer, never data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::backend::{Order, Span, Tree, Write};
use super::codec::{self, encode, peer_key};
use super::{Store, StoreError};
use crate::entry::FileEntry;
use crate::hash::Hash;
use crate::path::RelPath;
use crate::peer::PeerId;

/// Entries of a peer recorded per index write by [`Store::peer_put_many`].
const PEER_ENTRIES_PER_WRITE: usize = 512;

/// Per-peer facts kept between syncs. New fields must have defaults so old records decode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerMeta {
    /// When the last complete sync with the peer finished (ns since the epoch).
    pub last_sync_ns: Option<i64>,
    /// The peer's workspace Merkle root as seen at that sync.
    pub merkle_root: Option<Hash>,
    /// Our own Merkle root at that sync.
    pub local_root: Option<Hash>,
}

impl Store {
    /// Record what `peer` has at `entry.path`.
    pub fn peer_put(&self, peer: &PeerId, entry: &FileEntry) -> Result<(), StoreError> {
        self.peer_put_many(peer, std::slice::from_ref(entry))
    }

    /// Record several entries of `peer`, 512 to an index write. A cache,
    /// so not one atomic batch: a crash between two writes leaves some entries of the older
    /// session, which costs a comparison, never data. (One batch of a session that settled
    /// 10^6 files held gigabytes in sled at once: the initiator peaked at 14.5 GiB.)
    pub fn peer_put_many<'a>(
        &self,
        peer: &PeerId,
        entries: impl IntoIterator<Item = &'a FileEntry>,
    ) -> Result<(), StoreError> {
        let mut batch = Vec::with_capacity(PEER_ENTRIES_PER_WRITE);
        for e in entries {
            batch.push(Write::Put(
                Tree::Peers,
                peer_key(&peer.0, &e.path),
                encode("peer entry", e)?,
            ));
            if batch.len() == PEER_ENTRIES_PER_WRITE {
                let full =
                    std::mem::replace(&mut batch, Vec::with_capacity(PEER_ENTRIES_PER_WRITE));
                self.write_now(full, || format!("recording entries of peer {peer}"))?;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.write_now(batch, || format!("recording entries of peer {peer}"))
    }

    /// What `peer` had at `path`, if known.
    pub fn peer_get(&self, peer: &PeerId, path: &RelPath) -> Result<Option<FileEntry>, StoreError> {
        let key = peer_key(&peer.0, path);
        let raw = self.get(Tree::Peers, &key, || {
            format!("reading {path} of peer {peer}")
        })?;
        Ok(raw.and_then(|v| self.decode_or_report("peers", &key, &v)))
    }

    /// Everything known about `peer`, by path. Undecodable records are skipped and reported.
    pub fn peer_all(&self, peer: &PeerId) -> Result<BTreeMap<RelPath, FileEntry>, StoreError> {
        let mut out = BTreeMap::new();
        self.scan(
            Tree::Peers,
            &Span::prefix(&peer.0),
            Order::Ascending,
            || format!("listing peer {peer}"),
            |k, v| {
                let Some(entry) = self.decode_or_report::<FileEntry>("peers", k, v) else {
                    return true;
                };
                match codec::parse_path(&k[32..]) {
                    Ok(path) if path == entry.path => {
                        out.insert(path, entry);
                    }
                    _ => self.report("peers", k, "entry path does not match its key"),
                }
                true
            },
        )?;
        Ok(out)
    }

    /// Forget one path of `peer`.
    pub fn peer_remove(&self, peer: &PeerId, path: &RelPath) -> Result<(), StoreError> {
        self.write_now(
            vec![Write::Remove(Tree::Peers, peer_key(&peer.0, path))],
            || format!("forgetting {path} of peer {peer}"),
        )
    }

    /// Forget everything about `peer` (entries and metadata), e.g. when it is removed.
    pub fn peer_forget(&self, peer: &PeerId) -> Result<(), StoreError> {
        let _turn = self.turn();
        let mut batch = vec![Write::Remove(Tree::PeerMeta, peer.0.to_vec())];
        self.scan(
            Tree::Peers,
            &Span::prefix(&peer.0),
            Order::Ascending,
            || format!("listing peer {peer}"),
            |k, _| {
                batch.push(Write::Remove(Tree::Peers, k.to_vec()));
                true
            },
        )?;
        self.write(batch, || format!("forgetting peer {peer}"))
    }

    /// The recorded facts about `peer` (defaults if none, or if the record is corrupt).
    pub fn peer_meta_get(&self, peer: &PeerId) -> Result<PeerMeta, StoreError> {
        let raw = self.get(Tree::PeerMeta, &peer.0, || {
            format!("reading metadata of peer {peer}")
        })?;
        Ok(raw
            .and_then(|v| self.decode_or_report("peer_meta", &peer.0, &v))
            .unwrap_or_default())
    }

    /// Record facts about `peer`.
    pub fn peer_meta_put(&self, peer: &PeerId, meta: &PeerMeta) -> Result<(), StoreError> {
        let value = encode("peer metadata", meta)?;
        self.write_now(
            vec![Write::Put(Tree::PeerMeta, peer.0.to_vec(), value)],
            || format!("writing metadata of peer {peer}"),
        )
    }

    /// Every peer with recorded metadata.
    pub fn peer_meta_all(&self) -> Result<BTreeMap<PeerId, PeerMeta>, StoreError> {
        let mut out = BTreeMap::new();
        self.scan(
            Tree::PeerMeta,
            &Span::all(),
            Order::Ascending,
            || "listing peer metadata".into(),
            |k, v| {
                let Ok(id) = <[u8; 32]>::try_from(k) else {
                    self.report("peer_meta", k, "key is not a peer id");
                    return true;
                };
                if let Some(meta) = self.decode_or_report("peer_meta", k, v) {
                    out.insert(PeerId(id), meta);
                }
                true
            },
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EntryKind, Mode};
    use crate::peer::{AgentLabel, Attribution, MachineName};
    use crate::{ChunkerParams, VersionVector};

    fn tombstone(path: &str, by: PeerId) -> FileEntry {
        let mut version = VersionVector::new();
        version.increment(by).unwrap();
        FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::Tombstone,
            size: 0,
            mtime_ns: 0,
            mode: Mode::default(),
            content: Hash::ZERO,
            chunks: Vec::new(),
            chunker: ChunkerParams::DEFAULT,
            version,
            parent: None,
            changed_by: Attribution {
                peer: by,
                agent: AgentLabel::new("x"),
                machine: MachineName::default(),
            },
        }
    }

    #[test]
    fn peers_are_kept_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        let (p, q) = (PeerId([1; 32]), PeerId([2; 32]));
        let a = tombstone("a.md", p);
        store
            .peer_put_many(&p, [&a, &tombstone("b/c.md", p)])
            .unwrap();
        store.peer_put(&q, &tombstone("a.md", q)).unwrap();
        assert_eq!(store.peer_get(&p, &a.path).unwrap(), Some(a.clone()));
        assert_eq!(store.peer_all(&p).unwrap().len(), 2);
        assert_eq!(store.peer_all(&q).unwrap().len(), 1);

        let meta = PeerMeta {
            last_sync_ns: Some(5),
            merkle_root: Some(Hash::of(b"r")),
            local_root: None,
        };
        store.peer_meta_put(&p, &meta).unwrap();
        assert_eq!(store.peer_meta_get(&p).unwrap(), meta);
        assert_eq!(store.peer_meta_get(&q).unwrap(), PeerMeta::default());

        store.peer_remove(&p, &a.path).unwrap();
        assert_eq!(store.peer_get(&p, &a.path).unwrap(), None);
        store.peer_forget(&p).unwrap();
        assert!(store.peer_all(&p).unwrap().is_empty());
        assert!(store.peer_meta_all().unwrap().is_empty());
        assert_eq!(store.peer_all(&q).unwrap().len(), 1);
    }

    #[test]
    fn a_session_larger_than_one_write_is_recorded_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        let p = PeerId([1; 32]);
        let n = 2 * PEER_ENTRIES_PER_WRITE + 7;
        let entries: Vec<FileEntry> = (0..n)
            .map(|i| tombstone(&format!("memory/n{i:05}.md"), p))
            .collect();
        store.peer_put_many(&p, &entries).unwrap();
        let all = store.peer_all(&p).unwrap();
        assert_eq!(all.len(), n);
        assert!(entries.iter().all(|e| all.get(&e.path) == Some(e)));
        store.peer_put_many(&p, &[]).unwrap();
        assert_eq!(store.peer_all(&p).unwrap().len(), n);
    }
}
