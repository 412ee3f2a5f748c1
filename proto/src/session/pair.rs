//! Two session machines wired together in memory, without sockets or tasks (quinn's `Pair`,
//! for sessions): an [`Initiator`] over one replica and a [`Responder`] over another, their
//! control messages passed through two queues, every replica [`Need`](super::work::Need) answered at once by
//! [`work::execute`], and the two transfers served from the other side's replica: elided chunk
//! lists rebuilt from the chunk trees the other machine advertised, chunks read from the other
//! replica, sent as the wire would carry them (zstd if negotiated) and verified against their id
//! before they are kept. Everything runs on the calling thread, one step at a time, so a test
//! sees each message in order ([`Pair::transcript`]) and a session is deterministic.
//!
//! What the pair leaves to the quinn tests: the parallel request streams, flow control, deadlines
//! and closes, the delta encoding against bases, and the chunk fetch's retry of chunks found
//! missing at apply.

use std::collections::{HashMap, VecDeque};

use botsync_engine::chunktree::{ChunkTree, Rebuild};
use botsync_engine::plan::{ItemReport, PlanItem};
use botsync_engine::{FileEntry, Hash};

use super::initiator::Initiator;
use super::responder::{Responder, ServeReport};
use super::work::{self, Io, Transfer, Transferred};
use super::{Counters, SessionError, SessionOptions, SessionReport};
use crate::messages::{
    ChunkData, ChunkListing, ErrorCode, Features, Message, TreeAddr, TreeNodeReply, WireEntry,
};
use crate::replica::{HeldChunks, Replica};

/// Which side sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The initiator.
    Initiator,
    /// The responder.
    Responder,
}

/// What a machine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Nothing: poll it.
    Nothing,
    /// One message.
    One,
    /// Replies, until the machine says the exchange is complete.
    Replies,
}

/// How a session between the two machines ended.
#[derive(Debug)]
pub struct Outcome {
    /// The initiator's report, or why its session failed.
    pub initiator: Result<SessionReport, SessionError>,
    /// The responder's report, or why it refused or failed.
    pub responder: Result<ServeReport, SessionError>,
    /// Every message sent, in order, with its sender.
    pub transcript: Vec<(Side, Message)>,
}

/// Whether a step moved a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Moved,
    Blocked,
    Done,
}

/// Steps one side may take before the pair gives up on a session that never ends (a bug in a
/// machine, not a slow peer: nothing here waits on anything but the other machine).
const MAX_STEPS: usize = 10_000_000;

/// An initiator and a responder over two replicas, wired in memory; see the module docs.
pub struct Pair<'a, A: Replica + ?Sized, B: Replica + ?Sized> {
    initiator: Initiator,
    responder: Responder,
    a: &'a A,
    b: &'a B,
    to_initiator: VecDeque<Message>,
    to_responder: VecDeque<Message>,
    wait_initiator: Wait,
    wait_responder: Wait,
    /// Chunk trees each side advertised, for the other's `GetTreeNodes`.
    trees_a: HashMap<Hash, ChunkTree>,
    trees_b: HashMap<Hash, ChunkTree>,
    transcript: Vec<(Side, Message)>,
    /// Why the responder's side failed (its driver would have closed the connection).
    responder_failed: Option<SessionError>,
}

impl<A: Replica + ?Sized, B: Replica + ?Sized> std::fmt::Debug for Pair<'_, A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("initiator", &self.initiator)
            .field("responder", &self.responder)
            .field("to_initiator", &self.to_initiator.len())
            .field("to_responder", &self.to_responder.len())
            .field("sent", &self.transcript.len())
            .finish_non_exhaustive()
    }
}

impl<'a, A: Replica + ?Sized, B: Replica + ?Sized> Pair<'a, A, B> {
    /// A session that `a` opens with `b` as `opts` say; `b` answers offering `features`.
    pub fn new(a: &'a A, b: &'a B, opts: SessionOptions, features: Features) -> Self {
        Pair {
            initiator: Initiator::new(b.local_peer(), opts),
            responder: Responder::new(a.local_peer(), "responder", features),
            a,
            b,
            to_initiator: VecDeque::new(),
            to_responder: VecDeque::new(),
            wait_initiator: Wait::Nothing,
            wait_responder: Wait::One,
            trees_a: HashMap::new(),
            trees_b: HashMap::new(),
            transcript: Vec::new(),
            responder_failed: None,
        }
    }

    /// Run the session to its end: the initiator's report (or why it failed), the responder's,
    /// and every message sent.
    pub fn run(mut self) -> Outcome {
        let driven = self.drive();
        let Pair {
            initiator,
            responder,
            transcript,
            responder_failed,
            ..
        } = self;
        let sent = |side: Side| transcript.iter().filter(|(s, _)| *s == side).count() as u64;
        let initiator = driven.map(|()| {
            let mut report = initiator.finish();
            report.counters.messages_sent = sent(Side::Initiator);
            report.counters.messages_received = sent(Side::Responder);
            report
        });
        let responder = match responder_failed {
            Some(e) => Err(e),
            None => responder.finish(),
        };
        Outcome {
            initiator,
            responder,
            transcript,
        }
    }

    /// The messages sent so far, in order, with their sender.
    pub fn transcript(&self) -> &[(Side, Message)] {
        &self.transcript
    }

    /// Step both machines until the initiator is done and the responder has nothing left to
    /// read, or one fails.
    fn drive(&mut self) -> Result<(), SessionError> {
        for _ in 0..MAX_STEPS {
            let i = self.step_initiator()?;
            let r = self.step_responder();
            match (i, r) {
                (Step::Done, Step::Done) => return Ok(()),
                (Step::Done, Step::Blocked) if self.to_responder.is_empty() => return Ok(()),
                (Step::Blocked | Step::Done, Step::Blocked | Step::Done) => {
                    return Err(SessionError::Protocol(format!(
                        "the session stalled: the initiator is {i:?}, the responder {r:?}"
                    )));
                }
                _ => {}
            }
        }
        Err(SessionError::Protocol(format!(
            "the session did not end within {MAX_STEPS} steps"
        )))
    }

    fn send(&mut self, from: Side, m: Message) {
        self.transcript.push((from, m.clone()));
        match from {
            Side::Initiator => self.to_responder.push_back(m),
            Side::Responder => self.to_initiator.push_back(m),
        }
    }

    fn step_initiator(&mut self) -> Result<Step, SessionError> {
        if self.wait_initiator != Wait::Nothing {
            let Some(m) = self.to_initiator.pop_front() else {
                return Ok(Step::Blocked);
            };
            // As `Control`: an `Error` message ends an exchange as the peer's error.
            let complete = self.initiator.on_message(m)?;
            if self.wait_initiator == Wait::One || complete {
                self.wait_initiator = Wait::Nothing;
            }
            return Ok(Step::Moved);
        }
        let Some(io) = self.initiator.poll() else {
            return Ok(if self.initiator.is_done() {
                Step::Done
            } else {
                Step::Blocked
            });
        };
        match io {
            Io::Send(m) => self.send(Side::Initiator, m),
            Io::Exchange(requests) => {
                for m in requests {
                    self.send(Side::Initiator, m);
                }
                self.wait_initiator = Wait::Replies;
            }
            Io::Recv(_) => self.wait_initiator = Wait::One,
            Io::Need(need) => {
                let answer = work::execute(self.a, need)?;
                self.initiator.on_answer(answer)?;
            }
            Io::Transfer(t) => {
                let features = self.initiator.negotiated().unwrap_or(Features::NONE);
                let done = transfer(self.a, self.b, &self.trees_b, features, t)?;
                self.initiator.on_transfer(done)?;
            }
            Io::Advertise(content, chunks) => {
                self.trees_a.insert(content, ChunkTree::new(chunks));
            }
            Io::Progress(_) => {}
            Io::Refuse { message, .. } => return Err(SessionError::Protocol(message)),
        }
        Ok(Step::Moved)
    }

    fn step_responder(&mut self) -> Step {
        if self.responder_failed.is_some() {
            return Step::Done;
        }
        match self.try_step_responder() {
            Ok(step) => step,
            Err(e) => {
                // Told to the initiator as its driver would (the close carries the code).
                self.send(
                    Side::Responder,
                    Message::Error {
                        code: ErrorCode::Internal,
                        message: e.to_string(),
                    },
                );
                self.responder_failed = Some(e);
                Step::Done
            }
        }
    }

    fn try_step_responder(&mut self) -> Result<Step, SessionError> {
        if self.wait_responder != Wait::Nothing {
            let Some(m) = self.to_responder.pop_front() else {
                return Ok(Step::Blocked);
            };
            self.wait_responder = Wait::Nothing;
            self.responder.on_message(m)?;
            return Ok(Step::Moved);
        }
        let Some(io) = self.responder.poll() else {
            if self.responder.is_done() {
                return Ok(Step::Done);
            }
            return Ok(Step::Blocked);
        };
        match io {
            Io::Send(m) => self.send(Side::Responder, m),
            Io::Recv(_) => self.wait_responder = Wait::One,
            Io::Need(need) => {
                let answer = work::execute(self.b, need)?;
                self.responder.on_answer(answer)?;
            }
            Io::Transfer(t) => {
                let features = self.responder.features();
                let done = transfer(self.b, self.a, &self.trees_a, features, t)?;
                self.responder.on_transfer(done)?;
            }
            Io::Advertise(content, chunks) => {
                self.trees_b.insert(content, ChunkTree::new(chunks));
            }
            Io::Progress(_) => {}
            Io::Refuse { code, message, .. } => {
                self.send(
                    Side::Responder,
                    Message::Error {
                        code,
                        message: message.clone(),
                    },
                );
            }
            Io::Exchange(_) => {
                return Err(SessionError::Task(
                    "the responder asked to pipeline requests".into(),
                ));
            }
        }
        Ok(Step::Moved)
    }
}

/// Carry out a transfer for the side over `local`, whose peer is `remote` (which advertised
/// `trees`).
fn transfer<L: Replica + ?Sized, P: Replica + ?Sized>(
    local: &L,
    remote: &P,
    trees: &HashMap<Hash, ChunkTree>,
    features: Features,
    t: Transfer,
) -> Result<Transferred, SessionError> {
    match t {
        Transfer::Complete(wire) => Ok(Transferred::Completed(complete(local, trees, wire)?)),
        Transfer::FetchAndApply(items) => {
            let zstd = features.contains(Features::ZSTD);
            let (reports, counters) = fetch_and_apply(local, remote, items, zstd)?;
            Ok(Transferred::Applied(reports, counters))
        }
    }
}

/// Full entries from wire entries: elided chunk lists rebuilt by the engine's [`Rebuild`],
/// each node it wants answered from the peer's advertised tree as `TreeNodes` would carry it.
fn complete<L: Replica + ?Sized>(
    local: &L,
    trees: &HashMap<Hash, ChunkTree>,
    wire: Vec<WireEntry>,
) -> Result<Vec<FileEntry>, SessionError> {
    let mut out = Vec::with_capacity(wire.len());
    for w in wire {
        let ChunkListing::Elided { chunk_count } = w.listing else {
            out.push(w.file.into());
            continue;
        };
        let mut entry = FileEntry::from(w.file);
        let ours = local.entries(std::slice::from_ref(&entry.path))?;
        let ours = ChunkTree::new(
            ours.into_iter()
                .next()
                .map(|e| e.chunks)
                .unwrap_or_default(),
        );
        let bad = |e: String| SessionError::Protocol(format!("entry {}: {e}", entry.path));
        let mut walk = Rebuild::new(entry.content, u64::from(chunk_count), ours)
            .map_err(|e| bad(e.to_string()))?;
        let tree = trees
            .get(&entry.content)
            .ok_or_else(|| SessionError::Remote {
                code: ErrorCode::NotFound,
                message: format!("no chunk tree {} in this session", entry.content),
            })?;
        entry.chunks = loop {
            if let Some(list) = walk.finish() {
                break list;
            }
            let wanted = walk.wanted();
            if wanted.is_empty() {
                return Err(bad(
                    "the chunk tree does not add up to its chunk count".into()
                ));
            }
            for addr in wanted {
                let reply = TreeNodeReply::from_tree(tree, TreeAddr::from(addr))
                    .ok_or_else(|| bad(format!("no node {addr:?}")))?;
                let (addr, children) = reply.into_children().map_err(bad)?;
                walk.accept(addr, children)
                    .map_err(|e| bad(e.to_string()))?;
            }
        };
        out.push(entry);
    }
    Ok(out)
}

/// The chunks `items` need, read from `remote` and verified as they would arrive, then the
/// apply. A chunk the peer no longer has is left out: the apply reports its file.
fn fetch_and_apply<L: Replica + ?Sized, P: Replica + ?Sized>(
    local: &L,
    remote: &P,
    items: Vec<PlanItem>,
    zstd: bool,
) -> Result<(Vec<ItemReport>, Counters), SessionError> {
    let mut counters = Counters::default();
    let needed = local.chunks_needed(&items)?;
    for chunk in needed {
        let Some(raw) = remote.read_chunk(&chunk.id)? else {
            continue;
        };
        let sent = ChunkData::compress(chunk.id, raw, zstd);
        counters.chunk_wire_bytes_received += sent.data.len() as u64;
        let bytes = sent
            .into_verified_bytes()
            .map_err(crate::frame::FrameError::from)?;
        counters.chunks_received += 1;
        counters.chunk_bytes_received += bytes.len() as u64;
        local.put_chunk(&chunk.id, &bytes)?;
    }
    let peer = remote.local_peer();
    let reports = local.apply(items, peer, HeldChunks::new())?;
    Ok((reports, counters))
}
