//! `scan` (rescan and print the manifest summary) and `status`.

use anyhow::Result;
use serde::Serialize;

use crate::context::Globals;
use crate::exit::OK;
use crate::node::Node;
use crate::node::replica::now_ns;
use crate::output;

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
pub fn scan(g: &Globals) -> Result<i32> {
    let root = g.workspace_root()?;
    let node = Node::open(&root, g.agent.clone())?;
    let r = node.replica.workspace().refresh(now_ns())?;
    let view = ScanView {
        ok: true,
        workspace: root.display().to_string(),
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
                reason: format!("{:?}", s.reason),
            })
            .collect(),
    };
    g.out.emit(&view, || {
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
    })?;
    Ok(OK)
}

/// `botsync status` (and `botsync` alone).
pub fn status(g: &Globals) -> Result<i32> {
    let root = g.workspace_root()?;
    let node = Node::open(&root, g.agent.clone())?;
    let peers = node.peers()?;
    let (tree_root, files) = node.replica.workspace().snapshot();
    let doc = serde_json::json!({
        "ok": true,
        "workspace": root.display().to_string(),
        "name": node.name,
        "id": node.identity.peer_id().to_copy_safe(),
        "files_indexed": files,
        "root": tree_root.to_hex(),
        "peers": peers.peers.iter().map(|p| serde_json::json!({
            "name": p.name, "host": p.host, "port": p.port, "id": p.id.to_copy_safe()
        })).collect::<Vec<_>>(),
    });
    g.out.emit(&doc, || {
        let mut s = format!(
            "workspace {} ({})\nid {}\n{} files indexed at the last scan\n",
            root.display(),
            node.name,
            node.identity.peer_id().to_copy_safe(),
            files
        );
        if peers.peers.is_empty() {
            s.push_str("no peers; add one with `botsync add NAME HOST[:PORT] --id PEER_ID`\n");
        }
        for p in &peers.peers {
            s.push_str(&format!(
                "peer {:<16} {}:{}  {}\n",
                p.name,
                p.host,
                p.port,
                p.id.short()
            ));
        }
        s
    })?;
    Ok(OK)
}
