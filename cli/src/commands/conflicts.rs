//! `conflicts list|show|resolve`: review the losing versions sync kept, and end conflicts
//! (docs/CONFLICTS.md, *Reviewing and resolving*).

use anyhow::{Context, Result};
use botsync_engine::RelPath;
use botsync_engine::conflicts::{ConflictKind, ConflictRecord, Side};
use botsync_engine::workspace::{Keep, ReviewError, Workspace, WorkspaceError};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::commands::history::{PeerNames, utc};
use crate::exit::{ATTENTION, OK, usage};
use crate::output;
use crate::verb::{Ctx, Reply};

/// Arguments of `conflicts`.
#[derive(Debug, Args)]
pub struct ConflictsArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<ConflictsAction>,
}

/// The `conflicts` sub-verbs.
#[derive(Debug, Subcommand)]
pub enum ConflictsAction {
    /// List the open conflicts (exit code 3 while any is open).
    List,
    /// Show a conflict: its record and a unified diff of the kept version against the file.
    Show {
        /// The path in conflict (relative to the workspace root).
        path: String,
    },
    /// End a conflict by keeping one version (or both, or the file as you merged it).
    Resolve(ResolveArgs),
}

/// Arguments of `conflicts resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The path in conflict (relative to the workspace root); omit with --all.
    pub path: Option<String>,
    /// Which version to keep.
    #[arg(long, value_enum)]
    pub keep: KeepArg,
    /// Resolve every open conflict the same way.
    #[arg(long, conflicts_with = "path")]
    pub all: bool,
    /// Say what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--keep` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepArg {
    /// This machine's version.
    Local,
    /// The peer's version.
    Remote,
    /// Both: this machine's at the path, the peer's beside it as `NAME.conflict-PEER.EXT`.
    Both,
    /// The file as it is now (you merged it by hand).
    Merged,
}

impl KeepArg {
    fn engine(self) -> Keep {
        match self {
            KeepArg::Local => Keep::Local,
            KeepArg::Remote => Keep::Remote,
            KeepArg::Both => Keep::Both,
            KeepArg::Merged => Keep::Merged,
        }
    }
}

/// A `conflicts` request, as data (it runs in the daemon when one holds the workspace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ConflictsRequest {
    /// `conflicts list`.
    List,
    /// `conflicts show PATH`.
    Show {
        /// The path as typed.
        path: String,
    },
    /// `conflicts resolve`.
    Resolve {
        /// The path as typed (`None` with `--all`).
        path: Option<String>,
        /// What to keep.
        keep: KeepArg,
        /// Change nothing.
        dry_run: bool,
    },
}

impl ConflictsRequest {
    /// The request for parsed arguments; a resolve needs a path or `--all`.
    pub fn from_args(a: ConflictsArgs) -> Result<ConflictsRequest> {
        Ok(match a.action {
            None | Some(ConflictsAction::List) => ConflictsRequest::List,
            Some(ConflictsAction::Show { path }) => ConflictsRequest::Show { path },
            Some(ConflictsAction::Resolve(r)) => {
                if r.path.is_none() && !r.all {
                    return Err(usage(
                        "conflicts resolve needs a PATH, or --all to resolve every open conflict",
                    ));
                }
                ConflictsRequest::Resolve {
                    path: r.path,
                    keep: r.keep,
                    dry_run: r.dry_run,
                }
            }
        })
    }
}

/// How many conflicts are open in `ws` (for `status`); 0 if the records cannot be read.
pub fn open_conflicts(ws: &Workspace) -> usize {
    ws.open_conflicts().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not read the conflict records");
        0
    })
}

/// Run a `conflicts` request.
pub fn run(ctx: &Ctx, request: ConflictsRequest) -> Result<Reply> {
    match request {
        ConflictsRequest::List => list(ctx),
        ConflictsRequest::Show { path } => show(ctx, &path),
        ConflictsRequest::Resolve {
            path,
            keep,
            dry_run,
        } => resolve(ctx, path.as_deref(), keep, dry_run),
    }
}

/// A path as the user typed it, relative to the workspace root (a leading `./` or the root's
/// absolute prefix is accepted).
pub fn parse_path(ctx: &Ctx, typed: &str) -> Result<RelPath> {
    let p = std::path::Path::new(typed);
    let rel = match p.strip_prefix(&ctx.root) {
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => typed.trim_start_matches("./").to_owned(),
    };
    RelPath::new(&rel).map_err(|e| {
        usage(format!(
            "{typed:?} is not a path in the workspace ({e}); give it relative to {}",
            ctx.root.display()
        ))
    })
}

fn list(ctx: &Ctx) -> Result<Reply> {
    let node = ctx.node()?;
    let open = node.replica.workspace().conflicts()?;
    let names = PeerNames::of(&node);
    let mut human = match open.len() {
        0 => "no open conflicts\n".to_owned(),
        1 => "1 open conflict:\n".to_owned(),
        n => format!("{n} open conflicts:\n"),
    };
    for r in &open {
        human.push_str(&format!("  {}\n", describe(r, &names)));
    }
    if !open.is_empty() {
        human.push_str(
            "see one with `botsync conflicts show PATH`; end it with `botsync conflicts resolve PATH --keep local|remote|both|merged`\n",
        );
    }
    // Skill state keys with kept losing values are conflicts too (ended with `state resolve`).
    let every_key =
        botsync_engine::state::Patterns::new::<&str>(&[]).map_err(anyhow::Error::msg)?;
    let mut state_keys: Vec<String> = node
        .replica
        .workspace()
        .store()
        .state_conflicts(&every_key)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    state_keys.dedup();
    if !state_keys.is_empty() {
        human.push_str(&format!(
            "{} skill state key(s) with losing values kept for review: {}; see them with `botsync state list --json`, end each with `botsync state resolve KEY [--keep current|kept]`\n",
            state_keys.len(),
            state_keys.join(", ")
        ));
    }
    let code = if open.is_empty() && state_keys.is_empty() {
        OK
    } else {
        ATTENTION
    };
    let doc = serde_json::json!({
        "ok": true,
        "exit_code": code,
        "open": open.len(),
        "conflicts": open,
        "state_keys": state_keys,
    });
    let mut reply = Reply::ok(doc, human)?;
    reply.exit_code = code;
    Ok(reply)
}

fn show(ctx: &Ctx, typed: &str) -> Result<Reply> {
    let path = parse_path(ctx, typed)?;
    let node = ctx.node()?;
    let ws = node.replica.workspace();
    let records: Vec<ConflictRecord> = ws
        .conflicts()?
        .into_iter()
        .filter(|r| {
            r.path == path
                || matches!(&r.kind, ConflictKind::CaseCollision { local_path } if *local_path == path)
        })
        .collect();
    if records.is_empty() {
        return Err(usage(format!(
            "no open conflict for {path}; `botsync conflicts list` shows the open ones"
        )));
    }
    let names = PeerNames::of(&node);
    let mut human = String::new();
    let mut diffs = Vec::new();
    for r in &records {
        human.push_str(&format!("{}\n", describe(r, &names)));
        let diff = diff_of(ctx, ws, r)?;
        human.push_str(&diff);
        if !diff.ends_with('\n') {
            human.push('\n');
        }
        diffs.push(diff);
    }
    let doc = serde_json::json!({ "ok": true, "conflicts": records, "diffs": diffs });
    let mut reply = Reply::ok(doc, human)?;
    reply.exit_code = ATTENTION;
    Ok(reply)
}

/// The unified diff from the kept version to the file now at the path (or why there is none).
fn diff_of(ctx: &Ctx, ws: &Workspace, r: &ConflictRecord) -> Result<String> {
    let Some(kept) = ws.kept_copy(r) else {
        return Ok(match &r.kind {
            ConflictKind::CaseCollision { local_path } => format!(
                "the peer's {} was not taken: it would replace {local_path} on a case-insensitive file system\n",
                r.path
            ),
            ConflictKind::Content | ConflictKind::MergedKeys { .. } => {
                "no copy of the losing version was kept\n".to_owned()
            }
        });
    };
    let old = std::fs::read(&kept)
        .with_context(|| format!("reading the kept copy {}", kept.display()))?;
    let new = std::fs::read(r.path.on_disk(&ctx.root)).unwrap_or_default();
    let (Ok(old_text), Ok(new_text)) = (std::str::from_utf8(&old), std::str::from_utf8(&new))
    else {
        return Ok(format!(
            "binary files differ: kept version {} , current file {}\n",
            output::bytes(old.len() as u64),
            output::bytes(new.len() as u64)
        ));
    };
    let (old_label, new_label) = match r.lost {
        Side::Local => ("local (kept)", "remote (current)"),
        Side::Remote => ("remote (kept)", "local (current)"),
    };
    Ok(similar::TextDiff::from_lines(old_text, new_text)
        .unified_diff()
        .header(
            &format!("{} {old_label}", r.path),
            &format!("{} {new_label}", r.path),
        )
        .to_string())
}

fn resolve(ctx: &Ctx, typed: Option<&str>, keep: KeepArg, dry_run: bool) -> Result<Reply> {
    let path = typed.map(|t| parse_path(ctx, t)).transpose()?;
    let node = ctx.node()?;
    let resolved = node
        .replica
        .local_change(|ws, now| ws.resolve(path.as_ref(), keep.engine(), dry_run, now))
        .map_err(|e| match e {
            WorkspaceError::Review(e @ ReviewError::NoConflict(_)) => usage(e),
            other => other.into(),
        })?;
    let left = node.replica.workspace().open_conflicts()?;
    let verb = if dry_run { "would resolve" } else { "resolved" };
    let mut human = String::new();
    for r in &resolved {
        human.push_str(&format!(
            "{verb} {} keeping {}",
            r.record.path,
            keep_name(keep)
        ));
        if !r.changed.is_empty() {
            let names: Vec<String> = r.changed.iter().map(ToString::to_string).collect();
            let verb = if dry_run { "would change" } else { "changed" };
            human.push_str(&format!(
                "; {verb} {} (syncs as a local edit)",
                names.join(", ")
            ));
        }
        for u in &r.unsynced {
            human.push_str(&format!(
                "; {u} is outside what this workspace syncs (config.json include): it stays on this machine"
            ));
        }
        human.push('\n');
    }
    if resolved.is_empty() {
        human.push_str("no open conflicts\n");
    }
    let doc = serde_json::json!({
        "ok": true,
        "dry_run": dry_run,
        "resolved": resolved.iter().map(|r| serde_json::json!({
            "path": r.record.path,
            "id": r.record.id,
            "keep": r.keep,
            "changed": r.changed,
            "unsynced": r.unsynced,
        })).collect::<Vec<_>>(),
        "open": left,
    });
    Reply::ok(doc, human)
}

fn keep_name(k: KeepArg) -> &'static str {
    match k {
        KeepArg::Local => "the local version",
        KeepArg::Remote => "the remote version",
        KeepArg::Both => "both versions",
        KeepArg::Merged => "the file as merged",
    }
}

/// One line about a record: which version lost, whose, and where it is kept.
fn describe(r: &ConflictRecord, names: &PeerNames) -> String {
    let who = |v: &botsync_engine::conflicts::VersionFacts| {
        let mut s = if v.machine.is_empty() {
            names.name_of(&v.peer)
        } else {
            v.machine.clone()
        };
        if !v.agent.is_empty() {
            s.push_str(&format!("/{}", v.agent));
        }
        if v.deleted {
            s.push_str(", deleted");
        } else {
            s.push_str(&format!(", {}", output::bytes(v.size)));
        }
        s
    };
    match &r.kind {
        ConflictKind::CaseCollision { local_path } => format!(
            "{}  case collision with our {local_path}: the peer's version ({}) was not taken ({})",
            r.path,
            who(&r.remote),
            utc(r.at_ns)
        ),
        ConflictKind::Content | ConflictKind::MergedKeys { .. } => {
            let (lost, won) = match r.lost {
                Side::Local => (&r.local, &r.remote),
                Side::Remote => (&r.remote, &r.local),
            };
            let mut s = format!(
                "{}  the {} version ({}) lost to the {} one ({}) under `{}`, {}",
                r.path,
                r.lost.name(),
                who(lost),
                match r.lost {
                    Side::Local => "remote",
                    Side::Remote => "local",
                },
                who(won),
                r.policy,
                utc(r.at_ns)
            );
            if let ConflictKind::MergedKeys { keys } = &r.kind {
                s.push_str(&format!(
                    "; merged, but both changed {}: the winner's values were kept there",
                    keys.join(", ")
                ));
            }
            if let Some(k) = &r.kept {
                s.push_str(&format!("; kept here in {k}"));
            }
            s
        }
    }
}
