//! What one peer, and all peers together, may make the answering side hold: connections,
//! sessions, request streams in service and chunk bytes read but not yet sent ([`Limits`],
//! enforced by a shared [`Budget`]), and how long the answering side waits for each phase of a
//! session ([`Deadlines`]).
//!
//! A listener creates one [`Budget`] and passes it to every connection it serves
//! ([`crate::session::server::ServeOptions`]). Past a budget the peer is told, never queued
//! without bound: a connection beyond the connection budget is closed with `busy`, a session
//! beyond the session budget is answered `Error(Busy)` and closed with `busy`, and a request
//! stream beyond the request budget waits for a permit while holding only its decoded request
//! (the QUIC stream limit, [`crate::endpoint::EndpointOptions::max_streams`], bounds how many
//! wait). A peer that stays silent past a phase's deadline is closed with `timeout`.
//! `docs/PROTOCOL.md` ("Resource bounds and deadlines") states the numbers; `docs/SECURITY.md`
//! ("Resource bounds") the memory they bound.
//!
//! What this module does not own: the caps on message sizes and counts ([`crate::limits`]) and
//! the QUIC flow-control windows ([`crate::endpoint`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use botsync_engine::PeerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long the answering side waits for each phase of a session before it closes the
/// connection with `timeout`. A frame counts when it has arrived whole, so a peer that trickles
/// one byte every few seconds is cut at the same deadline as one that sends nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From a stream's opening to its first whole frame: `Hello` on a control stream, the
    /// request on a request stream, `Changed` on a notice stream.
    pub hello: Duration,
    /// From `Hello` to the initiator's `Summary` (the initiator rescans in between); the
    /// initiator waits as long for the responder's `Hello` and `Summary`.
    pub summary: Duration,
    /// From our last reply on the control stream to the initiator's next message (descent,
    /// entries, offer, goodbye). Any activity on the session's request streams (the initiator
    /// fetching from us) restarts it. The initiator waits as long for each `Nodes` and
    /// `Entries` reply.
    pub request: Duration,
    /// For a whole `GetChunks` or `GetTreeNodes` reply to arrive, when this side fetches.
    pub chunk_batch: Duration,
    /// For one frame this side writes to be taken by the peer's flow control (a peer that stops
    /// reading our replies).
    pub write: Duration,
    /// Not a deadline of the peer's but a promise of ours: how often this side, busy with
    /// local work (an apply, a rescan) while the peer waits for its next message, tells it so
    /// (`Working`, feature `STILL_WORKING`). Well under the peer's `summary` and `request`
    /// deadlines, whatever they are.
    pub keep_alive: Duration,
}

impl Deadlines {
    /// The protocol's deadlines (`docs/PROTOCOL.md`).
    pub const DEFAULT: Deadlines = Deadlines {
        hello: Duration::from_secs(10),
        // Long enough for an initiator's first scan of a large workspace, and for it to apply
        // a group of pulled files between two requests; a stalled peer holds only its own
        // budgeted slots meanwhile (`docs/SECURITY.md`).
        summary: Duration::from_secs(600),
        request: Duration::from_secs(600),
        chunk_batch: Duration::from_secs(30),
        write: Duration::from_secs(30),
        keep_alive: Duration::from_secs(20),
    };
}

impl Default for Deadlines {
    fn default() -> Deadlines {
        Deadlines::DEFAULT
    }
}

/// The phase of a session a deadline belongs to, for messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first frame of a stream.
    Hello,
    /// The initiator's `Summary`.
    Summary,
    /// The initiator's next control message.
    Request,
    /// The responder's reply to a request on the control stream (`Nodes`, `Entries`), as the
    /// initiator waits for it; its deadline is the request deadline.
    Reply,
    /// A chunk or chunk-tree reply.
    ChunkBatch,
    /// The peer taking a frame we wrote.
    Write,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Hello => "the first message of a stream",
            Phase::Summary => "its summary",
            Phase::Request => "its next request",
            Phase::Reply => "its reply",
            Phase::ChunkBatch => "a chunk or chunk-tree reply",
            Phase::Write => "reading our reply",
        })
    }
}

impl Deadlines {
    /// The deadline of `phase`.
    pub fn of(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Hello => self.hello,
            Phase::Summary => self.summary,
            Phase::Request | Phase::Reply => self.request,
            Phase::ChunkBatch => self.chunk_batch,
            Phase::Write => self.write,
        }
    }
}

/// The numbers a [`Budget`] enforces. [`Limits::DEFAULT`] is what `botsync serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once, all peers together.
    pub connections: usize,
    /// Connections served at once for one peer id (a daemon's kept connection, a one-shot
    /// `botsync sync`, and room for a reconnect).
    pub connections_per_peer: usize,
    /// Sessions answered at once, all peers together.
    pub sessions: usize,
    /// Request streams (`GetChunks`, `GetTreeNodes`) in service at once, all peers together.
    pub requests: usize,
    /// Request streams in service at once for one peer id, all its connections together.
    pub requests_per_peer: usize,
    /// Deadlines per phase.
    pub deadlines: Deadlines,
}

impl Limits {
    /// The protocol's defaults (`docs/PROTOCOL.md`, "Resource bounds and deadlines").
    pub const DEFAULT: Limits = Limits {
        connections: 32,
        connections_per_peer: 4,
        sessions: 8,
        requests: 32,
        requests_per_peer: 8,
        deadlines: Deadlines::DEFAULT,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// All peers together hold the connection budget.
    #[error("{open} connections are open, the most this side serves at once; retry later")]
    Connections {
        /// Connections open.
        open: usize,
    },
    /// This peer holds its connection budget.
    #[error("this peer has {open} connections open, the most one peer may hold; retry later")]
    PeerConnections {
        /// This peer's connections open.
        open: usize,
    },
    /// All peers together hold the session budget.
    #[error("{0} sessions are running, the most this side answers at once; retry later")]
    Sessions(usize),
}

/// A snapshot of what a [`Budget`] holds, for tests and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// Connections admitted and not yet ended.
    pub connections: usize,
    /// Sessions running.
    pub sessions: usize,
    /// Request streams in service.
    pub requests: usize,
    /// Chunk bytes read for a peer and not yet handed to QUIC.
    pub held_bytes: u64,
    /// The most chunk bytes ever held at once.
    pub peak_held_bytes: u64,
    /// Connections and sessions refused as busy.
    pub refused: u64,
}

/// The shared budget of one listener: cheap to clone, every clone counts against the same
/// numbers.
#[derive(Debug, Clone)]
pub struct Budget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    limits: Limits,
    peers: Mutex<Peers>,
    sessions: Arc<Semaphore>,
    requests: Arc<Semaphore>,
    held: AtomicU64,
    peak: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Peers {
    total: usize,
    by_id: HashMap<PeerId, PeerSlot>,
}

#[derive(Debug)]
struct PeerSlot {
    connections: usize,
    requests: Arc<Semaphore>,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(Limits::DEFAULT)
    }
}

impl Budget {
    /// A fresh budget enforcing `limits`.
    pub fn new(limits: Limits) -> Budget {
        Budget(Arc::new(Inner {
            limits,
            peers: Mutex::new(Peers::default()),
            sessions: Arc::new(Semaphore::new(limits.sessions)),
            requests: Arc::new(Semaphore::new(limits.requests)),
            held: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }))
    }

    /// The limits this budget enforces.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// The deadlines of every session served under this budget.
    pub fn deadlines(&self) -> &Deadlines {
        &self.0.limits.deadlines
    }

    /// Admit one more connection of `peer`, or say which budget it would exceed. The returned
    /// [`Admission`] gives the connection back when dropped.
    pub fn admit(&self, peer: PeerId) -> Result<Admission, Refusal> {
        let limits = &self.0.limits;
        let mut peers = self.peers();
        let open = peers.by_id.get(&peer).map_or(0, |s| s.connections);
        let refusal = if peers.total >= limits.connections {
            Some(Refusal::Connections { open: peers.total })
        } else if open >= limits.connections_per_peer {
            Some(Refusal::PeerConnections { open })
        } else {
            None
        };
        if let Some(r) = refusal {
            self.0.refused.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        peers.total += 1;
        let slot = peers.by_id.entry(peer).or_insert_with(|| PeerSlot {
            connections: 0,
            requests: Arc::new(Semaphore::new(limits.requests_per_peer)),
        });
        slot.connections += 1;
        let requests = Arc::clone(&slot.requests);
        Ok(Admission {
            budget: self.clone(),
            peer,
            requests,
        })
    }

    /// What the budget holds now.
    pub fn stats(&self) -> BudgetStats {
        let limits = &self.0.limits;
        BudgetStats {
            connections: self.peers().total,
            sessions: limits.sessions - self.0.sessions.available_permits(),
            requests: limits.requests - self.0.requests.available_permits(),
            held_bytes: self.0.held.load(Ordering::Relaxed),
            peak_held_bytes: self.0.peak.load(Ordering::Relaxed),
            refused: self.0.refused.load(Ordering::Relaxed),
        }
    }

    /// Count `bytes` as held until the returned guard is dropped.
    pub(crate) fn hold(&self, bytes: u64) -> Held {
        let now = self.0.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.0.peak.fetch_max(now, Ordering::Relaxed);
        Held {
            budget: self.clone(),
            bytes,
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        // Counters only, each update complete under the lock: a poisoned lock holds no
        // half-made state.
        self.0.peers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One admitted connection: its share of the budget, given back on drop.
#[derive(Debug)]
pub struct Admission {
    budget: Budget,
    peer: PeerId,
    requests: Arc<Semaphore>,
}

impl Admission {
    /// The budget this connection counts against.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// A session slot, if one is free: held while the session runs.
    pub(crate) fn session(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        Arc::clone(&self.budget.0.sessions)
            .try_acquire_owned()
            .map_err(|_| {
                self.budget.0.refused.fetch_add(1, Ordering::Relaxed);
                Refusal::Sessions(self.budget.0.limits.sessions)
            })
    }

    /// Wait for a request slot of this peer and then one of all peers.
    pub(crate) async fn request(&self) -> Option<RequestPermit> {
        let peer = Arc::clone(&self.requests).acquire_owned().await.ok()?;
        let all = Arc::clone(&self.budget.0.requests)
            .acquire_owned()
            .await
            .ok()?;
        Some(RequestPermit {
            _peer: peer,
            _all: all,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut peers = self.budget.peers();
        peers.total = peers.total.saturating_sub(1);
        if let Some(slot) = peers.by_id.get_mut(&self.peer) {
            slot.connections = slot.connections.saturating_sub(1);
            if slot.connections == 0 {
                peers.by_id.remove(&self.peer);
            }
        }
    }
}

/// A request stream's slot in service.
#[derive(Debug)]
pub(crate) struct RequestPermit {
    _peer: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// Bytes counted as held until dropped.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Budget,
    bytes: u64,
}

impl Held {
    /// Give back `bytes` of the held amount (they were handed to QUIC).
    pub(crate) fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.budget.0.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.0.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    #[test]
    fn connections_are_capped_per_peer_and_in_total_and_given_back() {
        let budget = Budget::new(Limits {
            connections: 3,
            connections_per_peer: 2,
            ..Limits::DEFAULT
        });
        let a1 = budget.admit(peer(1)).unwrap();
        let _a2 = budget.admit(peer(1)).unwrap();
        assert_eq!(
            budget.admit(peer(1)).unwrap_err(),
            Refusal::PeerConnections { open: 2 }
        );
        let _b1 = budget.admit(peer(2)).unwrap();
        assert_eq!(
            budget.admit(peer(3)).unwrap_err(),
            Refusal::Connections { open: 3 }
        );
        drop(a1);
        assert!(budget.admit(peer(1)).is_ok());
        assert_eq!(budget.stats().refused, 2);
    }

    #[test]
    fn sessions_are_capped_and_held_bytes_peak_is_kept() {
        let budget = Budget::new(Limits {
            sessions: 1,
            ..Limits::DEFAULT
        });
        let a = budget.admit(peer(1)).unwrap();
        let s = a.session().unwrap();
        assert_eq!(a.session().unwrap_err(), Refusal::Sessions(1));
        drop(s);
        assert!(a.session().is_ok());
        let mut held = budget.hold(100);
        held.release(40);
        assert_eq!(budget.stats().held_bytes, 60);
        drop(held);
        assert_eq!(budget.stats().held_bytes, 0);
        assert_eq!(budget.stats().peak_held_bytes, 100);
    }
}
