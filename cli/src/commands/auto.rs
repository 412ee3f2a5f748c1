//! `botsync auto on|off`: whether the daemon syncs on its own (persisted in config.json).

use anyhow::{Context, Result};
use botsync_engine::config::SyncConfig;
use clap::{Args, ValueEnum};

use crate::context::STATE_DIR;
use crate::verb::{Ctx, Reply};

/// Arguments of `botsync auto`.
#[derive(Debug, Args)]
pub struct AutoArgs {
    /// `on`: sync after local changes, when a peer changes, and every heartbeat; `off`: only
    /// when asked (the daemon keeps serving peers).
    pub state: Switch,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Sync automatically.
    On,
    /// Sync only when asked.
    Off,
}

/// Persist the switch; tell the running daemon, or start one for `on`.
pub fn set(ctx: &Ctx, on: bool) -> Result<Reply> {
    let path = ctx.root.join(STATE_DIR).join("config.json");
    let mut config = SyncConfig::load(&path).map_err(crate::exit::usage)?;
    config.daemon.auto = on;
    config
        .save(&path)
        .with_context(|| format!("saving {}", path.display()))?;
    let (daemon_pid, started) = match &ctx.daemon {
        Some(d) => {
            d.set_auto(on);
            (Some(d.pid), false)
        }
        None if on => (Some(crate::daemon::spawn_background(&ctx.root)?), true),
        None => (None, false),
    };
    let state = if on { "on" } else { "off" };
    let human = match (daemon_pid, started) {
        (Some(pid), true) => format!(
            "auto-sync {state}; started the daemon (pid {pid}, log in {STATE_DIR}/daemon.log)"
        ),
        (Some(pid), false) => format!("auto-sync {state} (daemon pid {pid})"),
        (None, _) => format!(
            "auto-sync {state}; no daemon runs (`botsync serve` serves peers without syncing on its own)"
        ),
    };
    Reply::ok(
        serde_json::json!({ "ok": true, "auto": on, "daemon_pid": daemon_pid, "daemon_started": started }),
        human,
    )
}
