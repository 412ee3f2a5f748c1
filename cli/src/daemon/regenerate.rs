//! Regeneration in the daemon (issue 14): when skill state keys change, by a `state set|del`
//! served here or by a peer's records, the daemon runs the approved SYNC.json generators whose
//! patterns match them, once the changes have been quiet for [`DEBOUNCE`]; with
//! `"generate_before_sync": true` it also runs every approved generator before each sync it
//! starts or serves for the `sync` verb ([`before_sync`]).
//!
//! The runs are `gen run`'s (`commands::generate::run_approved`): the same checks, a skill that
//! is not approved here (or changed since) never runs and is named in the log. Only state
//! changes trigger a generator: the file it writes is seen by the watcher like any file (and
//! synced), but a file change never runs a generator, so an output cannot re-trigger its own.
//! After a local change, a daemon with `auto` on then syncs, so the change reaches the peers
//! without waiting for the heartbeat.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::DaemonState;
use crate::commands::generate::{AutoRun, run_approved};
use crate::node::replica::LiveReplica;

/// How long state changes must be quiet before the generators run.
pub const DEBOUNCE: Duration = Duration::from_millis(700);

/// Run until the daemon stops: wait for state changes, let them settle, regenerate.
pub async fn run(state: Arc<DaemonState>) {
    let changes = Arc::clone(&state.node.replica);
    let mut tick = changes.state_changes().subscribe();
    let root = state.node.root.clone();
    while tick.changed().await.is_ok() {
        // Settle: a burst of `state set` calls (a skill saving several memories) runs once.
        loop {
            match tokio::time::timeout(DEBOUNCE, tick.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
        let pending = changes.state_changes().take();
        if pending.keys.is_empty() {
            continue;
        }
        let keys = pending.keys;
        let dir = root.clone();
        match tokio::task::spawn_blocking(move || run_approved(&dir, Some(&keys))).await {
            Ok(Ok(runs)) => log_runs("state change", &runs),
            Ok(Err(e)) => {
                warn!(error = %format!("{e:#}"), "cannot regenerate after a state change")
            }
            Err(e) => warn!(error = %e, "regeneration task failed"),
        }
        if pending.local && state.auto() {
            super::sync_all(&state, "state change");
        }
    }
}

/// With `generate_before_sync`, run every approved generator of `replica`'s workspace now (a
/// sync is about to start); without it, nothing. The outputs written are noted as changed, so
/// the sync's rescan takes them in even before the watcher reports them.
pub async fn before_sync(replica: &Arc<LiveReplica>) {
    let ws = replica.workspace();
    if !ws.config().generate_before_sync {
        return;
    }
    let root: PathBuf = ws.root().to_path_buf();
    let dir = root.clone();
    match tokio::task::spawn_blocking(move || run_approved(&dir, None)).await {
        Ok(Ok(runs)) => {
            log_runs("before sync", &runs);
            let outputs: Vec<&PathBuf> =
                runs.iter().filter_map(|r| r.result.as_ref().ok()).collect();
            let written: Vec<String> = outputs
                .iter()
                .filter_map(|out| out.strip_prefix(&root).ok())
                .filter_map(|rel| rel.to_str().map(str::to_owned))
                .collect();
            replica.note_changed(written.iter().map(String::as_str));
            if written.len() < outputs.len() {
                // An output outside the root as spelled here (a data directory, another
                // spelling of the root): rescan everything rather than miss it.
                replica.mark_dirty();
            }
        }
        Ok(Err(e)) => warn!(error = %format!("{e:#}"), "cannot run the generators before a sync"),
        Err(e) => warn!(error = %e, "generator task failed"),
    }
}

fn log_runs(why: &'static str, runs: &[AutoRun]) {
    for r in runs {
        match &r.result {
            Ok(out) => info!(skill = %r.skill, output = %out.display(), why, "regenerated"),
            Err(e) => warn!(skill = %r.skill, why, "not regenerated: {e}"),
        }
    }
}
