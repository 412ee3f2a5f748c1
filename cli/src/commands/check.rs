//! `check [PEER]`: the seed's pre-push check, "has anyone pushed since my last pull?", asked of
//! the peers themselves (there is no central table): a dry-run pull with each one lists what
//! would arrive, grouped by who made it (peer and agent) with the newest change's time. Exit 3
//! if anything would arrive (pull first), 0 if nothing, 1 if a peer could not be asked.

use std::collections::BTreeMap;

use anyhow::Result;
use botsync_engine::plan::{Action, ItemReport};
use botsync_proto::messages::SessionMode;
use serde::Serialize;

use crate::commands::history::{PeerNames, utc};
use crate::commands::sync::{How, session_with};
use crate::exit::{ATTENTION, FAILED, OK};
use crate::node::last_sync;
use crate::verb::{Ctx, Reply};

/// Paths listed per author in the human text (all of them are in `--json`).
const SHOWN_PATHS: usize = 5;

/// Who changed what on one peer since our last pull.
#[derive(Debug, Serialize)]
struct Author {
    /// The peer that made the changes (its configured name, or short id).
    machine: String,
    /// The agent on it (may be empty).
    agent: String,
    /// How many files would arrive.
    files: usize,
    /// When the newest of them was changed (UTC).
    newest: String,
    /// The paths.
    paths: Vec<String>,
}

/// One peer's answer.
#[derive(Debug, Serialize)]
struct PeerCheck {
    peer: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// When we last pulled from it (synced with it), if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sync: Option<String>,
    /// Who pushed since then.
    pushed: Vec<Author>,
}

/// `check`.
pub fn check(ctx: &Ctx, peer: Option<&str>) -> Result<Reply> {
    let node = ctx.node()?;
    let peers = node.peers()?.select(peer)?;
    let names = PeerNames::of(&node);
    let synced = last_sync::load(&ctx.root.join(crate::context::STATE_DIR));
    let how = How {
        dry_run: true,
        force: false,
        parity: false,
    };
    let mut checks = Vec::new();
    for p in &peers {
        let result = ctx.rt.block_on(session_with(
            ctx,
            &node,
            p,
            SessionMode::Pull,
            how,
            Some(crate::commands::status::DIAL),
        ));
        let last_sync = synced.get(&p.name).map(|r| utc(secs_to_ns(r.at)));
        checks.push(match result {
            Ok(report) => PeerCheck {
                peer: p.name.clone(),
                ok: true,
                error: None,
                last_sync,
                pushed: authors(&report.pulled, &names),
            },
            Err(e) => PeerCheck {
                peer: p.name.clone(),
                ok: false,
                error: Some(crate::exit::one_line(&e)),
                last_sync,
                pushed: Vec::new(),
            },
        });
    }
    let failed = checks.iter().any(|c| !c.ok);
    let pushed = checks.iter().any(|c| !c.pushed.is_empty());
    let code = if failed {
        FAILED
    } else if pushed {
        ATTENTION
    } else {
        OK
    };
    let human = human(&checks, pushed);
    let warnings = checks
        .iter()
        .filter_map(|c| {
            c.error
                .as_ref()
                .map(|e| format!("could not check {}: {e}", c.peer))
        })
        .collect();
    let doc = serde_json::json!({
        "ok": !failed,
        "exit_code": code,
        "pushed_since_last_pull": pushed,
        "peers": checks,
    });
    let mut reply = Reply::ok(doc, human)?;
    reply.exit_code = code;
    reply.warnings = warnings;
    Ok(reply)
}

/// The incoming changes of a dry-run pull, grouped by author, newest first.
fn authors(pulled: &[ItemReport], names: &PeerNames) -> Vec<Author> {
    let mut by: BTreeMap<(String, String), Author> = BTreeMap::new();
    let mut newest_ns: BTreeMap<(String, String), i64> = BTreeMap::new();
    for item in pulled.iter().filter(|i| is_change(&i.action)) {
        let (machine, agent) = match &item.changed_by {
            Some(a) => (
                names.machine(&a.peer, &a.machine),
                a.agent.as_str().to_owned(),
            ),
            None => ("?".to_owned(), String::new()),
        };
        let key = (machine.clone(), agent.clone());
        let a = by.entry(key.clone()).or_insert_with(|| Author {
            machine,
            agent,
            files: 0,
            newest: String::new(),
            paths: Vec::new(),
        });
        a.files += 1;
        a.paths.push(item.path.to_string());
        let n = newest_ns.entry(key).or_insert(i64::MIN);
        *n = (*n).max(item.mtime_ns);
    }
    let mut out: Vec<(i64, Author)> = by
        .into_iter()
        .map(|(k, mut a)| {
            let ns = newest_ns.get(&k).copied().unwrap_or(0);
            a.newest = utc(ns);
            (ns, a)
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.0));
    out.into_iter().map(|(_, a)| a).collect()
}

/// True if the action means the peer holds a change we have not pulled.
fn is_change(a: &Action) -> bool {
    !matches!(
        a,
        Action::Nothing | Action::NotSelected | Action::MergeVersion | Action::RecordTombstone
    )
}

fn human(checks: &[PeerCheck], pushed: bool) -> String {
    let mut lines = Vec::new();
    for c in checks.iter().filter(|c| c.ok) {
        let since = c.last_sync.as_deref().map_or_else(
            || "you never pulled from it".to_owned(),
            |t| format!("last sync {t} UTC"),
        );
        if c.pushed.is_empty() {
            lines.push(format!(
                "{}: nothing new since your last pull ({since})",
                c.peer
            ));
            continue;
        }
        for a in &c.pushed {
            let who = if a.agent.is_empty() {
                format!("{} (no agent)", a.machine)
            } else {
                format!("@{} on {}", a.agent, a.machine)
            };
            let mut paths = a
                .paths
                .iter()
                .take(SHOWN_PATHS)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if a.paths.len() > SHOWN_PATHS {
                paths.push_str(&format!(", and {} more", a.paths.len() - SHOWN_PATHS));
            }
            lines.push(format!(
                "WARNING: {who} changed {} file{} you have not pulled from {} (newest {} UTC): {paths}",
                a.files,
                if a.files == 1 { "" } else { "s" },
                c.peer,
                a.newest
            ));
        }
    }
    if pushed {
        lines.push("pull before you change or push anything: botsync pull".to_owned());
    }
    lines.join("\n")
}

fn secs_to_ns(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX / 1_000_000_000) * 1_000_000_000
}
