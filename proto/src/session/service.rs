//! The request service both sides run during a session: every bi-directional stream the peer
//! opens after the control stream carries one `GetChunks` or `GetTreeNodes` request, answered in
//! order. Chunks are served only from files this side currently advertises (the replica checks);
//! tree nodes only for entries sent in this session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quinn::{RecvStream, SendStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Activity, Advertised, Progress, ProgressEvent, SessionError, blocking, within};
use crate::budget::{Admission, Budget, Deadlines, Phase};
use crate::frame::{read_frame, write_frame};
use crate::messages::{ChunkData, ChunkWant, ErrorCode, Message, TreeNodeReply};
use crate::replica::Replica;

/// Chunks read from disk per blocking call: bounds memory per stream (≤ 4 × 256 KiB).
const READ_GROUP: usize = 4;

/// Shared state of a session's request service.
pub(crate) struct Service<R: Replica + ?Sized> {
    pub conn: quinn::Connection,
    pub replica: Arc<R>,
    pub advertised: Advertised,
    pub zstd: bool,
    /// True if the `delta` feature was negotiated (with `zstd`): `GetChunksAgainst` is answered,
    /// with deltas where they are smaller. Without it that request is a protocol error.
    pub delta: bool,
    /// Raw chunk bytes served.
    pub bytes_served: Arc<AtomicU64>,
    /// Where to report chunk bytes served.
    pub progress: Arc<dyn Progress>,
    /// Where chunk bytes read for the peer are counted while held (the answering side).
    pub budget: Option<Budget>,
    /// How long the peer may take to read each frame of a reply.
    pub deadlines: Deadlines,
    /// Touched whenever a request is answered: the session's request deadline counts from it.
    pub activity: Activity,
}

impl<R: Replica + ?Sized> Clone for Service<R> {
    fn clone(&self) -> Self {
        Service {
            conn: self.conn.clone(),
            replica: Arc::clone(&self.replica),
            advertised: self.advertised.clone(),
            zstd: self.zstd,
            delta: self.delta,
            bytes_served: Arc::clone(&self.bytes_served),
            progress: Arc::clone(&self.progress),
            budget: self.budget.clone(),
            deadlines: self.deadlines,
            activity: self.activity.clone(),
        }
    }
}

impl<R: Replica + ?Sized> Service<R> {
    /// Answer one request stream whose first message was `first`. A message that does not open a
    /// request stream is answered with `Error(UnexpectedMessage)` and a `protocol-error` close.
    pub(crate) async fn answer(
        &self,
        first: Message,
        mut send: SendStream,
        _recv: RecvStream,
    ) -> Result<(), SessionError> {
        match first {
            Message::GetChunks { ids } => {
                let wants = ids.into_iter().map(|id| ChunkWant { id, base: None });
                self.send_chunks(wants.collect(), &mut send).await?;
            }
            Message::GetChunksAgainst { wants } if self.delta => {
                self.send_chunks(wants, &mut send).await?;
            }
            Message::GetTreeNodes { content, nodes } => {
                let tree = self.advertised.get(&content);
                let replies: Option<Vec<_>> = tree.and_then(|t| {
                    nodes
                        .iter()
                        .map(|a| TreeNodeReply::from_tree(&t, *a))
                        .collect()
                });
                let msg = match replies {
                    Some(nodes) => Message::TreeNodes { content, nodes },
                    None => Message::Error {
                        code: ErrorCode::NotFound,
                        message: format!("no chunk tree {content} in this session"),
                    },
                };
                self.write(&mut send, &msg).await?;
            }
            other => {
                let message = format!("{} is not a request stream message", other.kind());
                super::refuse_on(&self.conn, send, &message).await;
                return Err(SessionError::Protocol(message));
            }
        }
        // The peer may already have what it needs and have reset the stream: not an error.
        let _ = send.finish();
        Ok(())
    }

    /// Write one reply frame, within the write deadline.
    async fn write(&self, send: &mut SendStream, msg: &Message) -> Result<(), SessionError> {
        within(
            Phase::Write,
            self.deadlines.write,
            write_frame(&mut *send, msg),
        )
        .await??;
        self.activity.touch();
        Ok(())
    }

    /// Answer each want in order: its chunk compressed against its base when the base is one we
    /// can read (our files or our store) and that is smaller, else as `GetChunks` would.
    async fn send_chunks(
        &self,
        wants: Vec<ChunkWant>,
        send: &mut SendStream,
    ) -> Result<(), SessionError> {
        for group in wants.chunks(READ_GROUP) {
            let group = group.to_vec();
            let zstd = self.zstd;
            let frames = blocking(&self.replica, move |r| {
                group
                    .into_iter()
                    .map(|ChunkWant { id, base }| {
                        Ok(match r.read_chunk(&id)? {
                            Some(raw) => {
                                let len = raw.len() as u64;
                                let base = match base {
                                    Some(b) => r.read_delta_base(&b)?,
                                    None => None,
                                };
                                let data = match base {
                                    Some(base) => ChunkData::compress_against(id, raw, &base),
                                    None => ChunkData::compress(id, raw, zstd),
                                };
                                (len, Message::ChunkData(data))
                            }
                            None => (
                                0,
                                Message::Error {
                                    code: ErrorCode::NotFound,
                                    message: format!(
                                        "chunk {} is not available (file changed?)",
                                        id.to_hex()
                                    ),
                                },
                            ),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
            // What this group holds until QUIC has taken it: at most READ_GROUP chunks.
            let mut held = self
                .budget
                .as_ref()
                .map(|b| b.hold(frames.iter().map(|(_, f)| chunk_payload(f)).sum::<u64>()));
            for (raw, frame) in frames {
                self.write(send, &frame).await?;
                if let Some(h) = held.as_mut() {
                    h.release(chunk_payload(&frame));
                }
                self.bytes_served.fetch_add(raw, Ordering::Relaxed);
                self.progress.event(ProgressEvent::Sent { bytes: raw });
            }
        }
        Ok(())
    }
}

/// The payload bytes of a `ChunkData` (0 for anything else).
fn chunk_payload(m: &Message) -> u64 {
    match m {
        Message::ChunkData(c) => c.data.len() as u64,
        _ => 0,
    }
}

/// What bounds the streams a connection's acceptor answers: the connection's share of the
/// budget (none on the initiating side, which answers only its own responder) and the deadlines.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub admission: Option<Arc<Admission>>,
    pub deadlines: Deadlines,
}

impl Guard {
    /// No budget, the default deadlines.
    pub(crate) fn unbudgeted(deadlines: Deadlines) -> Guard {
        Guard {
            admission: None,
            deadlines,
        }
    }
}

/// The request service of the session running on a connection, if one runs: the connection's
/// stream acceptor answers request streams with it, and refuses them between sessions.
pub(crate) struct ServiceSlot<R: Replica + ?Sized>(Arc<Mutex<Option<Service<R>>>>);

impl<R: Replica + ?Sized> Default for ServiceSlot<R> {
    fn default() -> Self {
        ServiceSlot(Arc::new(Mutex::new(None)))
    }
}

impl<R: Replica + ?Sized> Clone for ServiceSlot<R> {
    fn clone(&self) -> Self {
        ServiceSlot(Arc::clone(&self.0))
    }
}

impl<R: Replica + ?Sized> ServiceSlot<R> {
    /// A slot holding `service` from the start.
    pub(crate) fn with(service: Service<R>) -> Self {
        ServiceSlot(Arc::new(Mutex::new(Some(service))))
    }

    pub(crate) fn set(&self, service: Service<R>) {
        *self.lock() = Some(service);
    }

    pub(crate) fn clear(&self) {
        *self.lock() = None;
    }

    fn current(&self) -> Option<Service<R>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Service<R>>> {
        // The slot holds a plain value that every writer replaces whole: a poisoned lock
        // carries no half-made state.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A stream whose first message opens a new session (`Hello`), handed to whoever runs the
/// connection's sessions.
pub(crate) type SessionStart = (Message, SendStream, RecvStream);

/// Accept request streams until the connection closes, answering each on its own task with the
/// service in `slot`. The control stream is not accepted here.
pub(crate) async fn run<R: Replica + ?Sized>(
    conn: quinn::Connection,
    slot: ServiceSlot<R>,
    guard: Guard,
) {
    accept_streams(conn, slot, None, guard).await
}

/// Accept every bi-directional stream the peer opens on `conn`: a stream that starts with
/// `Hello` goes to `sessions` (when this side answers sessions on a kept connection), any other
/// is a request for the session in `slot`, answered once `guard` grants it a request slot.
/// A stream whose first frame does not arrive within the hello deadline closes the connection
/// with `timeout`.
pub(crate) async fn accept_streams<R: Replica + ?Sized>(
    conn: quinn::Connection,
    slot: ServiceSlot<R>,
    sessions: Option<mpsc::Sender<SessionStart>>,
    guard: Guard,
) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "request service stops");
                return;
            }
        };
        let (slot, sessions, conn, guard) =
            (slot.clone(), sessions.clone(), conn.clone(), guard.clone());
        tokio::spawn(async move {
            if let Err(e) = accept_one(&conn, slot, sessions, guard, send, recv).await {
                match e {
                    SessionError::Deadline { .. } => {
                        warn!(error = %e, "request stream stalled: closing the connection");
                        e.close_code().close(&conn);
                    }
                    e => debug!(error = %e, "request stream failed"),
                }
            }
        });
    }
}

/// Read the first message of one stream the peer opened and route or answer it.
async fn accept_one<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    slot: ServiceSlot<R>,
    sessions: Option<mpsc::Sender<SessionStart>>,
    guard: Guard,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), SessionError> {
    let hello = guard.deadlines.hello;
    let first = match within(Phase::Hello, hello, read_frame(&mut recv)).await? {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(()),
        Err(e) => {
            // A frame that does not decode closes the connection with its code, on a request
            // stream as on the control stream (`docs/PROTOCOL.md`).
            let e = SessionError::from(e);
            warn!(error = %e, "bad request stream: closing the connection");
            e.close_code().close(conn);
            return Ok(());
        }
    };
    if let (Message::Hello(_), Some(tx)) = (&first, &sessions) {
        // The session runner answers sessions one after another.
        let _ = tx.send((first, send, recv)).await;
        return Ok(());
    }
    let Some(svc) = slot.current() else {
        let refusal = Message::Error {
            code: ErrorCode::NotFound,
            message: "no session is in progress on this connection".into(),
        };
        within(
            Phase::Write,
            guard.deadlines.write,
            write_frame(&mut send, &refusal),
        )
        .await??;
        let _ = send.finish();
        return Ok(());
    };
    svc.activity.touch();
    // Past the budget the request waits here holding only its decoded message; the QUIC stream
    // limit bounds how many wait.
    let _permit = match &guard.admission {
        Some(a) => match a.request().await {
            Some(p) => Some(p),
            None => return Ok(()),
        },
        None => None,
    };
    svc.answer(first, send, recv).await
}
