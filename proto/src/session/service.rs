//! The request service both sides run during a session: every bi-directional stream the peer
//! opens after the control stream carries one `GetChunks` or `GetTreeNodes` request, answered in
//! order. Chunks are served only from files this side currently advertises (the replica checks);
//! tree nodes only for entries sent in this session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use botsync_engine::Hash;
use quinn::{RecvStream, SendStream};
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

/// Accept request streams until the connection closes, answering each on its own task. The
/// control stream is not accepted here.
pub(crate) async fn run<R: Replica + ?Sized>(service: Service<R>) {
    let conn = service.conn.clone();
    loop {
        let (send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "request service stops");
                return;
            }
        };
        let svc = service.clone();
        tokio::spawn(async move {
            let first = match read_frame(&mut recv).await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    // A frame that does not decode closes the connection with its code, on a
                    // request stream as on the control stream (`docs/PROTOCOL.md`).
                    let e = SessionError::from(e);
                    warn!(error = %e, "bad request stream: closing the connection");
                    e.close_code().close(&svc.conn);
                    return;
                }
            };
            if let Err(e) = svc.answer(first, send, recv).await {
                debug!(error = %e, "request stream failed");
            }
        });
    }
}
