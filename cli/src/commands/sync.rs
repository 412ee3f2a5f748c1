//! `sync` (alias `now`), `push`, `pull` and `diff`: sessions with one peer or all of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use botsync_engine::plan::{Action, ItemReport, Outcome};
use botsync_proto::close::CloseCode;
use botsync_proto::messages::SessionMode;
use botsync_proto::session::{self, SessionOptions, SessionReport};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::exit::{ATTENTION, FAILED, OK};
use crate::node::Node;
use crate::node::peers::Peer;
use crate::output;
use crate::verb::{Ctx, Mode, Reply};

/// Arguments of `sync`, `push` and `pull`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The peer (default: every configured peer).
    pub peer: Option<String>,
    /// Show exactly what would happen; write nothing on either side.
    #[arg(long)]
    pub dry_run: bool,
    /// Carry out deletions even beyond the delete threshold (config.json `delete_threshold`).
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The peer (default: every configured peer).
    pub peer: Option<String>,
}

/// How a session runs: the flags shared by `sync`, `push`, `pull` and `diff`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct How {
    /// Plan only, on both sides.
    pub dry_run: bool,
    /// Let deletions exceed the delete threshold.
    pub force: bool,
}

/// One peer's result, as printed.
#[derive(Debug, Serialize)]
struct PeerResult {
    peer: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    report: Option<SessionReport>,
}

/// Run a session in `mode` with one peer or all, and report each.
pub fn run(ctx: &Ctx, peer: Option<&str>, mode: Mode, how: How, itemize: bool) -> Result<Reply> {
    let node = ctx.node()?;
    let peers = node.peers()?.select(peer)?;
    let mut results = Vec::new();
    for p in &peers {
        let result = ctx
            .rt
            .block_on(session_with(ctx, &node, p, mode.wire(), how));
        if let Some(d) = &ctx.daemon {
            d.record_sync(&p.name, result.as_ref().map_err(crate::exit::one_line));
        }
        results.push(match result {
            Ok(report) => PeerResult {
                peer: p.name.clone(),
                ok: true,
                error: None,
                report: Some(report),
            },
            Err(e) => PeerResult {
                peer: p.name.clone(),
                ok: false,
                error: Some(crate::exit::one_line(&e)),
                report: None,
            },
        });
    }
    let failed = results.iter().any(|r| !r.ok);
    let attention = results
        .iter()
        .filter_map(|r| r.report.as_ref())
        .any(needs_attention);
    let code = if failed {
        FAILED
    } else if attention {
        ATTENTION
    } else {
        OK
    };
    let doc = serde_json::json!({ "ok": !failed, "exit_code": code, "dry_run": how.dry_run, "peers": results });
    let human = human(&results, mode.wire(), how.dry_run, itemize);
    let mut reply = Reply::ok(doc, human)?;
    reply.exit_code = code;
    // One line per failed peer on stderr, also with --json (where it is in the document too).
    reply.warnings = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.error.clone().unwrap_or_else(|| "unknown failure".into()))
        .collect();
    Ok(reply)
}

/// A runtime for one verb.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// One session with `peer`: over the daemon's kept connection when the daemon runs this,
/// else over a connection of our own.
pub(crate) async fn session_with(
    ctx: &Ctx,
    node: &Arc<Node>,
    peer: &Peer,
    mode: SessionMode,
    how: How,
) -> Result<SessionReport> {
    let mut opts = SessionOptions::new(mode, &node.name);
    opts.dry_run = how.dry_run;
    opts.force = how.force;
    opts.agent = ctx.agent.clone();
    let progress = (ctx.progress)(&peer.name);
    if let Some(d) = &ctx.daemon {
        return d.links.session(peer, &opts, progress).await;
    }
    let addr = peer.resolve()?;
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let endpoint = node.bind(bind)?;
    // Rescan while the connection is being set up.
    let pending = session::client::start_refresh(&node.replica);
    let conn = endpoint
        .connect(addr, peer.id)
        .await
        .with_context(|| format!("connecting to peer {}", peer.name))?;
    let result = session::client::run_with(
        conn.quinn(),
        peer.id,
        Arc::clone(&node.replica),
        &opts,
        progress,
        pending,
    )
    .await;
    let code = if result.is_ok() {
        CloseCode::Done
    } else {
        CloseCode::Internal
    };
    conn.close(code);
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    result.with_context(|| format!("session with peer {}", peer.name))
}

fn needs_attention(r: &SessionReport) -> bool {
    !r.skipped.is_empty()
        || r.peer_skipped > 0
        || r.pulled.iter().chain(&r.pushed).any(|i| {
            i.action.is_conflict()
                || matches!(
                    i.outcome,
                    Outcome::LocalChanged | Outcome::MissingChunks | Outcome::Failed { .. }
                )
        })
}

fn human(results: &[PeerResult], mode: SessionMode, dry_run: bool, itemize: bool) -> String {
    let mut out = String::new();
    for r in results {
        let Some(rep) = &r.report else { continue };
        let verb = match (dry_run, mode) {
            (true, _) if itemize => "diff with",
            (true, _) => "dry run with",
            (_, SessionMode::Push) => "push to",
            (_, SessionMode::Pull) => "pull from",
            _ => "sync with",
        };
        if rep.in_sync {
            out.push_str(&format!("{verb} {}: already in sync\n", r.peer));
            continue;
        }
        let moved = |items: &[ItemReport]| items.iter().filter(|i| i.action.writes_file()).count();
        out.push_str(&format!(
            "{verb} {}: {} in, {} out; {} received, {} sent\n",
            r.peer,
            moved(&rep.pulled),
            moved(&rep.pushed),
            output::bytes(rep.counters.chunk_wire_bytes_received),
            output::bytes(rep.bytes_sent),
        ));
        for (arrow, items) in [("<-", &rep.pulled), ("->", &rep.pushed)] {
            for i in items
                .iter()
                .filter(|i| itemize || i.action != Action::MergeVersion)
            {
                out.push_str(&format!("  {arrow} {}\n", describe(i)));
            }
        }
        for s in &rep.skipped {
            out.push_str(&format!("  !! {s} (not synced)\n"));
        }
        if rep.peer_skipped > 0 {
            out.push_str(&format!(
                "  !! {} files on {} could not be read there (not synced; see its log)\n",
                rep.peer_skipped, r.peer
            ));
        }
    }
    out
}

fn describe(i: &ItemReport) -> String {
    let mut s = format!("{} ({}", i.path, i.action.name());
    if i.action.writes_file() && i.action != Action::Delete {
        s.push_str(&format!(
            ", {}, {} to move",
            output::bytes(i.size),
            output::bytes(i.bytes_fetched)
        ));
    }
    s.push(')');
    match &i.outcome {
        Outcome::Done | Outcome::Unchanged => {}
        Outcome::LocalChanged => {
            s.push_str(" skipped: edited locally during the sync, retried next time")
        }
        Outcome::MissingChunks => {
            s.push_str(" skipped: changed on the sender while being sent, retried next time")
        }
        Outcome::Failed { reason } => s.push_str(&format!(" FAILED: {reason}")),
    }
    if let Some(c) = &i.conflict_copy {
        s.push_str(&format!("; our version kept in {c}"));
    }
    s
}
