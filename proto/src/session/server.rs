//! The answering side of a session (`botsync serve`): answer the initiator's requests and take
//! its offered versions under our own rules.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use botsync_engine::plan::{Action, ItemReport};
use botsync_engine::{PeerId, RelPath};
use tracing::{Instrument, debug, info_span};

use super::client::{PendingRefresh, dry_report};
use super::order::{ResponderOrder, Step};
use super::service::{self, Service, ServiceSlot};
use super::{
    AbortOnDrop, Activity, Advertised, Control, NoProgress, SessionError, blocking, chunks,
    entries, mesh, refuse, state, within,
};
use crate::budget::{Admission, Budget, Phase};
use crate::close::CloseCode;
use crate::codec::CodecError;
use crate::frame::read_frame;
use crate::messages::{
    ErrorCode, Features, Hello, Message, NodeReply, bucket_batches, buckets, node_batches,
    result_batches,
};
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

/// What an answered session did.
#[derive(Debug, Clone, Default)]
pub struct ServeReport {
    /// Items the initiator pushed to us, as carried out.
    pub applied: Vec<ItemReport>,
    /// True if the initiator only compared roots.
    pub in_sync: bool,
    /// Mesh config files the initiator's push changed here.
    pub mesh: Vec<crate::replica::MeshChange>,
    /// What taking the initiator's pushed state records did (feature STATE).
    pub state: crate::replica::StateApplied,
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
        let Some(Message::Hello(theirs)) = first else {
            refuse(
                conn,
                &mut ctl.send,
                ErrorCode::UnexpectedMessage,
                CloseCode::ProtocolError,
                "a session starts with hello",
            )
            .await;
            return Err(SessionError::Protocol(
                "session did not start with hello".into(),
            ));
        };
        let _session = match admission.session() {
            Ok(permit) => permit,
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
        let pending = super::client::start_refresh(&replica);
        let mut hello = Hello::current(&opts.name, botsync_engine::AgentLabel::default());
        hello.features = hello.features.intersection(opts.features);
        ctl.send(&Message::Hello(hello.clone())).await?;
        let negotiated = match hello.negotiate(&theirs) {
            Ok(n) => n,
            Err(e) => {
                refuse(
                    conn,
                    &mut ctl.send,
                    ErrorCode::VersionMismatch,
                    CloseCode::VersionMismatch,
                    &e.to_string(),
                )
                .await;
                return Err(SessionError::Version(e.to_string()));
            }
        };
        ctl.features = negotiated.features;
        let advertised = Advertised::default();
        let activity = Activity::default();
        slot.set(Service {
            conn: conn.clone(),
            replica: Arc::clone(&replica),
            advertised: advertised.clone(),
            zstd: negotiated.features.contains(Features::ZSTD),
            delta: super::delta::negotiated(negotiated.features),
            bytes_served: Arc::new(AtomicU64::new(0)),
            progress: Arc::new(NoProgress),
            budget: Some(admission.budget().clone()),
            deadlines: ctl.deadlines,
            activity: activity.clone(),
        });
        let session = Responder {
            conn,
            peer,
            replica: &replica,
            opts,
            advertised: &advertised,
            features: negotiated.features,
            activity: &activity,
        };
        let result = session
            .control_loop(&mut ctl, Some(pending))
            .await
            .map_err(|e| e.on(conn));
        slot.clear();
        match &result {
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
            Ok(_) => {}
        }
        result
    }
    .instrument(span)
    .await
}

/// What the control loop of one answered session works with.
struct Responder<'a, R: Replica + ?Sized> {
    conn: &'a quinn::Connection,
    peer: PeerId,
    replica: &'a Arc<R>,
    opts: &'a ServeOptions,
    advertised: &'a Advertised,
    features: Features,
    activity: &'a Activity,
}

impl<R: Replica + ?Sized> Responder<'_, R> {
    async fn control_loop(
        &self,
        ctl: &mut Control,
        mut pending: Option<PendingRefresh>,
    ) -> Result<ServeReport, SessionError> {
        let mut report = ServeReport::default();
        let mut offered = Vec::new();
        // Which message may come next (the pure rules of `order.rs`).
        let mut order = ResponderOrder::new(self.features);
        // Our state as told in our Summary (a parity report repeats it).
        let mut ours = None;
        loop {
            let phase = match order.mode() {
                None => Phase::Summary,
                Some(_) => Phase::Request,
            };
            let msg = match self.next_message(ctl, phase).await? {
                Ok(Some(m)) => m,
                // The initiator may close right after its goodbye.
                Ok(None) => return Ok(report),
                Err(e) if is_closed(&e) => return Ok(report),
                Err(e) => return Err(e.into()),
            };
            ctl.counters.messages_received += 1;
            let step = match order.accept(&msg) {
                Ok(step) => step,
                Err(why) => return Err(self.refuse(ctl, why).await),
            };
            match (step, msg) {
                (Step::Summary(theirs), Message::Summary { root, .. }) => {
                    // Fresh state: the rescan (stat cache) started at Hello must finish first.
                    let snap = match pending.take() {
                        Some(p) => p.await.map_err(|e| SessionError::Task(e.to_string()))??,
                        None => blocking(self.replica, |r| r.refresh()).await?,
                    };
                    report.in_sync = snap.root == root;
                    if !snap.skipped.is_empty() {
                        tracing::warn!(skipped = ?snap.skipped, "files not read by the rescan; not synced this session");
                    }
                    ctl.send(&Message::Summary {
                        root: snap.root,
                        files: snap.files,
                        mode: theirs,
                        skipped: snap.skipped.len() as u64,
                    })
                    .await?;
                    if mesh::volunteered(self.features, theirs) {
                        mesh::send_ours(ctl, self.replica).await?;
                    }
                    ours = Some(snap);
                }
                (Step::Mesh, Message::GetParity) => {
                    if let Some(snap) = ours.as_ref() {
                        mesh::answer_parity(ctl, self.replica, snap).await?;
                    }
                }
                (Step::Mesh, Message::GetMeshConfig) => mesh::send_ours(ctl, self.replica).await?,
                (Step::Mesh, Message::MeshConfig { files }) => {
                    let changes = mesh::take_pushed(ctl, self.replica, self.peer, files).await?;
                    report.mesh.extend(changes);
                }
                (Step::Nodes, Message::GetNodes { paths }) => {
                    let nodes = blocking(self.replica, move |r| {
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
                    self.send_nodes(ctl, nodes).await?;
                }
                (Step::Nodes, Message::GetBuckets { dirs }) => {
                    let nodes = blocking(self.replica, move |r| {
                        dirs.iter()
                            .map(|ask| {
                                Ok(buckets::answer(
                                    ask,
                                    r.children(&ask.path)?.unwrap_or_default(),
                                ))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await?;
                    let sizes: Vec<(RelPath, usize)> = nodes
                        .iter()
                        .map(|n| (n.path.clone(), n.children.len()))
                        .collect();
                    self.send_replies(ctl, &sizes, bucket_batches(nodes))
                        .await?;
                }
                (Step::Entries, Message::GetEntries { paths }) => {
                    entries::answer(ctl, self.replica, self.advertised, paths).await?;
                }
                (
                    Step::Offer { last },
                    Message::Offer {
                        entries: batch,
                        dry_run,
                        force,
                        ..
                    },
                ) => {
                    offered.extend(batch);
                    if last {
                        let wire = std::mem::take(&mut offered);
                        match self.take_offer(wire, dry_run, force).await {
                            Ok(items) => {
                                if !dry_run {
                                    report.applied.extend(items.iter().cloned());
                                }
                                send_results(ctl, items).await?;
                            }
                            // Refused before anything was fetched or written: the initiator is
                            // told why in one line, and this side goes on serving.
                            Err(SessionError::MassDelete(m)) => {
                                tracing::warn!(peer = %self.peer, deletes = m.deletes, "push refused by the delete guard");
                                ctl.send(&Message::Error {
                                    code: ErrorCode::Refused,
                                    message: format!("this push {m}"),
                                })
                                .await?;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                (Step::StateAsked, Message::GetState { patterns, digest }) => {
                    state::answer(ctl, self.replica, patterns, digest).await?;
                }
                (Step::StatePushed { last }, Message::State { records, .. }) => {
                    if !records.is_empty() {
                        let peer = self.peer;
                        let applied =
                            blocking(self.replica, move |r| r.apply_state(records, peer)).await?;
                        report.state.extend(applied);
                    }
                    if last {
                        // Taken: the initiator may end the session now.
                        ctl.send(&Message::State {
                            records: Vec::new(),
                            last: true,
                        })
                        .await?;
                    }
                }
                (Step::Goodbye, _) => return Ok(report),
                (step, other) => {
                    // The order accepted a message its step does not describe: a bug here,
                    // not the peer's fault, but still no reason to act on it.
                    let why = format!("{} taken as {step:?}", other.kind());
                    return Err(self.refuse(ctl, why).await);
                }
            }
        }
    }

    /// The initiator's next control message, unless `phase` passes its deadline first. The
    /// request deadline counts from our last reply or the last request the initiator made on
    /// the session's request streams, whichever is later: an initiator fetching chunks from us
    /// is busy, not stalled.
    async fn next_message(
        &self,
        ctl: &mut Control,
        phase: Phase,
    ) -> Result<Result<Option<Message>, crate::frame::FrameError>, SessionError> {
        let after = ctl.deadlines.of(phase);
        self.activity.touch();
        let read = read_frame(&mut ctl.recv);
        tokio::pin!(read);
        loop {
            let since = self.activity.last();
            tokio::select! {
                r = &mut read => return Ok(r),
                () = tokio::time::sleep_until(since + after) => {
                    if phase != Phase::Request || self.activity.last() == since {
                        return Err(SessionError::Deadline { phase, after });
                    }
                }
            }
        }
    }

    /// Answer one `GetNodes` with as many `Nodes` messages as its replies need frames.
    async fn send_nodes(
        &self,
        ctl: &mut Control,
        nodes: Vec<NodeReply>,
    ) -> Result<(), SessionError> {
        let sizes: Vec<(RelPath, usize)> = nodes
            .iter()
            .map(|n| (n.path.clone(), n.children.len()))
            .collect();
        self.send_replies(ctl, &sizes, node_batches(nodes)).await
    }

    /// Send the `batches` of one `GetNodes` or `GetBuckets` answer (`sizes`: each directory and
    /// the children it lists). A directory whose listing alone exceeds a frame cannot be sent:
    /// the initiator is told so in `Error(Internal)` and the session ends with `internal`.
    async fn send_replies(
        &self,
        ctl: &mut Control,
        sizes: &[(RelPath, usize)],
        batches: Result<Vec<Message>, CodecError>,
    ) -> Result<(), SessionError> {
        match batches {
            Ok(batches) => {
                for batch in &batches {
                    ctl.send(batch).await?;
                }
                Ok(())
            }
            Err(e) => {
                let (path, children) = sizes
                    .iter()
                    .max_by_key(|(_, n)| *n)
                    .cloned()
                    .unwrap_or((RelPath::root(), 0));
                let why = format!(
                    "directory \"{path}\" has {children} entries, more than one frame can list ({e}); split it into subdirectories"
                );
                refuse(
                    self.conn,
                    &mut ctl.send,
                    ErrorCode::Internal,
                    CloseCode::Internal,
                    &why,
                )
                .await;
                Err(SessionError::Replica(crate::replica::ReplicaError::other(
                    why,
                )))
            }
        }
    }

    /// `Error(UnexpectedMessage)` to the initiator, then the `protocol-error` close.
    async fn refuse(&self, ctl: &mut Control, why: String) -> SessionError {
        refuse(
            self.conn,
            &mut ctl.send,
            ErrorCode::UnexpectedMessage,
            CloseCode::ProtocolError,
            &why,
        )
        .await;
        SessionError::Protocol(why)
    }

    async fn take_offer(
        &self,
        wire: Vec<crate::messages::WireEntry>,
        dry_run: bool,
        force: bool,
    ) -> Result<Vec<ItemReport>, SessionError> {
        let (conn, replica, peer) = (self.conn, self.replica, self.peer);
        let chunk_tree = self.features.contains(Features::CHUNK_TREE);
        let deadline = self.opts.budget.deadlines().chunk_batch;
        let incoming = entries::complete(conn, replica, wire, chunk_tree, deadline).await?;
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
        if !force {
            let planned = items.clone();
            blocking(replica, move |r| Ok(r.check_deletes(&planned)))
                .await?
                .map_err(SessionError::MassDelete)?;
        }
        let fetch = chunks::Fetch {
            streams: self.opts.streams,
            zstd: self.features.contains(Features::ZSTD),
            delta: super::delta::negotiated(self.features),
            deadline,
        };
        let (applied, fetched) =
            chunks::fetch_and_apply(conn, replica, peer, items, fetch, Arc::new(NoProgress))
                .await?;
        debug!(
            chunks = fetched.counters.chunks_received,
            missing = fetched.missing.len(),
            "pushed chunks fetched"
        );
        Ok(refused.into_iter().chain(applied).collect())
    }
}

/// Why an `Offer` batch is out of order, if it is: offers belong to sessions whose initiator
/// pushes (mode `Sync` or `Push`; `DryRun` only with `dry_run`), and carry only paths the
/// initiator asked entries for (after the descent that found them differing).
async fn send_results(ctl: &mut Control, items: Vec<ItemReport>) -> Result<(), SessionError> {
    let batches = result_batches(items).map_err(crate::frame::FrameError::from)?;
    for batch in &batches {
        ctl.send(batch).await?;
    }
    Ok(())
}

fn is_closed(e: &crate::frame::FrameError) -> bool {
    matches!(e, crate::frame::FrameError::Io { .. })
}
