//! The initiating side of a session (`botsync sync/push/pull/diff`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use botsync_engine::plan::{ItemReport, Outcome, PlanItem};
use botsync_engine::{FileEntry, PeerId};
use tracing::{Instrument, debug, info_span};

use super::service::{self, Service, ServiceSlot};
use super::{
    AbortOnDrop, Advertised, Control, Progress, ProgressEvent, SessionError, SessionOptions,
    SessionReport, blocking, chunks, delta, descent, entries, mesh, state,
};
use crate::budget::Phase;
use crate::messages::{ErrorCode, Features, Hello, Message, SessionMode, WireReport};
use crate::replica::{HeldChunks, Replica, ReplicaError, Snapshot};

/// Run one session as the initiator over `conn` with the peer `peer`.
pub async fn run<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    peer: PeerId,
    replica: Arc<R>,
    opts: &SessionOptions,
    progress: Arc<dyn Progress>,
) -> Result<SessionReport, SessionError> {
    let pending = start_refresh(&replica);
    run_with(conn, peer, replica, opts, progress, pending).await
}

/// A rescan running on a blocking thread, started before the connection is up so the two
/// overlap (see [`run_with`]).
pub type PendingRefresh = tokio::task::JoinHandle<Result<Snapshot, ReplicaError>>;

/// Start bringing `replica` up to date on a blocking thread.
pub fn start_refresh<R: Replica + ?Sized>(replica: &Arc<R>) -> PendingRefresh {
    let r = Arc::clone(replica);
    tokio::task::spawn_blocking(move || r.refresh())
}

/// Run one session as the initiator, with our rescan already under way. `Hello` goes out at
/// once, so the responder rescans while we do; `Summary` follows when our rescan is done.
pub async fn run_with<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    peer: PeerId,
    replica: Arc<R>,
    opts: &SessionOptions,
    progress: Arc<dyn Progress>,
    pending: PendingRefresh,
) -> Result<SessionReport, SessionError> {
    let span = info_span!("session", peer = %peer, mode = ?opts.mode, dry_run = opts.dry_run);
    run_inner(conn, peer, replica, opts, progress, pending)
        .instrument(span)
        .await
        .map_err(|e| e.on(conn))
}

async fn run_inner<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    peer: PeerId,
    replica: Arc<R>,
    opts: &SessionOptions,
    progress: Arc<dyn Progress>,
    pending: PendingRefresh,
) -> Result<SessionReport, SessionError> {
    let mut report = SessionReport {
        peer: Some(peer),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let (send, recv) = conn.open_bi().await?;
    let mut ctl = Control {
        send,
        recv,
        counters: Default::default(),
        features: Features::NONE,
        deadlines: opts.deadlines,
    };

    // Hello and Summary go together: a workspace already in sync costs one round trip.
    let mut hello = Hello::current(&opts.name, opts.agent.clone());
    hello.features = hello.features.intersection(opts.features);
    ctl.send(&Message::Hello(hello.clone())).await?;
    let snap = pending
        .await
        .map_err(|e| SessionError::Task(e.to_string()))??;
    ctl.send(&Message::Summary {
        root: snap.root,
        files: snap.files,
        mode: opts.mode,
        skipped: snap.skipped.len() as u64,
    })
    .await?;
    report.skipped = snap.skipped;
    ctl.counters.round_trips += 1;
    let Message::Hello(theirs) = ctl.recv_within(Phase::Summary).await? else {
        return Err(SessionError::Protocol("expected hello".into()));
    };
    let negotiated = hello
        .negotiate(&theirs)
        .map_err(|e| SessionError::Version(e.to_string()))?;
    ctl.features = negotiated.features;
    let Message::Summary {
        root: their_root,
        skipped: their_skipped,
        ..
    } = ctl.recv_within(Phase::Summary).await?
    else {
        return Err(SessionError::Protocol("expected summary".into()));
    };
    report.peer_skipped = their_skipped;
    report.root = snap.root;
    let theirs_mesh = if mesh::volunteered(negotiated.features, opts.mode) {
        Some(mesh::receive(&mut ctl).await?)
    } else {
        None
    };
    if opts.parity && negotiated.features.contains(Features::PARITY) {
        report.parity = Some(mesh::ask_parity(&mut ctl).await?);
    }

    let advertised = Advertised::default();
    let bytes_served = Arc::new(AtomicU64::new(0));
    let svc = Service {
        conn: conn.clone(),
        replica: Arc::clone(&replica),
        advertised: advertised.clone(),
        zstd: negotiated.features.contains(Features::ZSTD),
        delta: delta::negotiated(negotiated.features),
        bytes_served: Arc::clone(&bytes_served),
        progress: Arc::clone(&progress),
        budget: None,
        deadlines: opts.deadlines,
        activity: Default::default(),
    };
    // Aborted when the session ends, whichever way: a kept connection carries the next session.
    let _service = AbortOnDrop(tokio::spawn(service::run(
        conn.clone(),
        ServiceSlot::with(svc),
        service::Guard::unbudgeted(opts.deadlines),
    )));

    if their_root == snap.root {
        // Equal roots, but a file either side could not read may hold changes.
        report.in_sync = report.skipped.is_empty() && their_skipped == 0;
    } else {
        let buckets = negotiated.features.contains(Features::BUCKETS);
        let paths: Vec<_> = descent::differing_paths(&mut ctl, &replica, buckets)
            .await?
            .into_iter()
            .collect();
        debug!(paths = paths.len(), "differing paths");
        let chunk_tree = negotiated.features.contains(Features::CHUNK_TREE);
        let remote = entries::request(&mut ctl, conn, &replica, &paths, chunk_tree).await?;
        // Refused versions take no further part: not planned, not settled, not recorded.
        let (remote, refused) = entries::screen(&replica, peer, remote).await?;
        if matches!(opts.mode, SessionMode::Sync | SessionMode::Pull) {
            report.pulled = refused;
            report.pulled.extend(
                pull(
                    conn,
                    &replica,
                    peer,
                    remote.clone(),
                    opts,
                    &progress,
                    &mut ctl,
                )
                .await?,
            );
        }
        if matches!(opts.mode, SessionMode::Sync | SessionMode::Push) {
            report.pushed = push(
                &mut ctl,
                &replica,
                &advertised,
                &paths,
                &remote,
                opts,
                &progress,
            )
            .await?;
        }
        if !opts.dry_run {
            blocking(&replica, move |r| r.record_peer(peer, their_root, &remote)).await?;
        }
    }
    if !opts.dry_run {
        report.mesh = mesh::exchange(&mut ctl, &replica, peer, opts.mode, theirs_mesh).await?;
    }
    if negotiated.features.contains(Features::STATE)
        && !opts.dry_run
        && opts.mode != SessionMode::DryRun
    {
        report.state = state::initiate(&mut ctl, &replica, peer, opts.mode).await?;
    }
    ctl.send(&Message::Goodbye).await?;
    let _ = ctl.send.finish();
    report.counters = ctl.counters;
    report.bytes_sent = bytes_served.load(Ordering::Relaxed);
    Ok(report)
}

async fn pull<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    peer: PeerId,
    remote: Vec<FileEntry>,
    opts: &SessionOptions,
    progress: &Arc<dyn Progress>,
    ctl: &mut Control,
) -> Result<Vec<ItemReport>, SessionError> {
    let items: Vec<PlanItem> = blocking(replica, move |r| r.plan(remote)).await?;
    let items: Vec<PlanItem> = items
        .into_iter()
        .filter(|i| !matches!(i.action, botsync_engine::plan::Action::Nothing))
        .collect();
    if opts.dry_run {
        return Ok(items.iter().map(dry_report).collect());
    }
    if !opts.force {
        let planned = items.clone();
        blocking(replica, move |r| Ok(r.check_deletes(&planned)))
            .await?
            .map_err(SessionError::MassDelete)?;
    }
    let how = chunks::Fetch {
        streams: opts.streams,
        zstd: ctl.features.contains(Features::ZSTD),
        delta: delta::negotiated(ctl.features),
        deadline: opts.deadlines.chunk_batch,
    };
    let (reports, fetched) =
        chunks::fetch_and_apply(conn, replica, peer, items, how, Arc::clone(progress)).await?;
    ctl.counters.chunks_received += fetched.counters.chunks_received;
    ctl.counters.chunk_bytes_received += fetched.counters.chunk_bytes_received;
    ctl.counters.chunk_wire_bytes_received += fetched.counters.chunk_wire_bytes_received;
    for r in &reports {
        progress.event(ProgressEvent::Applied {
            path: r.path.to_string(),
        });
    }
    Ok(reports)
}

async fn push<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
    advertised: &Advertised,
    paths: &[botsync_engine::RelPath],
    remote: &[FileEntry],
    opts: &SessionOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Vec<ItemReport>, SessionError> {
    let (dry_run, force) = (opts.dry_run, opts.force);
    let paths = paths.to_vec();
    let ours = blocking(replica, move |r| r.entries(&paths)).await?;
    let theirs = entries::by_path(remote.to_vec());
    // Offer only versions the peer does not already have exactly.
    let offer: Vec<FileEntry> = ours
        .into_iter()
        .filter(|e| {
            theirs
                .get(&e.path)
                .is_none_or(|t| !(t.same_content(e) && t.version == e.version))
        })
        .collect();
    if offer.is_empty() {
        return Ok(Vec::new());
    }
    let offered = entries::by_path(offer.clone());
    if !dry_run {
        // At most these bytes travel: the peer fetches only the chunks it lacks.
        progress.event(ProgressEvent::Planned {
            files: offer.len() as u64,
            bytes: offer.iter().map(|e| e.size).sum(),
        });
    }
    entries::send_batches(ctl, advertised, offer, |entries, last| Message::Offer {
        entries,
        dry_run,
        last,
        force,
    })
    .await?;
    ctl.counters.round_trips += 1;
    let mut out = Vec::new();
    let mut answered = std::collections::HashSet::new();
    loop {
        let (items, last) = match ctl.recv().await {
            Ok(Message::OfferResult { items, last }) => (items, last),
            Err(SessionError::Remote {
                code: ErrorCode::Refused,
                message,
            }) => return Err(SessionError::Refused(message)),
            Err(e) => return Err(e),
            Ok(_) => return Err(SessionError::Protocol("expected offer result".into())),
        };
        check_results(&offered, &mut answered, &items).map_err(SessionError::Protocol)?;
        out.extend(items.into_iter().map(ItemReport::from));
        if last {
            break;
        }
    }
    if !dry_run {
        settle_conflicts(replica, &out, &offered, &theirs).await?;
    }
    Ok(out)
}

/// A result is for a path we offered, once: anything else is not an answer to this offer
/// (docs/PROTOCOL.md, `OfferResult`).
fn check_results(
    offered: &std::collections::HashMap<botsync_engine::RelPath, FileEntry>,
    answered: &mut std::collections::HashSet<botsync_engine::RelPath>,
    items: &[WireReport],
) -> Result<(), String> {
    match items
        .iter()
        .find(|i| !offered.contains_key(&i.path) || !answered.insert(i.path.clone()))
    {
        Some(item) => Err(format!(
            "an offer result for {}, which was not offered or was already answered",
            item.path
        )),
        None => Ok(()),
    }
}

/// The peer took our version of a conflict: its vector is now the merge of both histories.
/// Record the same merge here, so both sides hold equal versions and the next sync is a no-op.
/// Each merge is made against the version we offered: if ours changed since, apply decides
/// again between our new version and what the peer now holds (a conflict, both kept).
async fn settle_conflicts<R: Replica + ?Sized>(
    replica: &Arc<R>,
    results: &[ItemReport],
    offered: &std::collections::HashMap<botsync_engine::RelPath, FileEntry>,
    theirs: &std::collections::HashMap<botsync_engine::RelPath, FileEntry>,
) -> Result<(), SessionError> {
    // Versions the peer took as they are here are common ground for later merges.
    let agreed: Vec<botsync_engine::RelPath> = results
        .iter()
        .filter(|r| {
            matches!(
                r.action,
                botsync_engine::plan::Action::Take | botsync_engine::plan::Action::TakeConflict
            ) && r.outcome == Outcome::Done
                && offered.get(&r.path).is_some_and(|e| !e.is_tombstone())
        })
        .map(|r| r.path.clone())
        .collect();
    if !agreed.is_empty() {
        blocking(replica, move |r| {
            r.record_merge_bases(&agreed);
            Ok(())
        })
        .await?;
    }
    let pairs: Vec<(&FileEntry, &FileEntry)> = results
        .iter()
        .filter(|r| {
            r.action == botsync_engine::plan::Action::TakeConflict && r.outcome == Outcome::Done
        })
        .filter_map(|r| Some((theirs.get(&r.path)?, offered.get(&r.path)?)))
        .collect();
    let Some(peer) = pairs.first().map(|(t, _)| t.changed_by.peer) else {
        return Ok(());
    };
    let merges: Vec<PlanItem> = pairs
        .into_iter()
        .map(|(t, ours)| {
            // What the peer holds now: our content under the merge of both vectors.
            let mut now_theirs = ours.clone();
            now_theirs.version = ours.version.merge(&t.version);
            PlanItem {
                remote: now_theirs,
                action: botsync_engine::plan::Action::MergeVersion,
                bytes_needed: 0,
                base: Some(botsync_engine::plan::Base::of(ours)),
                policy: botsync_engine::reconcile::MergePolicy::Newest,
            }
        })
        .collect();
    blocking(replica, move |r| r.apply(merges, peer, HeldChunks::new()))
        .await
        .map(|_| ())
}

/// What a dry run reports for a planned item.
pub(crate) fn dry_report(i: &PlanItem) -> ItemReport {
    ItemReport {
        path: i.remote.path.clone(),
        action: i.action.clone(),
        outcome: if i.action.writes_file() {
            Outcome::Done
        } else {
            Outcome::Unchanged
        },
        size: i.remote.size,
        bytes_fetched: i.bytes_needed,
        conflict_copy: None,
        changed_by: Some(i.remote.changed_by.clone()),
        mtime_ns: i.remote.mtime_ns,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::{HashMap, HashSet};

    use botsync_engine::RelPath;
    use botsync_engine::plan::{Action, Outcome};

    use super::*;

    fn result(path: &str) -> WireReport {
        WireReport::from(ItemReport {
            path: RelPath::new(path).unwrap(),
            action: Action::Take,
            outcome: Outcome::Done,
            size: 1,
            bytes_fetched: 1,
            conflict_copy: None,
            changed_by: None,
            mtime_ns: 0,
        })
    }

    #[test]
    fn offer_results_answer_only_offered_paths_once() {
        let entry = crate::testing::file_entry("memory/a.md", b"a", false);
        let offered: HashMap<RelPath, FileEntry> = HashMap::from([(entry.path.clone(), entry)]);
        let mut answered = HashSet::new();
        assert!(check_results(&offered, &mut answered, &[result("memory/a.md")]).is_ok());
        let again = check_results(&offered, &mut answered, &[result("memory/a.md")]);
        assert!(again.unwrap_err().contains("already answered"));
        let mut answered = HashSet::new();
        let never = check_results(&offered, &mut answered, &[result("USER.md")]);
        assert!(never.unwrap_err().contains("USER.md"));
    }
}
