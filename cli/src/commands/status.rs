//! `botsync status` (and `botsync` alone): this workspace, its daemon, and per peer whether it
//! answers (and why not), whether the two trees are equal, what would move each way, and when
//! the last sync was.
//!
//! Each peer is asked with a dry-run session (one round trip when the roots are equal, plus one
//! for its parity report, judged as `botsync parity` does): over the daemon's kept connection
//! when a daemon runs, else over a dial that waits at most [`DIAL`]. Nothing is written on
//! either side.

use std::time::Duration;

use anyhow::Result;
use botsync_engine::RelPath;
use botsync_engine::rules::{Decision, Selection};
use botsync_proto::messages::SessionMode;
use serde::Serialize;

use super::skipped::{self, SkippedView};
use super::sync::{Amount, How, amount, session_with};
use crate::context::STATE_DIR;
use crate::daemon::DaemonView;
use crate::node::Node;
use crate::node::last_sync::{self, SyncRecord};
use crate::node::peers::Peer;
use crate::output;
use crate::verb::{Ctx, Reply};

/// Longest wait for a peer's answer to a dial.
pub const DIAL: Duration = Duration::from_secs(2);
/// Longest a peer's whole probe may take (a dial that answered, then a dry-run plan).
const PROBE: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
struct StatusView {
    ok: bool,
    workspace: String,
    name: String,
    id: String,
    files_indexed: u64,
    root: String,
    daemon: Option<DaemonView>,
    /// What this status's rescan found changed since the last scan (null inside a daemon,
    /// whose watcher rescans on every change).
    local_changes: Option<LocalChanges>,
    /// Local files some answering peer does not have yet (null if no peer answered).
    pending_changes: Option<u64>,
    /// Conflict copies kept under `.botsync/conflicts/` awaiting review.
    open_conflicts: u64,
    /// Private paths an explicit `include` selects (`IDENTITY.md`, `config/`).
    private_included: Vec<String>,
    skipped: Vec<SkippedView>,
    peers: Vec<PeerStatus>,
}

#[derive(Debug, Serialize)]
struct LocalChanges {
    added: u64,
    modified: u64,
    deleted: u64,
}

#[derive(Debug, Serialize)]
struct PeerStatus {
    name: String,
    host: String,
    port: u16,
    id: String,
    reachable: bool,
    /// Why it is not reachable.
    error: Option<String>,
    /// True when both Merkle roots are equal (and neither side skipped a file).
    roots_match: Option<bool>,
    /// What a sync would bring here.
    receive: Option<Amount>,
    /// What a sync would send there.
    send: Option<Amount>,
    last_sync: Option<SyncRecord>,
    /// Its parity (`parity` verb's verdict: `in_parity`, `behind`, `ahead`, `diverged`,
    /// `differs_by_policy`, `mesh_drift`), from this status's dry run; null if it did not answer
    /// or cannot tell (an older botsync).
    parity: Option<super::parity::State>,
    /// The parity in one line.
    parity_line: Option<String>,
    /// The last time its changes arrived here (its push or our pull), from the sync log.
    last_in: Option<Moved>,
    /// The last time our changes went to it (our push or sync), from the sync log.
    last_out: Option<Moved>,
    #[serde(skip)]
    to_send: Vec<String>,
}

/// Files that moved in one session, as the sync log recorded them.
#[derive(Debug, Serialize)]
struct Moved {
    /// When (UTC).
    at: String,
    /// How many files were written or deleted.
    files: u64,
    /// Some of them.
    paths: Vec<String>,
    /// Who made the versions (for `last_in`: `@agent on peer`) or who ran the session here
    /// (for `last_out`: the agent).
    by: Vec<String>,
}

impl Moved {
    fn describe(&self) -> String {
        let mut s = format!(
            "{} UTC, {} file{}",
            self.at,
            self.files,
            if self.files == 1 { "" } else { "s" }
        );
        if !self.by.is_empty() {
            s.push_str(&format!(" by {}", self.by.join(", ")));
        }
        if !self.paths.is_empty() {
            let more = if self.files as usize > self.paths.len() {
                ", ..."
            } else {
                ""
            };
            s.push_str(&format!(" ({}{more})", self.paths.join(", ")));
        }
        s
    }
}

/// The newest logged sessions with `peer` that brought changes in, and that sent changes out.
fn last_moves(
    log: &[botsync_engine::store::SessionRecord],
    peer: &str,
) -> (Option<Moved>, Option<Moved>) {
    let ok = |r: &&botsync_engine::store::SessionRecord| r.peer == peer && r.error.is_none();
    let last_in = log
        .iter()
        .filter(ok)
        .find(|r| r.received > 0)
        .map(|r| Moved {
            at: super::history::utc(r.at_ns),
            files: r.received,
            paths: r.in_paths.clone(),
            by: r.in_by.clone(),
        });
    let last_out = log.iter().filter(ok).find(|r| r.sent > 0).map(|r| Moved {
        at: super::history::utc(r.at_ns),
        files: r.sent,
        paths: r.out_paths.clone(),
        by: if r.agent.is_empty() {
            Vec::new()
        } else {
            vec![format!("@{}", r.agent)]
        },
    });
    (last_in, last_out)
}

/// `botsync status`.
pub fn status(ctx: &Ctx) -> Result<Reply> {
    let node = ctx.node()?;
    let peers = node.peers()?;
    let mut skipped_views = Vec::new();
    let local_changes = if ctx.daemon.is_none() {
        let r = node.replica.rescan()?;
        skipped_views.extend(r.scan.skipped.iter().map(SkippedView::of));
        Some(LocalChanges {
            added: r.scan.added,
            modified: r.scan.modified + r.scan.metadata_only,
            deleted: r.scan.deleted,
        })
    } else {
        None
    };
    let last = last_sync::load(&ctx.root.join(STATE_DIR));
    let log = node
        .replica
        .workspace()
        .store()
        .sessions_recent(botsync_engine::store::SESSIONS_KEPT)
        .unwrap_or_default();
    let mut statuses = Vec::new();
    for p in &peers.peers {
        let mut st = probe(ctx, &node, p);
        st.last_sync = last.get(&p.name).cloned();
        (st.last_in, st.last_out) = last_moves(&log, &p.name);
        statuses.push(st);
    }
    let answered = statuses.iter().any(|s| s.reachable);
    let pending_changes = answered.then(|| {
        let mut paths: Vec<&String> = statuses.iter().flat_map(|s| &s.to_send).collect();
        paths.sort();
        paths.dedup();
        paths.len() as u64
    });
    let (tree_root, files) = node.replica.workspace().snapshot();
    let view = StatusView {
        ok: true,
        workspace: ctx.root.display().to_string(),
        name: node.name.clone(),
        id: node.identity.peer_id().to_copy_safe(),
        files_indexed: files,
        root: tree_root.to_hex(),
        daemon: ctx.daemon.as_ref().map(|d| d.view()),
        local_changes,
        pending_changes,
        open_conflicts: crate::commands::conflicts::open_conflicts(node.replica.workspace()) as u64,
        private_included: private_included(&node),
        skipped: skipped::dedup(skipped_views),
        peers: statuses,
    };
    let human = human(&view);
    // Open conflicts need the user's attention: exit 3, as `conflicts list` does.
    let attention = view.open_conflicts > 0;
    let mut reply = Reply::ok(view, human)?;
    if attention {
        reply.exit_code = crate::exit::ATTENTION;
    }
    Ok(reply)
}

/// Ask `peer` with a dry-run session; how it answered.
fn probe(ctx: &Ctx, node: &std::sync::Arc<Node>, peer: &Peer) -> PeerStatus {
    let mut st = PeerStatus {
        name: peer.name.clone(),
        host: peer.host.clone(),
        port: peer.port,
        id: peer.id.to_copy_safe(),
        reachable: false,
        error: None,
        roots_match: None,
        receive: None,
        send: None,
        last_sync: None,
        parity: None,
        parity_line: None,
        last_in: None,
        last_out: None,
        to_send: Vec::new(),
    };
    if let Some(d) = &ctx.daemon {
        // The kept link redials on its own: a peer it cannot reach is not dialed again here.
        let (connected, error) = d.links.reachability(peer);
        if !connected && error.is_some() {
            st.error = error;
            return st;
        }
    }
    let how = How {
        dry_run: true,
        parity: true,
        ..How::default()
    };
    let asked = ctx.rt.block_on(async {
        tokio::time::timeout(
            PROBE,
            session_with(ctx, node, peer, SessionMode::Sync, how, Some(DIAL)),
        )
        .await
    });
    match asked {
        Err(_) => st.error = Some(format!("no answer within {} s", PROBE.as_secs())),
        Ok(Err(e)) => st.error = Some(crate::exit::one_line(&e)),
        Ok(Ok(r)) => {
            st.reachable = true;
            st.roots_match = Some(r.in_sync);
            st.receive = Some(amount(&r.pulled));
            st.send = Some(amount(&r.pushed));
            if let Ok(Some(p)) = super::parity::judge(node, peer, &r) {
                st.parity = Some(p.state);
                st.parity_line = Some(p.summary());
            }
            st.to_send = r
                .pushed
                .iter()
                .filter(|i| i.action.writes_file())
                .map(|i| i.path.to_string())
                .collect();
        }
    }
    st
}

/// `IDENTITY.md` and `config/` are private by default; an explicit `include` may select them.
fn private_included(node: &Node) -> Vec<String> {
    let Ok(selection) = Selection::new(node.replica.workspace().config()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(p) = RelPath::new("IDENTITY.md")
        && selection.decide(&p, false) == Decision::Synced
    {
        out.push("IDENTITY.md".to_owned());
    }
    // Wildcards are not solved exactly: an include that names config/ is what counts.
    let config = node.replica.workspace().config();
    if config
        .include
        .iter()
        .any(|p| p.trim_start_matches('/').starts_with("config"))
    {
        out.push("config/".to_owned());
    }
    out
}

fn human(v: &StatusView) -> String {
    let mut s = format!(
        "workspace {} ({})\nid {}\n{} files indexed",
        v.workspace, v.name, v.id, v.files_indexed
    );
    if let Some(c) = &v.local_changes {
        s.push_str(&format!(
            "; this rescan found {} added, {} modified, {} deleted",
            c.added, c.modified, c.deleted
        ));
    }
    s.push('\n');
    match v.pending_changes {
        Some(0) => s.push_str("no local changes waiting for a peer\n"),
        Some(n) => s.push_str(&format!(
            "{n} local changes not yet on every answering peer (`botsync sync` sends them)\n"
        )),
        None => {}
    }
    match &v.daemon {
        Some(d) => s.push_str(&format!(
            "daemon pid {} listening on {}; auto-sync {}\n",
            d.pid,
            d.listening,
            if d.auto { "on" } else { "off" }
        )),
        None => {
            s.push_str("no daemon running (start one with `botsync serve` or `botsync auto on`)\n")
        }
    }
    if v.open_conflicts > 0 {
        s.push_str(&format!(
            "{} open conflicts: see `botsync conflicts list`\n",
            v.open_conflicts
        ));
    }
    for p in &v.private_included {
        s.push_str(&format!(
            "note: {p} is private by default but your config.json `include` syncs it\n"
        ));
    }
    for sk in &v.skipped {
        s.push_str(&format!("!! {}\n", sk.line()));
    }
    if v.peers.is_empty() {
        s.push_str("no peers; add one with `botsync add NAME HOST[:PORT] --id PEER_ID`\n");
    }
    for p in &v.peers {
        let short: String = p.id.chars().filter(|c| *c != '-').take(8).collect();
        s.push_str(&format!(
            "peer {:<16} {}:{}  {short}  ",
            p.name, p.host, p.port
        ));
        if p.reachable {
            s.push_str("reachable");
            match (p.roots_match, p.receive, p.send) {
                (Some(true), _, _) => s.push_str(", in sync"),
                (_, Some(rx), Some(tx)) => s.push_str(&format!(
                    ", differs: {} to receive ({}), {} to send ({})",
                    rx.files,
                    output::bytes(rx.bytes),
                    tx.files,
                    output::bytes(tx.bytes)
                )),
                _ => s.push_str(", differs"),
            }
        } else {
            s.push_str(&format!(
                "unreachable ({})",
                p.error.as_deref().unwrap_or("no answer yet")
            ));
        }
        match &p.last_sync {
            Some(l) => s.push_str(&format!("; last sync {}", l.describe())),
            None => s.push_str("; never synced"),
        }
        if let Some(line) = &p.parity_line {
            s.push_str(&format!("\n  parity: {line}"));
        }
        if let Some(m) = &p.last_in {
            s.push_str(&format!("\n  last in: {}", m.describe()));
        }
        if let Some(m) = &p.last_out {
            s.push_str(&format!("\n  last out: {}", m.describe()));
        }
        s.push('\n');
    }
    s
}
