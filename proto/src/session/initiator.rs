//! The initiating side of a session as a pure state machine (the quinn-proto shape: no I/O, no
//! clock). [`Initiator`] says what to do next through [`Initiator::poll`] ([`Io`]: a message to
//! send, requests to pipeline, a message to read, a replica [`Need`], a [`Transfer`] on the
//! peer's request streams) and takes the results (`on_message`, `on_answer`, `on_transfer`).
//! The tokio driver (`client.rs`) maps it onto a quinn connection; the in-memory
//! [`super::pair::Pair`] wires it to a [`super::responder::Responder`] without sockets.
//!
//! The phases, in order (docs/PROTOCOL.md, "A sync session"): awaiting hello (ours is sent, our
//! rescan runs), summaries (ours sent, theirs read, the volunteered mesh config and the parity
//! report read), descent ([`Descent`]), entries ([`EntriesAsked`], elided lists completed,
//! versions screened), fetching (plan, delete guard, fetch and apply), offer (our versions, the
//! peer's results, conflicts settled), the mesh-config and state phases, done (`Goodbye`).

use std::collections::{HashMap, HashSet, VecDeque};

mod state_phase;

use botsync_engine::plan::{ItemReport, PlanItem};
use botsync_engine::{FileEntry, Hash, PeerId, RelPath};
use tracing::debug;

use self::state_phase::StatePhase;
use super::descent::Descent;
use super::entries::{EntriesAsked, outgoing};
use super::work::{
    Answer, Io, Need, Settle, Transfer, Transferred, by_path, dry_report, out_of_turn,
};
use super::{ProgressEvent, SessionError, SessionOptions, SessionReport, mesh};
use crate::budget::Phase;
use crate::codec::CodecError;
use crate::frame::FrameError;
use crate::messages::buckets::BUCKET_FROM_CHILDREN;
use crate::messages::state::digest as state_digest;
use crate::messages::{ChunkListing, ErrorCode, Features, Hello, MeshFile, Message, SessionMode};

/// What the machine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Our rescan (`Need::Snapshot`).
    Snapshot,
    /// The responder's `Hello`.
    Hello,
    /// The responder's `Summary`.
    Summary,
    /// The mesh config the responder volunteers after its summary.
    VolunteeredMesh,
    /// The parity report.
    Parity,
    /// Our paths changed since our tree had the peer's root, if we know them.
    ChangedSince,
    /// Our children of the descent's frontier.
    Children,
    /// The peer's `Nodes` / `Buckets` replies of one level.
    Nodes,
    /// Our entry paths under directories the peer lacks.
    PathsUnder,
    /// The peer's `Entries` replies.
    Entries,
    /// Elided chunk lists completed.
    Completed,
    /// The peer's versions screened.
    Screened,
    /// The pull planned.
    Planned,
    /// The delete guard's verdict on the pull.
    Guard,
    /// The pull fetched and applied.
    Applied,
    /// Our entries of the differing paths, to offer.
    OurEntries,
    /// The peer's `OfferResult` batches.
    OfferResults,
    /// The offer's results recorded.
    Settled,
    /// The peer's versions recorded.
    Recorded,
    /// The volunteered mesh config merged.
    MeshTaken,
    /// Our mesh config, to push.
    OurMesh,
    /// Whether the peer's volunteered files already equal ours.
    MeshAgreedBefore,
    /// The peer's mesh config after it merged ours.
    MeshAfter,
    /// Agreement noted after the push.
    MeshAgreedAfter,
    /// Our state patterns.
    StatePatterns,
    /// Our records of our own patterns (for the digest we send).
    StateOwn,
    /// The responder's `GetState`.
    StateReply,
    /// Our records of the responder's patterns.
    StateMine,
    /// The responder's `State` batches.
    StateBatches,
    /// A batch of the responder's records taken; `last` was its flag.
    StateApplied { last: bool },
    /// The responder's empty `State` confirming our push.
    StateConfirm,
    /// `Goodbye` sent: nothing more.
    Done,
}

/// The offer in flight.
#[derive(Debug, Default)]
struct Offer {
    offered: HashMap<RelPath, FileEntry>,
    theirs: HashMap<RelPath, FileEntry>,
    answered: HashSet<RelPath>,
    results: Vec<ItemReport>,
}

/// The initiator of one session; see the module docs.
#[derive(Debug)]
pub struct Initiator {
    opts: SessionOptions,
    peer: PeerId,
    hello: Hello,
    features: Features,
    out: VecDeque<Io>,
    expect: Expect,
    report: SessionReport,
    their_root: Hash,
    their_mesh: Option<Vec<MeshFile>>,
    descent: Option<Descent>,
    asked: Option<EntriesAsked>,
    paths: Vec<RelPath>,
    remote: Vec<FileEntry>,
    offer: Offer,
    /// A plan waiting for the delete guard's verdict.
    guarded: Option<Vec<PlanItem>>,
    our_mesh: Vec<MeshFile>,
    /// Our state patterns, until `GetState` is sent.
    patterns: Vec<String>,
    state: StatePhase,
}

impl Initiator {
    /// A session with `peer` as `opts` say: `Hello` goes out at once and our rescan is asked
    /// for (the driver may have started it already), so both sides rescan at the same time.
    pub fn new(peer: PeerId, opts: SessionOptions) -> Initiator {
        let mut hello = Hello::current(&opts.name, opts.agent.clone());
        hello.features = hello.features.intersection(opts.features);
        let report = SessionReport {
            peer: Some(peer),
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let mut out = VecDeque::new();
        out.push_back(Io::Send(Message::Hello(hello.clone())));
        out.push_back(Io::Need(Need::Snapshot));
        Initiator {
            opts,
            peer,
            hello,
            features: Features::NONE,
            out,
            expect: Expect::Snapshot,
            report,
            their_root: Hash::ZERO,
            their_mesh: None,
            descent: None,
            asked: None,
            paths: Vec::new(),
            remote: Vec::new(),
            offer: Offer::default(),
            guarded: None,
            our_mesh: Vec::new(),
            patterns: Vec::new(),
            state: StatePhase::default(),
        }
    }

    /// The next thing to do; `None` while the machine waits for a result, and once it is done.
    pub fn poll(&mut self) -> Option<Io> {
        self.out.pop_front()
    }

    /// True once `Goodbye` was queued: after the queue drains, the session is over.
    pub fn is_done(&self) -> bool {
        self.expect == Expect::Done
    }

    /// The features both sides negotiated, once the responder's `Hello` is in.
    pub fn negotiated(&self) -> Option<Features> {
        (!matches!(self.expect, Expect::Snapshot | Expect::Hello)).then_some(self.features)
    }

    /// What the session did. The driver adds its control-stream message counters.
    pub fn finish(self) -> SessionReport {
        self.report
    }

    /// Take a message from the peer's control stream (a reply of an [`Io::Exchange`] or the
    /// message an [`Io::Recv`] read). True once every reply awaited is in.
    pub fn on_message(&mut self, m: Message) -> Result<bool, SessionError> {
        if let Message::Error { code, message } = m {
            return Err(match (self.expect, code) {
                (Expect::OfferResults, ErrorCode::Refused) => SessionError::Refused(message),
                _ => SessionError::Remote { code, message },
            });
        }
        let unexpected = |what: &str, m: &Message| {
            SessionError::Protocol(format!("expected {what}, got {}", m.kind()))
        };
        match self.expect {
            Expect::Hello => {
                let Message::Hello(theirs) = m else {
                    return Err(unexpected("hello", &m));
                };
                let negotiated = self
                    .hello
                    .negotiate(&theirs)
                    .map_err(|e| SessionError::Version(e.to_string()))?;
                self.features = negotiated.features;
                self.recv(Expect::Summary, Some(Phase::Summary));
            }
            Expect::Summary => {
                let Message::Summary { root, skipped, .. } = m else {
                    return Err(unexpected("summary", &m));
                };
                self.their_root = root;
                self.report.peer_skipped = skipped;
                if mesh::volunteered(self.features, self.opts.mode) {
                    self.recv(Expect::VolunteeredMesh, None);
                } else {
                    self.after_mesh_received();
                }
            }
            Expect::VolunteeredMesh => {
                let Message::MeshConfig { files } = m else {
                    return Err(unexpected("mesh-config", &m));
                };
                self.their_mesh = Some(files);
                self.after_mesh_received();
            }
            Expect::Parity => {
                let Message::Parity(info) = m else {
                    return Err(unexpected("parity", &m));
                };
                self.report.parity = Some(info);
                self.compare();
            }
            Expect::Nodes => {
                let walk = self.descent()?;
                if !walk.accept(m).map_err(SessionError::Protocol)? {
                    return Ok(false);
                }
                let only_ours = walk.step().map_err(SessionError::Protocol)?;
                if only_ours.is_empty() {
                    self.descend();
                } else {
                    self.need(Expect::PathsUnder, Need::PathsUnder(only_ours));
                }
            }
            Expect::Entries => {
                let asked = self
                    .asked
                    .as_mut()
                    .ok_or_else(|| SessionError::Protocol("entries never asked".into()))?;
                if !asked.accept(m).map_err(SessionError::Protocol)? {
                    return Ok(false);
                }
                let wire = self
                    .asked
                    .take()
                    .map(EntriesAsked::finish)
                    .unwrap_or_default();
                let chunk_tree = self.features.contains(Features::CHUNK_TREE);
                if let Some(w) = wire
                    .iter()
                    .find(|w| !chunk_tree && matches!(w.listing, ChunkListing::Elided { .. }))
                {
                    return Err(elided_without_chunk_tree(&w.file.path));
                }
                self.expect = Expect::Completed;
                self.out.push_back(Io::Transfer(Transfer::Complete(wire)));
            }
            Expect::OfferResults => {
                let Message::OfferResult { items, last } = m else {
                    return Err(unexpected("offer result", &m));
                };
                let offer = &mut self.offer;
                if let Some(item) = items.iter().find(|i| {
                    !offer.offered.contains_key(&i.path) || !offer.answered.insert(i.path.clone())
                }) {
                    return Err(SessionError::Protocol(format!(
                        "an offer result for {}, which was not offered or was already answered",
                        item.path
                    )));
                }
                offer
                    .results
                    .extend(items.into_iter().map(ItemReport::from));
                if !last {
                    // More batches follow (a push of more than one batch of files): without
                    // asking for the next, the session ended here reporting nothing pushed.
                    self.recv(Expect::OfferResults, None);
                } else if self.opts.dry_run {
                    self.report.pushed = std::mem::take(&mut self.offer.results);
                    self.after_files();
                } else {
                    // The results go to settle and come back for the report (a push of 10^5
                    // files made them worth not copying).
                    let offer = std::mem::take(&mut self.offer);
                    self.need(
                        Expect::Settled,
                        Need::Settle(Settle {
                            results: offer.results,
                            offered: offer.offered,
                            theirs: offer.theirs,
                        }),
                    );
                }
            }
            Expect::MeshAfter => {
                let Message::MeshConfig { files } = m else {
                    return Err(unexpected("mesh-config", &m));
                };
                let ours = std::mem::take(&mut self.our_mesh);
                let peer = self.peer;
                self.need(
                    Expect::MeshAgreedAfter,
                    Need::MeshAgreed {
                        peer,
                        ours,
                        theirs: files,
                    },
                );
            }
            Expect::StateReply => {
                let Message::GetState { patterns, digest } = m else {
                    return Err(unexpected("get-state", &m));
                };
                self.state.their_digest = digest;
                self.need(Expect::StateMine, Need::StateRecords(patterns));
            }
            Expect::StateBatches => {
                let Message::State { records, last } = m else {
                    return Err(unexpected("state", &m));
                };
                self.take_state_batch(records, last)?;
            }
            Expect::StateConfirm => match m {
                Message::State {
                    records,
                    last: true,
                } if records.is_empty() => self.goodbye(),
                other => {
                    return Err(SessionError::Protocol(format!(
                        "expected an empty state confirming the push, got {other}"
                    )));
                }
            },
            _ => {
                return Err(SessionError::Protocol(format!(
                    "{} while no message was awaited",
                    m.kind()
                )));
            }
        }
        Ok(true)
    }

    /// Take the replica's answer to the last [`Need`].
    pub fn on_answer(&mut self, a: Answer) -> Result<(), SessionError> {
        match (self.expect, a) {
            (Expect::Snapshot, Answer::Snapshot(snap)) => {
                self.report.root = snap.root;
                self.out.push_back(Io::Send(Message::Summary {
                    root: snap.root,
                    files: snap.files,
                    mode: self.opts.mode,
                    skipped: snap.skipped.len() as u64,
                }));
                self.report.skipped = snap.skipped;
                self.report.counters.round_trips += 1;
                self.recv(Expect::Hello, Some(Phase::Summary));
            }
            (Expect::ChangedSince, Answer::Changed(known)) => match known {
                Some(paths) if !paths.is_empty() => {
                    // The peer holds what we held at its root, so it differs from us at most at
                    // these paths: what a descent would find, found without one.
                    debug!(
                        paths = paths.len(),
                        "the peer's root is an earlier one of ours"
                    );
                    self.report.direct_offer = true;
                    self.paths = paths;
                    if self.pulls() {
                        // Its versions there are not always older than ours (a repair moves
                        // ours back so that the peer's wins): ask for them as after a descent.
                        self.ask_entries();
                    } else {
                        self.push();
                    }
                }
                _ => self.walk(),
            },
            (Expect::Children, Answer::Children(ours)) => {
                let walk = self.descent()?;
                let requests = walk.requests(ours).map_err(SessionError::Protocol)?;
                self.report.counters.round_trips += 1;
                self.expect = Expect::Nodes;
                self.out.push_back(Io::Exchange(requests));
            }
            (Expect::PathsUnder, Answer::Paths(found)) => {
                self.descent()?.add_ours(found);
                self.descend();
            }
            (Expect::Screened, Answer::Screened(accepted, refused)) => {
                self.remote = accepted;
                if self.pulls() {
                    self.report.pulled = refused;
                    self.need(Expect::Planned, Need::Plan(self.remote.clone()));
                } else {
                    self.push();
                }
            }
            (Expect::Planned, Answer::Planned(items)) => {
                if self.opts.dry_run {
                    self.report.pulled.extend(items.iter().map(dry_report));
                    self.push();
                } else if self.opts.force {
                    self.fetch(items);
                } else {
                    self.guarded = Some(items.clone());
                    self.need(Expect::Guard, Need::CheckDeletes(items));
                }
            }
            (Expect::Guard, Answer::Guard(verdict)) => {
                verdict.map_err(SessionError::MassDelete)?;
                let items = self.guarded.take().unwrap_or_default();
                self.fetch(items);
            }
            (Expect::OurEntries, Answer::Entries(ours)) => self.offer(ours)?,
            (Expect::Settled, Answer::Settled(results)) => {
                self.report.pushed = results;
                self.after_files();
            }
            (Expect::Recorded, Answer::Done) => self.mesh(),
            (Expect::MeshTaken, Answer::MeshChanges(changes)) => {
                self.report.mesh = changes;
                self.push_mesh();
            }
            (Expect::OurMesh, Answer::Mesh(files)) => {
                if files.is_empty() {
                    self.state_phase();
                    return Ok(());
                }
                self.our_mesh = files.clone();
                match self.their_mesh.take() {
                    // After our merge, theirs may already be ours (key order aside).
                    Some(theirs) => self.need(
                        Expect::MeshAgreedBefore,
                        Need::MeshAgreed {
                            peer: self.peer,
                            ours: files,
                            theirs,
                        },
                    ),
                    None => self.send_mesh(),
                }
            }
            (Expect::MeshAgreedBefore, Answer::Agreed(agreed)) => {
                if agreed {
                    self.state_phase();
                } else {
                    self.send_mesh();
                }
            }
            (Expect::MeshAgreedAfter, Answer::Agreed(_)) => self.state_phase(),
            (Expect::StatePatterns, Answer::Patterns(ours)) => {
                if ours.is_empty() {
                    self.goodbye();
                } else {
                    self.report.state.exchanged = true;
                    self.patterns = ours.clone();
                    self.need(Expect::StateOwn, Need::StateRecords(ours));
                }
            }
            (Expect::StateOwn, Answer::Records(own)) => {
                let digest = state_digest(&own).map_err(FrameError::from)?;
                let patterns = std::mem::take(&mut self.patterns);
                self.out
                    .push_back(Io::Send(Message::GetState { patterns, digest }));
                self.report.counters.round_trips += 1;
                self.recv(Expect::StateReply, Some(Phase::Reply));
            }
            (Expect::StateMine, Answer::Records(mine)) => {
                self.state.in_step =
                    state_digest(&mine).map_err(FrameError::from)? == self.state.their_digest;
                self.state.mine = mine;
                self.recv(Expect::StateBatches, Some(Phase::Reply));
            }
            (Expect::StateApplied { last }, Answer::StateTaken(applied)) => {
                self.report.state.pulled.extend(applied);
                self.after_state_batch(last)?;
            }
            (expect, answer) => return Err(out_of_turn(&answer, &expect)),
        }
        Ok(())
    }

    /// Take the result of the last [`Transfer`].
    pub fn on_transfer(&mut self, t: Transferred) -> Result<(), SessionError> {
        match (self.expect, t) {
            (Expect::Completed, Transferred::Completed(entries)) => {
                let sender = self.peer;
                self.need(
                    Expect::Screened,
                    Need::Screen {
                        sender,
                        incoming: entries,
                    },
                );
            }
            (Expect::Applied, Transferred::Applied(reports, counters)) => {
                let c = &mut self.report.counters;
                c.chunks_received += counters.chunks_received;
                c.chunk_bytes_received += counters.chunk_bytes_received;
                c.chunk_wire_bytes_received += counters.chunk_wire_bytes_received;
                for r in &reports {
                    self.out.push_back(Io::Progress(ProgressEvent::Applied {
                        path: r.path.to_string(),
                    }));
                }
                self.report.pulled.extend(reports);
                self.push();
            }
            (expect, t) => return Err(out_of_turn(&t, &expect)),
        }
        Ok(())
    }

    fn need(&mut self, expect: Expect, need: Need) {
        self.expect = expect;
        self.out.push_back(Io::Need(need));
    }

    fn recv(&mut self, expect: Expect, phase: Option<Phase>) {
        self.expect = expect;
        self.out.push_back(Io::Recv(phase));
    }

    fn pulls(&self) -> bool {
        matches!(self.opts.mode, SessionMode::Sync | SessionMode::Pull)
    }

    fn pushes(&self) -> bool {
        matches!(self.opts.mode, SessionMode::Sync | SessionMode::Push)
    }

    fn descent(&mut self) -> Result<&mut Descent, SessionError> {
        self.descent
            .as_mut()
            .ok_or_else(|| SessionError::Protocol("nodes outside the descent".into()))
    }

    /// The summaries are in (and the volunteered mesh config): ask for parity, or compare.
    fn after_mesh_received(&mut self) {
        if self.opts.parity && self.features.contains(Features::PARITY) {
            self.out.push_back(Io::Send(Message::GetParity));
            self.report.counters.round_trips += 1;
            self.recv(Expect::Parity, None);
        } else {
            self.compare();
        }
    }

    /// Equal roots: nothing to walk. A root we had lately (feature `direct-offer`): what
    /// changed here since differs, without a descent (offered at once in a push). Otherwise
    /// the descent starts.
    fn compare(&mut self) {
        if self.their_root == self.report.root {
            // Equal roots, but a file either side could not read may hold changes.
            self.report.in_sync = self.report.skipped.is_empty() && self.report.peer_skipped == 0;
            self.mesh();
            return;
        }
        if self.features.contains(Features::DIRECT_OFFER) {
            self.need(Expect::ChangedSince, Need::ChangedSince(self.their_root));
        } else {
            self.walk();
        }
    }

    /// Start the Merkle descent.
    fn walk(&mut self) {
        let descent = if self.features.contains(Features::BUCKETS) {
            Descent::with_buckets(BUCKET_FROM_CHILDREN)
        } else {
            Descent::new()
        };
        self.descent = Some(if self.features.contains(Features::LONG_LISTS) {
            descent.with_long_lists()
        } else {
            descent
        });
        self.descend();
    }

    /// The next level of the descent, or the entries once it is done.
    fn descend(&mut self) {
        match self.descent.take() {
            Some(walk) if !walk.is_done() => {
                let dirs = walk.frontier().to_vec();
                self.descent = Some(walk);
                self.need(Expect::Children, Need::Children(dirs));
            }
            walk => {
                self.paths = walk
                    .map(Descent::finish)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                debug!(paths = self.paths.len(), "differing paths");
                if self.paths.is_empty() {
                    self.push();
                    return;
                }
                self.ask_entries();
            }
        }
    }

    /// Ask the peer's entries of the differing paths.
    fn ask_entries(&mut self) {
        let (asked, requests) = EntriesAsked::new(&self.paths);
        self.asked = Some(asked);
        self.report.counters.round_trips += 1;
        self.expect = Expect::Entries;
        self.out.push_back(Io::Exchange(requests));
    }

    fn fetch(&mut self, items: Vec<PlanItem>) {
        self.expect = Expect::Applied;
        self.out
            .push_back(Io::Transfer(Transfer::FetchAndApply(items)));
    }

    /// After the pull: offer our versions, if this session pushes.
    fn push(&mut self) {
        if self.pushes() && !self.paths.is_empty() {
            self.need(Expect::OurEntries, Need::Entries(self.paths.clone()));
        } else {
            self.after_files();
        }
    }

    /// Offer the versions of ours the peer does not already hold exactly.
    fn offer(&mut self, ours: Vec<FileEntry>) -> Result<(), SessionError> {
        let theirs = by_path(self.remote.clone());
        let offer: Vec<FileEntry> = ours
            .into_iter()
            .filter(|e| {
                theirs
                    .get(&e.path)
                    .is_none_or(|t| !(t.same_content(e) && t.version == e.version))
            })
            .collect();
        if offer.is_empty() {
            self.after_files();
            return Ok(());
        }
        if !self.opts.dry_run {
            // At most these bytes travel: the peer fetches only the chunks it lacks.
            self.out.push_back(Io::Progress(ProgressEvent::Planned {
                files: offer.len() as u64,
                bytes: offer.iter().map(|e| e.size).sum(),
            }));
        }
        self.offer = Offer {
            offered: by_path(offer.clone()),
            theirs,
            ..Offer::default()
        };
        let (dry_run, force) = (self.opts.dry_run, self.opts.force);
        outgoing(&mut self.out, offer, |entries, last| Message::Offer {
            entries,
            dry_run,
            last,
            force,
        })?;
        self.report.counters.round_trips += 1;
        // The peer fetches and applies before it answers: no deadline but the idle timeout.
        self.recv(Expect::OfferResults, None);
        Ok(())
    }

    /// The file phase is over: remember the peer's versions, then the mesh config.
    fn after_files(&mut self) {
        if self.opts.dry_run {
            self.mesh();
            return;
        }
        let remote = std::mem::take(&mut self.remote);
        self.need(
            Expect::Recorded,
            Need::RecordPeer {
                peer: self.peer,
                root: self.their_root,
                remote,
            },
        );
    }

    /// The mesh-config exchange (see `mesh.rs`), unless this is a dry run or the feature was
    /// not negotiated.
    fn mesh(&mut self) {
        if self.opts.dry_run || !self.features.contains(Features::MESH_CONFIG) {
            self.state_phase();
            return;
        }
        match self.their_mesh.clone() {
            Some(files) => self.need(
                Expect::MeshTaken,
                Need::TakeMesh {
                    peer: self.peer,
                    files,
                },
            ),
            None => self.push_mesh(),
        }
    }

    fn push_mesh(&mut self) {
        if self.pushes() {
            self.need(Expect::OurMesh, Need::MeshConfig);
        } else {
            self.state_phase();
        }
    }

    fn send_mesh(&mut self) {
        let files = self.our_mesh.clone();
        self.out.push_back(Io::Send(Message::MeshConfig { files }));
        self.report.counters.round_trips += 1;
        self.recv(Expect::MeshAfter, None);
    }

    fn goodbye(&mut self) {
        self.expect = Expect::Done;
        self.out.push_back(Io::Send(Message::Goodbye));
    }
}

/// An elided chunk list without the CHUNK_TREE feature: `bad-message`, before any request.
pub(crate) fn elided_without_chunk_tree(path: &RelPath) -> SessionError {
    FrameError::from(CodecError::Malformed(format!(
        "entry {path} has an elided chunk list, but CHUNK_TREE was not negotiated"
    )))
    .into()
}
