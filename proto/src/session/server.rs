//! The answering side of a session (`botsync serve`): answer the initiator's requests and take
//! its offered versions under our own rules.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use botsync_engine::PeerId;
use botsync_engine::plan::{Action, ItemReport};
use tracing::{Instrument, debug, info_span};

use super::client::{PendingRefresh, dry_report};
use super::service::{self, Service};
use super::{Advertised, Control, NoProgress, SessionError, blocking, chunks, entries};
use crate::close::CloseCode;
use crate::frame::read_frame;
use crate::limits::MAX_ENTRIES_PER_BATCH;
use crate::messages::{ErrorCode, Features, Hello, Message, NodeReply};
use crate::replica::Replica;

/// How the answering side introduces itself.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Our name in `Hello`.
    pub name: String,
    /// Parallel streams when fetching pushed chunks.
    pub streams: usize,
}

/// What an answered session did.
#[derive(Debug, Clone, Default)]
pub struct ServeReport {
    /// Items the initiator pushed to us, as carried out.
    pub applied: Vec<ItemReport>,
    /// True if the initiator only compared roots.
    pub in_sync: bool,
}

/// Answer the session the peer `peer` opens on `conn`, until it says goodbye or closes.
pub async fn serve<R: Replica + ?Sized>(
    conn: quinn::Connection,
    peer: PeerId,
    replica: Arc<R>,
    opts: ServeOptions,
) -> Result<ServeReport, SessionError> {
    let span = info_span!("serve-session", peer = %peer);
    async move {
        let (send, mut recv) = conn.accept_bi().await?;
        let first = match read_frame(&mut recv).await {
            Ok(m) => m,
            Err(e) => {
                let e = SessionError::from(e);
                e.close_code().close(&conn);
                return Err(e);
            }
        };
        let mut ctl = Control {
            send,
            recv,
            counters: Default::default(),
        };
        let Some(Message::Hello(theirs)) = first else {
            let _ = ctl
                .send(&protocol_error("a session starts with hello"))
                .await;
            CloseCode::ProtocolError.close(&conn);
            return Err(SessionError::Protocol(
                "session did not start with hello".into(),
            ));
        };
        // Rescan while the initiator rescans; the answer to its Summary waits for it.
        let pending = super::client::start_refresh(&replica);
        let hello = Hello::current(&opts.name, botsync_engine::AgentLabel::default());
        ctl.send(&Message::Hello(hello.clone())).await?;
        let negotiated = match hello.negotiate(&theirs) {
            Ok(n) => n,
            Err(e) => {
                let _ = ctl
                    .send(&Message::Error {
                        code: ErrorCode::VersionMismatch,
                        message: e.to_string(),
                    })
                    .await;
                let _ = ctl.send.finish();
                // Let the error message reach the peer before closing.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ctl.send.stopped())
                    .await;
                CloseCode::VersionMismatch.close(&conn);
                return Err(SessionError::Version(e.to_string()));
            }
        };
        let advertised = Advertised::default();
        let svc = Service {
            replica: Arc::clone(&replica),
            advertised: advertised.clone(),
            zstd: negotiated.features.contains(Features::ZSTD),
            bytes_served: Arc::new(AtomicU64::new(0)),
            progress: Arc::new(NoProgress),
        };
        let service_task = tokio::spawn(service::run(conn.clone(), svc));
        let result = control_loop(
            &conn,
            peer,
            &replica,
            &opts,
            &advertised,
            &mut ctl,
            Some(pending),
        )
        .await;
        service_task.abort();
        if let Err(e) = &result {
            e.close_code().close(&conn);
        }
        result
    }
    .instrument(span)
    .await
}

async fn control_loop<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    peer: PeerId,
    replica: &Arc<R>,
    opts: &ServeOptions,
    advertised: &Advertised,
    ctl: &mut Control,
    mut pending: Option<PendingRefresh>,
) -> Result<ServeReport, SessionError> {
    let mut report = ServeReport::default();
    let mut offered = Vec::new();
    let mut summarized = false;
    loop {
        let msg = match read_frame(&mut ctl.recv).await {
            Ok(Some(m)) => m,
            // The initiator may close right after its goodbye.
            Ok(None) => return Ok(report),
            Err(e) if is_closed(&e) => return Ok(report),
            Err(e) => return Err(e.into()),
        };
        ctl.counters.messages_received += 1;
        match msg {
            Message::Summary { root, .. } if !summarized => {
                summarized = true;
                // Fresh state: the rescan (stat cache) started at Hello must finish first.
                let snap = match pending.take() {
                    Some(p) => p.await.map_err(|e| SessionError::Task(e.to_string()))??,
                    None => blocking(replica, |r| r.refresh()).await?,
                };
                report.in_sync = snap.root == root;
                ctl.send(&Message::Summary {
                    root: snap.root,
                    files: snap.files,
                    mode: crate::messages::SessionMode::Sync,
                })
                .await?;
            }
            Message::GetNodes { paths } if summarized => {
                let nodes = blocking(replica, move |r| {
                    paths
                        .into_iter()
                        .map(|p| {
                            Ok(NodeReply {
                                children: r.children(&p)?.unwrap_or_default(),
                                path: p,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .await?;
                ctl.send(&Message::Nodes { nodes }).await?;
            }
            Message::GetEntries { paths } if summarized => {
                entries::answer(ctl, replica, advertised, paths).await?;
            }
            Message::Offer {
                entries: batch,
                dry_run,
                last,
            } if summarized => {
                offered.extend(batch);
                if last {
                    let wire = std::mem::take(&mut offered);
                    let items = take_offer(conn, peer, replica, opts, wire, dry_run).await?;
                    if !dry_run {
                        report.applied.extend(items.iter().cloned());
                    }
                    send_results(ctl, items).await?;
                }
            }
            Message::Goodbye => return Ok(report),
            other => {
                let _ = ctl
                    .send(&protocol_error(&format!(
                        "unexpected {} here",
                        other.kind()
                    )))
                    .await;
                return Err(SessionError::Protocol(format!(
                    "unexpected {}",
                    other.kind()
                )));
            }
        }
    }
}

async fn take_offer<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    peer: PeerId,
    replica: &Arc<R>,
    opts: &ServeOptions,
    wire: Vec<crate::messages::WireEntry>,
    dry_run: bool,
) -> Result<Vec<ItemReport>, SessionError> {
    let incoming = entries::complete(conn, replica, wire).await?;
    let (incoming, refused) = entries::screen(replica, peer, incoming).await?;
    let items = blocking(replica, move |r| r.plan(incoming)).await?;
    let items: Vec<_> = items
        .into_iter()
        .filter(|i| i.action != Action::Nothing)
        .collect();
    if dry_run {
        return Ok(refused
            .into_iter()
            .chain(items.iter().map(dry_report))
            .collect());
    }
    let planned = items.clone();
    let needed = blocking(replica, move |r| r.chunks_needed(&planned)).await?;
    let fetched = chunks::fetch(conn, replica, needed, opts.streams, Arc::new(NoProgress)).await?;
    debug!(
        chunks = fetched.counters.chunks_received,
        missing = fetched.missing.len(),
        "pushed chunks fetched"
    );
    let applied = blocking(replica, move |r| r.apply(items, peer)).await?;
    Ok(refused.into_iter().chain(applied).collect())
}

async fn send_results(ctl: &mut Control, items: Vec<ItemReport>) -> Result<(), SessionError> {
    if items.is_empty() {
        return ctl.send(&Message::OfferResult { items, last: true }).await;
    }
    let n = items.len().div_ceil(MAX_ENTRIES_PER_BATCH);
    let mut it = items.into_iter();
    for i in 0..n {
        let batch: Vec<_> = it.by_ref().take(MAX_ENTRIES_PER_BATCH).collect();
        ctl.send(&Message::OfferResult {
            items: batch,
            last: i + 1 == n,
        })
        .await?;
    }
    Ok(())
}

fn protocol_error(message: &str) -> Message {
    Message::Error {
        code: ErrorCode::UnexpectedMessage,
        message: message.to_owned(),
    }
}

fn is_closed(e: &crate::frame::FrameError) -> bool {
    matches!(e, crate::frame::FrameError::Io { .. })
}
