//! `scan` (rescan and print the manifest summary) and `status`.

use anyhow::Result;
use serde::Serialize;

use crate::output;
use crate::verb::{Ctx, Reply};

#[derive(Debug, Serialize)]
struct ScanView {
    ok: bool,
    workspace: String,
    root: String,
    files: u64,
    added: u64,
    modified: u64,
    deleted: u64,
    hashed_files: u64,
    hashed_bytes: u64,
    unchanged: u64,
    skipped: Vec<SkippedView>,
}

#[derive(Debug, Serialize)]
struct SkippedView {
    path: String,
    reason: String,
}

/// `botsync scan`.
pub fn scan(ctx: &Ctx) -> Result<Reply> {
    let node = ctx.node()?;
    let r = node.replica.rescan()?;
    let view = ScanView {
        ok: true,
        workspace: ctx.root.display().to_string(),
        root: r.root.to_hex(),
        files: r.files,
        added: r.scan.added,
        modified: r.scan.modified + r.scan.metadata_only,
        deleted: r.scan.deleted,
        hashed_files: r.scan.hashed_files,
        hashed_bytes: r.scan.hashed_bytes,
        unchanged: r.scan.unchanged,
        skipped: r
            .scan
            .skipped
            .iter()
            .map(|s| SkippedView {
                path: s.path.clone(),
                reason: s.reason.to_string(),
            })
            .collect(),
    };
    let human = {
        let mut s = format!(
            "{}: {} files, root {}\n  {} added, {} modified, {} deleted; hashed {} files ({}), {} unchanged\n",
            view.workspace,
            view.files,
            &view.root[..12],
            view.added,
            view.modified,
            view.deleted,
            view.hashed_files,
            output::bytes(view.hashed_bytes),
            view.unchanged
        );
        for sk in &view.skipped {
            s.push_str(&format!("  skipped {}: {}\n", sk.path, sk.reason));
        }
        s
    };
    Reply::ok(view, human)
}

/// `botsync status` (and `botsync` alone).
pub fn status(ctx: &Ctx) -> Result<Reply> {
    let node = ctx.node()?;
    let peers = node.peers()?;
    let (tree_root, files) = node.replica.workspace().snapshot();
    let daemon = ctx.daemon.as_ref().map(|d| d.view());
    let doc = serde_json::json!({
        "ok": true,
        "workspace": ctx.root.display().to_string(),
        "name": node.name,
        "id": node.identity.peer_id().to_copy_safe(),
        "files_indexed": files,
        "root": tree_root.to_hex(),
        "daemon": daemon,
        "peers": peers.peers.iter().map(|p| {
            let link = daemon.as_ref().and_then(|d| d.peers.iter().find(|l| l.name == p.name));
            serde_json::json!({
                "name": p.name, "host": p.host, "port": p.port, "id": p.id.to_copy_safe(),
                "link": link,
            })
        }).collect::<Vec<_>>(),
    });
    let mut s = format!(
        "workspace {} ({})\nid {}\n{} files indexed at the last scan\n",
        ctx.root.display(),
        node.name,
        node.identity.peer_id().to_copy_safe(),
        files
    );
    match &daemon {
        Some(d) => s.push_str(&format!(
            "daemon pid {} listening on {}; auto-sync {}\n",
            d.pid,
            d.listening,
            if d.auto { "on" } else { "off" }
        )),
        None => s.push_str("no daemon running (start one with `botsync serve`)\n"),
    }
    if peers.peers.is_empty() {
        s.push_str("no peers; add one with `botsync add NAME HOST[:PORT] --id PEER_ID`\n");
    }
    for p in &peers.peers {
        s.push_str(&format!(
            "peer {:<16} {}:{}  {}",
            p.name,
            p.host,
            p.port,
            p.id.short()
        ));
        if let Some(l) = daemon
            .as_ref()
            .and_then(|d| d.peers.iter().find(|l| l.name == p.name))
        {
            s.push_str(&format!("  {}", l.describe()));
        }
        s.push('\n');
    }
    Reply::ok(doc, s)
}
