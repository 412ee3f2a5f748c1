//! `scan`: rescan and print the manifest summary, with every skipped entry in words and what
//! to do about it.

use anyhow::Result;
use serde::Serialize;

use super::skipped::SkippedView;
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
        skipped: r.scan.skipped.iter().map(SkippedView::of).collect(),
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
            s.push_str(&format!("  skipped {}\n", sk.line()));
        }
        s
    };
    Reply::ok(view, human)
}
