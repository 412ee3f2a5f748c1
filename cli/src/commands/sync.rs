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

use super::skipped::{self, SkippedView};
use crate::commands::feed::SayRequest;
use crate::context::STATE_DIR;
use crate::exit::{ATTENTION, FAILED, OK};
use crate::node::Node;
use crate::node::last_sync::{self, SyncRecord};
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
    /// Ask the peer for its parity report (`parity`, `status`), if it supports it.
    #[serde(default)]
    pub parity: bool,
}

/// One peer's result, as printed.
#[derive(Debug, Serialize)]
struct PeerResult {
    peer: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    report: Option<ReportView>,
}

/// A session's report as `--json` prints it: every item with its planned action and (for a
/// dry run) `"outcome": "planned"`, and what would move or moved in each direction.
#[derive(Debug, Serialize)]
pub(crate) struct ReportView {
    peer_id: Option<String>,
    in_sync: bool,
    dry_run: bool,
    pulled: Vec<ItemView>,
    pushed: Vec<ItemView>,
    /// Files and bytes coming to us.
    receive: Amount,
    /// Files and bytes going to the peer.
    send: Amount,
    counters: botsync_proto::session::Counters,
    bytes_sent: u64,
    skipped: Vec<String>,
    peer_skipped: u64,
    /// Mesh config files the peer's version changed here.
    mesh: Vec<botsync_proto::replica::MeshChange>,
    /// What the state phase did (skill state keys taken and sent).
    state: botsync_proto::session::state::StateReport,
}

/// Files written or deleted, and chunk bytes moved, in one direction.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Amount {
    pub files: u64,
    pub bytes: u64,
}

/// One item of a report.
#[derive(Debug, Serialize)]
struct ItemView {
    path: String,
    action: &'static str,
    /// The merge policy of a `merge` item.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'static str>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    size: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    conflict_copy: Option<String>,
}

impl ReportView {
    pub(crate) fn of(r: &SessionReport) -> ReportView {
        let items = |v: &[ItemReport]| v.iter().map(|i| ItemView::of(i, r.dry_run)).collect();
        ReportView {
            peer_id: r.peer.map(|p| p.to_copy_safe()),
            in_sync: r.in_sync,
            dry_run: r.dry_run,
            pulled: items(&r.pulled),
            pushed: items(&r.pushed),
            receive: amount(&r.pulled),
            send: amount(&r.pushed),
            counters: r.counters,
            bytes_sent: r.bytes_sent,
            skipped: r.skipped.clone(),
            peer_skipped: r.peer_skipped,
            mesh: r.mesh.clone(),
            state: r.state.clone(),
        }
    }
}

impl ItemView {
    fn of(i: &ItemReport, dry_run: bool) -> ItemView {
        let (outcome, reason) = match &i.outcome {
            Outcome::Done if dry_run => ("planned", None),
            Outcome::Unchanged if dry_run => ("planned_index_only", None),
            Outcome::Done => ("done", None),
            Outcome::Unchanged => ("index_only", None),
            Outcome::LocalChanged => ("local_changed", None),
            Outcome::MissingChunks => ("missing_chunks", None),
            Outcome::Failed { reason } => ("failed", Some(reason.clone())),
        };
        ItemView {
            path: i.path.to_string(),
            action: i.action.name(),
            policy: match &i.action {
                Action::Merge { policy } => Some(policy.name()),
                _ => None,
            },
            outcome,
            reason,
            size: i.size,
            bytes: i.bytes_fetched,
            conflict_copy: i.conflict_copy.clone(),
        }
    }
}

/// What moves for these items: files written or deleted, and the chunk bytes fetched for them.
pub(crate) fn amount(items: &[ItemReport]) -> Amount {
    let moving = items.iter().filter(|i| i.action.writes_file());
    Amount {
        files: moving.clone().count() as u64,
        bytes: moving.map(|i| i.bytes_fetched).sum(),
    }
}

/// Run a session in `mode` with one peer or all, and report each.
pub fn run(ctx: &Ctx, peer: Option<&str>, mode: Mode, how: How, itemize: bool) -> Result<Reply> {
    let node = ctx.node()?;
    let peers = node.peers()?.select(peer)?;
    let mut results = Vec::new();
    let mut reports = Vec::new();
    for p in &peers {
        let result = ctx
            .rt
            .block_on(session_with(ctx, &node, p, mode.wire(), how, None));
        if let Some(d) = &ctx.daemon {
            d.record_sync(&p.name, result.as_ref().map_err(crate::exit::one_line));
        }
        // In the daemon the link logs every session, automatic ones too.
        if ctx.daemon.is_none() && !how.dry_run {
            crate::commands::history::log_session(
                node.replica.workspace(),
                &p.name,
                mode.wire(),
                &ctx.agent,
                &crate::commands::history::PeerNames::of(&node),
                &result,
            );
        }
        results.push(match &result {
            Ok(report) => PeerResult {
                peer: p.name.clone(),
                ok: true,
                error: None,
                report: Some(ReportView::of(report)),
            },
            Err(e) => PeerResult {
                peer: p.name.clone(),
                ok: false,
                error: Some(crate::exit::one_line(e)),
                report: None,
            },
        });
        if let Ok(r) = result {
            reports.push((p.name.clone(), r));
        }
    }
    let failed = results.iter().any(|r| !r.ok);
    let attention = reports.iter().any(|(_, r)| needs_attention(r));
    let code = if failed {
        FAILED
    } else if attention {
        ATTENTION
    } else {
        OK
    };
    let skipped = skipped::dedup(
        reports
            .iter()
            .flat_map(|(_, r)| r.skipped.iter().map(|l| SkippedView::parse(l))),
    );
    // One line per failed peer on stderr, also with --json (where it is in the document too).
    let warnings = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.error.clone().unwrap_or_else(|| "unknown failure".into()))
        .collect();
    let human = human(&reports, mode.wire(), how.dry_run, itemize, &skipped);
    // Built field by field so that each part is moved in, not copied (`json!` copies a value
    // it is given): the views of a large sync are let go as soon as they are a document.
    let mut doc = serde_json::Map::new();
    doc.insert("ok".into(), (!failed).into());
    doc.insert("exit_code".into(), code.into());
    doc.insert("dry_run".into(), how.dry_run.into());
    doc.insert("peers".into(), serde_json::to_value(results)?);
    doc.insert("skipped".into(), serde_json::to_value(skipped)?);
    let mut reply = Reply::ok_doc(doc.into(), human);
    reply.exit_code = code;
    reply.warnings = warnings;
    // The seed's "notify the chatroom" step: in a workspace whose agents use the feed (it
    // exists), a push or two-way sync that moved files says so there, and sends that line to
    // the same peers at once so a finished sync leaves everyone in sync. A pull changes
    // nothing the others need to hear about.
    if !how.dry_run
        && mode != Mode::Pull
        && crate::node::feed::exists(&ctx.root)
        && let Some(text) = feed_line(&reports)
        && let Err(e) = announce(ctx, &node, &reports, text)
    {
        reply.warnings.push(format!(
            "the sync is done, but posting it to the feed failed: {}",
            crate::exit::one_line(&e)
        ));
    }
    Ok(reply)
}

/// Post `text` as a `sync` message, then push it to the peers that took part.
fn announce(
    ctx: &Ctx,
    node: &Arc<Node>,
    reports: &[(String, SessionReport)],
    text: String,
) -> Result<()> {
    crate::commands::feed::post(ctx, &SayRequest::sync(text))?;
    let peers = node.peers()?;
    for (name, _) in reports {
        let p = peers.select(Some(name))?;
        for p in &p {
            let how = How {
                dry_run: false,
                force: false,
                parity: false,
            };
            ctx.rt
                .block_on(session_with(ctx, node, p, SessionMode::Push, how, None))
                .with_context(|| format!("sending the feed's sync message to {name}"))?;
        }
    }
    // The last sync with each peer is the one the user asked for, not the feed's follow-up.
    for (name, report) in reports {
        let record = SyncRecord::now(true, crate::daemon::links::summarize(report));
        match &ctx.daemon {
            Some(d) => {
                for p in peers.select(Some(name))? {
                    d.links.set_last_sync(&p, record.clone());
                }
            }
            None => last_sync::record(&ctx.root.join(STATE_DIR), name, record)?,
        }
    }
    Ok(())
}

/// The feed's `sync` message for a completed sync verb ("pulled 2 files from beta (a.md,
/// b.md); pushed 1 file to gamma (c.md)"), or `None` if it moved nothing but the feed itself
/// (posting then would make every sync post again, forever).
fn feed_line(reports: &[(String, SessionReport)]) -> Option<String> {
    let moved = |items: &[ItemReport]| -> Vec<String> {
        items
            .iter()
            .filter(|i| {
                i.outcome == Outcome::Done
                    && (i.action.writes_file() || i.action == Action::Delete)
                    && i.path.as_str() != botsync_engine::feed::FEED_PATH
            })
            .map(|i| i.path.to_string())
            .collect()
    };
    let list = |paths: &[String]| {
        let mut s = paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if paths.len() > 3 {
            s.push_str(&format!(", and {} more", paths.len() - 3));
        }
        s
    };
    let plural = |n: usize| if n == 1 { "file" } else { "files" };
    let mut parts = Vec::new();
    for (peer, r) in reports {
        let pulled = moved(&r.pulled);
        if !pulled.is_empty() {
            parts.push(format!(
                "pulled {} {} from {peer} ({})",
                pulled.len(),
                plural(pulled.len()),
                list(&pulled)
            ));
        }
        let pushed = moved(&r.pushed);
        if !pushed.is_empty() {
            parts.push(format!(
                "pushed {} {} to {peer} ({})",
                pushed.len(),
                plural(pushed.len()),
                list(&pushed)
            ));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
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
    dial: Option<Duration>,
) -> Result<SessionReport> {
    let mut opts = SessionOptions::new(mode, &node.name);
    opts.deadlines = crate::node::limits::deadlines(&node.replica.workspace().config().limits);
    opts.dry_run = how.dry_run;
    opts.force = how.force;
    opts.parity = how.parity;
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
    let endpoint = node.bind_with(bind, dial)?;
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
    if !how.dry_run {
        let record = match &result {
            Ok(r) => SyncRecord::now(true, crate::daemon::links::summarize(r)),
            Err(e) => SyncRecord::now(false, e.to_string()),
        };
        if let Err(e) = last_sync::record(&node.root.join(STATE_DIR), &peer.name, record) {
            tracing::debug!(error = %format!("{e:#}"), "could not record the last sync");
        }
    }
    result.with_context(|| format!("session with peer {}", peer.name))
}

fn needs_attention(r: &SessionReport) -> bool {
    !r.skipped.is_empty()
        || r.peer_skipped > 0
        // A mesh config key both sides changed kept ours: the user decides.
        || r.mesh.iter().any(|m| m.refused.is_some() || !m.conflicts.is_empty())
        // A state key's losing value kept for review, or a record refused.
        || !r.state.pulled.conflicts.is_empty()
        || !r.state.pulled.refused.is_empty()
        || r.pulled.iter().chain(&r.pushed).any(|i| {
            i.action.is_conflict()
                // A merge where both sides changed the same keys kept a loser for review.
                || (matches!(i.action, Action::Merge { .. }) && i.conflict_copy.is_some())
                || matches!(
                    i.outcome,
                    Outcome::LocalChanged | Outcome::MissingChunks | Outcome::Failed { .. }
                )
        })
}

fn human(
    reports: &[(String, SessionReport)],
    mode: SessionMode,
    dry_run: bool,
    itemize: bool,
    skipped: &[SkippedView],
) -> String {
    let mut out = String::new();
    for (peer, rep) in reports {
        let verb = match (dry_run, mode) {
            (true, _) if itemize => "diff with",
            (true, _) => "dry run with",
            (_, SessionMode::Push) => "push to",
            (_, SessionMode::Pull) => "pull from",
            _ => "sync with",
        };
        if rep.in_sync {
            out.push_str(&format!("{verb} {peer}: already in sync\n"));
            out.push_str(&mesh_lines(&rep.mesh, peer));
            out.push_str(&state_lines(&rep.state));
            continue;
        }
        let (rx, tx) = (amount(&rep.pulled), amount(&rep.pushed));
        if dry_run {
            out.push_str(&format!(
                "{verb} {peer}: would receive {} files ({}), would send {} files ({}); nothing written\n",
                rx.files,
                output::bytes(rx.bytes),
                tx.files,
                output::bytes(tx.bytes),
            ));
        } else {
            out.push_str(&format!(
                "{verb} {peer}: {} in, {} out; {} received, {} sent\n",
                rx.files,
                tx.files,
                output::bytes(rep.counters.chunk_wire_bytes_received),
                output::bytes(rep.bytes_sent),
            ));
        }
        for (arrow, items, here) in [("<-", &rep.pulled, true), ("->", &rep.pushed, false)] {
            for i in items
                .iter()
                .filter(|i| itemize || i.action != Action::MergeVersion)
            {
                out.push_str(&format!("  {arrow} {}", describe(i, dry_run)));
                out.push_str(&loser(i, here, peer, dry_run));
                out.push('\n');
            }
        }
        out.push_str(&mesh_lines(&rep.mesh, peer));
        if rep.peer_skipped > 0 {
            out.push_str(&format!(
                "  !! {} files on {peer} could not be read there (not synced; see `botsync scan` on {peer})\n",
                rep.peer_skipped
            ));
        }
        out.push_str(&state_lines(&rep.state));
    }
    for s in skipped {
        out.push_str(&format!("  !! {}\n", s.line()));
    }
    out
}

/// One line per mesh config file `peer`'s version changed here: "mesh config: merged 2 keys
/// from PEER into FILE (...)".
pub(crate) fn mesh_lines(changes: &[botsync_proto::replica::MeshChange], peer: &str) -> String {
    const SHOWN: usize = 5;
    let list = |keys: &[String]| {
        let mut s = keys
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if keys.len() > SHOWN {
            s.push_str(&format!(", and {} more", keys.len() - SHOWN));
        }
        s
    };
    let mut out = String::new();
    for c in changes {
        let keys = |n: usize| if n == 1 { "key" } else { "keys" };
        let line = if let Some(why) = &c.refused {
            format!(
                "  !! mesh config: {}'s version of {} not merged: {why}",
                peer, c.path
            )
        } else if c.created {
            format!(
                "  mesh config: created {} from {peer} ({} {}); its secret values read \"<secret>\": fill in yours",
                c.path,
                c.keys.len(),
                keys(c.keys.len())
            )
        } else {
            let mut l = format!(
                "  mesh config: merged {} {} from {peer} into {}",
                c.keys.len(),
                keys(c.keys.len()),
                c.path
            );
            if !c.keys.is_empty() {
                l.push_str(&format!(" ({})", list(&c.keys)));
            }
            if !c.conflicts.is_empty() {
                l.push_str(&format!(
                    "; changed on both sides, ours kept: {}",
                    list(&c.conflicts)
                ));
            }
            l
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The state phase in a few lines: keys taken and sent, conflicts kept, refusals.
fn state_lines(st: &botsync_proto::session::state::StateReport) -> String {
    let pulled = &st.pulled;
    if pulled.changed.is_empty() && pulled.refused.is_empty() && st.pushed == 0 {
        return String::new();
    }
    let mut out = format!(
        "  state: {} keys in, {} out",
        pulled.changed.len(),
        st.pushed
    );
    if !pulled.conflicts.is_empty() {
        out.push_str(&format!(
            "; {} concurrent writes, the losing values kept (`botsync state list --json`)",
            pulled.conflicts.len()
        ));
    }
    out.push('\n');
    for r in &pulled.refused {
        out.push_str(&format!("  !! {r}\n"));
    }
    out
}

fn describe(i: &ItemReport, dry_run: bool) -> String {
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
        _ if dry_run => {}
        Outcome::Done | Outcome::Unchanged => {}
        Outcome::LocalChanged => {
            s.push_str(" skipped: edited locally during the sync, retried next time")
        }
        Outcome::MissingChunks => {
            s.push_str(" skipped: changed on the sender while being sent, retried next time")
        }
        Outcome::Failed { reason } => s.push_str(&format!(" FAILED: {reason}")),
    }
    s
}

/// Which version of a conflict lost and on which machine it is kept. `here`: the item was
/// decided and applied on this machine (pulled), else on the peer (pushed).
fn loser(i: &ItemReport, here: bool, peer: &str, dry_run: bool) -> String {
    let kept = |at: &str| match (&i.conflict_copy, dry_run) {
        (_, true) => format!("would be kept {at}"),
        (Some(c), false) => format!("kept {at} in {c}"),
        (None, false) => "not kept (it was already gone)".to_owned(),
    };
    match (&i.action, here) {
        (Action::TakeConflict, true) => {
            format!("; our version lost to {peer}'s, {}", kept("here"))
        }
        (Action::TakeConflict, false) => {
            format!(
                "; {peer}'s version lost to ours, {}",
                kept(&format!("on {peer}"))
            )
        }
        (Action::KeepConflict, true) => {
            format!("; {peer}'s version lost to ours (kept on {peer} when it takes ours)")
        }
        (Action::KeepConflict, false) => {
            format!("; our version won on {peer}'s side; ours is kept here when we take {peer}'s")
        }
        (Action::Merge { policy }, true) => match &i.conflict_copy {
            Some(c) => format!(
                "; merged ({}); keys both sides changed took the newer value, the other version is kept here in {c}",
                policy.name()
            ),
            None => format!("; merged ({})", policy.name()),
        },
        (Action::Merge { policy }, false) => format!("; merged ({}) on {peer}", policy.name()),
        (Action::ReviewConflict, true) => format!(
            "; kept ours (policy manual); {peer}'s version is kept here for review{}",
            i.conflict_copy
                .as_ref()
                .map(|c| format!(" in {c}"))
                .unwrap_or_default()
        ),
        (Action::ReviewConflict, false) => {
            format!("; {peer} kept its version (policy manual); ours is kept there for review")
        }
        (Action::SkipConflict, true) => {
            format!(
                "; left alone (policy skip): ours and {peer}'s differ; see `botsync conflicts list`"
            )
        }
        (Action::SkipConflict, false) => {
            format!("; left alone by {peer} (policy skip); see `botsync conflicts list` there")
        }
        (Action::CaseCollision { local }, true) => format!(
            "; not taken: it differs only in letter case from our {local}; see `botsync conflicts list`"
        ),
        (Action::CaseCollision { local }, false) => format!(
            "; not taken by {peer}: it differs only in letter case from its {local}; see `botsync conflicts list` there"
        ),
        _ => String::new(),
    }
}
