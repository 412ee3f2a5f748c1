//! Kept connections between daemons: one QUIC connection carries session after session, and
//! `Changed` notices on unidirectional streams.
//!
//! A daemon dials each peer once and keeps the connection. On a connection it dialed it is the
//! initiator of every session (one at a time); the dialed side answers them with
//! [`serve_connection`] until the connection closes. Either side may announce its new Merkle root
//! at any time with [`notify_changed`]; the other side learns it as a [`LinkEvent::Changed`] and
//! decides whether to start a session. This module owns the order on the connection, not when
//! to sync (the daemon decides that).

use std::sync::Arc;

use botsync_engine::{Hash, PeerId};
use tokio::sync::mpsc;
use tracing::debug;

use super::server::{ServeOptions, ServeReport, admit, respond};
use super::service::{self, ServiceSlot, SessionStart};
use super::{AbortOnDrop, SessionError};
use crate::close::CloseCode;
use crate::frame::{read_frame, write_frame};
use crate::messages::Message;
use crate::replica::Replica;

/// What happened on a kept connection, for the daemon.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// The peer announced its new Merkle root.
    Changed {
        /// Who.
        peer: PeerId,
        /// Its root now.
        root: Hash,
    },
    /// A session the peer started was answered.
    Served {
        /// Who started it.
        peer: PeerId,
        /// What it did here.
        report: ServeReport,
    },
}

/// Sessions the peer may queue on one connection while one runs.
const QUEUED_SESSIONS: usize = 2;

/// Answer every session `peer` starts on `conn`, one after another, and pass its `Changed`
/// notices on, until the connection closes. Returns how many sessions were answered; a session
/// that breaks the protocol closes the connection and ends the loop with its error.
pub async fn serve_connection<R: Replica + ?Sized>(
    conn: quinn::Connection,
    peer: PeerId,
    replica: Arc<R>,
    opts: ServeOptions,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> Result<u64, SessionError> {
    let admission = Arc::new(admit(&conn, &opts.budget, peer)?);
    let deadlines = *opts.budget.deadlines();
    let slot = ServiceSlot::default();
    let (starts, mut queued) = mpsc::channel::<SessionStart>(QUEUED_SESSIONS);
    let guard = service::Guard {
        admission: Some(Arc::clone(&admission)),
        deadlines,
    };
    let _acceptor = AbortOnDrop(tokio::spawn(service::accept_streams(
        conn.clone(),
        slot.clone(),
        Some(starts),
        guard,
    )));
    let _notices = AbortOnDrop(tokio::spawn(read_notices(
        conn.clone(),
        peer,
        events.clone(),
        deadlines.hello,
    )));
    let mut served = 0;
    // The acceptor ends when the connection closes, and with it this channel.
    while let Some((first, send, recv)) = queued.recv().await {
        let report = respond(
            &conn,
            peer,
            Arc::clone(&replica),
            &opts,
            &admission,
            (send, recv),
            Some(first),
            &slot,
        )
        .await?;
        served += 1;
        let _ = events.send(LinkEvent::Served { peer, report });
    }
    Ok(served)
}

/// Announce our new Merkle root to the peer on `conn`: one `Changed` on its own unidirectional
/// stream.
pub async fn notify_changed(conn: &quinn::Connection, root: Hash) -> Result<(), SessionError> {
    let mut send = conn.open_uni().await?;
    write_frame(&mut send, &Message::Changed { root }).await?;
    let _ = send.finish();
    Ok(())
}

/// Read the peer's `Changed` notices: each unidirectional stream carries exactly one.
async fn read_notices(
    conn: quinn::Connection,
    peer: PeerId,
    events: mpsc::UnboundedSender<LinkEvent>,
    deadline: std::time::Duration,
) {
    loop {
        let mut recv = match conn.accept_uni().await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "notice reader stops");
                return;
            }
        };
        let Ok(notice) = tokio::time::timeout(deadline, read_frame(&mut recv)).await else {
            debug!("notice stream stalled past the hello deadline");
            CloseCode::Timeout.close(&conn);
            return;
        };
        match notice {
            Ok(Some(Message::Changed { root })) => {
                let _ = events.send(LinkEvent::Changed { peer, root });
            }
            Ok(None) => {}
            Ok(Some(other)) => {
                debug!(kind = other.kind(), "unexpected message on a notice stream");
                CloseCode::ProtocolError.close(&conn);
                return;
            }
            Err(e) => {
                debug!(error = %e, "bad notice stream");
                SessionError::from(e).close_code().close(&conn);
                return;
            }
        }
    }
}
