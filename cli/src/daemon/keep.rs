//! The local versions a scan deferred (docs/CONFLICTS.md, *History and restore*): a scan copies
//! at most `INLINE_KEEP` versions into the store itself, so that the first scan of a large
//! workspace is not slowed by thousands of copies; the daemon keeps the rest here, in the
//! background, a few seconds later. A one-shot verb defers the same way; the next daemon that
//! holds the workspace keeps them (the deferral is noted in the index). The merge bases a
//! session recorded without copying (a sync that found thousands of identical versions on both
//! sides) are kept the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use super::DaemonState;

/// How often the daemon looks for deferred versions.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// How long the daemon waits after the disk refused copies (full, failing) before it tries
/// again: retrying every two seconds would only repeat the warning.
pub const AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Run until the daemon stops (`stop` set, or the task aborted): keep what scans deferred.
pub async fn run(state: Arc<DaemonState>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        let replica = Arc::clone(&state.node.replica);
        if !replica.workspace().has_deferred_versions() {
            continue;
        }
        let stop = Arc::clone(&stop);
        let keeping = tokio::task::spawn_blocking(move || {
            replica
                .workspace()
                .keep_deferred_versions(|| stop.load(Ordering::Relaxed))
        });
        match keeping.await {
            Ok(done) if done.failed > 0 => {
                warn!(
                    kept = done.kept,
                    failed = done.failed,
                    "the disk refused some deferred local versions; trying again in a minute"
                );
                tokio::time::sleep(AFTER_FAILURE).await;
            }
            Ok(done) => info!(
                kept = done.kept,
                skipped = done.skipped,
                "kept the local versions a scan deferred"
            ),
            Err(e) => warn!(error = %e, "keeping the deferred local versions failed"),
        }
    }
}
