//! `state set|get|list|del`: the skill state store (engine/src/state.rs), small values under keys
//! such as `memory:rust` that SYNC.json generators render into markdown. The verbs run in the
//! daemon when one holds the workspace (so a generator calling `state list` while the daemon
//! runs never meets a locked index), else in this process.

use std::io::Read;

use anyhow::{Result, anyhow};
use botsync_engine::state::{self, MAX_VALUE_BYTES, Patterns, StateRecord};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::commands::history::{PeerNames, utc};
use crate::exit::usage;
use crate::node::replica::now_ns;
use crate::verb::{Ctx, Reply};

/// Arguments of `state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: StateAction,
}

/// The `state` sub-verbs.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Set KEY to VALUE (read from stdin when VALUE is omitted; at most 64 KiB).
    Set {
        /// The key, e.g. `memory:rust` (no whitespace or glob characters).
        key: String,
        /// The value (default: all of stdin).
        #[arg(allow_hyphen_values = true)]
        value: Option<String>,
    },
    /// Print KEY's value (exit code 1 if it is not set).
    Get {
        /// The key.
        key: String,
    },
    /// List keys and values, optionally only those matching glob patterns.
    List {
        /// A glob over keys, e.g. `memory:*` (repeatable; a comma-separated list also works).
        #[arg(long = "pattern", value_name = "GLOB")]
        patterns: Vec<String>,
    },
    /// Delete KEY (a tombstone is kept so the delete can sync).
    Del {
        /// The key.
        key: String,
    },
    /// End KEY's conflicts: keep the current value (default) or the newest kept losing value,
    /// and forget the kept ones.
    Resolve {
        /// The key.
        key: String,
        /// Which value stays: `current` or `kept`.
        #[arg(long, value_name = "WHICH", default_value = "current")]
        keep: String,
    },
}

/// A `state` request, as data (it runs in the daemon when one holds the workspace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum StateRequest {
    /// `state set`.
    Set {
        /// The key.
        key: String,
        /// The value's bytes.
        value: Vec<u8>,
    },
    /// `state get`.
    Get {
        /// The key.
        key: String,
    },
    /// `state list`.
    List {
        /// Glob patterns (none: every key).
        patterns: Vec<String>,
    },
    /// `state del`.
    Del {
        /// The key.
        key: String,
    },
    /// `state resolve`.
    Resolve {
        /// The key.
        key: String,
        /// True: the newest kept losing value becomes the current one.
        take_kept: bool,
    },
}

impl StateRequest {
    /// The request for parsed arguments; a `set` without a value reads stdin here, in the
    /// caller's process. Keys, sizes and patterns are checked before anything is opened.
    pub fn from_args(a: StateArgs) -> Result<StateRequest> {
        Ok(match a.action {
            StateAction::Set { key, value } => {
                state::validate_key(&key).map_err(usage)?;
                let value = match value {
                    Some(v) => v.into_bytes(),
                    None => read_stdin()?,
                };
                state::validate_value(&key, &value).map_err(usage)?;
                StateRequest::Set { key, value }
            }
            StateAction::Get { key } => {
                state::validate_key(&key).map_err(usage)?;
                StateRequest::Get { key }
            }
            StateAction::Del { key } => {
                state::validate_key(&key).map_err(usage)?;
                StateRequest::Del { key }
            }
            StateAction::Resolve { key, keep } => {
                state::validate_key(&key).map_err(usage)?;
                let take_kept = match keep.as_str() {
                    "current" => false,
                    "kept" => true,
                    other => {
                        return Err(usage(format!(
                            "--keep {other:?}: give `current` (the value now) or `kept` (the newest losing value)"
                        )));
                    }
                };
                StateRequest::Resolve { key, take_kept }
            }
            StateAction::List { patterns } => {
                let patterns = split_patterns(&patterns);
                Patterns::new(&patterns).map_err(usage)?;
                StateRequest::List { patterns }
            }
        })
    }
}

/// Patterns as given: each `--pattern` may itself be a comma-separated list (the seed's
/// `SYNC_PATTERNS` form).
pub fn split_patterns(given: &[String]) -> Vec<String> {
    given
        .iter()
        .flat_map(|p| p.split(','))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Read stdin, at most one byte more than a value may hold (so an oversize value is refused
/// without reading all of it).
fn read_stdin() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_VALUE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| anyhow!("reading the value from stdin: {e}"))?;
    Ok(buf)
}

/// Run a `state` request.
pub fn run(ctx: &Ctx, request: StateRequest) -> Result<Reply> {
    let node = ctx.node()?;
    let store = node.replica.workspace().store();
    match request {
        StateRequest::Set { key, value } => {
            state::validate_key(&key).map_err(usage)?;
            state::validate_value(&key, &value).map_err(usage)?;
            let len = value.len();
            let rec = store.state_write(
                &key,
                value,
                false,
                node.identity.peer_id(),
                ctx.agent.as_str(),
                now_ns(),
            )?;
            node.replica.state_changes().note([key.clone()], true);
            let doc = serde_json::json!({
                "ok": true,
                "key": key,
                "bytes": len,
                "time": utc(rec.at_ns),
            });
            Reply::ok(doc, format!("set {key} ({len} bytes)\n"))
        }
        StateRequest::Get { key } => {
            state::validate_key(&key).map_err(usage)?;
            match store.state_get(&key)? {
                Some(rec) if !rec.deleted => {
                    let names = PeerNames::of(&node);
                    let human = String::from_utf8_lossy(&rec.value).into_owned();
                    Reply::ok(entry(&key, &rec, &names), human)
                }
                _ => Err(anyhow!(
                    "state key {key:?} is not set; `botsync state list` shows the keys that are"
                )),
            }
        }
        StateRequest::List { patterns } => {
            let matcher = Patterns::new(&patterns).map_err(usage)?;
            let names = PeerNames::of(&node);
            let rows: Vec<(String, StateRecord)> = store
                .state_list(&matcher)?
                .into_iter()
                .filter(|(_, r)| !r.deleted)
                .collect();
            let conflicts = store.state_conflicts(&matcher)?;
            let mut human = String::new();
            for (k, r) in &rows {
                human.push_str(&format!("{k}\t{}\n", one_line_value(&r.value)));
            }
            if !conflicts.is_empty() {
                human.push_str(&format!(
                    "{} losing value(s) of concurrent writes kept for review: `botsync state list --json` shows them under \"conflicts\"\n",
                    conflicts.len()
                ));
            }
            let doc = serde_json::json!({
                "ok": true,
                "patterns": patterns,
                "state": rows.iter().map(|(k, r)| entry(k, r, &names)).collect::<Vec<_>>(),
                "conflicts": conflicts.iter().map(|(k, r)| entry(k, r, &names)).collect::<Vec<_>>(),
            });
            Reply::ok(doc, human)
        }
        StateRequest::Resolve { key, take_kept } => {
            let kept = store
                .state_conflicts(&Patterns::new(std::slice::from_ref(&key)).map_err(usage)?)?;
            if kept.is_empty() {
                return Err(anyhow!(
                    "state key {key:?} has no kept losing values; `botsync state list --json` shows the conflicts under \"conflicts\""
                ));
            }
            let mut human = String::new();
            if take_kept {
                let newest = kept
                    .iter()
                    .map(|(_, r)| r)
                    .max_by_key(|r| r.at_ns)
                    .cloned()
                    .ok_or_else(|| anyhow!("no kept value for {key:?}"))?;
                // A new local write: it travels to the peers like any `state set`.
                store.state_write(
                    &key,
                    newest.value.clone(),
                    newest.deleted,
                    node.identity.peer_id(),
                    ctx.agent.as_str(),
                    now_ns(),
                )?;
                node.replica.state_changes().note([key.clone()], true);
                human.push_str(&format!(
                    "{key} now holds the kept value from {}\n",
                    utc(newest.at_ns)
                ));
            }
            let dropped = store.state_drop_conflicts(&key)?;
            human.push_str(&format!(
                "{key}: {} kept value(s) forgotten\n",
                dropped.len()
            ));
            let doc = serde_json::json!({
                "ok": true,
                "key": key,
                "kept": if take_kept { "kept" } else { "current" },
                "forgotten": dropped.len(),
            });
            Reply::ok(doc, human)
        }
        StateRequest::Del { key } => {
            state::validate_key(&key).map_err(usage)?;
            let existed = matches!(store.state_get(&key)?, Some(r) if !r.deleted);
            if !existed {
                return Err(anyhow!(
                    "state key {key:?} is not set; nothing to delete (`botsync state list` shows the keys)"
                ));
            }
            store.state_write(
                &key,
                Vec::new(),
                true,
                node.identity.peer_id(),
                ctx.agent.as_str(),
                now_ns(),
            )?;
            node.replica.state_changes().note([key.clone()], true);
            let doc = serde_json::json!({ "ok": true, "key": key, "deleted": true });
            Reply::ok(doc, format!("deleted {key}\n"))
        }
    }
}

/// A value on one line of `state list`: newlines, tabs and backslashes escaped.
fn one_line_value(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
        .replace('\r', "\\r")
}

/// The JSON for one key: its value (UTF-8, lossy for binary values), author and time.
fn entry(key: &str, r: &StateRecord, names: &PeerNames) -> serde_json::Value {
    serde_json::json!({
        "key": key,
        "value": String::from_utf8_lossy(&r.value),
        "utf8": std::str::from_utf8(&r.value).is_ok(),
        "bytes": r.value.len(),
        "author": {
            "peer": r.peer.to_copy_safe(),
            "peer_name": names.name(&r.peer),
            "agent": r.agent,
        },
        "time": utc(r.at_ns),
        "time_ns": r.at_ns,
        "version": r.version.iter().map(|(p, c)| serde_json::json!([p.to_copy_safe(), c])).collect::<Vec<_>>(),
    })
}
