//! Which keys of two mesh config documents differ, as JSON pointers: what a parity check lists
//! ("an agent missing here", "an address that differs") and what a merge reports as changed.
//!
//! Objects are compared key by key, recursively; anything else (strings, numbers, arrays) is
//! compared whole at its pointer. A key one side lacks is reported once at its own pointer, not
//! for every leaf below it. Secret values are compared as their owners stripped them: two
//! placeholders are equal, whatever the secrets behind them.

use std::fmt;

use serde_json::Value;

use super::escape;

/// How a key differs between our document and theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Only we have it.
    MissingThere,
    /// Only they have it.
    MissingHere,
    /// Both have it, with different values.
    Differs,
}

/// One key that differs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyDiff {
    /// Its JSON pointer (RFC 6901), `/mesh_agents/cassian/tailscale_ip`.
    pub pointer: String,
    /// How it differs.
    pub state: KeyState,
}

/// The keys whose values differ between `ours` and `theirs`, in document order (ours first,
/// then keys only they have).
pub fn diff(ours: &Value, theirs: &Value) -> Vec<KeyDiff> {
    let mut out = Vec::new();
    walk(ours, theirs, "", &mut out);
    out
}

/// [`diff`] of two JSON texts; `None` if either is not JSON.
pub fn diff_bytes(ours: &[u8], theirs: &[u8]) -> Option<Vec<KeyDiff>> {
    let ours: Value = serde_json::from_slice(ours).ok()?;
    let theirs: Value = serde_json::from_slice(theirs).ok()?;
    Some(diff(&ours, &theirs))
}

impl fmt::Display for KeyDiff {
    /// `/agents/b (missing here)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.state {
            KeyState::MissingThere => "missing there",
            KeyState::MissingHere => "missing here",
            KeyState::Differs => "differs",
        };
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{pointer} ({how})")
    }
}

fn walk(ours: &Value, theirs: &Value, pointer: &str, out: &mut Vec<KeyDiff>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let child = format!("{pointer}/{}", escape(k));
                match b.get(k) {
                    Some(w) => walk(v, w, &child, out),
                    None => out.push(KeyDiff {
                        pointer: child,
                        state: KeyState::MissingThere,
                    }),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(KeyDiff {
                    pointer: format!("{pointer}/{}", escape(k)),
                    state: KeyState::MissingHere,
                });
            }
        }
        (a, b) if a == b => {}
        _ => out.push(KeyDiff {
            pointer: pointer.to_owned(),
            state: KeyState::Differs,
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pointers(d: &[KeyDiff]) -> Vec<String> {
        d.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn equal_documents_have_no_diff() {
        let v = json!({"a": {"b": [1, 2]}, "c": "<secret>"});
        assert!(diff(&v, &v.clone()).is_empty());
    }

    #[test]
    fn a_missing_agent_is_named_once_and_a_changed_address_at_its_leaf() {
        let ours = json!({"mesh_agents": {"a": {"ip": "100.1.1.1", "hook_token": "<secret>"}}});
        let theirs = json!({"mesh_agents": {
            "a": {"ip": "100.1.1.2", "hook_token": "<secret>"},
            "b": {"ip": "100.1.1.3"}
        }});
        assert_eq!(
            pointers(&diff(&ours, &theirs)),
            [
                "/mesh_agents/a/ip (differs)",
                "/mesh_agents/b (missing here)"
            ]
        );
        assert_eq!(
            pointers(&diff(&theirs, &ours)),
            [
                "/mesh_agents/a/ip (differs)",
                "/mesh_agents/b (missing there)"
            ]
        );
    }

    #[test]
    fn keys_with_slashes_are_escaped_and_whole_documents_differ_at_the_root() {
        let d = diff(&json!({"a/b": 1}), &json!({"a/b": 2}));
        assert_eq!(pointers(&d), ["/a~1b (differs)"]);
        assert_eq!(pointers(&diff(&json!(1), &json!([1]))), ["/ (differs)"]);
        assert_eq!(diff_bytes(b"{}", b"not json"), None);
        assert_eq!(diff_bytes(b"{}", b"{}"), Some(vec![]));
    }
}
