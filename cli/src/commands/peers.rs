//! `add`, `remove`, `peers`: manage `.botsync/peers.json`.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::context::STATE_DIR;
use crate::exit::UsageError;
use crate::node::peers::{Peer, Peers, parse_host_port};
use crate::verb::{Ctx, Reply};

/// Arguments of `botsync add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// A local name for the peer (`mac-mini`).
    pub name: String,
    /// Its address: `HOST[:PORT]` (default port 7474).
    pub host: String,
    /// Its id, as printed by `botsync id` on that machine.
    #[arg(long)]
    pub id: String,
}

/// Arguments of `botsync remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The peer's name.
    pub name: String,
}

/// Arguments of `botsync peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Keep peers.json (even a malformed one) as peers.json.bak and start an empty list.
    #[arg(long)]
    pub reset: bool,
}

#[derive(Debug, Serialize)]
struct PeerView {
    name: String,
    host: String,
    port: u16,
    id: String,
}

impl From<&Peer> for PeerView {
    fn from(p: &Peer) -> Self {
        PeerView {
            name: p.name.clone(),
            host: p.host.clone(),
            port: p.port,
            id: p.id.to_copy_safe(),
        }
    }
}

/// `botsync add NAME HOST[:PORT] --id PEER_ID`.
pub fn add(ctx: &Ctx, name: &str, host: &str, id: &str) -> Result<Reply> {
    let state = ctx.root.join(STATE_DIR);
    validate_name(name)?;
    let id: botsync_engine::PeerId = id.parse().map_err(|e| UsageError::new(format!("{e}")))?;
    let own = match &ctx.daemon {
        Some(d) => d.node.identity.peer_id(),
        None => {
            crate::node::identity::load(&botsync_engine::layout::Layout::new(&ctx.root))?.peer_id()
        }
    };
    if id == own {
        return Err(UsageError::new(
            "that is this workspace's own id; run `botsync id` on the other machine and add the id it prints",
        )
        .into());
    }
    let (host, port) = parse_host_port(host)?;
    let mut peers = Peers::load(&state)?;
    let peer = Peer {
        name: name.to_owned(),
        host,
        port,
        id,
    };
    peers.add(peer.clone())?;
    peers.save(&state)?;
    if let Some(d) = &ctx.daemon {
        d.peers_changed();
    }
    let human = format!(
        "added peer {} at {}:{} ({})",
        peer.name, peer.host, peer.port, peer.id
    );
    Reply::ok(
        serde_json::json!({ "ok": true, "added": PeerView::from(&peer) }),
        human,
    )
}

/// `botsync remove NAME`.
pub fn remove(ctx: &Ctx, name: &str) -> Result<Reply> {
    let state = ctx.root.join(STATE_DIR);
    let mut peers = Peers::load(&state)?;
    let gone = peers.remove(name)?;
    peers.save(&state)?;
    if let Some(d) = &ctx.daemon {
        d.peers_changed();
    }
    Reply::ok(
        serde_json::json!({ "ok": true, "removed": PeerView::from(&gone) }),
        format!("removed peer {}", gone.name),
    )
}

/// `botsync peers [--reset]`.
pub fn list(ctx: &Ctx, reset: bool) -> Result<Reply> {
    let state = ctx.root.join(STATE_DIR);
    if reset {
        let backup = Peers::reset(&state)?;
        if let Some(d) = &ctx.daemon {
            d.peers_changed();
        }
        let human = match &backup {
            Some(b) => format!(
                "started an empty peer list; the old peers.json is kept as {}\nadd peers again with `botsync add NAME HOST[:PORT] --id PEER_ID`",
                b.display()
            ),
            None => "there was no peers.json; the peer list is empty".to_owned(),
        };
        return Reply::ok(
            serde_json::json!({ "ok": true, "peers": [], "backup": backup.map(|b| b.display().to_string()) }),
            human,
        );
    }
    let peers = Peers::load(&state)?;
    let views: Vec<PeerView> = peers.peers.iter().map(PeerView::from).collect();
    let human = if views.is_empty() {
        "no peers; add one with `botsync add NAME HOST[:PORT] --id PEER_ID`".into()
    } else {
        views
            .iter()
            .map(|p| format!("{:<16} {}:{}  {}", p.name, p.host, p.port, p.id))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Reply::ok(serde_json::json!({ "ok": true, "peers": views }), human)
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "peer name {name:?} is invalid: use 1-64 letters, digits, '-', '_' or '.'"
        ))
        .into())
    }
}
