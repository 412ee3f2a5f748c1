//! One file per verb: an args struct and the verb's work. Verbs that act on an opened workspace
//! run as a [`Request`]: through the daemon's control socket when a daemon holds the workspace,
//! else in this process. Only this module tree prints to the user.

mod attribution;
pub(crate) mod auto;
pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod config;
pub(crate) mod conflicts;
mod demo;
mod discover;
pub(crate) mod feed;
pub(crate) mod generate;
pub(crate) mod handoff;
pub(crate) mod history;
pub(crate) mod init;
pub(crate) mod lock;
pub(crate) mod parity;
pub(crate) mod peers;
pub(crate) mod scan;
mod serve;
mod service;
mod skipped;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod verify;

use std::sync::{Arc, Mutex};

use anyhow::Result;
use botsync_proto::session::{NoProgress, Progress};
use clap::Subcommand;

use crate::context::Globals;
use crate::daemon::control;
use crate::output;
use crate::progress::Bar;
use crate::verb::{self, Ctx, Mode, Reply, Request};

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
    /// List configured peers (`--reset`: keep peers.json as a backup and start anew).
    Peers(peers::PeersArgs),
    /// Two-way sync with one peer or all.
    #[command(visible_alias = "now")]
    Sync(sync::SyncArgs),
    /// Send only our changes to one peer or all.
    Push(sync::SyncArgs),
    /// Take only their changes from one peer or all.
    Pull(sync::SyncArgs),
    /// The itemized plan in both directions, exactly what `sync` would do.
    Diff(sync::DiffArgs),
    /// Does every peer hold what we hold? Files, selection rules and mesh config, per peer
    /// (exit 0 in parity, 3 on drift, 1 if a peer cannot be reached).
    Parity(parity::ParityArgs),
    /// Rescan the workspace and print its manifest summary.
    Scan,
    /// Re-read every synced file and stored chunk against the index (finds bit rot the stat
    /// cache cannot see); `--repair` restores what is damaged.
    Verify(verify::VerifyArgs),
    /// Run the daemon: serve peers, watch the workspace, keep connections (and sync on its own
    /// with `auto on`).
    Serve(serve::ServeArgs),
    /// Turn automatic syncing on or off (persisted; `on` starts the daemon if none runs).
    Auto(auto::AutoArgs),
    /// Tailnet peers (`tailscale status --json`) that run botsync, each with a ready `add` line.
    Discover(discover::DiscoverArgs),
    /// Run this workspace's daemon as a user service (systemd on Linux, launchd on macOS).
    Service(service::ServiceArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Two workspaces, two peers on loopback, a real sync; then clean up.
    Demo,
    /// Review and resolve conflicts: `list` (default), `show PATH`, `resolve PATH --keep ...`.
    Conflicts(conflicts::ConflictsArgs),
    /// The sync log and what sync changed, per file (`history PATH` for one file's versions).
    History(history::HistoryArgs),
    /// Bring back a kept version of a file as a new local change: `restore PATH[@VERSION]`.
    Restore(history::RestoreArgs),
    /// Check .botsync/config.json (`validate`), or print the secret-free template of the mesh
    /// config (`template [FILE]`).
    Config(config::ConfigArgs),
    /// Skill state: `state set KEY [VALUE]`, `get KEY`, `list [--pattern GLOB]`, `del KEY`.
    State(state::StateArgs),
    /// SYNC.json generators: `gen list`, `gen validate`, `gen run`, `gen approve`.
    Gen(generate::GenArgs),
    /// Post to the coordination feed: `say MESSAGE [--type T] [--mention NAME]...`.
    Say(feed::SayArgs),
    /// Read the coordination feed: `feed [--follow] [--since TIME] [--mentions NAME]`.
    Feed(feed::FeedArgs),
    /// Hand work to another agent: `handoff --to AGENT --artifact PATH --context TEXT`,
    /// `handoff done ID`.
    Handoff(handoff::HandoffArgs),
    /// Has anyone pushed since this peer's last pull, and who? (exit 3 if so)
    Check(CheckArgs),
    /// TTL locks across the mesh: `lock acquire NAME [--ttl 5m] [--wait 1m]`, `lock release
    /// NAME`, `lock renew NAME`, `lock status`.
    Lock(lock::LockArgs),
    /// List handoffs: `handoffs [--open]`.
    Handoffs(handoff::HandoffsArgs),
    /// Print the commit trailer `[botsync] AI/@AGENT | Machine: NAME`, or install it in a
    /// git repository's commit-msg hook (`--install-hook`).
    Attribution(attribution::AttributionArgs),
}

/// Run a verb; returns the process exit code. `cli` builds the whole command line's
/// definition (for `completions`).
pub fn run(command: Command, g: &Globals, cli: fn() -> clap::Command) -> Result<i32> {
    let request = match command {
        Command::Completions(a) => return completions::print(a, cli()),
        Command::Discover(a) => return discover::discover(a, g),
        Command::Service(a) => return service::service(a, g),
        Command::Init(a) => return init::init(a, g),
        Command::Serve(a) => return serve::serve(a, g),
        Command::Demo => return demo::demo(g),
        Command::Config(a) => return config::config(a, g),
        Command::Gen(a) => return generate::gen_verb(a, g),
        Command::Attribution(a) => return attribution::attribution(a, g),
        Command::Status => Request::Status,
        Command::Id => Request::Id,
        Command::Add(a) => Request::Add {
            name: a.name,
            host: a.host,
            id: a.id,
        },
        Command::Remove(a) => Request::Remove { name: a.name },
        Command::Peers(a) => Request::Peers { reset: a.reset },
        Command::Sync(a) => sync_request(a, Mode::Sync),
        Command::Push(a) => sync_request(a, Mode::Push),
        Command::Pull(a) => sync_request(a, Mode::Pull),
        Command::Diff(a) => Request::Sync {
            peer: a.peer,
            mode: Mode::Sync,
            how: sync::How {
                dry_run: true,
                ..sync::How::default()
            },
            itemize: true,
        },
        Command::Parity(a) => Request::Parity { peer: a.peer },
        Command::Scan => Request::Scan,
        Command::Verify(a) => Request::Verify { repair: a.repair },
        Command::Auto(a) => Request::Auto {
            on: a.state == auto::Switch::On,
        },
        Command::Conflicts(a) => Request::Conflicts(conflicts::ConflictsRequest::from_args(a)?),
        Command::History(a) => Request::History {
            path: a.path,
            limit: a.limit,
        },
        Command::Restore(a) => Request::Restore {
            target: a.target,
            dry_run: a.dry_run,
        },
        Command::State(a) => Request::State(state::StateRequest::from_args(a)?),
        Command::Say(a) => Request::Say(feed::SayRequest::from_args(a)?),
        Command::Feed(a) => Request::Feed(feed::FeedRequest::from_args(a)?),
        Command::Handoff(a) => Request::Handoff(handoff::HandoffRequest::from_args(a)?),
        Command::Lock(a) => Request::Lock(lock::LockRequest::from_args(a)?),
        Command::Check(a) => Request::Check { peer: a.peer },
        Command::Handoffs(a) => Request::Handoff(handoff::HandoffRequest::List { open: a.open }),
    };
    let root = g.workspace_root()?;
    let bars = Bars::new(g);
    let reply = match control::Client::connect(&root)? {
        // A daemon holds the workspace: it runs the verb.
        Some(client) => client.call(
            &request,
            &g.agent,
            |peer, event| bars.for_peer(peer).event(event),
            |item| feed::print_item(item, g),
        )?,
        None => {
            let rt = sync::runtime()?;
            let mut ctx = Ctx::direct(&root, g.agent.clone(), rt.handle().clone());
            let tell = !g.json && !g.out.quiet;
            ctx.on_wait = Arc::new(move || {
                if tell {
                    eprintln!(
                        "botsync: waiting for another botsync process to finish with this workspace"
                    );
                }
            });
            let factory = bars.clone();
            ctx.progress = Arc::new(move |peer: &str| factory.for_peer(peer));
            verb::exec(request, &ctx)
        }
    };
    bars.finish();
    Ok(print(reply, g))
}

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Ask only this peer (default: every peer).
    pub peer: Option<String>,
}

fn sync_request(a: sync::SyncArgs, mode: Mode) -> Request {
    Request::Sync {
        peer: a.peer,
        mode,
        how: sync::How {
            dry_run: a.dry_run,
            force: a.force,
            parity: false,
        },
        itemize: false,
    }
}

/// Print a verb's reply the way `--json` and `-q` ask; returns its exit code.
fn print(reply: Reply, g: &Globals) -> i32 {
    if let Some(line) = &reply.error {
        output::report_error(g.json, reply.exit_code, line);
        return reply.exit_code;
    }
    if let Err(e) = g.out.emit(&reply.doc, || reply.human.clone()) {
        // stdout is gone (a closed pipe): nothing more can be said there.
        eprintln!("botsync: error: writing the result: {e}");
    }
    for w in &reply.warnings {
        eprintln!("botsync: error: {w}");
    }
    reply.exit_code
}

/// A peer's name and its bar.
type PeerBar = (String, Arc<Bar>);

/// Progress bars, one per peer, drawn only on a terminal without `--json`.
#[derive(Clone)]
struct Bars {
    allowed: bool,
    bars: Arc<Mutex<Vec<PeerBar>>>,
}

impl Bars {
    fn new(g: &Globals) -> Bars {
        Bars {
            allowed: g.out.progress_allowed(),
            bars: Arc::default(),
        }
    }

    fn for_peer(&self, peer: &str) -> Arc<dyn Progress> {
        if !self.allowed {
            return Arc::new(NoProgress);
        }
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, b)) = bars.iter().find(|(name, _)| name == peer) {
            return Arc::clone(b) as Arc<dyn Progress>;
        }
        let bar = Arc::new(Bar::new(peer));
        bars.push((peer.to_owned(), Arc::clone(&bar)));
        bar
    }

    fn finish(&self) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for (_, b) in bars.iter() {
            b.finish();
        }
    }
}
