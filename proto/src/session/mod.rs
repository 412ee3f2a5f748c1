//! Sync sessions: the order of messages between two peers over one QUIC connection.
//!
//! The initiator ([`client::run`]) and the answering side ([`server::serve`]) drive a
//! [`Replica`] each. A session: `Hello` and `Summary` both ways in one round trip (equal roots:
//! done); a walk down the Merkle directories whose hashes differ, one round trip per level
//! ([`descent`]); the differing entries ([`entries`]); the initiator's pull plan, its chunk fetches
//! over parallel streams ([`chunks`]) and apply; then an `Offer` of the initiator's versions, which
//! the answering side plans under its own rules, fetches and applies the same way. Chunk and
//! chunk-tree requests travel on their own bi-directional streams, served on both sides
//! ([`service`]). This module holds what both roles share.

pub mod chunks;
pub mod client;
mod delta;
pub mod descent;
pub mod entries;
pub mod initiator;
pub mod link;
pub mod mesh;
pub mod order;
pub mod pair;
pub mod responder;
pub mod server;
pub mod service;
pub mod state;
pub mod work;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use botsync_engine::chunktree::ChunkTree;
use botsync_engine::plan::ItemReport;
use botsync_engine::{ChunkRef, Hash, PeerId};
use quinn::{RecvStream, SendStream};
use serde::Serialize;

use crate::budget::{Deadlines, Phase, Refusal};
use crate::close::CloseCode;
use crate::codec::CodecError;
use crate::frame::{FrameError, read_frame, write_frame};
use crate::messages::{ErrorCode, Features, Message, SessionMode};
use crate::replica::{Replica, ReplicaError};

/// How the initiator wants a session to run.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Which way changes may flow.
    pub mode: SessionMode,
    /// Plan only: fetch nothing, write nothing, on either side.
    pub dry_run: bool,
    /// Our name, sent in `Hello`.
    pub name: String,
    /// The agent label sent in `Hello`.
    pub agent: botsync_engine::AgentLabel,
    /// Parallel streams for chunk transfer.
    pub streams: usize,
    /// Carry out deletions beyond the delete threshold, on either side (`--force`).
    pub force: bool,
    /// How long to wait for the peer's chunk and chunk-tree replies and for it to take our
    /// frames.
    pub deadlines: Deadlines,
    /// Ask the peer for its parity report after the summaries (`botsync parity`), if it
    /// supports the `parity` feature ([`SessionReport::parity`] stays `None` otherwise).
    pub parity: bool,
    /// The optional features this side offers in `Hello` (all it supports by default; tests
    /// and benchmarks turn some off to speak like an older peer).
    pub features: Features,
}

impl SessionOptions {
    /// Options for `mode` with the defaults (6 parallel chunk streams: enough to fill a
    /// 100 Mbit/s × 100 ms path with 1 MiB batches, while bounding memory).
    pub fn new(mode: SessionMode, name: &str) -> SessionOptions {
        SessionOptions {
            mode,
            dry_run: false,
            name: name.to_owned(),
            agent: botsync_engine::AgentLabel::default(),
            streams: 6,
            force: false,
            deadlines: Deadlines::DEFAULT,
            parity: false,
            features: Features::SUPPORTED,
        }
    }
}

/// Counters of one session, as seen from one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Times the initiator sent requests and waited for their answers on the control stream.
    pub round_trips: u32,
    /// Messages sent on the control stream.
    pub messages_sent: u64,
    /// Messages received on the control stream.
    pub messages_received: u64,
    /// Chunk payload bytes received (after decompression).
    pub chunk_bytes_received: u64,
    /// Chunk payload bytes received as they were on the wire.
    pub chunk_wire_bytes_received: u64,
    /// Chunks received.
    pub chunks_received: u64,
}

/// What a session did, from the initiator's side.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionReport {
    /// The peer's id (`peer_id` in JSON: the CLI's `peer` field is the configured name).
    #[serde(rename = "peer_id", serialize_with = "ser_peer")]
    pub peer: Option<PeerId>,
    /// True if the roots were equal and both rescans read every selected file: nothing to do
    /// and nothing left behind.
    pub in_sync: bool,
    /// True for a dry run: the reports say what would happen.
    pub dry_run: bool,
    /// Items the initiator took (or would take) from the peer.
    pub pulled: Vec<ItemReport>,
    /// Items the peer took (or would take) from the initiator.
    pub pushed: Vec<ItemReport>,
    /// Counters.
    pub counters: Counters,
    /// Chunk bytes the peer fetched from us.
    pub bytes_sent: u64,
    /// Selected files our rescan could not read (`path: reason`): their changes did not sync
    /// this time, so the session is not "in sync" even if the roots were equal.
    pub skipped: Vec<String>,
    /// How many selected files the peer's rescan could not read (from its `Summary`).
    pub peer_skipped: u64,
    /// True if the peer's root was one our tree had lately, so the session offered what
    /// changed here since instead of walking the tree (feature `direct-offer`).
    #[serde(skip)]
    pub direct_offer: bool,
    /// Our root at the start of the session.
    #[serde(skip)]
    pub root: botsync_engine::Hash,
    /// Mesh config files the peer's version changed here.
    pub mesh: Vec<crate::replica::MeshChange>,
    /// The peer's parity report, when [`SessionOptions::parity`] asked for it.
    #[serde(skip)]
    pub parity: Option<crate::messages::ParityInfo>,
    /// What the state phase did (feature STATE).
    pub state: state::StateReport,
}

fn ser_peer<S: serde::Serializer>(p: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&p.to_copy_safe()),
        None => s.serialize_none(),
    }
}

/// Progress events for a progress bar.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// The plan is known: this many files and chunk bytes will move to this side.
    Planned {
        /// Files to write or delete.
        files: u64,
        /// Chunk bytes to fetch.
        bytes: u64,
    },
    /// Chunk bytes were sent to the peer (it fetches what we push).
    Sent {
        /// Raw bytes of the chunk(s).
        bytes: u64,
    },
    /// Chunk bytes arrived.
    Received {
        /// Raw bytes of the chunk(s).
        bytes: u64,
    },
    /// A file was applied.
    Applied {
        /// Its path.
        path: String,
    },
}

/// Receives progress events (the CLI draws a bar from them).
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: ProgressEvent);
}

/// A progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: ProgressEvent) {}
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The connection failed or was closed.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Nothing arrived from the peer within the idle timeout, keep-alives included.
    #[error(
        "peer stopped answering: nothing arrived within the idle timeout (it was stopped, crashed or lost its network)"
    )]
    PeerVanished,
    /// A stream could not be written.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// A frame was malformed, too large or truncated.
    #[error("bad frame from peer: {0}")]
    Frame(#[from] FrameError),
    /// The peer broke the message order.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer speaks no protocol version we do.
    #[error("{0}; upgrade botsync on the older side")]
    Version(String),
    /// The peer reported an error.
    #[error("peer reported {code}: {message}")]
    Remote {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// Our replica failed (disk, index).
    #[error("local workspace: {0}")]
    Replica(#[from] ReplicaError),
    /// The pull would delete more files here than the delete threshold allows (no `--force`).
    #[error("this pull {0}")]
    MassDelete(#[from] botsync_engine::guard::MassDelete),
    /// The peer refused our offer (for instance its delete guard tripped); its message says why.
    #[error("the peer refused: {0}")]
    Refused(String),
    /// A blocking task died.
    #[error("internal task failed: {0}")]
    Task(String),
    /// The peer made no progress in a phase within its deadline; the connection is closed with
    /// `timeout`.
    #[error("peer timed out: no progress on {phase} within {} s", after.as_secs_f32())]
    Deadline {
        /// The phase that stalled.
        phase: Phase,
        /// Its deadline.
        after: std::time::Duration,
    },
    /// Serving the peer would exceed a resource budget; the connection is closed with `busy`.
    #[error("busy: {0}")]
    Busy(#[from] Refusal),
    /// The peer closed the connection as over its resource budget (close code `busy`).
    #[error(
        "the peer is busy (it serves too many connections or sessions now; those of a client killed moments ago count until they time out); retry later"
    )]
    PeerBusy,
}

impl SessionError {
    /// The close code this error ends the connection with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            SessionError::Frame(FrameError::Codec(e)) => match e {
                CodecError::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
                CodecError::BadChunk { .. } => CloseCode::BadChunk,
                _ => CloseCode::BadMessage,
            },
            SessionError::Frame(FrameError::Io { .. }) | SessionError::Protocol(_) => {
                CloseCode::ProtocolError
            }
            SessionError::Version(_) => CloseCode::VersionMismatch,
            SessionError::Remote {
                code: ErrorCode::VersionMismatch,
                ..
            } => CloseCode::VersionMismatch,
            SessionError::Connection(e) => CloseCode::of_error(e).unwrap_or(CloseCode::Internal),
            SessionError::PeerVanished | SessionError::Deadline { .. } => CloseCode::Timeout,
            SessionError::Busy(_) | SessionError::PeerBusy => CloseCode::Busy,
            _ => CloseCode::Internal,
        }
    }
}

impl SessionError {
    /// This error as seen on `conn`: whatever failed (a read, a write, a stream), if the
    /// connection itself timed out the peer vanished, and that is the one thing to say; if the
    /// peer closed it, a stream that failed under the close says only that, and the close is
    /// what to report (a `busy` close by name).
    pub(crate) fn on(self, conn: &quinn::Connection) -> SessionError {
        let failed_under_close = matches!(
            self,
            SessionError::Frame(FrameError::Io { .. })
                | SessionError::Write(_)
                | SessionError::Connection(_)
        );
        match conn.close_reason() {
            Some(quinn::ConnectionError::TimedOut) => SessionError::PeerVanished,
            Some(reason @ quinn::ConnectionError::ApplicationClosed(_)) if failed_under_close => {
                if CloseCode::of_error(&reason) == Some(CloseCode::Busy) {
                    SessionError::PeerBusy
                } else {
                    SessionError::Connection(reason)
                }
            }
            _ => self,
        }
    }
}

/// The control stream of a session, with message counters.
pub(crate) struct Control {
    pub send: SendStream,
    pub recv: RecvStream,
    pub counters: Counters,
    /// The features negotiated in `Hello` (none before).
    pub features: Features,
    /// How long the peer may take for each phase.
    pub deadlines: Deadlines,
}

impl Control {
    pub(crate) async fn send(&mut self, m: &Message) -> Result<(), SessionError> {
        let write = self.deadlines.write;
        within(Phase::Write, write, write_frame(&mut self.send, m)).await??;
        self.counters.messages_sent += 1;
        Ok(())
    }

    /// The next message, an `Error` message included, within the deadline of `phase` if one is
    /// given (else only the connection's idle timeout bounds the wait). A `Working` from a
    /// peer that negotiated it restarts the deadline and is not returned.
    pub(crate) async fn recv_any(&mut self, phase: Option<Phase>) -> Result<Message, SessionError> {
        loop {
            let read = async {
                read_frame(&mut self.recv).await?.ok_or_else(|| {
                    SessionError::Protocol("control stream ended unexpectedly".into())
                })
            };
            let m = match phase {
                Some(phase) => within(phase, self.deadlines.of(phase), read)
                    .await
                    .and_then(|m| m),
                None => read.await,
            };
            let m = self.count(m)?;
            if !self.is_keep_alive(&m) {
                return Ok(m);
            }
        }
    }

    /// True if `m` is a `Working` the peer may send (feature `STILL_WORKING` negotiated): the
    /// peer is busy, not stalled.
    pub(crate) fn is_keep_alive(&self, m: &Message) -> bool {
        matches!(m, Message::Working) && self.features.contains(Features::STILL_WORKING)
    }

    /// Run `work` (a local step the peer waits for: an apply, a rescan), telling the peer every
    /// [`Deadlines::keep_alive`](crate::budget::Deadlines::keep_alive) that we are still at it,
    /// if it negotiated `STILL_WORKING`. An apply of 10^6 entries ran past the peer's 600 s
    /// request deadline, which then closed a session that was making progress.
    pub(crate) async fn while_working<T>(
        &mut self,
        work: impl std::future::Future<Output = Result<T, SessionError>>,
    ) -> Result<T, SessionError> {
        if !self.features.contains(Features::STILL_WORKING) {
            return work.await;
        }
        let every = self.deadlines.keep_alive;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tick.tick() => {
                    tracing::debug!("still working: telling the peer");
                    self.send(&Message::Working).await?;
                }
            }
        }
    }

    fn count(&mut self, m: Result<Message, SessionError>) -> Result<Message, SessionError> {
        if !matches!(
            m,
            Err(SessionError::Protocol(_) | SessionError::Frame(_) | SessionError::Deadline { .. })
        ) {
            self.counters.messages_received += 1;
        }
        m
    }

    /// Send `requests` and read their replies at the same time, passing each reply in order to
    /// `on_reply`, which returns true after the last one.
    ///
    /// A responder writes each reply before it reads the next request. Reading only after
    /// sending would deadlock as soon as the requests and the replies each outgrow a stream
    /// window (long paths, thousands of directories): the responder waits for us to read, we
    /// wait for it to read. Reading concurrently keeps its replies flowing, so it always comes
    /// back for more requests, whatever their number and size; flow control bounds the rest.
    pub(crate) async fn exchange(
        &mut self,
        requests: &[Message],
        mut on_reply: impl FnMut(Message) -> Result<bool, SessionError>,
    ) -> Result<(), SessionError> {
        let Control {
            send,
            recv,
            counters,
            deadlines,
            features,
        } = self;
        let keep_alive = features.contains(Features::STILL_WORKING);
        let (write, reply) = (deadlines.write, deadlines.request);
        let sending = async {
            for m in requests {
                within(Phase::Write, write, write_frame(&mut *send, m)).await??;
            }
            Ok::<u64, SessionError>(requests.len() as u64)
        };
        let receiving = async {
            let mut received = 0u64;
            loop {
                let reply = within(Phase::Reply, reply, next_reply(&mut *recv))
                    .await
                    .and_then(|r| r);
                if reply.is_ok() || matches!(reply, Err(SessionError::Remote { .. })) {
                    received += 1;
                }
                let reply = reply?;
                if keep_alive && matches!(reply, Message::Working) {
                    continue;
                }
                if on_reply(reply)? {
                    return Ok::<u64, SessionError>(received);
                }
            }
        };
        let (sent, received) = tokio::try_join!(sending, receiving)?;
        counters.messages_sent += sent;
        counters.messages_received += received;
        Ok(())
    }
}

/// The next message of the control stream; an `Error` message becomes
/// [`SessionError::Remote`], a clean end of stream a protocol error.
async fn next_reply(recv: &mut RecvStream) -> Result<Message, SessionError> {
    match read_frame(recv).await? {
        Some(Message::Error { code, message }) => Err(SessionError::Remote { code, message }),
        Some(m) => Ok(m),
        None => Err(SessionError::Protocol(
            "control stream ended unexpectedly".into(),
        )),
    }
}

/// `fut`, unless `phase` makes no progress within `after`: then [`SessionError::Deadline`].
pub(crate) async fn within<T>(
    phase: Phase,
    after: std::time::Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, SessionError> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| SessionError::Deadline { phase, after })
}

/// When the peer last did something in a session (a request stream opened or answered, a
/// control message): the responder's request deadline counts from here.
#[derive(Debug, Clone)]
pub(crate) struct Activity(Arc<Mutex<tokio::time::Instant>>);

impl Default for Activity {
    fn default() -> Activity {
        Activity(Arc::new(Mutex::new(tokio::time::Instant::now())))
    }
}

impl Activity {
    pub(crate) fn touch(&self) {
        *self.lock() = tokio::time::Instant::now();
    }

    pub(crate) fn last(&self) -> tokio::time::Instant {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, tokio::time::Instant> {
        // A plain value replaced whole: a poisoned lock holds no half-made state.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a refusing side waits for its `Error` message to reach the peer before closing:
/// a close discards what is still unsent or unacknowledged.
const ERROR_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Refuse the peer: send `Error { code, message }` on `send`, finish the stream, wait until the
/// peer has it (at most [`ERROR_GRACE`]), then close the connection with `close`.
pub(crate) async fn refuse(
    conn: &quinn::Connection,
    send: &mut SendStream,
    code: ErrorCode,
    close: CloseCode,
    message: &str,
) {
    let message = crate::limits::fit_text(message.to_owned(), crate::limits::MAX_ERROR_MESSAGE);
    // A peer that does not read gets no more time than the grace.
    let error = Message::Error { code, message };
    let _ = tokio::time::timeout(ERROR_GRACE, write_frame(&mut *send, &error)).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(ERROR_GRACE, send.stopped()).await;
    close.close(conn);
}

/// A message out of order on a stream we own: `Error(UnexpectedMessage)`, then the
/// `protocol-error` close.
pub(crate) async fn refuse_on(conn: &quinn::Connection, mut send: SendStream, message: &str) {
    refuse(
        conn,
        &mut send,
        ErrorCode::UnexpectedMessage,
        CloseCode::ProtocolError,
        message,
    )
    .await;
}

/// The chunk trees of the entries this side advertised with elided lists in the session, by
/// content hash, each built once: the chunk-tree service answers from here.
#[derive(Debug, Default, Clone)]
pub(crate) struct Advertised(Arc<Mutex<HashMap<Hash, Arc<ChunkTree>>>>);

impl Advertised {
    pub(crate) fn add(&self, content: Hash, chunks: &[ChunkRef]) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(content)
                .or_insert_with(|| Arc::new(ChunkTree::new(chunks.to_vec())));
        }
    }

    pub(crate) fn get(&self, content: &Hash) -> Option<Arc<ChunkTree>> {
        self.0.lock().ok().and_then(|m| m.get(content).cloned())
    }
}

/// A task aborted when this handle is dropped: a session's helpers end with it on every path.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run a replica call on a blocking thread.
pub(crate) async fn blocking<R, T, F>(replica: &Arc<R>, f: F) -> Result<T, SessionError>
where
    R: Replica + ?Sized,
    T: Send + 'static,
    F: FnOnce(&R) -> Result<T, ReplicaError> + Send + 'static,
{
    let r = Arc::clone(replica);
    tokio::task::spawn_blocking(move || f(&r))
        .await
        .map_err(|e| SessionError::Task(e.to_string()))?
        .map_err(SessionError::from)
}
