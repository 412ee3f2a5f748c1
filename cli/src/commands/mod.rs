//! One file per verb: an args struct and `run`. Only these print to the user.

mod peers;

use anyhow::Result;
use clap::Subcommand;

use crate::context::Globals;

/// The verbs of `botsync`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Identity, peers and the workspace state (the default verb).
    Status,
    /// Add a peer: `botsync add NAME HOST[:PORT] --id PEER_ID`.
    Add(peers::AddArgs),
    /// Remove a peer by name.
    Remove(peers::RemoveArgs),
    /// List configured peers.
    Peers,
}

/// Run a verb; returns the process exit code.
pub fn run(command: Command, g: &Globals) -> Result<i32> {
    match command {
        Command::Status => peers::list(g),
        Command::Add(a) => peers::add(a, g),
        Command::Remove(a) => peers::remove(a, g),
        Command::Peers => peers::list(g),
    }
}
