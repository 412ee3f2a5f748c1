//! `botsync parity [PEER]`: does every peer hold what we hold? Per peer: its Merkle root against
//! ours, the files that differ (behind, ahead or diverged), its selection rules against ours
//! ("differs by policy": the classic sync stuck at 99 %), and which keys of the mesh config
//! differ (an agent missing or stale, an address that differs), as JSON pointers.
//!
//! Each peer is asked with a dry-run session that also asks `GetParity` (over the daemon's kept
//! connection when a daemon runs, else over a dial of our own): nothing is written on either
//! side. [`PeerParity::of`] turns the session's report into the verdict; `status` uses it too.

use std::sync::Arc;

use anyhow::Result;
use botsync_engine::mesh::diff::{self, KeyDiff, KeyState};
use botsync_proto::messages::{MeshFile, ParityInfo, SessionMode};
use botsync_proto::replica::Replica;
use botsync_proto::session::SessionReport;
use clap::Args;
use serde::Serialize;

use super::sync::{How, session_with};
use crate::exit::{ATTENTION, FAILED, OK};
use crate::node::Node;
use crate::node::peers::Peer;
use crate::verb::{Ctx, Reply};

/// At most this many paths are listed per direction (the counts are always complete).
const SHOWN_PATHS: usize = 20;

/// Arguments of `parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// The peer (default: every configured peer).
    pub peer: Option<String>,
}

/// Where a peer stands against us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Same files, same rules, same mesh config.
    InParity,
    /// It has file changes we lack, and lacks none of ours.
    Behind,
    /// We have file changes it lacks, and lack none of its.
    Ahead,
    /// Both sides have changes the other lacks (or conflicting versions).
    Diverged,
    /// It selects different files than we do: a sync cannot make the trees equal.
    DiffersByPolicy,
    /// Files and rules agree; only the mesh config differs.
    MeshDrift,
}

/// One peer's parity, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct PeerParity {
    /// The configured name.
    pub peer: String,
    /// The verdict.
    pub state: State,
    /// True when the Merkle roots are equal and neither side skipped a file.
    pub roots_match: bool,
    /// Its root (hex).
    pub root: String,
    /// Files we would receive from it (count, and the first paths).
    pub behind: PathList,
    /// Files it would receive from us.
    pub ahead: PathList,
    /// Paths whose versions conflict.
    pub conflicts: PathList,
    /// Its rules, when they differ from ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyDiff>,
    /// Keys of the mesh config that differ, per file.
    pub mesh: Vec<MeshDiff>,
}

/// A bounded list of paths with the full count.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PathList {
    /// How many paths.
    pub count: usize,
    /// The first [`SHOWN_PATHS`] of them.
    pub paths: Vec<String>,
}

/// How two selections differ.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDiff {
    /// Rules only we have.
    pub only_ours: Vec<String>,
    /// Rules only the peer has.
    pub only_theirs: Vec<String>,
}

/// The keys of one mesh config file that differ.
#[derive(Debug, Clone, Serialize)]
pub struct MeshDiff {
    /// The file.
    pub path: String,
    /// The differing keys, as JSON pointers; the whole file (`""`) when one side lacks it.
    pub keys: Vec<KeyDiff>,
}

impl PeerParity {
    /// The verdict on `peer` from a dry-run session `report` that carried its parity report,
    /// against our own rules and stripped mesh config.
    pub fn of(
        peer: &str,
        report: &SessionReport,
        info: &ParityInfo,
        ours: &botsync_proto::messages::Policy,
        our_mesh: &[MeshFile],
    ) -> PeerParity {
        let moving = |items: &[botsync_engine::plan::ItemReport]| {
            list(
                items
                    .iter()
                    .filter(|i| i.action.writes_file() && !i.action.is_conflict())
                    .map(|i| i.path.to_string()),
            )
        };
        let behind = moving(&report.pulled);
        let ahead = moving(&report.pushed);
        let conflicts = list(
            report
                .pulled
                .iter()
                .chain(&report.pushed)
                .filter(|i| i.action.is_conflict())
                .map(|i| i.path.to_string()),
        );
        let policy = (info.policy.digest != ours.digest).then(|| PolicyDiff {
            only_ours: minus(&ours.rules, &info.policy.rules),
            only_theirs: minus(&info.policy.rules, &ours.rules),
        });
        let mesh = mesh_diffs(our_mesh, &info.mesh);
        let state = if policy.is_some() {
            State::DiffersByPolicy
        } else if !report.in_sync {
            match (behind.count, ahead.count, conflicts.count) {
                (_, _, c) if c > 0 => State::Diverged,
                (b, 0, _) if b > 0 => State::Behind,
                (0, a, _) if a > 0 => State::Ahead,
                _ => State::Diverged,
            }
        } else if !mesh.is_empty() {
            State::MeshDrift
        } else {
            State::InParity
        };
        PeerParity {
            peer: peer.to_owned(),
            state,
            roots_match: report.in_sync,
            root: info.root.to_hex(),
            behind,
            ahead,
            conflicts,
            policy,
            mesh,
        }
    }

    /// One line: `in parity`, `behind: 2 files to receive (memory/a.md, ...)`, ...
    pub fn summary(&self) -> String {
        let mut s = match self.state {
            State::InParity => "in parity".to_owned(),
            State::Behind => format!("behind: {}", files("to receive", &self.behind)),
            State::Ahead => format!("ahead: {}", files("to send", &self.ahead)),
            State::Diverged => {
                let mut parts = Vec::new();
                if self.behind.count > 0 {
                    parts.push(files("to receive", &self.behind));
                }
                if self.ahead.count > 0 {
                    parts.push(files("to send", &self.ahead));
                }
                if self.conflicts.count > 0 {
                    parts.push(files("in conflict", &self.conflicts));
                }
                if parts.is_empty() {
                    parts.push("the trees differ though no file would move".to_owned());
                }
                format!("diverged: {}", parts.join("; "))
            }
            State::DiffersByPolicy => {
                let p = self.policy.as_ref();
                let rules = |v: Option<&Vec<String>>| match v {
                    Some(v) if !v.is_empty() => v.join(", "),
                    _ => "nothing".to_owned(),
                };
                format!(
                    "differs by policy: only here {}; only there {} (align the include/exclude rules in .botsync/config.json)",
                    rules(p.map(|p| &p.only_ours)),
                    rules(p.map(|p| &p.only_theirs))
                )
            }
            State::MeshDrift => "mesh config differs".to_owned(),
        };
        if !self.mesh.is_empty() && self.state != State::InParity {
            let keys: Vec<String> = self
                .mesh
                .iter()
                .flat_map(|m| {
                    m.keys
                        .iter()
                        .map(move |k| format!("{}{k}", file_prefix(&m.path)))
                })
                .take(SHOWN_PATHS)
                .collect();
            s.push_str(&format!("; mesh config keys differ: {}", keys.join(", ")));
        }
        s
    }

    /// True unless it is in parity.
    pub fn drifts(&self) -> bool {
        self.state != State::InParity
    }
}

/// Ask every configured peer (or `peer`) for its parity, and report each.
pub fn run(ctx: &Ctx, peer: Option<&str>) -> Result<Reply> {
    let node = ctx.node()?;
    let peers = node.peers()?.select(peer)?;
    let mut docs = Vec::new();
    let mut human = String::new();
    let mut errors = Vec::new();
    let mut drift = false;
    for p in &peers {
        match check(ctx, &node, p) {
            Ok(Some(parity)) => {
                drift |= parity.drifts();
                human.push_str(&format!("{}: {}\n", parity.peer, parity.summary()));
                docs.push(serde_json::to_value(&parity)?);
            }
            Ok(None) => {
                let line = format!(
                    "parity: peer {} at {}:{} runs a botsync without parity checks; upgrade botsync there",
                    p.name, p.host, p.port
                );
                docs.push(
                    serde_json::json!({ "peer": p.name, "state": "unsupported", "error": line }),
                );
                errors.push(line);
            }
            Err(e) => {
                let line = format!(
                    "parity: cannot reach peer {} at {}:{}: {}; start botsync there (`botsync serve`) or fix its address (`botsync peers`)",
                    p.name,
                    p.host,
                    p.port,
                    crate::exit::one_line(&e)
                );
                docs.push(
                    serde_json::json!({ "peer": p.name, "state": "unreachable", "error": line }),
                );
                errors.push(line);
            }
        }
    }
    let code = if !errors.is_empty() {
        FAILED
    } else if drift {
        ATTENTION
    } else {
        OK
    };
    let doc = serde_json::json!({
        "ok": errors.is_empty(),
        "exit_code": code,
        "in_parity": code == OK,
        "peers": docs,
    });
    let mut reply = Reply::ok(doc, human)?;
    reply.exit_code = code;
    reply.warnings = errors;
    Ok(reply)
}

/// Ask `peer` and judge its answer (`None`: its botsync has no parity checks).
pub(crate) fn check(ctx: &Ctx, node: &Arc<Node>, peer: &Peer) -> Result<Option<PeerParity>> {
    let how = How {
        dry_run: true,
        parity: true,
        ..How::default()
    };
    let report = ctx
        .rt
        .block_on(session_with(ctx, node, peer, SessionMode::Sync, how, None))?;
    judge(node, peer, &report)
}

/// The verdict on `peer` from a dry-run session report that asked for parity (`None` if the
/// peer sent no parity report: its botsync has no parity checks).
pub(crate) fn judge(
    node: &Node,
    peer: &Peer,
    report: &SessionReport,
) -> Result<Option<PeerParity>> {
    let Some(info) = &report.parity else {
        return Ok(None);
    };
    let ours = node.replica.policy()?;
    let our_mesh = node.replica.mesh_config()?;
    Ok(Some(PeerParity::of(
        &peer.name, report, info, &ours, &our_mesh,
    )))
}

fn list(paths: impl Iterator<Item = String>) -> PathList {
    let all: Vec<String> = paths.collect();
    PathList {
        count: all.len(),
        paths: all.into_iter().take(SHOWN_PATHS).collect(),
    }
}

fn files(what: &str, l: &PathList) -> String {
    let noun = if l.count == 1 { "file" } else { "files" };
    let mut s = format!("{} {noun} {what} ({}", l.count, l.paths.join(", "));
    if l.count > l.paths.len() {
        s.push_str(&format!(", and {} more", l.count - l.paths.len()));
    }
    s.push(')');
    s
}

fn minus(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|r| !b.contains(r)).cloned().collect()
}

/// `path:` before a key, except for the default file.
fn file_prefix(path: &str) -> String {
    if path == botsync_engine::mesh::DEFAULT_PATH {
        String::new()
    } else {
        format!("{path}:")
    }
}

/// The differing keys of every designated file either side has.
fn mesh_diffs(ours: &[MeshFile], theirs: &[MeshFile]) -> Vec<MeshDiff> {
    let mut out = Vec::new();
    for o in ours {
        let keys = match theirs.iter().find(|t| t.path == o.path) {
            Some(t) => {
                diff::diff_bytes(&o.content, &t.content).unwrap_or_else(|| whole(KeyState::Differs))
            }
            None => whole(KeyState::MissingThere),
        };
        if !keys.is_empty() {
            out.push(MeshDiff {
                path: o.path.to_string(),
                keys,
            });
        }
    }
    for t in theirs
        .iter()
        .filter(|t| !ours.iter().any(|o| o.path == t.path))
    {
        out.push(MeshDiff {
            path: t.path.to_string(),
            keys: whole(KeyState::MissingHere),
        });
    }
    out
}

fn whole(state: KeyState) -> Vec<KeyDiff> {
    vec![KeyDiff {
        pointer: String::new(),
        state,
    }]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use botsync_engine::plan::{Action, ItemReport, Outcome};
    use botsync_engine::{Hash, RelPath};
    use botsync_proto::messages::Policy;

    use super::*;

    fn item(path: &str, action: Action) -> ItemReport {
        ItemReport {
            path: RelPath::new(path).unwrap(),
            action,
            outcome: Outcome::Done,
            size: 1,
            bytes_fetched: 1,
            conflict_copy: None,
            changed_by: None,
            mtime_ns: 0,
        }
    }

    fn mesh(json: &str) -> Vec<MeshFile> {
        vec![MeshFile {
            path: RelPath::new(botsync_engine::mesh::DEFAULT_PATH).unwrap(),
            content: json.as_bytes().to_vec(),
        }]
    }

    fn info(policy: &Policy, files: Vec<MeshFile>) -> ParityInfo {
        ParityInfo {
            root: Hash::ZERO,
            files: 0,
            policy: policy.clone(),
            mesh: files,
        }
    }

    fn judge(report: &SessionReport, theirs: &ParityInfo, ours: &[MeshFile]) -> PeerParity {
        PeerParity::of(
            "beta",
            report,
            theirs,
            &Policy::of(vec!["include /memory/".into()]),
            ours,
        )
    }

    #[test]
    fn equal_roots_rules_and_mesh_are_in_parity_and_secrets_never_count() {
        let policy = Policy::of(vec!["include /memory/".into()]);
        let report = SessionReport {
            in_sync: true,
            ..Default::default()
        };
        let ours = mesh(r#"{"a": {"token": "<secret>"}}"#);
        let p = judge(&report, &info(&policy, ours.clone()), &ours);
        assert_eq!(p.state, State::InParity);
        assert_eq!(p.summary(), "in parity");
        assert!(!p.drifts());
    }

    #[test]
    fn files_one_way_are_behind_or_ahead_and_both_ways_diverged() {
        let policy = Policy::of(vec!["include /memory/".into()]);
        let theirs = info(&policy, vec![]);
        let mut report = SessionReport {
            pulled: vec![item("memory/a.md", Action::Take)],
            ..Default::default()
        };
        let p = judge(&report, &theirs, &[]);
        assert_eq!(p.state, State::Behind);
        assert_eq!(p.summary(), "behind: 1 file to receive (memory/a.md)");
        report.pushed = vec![item("memory/b.md", Action::Take)];
        assert_eq!(judge(&report, &theirs, &[]).state, State::Diverged);
        report.pulled.clear();
        assert_eq!(judge(&report, &theirs, &[]).state, State::Ahead);
        report.pulled = vec![item("memory/b.md", Action::TakeConflict)];
        let p = judge(&report, &theirs, &[]);
        assert_eq!(p.state, State::Diverged);
        assert_eq!(p.conflicts.paths, ["memory/b.md"]);
    }

    #[test]
    fn other_rules_differ_by_policy_and_name_the_rules() {
        let theirs = info(
            &Policy::of(vec!["include /memory/".into(), "exclude *.tmp".into()]),
            vec![],
        );
        let p = judge(&SessionReport::default(), &theirs, &[]);
        assert_eq!(p.state, State::DiffersByPolicy);
        let policy = p.policy.as_ref().unwrap();
        assert!(policy.only_ours.is_empty());
        assert_eq!(policy.only_theirs, ["exclude *.tmp"]);
    }

    #[test]
    fn mesh_drift_names_the_keys_and_a_file_one_side_lacks() {
        let policy = Policy::of(vec!["include /memory/".into()]);
        let report = SessionReport {
            in_sync: true,
            ..Default::default()
        };
        let ours = mesh(r#"{"agents": {"a": {"ip": "1"}}}"#);
        let theirs = info(&policy, mesh(r#"{"agents": {"a": {"ip": "2"}, "b": {}}}"#));
        let p = judge(&report, &theirs, &ours);
        assert_eq!(p.state, State::MeshDrift);
        assert_eq!(
            p.summary(),
            "mesh config differs; mesh config keys differ: /agents/a/ip (differs), /agents/b (missing here)"
        );
        let p = judge(&report, &info(&policy, vec![]), &ours);
        assert_eq!(p.mesh[0].keys[0].to_string(), "/ (missing there)");
        let many = list((0..25).map(|i| format!("memory/{i}.md")));
        assert_eq!((many.count, many.paths.len()), (25, SHOWN_PATHS));
        assert!(files("to send", &many).ends_with(", and 5 more)"));
    }
}
