//! The initiating side of a session (`botsync sync/push/pull/diff`): the tokio driver of the
//! [`Initiator`] machine over a quinn connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use botsync_engine::PeerId;
use tracing::{Instrument, info_span};

use super::initiator::Initiator;
use super::service::{self, Service, ServiceSlot};
use super::work::{self, Answer, Io, Need, Transfer, Transferred};
use super::{
    AbortOnDrop, Advertised, Control, Progress, SessionError, SessionOptions, SessionReport,
    blocking, chunks, delta, entries,
};
use crate::messages::Features;
use crate::replica::{Replica, ReplicaError, Snapshot};

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
    let (send, recv) = conn.open_bi().await?;
    let mut ctl = Control {
        send,
        recv,
        counters: Default::default(),
        features: Features::NONE,
        deadlines: opts.deadlines,
    };
    let mut machine = Initiator::new(peer, opts.clone());
    let mut pending = Some(pending);
    let advertised = Advertised::default();
    let bytes_served = Arc::new(AtomicU64::new(0));
    // The request service answers the peer's chunk and chunk-tree requests from the moment the
    // features are known; aborted when the session ends, whichever way (a kept connection
    // carries the next session).
    let mut service = None;
    while let Some(io) = machine.poll() {
        match io {
            Io::Send(m) => ctl.send(&m).await?,
            Io::Exchange(requests) => {
                ctl.exchange(&requests, |reply| machine.on_message(reply))
                    .await?;
            }
            Io::Recv(phase) => {
                let m = ctl.recv_any(phase).await?;
                machine.on_message(m)?;
            }
            Io::Need(Need::Snapshot) if pending.is_some() => {
                let refresh = async {
                    match pending.take() {
                        Some(p) => Ok(p.await.map_err(|e| SessionError::Task(e.to_string()))??),
                        None => blocking(&replica, |r| r.refresh()).await,
                    }
                };
                let snap = ctl.while_working(refresh).await?;
                machine.on_answer(Answer::Snapshot(snap))?;
            }
            Io::Need(need) => {
                let work = blocking(&replica, move |r| work::execute(r, need));
                let answer = ctl.while_working(work).await?;
                machine.on_answer(answer)?;
            }
            Io::Transfer(Transfer::Complete(wire)) => {
                let deadline = opts.deadlines.chunk_batch;
                let full = entries::complete(conn, &replica, wire, deadline).await?;
                machine.on_transfer(Transferred::Completed(full))?;
            }
            Io::Transfer(Transfer::FetchAndApply(items)) => {
                let features = machine.negotiated().unwrap_or(Features::NONE);
                let how = chunks::Fetch {
                    streams: opts.streams,
                    zstd: features.contains(Features::ZSTD),
                    delta: delta::negotiated(features),
                    deadline: opts.deadlines.chunk_batch,
                };
                let (reports, fetched) = ctl
                    .while_working(chunks::fetch_and_apply(
                        conn,
                        &replica,
                        peer,
                        items,
                        how,
                        Arc::clone(&progress),
                    ))
                    .await?;
                machine.on_transfer(Transferred::Applied(reports, fetched.counters))?;
            }
            Io::Advertise(content, list) => advertised.add(content, &list),
            Io::Progress(event) => progress.event(event),
            Io::Refuse {
                code,
                close,
                message,
            } => {
                super::refuse(conn, &mut ctl.send, code, close, &message).await;
                return Err(SessionError::Protocol(message));
            }
        }
        if service.is_none()
            && let Some(features) = machine.negotiated()
        {
            ctl.features = features;
            let svc = Service {
                conn: conn.clone(),
                replica: Arc::clone(&replica),
                advertised: advertised.clone(),
                zstd: features.contains(Features::ZSTD),
                delta: delta::negotiated(features),
                bytes_served: Arc::clone(&bytes_served),
                progress: Arc::clone(&progress),
                budget: None,
                deadlines: opts.deadlines,
                activity: Default::default(),
            };
            service = Some(AbortOnDrop(tokio::spawn(service::run(
                conn.clone(),
                ServiceSlot::with(svc),
                service::Guard::unbudgeted(opts.deadlines),
            ))));
        }
    }
    if !machine.is_done() {
        // The machine asked for nothing more before its goodbye: a bug here, never a success.
        return Err(SessionError::Task(
            "the session stopped before its end; this is a bug in botsync, please report it".into(),
        ));
    }
    let _ = ctl.send.finish();
    let mut report = machine.finish();
    report.counters.messages_sent = ctl.counters.messages_sent;
    report.counters.messages_received = ctl.counters.messages_received;
    report.bytes_sent = bytes_served.load(Ordering::Relaxed);
    Ok(report)
}
