//! One file per verb: an args struct and `run`. Only these print to the user.

mod demo;
mod init;
mod peers;
mod scan;
mod serve;
mod sync;

use anyhow::Result;
use botsync_proto::messages::SessionMode;
use clap::Subcommand;

use crate::context::Globals;

/// The verbs of `botsync`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Identity, peers and the workspace state (the default verb).
    Status,
    /// Create .botsync/, this peer's identity and the default config.
    Init(init::InitArgs),
    /// Print this peer's id (give it to `botsync add` on the other machines).
    Id,
    /// Add a peer: `botsync add NAME HOST[:PORT] --id PEER_ID`.
    Add(peers::AddArgs),
    /// Remove a peer by name.
    Remove(peers::RemoveArgs),
    /// List configured peers.
    Peers,
    /// Two-way sync with one peer or all.
    #[command(visible_alias = "now")]
    Sync(sync::SyncArgs),
    /// Send only our changes to one peer or all.
    Push(sync::SyncArgs),
    /// Take only their changes from one peer or all.
    Pull(sync::SyncArgs),
    /// The itemized plan in both directions, exactly what `sync` would do.
    Diff(sync::DiffArgs),
    /// Rescan the workspace and print its manifest summary.
    Scan,
    /// Answer sessions started by configured peers.
    Serve(serve::ServeArgs),
    /// Two workspaces, two peers on loopback, a real sync; then clean up.
    Demo,
}

/// Run a verb; returns the process exit code.
pub fn run(command: Command, g: &Globals) -> Result<i32> {
    match command {
        Command::Status => scan::status(g),
        Command::Init(a) => init::init(a, g),
        Command::Id => init::id(g),
        Command::Add(a) => peers::add(a, g),
        Command::Remove(a) => peers::remove(a, g),
        Command::Peers => peers::list(g),
        Command::Sync(a) => sync::sync(a, g, SessionMode::Sync),
        Command::Push(a) => sync::sync(a, g, SessionMode::Push),
        Command::Pull(a) => sync::sync(a, g, SessionMode::Pull),
        Command::Diff(a) => sync::diff(a, g),
        Command::Scan => scan::scan(g),
        Command::Serve(a) => serve::serve(a, g),
        Command::Demo => demo::demo(g),
    }
}
