//! The answering side of a session (`botsync serve`): the tokio driver of the [`Responder`]
//! machine over a quinn connection, with what only a connection has (admission under the
//! budget, the request deadline counted from the peer's activity, the refusal's `Error` and
//! close).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use botsync_engine::PeerId;
use tracing::{Instrument, info_span};

use super::client::PendingRefresh;
use super::responder::Responder;
pub use super::responder::ServeReport;
use super::service::{self, Service, ServiceSlot};
use super::work::{self, Answer, Io, Need, Transfer, Transferred};
use super::{
    AbortOnDrop, Activity, Advertised, Control, NoProgress, SessionError, blocking, chunks,
    entries, refuse, within,
};
use crate::budget::{Admission, Budget, Phase};
use crate::close::CloseCode;
use crate::frame::read_frame;
use crate::messages::{ErrorCode, Features, Message};
use crate::replica::Replica;

/// How the answering side introduces itself.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Our name in `Hello`.
    pub name: String,
    /// Parallel streams when fetching pushed chunks.
    pub streams: usize,
    /// The listener's shared budget (connections, sessions, requests) and its deadlines.
    pub budget: Budget,
    /// The optional features we offer in `Hello` (all we support by default).
    pub features: Features,
}

impl ServeOptions {
    /// Options named `name` with 6 fetch streams and `budget`.
    pub fn new(name: &str, budget: Budget) -> ServeOptions {
        ServeOptions {
            name: name.to_owned(),
            streams: 6,
            budget,
            features: Features::SUPPORTED,
        }
    }
}

/// Answer the session the peer `peer` opens on `conn`, until it says goodbye or closes. A
/// connection beyond the budget in `opts` is closed with `busy` before anything is read.
pub async fn serve<R: Replica + ?Sized>(
    conn: quinn::Connection,
    peer: PeerId,
    replica: Arc<R>,
    opts: ServeOptions,
) -> Result<ServeReport, SessionError> {
    let admission = Arc::new(admit(&conn, &opts.budget, peer)?);
    let hello = opts.budget.deadlines().hello;
    let opening = async {
        let (send, mut recv) = conn.accept_bi().await?;
        let first = read_frame(&mut recv).await?;
        Ok::<_, SessionError>((send, recv, first))
    };
    let (send, recv, first) = match within(Phase::Hello, hello, opening).await.and_then(|r| r) {
        Ok(opened) => opened,
        Err(e) => {
            let e = e.on(&conn);
            e.close_code().close(&conn);
            return Err(e);
        }
    };
    let slot = ServiceSlot::default();
    let guard = service::Guard {
        admission: Some(Arc::clone(&admission)),
        deadlines: *opts.budget.deadlines(),
    };
    let _requests = AbortOnDrop(tokio::spawn(service::run(
        conn.clone(),
        slot.clone(),
        guard,
    )));
    respond(
        &conn,
        peer,
        replica,
        &opts,
        &admission,
        (send, recv),
        first,
        &slot,
    )
    .await
}

/// Admit `peer`'s connection under `budget`, or close it with `busy` and say why.
pub(crate) fn admit(
    conn: &quinn::Connection,
    budget: &Budget,
    peer: PeerId,
) -> Result<Admission, SessionError> {
    budget.admit(peer).map_err(|refusal| {
        tracing::warn!(peer = %peer, "connection refused: {refusal}");
        CloseCode::Busy.close(conn);
        SessionError::Busy(refusal)
    })
}

/// Answer one session whose control stream is `ctl` and whose first message was `first`. While
/// it runs, its request service sits in `slot`, where the connection's stream acceptor finds it.
/// A session beyond the session budget is answered `Error(Busy)` and closed with `busy`.
#[allow(clippy::too_many_arguments)] // each is one part of the session's context
pub(crate) async fn respond<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    peer: PeerId,
    replica: Arc<R>,
    opts: &ServeOptions,
    admission: &Admission,
    ctl: (quinn::SendStream, quinn::RecvStream),
    first: Option<Message>,
    slot: &ServiceSlot<R>,
) -> Result<ServeReport, SessionError> {
    let span = info_span!("serve-session", peer = %peer);
    async move {
        let (send, recv) = ctl;
        let mut ctl = Control {
            send,
            recv,
            counters: Default::default(),
            features: Features::NONE,
            deadlines: *opts.budget.deadlines(),
        };
        let mut machine = Responder::new(peer, &opts.name, opts.features);
        let Some(first) = first else {
            let why = "the session did not start with hello: the control stream ended first";
            refuse(
                conn,
                &mut ctl.send,
                ErrorCode::UnexpectedMessage,
                CloseCode::ProtocolError,
                why,
            )
            .await;
            return Err(SessionError::Protocol(why.into()));
        };
        ctl.counters.messages_received += 1;
        machine.on_message(first)?;
        let mut _session = None;
        let mut pending = None;
        let advertised = Advertised::default();
        let activity = Activity::default();
        if machine.hello_taken() {
            _session = match admission.session() {
                Ok(permit) => Some(permit),
                Err(refusal) => {
                    tracing::warn!(peer = %peer, "session refused: {refusal}");
                    refuse(
                        conn,
                        &mut ctl.send,
                        ErrorCode::Busy,
                        CloseCode::Busy,
                        &refusal.to_string(),
                    )
                    .await;
                    return Err(SessionError::Busy(refusal));
                }
            };
            // Rescan while the initiator rescans; the answer to its Summary waits for it.
            pending = Some(super::client::start_refresh(&replica));
            let features = machine.features();
            ctl.features = features;
            slot.set(Service {
                conn: conn.clone(),
                replica: Arc::clone(&replica),
                advertised: advertised.clone(),
                zstd: features.contains(Features::ZSTD),
                delta: super::delta::negotiated(features),
                bytes_served: Arc::new(AtomicU64::new(0)),
                progress: Arc::new(NoProgress),
                budget: Some(admission.budget().clone()),
                deadlines: ctl.deadlines,
                activity: activity.clone(),
            });
        }
        let driver = Driver {
            conn,
            peer,
            replica: &replica,
            opts,
            advertised: &advertised,
            activity: &activity,
        };
        let driven = driver
            .drive(&mut machine, &mut ctl, pending)
            .await
            .map_err(|e| e.on(conn));
        slot.clear();
        match &driven {
            // Our own failure: the initiator is told what it was (a full disk by name), not
            // just "internal error".
            Err(SessionError::Replica(e)) => {
                let message = if e.is_disk_full() {
                    format!(
                        "disk full on {}: {e}; free space there and sync again",
                        opts.name
                    )
                } else {
                    format!("{} failed: {e}", opts.name)
                };
                refuse(
                    conn,
                    &mut ctl.send,
                    ErrorCode::Internal,
                    CloseCode::Internal,
                    &message,
                )
                .await;
            }
            Err(e) => e.close_code().close(conn),
            Ok(()) => {}
        }
        driven?;
        machine.finish()
    }
    .instrument(span)
    .await
}

/// What the driver of one answered session works with.
struct Driver<'a, R: Replica + ?Sized> {
    conn: &'a quinn::Connection,
    peer: PeerId,
    replica: &'a Arc<R>,
    opts: &'a ServeOptions,
    advertised: &'a Advertised,
    activity: &'a Activity,
}

impl<R: Replica + ?Sized> Driver<'_, R> {
    /// Carry out what the machine asks until it is done or the initiator closes.
    async fn drive(
        &self,
        machine: &mut Responder,
        ctl: &mut Control,
        mut pending: Option<PendingRefresh>,
    ) -> Result<(), SessionError> {
        while let Some(io) = machine.poll() {
            match io {
                Io::Send(m) => ctl.send(&m).await?,
                Io::Recv(phase) => {
                    let phase = phase.unwrap_or(Phase::Request);
                    match self.next_message(ctl, phase).await? {
                        Ok(Some(m)) => {
                            ctl.counters.messages_received += 1;
                            machine.on_message(m)?;
                        }
                        // The initiator may close right after its goodbye.
                        Ok(None) => return Ok(()),
                        Err(e) if is_closed(&e) => return Ok(()),
                        Err(e) => return Err(e.into()),
                    }
                }
                Io::Need(Need::Snapshot) if pending.is_some() => {
                    let refresh = async {
                        match pending.take() {
                            Some(p) => {
                                Ok(p.await.map_err(|e| SessionError::Task(e.to_string()))??)
                            }
                            None => blocking(self.replica, |r| r.refresh()).await,
                        }
                    };
                    let snap = ctl.while_working(refresh).await?;
                    machine.on_answer(Answer::Snapshot(snap))?;
                }
                Io::Need(need) => {
                    let work = blocking(self.replica, move |r| work::execute(r, need));
                    let answer = ctl.while_working(work).await?;
                    machine.on_answer(answer)?;
                }
                Io::Transfer(Transfer::Complete(wire)) => {
                    let deadline = self.opts.budget.deadlines().chunk_batch;
                    let full = entries::complete(self.conn, self.replica, wire, deadline).await?;
                    machine.on_transfer(Transferred::Completed(full))?;
                }
                Io::Transfer(Transfer::FetchAndApply(items)) => {
                    let features = machine.features();
                    let fetch = chunks::Fetch {
                        streams: self.opts.streams,
                        zstd: features.contains(Features::ZSTD),
                        delta: super::delta::negotiated(features),
                        deadline: self.opts.budget.deadlines().chunk_batch,
                    };
                    let (applied, fetched) = ctl
                        .while_working(chunks::fetch_and_apply(
                            self.conn,
                            self.replica,
                            self.peer,
                            items,
                            fetch,
                            Arc::new(NoProgress),
                        ))
                        .await?;
                    machine.on_transfer(Transferred::Applied(applied, fetched.counters))?;
                }
                Io::Advertise(content, list) => self.advertised.add(content, &list),
                Io::Progress(_) => {}
                Io::Refuse {
                    code,
                    close,
                    message,
                } => {
                    refuse(self.conn, &mut ctl.send, code, close, &message).await;
                    return Ok(());
                }
                Io::Exchange(_) => {
                    return Err(SessionError::Task(
                        "the responder asked to pipeline requests".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The initiator's next control message, unless `phase` passes its deadline first. The
    /// request deadline counts from our last reply or the last request the initiator made on
    /// the session's request streams, whichever is later: an initiator fetching chunks from us
    /// is busy, not stalled. A `Working` (feature `STILL_WORKING`) restarts the deadline of any
    /// phase and is not returned: the initiator is applying or rescanning.
    async fn next_message(
        &self,
        ctl: &mut Control,
        phase: Phase,
    ) -> Result<Result<Option<Message>, crate::frame::FrameError>, SessionError> {
        let after = ctl.deadlines.of(phase);
        self.activity.touch();
        loop {
            let r = {
                let read = read_frame(&mut ctl.recv);
                tokio::pin!(read);
                loop {
                    let since = self.activity.last();
                    tokio::select! {
                        r = &mut read => break r,
                        () = tokio::time::sleep_until(since + after) => {
                            if phase != Phase::Request || self.activity.last() == since {
                                return Err(SessionError::Deadline { phase, after });
                            }
                        }
                    }
                }
            };
            match r {
                Ok(Some(m)) if ctl.is_keep_alive(&m) => {
                    ctl.counters.messages_received += 1;
                    self.activity.touch();
                }
                other => return Ok(other),
            }
        }
    }
}

fn is_closed(e: &crate::frame::FrameError) -> bool {
    matches!(e, crate::frame::FrameError::Io { .. })
}
