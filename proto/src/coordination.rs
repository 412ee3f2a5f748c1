//! Coordination connections (ALPN `botsync-coord/1`): the transport of the replicated lock
//! table (docs/LOCKS.md). Each bi-directional stream carries one request and its answer:
//! `Coordinate { body }` from the caller, then `Coordinated { body }` (or `Error`) back, the
//! bodies being JSON documents of the coordination protocol. This module moves the bodies; what
//! they mean is the handler's business ([`Handler`], implemented by the daemon).

pub mod rpc;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use botsync_engine::PeerId;
use tracing::debug;

use crate::close::CloseCode;
use crate::frame::{read_frame, write_frame};
use crate::messages::{ErrorCode, Message};
use crate::session::SessionError;

/// How long one request may take to arrive and one answer to be read.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Requests one coordination connection may have in flight.
pub const MAX_IN_FLIGHT: usize = 16;

/// A boxed answer.
pub type Answer = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// Answers coordination requests.
pub trait Handler: Send + Sync + 'static {
    /// Answer the request `body` from `peer` (an error is sent back as `Error(Refused)`).
    fn handle(self: Arc<Self>, peer: PeerId, body: Vec<u8>) -> Answer;
}

/// Answer every request `peer` sends on `conn` until it closes.
pub async fn serve(conn: quinn::Connection, peer: PeerId, handler: Arc<dyn Handler>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!(peer = %peer, error = %e, "coordination connection ends");
                return;
            }
        };
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (handler, conn) = (Arc::clone(&handler), conn.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let first = tokio::time::timeout(REQUEST_DEADLINE, read_frame(&mut recv)).await;
            let reply = match first {
                Err(_) => {
                    CloseCode::Timeout.close(&conn);
                    return;
                }
                Ok(Ok(Some(Message::Coordinate { body }))) => {
                    match handler.handle(peer, body).await {
                        Ok(body) => Message::Coordinated { body },
                        Err(message) => Message::Error {
                            code: ErrorCode::Refused,
                            message: crate::limits::fit_text(
                                message,
                                crate::limits::MAX_ERROR_MESSAGE,
                            ),
                        },
                    }
                }
                Ok(Ok(None)) => return,
                Ok(Ok(Some(other))) => {
                    debug!(peer = %peer, kind = other.kind(), "unexpected message on a coordination stream");
                    let _ = write_frame(
                        &mut send,
                        &Message::Error {
                            code: ErrorCode::UnexpectedMessage,
                            message: format!(
                                "{} does not open a coordination stream",
                                other.kind()
                            ),
                        },
                    )
                    .await;
                    CloseCode::ProtocolError.close(&conn);
                    return;
                }
                Ok(Err(e)) => {
                    SessionError::from(e).close_code().close(&conn);
                    return;
                }
            };
            if write_frame(&mut send, &reply).await.is_ok() {
                let _ = send.finish();
            }
        });
    }
}

/// Send one request on `conn` and wait for its answer.
pub async fn call(conn: &quinn::Connection, body: Vec<u8>) -> Result<Vec<u8>, CallError> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(SessionError::from)?;
        write_frame(&mut send, &Message::Coordinate { body })
            .await
            .map_err(SessionError::from)?;
        let _ = send.finish();
        match read_frame(&mut recv).await.map_err(SessionError::from)? {
            Some(Message::Coordinated { body }) => Ok(body),
            Some(Message::Error { code, message }) => Err(CallError::Refused { code, message }),
            Some(other) => Err(CallError::Unexpected(other.kind())),
            None => Err(CallError::Closed),
        }
    };
    match tokio::time::timeout(REQUEST_DEADLINE, exchange).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout),
    }
}

/// Why a coordination request failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection or stream failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The peer answered with an error.
    #[error("the peer refused ({code}): {message}")]
    Refused {
        /// Its code.
        code: ErrorCode,
        /// Its reason.
        message: String,
    },
    /// The peer answered with another message.
    #[error("the peer answered with {0}, not a coordination answer")]
    Unexpected(&'static str),
    /// The stream ended without an answer.
    #[error("the peer closed the stream without answering")]
    Closed,
    /// No answer within [`REQUEST_DEADLINE`].
    #[error("no answer within {} s", REQUEST_DEADLINE.as_secs())]
    Timeout,
}
