//! `history [PATH]` (the sync log and what sync changed, per file) and `restore PATH[@VERSION]`
//! (bring a kept version back as a new local change). docs/CONFLICTS.md, *History and restore*.

use std::collections::HashMap;

use anyhow::Result;
use botsync_engine::plan::{ItemReport, Outcome};
use botsync_engine::store::{HistoryAction, HistoryRecord, SessionRecord};
use botsync_engine::workspace::{ReviewError, Workspace, WorkspaceError};
use botsync_engine::{MachineName, PeerId};
use botsync_proto::messages::SessionMode;
use botsync_proto::session::SessionReport;
use botsync_proto::session::server::ServeReport;
use clap::Args;
use serde::Serialize;

use crate::commands::conflicts::parse_path;
use crate::exit::usage;
use crate::node::Node;
use crate::output;
use crate::verb::{Ctx, Reply};

/// Arguments of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// One file's versions (relative to the workspace root); default: the sync log and the
    /// latest changes of every file.
    pub path: Option<String>,
    /// Show at most this many records of each kind.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// `PATH` or `PATH@VERSION`: VERSION is the start of a content hash as `history PATH`
    /// prints it (default: the version the latest sync replaced or deleted).
    pub target: String,
    /// Say which version would be restored and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
struct FileView {
    time: String,
    at_ns: i64,
    path: String,
    action: &'static str,
    /// The short id of the peer that made the version now in place.
    peer: String,
    /// Its name, when it is this workspace or a configured peer.
    peer_name: String,
    /// The machine the version was made on, as that machine names itself (`peer_name` for a
    /// change recorded before names were carried).
    machine: String,
    agent: String,
    size: u64,
    /// The version now in place after the change (absent after a deletion).
    hash: Option<String>,
    /// The version the change replaced or deleted: restorable for the retention period.
    replaced: Option<String>,
}

impl FileView {
    fn of(r: &HistoryRecord, names: &PeerNames) -> FileView {
        FileView {
            time: utc(r.at_ns),
            at_ns: r.at_ns,
            path: r.path.to_string(),
            action: match r.action {
                HistoryAction::Created => "created",
                HistoryAction::Modified => "modified",
                HistoryAction::Deleted => "deleted",
                HistoryAction::Restored => "restored",
                HistoryAction::Merged => "merged",
            },
            peer: r.from_peer.short(),
            peer_name: names.name(&r.from_peer),
            machine: names.machine(&r.from_peer, &r.machine),
            agent: r.agent.as_str().to_owned(),
            size: r.bytes,
            hash: r.new_content.map(|h| h.short()),
            replaced: r.old_content.map(|h| h.short()),
        }
    }
}

/// `botsync history [PATH]`.
pub fn history(ctx: &Ctx, typed: Option<&str>, limit: usize) -> Result<Reply> {
    let path = typed.map(|t| parse_path(ctx, t)).transpose()?;
    let node = ctx.node()?;
    let ws = node.replica.workspace();
    let names = PeerNames::of(&node);
    let files: Vec<FileView> = ws
        .history(path.as_ref(), limit)?
        .iter()
        .map(|r| FileView::of(r, &names))
        .collect();
    let sessions: Vec<SessionRecord> = match &path {
        Some(_) => Vec::new(),
        None => ws.store().sessions_recent(limit)?,
    };
    let mut human = String::new();
    if path.is_none() {
        if sessions.is_empty() {
            human.push_str("no syncs recorded yet\n");
        } else {
            human.push_str("syncs (newest first):\n");
        }
        for s in &sessions {
            human.push_str(&format!(
                "  {}  {} {}: {} in, {} out",
                utc(s.at_ns),
                s.direction,
                s.peer,
                s.received,
                s.sent
            ));
            if s.conflicts > 0 {
                human.push_str(&format!(", {} conflicts", s.conflicts));
            }
            if let Some(e) = &s.error {
                human.push_str(&format!(", FAILED: {e}"));
            }
            human.push('\n');
        }
    }
    match (&path, files.is_empty()) {
        (Some(p), true) => human.push_str(&format!("no kept change of {p} recorded\n")),
        (None, true) => human.push_str("no file changes recorded\n"),
        (Some(p), false) => human.push_str(&format!("{p} (newest first):\n")),
        (None, false) => human.push_str("file changes (newest first):\n"),
    }
    for f in &files {
        human.push_str(&format!(
            "  {}  {:<8} {}  by {}{}  {}  {}",
            f.time,
            f.action,
            f.path,
            f.machine,
            if f.agent.is_empty() {
                String::new()
            } else {
                format!("/{}", f.agent)
            },
            output::bytes(f.size),
            f.hash.as_deref().unwrap_or("-"),
        ));
        if let Some(old) = &f.replaced {
            human.push_str(&format!(
                "  (replaced {old}: `botsync restore {}@{old}`)",
                f.path
            ));
        }
        human.push('\n');
    }
    // Moved in, not copied: a long history is a large document.
    let mut doc = serde_json::Map::new();
    doc.insert("ok".into(), true.into());
    doc.insert("sessions".into(), serde_json::to_value(sessions)?);
    doc.insert("files".into(), serde_json::to_value(files)?);
    Ok(Reply::ok_doc(doc.into(), human))
}

/// `botsync restore PATH[@VERSION]`.
pub fn restore(ctx: &Ctx, target: &str, dry_run: bool) -> Result<Reply> {
    let (typed, version) = match target.rsplit_once('@') {
        Some((p, v)) if !v.is_empty() && v.chars().all(|c| c.is_ascii_hexdigit()) => (p, Some(v)),
        _ => (target, None),
    };
    let path = parse_path(ctx, typed)?;
    let node = ctx.node()?;
    let restored = node
        .replica
        .local_change(|ws, now| ws.restore(&path, version, dry_run, now))
        .map_err(|e| match e {
            WorkspaceError::Review(e @ ReviewError::UnknownPath(_)) => usage(e),
            other => other.into(),
        })?;
    let human = if restored.written && dry_run {
        format!(
            "would restore {} to version {} ({}); nothing was changed (dry run)\n",
            restored.path,
            restored.content.short(),
            output::bytes(restored.size)
        )
    } else if restored.written {
        format!(
            "restored {} to version {} ({}); it syncs as a local edit\n",
            restored.path,
            restored.content.short(),
            output::bytes(restored.size)
        )
    } else {
        format!(
            "{} already holds version {}; nothing to do\n",
            restored.path,
            restored.content.short()
        )
    };
    let doc = serde_json::json!({
        "ok": true,
        "path": restored.path,
        "version": restored.content.short(),
        "size": restored.size,
        "written": restored.written && !dry_run,
        "dry_run": dry_run,
        "would_write": restored.written && dry_run,
    });
    Reply::ok(doc, human)
}

/// Names for peer ids: the configured peers' names, and this workspace's own name for itself.
#[derive(Debug, Default)]
pub struct PeerNames(HashMap<PeerId, String>);

impl PeerNames {
    /// The names `node` knows (none if peers.json cannot be read: ids are shown instead).
    pub fn of(node: &Node) -> PeerNames {
        let mut names: HashMap<PeerId, String> = node
            .peers()
            .map(|p| p.peers.into_iter().map(|p| (p.id, p.name)).collect())
            .unwrap_or_default();
        names.insert(node.identity.peer_id(), node.name.clone());
        PeerNames(names)
    }

    /// Names from `(id, name)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (PeerId, String)>) -> PeerNames {
        PeerNames(pairs.into_iter().collect())
    }

    /// The name of `id`, or its short form.
    pub fn name(&self, id: &PeerId) -> String {
        self.0.get(id).cloned().unwrap_or_else(|| id.short())
    }

    /// The machine a change was made on: the name it carries, or (for a change recorded before
    /// names were carried) the name this workspace knows its peer by.
    pub fn machine(&self, peer: &PeerId, machine: &MachineName) -> String {
        if machine.as_str().is_empty() {
            self.name(peer)
        } else {
            machine.as_str().to_owned()
        }
    }

    /// The name of a copy-safe id as a record holds it.
    pub fn name_of(&self, copy_safe: &str) -> String {
        match copy_safe.parse::<PeerId>() {
            Ok(id) => self.name(&id),
            Err(_) => copy_safe.to_owned(),
        }
    }
}

/// Append a session to the sync log (`history`, the `in`/`out` lines of `status`); a failure to
/// log only warns. `agent` ran it here; `names` turns authors' peer ids into names.
pub fn log_session(
    ws: &Workspace,
    peer: &str,
    mode: SessionMode,
    agent: &botsync_engine::AgentLabel,
    names: &PeerNames,
    result: &Result<SessionReport>,
) {
    // A session that changed nothing (an automatic heartbeat) is not worth a line.
    if result
        .as_ref()
        .is_ok_and(|r| r.pulled.is_empty() && r.pushed.is_empty())
    {
        return;
    }
    let none: &[ItemReport] = &[];
    let (pulled, pushed) = result
        .as_ref()
        .map_or((none, none), |r| (&r.pulled[..], &r.pushed[..]));
    let record = SessionRecord {
        at_ns: crate::node::replica::now_ns(),
        peer: peer.to_owned(),
        direction: match mode {
            SessionMode::Sync => "sync",
            SessionMode::Push => "push",
            SessionMode::Pull => "pull",
            SessionMode::DryRun => "dry-run",
        }
        .to_owned(),
        received: moved(pulled).count() as u64,
        sent: moved(pushed).count() as u64,
        conflicts: pulled
            .iter()
            .chain(pushed)
            .filter(|i| i.action.is_conflict())
            .count() as u64,
        error: result.as_ref().err().map(crate::exit::one_line),
        in_paths: paths(pulled),
        out_paths: paths(pushed),
        in_by: authors(pulled, names),
        agent: agent.as_str().to_owned(),
    };
    if let Err(e) = ws.store().session_append(&record) {
        tracing::warn!(error = %e, "could not log the session");
    }
}

/// Log a session a peer started here (the daemon answered it): only what it pushed to us is
/// known, so `sent` is 0.
pub fn log_served(ws: &Workspace, peer: &str, names: &PeerNames, report: &ServeReport) {
    let received = moved(&report.applied).count() as u64;
    let conflicts = report
        .applied
        .iter()
        .filter(|i| i.action.is_conflict())
        .count() as u64;
    if received == 0 && conflicts == 0 {
        return;
    }
    let record = SessionRecord {
        at_ns: crate::node::replica::now_ns(),
        peer: peer.to_owned(),
        direction: "served".to_owned(),
        received,
        sent: 0,
        conflicts,
        error: None,
        in_paths: paths(&report.applied),
        out_paths: Vec::new(),
        in_by: authors(&report.applied, names),
        agent: String::new(),
    };
    if let Err(e) = ws.store().session_append(&record) {
        tracing::warn!(error = %e, "could not log the session");
    }
}

/// The items that wrote or deleted a file.
fn moved(items: &[ItemReport]) -> impl Iterator<Item = &ItemReport> {
    items
        .iter()
        .filter(|i| i.action.writes_file() && i.outcome == Outcome::Done)
}

fn paths(items: &[ItemReport]) -> Vec<String> {
    moved(items)
        .take(botsync_engine::store::PATHS_KEPT)
        .map(|i| i.path.to_string())
        .collect()
}

/// Who made the versions of `items` that moved: `@agent on peer` (or the peer alone), each once.
fn authors(items: &[ItemReport], names: &PeerNames) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for by in moved(items).filter_map(|i| i.changed_by.as_ref()) {
        let peer = names.machine(&by.peer, &by.machine);
        let who = if by.agent.as_str().is_empty() {
            peer
        } else {
            format!("@{} on {peer}", by.agent)
        };
        if !out.contains(&who) {
            out.push(who);
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` UTC of a time in ns since the epoch.
pub fn utc(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_709_210_096 * 1_000_000_000), "2024-02-29 12:34:56");
    }
}
