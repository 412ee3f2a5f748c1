//! The request service both sides run during a session: every bi-directional stream the peer
//! opens after the control stream carries one `GetChunks` or `GetTreeNodes` request, answered in
//! order. Chunks are served only from files this side currently advertises (the replica checks);
//! tree nodes only for entries sent in this session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use botsync_engine::Hash;
use quinn::{RecvStream, SendStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::tree::NodeTable;
use super::{Advertised, Progress, ProgressEvent, SessionError, blocking};
use crate::frame::{read_frame, write_frame};
use crate::messages::{ChunkData, ErrorCode, Message};
use crate::replica::Replica;

/// Chunks read from disk per blocking call: bounds memory per stream (≤ 4 × 256 KiB).
const READ_GROUP: usize = 4;

/// Shared state of a session's request service.
pub(crate) struct Service<R: Replica + ?Sized> {
    pub conn: quinn::Connection,
    pub replica: Arc<R>,
    pub advertised: Advertised,
    pub zstd: bool,
    /// Raw chunk bytes served.
    pub bytes_served: Arc<AtomicU64>,
    /// Where to report chunk bytes served.
    pub progress: Arc<dyn Progress>,
}

impl<R: Replica + ?Sized> Clone for Service<R> {
    fn clone(&self) -> Self {
        Service {
            conn: self.conn.clone(),
            replica: Arc::clone(&self.replica),
            advertised: self.advertised.clone(),
            zstd: self.zstd,
            bytes_served: Arc::clone(&self.bytes_served),
            progress: Arc::clone(&self.progress),
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
            Message::GetChunks { ids } => self.send_chunks(ids, &mut send).await?,
            Message::GetTreeNodes { content, nodes } => {
                let table = self.advertised.get(&content).map(|c| NodeTable::build(&c));
                let replies: Option<Vec<_>> =
                    table.and_then(|t| nodes.iter().map(|a| t.reply(*a)).collect());
                let msg = match replies {
                    Some(nodes) => Message::TreeNodes { content, nodes },
                    None => Message::Error {
                        code: ErrorCode::NotFound,
                        message: format!("no chunk tree {content} in this session"),
                    },
                };
                write_frame(&mut send, &msg).await?;
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

    async fn send_chunks(&self, ids: Vec<Hash>, send: &mut SendStream) -> Result<(), SessionError> {
        for group in ids.chunks(READ_GROUP) {
            let group = group.to_vec();
            let zstd = self.zstd;
            let frames = blocking(&self.replica, move |r| {
                group
                    .into_iter()
                    .map(|id| {
                        Ok(match r.read_chunk(&id)? {
                            Some(raw) => (
                                raw.len() as u64,
                                Message::ChunkData(ChunkData::compress(id, raw, zstd)),
                            ),
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
            for (raw, frame) in frames {
                write_frame(send, &frame).await?;
                self.bytes_served.fetch_add(raw, Ordering::Relaxed);
                self.progress.event(ProgressEvent::Sent { bytes: raw });
            }
        }
        Ok(())
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
pub(crate) async fn run<R: Replica + ?Sized>(conn: quinn::Connection, slot: ServiceSlot<R>) {
    accept_streams(conn, slot, None).await
}

/// Accept every bi-directional stream the peer opens on `conn`: a stream that starts with
/// `Hello` goes to `sessions` (when this side answers sessions on a kept connection), any other
/// is a request for the session in `slot`.
pub(crate) async fn accept_streams<R: Replica + ?Sized>(
    conn: quinn::Connection,
    slot: ServiceSlot<R>,
    sessions: Option<mpsc::Sender<SessionStart>>,
) {
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "request service stops");
                return;
            }
        };
        let slot = slot.clone();
        let sessions = sessions.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            let first = match read_frame(&mut recv).await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    // A frame that does not decode closes the connection with its code, on a
                    // request stream as on the control stream (`docs/PROTOCOL.md`).
                    let e = SessionError::from(e);
                    warn!(error = %e, "bad request stream: closing the connection");
                    e.close_code().close(&conn);
                    return;
                }
            };
            if let (Message::Hello(_), Some(tx)) = (&first, &sessions) {
                // The session runner answers sessions one after another.
                let _ = tx.send((first, send, recv)).await;
                return;
            }
            let Some(svc) = slot.current() else {
                let _ = write_frame(
                    &mut send,
                    &Message::Error {
                        code: ErrorCode::NotFound,
                        message: "no session is in progress on this connection".into(),
                    },
                )
                .await;
                let _ = send.finish();
                return;
            };
            if let Err(e) = svc.answer(first, send, recv).await {
                debug!(error = %e, "request stream failed");
            }
        });
    }
}
