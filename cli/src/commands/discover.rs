//! `botsync discover [--port P]`: the online peers of this tailnet (`tailscale status --json`),
//! each probed for a botsync daemon with a short timeout, and a ready `botsync add` line for
//! every one that answers.
//!
//! The probe dials with an id no peer has: the daemon's certificate arrives in the handshake,
//! its id is read from it and the dial stops there (the daemon logs one refused handshake).
//! The id is not proven by that alone; it is pinned by the `add` line, and only the holder of
//! its key can ever complete a handshake under it.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use botsync_engine::PeerId;
use botsync_engine::layout::Layout;
use botsync_proto::endpoint::{ConnectError, Endpoint, EndpointOptions};
use botsync_proto::tls::AllowedPeers;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::context::{Globals, STATE_DIR};
use crate::exit::{OK, UsageError};
use crate::node::identity;
use crate::node::peers::{DEFAULT_PORT, Peers};

/// Environment variable naming the tailscale binary (default `tailscale` on the PATH).
pub const TAILSCALE_ENV: &str = "BOTSYNC_TAILSCALE";

/// Longest wait for a peer's daemon to answer the probe.
const PROBE: Duration = Duration::from_secs(2);

/// Arguments of `botsync discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The UDP port botsync daemons listen on in this tailnet.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
}

/// The parts of `tailscale status --json` used here.
#[derive(Debug, Deserialize)]
struct TailscaleStatus {
    #[serde(rename = "Peer", default)]
    peer: std::collections::BTreeMap<String, TailscalePeer>,
}

#[derive(Debug, Deserialize)]
struct TailscalePeer {
    #[serde(rename = "HostName", default)]
    host_name: String,
    #[serde(rename = "DNSName", default)]
    dns_name: String,
    #[serde(rename = "TailscaleIPs", default)]
    ips: Vec<IpAddr>,
    #[serde(rename = "Online", default)]
    online: bool,
}

/// One online tailnet peer as reported.
#[derive(Debug, Serialize)]
struct Found {
    name: String,
    host: String,
    dns_name: String,
    /// True if a botsync daemon answered.
    botsync: bool,
    id: Option<String>,
    /// The configured peer with this id, if any.
    configured_as: Option<String>,
    /// Ready to run on this machine.
    add: Option<String>,
    /// Why no daemon was found.
    error: Option<String>,
}

/// `botsync discover`.
pub fn discover(args: DiscoverArgs, g: &Globals) -> Result<i32> {
    let root = g.workspace_root()?;
    let layout = Layout::new(&root);
    let me = Arc::new(identity::load(&layout)?);
    let configured = Peers::load(&root.join(STATE_DIR))?;
    let status = tailscale_status()?;
    let online: Vec<&TailscalePeer> = status.peer.values().filter(|p| p.online).collect();
    let rt = crate::commands::sync::runtime()?;
    let found: Vec<Found> = rt.block_on(async {
        let options = EndpointOptions {
            connect_timeout: PROBE,
            ..EndpointOptions::default()
        };
        let any: SocketAddr = "0.0.0.0:0".parse()?;
        let endpoint = Endpoint::bind_with(any, Arc::clone(&me), AllowedPeers::new(), options)
            .context("opening a UDP socket for the probes")?;
        let mut out = Vec::new();
        for p in &online {
            out.push(probe(&endpoint, p, args.port, &configured).await);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let doc = serde_json::json!({ "ok": true, "port": args.port, "peers": found });
    g.out.emit(&doc, || human(&found, online.len()))?;
    Ok(OK)
}

async fn probe(endpoint: &Endpoint, p: &TailscalePeer, port: u16, configured: &Peers) -> Found {
    let name = peer_name(p);
    let ip = p
        .ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(p.ips.first())
        .copied();
    let mut found = Found {
        name: name.clone(),
        host: ip.map(|i| i.to_string()).unwrap_or_default(),
        dns_name: p.dns_name.trim_end_matches('.').to_owned(),
        botsync: false,
        id: None,
        configured_as: None,
        add: None,
        error: None,
    };
    let Some(ip) = ip else {
        found.error = Some("tailscale lists no address for it".into());
        return found;
    };
    // No real peer has the all-zero id: the dial stops as soon as the certificate arrives.
    let nobody = PeerId([0; 32]);
    match endpoint.connect(SocketAddr::new(ip, port), nobody).await {
        Err(ConnectError::UnexpectedPeer { presented, .. }) => {
            let id = presented.to_copy_safe();
            found.botsync = true;
            found.configured_as = configured
                .peers
                .iter()
                .find(|c| c.id == presented)
                .map(|c| c.name.clone());
            let host = match ip {
                IpAddr::V4(_) => format!("{ip}:{port}"),
                IpAddr::V6(_) => format!("[{ip}]:{port}"),
            };
            found.add = Some(format!("botsync add {name} {host} --id {id}"));
            found.id = Some(id);
        }
        Err(ConnectError::Timeout { .. }) => {
            found.error = Some(format!("no botsync daemon answered on UDP port {port}"))
        }
        Err(e) => found.error = Some(e.to_string()),
        Ok(conn) => {
            // Only a peer holding the all-zero id's key could get here.
            conn.close(botsync_proto::close::CloseCode::UnknownPeer);
            found.error = Some("answered with an impossible id; ignored".into());
        }
    }
    found
}

/// A valid peer name from the tailnet host name.
fn peer_name(p: &TailscalePeer) -> String {
    let base = if p.host_name.is_empty() {
        p.dns_name.split('.').next().unwrap_or("")
    } else {
        &p.host_name
    };
    let s: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() { "peer".into() } else { s }
}

fn tailscale_status() -> Result<TailscaleStatus> {
    let bin = std::env::var_os(TAILSCALE_ENV).unwrap_or_else(|| "tailscale".into());
    let out = match Command::new(&bin).args(["status", "--json"]).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError::new(
                "`tailscale` is not on the PATH; install Tailscale (https://tailscale.com/download) or add peers by hand with `botsync add NAME HOST[:PORT] --id PEER_ID`",
            )
            .into());
        }
        Err(e) => return Err(e).context("running `tailscale status --json`"),
    };
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(UsageError::new(format!(
            "`tailscale status --json` failed ({}): {}; run `tailscale up` and try again",
            out.status,
            why.trim()
        ))
        .into());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        UsageError::new(format!(
            "`tailscale status --json` printed something this botsync cannot read ({e}); update tailscale or add peers by hand with `botsync add`"
        ))
        .into()
    })
}

fn human(found: &[Found], online: usize) -> String {
    if online == 0 {
        return "no online peers in this tailnet".into();
    }
    let mut s = String::new();
    for f in found {
        match (&f.add, &f.configured_as) {
            (Some(_), Some(name)) => s.push_str(&format!(
                "{:<16} {:<16} botsync, already added as {name}\n",
                f.name, f.host
            )),
            (Some(add), None) => s.push_str(&format!(
                "{:<16} {:<16} botsync\n    {add}\n",
                f.name, f.host
            )),
            _ => s.push_str(&format!(
                "{:<16} {:<16} {}\n",
                f.name,
                f.host,
                f.error.as_deref().unwrap_or("no botsync daemon")
            )),
        }
    }
    s
}
