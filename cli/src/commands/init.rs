//! `botsync init [--name N]` and `botsync id`.

use anyhow::Result;
use botsync_engine::layout::Layout;
use botsync_engine::workspace::Workspace;
use botsync_proto::identity::Identity;
use clap::Args;

use crate::context::Globals;
use crate::exit::OK;
use crate::node::identity;
use crate::verb::{Ctx, Reply};

/// Arguments of `botsync init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// A name for this instance, shown to peers.
    #[arg(long)]
    pub name: Option<String>,
}

/// `botsync init`: create `.botsync/`, the identity and the default config (idempotent).
pub fn init(args: InitArgs, g: &Globals) -> Result<i32> {
    let root = g.init_root()?;
    std::fs::create_dir_all(&root)?;
    let fresh = Workspace::init(&root, args.name.as_deref())?;
    let layout = Layout::new(&root);
    let created_identity = if layout.identity_key().exists() {
        false
    } else {
        identity::save(&layout, &Identity::generate()?)?;
        true
    };
    let id = identity::load(&layout)?.peer_id();
    let doc = serde_json::json!({
        "ok": true,
        "workspace": root.display().to_string(),
        "created": fresh || created_identity,
        "id": id.to_copy_safe(),
    });
    g.out.emit(&doc, || {
        let what = if fresh { "initialized" } else { "already initialized" };
        format!(
            "{what} botsync workspace {}\nthis peer's id: {}\non another machine: botsync add NAME HOST --id {}",
            root.display(),
            id.to_copy_safe(),
            id.to_copy_safe()
        )
    })?;
    Ok(OK)
}

/// `botsync id`: print this peer's id.
pub fn id(ctx: &Ctx) -> Result<Reply> {
    let id = match &ctx.daemon {
        Some(d) => d.node.identity.peer_id(),
        None => identity::load(&Layout::new(&ctx.root))?.peer_id(),
    };
    Reply::ok(
        serde_json::json!({ "ok": true, "id": id.to_copy_safe(), "short": id.short() }),
        id.to_copy_safe(),
    )
}
