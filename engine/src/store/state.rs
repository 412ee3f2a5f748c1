//! Skill state rows ([`crate::state`]) in the `kv` tree under the namespace `state`: one
//! [`StateRecord`] per key, postcard-encoded. Writes are compare-and-swap loops, so concurrent
//! writers in one process never lose an increment of a key's version vector.

use std::path::Path;

use super::backend::{Tree, Write};
use super::codec::{SEP, decode, encode};
use super::sled_backend::SledBackend;
use super::{Store, StoreError};
use crate::peer::PeerId;
use crate::state::{CONFLICT_NAMESPACE, NAMESPACE, Patterns, StateRecord};
use crate::state_merge::{self, StateMerge, StateRefusal};

/// What taking a peer's version of a key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateTaken {
    /// Nothing changed here: ours was as new or newer.
    Unchanged,
    /// The key's record here changed.
    Changed {
        /// True if a concurrent write lost and its value was kept for review.
        conflict: bool,
    },
}

impl Store {
    /// The record of `key` (a tombstone too); `None` if it was never set.
    pub fn state_get(&self, key: &str) -> Result<Option<StateRecord>, StoreError> {
        let Some(bytes) = self.kv_get(NAMESPACE, key)? else {
            return Ok(None);
        };
        match decode::<StateRecord>(&bytes) {
            Ok(r) => Ok(Some(r)),
            Err(reason) => {
                self.report("kv", key.as_bytes(), reason);
                Ok(None)
            }
        }
    }

    /// Write `key` (a value, or a tombstone with `deleted`) as `peer`/`agent` at `at_ns`; the
    /// key's version vector advances. Returns the new record.
    pub fn state_write(
        &self,
        key: &str,
        value: Vec<u8>,
        deleted: bool,
        peer: PeerId,
        agent: &str,
        at_ns: i64,
    ) -> Result<StateRecord, StoreError> {
        loop {
            let old = self.kv_get(NAMESPACE, key)?;
            let prev = old.as_deref().and_then(|b| decode::<StateRecord>(b).ok());
            let rec = StateRecord::next(prev.as_ref(), value.clone(), deleted, peer, agent, at_ns)
                .map_err(|source| StoreError::StateCounter {
                    key: key.to_owned(),
                    source,
                })?;
            let new = encode("state record", &rec)?;
            if self
                .kv_compare_and_swap(NAMESPACE, key, old.as_deref(), Some(&new))?
                .is_ok()
            {
                return Ok(rec);
            }
        }
    }

    /// Every record whose key matches `patterns`, in key order (tombstones too).
    pub fn state_list(
        &self,
        patterns: &Patterns,
    ) -> Result<Vec<(String, StateRecord)>, StoreError> {
        let mut out = Vec::new();
        for (key, bytes) in self.kv_list(NAMESPACE)? {
            if !patterns.matches(&key) {
                continue;
            }
            match decode::<StateRecord>(&bytes) {
                Ok(r) => out.push((key, r)),
                Err(reason) => self.report("kv", key.as_bytes(), reason),
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Take a peer's version `remote` of `key` as the peer `receiver` (this one): check its
    /// claims ([`state_merge::check_claims`]), merge it with ours ([`state_merge::merge`]) and
    /// keep a losing value for review. The outer error is the store's; the inner one a refused
    /// version, of which nothing is stored.
    pub fn state_take(
        &self,
        key: &str,
        remote: &StateRecord,
        receiver: PeerId,
    ) -> Result<Result<StateTaken, StateRefusal>, StoreError> {
        loop {
            let old = self.kv_get(NAMESPACE, key)?;
            let local = old.as_deref().and_then(|b| decode::<StateRecord>(b).ok());
            if let Err(refusal) = state_merge::check_claims(key, local.as_ref(), remote, receiver) {
                return Ok(Err(refusal));
            }
            let (record, loser) = match state_merge::merge(local.as_ref(), remote) {
                StateMerge::Keep => return Ok(Ok(StateTaken::Unchanged)),
                StateMerge::Store { record, loser } => (record, loser),
            };
            let new = encode("state record", &record)?;
            if self
                .kv_compare_and_swap(NAMESPACE, key, old.as_deref(), Some(&new))?
                .is_err()
            {
                continue;
            }
            if let Some(loser) = &loser {
                let bytes = encode("state conflict", loser)?;
                self.kv_put(CONFLICT_NAMESPACE, &conflict_id(key, loser), &bytes)?;
            }
            return Ok(Ok(StateTaken::Changed {
                conflict: loser.is_some(),
            }));
        }
    }

    /// The losing values of state conflicts whose key matches `patterns`, as (key, record), in
    /// key order.
    pub fn state_conflicts(
        &self,
        patterns: &Patterns,
    ) -> Result<Vec<(String, StateRecord)>, StoreError> {
        let mut out = Vec::new();
        for (id, bytes) in self.kv_list(CONFLICT_NAMESPACE)? {
            let key = id.split(' ').next().unwrap_or_default().to_owned();
            if !patterns.matches(&key) {
                continue;
            }
            match decode::<StateRecord>(&bytes) {
                Ok(r) => out.push((key, r)),
                Err(reason) => self.report("kv", id.as_bytes(), reason),
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Forget the kept losing values of `key` (its conflicts are resolved); returns them, oldest
    /// first.
    pub fn state_drop_conflicts(&self, key: &str) -> Result<Vec<StateRecord>, StoreError> {
        let mut out = Vec::new();
        for (id, bytes) in self.kv_list(CONFLICT_NAMESPACE)? {
            if id.split(' ').next() != Some(key) {
                continue;
            }
            if let Ok(r) = decode::<StateRecord>(&bytes) {
                out.push(r);
            }
            self.kv_del(CONFLICT_NAMESPACE, &id)?;
        }
        out.sort_by_key(|r| r.at_ns);
        Ok(out)
    }
}

/// The row id of a kept losing value: the key, its author and its time (keys hold no spaces),
/// so each losing write is kept once however often it arrives.
fn conflict_id(key: &str, loser: &StateRecord) -> String {
    format!("{key} {} {}", loser.peer.to_copy_safe(), loser.at_ns)
}

impl Store {
    /// Copy the state rows of the index moved aside at `aside` (by a rebuild) into this one,
    /// keeping rows already here: the index is a cache, but state is not. Returns how many rows
    /// were copied; an aside index sled cannot open yields none (its rows stay in `aside`).
    pub(super) fn salvage_state(&self, aside: &Path) -> usize {
        let mut n = 0;
        for ns in [NAMESPACE, CONFLICT_NAMESPACE] {
            let mut prefix = ns.as_bytes().to_vec();
            prefix.push(SEP);
            let rows = match SledBackend::read_aside(aside, Tree::Kv, &prefix) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(aside = %aside.display(), error = %e, "could not copy skill state from the old index");
                    return n;
                }
            };
            for (k, v) in rows {
                let _turn = self.turn();
                match self.get(Tree::Kv, &k, || "copying skill state".into()) {
                    Ok(None) => {
                        if self
                            .write(vec![Write::Put(Tree::Kv, k, v)], || {
                                "copying skill state".into()
                            })
                            .is_ok()
                        {
                            n += 1;
                        }
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not copy skill state from the old index");
                        return n;
                    }
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_list_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        let p = PeerId([7; 32]);
        store
            .state_write("memory:a", b"1".to_vec(), false, p, "bot", 1)
            .unwrap();
        store
            .state_write("memory:b", b"2".to_vec(), false, p, "bot", 2)
            .unwrap();
        store
            .state_write("notes:c", b"3".to_vec(), false, p, "", 3)
            .unwrap();
        let r = store
            .state_write("memory:a", b"11".to_vec(), false, p, "bot", 4)
            .unwrap();
        assert_eq!(r.vector().counter(&p), 2);
        assert_eq!(store.state_get("memory:a").unwrap().unwrap().value, b"11");
        let mem = store
            .state_list(&Patterns::new(&["memory:*"]).unwrap())
            .unwrap();
        let keys: Vec<&str> = mem.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["memory:a", "memory:b"]);
        store
            .state_write("memory:b", Vec::new(), true, p, "bot", 5)
            .unwrap();
        assert!(store.state_get("memory:b").unwrap().unwrap().deleted);
        assert_eq!(store.state_get("nope").unwrap(), None);
    }

    #[test]
    fn a_concurrent_version_from_a_peer_converges_and_keeps_the_loser() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        let (me, them) = (PeerId([7; 32]), PeerId([8; 32]));
        store
            .state_write("memory:a", b"mine".to_vec(), false, me, "bot", 1)
            .unwrap();
        let theirs = StateRecord::next(None, b"theirs".to_vec(), false, them, "", 2).unwrap();
        let taken = store.state_take("memory:a", &theirs, me).unwrap();
        assert_eq!(taken, Ok(StateTaken::Changed { conflict: true }));
        let now = store.state_get("memory:a").unwrap().unwrap();
        assert_eq!(now.value, b"theirs");
        assert_eq!(
            (now.vector().counter(&me), now.vector().counter(&them)),
            (1, 1)
        );
        let kept = store
            .state_conflicts(&Patterns::new(&["memory:*"]).unwrap())
            .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].1.value, b"mine");
        // The same version again changes nothing.
        assert_eq!(
            store.state_take("memory:a", &theirs, me).unwrap(),
            Ok(StateTaken::Unchanged)
        );
        // A version that claims writes of ours we never made is refused.
        let forged = StateRecord {
            version: vec![(me, 1 << 20), (them, 1)],
            ..theirs
        };
        assert!(store.state_take("memory:b", &forged, me).unwrap().is_err());
        assert_eq!(store.state_get("memory:b").unwrap(), None);
    }

    #[test]
    fn state_survives_a_rebuild_of_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let (store, _) = Store::open(&dir).unwrap();
        let p = PeerId([7; 32]);
        store
            .state_write("memory:a", b"kept".to_vec(), false, p, "bot", 1)
            .unwrap();
        store.kv_put("locks", "x", b"cache only").unwrap();
        store.put_raw(Tree::Meta, super::super::META_SCHEMA, &999u32.to_be_bytes());
        store.flush().unwrap();
        drop(store);
        let (store, outcome) = Store::open(&dir).unwrap();
        assert!(matches!(outcome, super::super::OpenOutcome::Rebuilt { .. }));
        assert_eq!(store.state_get("memory:a").unwrap().unwrap().value, b"kept");
        assert_eq!(
            store.kv_get("locks", "x").unwrap(),
            None,
            "only state is carried over"
        );
    }
}
