//! `botsync serve [--listen ADDR:PORT]`: answer sessions started by configured peers.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use botsync_proto::close::CloseCode;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::session::server::{ServeOptions, serve as serve_session};
use clap::Args;
use tracing::{info, warn};

use crate::context::Globals;
use crate::exit::{OK, UsageError};
use crate::node::Node;

/// Arguments of `botsync serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and UDP port to listen on (default: `listen` in config.json, 0.0.0.0:7474).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
}

/// `botsync serve`.
pub fn serve(args: ServeArgs, g: &Globals) -> Result<i32> {
    let root = g.workspace_root()?;
    let node = Arc::new(Node::open(&root, g.agent.clone())?);
    let listen = args
        .listen
        .unwrap_or_else(|| node.replica.workspace().config().listen.clone());
    let addr: SocketAddr = listen.parse().map_err(|_| {
        UsageError::new(format!(
            "--listen {listen:?} is not ADDR:PORT (for example 0.0.0.0:7474)"
        ))
    })?;
    let rt = super::sync::runtime()?;
    rt.block_on(async move {
        let endpoint = node.bind(addr)?;
        let local = endpoint.local_addr()?;
        let doc = serde_json::json!({ "listening": local.to_string(), "id": node.identity.peer_id().to_copy_safe() });
        // One line, printed as soon as we listen: scripts and tests wait for it.
        if g.json {
            println!("{doc}");
        } else {
            println!("listening on {local} as {}", node.identity.peer_id().to_copy_safe());
        }
        run(endpoint, node).await
    })?;
    Ok(OK)
}

/// Accept connections until interrupted. Sessions run concurrently; the replica serializes the
/// calls that change the workspace (rescan, apply), so a peer that vanished mid-session (its
/// connection lingers until the idle timeout) never blocks the others.
pub async fn run(endpoint: Endpoint, node: Arc<Node>) -> Result<()> {
    let endpoint = Arc::new(endpoint);
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = tokio::signal::ctrl_c() => {
                info!("shutting down");
                endpoint.close(CloseCode::Shutdown);
                return Ok(());
            }
        };
        let Some(incoming) = incoming else {
            return Ok(());
        };
        // peers.json may have changed since we started: the next handshake sees the new set.
        match node.peers() {
            Ok(p) => endpoint.allowed().replace(p.peers.iter().map(|p| p.id)),
            Err(e) => warn!(error = %e, "cannot reload peers.json; keeping the previous peer set"),
        }
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let conn = match incoming.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("refused connection: {e}");
                    return;
                }
            };
            let peer = conn.peer_id();
            let opts = ServeOptions {
                name: node.name.clone(),
                streams: 6,
            };
            match serve_session(conn.quinn().clone(), peer, Arc::clone(&node.replica), opts).await {
                Ok(report) => info!(peer = %peer, applied = report.applied.len(), "session done"),
                Err(e) => {
                    warn!(peer = %peer, "session failed: {e}");
                    conn.close(CloseCode::Internal);
                }
            }
        });
    }
}

/// Start serving `node` on `addr` in the background (used by `demo`); returns the bound address.
pub async fn spawn(
    node: Arc<Node>,
    addr: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<()>>)> {
    let endpoint = node.bind(addr)?;
    let local = endpoint.local_addr().context("reading the bound address")?;
    Ok((local, tokio::spawn(run(endpoint, node))))
}
