//! The mesh config file (the seed's `.secrets/mesh-config.json`): its secret-free form, and a
//! received version merged into ours key-wise while our secrets stay.
//!
//! [`strip`] replaces the value of every secret key ([`SecretRules::is_secret_key`]: `token`,
//! `password`, `api_key`, ...; not `token_file`) and every secret-looking string
//! ([`SecretRules::is_secret_value`]) by [`PLACEHOLDER`], keeping the document's shape: what
//! `botsync config template` prints and what may leave the machine. [`merge_received`] is the
//! receiving side: a 3-way key-wise merge ([`crate::reconcile::json`]) of our stripped file with
//! theirs, then our own secret values put back where the merged document holds a placeholder.
//! Pure: bytes in, bytes out; wiring it into sync is the session's business. [`diff`] lists the
//! keys two documents disagree on (parity checks, merge reports).

pub mod diff;

use serde_json::Value;

use crate::reconcile::{Refusal, json};
use crate::secrets::SecretRules;

/// The mesh config file every workspace designates, whatever its config says (the seed's file).
pub const DEFAULT_PATH: &str = ".secrets/mesh-config.json";

/// What a stripped secret value reads as.
pub const PLACEHOLDER: &str = "<secret>";

/// A document without its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    /// The document, secret values replaced by [`PLACEHOLDER`].
    pub value: Value,
    /// JSON pointers of the values replaced, in document order.
    pub stripped: Vec<String>,
}

/// A received mesh config merged into ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshMerge {
    /// Our new file: the merged document with our secrets, pretty JSON with a final newline.
    pub bytes: Vec<u8>,
    /// JSON pointers of keys both sides changed differently (ours was kept).
    pub conflicts: Vec<String>,
}

/// `value` without its secrets.
pub fn strip(value: &Value, rules: &SecretRules) -> Stripped {
    let mut stripped = Vec::new();
    let value = strip_value(value, rules, "", &mut stripped);
    Stripped { value, stripped }
}

/// [`strip`] of a JSON text, as pretty JSON with a final newline.
pub fn strip_bytes(
    bytes: &[u8],
    rules: &SecretRules,
) -> Result<(Vec<u8>, Vec<String>), serde_json::Error> {
    let value: Value = serde_json::from_slice(bytes)?;
    let s = strip(&value, rules);
    Ok((pretty(&s.value), s.stripped))
}

/// Merge `theirs` (a peer's stripped mesh config) into `own` (our full file), descended from
/// `base` (the stripped version both last agreed on, if known). Keys changed on one side take
/// that side's value; an entry added on each side is kept from both; a key changed differently
/// on both keeps ours (reported in `conflicts`). Our secret values stay wherever the merged
/// document keeps their key; a secret key only the peer has keeps the placeholder, for this
/// agent to fill in. No secret of ours is read from `theirs`, and none of theirs is written.
pub fn merge_received(
    own: &[u8],
    base: Option<&[u8]>,
    theirs: &[u8],
    rules: &SecretRules,
) -> Result<MeshMerge, Refusal> {
    let own_value: Value = serde_json::from_slice(own).map_err(|e| Refusal::NotJson {
        side: "local",
        why: e.to_string(),
    })?;
    // What the peer sent is stripped again: a secret it let through is not taken in.
    let theirs = strip_bytes(theirs, rules)
        .map_err(|e| Refusal::NotJson {
            side: "received",
            why: e.to_string(),
        })?
        .0;
    let own_stripped = pretty(&strip(&own_value, rules).value);
    let base = base
        .and_then(|b| strip_bytes(b, rules).ok())
        .map(|(b, _)| b);
    let merged = json::merge(base.as_deref(), &own_stripped, &theirs)?;
    let mut value: Value = serde_json::from_slice(&merged.bytes).map_err(|e| Refusal::NotJson {
        side: "merged",
        why: e.to_string(),
    })?;
    restore(&mut value, &own_value, "");
    Ok(MeshMerge {
        bytes: pretty(&value),
        conflicts: merged.conflicts,
    })
}

/// True if `a` and `b` hold the same JSON document, whatever the order of their keys (or, if
/// either is not JSON, the same bytes).
pub fn same_document(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn strip_value(value: &Value, rules: &SecretRules, pointer: &str, out: &mut Vec<String>) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let child = format!("{pointer}/{}", escape(k));
                    let v = if rules.is_secret_key(k) && !is_empty_or_placeholder(v) {
                        out.push(child);
                        Value::String(PLACEHOLDER.to_owned())
                    } else {
                        strip_value(v, rules, &child, out)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| strip_value(v, rules, &format!("{pointer}/{i}"), out))
                .collect(),
        ),
        Value::String(s) if s != PLACEHOLDER && rules.is_secret_value(s) => {
            out.push(pointer.to_owned());
            Value::String(PLACEHOLDER.to_owned())
        }
        other => other.clone(),
    }
}

/// Put `own`'s values back wherever `merged` holds the placeholder.
fn restore(merged: &mut Value, own: &Value, pointer: &str) {
    match merged {
        Value::String(s) if s == PLACEHOLDER => {
            if let Some(mine) = own.pointer(pointer) {
                *merged = mine.clone();
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                restore(v, own, &format!("{pointer}/{}", escape(k)));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                restore(v, own, &format!("{pointer}/{i}"));
            }
        }
        _ => {}
    }
}

/// Null, an empty string and the placeholder hold no secret.
fn is_empty_or_placeholder(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty() || s == PLACEHOLDER,
        _ => false,
    }
}

/// A key escaped for a JSON pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Pretty JSON with a final newline.
fn pretty(value: &Value) -> Vec<u8> {
    // Serializing a parsed `Value` to a Vec cannot fail.
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use serde_json::json;

    use super::*;

    const TOKEN_A: &str = "ntn_Zx8qL2mN9vB4cR7tY1wE6uI3oP5aS0dF";
    const TOKEN_B: &str = "ntn_hT3kP9qW2zX7mV5nB8cL1dR4fG6jH0sA";

    fn seed(agent_token: &str, gh: &str) -> Value {
        json!({
            "mesh_agents": {
                "cassian": {
                    "name": "Cassian Sandman",
                    "bot": "@Covault_Sandman_Bot",
                    "webhook": "http://100.112.130.22:18789/hooks/agent",
                    "tailscale_ip": "100.112.130.22",
                    "hook_token": agent_token
                }
            },
            "databases": {
                "tasks": "2f835e81-2bbb-81b6-9700-e18108a40b1f",
                "virtual_team": "2f735e81-2bbb-81eb-903a-d3c9edd8331a"
            },
            "github": { "org": "covaultxyz", "token": gh },
            "notion": { "token_file": "/home/agent/.secrets/notion-token", "api_key": agent_token },
            "shared": { "greeting": "hello", "note": "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234" }
        })
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec_pretty(v).unwrap()
    }

    #[test]
    fn strip_replaces_secret_keys_and_secret_looking_values_only() {
        let s = strip(
            &seed(TOKEN_A, "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
            &SecretRules::default(),
        );
        assert_eq!(
            s.stripped,
            [
                "/mesh_agents/cassian/hook_token",
                "/github/token",
                "/notion/api_key",
                "/shared/note"
            ]
        );
        let text = serde_json::to_string(&s.value).unwrap();
        assert!(
            !text.contains("ntn_") && !text.contains("gho_") && !text.contains("ghp_"),
            "{text}"
        );
        assert_eq!(
            s.value["notion"]["token_file"],
            "/home/agent/.secrets/notion-token"
        );
        assert_eq!(
            s.value["databases"]["tasks"],
            "2f835e81-2bbb-81b6-9700-e18108a40b1f"
        );
        assert_eq!(
            s.value["mesh_agents"]["cassian"]["webhook"],
            "http://100.112.130.22:18789/hooks/agent"
        );
        assert_eq!(s.value["github"]["token"], PLACEHOLDER);
    }

    #[test]
    fn the_same_document_in_another_key_order_is_the_same() {
        assert!(same_document(
            br#"{"a": 1, "b": {"c": 2}}"#,
            br#"{"b":{"c":2},"a":1}"#
        ));
        assert!(!same_document(br#"{"a": 1}"#, br#"{"a": 2}"#));
        assert!(!same_document(br#"[1, 2]"#, br#"[2, 1]"#));
        assert!(same_document(b"not json", b"not json"));
        assert!(!same_document(b"not json", b"{}"));
    }

    #[test]
    fn strip_is_idempotent() {
        let rules = SecretRules::default();
        let once = strip(&seed(TOKEN_A, "x"), &rules).value;
        let twice = strip(&once, &rules);
        assert_eq!(twice.value, once);
        assert!(twice.stripped.is_empty());
    }

    #[test]
    fn a_received_config_keeps_our_secrets_and_takes_their_changes() {
        let rules = SecretRules::default();
        let ours = seed(TOKEN_A, "gh-ours");
        let base = strip(&ours, &rules).value;
        let mut theirs = strip(&seed(TOKEN_B, "gh-theirs"), &rules).value;
        theirs["mesh_agents"]["cassian"]["tailscale_ip"] = json!("100.112.130.99");
        let m =
            merge_received(&bytes(&ours), Some(&bytes(&base)), &bytes(&theirs), &rules).unwrap();
        let merged: Value = serde_json::from_slice(&m.bytes).unwrap();
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        assert_eq!(
            merged["mesh_agents"]["cassian"]["tailscale_ip"],
            "100.112.130.99"
        );
        assert_eq!(merged["mesh_agents"]["cassian"]["hook_token"], TOKEN_A);
        assert_eq!(merged["notion"]["api_key"], TOKEN_A);
        assert_eq!(merged["github"]["token"], "gh-ours");
        let text = String::from_utf8(m.bytes).unwrap();
        assert!(!text.contains(TOKEN_B) && !text.contains("gh-theirs"));
    }

    #[test]
    fn two_agents_each_adding_an_agent_entry_both_keep_both() {
        let rules = SecretRules::default();
        let common = seed(TOKEN_A, "gh");
        let base = bytes(&strip(&common, &rules).value);
        let mut alpha = common.clone();
        alpha["mesh_agents"]["oracle"] =
            json!({ "name": "Oracle", "tailscale_ip": "100.113.222.30", "hook_token": TOKEN_A });
        let mut beta = seed(TOKEN_B, "gh-b");
        beta["mesh_agents"]["oraclelocal"] =
            json!({ "name": "OracleLocalBot", "tailscale_ip": "100.82.39.77" });
        let alpha_sends = strip_bytes(&bytes(&alpha), &rules).unwrap().0;
        let beta_sends = strip_bytes(&bytes(&beta), &rules).unwrap().0;

        let on_alpha = merge_received(&bytes(&alpha), Some(&base), &beta_sends, &rules).unwrap();
        let on_beta = merge_received(&bytes(&beta), Some(&base), &alpha_sends, &rules).unwrap();
        let a: Value = serde_json::from_slice(&on_alpha.bytes).unwrap();
        let b: Value = serde_json::from_slice(&on_beta.bytes).unwrap();
        for v in [&a, &b] {
            let agents: Vec<&String> = v["mesh_agents"].as_object().unwrap().keys().collect();
            assert_eq!(agents.len(), 3, "{agents:?}");
            assert!(
                v["mesh_agents"].get("oracle").is_some()
                    && v["mesh_agents"].get("oraclelocal").is_some()
            );
        }
        // Each keeps its own secrets; the entry it did not write has the placeholder to fill in.
        assert_eq!(a["mesh_agents"]["oracle"]["hook_token"], TOKEN_A);
        assert_eq!(b["mesh_agents"]["oracle"]["hook_token"], PLACEHOLDER);
        assert_eq!(b["mesh_agents"]["cassian"]["hook_token"], TOKEN_B);
        // The non-secret content agrees.
        assert_eq!(strip(&a, &rules).value, strip(&b, &rules).value);
        assert!(!String::from_utf8_lossy(&on_beta.bytes).contains(TOKEN_A));
    }

    #[test]
    fn a_secret_the_peer_let_through_is_not_taken_in() {
        let rules = SecretRules::default();
        let ours = json!({ "agents": {}, "token": TOKEN_A });
        let theirs = json!({ "agents": { "x": { "ip": "1.2.3.4" } }, "token": TOKEN_B });
        let m = merge_received(&bytes(&ours), None, &bytes(&theirs), &rules).unwrap();
        let text = String::from_utf8(m.bytes).unwrap();
        assert!(text.contains(TOKEN_A) && !text.contains(TOKEN_B), "{text}");
        assert!(text.contains("1.2.3.4"));
    }

    #[test]
    fn broken_json_is_refused_not_a_panic() {
        let rules = SecretRules::default();
        assert!(merge_received(b"{", None, b"{}", &rules).is_err());
        assert!(merge_received(b"{}", None, b"[1,", &rules).is_err());
        assert!(strip_bytes(b"nope", &rules).is_err());
    }

    /// A small JSON document of mesh-like keys (some secret, some references) and values (some
    /// secret-looking).
    fn doc() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "name",
            "token",
            "token_file",
            "api_key",
            "webhook",
            "password",
            "ip",
            "agents",
        ]);
        let leaf = prop_oneof![
            Just(json!("hello")),
            Just(json!(TOKEN_A)),
            Just(json!("ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234")),
            Just(json!("2f835e81-2bbb-81b6-9700-e18108a40b1f")),
            Just(json!(42)),
            Just(Value::Null),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop::collection::vec((key.clone(), inner), 0..4).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            })
        })
    }

    proptest::proptest! {
        /// Stripping twice strips nothing more, and nothing secret-looking survives a strip.
        #[test]
        fn strip_is_idempotent_and_leaves_no_secret(d in doc()) {
            let rules = SecretRules::default();
            let once = strip(&d, &rules);
            let twice = strip(&once.value, &rules);
            proptest::prop_assert_eq!(&twice.value, &once.value);
            proptest::prop_assert!(twice.stripped.is_empty());
            let text = serde_json::to_string(&once.value).unwrap();
            proptest::prop_assert!(!text.contains(TOKEN_A) && !text.contains("ghp_"), "{}", text);
        }

        /// A received document never brings a secret of the peer's, and ours stay.
        #[test]
        fn merge_received_keeps_ours_and_takes_none_of_theirs(ours in doc(), theirs in doc()) {
            let rules = SecretRules::default();
            let ours = json!({ "mine": ours, "token": TOKEN_A });
            let theirs = json!({ "theirs": theirs, "token": TOKEN_B });
            let m = merge_received(&bytes(&ours), None, &bytes(&theirs), &rules).unwrap();
            let text = String::from_utf8(m.bytes).unwrap();
            proptest::prop_assert!(!text.contains(TOKEN_B), "{}", text);
            let merged: Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(&merged["token"], &json!(TOKEN_A));
        }
    }
}
