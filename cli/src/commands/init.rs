//! `botsync init [--name N] [--reset-config] [--new-identity]` and `botsync id`.
//!
//! `init` is also the way out of a damaged `.botsync/`: it refuses a malformed config (naming
//! `--reset-config`), rebuilds a lost or damaged certificate from the key (the id stays), and
//! makes a new identity only when asked (`--new-identity`), since a new id is a new peer for
//! everyone.

use anyhow::Result;
use botsync_engine::config::SyncConfig;
use botsync_engine::layout::Layout;
use botsync_engine::workspace::Workspace;
use clap::Args;

use crate::context::Globals;
use crate::exit::{OK, usage};
use crate::node::identity::{self, Repair};
use crate::verb::{Ctx, Reply};

/// Arguments of `botsync init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// A name for this instance, shown to peers.
    #[arg(long)]
    pub name: Option<String>,
    /// Keep a malformed or unwanted config.json as a backup and write the default one.
    #[arg(long)]
    pub reset_config: bool,
    /// Make a new identity when the key is lost or damaged (a new peer id: every peer must
    /// re-add this workspace).
    #[arg(long)]
    pub new_identity: bool,
}

/// `botsync init`: create `.botsync/`, the identity and the default config (idempotent).
pub fn init(args: InitArgs, g: &Globals) -> Result<i32> {
    let root = g.init_root()?;
    std::fs::create_dir_all(&root)?;
    let layout = Layout::new(&root);
    let existed = layout.state().is_dir();
    crate::node::check_index_dir(&layout)?;
    let config = layout.config();
    let mut config_backup = None;
    if config.exists() {
        if args.reset_config {
            let backup = backup_path(&config);
            std::fs::rename(&config, &backup)
                .map_err(|e| anyhow::anyhow!("keeping {} as a backup: {e}", config.display()))?;
            config_backup = Some(backup);
        } else {
            SyncConfig::load(&config).map_err(usage)?;
        }
    }
    let fresh = Workspace::init(&root, args.name.as_deref())?;
    let repair = identity::ensure(&layout, existed, args.new_identity)?;
    let id = identity::load(&layout)?.peer_id().to_copy_safe();
    let doc = serde_json::json!({
        "ok": true,
        "workspace": root.display().to_string(),
        "created": fresh,
        "id": id,
        "identity": repair.name(),
        "config_backup": config_backup.as_ref().map(|p| p.display().to_string()),
    });
    if repair == Repair::Replaced {
        eprintln!(
            "botsync: warning: this workspace has a NEW peer id {id}; on every peer run `botsync remove NAME` then `botsync add NAME HOST[:PORT] --id {id}`"
        );
    }
    g.out.emit(&doc, || {
        let what = if fresh {
            "initialized"
        } else {
            "already initialized"
        };
        let mut s = format!("{what} botsync workspace {}\n", root.display());
        if let Some(b) = &config_backup {
            s.push_str(&format!(
                "wrote the default config.json; the old one is kept as {}\n",
                b.display()
            ));
        }
        match repair {
            Repair::Kept | Repair::Created => {}
            Repair::CertificateRebuilt => {
                s.push_str("rebuilt the identity certificate from key.pem (the id is unchanged)\n")
            }
            Repair::Replaced => s.push_str("made a NEW identity (see the warning above)\n"),
        }
        s.push_str(&format!(
            "this peer's id: {id}\non another machine: botsync add NAME HOST[:PORT] --id {id}"
        ));
        s
    })?;
    Ok(OK)
}

/// `config.json.bak`, or `config.json.bak.N` if that is taken.
fn backup_path(config: &std::path::Path) -> std::path::PathBuf {
    let first = config.with_extension("json.bak");
    if !first.exists() {
        return first;
    }
    (1..)
        .map(|n| config.with_extension(format!("json.bak.{n}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
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
