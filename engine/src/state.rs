//! Skill state: small values under string keys (`memory:rust`, `notes:entry:7`), the store the
//! SYNC.json generators render into markdown (issue 14).
//!
//! This module is pure: key and pattern validation, and the stored record. The rows live in the
//! index's `kv` tree under the namespace [`NAMESPACE`] (see [`crate::store::Store::state_get`]).
//!
//! - A key is 1 to [`MAX_KEY_BYTES`] bytes of printable characters: no whitespace, no control
//!   character and none of the glob characters `* ? [ ] { } \`, so a key always matches itself
//!   as a pattern.
//! - A value is at most [`MAX_VALUE_BYTES`] (64 KiB) of arbitrary bytes.
//! - A pattern is a glob over the whole key (`memory:*`, `notes:entry:?`, `[ab]:*`); `*` also
//!   matches `:` and `/`. A pattern holds no comma: `SYNC_PATTERNS` joins patterns with commas.
//! - A delete leaves a tombstone (a record with `deleted` set), so a later sync between peers
//!   can tell "deleted" from "never set".

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::peer::PeerId;
use crate::vector::{CounterExhausted, VersionVector};

/// The `kv` namespace that holds state rows.
pub const NAMESPACE: &str = "state";

/// The `kv` namespace that keeps the losing values of concurrent writes from peers, for review
/// (`state list --json` shows them under `conflicts`).
pub const CONFLICT_NAMESPACE: &str = "state-conflict";

/// The largest value `state set` accepts: 64 KiB.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The longest key: 256 bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Most `state_sync` patterns a workspace may have: all of them travel in one request, which a
/// peer refuses past this.
pub const MAX_PATTERNS: usize = 64;

/// Why a key, value or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The key is empty, too long or holds a character keys may not.
    #[error("invalid state key {key:?}: {why}")]
    BadKey {
        /// The key as given.
        key: String,
        /// Why.
        why: String,
    },
    /// The value is larger than [`MAX_VALUE_BYTES`].
    #[error(
        "the value for {key:?} is {len} bytes, more than the {max} a state value may hold; store a path to a file instead"
    )]
    TooLarge {
        /// The key.
        key: String,
        /// The value's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A pattern is not a glob.
    #[error("invalid pattern {pattern:?}: {why}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// Why.
        why: String,
    },
}

/// Check a key (see the module doc for the rules).
pub fn validate_key(key: &str) -> Result<(), StateError> {
    let bad = |why: String| StateError::BadKey {
        key: key.to_owned(),
        why,
    };
    if key.is_empty() {
        return Err(bad("a key may not be empty".to_owned()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(bad(format!(
            "{} bytes, longer than the {MAX_KEY_BYTES} a key may be",
            key.len()
        )));
    }
    if let Some(c) = key
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "*?[]{}\\".contains(*c))
    {
        return Err(bad(format!(
            "it contains {c:?}; keys hold no whitespace, control or glob characters (* ? [ ] {{ }} \\)"
        )));
    }
    Ok(())
}

/// Check a value's size for `key`.
pub fn validate_value(key: &str, value: &[u8]) -> Result<(), StateError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StateError::TooLarge {
            key: key.to_owned(),
            len: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// A set of key patterns; an empty set matches every key.
#[derive(Debug, Clone)]
pub struct Patterns {
    set: GlobSet,
    empty: bool,
}

impl Patterns {
    /// Compile `patterns`; each must be a non-empty glob of at most [`MAX_KEY_BYTES`] bytes.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns, StateError> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(compile(p.as_ref())?);
        }
        let set = b.build().map_err(|e| StateError::BadPattern {
            pattern: patterns
                .iter()
                .map(|p| p.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join(","),
            why: e.to_string(),
        })?;
        Ok(Patterns {
            set,
            empty: patterns.is_empty(),
        })
    }

    /// Whether `key` matches one of the patterns (always, for an empty set).
    pub fn matches(&self, key: &str) -> bool {
        self.empty || self.set.is_match(key)
    }
}

/// The keys that travel between two peers: those matching both peers' `state_sync` patterns.
/// Unlike [`Patterns`], an empty list here matches nothing: a peer without `state_sync` shares
/// no state.
#[derive(Debug, Clone)]
pub struct SharedKeys {
    ours: Patterns,
    theirs: Patterns,
    none: bool,
}

impl SharedKeys {
    /// The keys matching both `ours` and `theirs`.
    pub fn new<S: AsRef<str>, T: AsRef<str>>(
        ours: &[S],
        theirs: &[T],
    ) -> Result<SharedKeys, StateError> {
        Ok(SharedKeys {
            none: ours.is_empty() || theirs.is_empty(),
            ours: Patterns::new(ours)?,
            theirs: Patterns::new(theirs)?,
        })
    }

    /// Whether `key` travels.
    pub fn matches(&self, key: &str) -> bool {
        !self.none && self.ours.matches(key) && self.theirs.matches(key)
    }
}

/// Check one pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), StateError> {
    compile(pattern).map(|_| ())
}

fn compile(pattern: &str) -> Result<globset::Glob, StateError> {
    let bad = |why: String| StateError::BadPattern {
        pattern: pattern.to_owned(),
        why,
    };
    if pattern.trim().is_empty() {
        return Err(bad("a pattern may not be empty".to_owned()));
    }
    if pattern.len() > MAX_KEY_BYTES {
        return Err(bad(format!("longer than {MAX_KEY_BYTES} bytes")));
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ',')
    {
        return Err(bad(format!(
            "it contains {c:?}; patterns hold no whitespace, control characters or commas"
        )));
    }
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| bad(e.kind().to_string()))
}

/// One key's stored state: its value (or a tombstone), who wrote it and when, and its version
/// vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
    /// The peer whose write this is.
    pub peer: PeerId,
    /// The agent that wrote it (may be empty).
    pub agent: String,
    /// When, in nanoseconds since the Unix epoch.
    pub at_ns: i64,
    /// The key's version vector, as (peer, counter) pairs.
    pub version: Vec<(PeerId, u64)>,
    /// Set for a delete.
    pub deleted: bool,
}

impl StateRecord {
    /// The version vector.
    pub fn vector(&self) -> VersionVector {
        VersionVector::from_pairs(self.version.iter().copied())
    }

    /// The next write after `prev` (if any) by `peer`/`agent` at `at_ns`: the vector is `prev`'s
    /// with `peer`'s counter advanced. A counter at its maximum cannot advance: the write is
    /// refused rather than recorded under a vector peers already hold.
    pub fn next(
        prev: Option<&StateRecord>,
        value: Vec<u8>,
        deleted: bool,
        peer: PeerId,
        agent: &str,
        at_ns: i64,
    ) -> Result<StateRecord, CounterExhausted> {
        let mut vv = prev.map(StateRecord::vector).unwrap_or_default();
        vv.increment(peer)?;
        Ok(StateRecord {
            value,
            peer,
            agent: agent.to_owned(),
            at_ns,
            version: vv.iter().map(|(p, c)| (*p, *c)).collect(),
            deleted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::MAX_VERSION_COUNTER;

    #[test]
    fn keys() {
        for ok in ["memory:rust", "notes:entry:7", "a", "x/y@z+1=2", "é:ü"] {
            assert_eq!(validate_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a*", "a?b", "[x]", "a\nb", "a\\b", "{a}"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn values() {
        assert!(validate_value("k", &vec![0; MAX_VALUE_BYTES]).is_ok());
        let e = validate_value("k", &vec![0; MAX_VALUE_BYTES + 1]).unwrap_err();
        assert!(e.to_string().contains("65537 bytes"), "{e}");
    }

    #[test]
    fn patterns() {
        let p = Patterns::new(&["memory:*"]).unwrap();
        assert!(p.matches("memory:rust"));
        assert!(p.matches("memory:a/b:c"));
        assert!(!p.matches("notes:memory:x"));
        assert!(!p.matches("memory"));
        let p = Patterns::new(&["notes:entry:?", "[ab]:*"]).unwrap();
        assert!(p.matches("notes:entry:7"));
        assert!(!p.matches("notes:entry:17"));
        assert!(p.matches("b:x"));
        assert!(Patterns::new::<&str>(&[]).unwrap().matches("anything"));
        assert!(validate_pattern("memory:[").is_err());
        assert!(validate_pattern("").is_err());
        assert!(validate_pattern("a,b").is_err());
    }

    #[test]
    fn shared_keys_match_both_sides_and_none_without_patterns() {
        let both = SharedKeys::new(&["memory:*", "notes:*"], &["memory:*"]).unwrap();
        assert!(both.matches("memory:x"));
        assert!(!both.matches("notes:x"));
        let none = SharedKeys::new::<&str, &str>(&["memory:*"], &[]).unwrap();
        assert!(!none.matches("memory:x"));
    }

    #[test]
    fn versions_advance() {
        let p = PeerId([1; 32]);
        let a = StateRecord::next(None, b"1".to_vec(), false, p, "bot", 5).unwrap();
        assert_eq!(a.vector().counter(&p), 1);
        let b = StateRecord::next(Some(&a), Vec::new(), true, p, "bot", 6).unwrap();
        assert_eq!(b.vector().counter(&p), 2);
        assert!(b.deleted);
        let full = StateRecord {
            version: vec![(p, MAX_VERSION_COUNTER)],
            ..b
        };
        assert!(StateRecord::next(Some(&full), Vec::new(), false, p, "", 7).is_err());
    }
}
