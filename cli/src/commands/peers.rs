//! `add`, `remove`, `peers`: manage `.botsync/peers.json`.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::context::{Globals, STATE_DIR};
use crate::exit::{OK, UsageError};
use crate::node::peers::{Peer, Peers, parse_host_port};

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

#[derive(Serialize)]
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
pub fn add(args: AddArgs, g: &Globals) -> Result<i32> {
    let root = g.workspace_root()?;
    let state = root.join(STATE_DIR);
    validate_name(&args.name)?;
    let id = args
        .id
        .parse()
        .map_err(|e| UsageError::new(format!("{e}")))?;
    let (host, port) = parse_host_port(&args.host)?;
    let mut peers = Peers::load(&state)?;
    let peer = Peer {
        name: args.name,
        host,
        port,
        id,
    };
    peers.add(peer.clone())?;
    peers.save(&state)?;
    let view = PeerView::from(&peer);
    g.out
        .emit(&serde_json::json!({ "ok": true, "added": view }), || {
            format!(
                "added peer {} at {}:{} ({})",
                peer.name, peer.host, peer.port, peer.id
            )
        })?;
    Ok(OK)
}

/// `botsync remove NAME`.
pub fn remove(args: RemoveArgs, g: &Globals) -> Result<i32> {
    let state = g.workspace_root()?.join(STATE_DIR);
    let mut peers = Peers::load(&state)?;
    let gone = peers.remove(&args.name)?;
    peers.save(&state)?;
    g.out.emit(
        &serde_json::json!({ "ok": true, "removed": PeerView::from(&gone) }),
        || format!("removed peer {}", gone.name),
    )?;
    Ok(OK)
}

/// `botsync peers`.
pub fn list(g: &Globals) -> Result<i32> {
    let state = g.workspace_root()?.join(STATE_DIR);
    let peers = Peers::load(&state)?;
    let views: Vec<PeerView> = peers.peers.iter().map(PeerView::from).collect();
    g.out
        .emit(&serde_json::json!({ "ok": true, "peers": views }), || {
            if views.is_empty() {
                return "no peers; add one with `botsync add NAME HOST[:PORT] --id PEER_ID`".into();
            }
            views
                .iter()
                .map(|p| format!("{:<16} {}:{}  {}", p.name, p.host, p.port, p.id))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
    Ok(OK)
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
