//! The `json` merge: key-wise 3-way merge of JSON documents (config files, mesh config).
//!
//! Objects merge key by key, recursively; any other value (a string, a number, an array) is
//! one unit. A key changed on one side only takes that side's value; a key added on both sides
//! with the same value is kept once; a key changed differently on both sides, or deleted on one
//! and changed on the other, takes the value of the version that wins by the `newest` rule and is
//! reported as a conflict (a JSON pointer per key). Key order and formatting follow the winning
//! version, then the loser's new keys in its order, so both sides produce the same bytes.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Refusal;

/// A merged document and the keys where both sides disagreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The merged document, formatted like the winner.
    pub bytes: Vec<u8>,
    /// JSON pointers (`/agents/beta/url`) of the keys that fell back to the winner's value.
    pub conflicts: Vec<String>,
}

/// Merge `winner` and `loser` (the two concurrent versions, named by the `newest` rule),
/// descended from `ancestor` when it is known (unknown: no key is common ground, so a key both
/// hold with different values is a conflict).
pub fn merge(ancestor: Option<&[u8]>, winner: &[u8], loser: &[u8]) -> Result<Merged, Refusal> {
    let parse = |bytes: &[u8], side: &'static str| {
        serde_json::from_slice::<Value>(bytes).map_err(|e| Refusal::NotJson {
            side,
            why: e.to_string(),
        })
    };
    let w = parse(winner, "winner")?;
    let l = parse(loser, "loser")?;
    // An ancestor that no longer parses is as good as none.
    let a = ancestor.and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let mut conflicts = Vec::new();
    let merged = merge_value(a.as_ref(), Some(&w), Some(&l), "", &mut conflicts);
    let bytes = match merged {
        Some(v) => format_like(&v, winner),
        None => Vec::new(),
    };
    Ok(Merged { bytes, conflicts })
}

/// The 3-way merge of one value; `None` is an absent key.
fn merge_value(
    base: Option<&Value>,
    w: Option<&Value>,
    l: Option<&Value>,
    pointer: &str,
    conflicts: &mut Vec<String>,
) -> Option<Value> {
    if w == l {
        return w.cloned();
    }
    if base == l {
        return w.cloned();
    }
    if base == w {
        return l.cloned();
    }
    if let (Some(Value::Object(wo)), Some(Value::Object(lo))) = (w, l) {
        let empty = Map::new();
        let bo = match base {
            Some(Value::Object(b)) => b,
            _ => &empty,
        };
        let mut out = Map::new();
        let keys = wo.keys().chain(lo.keys().filter(|k| !wo.contains_key(*k)));
        for key in keys {
            let child = format!("{pointer}/{}", escape(key));
            if let Some(v) = merge_value(bo.get(key), wo.get(key), lo.get(key), &child, conflicts) {
                out.insert(key.clone(), v);
            }
        }
        return Some(Value::Object(out));
    }
    conflicts.push(if pointer.is_empty() {
        "/".to_owned()
    } else {
        pointer.to_owned()
    });
    w.cloned()
}

/// RFC 6901 escaping of one key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Serialize `v` the way `like` is written: compact if it is one line, else pretty with its
/// indentation; a trailing newline if it has one.
fn format_like(v: &Value, like: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(like);
    let body = text.trim_end();
    let mut out = if !body.contains('\n') {
        serde_json::to_vec(v).unwrap_or_default()
    } else {
        let indent: String = body
            .lines()
            .nth(1)
            .map(|l| l.chars().take_while(|c| *c == ' ' || *c == '\t').collect())
            .filter(|i: &String| !i.is_empty())
            .unwrap_or_else(|| "  ".to_owned());
        let mut buf = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
        // Serializing a Value into memory cannot fail.
        let _ = v.serialize(&mut ser);
        buf
    };
    if text.ends_with('\n') {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(a: Option<&str>, w: &str, l: &str) -> (String, Vec<String>) {
        let r = merge(a.map(str::as_bytes), w.as_bytes(), l.as_bytes()).unwrap();
        (String::from_utf8(r.bytes).unwrap(), r.conflicts)
    }

    #[test]
    fn disjoint_key_edits_keep_both() {
        let a = r#"{"agents":{"alpha":{"url":"a"}},"db":"x"}"#;
        let w = r#"{"agents":{"alpha":{"url":"a"},"beta":{"url":"b"}},"db":"x"}"#;
        let l = r#"{"agents":{"alpha":{"url":"a"},"gamma":{"url":"g"}},"db":"y"}"#;
        let (out, conflicts) = m(Some(a), w, l);
        assert_eq!(
            out,
            r#"{"agents":{"alpha":{"url":"a"},"beta":{"url":"b"},"gamma":{"url":"g"}},"db":"y"}"#
        );
        assert!(conflicts.is_empty());
    }

    #[test]
    fn the_same_key_changed_on_both_sides_goes_to_the_winner_and_is_reported() {
        let (out, conflicts) = m(
            Some(r#"{"a":1,"b":1}"#),
            r#"{"a":2,"b":1}"#,
            r#"{"a":3,"b":2}"#,
        );
        assert_eq!(out, r#"{"a":2,"b":2}"#);
        assert_eq!(conflicts, vec!["/a".to_owned()]);
    }

    #[test]
    fn a_delete_on_one_side_stands_unless_the_other_changed_the_key() {
        let (out, c) = m(Some(r#"{"a":1,"b":1}"#), r#"{"b":1}"#, r#"{"a":1,"b":2}"#);
        assert_eq!((out.as_str(), c.len()), (r#"{"b":2}"#, 0));
        let (out, c) = m(Some(r#"{"a":1}"#), r#"{}"#, r#"{"a":5}"#);
        assert_eq!((out.as_str(), c), ("{}", vec!["/a".to_owned()]));
    }

    #[test]
    fn the_winners_formatting_is_kept() {
        let w = "{\n    \"a\": 1,\n    \"b\": 2\n}\n";
        let (out, _) = m(Some(r#"{"a":1}"#), w, r#"{"a":1,"c":3}"#);
        assert_eq!(out, "{\n    \"a\": 1,\n    \"b\": 2,\n    \"c\": 3\n}\n");
    }

    #[test]
    fn not_json_is_refused() {
        assert!(matches!(
            merge(None, b"{", b"{}"),
            Err(Refusal::NotJson { side: "winner", .. })
        ));
    }
}
