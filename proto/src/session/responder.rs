//! The answering side of a session as a pure state machine, the mirror of
//! [`super::initiator::Initiator`]: [`Responder::poll`] says what to do next ([`Io`]), the
//! driver hands back messages, replica answers and transfer results. Which message may come
//! when is [`ResponderOrder`]'s business; this machine says what each accepted message asks of
//! the replica and what goes back. The tokio driver (`server.rs`) adds what only a connection
//! has: admission under the budget, the request deadline counted from the peer's activity on
//! its request streams, and the `Error` + close of a refusal ([`Io::Refuse`]).
//!
//! The phases: awaiting hello, awaiting the initiator's summary (answered once our rescan is
//! done, with the volunteered mesh config), requests (descent, entries, mesh, parity, state),
//! an offer (its batches kept until the last, then completed, screened, planned, guarded,
//! fetched and applied, and answered with results), done (`Goodbye`, or a refusal).

use std::collections::VecDeque;

use botsync_engine::plan::{ItemReport, PlanItem};
use botsync_engine::{Hash, PeerId, RelPath};

use super::order::{ResponderOrder, Step};
use super::work::{Answer, Io, Need, Transfer, Transferred, dry_report, out_of_turn};
use super::{SessionError, entries, initiator, mesh};
use crate::budget::Phase;
use crate::close::CloseCode;
use crate::codec::CodecError;
use crate::frame::FrameError;
use crate::messages::state::digest as state_digest;
use crate::messages::{
    ChunkListing, ErrorCode, Features, Hello, Message, SessionMode, WireEntry, bucket_batches,
    long_bucket_batches, long_node_batches, node_batches, result_batches, state_batches,
};
use crate::replica::{MeshChange, Snapshot, StateApplied};

/// What an answered session did.
#[derive(Debug, Clone, Default)]
pub struct ServeReport {
    /// Items the initiator pushed to us, as carried out.
    pub applied: Vec<ItemReport>,
    /// True if the initiator only compared roots.
    pub in_sync: bool,
    /// Mesh config files the initiator's push changed here.
    pub mesh: Vec<MeshChange>,
    /// What taking the initiator's pushed state records did (feature STATE).
    pub state: StateApplied,
}

/// What the machine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The initiator's `Hello`.
    Hello,
    /// The initiator's next control message.
    Message,
    /// Our rescan, to answer the initiator's `Summary` (its root).
    Snapshot { mode: SessionMode, root: Hash },
    /// Our mesh config, to send; `after` what the initiator pushed was merged.
    Mesh,
    /// The initiator's pushed mesh config merged.
    MeshTaken,
    /// Our parity report.
    Parity,
    /// Our `Nodes` replies.
    Nodes,
    /// Our `Buckets` replies.
    Buckets,
    /// Our entries of the asked paths.
    Entries,
    /// The offer's elided chunk lists completed.
    Completed,
    /// The offered versions screened.
    Screened,
    /// The offer planned.
    Planned,
    /// The delete guard's verdict on the offer.
    Guard,
    /// The offer fetched and applied.
    Applied,
    /// Our state to share with the initiator (its digest).
    StateShared { digest: Hash },
    /// The initiator's pushed records taken; `last` was the batch's flag.
    StateTaken { last: bool },
    /// `Goodbye` came or the session was refused: nothing more.
    Done,
}

/// The offer being taken.
#[derive(Debug, Default)]
struct Offer {
    batches: Vec<WireEntry>,
    dry_run: bool,
    force: bool,
    refused: Vec<ItemReport>,
    planned: Vec<PlanItem>,
}

/// The responder of one session; see the module docs.
#[derive(Debug)]
pub struct Responder {
    peer: PeerId,
    hello: Hello,
    features: Features,
    order: ResponderOrder,
    out: VecDeque<Io>,
    expect: Expect,
    report: ServeReport,
    /// Our state as told in our `Summary` (a parity report repeats it).
    ours: Option<Snapshot>,
    offer: Offer,
    refused: Option<SessionError>,
}

impl Responder {
    /// The responder of a session `peer` opens, introducing itself as `name` with `features`.
    /// Hand it the first message of the control stream.
    pub fn new(peer: PeerId, name: &str, features: Features) -> Responder {
        let mut hello = Hello::current(name, botsync_engine::AgentLabel::default());
        hello.features = hello.features.intersection(features);
        Responder {
            peer,
            hello,
            features: Features::NONE,
            order: ResponderOrder::new(Features::NONE),
            out: VecDeque::new(),
            expect: Expect::Hello,
            report: ServeReport::default(),
            ours: None,
            offer: Offer::default(),
            refused: None,
        }
    }

    /// The next thing to do; `None` while the machine waits for a result, and once it is done.
    pub fn poll(&mut self) -> Option<Io> {
        self.out.pop_front()
    }

    /// True once the initiator's `Hello` was taken and not refused (the driver admits the
    /// session then, before our `Hello` goes out).
    pub fn hello_taken(&self) -> bool {
        self.expect != Expect::Hello && self.refused.is_none()
    }

    /// The features both sides negotiated (none before `Hello`).
    pub fn features(&self) -> Features {
        self.features
    }

    /// True once nothing more will be read: `Goodbye` came, or the session was refused.
    pub fn is_done(&self) -> bool {
        self.expect == Expect::Done
    }

    /// What the session did, or why it was refused.
    pub fn finish(self) -> Result<ServeReport, SessionError> {
        match self.refused {
            Some(e) => Err(e),
            None => Ok(self.report),
        }
    }

    /// Take the initiator's next control message (the first one, `Hello`, included).
    pub fn on_message(&mut self, m: Message) -> Result<(), SessionError> {
        match self.expect {
            Expect::Hello => return self.on_hello(m),
            Expect::Message => {}
            _ => {
                return Err(SessionError::Protocol(format!(
                    "{} while no message was awaited",
                    m.kind()
                )));
            }
        }
        let step = match self.order.accept(&m) {
            Ok(step) => step,
            Err(why) => {
                self.refuse(ErrorCode::UnexpectedMessage, CloseCode::ProtocolError, why);
                return Ok(());
            }
        };
        match (step, m) {
            (Step::Summary(mode), Message::Summary { root, .. }) => {
                self.need(Expect::Snapshot { mode, root }, Need::Snapshot);
            }
            (Step::Mesh, Message::GetParity) => match self.ours.clone() {
                Some(snap) => self.need(Expect::Parity, Need::Parity(snap)),
                None => self.next(),
            },
            (Step::Mesh, Message::GetMeshConfig) => self.need(Expect::Mesh, Need::MeshConfig),
            (Step::Mesh, Message::MeshConfig { files }) => {
                let peer = self.peer;
                self.need(Expect::MeshTaken, Need::TakeMesh { peer, files });
            }
            (Step::Nodes, Message::GetNodes { paths }) => {
                self.need(Expect::Nodes, Need::Nodes(paths));
            }
            (Step::Nodes, Message::GetBuckets { dirs }) => {
                self.need(Expect::Buckets, Need::Buckets(dirs));
            }
            (Step::Entries, Message::GetEntries { paths }) => {
                self.need(Expect::Entries, Need::Entries(paths));
            }
            (
                Step::Offer { last },
                Message::Offer {
                    entries,
                    dry_run,
                    force,
                    ..
                },
            ) => {
                self.offer.batches.extend(entries);
                if last {
                    self.offer.dry_run = dry_run;
                    self.offer.force = force;
                    self.take_offer()?;
                } else {
                    self.next();
                }
            }
            (Step::StateAsked, Message::GetState { patterns, digest }) => {
                self.need(Expect::StateShared { digest }, Need::StateToShare(patterns));
            }
            (Step::StatePushed { last }, Message::State { records, .. }) => {
                if records.is_empty() {
                    self.state_taken(last);
                } else {
                    let peer = self.peer;
                    self.need(
                        Expect::StateTaken { last },
                        Need::ApplyState { records, peer },
                    );
                }
            }
            (Step::Goodbye, _) => self.expect = Expect::Done,
            (step, other) => {
                // The order accepted a message its step does not describe: a bug here, not the
                // peer's fault, but still no reason to act on it.
                let why = format!("{} taken as {step:?}", other.kind());
                self.refuse(ErrorCode::UnexpectedMessage, CloseCode::ProtocolError, why);
            }
        }
        Ok(())
    }

    /// Take the replica's answer to the last [`Need`].
    pub fn on_answer(&mut self, a: Answer) -> Result<(), SessionError> {
        match (self.expect, a) {
            (Expect::Snapshot { mode, root }, Answer::Snapshot(snap)) => {
                self.report.in_sync = snap.root == root;
                if !snap.skipped.is_empty() {
                    tracing::warn!(skipped = ?snap.skipped, "files not read by the rescan; not synced this session");
                }
                self.out.push_back(Io::Send(Message::Summary {
                    root: snap.root,
                    files: snap.files,
                    mode,
                    skipped: snap.skipped.len() as u64,
                }));
                self.ours = Some(snap);
                if mesh::volunteered(self.features, mode) {
                    self.need(Expect::Mesh, Need::MeshConfig);
                } else {
                    self.next();
                }
            }
            (Expect::Mesh, Answer::Mesh(files)) => {
                self.out.push_back(Io::Send(Message::MeshConfig { files }));
                self.next();
            }
            (Expect::MeshTaken, Answer::MeshChanges(changes)) => {
                // Answer with ours after the merge, so the initiator can tell what we agree on.
                self.report.mesh.extend(changes);
                self.need(Expect::Mesh, Need::MeshConfig);
            }
            (Expect::Parity, Answer::Parity(info)) => {
                self.out.push_back(Io::Send(Message::Parity(info)));
                self.next();
            }
            (Expect::Nodes, Answer::Nodes(nodes)) => {
                let largest = largest(nodes.iter().map(|n| (&n.path, n.children.len())));
                let batches = if self.features.contains(Features::LONG_LISTS) {
                    long_node_batches(nodes)
                } else {
                    node_batches(nodes)
                };
                self.replies(largest, batches);
            }
            (Expect::Buckets, Answer::Buckets(nodes)) => {
                let largest = largest(nodes.iter().map(|n| (&n.path, n.children.len())));
                let batches = if self.features.contains(Features::LONG_LISTS) {
                    long_bucket_batches(nodes)
                } else {
                    bucket_batches(nodes)
                };
                self.replies(largest, batches);
            }
            (Expect::Entries, Answer::Entries(ours)) => {
                entries::outgoing(&mut self.out, ours, |entries, last| Message::Entries {
                    entries,
                    last,
                })?;
                self.next();
            }
            (Expect::Screened, Answer::Screened(accepted, refused)) => {
                self.offer.refused = refused;
                self.need(Expect::Planned, Need::Plan(accepted));
            }
            (Expect::Planned, Answer::Planned(items)) => {
                if self.offer.dry_run {
                    let offer = std::mem::take(&mut self.offer);
                    let reports = offer
                        .refused
                        .into_iter()
                        .chain(items.iter().map(dry_report));
                    self.results(reports.collect())?;
                } else if self.offer.force {
                    self.fetch(items);
                } else {
                    self.offer.planned = items.clone();
                    self.need(Expect::Guard, Need::CheckDeletes(items));
                }
            }
            (Expect::Guard, Answer::Guard(Err(m))) => {
                // Refused before anything was fetched or written: the initiator is told why in
                // one line, and this side goes on serving.
                tracing::warn!(peer = %self.peer, deletes = m.deletes, "push refused by the delete guard");
                self.offer = Offer::default();
                self.out.push_back(Io::Send(Message::Error {
                    code: ErrorCode::Refused,
                    message: format!("this push {m}"),
                }));
                self.next();
            }
            (Expect::Guard, Answer::Guard(Ok(()))) => {
                let items = std::mem::take(&mut self.offer.planned);
                self.fetch(items);
            }
            (Expect::StateShared { digest: theirs }, Answer::State(patterns, records)) => {
                let digest = state_digest(&records).map_err(FrameError::from)?;
                self.out
                    .push_back(Io::Send(Message::GetState { patterns, digest }));
                // Equal digests: the initiator holds them all already.
                let records = if digest == theirs {
                    Vec::new()
                } else {
                    records
                };
                let batches = state_batches(records).map_err(FrameError::from)?;
                self.out.extend(batches.into_iter().map(Io::Send));
                self.next();
            }
            (Expect::StateTaken { last }, Answer::StateTaken(applied)) => {
                self.report.state.extend(applied);
                self.state_taken(last);
            }
            (expect, answer) => return Err(out_of_turn(&answer, &expect)),
        }
        Ok(())
    }

    /// Take the result of the last [`Transfer`].
    pub fn on_transfer(&mut self, t: Transferred) -> Result<(), SessionError> {
        match (self.expect, t) {
            (Expect::Completed, Transferred::Completed(incoming)) => {
                let sender = self.peer;
                self.need(Expect::Screened, Need::Screen { sender, incoming });
            }
            (Expect::Applied, Transferred::Applied(applied, counters)) => {
                tracing::debug!(chunks = counters.chunks_received, "pushed chunks fetched");
                let offer = std::mem::take(&mut self.offer);
                let items: Vec<ItemReport> = offer.refused.into_iter().chain(applied).collect();
                self.report.applied.extend(items.iter().cloned());
                self.results(items)?;
            }
            (expect, t) => return Err(out_of_turn(&t, &expect)),
        }
        Ok(())
    }

    fn on_hello(&mut self, m: Message) -> Result<(), SessionError> {
        let Message::Hello(theirs) = m else {
            self.refuse(
                ErrorCode::UnexpectedMessage,
                CloseCode::ProtocolError,
                format!("the session did not start with hello but with {}", m.kind()),
            );
            return Ok(());
        };
        self.out
            .push_back(Io::Send(Message::Hello(self.hello.clone())));
        match self.hello.negotiate(&theirs) {
            Ok(negotiated) => {
                self.features = negotiated.features;
                self.order = ResponderOrder::new(negotiated.features);
                self.next();
            }
            Err(e) => self.refuse(
                ErrorCode::VersionMismatch,
                CloseCode::VersionMismatch,
                e.to_string(),
            ),
        }
        Ok(())
    }

    /// The offer's last batch is in: complete, screen, plan, guard, fetch and apply it.
    fn take_offer(&mut self) -> Result<(), SessionError> {
        let wire = std::mem::take(&mut self.offer.batches);
        let chunk_tree = self.features.contains(Features::CHUNK_TREE);
        if let Some(w) = wire
            .iter()
            .find(|w| !chunk_tree && matches!(w.listing, ChunkListing::Elided { .. }))
        {
            return Err(initiator::elided_without_chunk_tree(&w.file.path));
        }
        self.expect = Expect::Completed;
        self.out.push_back(Io::Transfer(Transfer::Complete(wire)));
        Ok(())
    }

    fn fetch(&mut self, items: Vec<PlanItem>) {
        self.expect = Expect::Applied;
        self.out
            .push_back(Io::Transfer(Transfer::FetchAndApply(items)));
    }

    fn results(&mut self, items: Vec<ItemReport>) -> Result<(), SessionError> {
        let batches = result_batches(items).map_err(FrameError::from)?;
        self.out.extend(batches.into_iter().map(Io::Send));
        self.next();
        Ok(())
    }

    /// Queue the replies of one `GetNodes` or `GetBuckets` (`largest`: the directory listing the
    /// most children, and how many). A directory whose listing alone exceeds a frame cannot be
    /// sent: the initiator is told so in `Error(Internal)` and the session ends with `internal`.
    fn replies(&mut self, largest: (RelPath, usize), batches: Result<Vec<Message>, CodecError>) {
        match batches {
            Ok(batches) => {
                self.out.extend(batches.into_iter().map(Io::Send));
                self.next();
            }
            Err(e) => {
                let (path, children) = largest;
                let why = format!(
                    "directory \"{path}\" has {children} entries, more than one frame can list ({e}); split it into subdirectories"
                );
                self.refuse(ErrorCode::Internal, CloseCode::Internal, why);
            }
        }
    }

    fn state_taken(&mut self, last: bool) {
        if last {
            // Taken: the initiator may end the session now.
            self.out.push_back(Io::Send(Message::State {
                records: Vec::new(),
                last: true,
            }));
        }
        self.next();
    }

    fn need(&mut self, expect: Expect, need: Need) {
        self.expect = expect;
        self.out.push_back(Io::Need(need));
    }

    /// Wait for the initiator's next message: its summary first, then requests.
    fn next(&mut self) {
        self.expect = Expect::Message;
        let phase = match self.order.mode() {
            None => Phase::Summary,
            Some(_) => Phase::Request,
        };
        self.out.push_back(Io::Recv(Some(phase)));
    }

    /// End the session: `Error(code)` to the initiator, then the close `close`.
    fn refuse(&mut self, code: ErrorCode, close: CloseCode, message: String) {
        self.expect = Expect::Done;
        self.refused = Some(match code {
            ErrorCode::VersionMismatch => SessionError::Version(message.clone()),
            ErrorCode::Internal => {
                SessionError::Replica(crate::replica::ReplicaError::other(message.clone()))
            }
            _ => SessionError::Protocol(message.clone()),
        });
        self.out.push_back(Io::Refuse {
            code,
            close,
            message,
        });
    }
}

/// The directory of a reply listing the most children, and how many (the root if none).
fn largest<'a>(dirs: impl Iterator<Item = (&'a RelPath, usize)>) -> (RelPath, usize) {
    dirs.max_by_key(|(_, n)| *n)
        .map(|(path, n)| (path.clone(), n))
        .unwrap_or((RelPath::root(), 0))
}
