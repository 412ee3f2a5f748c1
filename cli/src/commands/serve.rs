//! `botsync serve [--listen ADDR:PORT]`: run the daemon in the foreground.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::context::Globals;
use crate::daemon::pidlock::{IndexTurn, PidLock};
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
    // One daemon per workspace, decided before anything is opened (the first holds the index).
    let layout = botsync_engine::layout::Layout::new(&root);
    // An invalid config stops the daemon before anything starts, with the line `config
    // validate` prints.
    crate::commands::config::check(&layout.config())?;
    let lock = PidLock::acquire(&layout.daemon_pid())?;
    // A verb run without a daemon may have the index open: the daemon waits for it.
    let turn = IndexTurn::take(&layout.index_lock(), || {
        eprintln!("botsync: waiting for another botsync process to finish with this workspace")
    })?;
    let node = Arc::new(Node::open(&root, g.agent.clone())?);
    let listen = args
        .listen
        .unwrap_or_else(|| node.replica.workspace().config().listen.clone());
    let addr: SocketAddr = listen.parse().map_err(|_| {
        UsageError::new(format!(
            "--listen {listen:?} is not ADDR:PORT (for example 0.0.0.0:7474)"
        ))
    })?;
    let id = node.identity.peer_id().to_copy_safe();
    let json = g.json;
    crate::daemon::run(lock, node, addr, |local| {
        // One line, printed as soon as peers and verbs can reach us: scripts and tests wait
        // for it.
        if json {
            println!(
                "{}",
                serde_json::json!({ "listening": local.to_string(), "id": id })
            );
        } else {
            println!("listening on {local} as {id}");
        }
    })?;
    drop(turn);
    Ok(OK)
}

/// Answer peers for `node` on `addr` in the background (used by `demo`); returns the bound
/// address.
pub async fn spawn(
    node: Arc<Node>,
    addr: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let limits = crate::node::limits::limits(&node.replica.workspace().config().limits)?;
    let endpoint = Arc::new(node.bind(addr)?);
    let local = endpoint.local_addr().context("reading the bound address")?;
    let (events, mut drain) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    // The demo's peers keep no lock table: coordination connections to them are refused.
    Ok((
        local,
        tokio::spawn(crate::daemon::accept_peers(
            endpoint, node, events, None, limits,
        )),
    ))
}
