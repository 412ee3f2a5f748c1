//! The `kv` tree: namespaced key-value pairs for features built on the index (TTL locks,
//! generator state, coordination).
//!
//! A row's key is `namespace NUL key`; the value is opaque bytes chosen by the caller. A namespace
//! is a non-empty string without NUL, so one namespace's prefix never matches another's. Writes
//! are single-key atomic; [`Store::kv_compare_and_swap`] gives the compare-and-set a lock needs.

use super::backend::{Order, Span, Tree, Write};
use super::codec::SEP;
use super::{Store, StoreError};

impl Store {
    /// The value of `key` in namespace `ns`.
    pub fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = kv_key(ns, key)?;
        self.get(Tree::Kv, &k, || format!("reading {ns}/{key}"))
    }

    /// Set `key` in namespace `ns` to `value`.
    pub fn kv_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let k = kv_key(ns, key)?;
        self.write_now(vec![Write::Put(Tree::Kv, k, value.to_vec())], || {
            format!("writing {ns}/{key}")
        })
    }

    /// Set each `(key, value)` of `rows` in namespace `ns`, in one atomic write.
    pub fn kv_put_many(&self, ns: &str, rows: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let batch = rows
            .iter()
            .map(|(key, value)| Ok(Write::Put(Tree::Kv, kv_key(ns, key)?, value.clone())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write_now(batch, || format!("writing {} rows of {ns}", rows.len()))
    }

    /// Remove `key` from namespace `ns`; returns true if it was present.
    pub fn kv_del(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        let k = kv_key(ns, key)?;
        let _turn = self.turn();
        let old = self.get(Tree::Kv, &k, || format!("removing {ns}/{key}"))?;
        if old.is_some() {
            self.write(vec![Write::Remove(Tree::Kv, k)], || {
                format!("removing {ns}/{key}")
            })?;
        }
        Ok(old.is_some())
    }

    /// Remove the first keys of namespace `ns` (in key order) beyond the last `keep`; returns how
    /// many went. Reads keys only: a bounded log trimmed after every append (the sync log) does
    /// not copy its values each time.
    pub fn kv_trim(&self, ns: &str, keep: usize) -> Result<usize, StoreError> {
        let prefix = kv_key(ns, "")?;
        let _turn = self.turn();
        let mut keys = Vec::new();
        self.scan(
            Tree::Kv,
            &Span::prefix(&prefix),
            Order::Ascending,
            || format!("listing namespace {ns}"),
            |k, _| {
                keys.push(k.to_vec());
                true
            },
        )?;
        let over = keys.len().saturating_sub(keep);
        keys.truncate(over);
        let batch = keys
            .into_iter()
            .map(|k| Write::Remove(Tree::Kv, k))
            .collect();
        self.write(batch, || format!("trimming namespace {ns}"))?;
        Ok(over)
    }

    /// Every (key, value) of namespace `ns`, in key order. Keys that are not UTF-8 (never
    /// written by this API) are reported as corruption and skipped.
    pub fn kv_list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = kv_key(ns, "")?;
        let mut out = Vec::new();
        self.scan(
            Tree::Kv,
            &Span::prefix(&prefix),
            Order::Ascending,
            || format!("listing namespace {ns}"),
            |k, v| {
                match std::str::from_utf8(&k[prefix.len()..]) {
                    Ok(key) => out.push((key.to_owned(), v.to_vec())),
                    Err(_) => self.report("kv", k, "key is not UTF-8"),
                }
                true
            },
        )?;
        Ok(out)
    }

    /// Atomically replace the value of `key` if it currently equals `expected` (`None`: absent).
    /// `new = None` removes the key. On mismatch returns `Ok(Err(current))` and changes nothing.
    pub fn kv_compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        let k = kv_key(ns, key)?;
        let _turn = self.turn();
        let current = self.get(Tree::Kv, &k, || format!("compare-and-swap {ns}/{key}"))?;
        if current.as_deref() != expected {
            return Ok(Err(current));
        }
        let write = match new {
            Some(v) => Write::Put(Tree::Kv, k, v.to_vec()),
            None => Write::Remove(Tree::Kv, k),
        };
        self.write(vec![write], || format!("compare-and-swap {ns}/{key}"))?;
        Ok(Ok(()))
    }
}

fn kv_key(ns: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    if ns.is_empty() || ns.as_bytes().contains(&SEP) {
        return Err(StoreError::InvalidKey {
            what: "namespace",
            value: ns.to_owned(),
            reason: "a namespace must be non-empty and contain no NUL byte",
        });
    }
    let mut k = Vec::with_capacity(ns.len() + 1 + key.len());
    k.extend_from_slice(ns.as_bytes());
    k.push(SEP);
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_drops_the_oldest_keys_of_one_namespace_only() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        for i in 0..5 {
            store.kv_put("log", &format!("{i:03}"), b"x").unwrap();
            store.kv_put("log2", &format!("{i:03}"), b"y").unwrap();
        }
        assert_eq!(store.kv_trim("log", 2).unwrap(), 3);
        let kept: Vec<String> = store
            .kv_list("log")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kept, ["003", "004"]);
        assert_eq!(store.kv_list("log2").unwrap().len(), 5);
        assert_eq!(store.kv_trim("log", 2).unwrap(), 0);
    }

    #[test]
    fn namespaces_are_isolated() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        store.kv_put("locks", "memory/a.md", b"peer1").unwrap();
        store.kv_put("locks2", "x", b"other").unwrap();
        store.kv_put("state", "k", b"v").unwrap();
        assert_eq!(
            store.kv_get("locks", "memory/a.md").unwrap(),
            Some(b"peer1".to_vec())
        );
        assert_eq!(
            store.kv_list("locks").unwrap(),
            vec![("memory/a.md".to_owned(), b"peer1".to_vec())]
        );
        assert!(store.kv_del("locks", "memory/a.md").unwrap());
        assert!(!store.kv_del("locks", "memory/a.md").unwrap());
        assert!(store.kv_list("locks").unwrap().is_empty());
        assert_eq!(store.kv_list("locks2").unwrap().len(), 1);
        assert!(matches!(
            store.kv_put("", "k", b""),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(store.kv_get("a\0b", "k").is_err());
    }

    #[test]
    fn compare_and_swap_acts_like_a_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        assert_eq!(
            store
                .kv_compare_and_swap("locks", "l", None, Some(b"me"))
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            store
                .kv_compare_and_swap("locks", "l", None, Some(b"you"))
                .unwrap(),
            Err(Some(b"me".to_vec()))
        );
        assert_eq!(
            store
                .kv_compare_and_swap("locks", "l", Some(b"me"), None)
                .unwrap(),
            Ok(())
        );
        assert_eq!(store.kv_get("locks", "l").unwrap(), None);
    }
}
