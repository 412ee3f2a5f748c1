//! `botsync verify [--repair]`: re-read every synced file and stored chunk against the index,
//! and with `--repair` rebuild what rotted (from local copies, else from the peers, with a pull
//! from each). Exit 3 while anything is wrong.

use anyhow::Result;
use botsync_engine::workspace::{RepairReport, VerifyReport};
use botsync_proto::messages::SessionMode;
use clap::Args;
use serde::Serialize;

use super::sync::{How, session_with};
use crate::exit;
use crate::output;
use crate::verb::{Ctx, Reply};

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Repair what is damaged: from local copies, else pulled back from the peers. A file
    /// changed since the last scan is never overwritten.
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Serialize)]
struct VerifyView {
    ok: bool,
    files: u64,
    bytes: u64,
    damaged: Vec<DamagedView>,
    changed_since_scan: Vec<String>,
    unreadable: Vec<Reason>,
    awaiting_peer: Vec<String>,
    chunks_checked: u64,
    corrupt_chunks_removed: u64,
    repair: Option<RepairView>,
}

#[derive(Debug, Serialize)]
struct DamagedView {
    path: String,
    expected: String,
    found: String,
}

#[derive(Debug, Serialize)]
struct Reason {
    path: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct RepairView {
    restored_locally: Vec<String>,
    taken_from_peers: Vec<String>,
    still_damaged: Vec<String>,
    left: Vec<Reason>,
    pulls: Vec<PullView>,
}

#[derive(Debug, Serialize)]
struct PullView {
    peer: String,
    ok: bool,
    error: Option<String>,
}

/// `botsync verify`.
pub fn run(ctx: &Ctx, repair: bool) -> Result<Reply> {
    let node = ctx.node()?;
    let found = node.replica.verify()?;
    let mut repair_view = None;
    let mut after = None;
    let damaged: Vec<_> = found.damaged.iter().map(|d| d.path.clone()).collect();
    if repair && (!damaged.is_empty() || !found.awaiting_peer.is_empty()) {
        let fixed: RepairReport = node.replica.repair(&damaged)?;
        let mut pulls = Vec::new();
        if !fixed.awaiting_peer.is_empty() || !found.awaiting_peer.is_empty() {
            for p in node.peers()?.select(None)? {
                let r = ctx.rt.block_on(session_with(
                    ctx,
                    &node,
                    &p,
                    SessionMode::Pull,
                    How::default(),
                    None,
                ));
                pulls.push(PullView {
                    peer: p.name.clone(),
                    ok: r.is_ok(),
                    error: r.err().map(|e| exit::one_line(&e)),
                });
            }
        }
        let now = node.replica.verify()?;
        let waited: Vec<String> = fixed
            .awaiting_peer
            .iter()
            .chain(&found.awaiting_peer)
            .map(|p| p.to_string())
            .collect();
        let still: Vec<String> = now.awaiting_peer.iter().map(|p| p.to_string()).collect();
        repair_view = Some(RepairView {
            restored_locally: fixed.restored.iter().map(|p| p.to_string()).collect(),
            taken_from_peers: waited
                .iter()
                .filter(|p| !still.contains(p))
                .cloned()
                .collect(),
            still_damaged: still,
            left: fixed
                .left
                .iter()
                .map(|(p, r)| Reason {
                    path: p.to_string(),
                    reason: r.clone(),
                })
                .collect(),
            pulls,
        });
        after = Some(now);
    } else if repair {
        after = Some(node.replica.verify()?);
    }
    // With --repair, what counts is the state after it (corrupt chunks found were removed, so
    // a later sync fetches them again); without, any damage found.
    let clean = after.as_ref().unwrap_or(&found).is_clean();
    let view = view(&found, repair_view, clean);
    let human = human(&view, repair);
    let code = if clean { exit::OK } else { exit::ATTENTION };
    let mut reply = Reply::ok(view, human)?;
    reply.exit_code = code;
    Ok(reply)
}

fn view(r: &VerifyReport, repair: Option<RepairView>, ok: bool) -> VerifyView {
    VerifyView {
        ok,
        files: r.files,
        bytes: r.bytes,
        damaged: r
            .damaged
            .iter()
            .map(|d| DamagedView {
                path: d.path.to_string(),
                expected: d.expected.to_hex(),
                found: d.found.to_hex(),
            })
            .collect(),
        changed_since_scan: r.changed.iter().map(|p| p.to_string()).collect(),
        unreadable: r
            .unreadable
            .iter()
            .map(|(p, why)| Reason {
                path: p.to_string(),
                reason: why.clone(),
            })
            .collect(),
        awaiting_peer: r.awaiting_peer.iter().map(|p| p.to_string()).collect(),
        chunks_checked: r.chunks.checked,
        corrupt_chunks_removed: r.chunks.corrupt,
        repair,
    }
}

fn human(v: &VerifyView, repairing: bool) -> String {
    let mut s = format!(
        "verified {} files ({}) and {} stored chunks: {} damaged, {} unreadable, {} corrupt chunks removed\n",
        v.files,
        output::bytes(v.bytes),
        v.chunks_checked,
        v.damaged.len(),
        v.unreadable.len(),
        v.corrupt_chunks_removed,
    );
    for d in &v.damaged {
        s.push_str(&format!(
            "  damaged {}: its bytes changed on disk while its size and times did not (a failing disk?)\n",
            d.path
        ));
    }
    for u in &v.unreadable {
        s.push_str(&format!("  unreadable {}: {}\n", u.path, u.reason));
    }
    for p in &v.awaiting_peer {
        s.push_str(&format!("  {p}: damaged, waiting for a peer's copy\n"));
    }
    if !v.changed_since_scan.is_empty() {
        s.push_str(&format!(
            "  {} files changed since the last scan (not damage: the next scan records them)\n",
            v.changed_since_scan.len()
        ));
    }
    if let Some(r) = &v.repair {
        for p in &r.restored_locally {
            s.push_str(&format!("  repaired {p} from local copies\n"));
        }
        for p in &r.taken_from_peers {
            s.push_str(&format!("  repaired {p} from a peer\n"));
        }
        for p in &r.pulls {
            if let Some(e) = &p.error {
                s.push_str(&format!("  pull from {} failed: {e}\n", p.peer));
            }
        }
        for p in &r.still_damaged {
            s.push_str(&format!(
                "  {p} is still damaged: no reachable peer had it; `botsync verify --repair` again when one is online\n"
            ));
        }
        for l in &r.left {
            s.push_str(&format!("  left {}: {}\n", l.path, l.reason));
        }
    } else if !repairing && (!v.damaged.is_empty() || !v.awaiting_peer.is_empty()) {
        s.push_str("  run `botsync verify --repair` to restore them from local copies or peers\n");
    }
    s
}
