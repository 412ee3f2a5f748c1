//! What the session machines ask of their surroundings, and how a replica answers.
//!
//! The machines ([`super::initiator::Initiator`], [`super::responder::Responder`]) do no I/O: they
//! say what to send ([`Io::Send`]), what to read, and what they need from the replica
//! ([`Need`], answered with an [`Answer`]) or from the peer's request streams ([`Transfer`],
//! answered with a [`Transferred`]). [`execute`] carries out a [`Need`] on a [`Replica`]; the
//! tokio drivers run it on a blocking thread, the in-memory pair of proto's tests calls it
//! directly. Transfers touch the peer's request streams (chunks, chunk-tree nodes): the tokio
//! drivers map them onto quinn streams (`chunks.rs`, `entries.rs`), the pair onto the other
//! side's replica.

use std::collections::HashMap;

use botsync_engine::authority::check_claims;
use botsync_engine::guard::MassDelete;
use botsync_engine::plan::{Action, Base, ItemReport, Outcome, PlanItem};
use botsync_engine::reconcile::MergePolicy;
use botsync_engine::{ChunkRef, FileEntry, Hash, PeerId, RelPath};
use tracing::warn;

use super::{Counters, ProgressEvent, SessionError};
use crate::budget::Phase;
use crate::messages::{
    BucketAsk, BucketReply, MeshFile, Message, NodeReply, ParityInfo, WireEntry,
};
use crate::messages::{WireState, buckets};
use crate::replica::{HeldChunks, MeshChange, Replica, ReplicaError, Snapshot, StateApplied};

/// What a session machine asks its driver to do next.
#[derive(Debug)]
pub enum Io {
    /// Send one message on the control stream.
    Send(Message),
    /// Send these requests and, while sending, read the replies, handing each to the machine's
    /// `on_message` until it says the exchange is complete (see `Control::exchange`: reading
    /// only after sending could deadlock once both directions outgrow a stream window).
    Exchange(Vec<Message>),
    /// Read the next control message (an `Error` message included) within the deadline of
    /// this phase (none: only the connection's idle timeout bounds the wait, as while the peer
    /// applies our offer) and hand it to the machine's `on_message`.
    Recv(Option<Phase>),
    /// Ask the replica; hand the answer to the machine's `on_answer`.
    Need(Need),
    /// Use the peer's request streams; hand the result to the machine's `on_transfer`.
    Transfer(Transfer),
    /// The chunk tree of this content may now be asked for by the peer (an entry with an
    /// elided chunk list was sent).
    Advertise(Hash, Vec<ChunkRef>),
    /// For the progress bar.
    Progress(ProgressEvent),
    /// End the session: send `Error { code, message }`, finish the control stream, give the
    /// peer a moment to read it, then close the connection with `close`. Nothing follows.
    Refuse {
        /// The error code sent.
        code: crate::messages::ErrorCode,
        /// The connection's close code.
        close: crate::close::CloseCode,
        /// Why, in one line.
        message: String,
    },
}

/// A request to the replica.
#[derive(Debug)]
pub enum Need {
    /// Bring the index up to date ([`Answer::Snapshot`]).
    Snapshot,
    /// The paths changed here since our tree had this root, if known ([`Answer::Changed`]).
    ChangedSince(Hash),
    /// Our children of each directory, in order, none for a directory we lack
    /// ([`Answer::Children`]).
    Children(Vec<RelPath>),
    /// Our children of each directory, as `Nodes` replies ([`Answer::Nodes`]).
    Nodes(Vec<RelPath>),
    /// Our answer to each bucket ask ([`Answer::Buckets`]).
    Buckets(Vec<BucketAsk>),
    /// The entry paths under these directories of ours ([`Answer::Paths`]).
    PathsUnder(Vec<RelPath>),
    /// Our entries of these paths ([`Answer::Entries`]).
    Entries(Vec<RelPath>),
    /// Screen versions received from `sender` ([`Answer::Screened`]).
    Screen {
        /// Who sent them.
        sender: PeerId,
        /// The versions.
        incoming: Vec<FileEntry>,
    },
    /// Plan taking these versions; items with nothing to do are left out ([`Answer::Planned`]).
    Plan(Vec<FileEntry>),
    /// Check the delete guard for a plan ([`Answer::Guard`]).
    CheckDeletes(Vec<PlanItem>),
    /// After an offer: record what the peer took ([`Answer::Settled`], which hands the results
    /// back for the report); see [`Settle`].
    Settle(Settle),
    /// Remember the peer's root and versions after a session ([`Answer::Done`]).
    RecordPeer {
        /// The peer.
        peer: PeerId,
        /// Its root at the start of the session.
        root: Hash,
        /// Its versions of the differing paths.
        remote: Vec<FileEntry>,
    },
    /// Our stripped mesh config files ([`Answer::Mesh`]).
    MeshConfig,
    /// Merge the peer's mesh config files ([`Answer::MeshChanges`]).
    TakeMesh {
        /// The peer.
        peer: PeerId,
        /// Its files.
        files: Vec<MeshFile>,
    },
    /// Note which of our files the peer holds equal ([`Answer::Agreed`]).
    MeshAgreed {
        /// The peer.
        peer: PeerId,
        /// Ours.
        ours: Vec<MeshFile>,
        /// Theirs.
        theirs: Vec<MeshFile>,
    },
    /// Our parity report, with this session's root ([`Answer::Parity`]).
    Parity(Snapshot),
    /// Our `state_sync` patterns ([`Answer::Patterns`]).
    StatePatterns,
    /// Our patterns and records for the peer's patterns, or none if we share no state
    /// ([`Answer::State`]).
    StateToShare(Vec<String>),
    /// Our records matching these patterns ([`Answer::Records`]).
    StateRecords(Vec<String>),
    /// Take the peer's records ([`Answer::StateTaken`]).
    ApplyState {
        /// The records.
        records: Vec<WireState>,
        /// The peer.
        peer: PeerId,
    },
}

/// The replica's answer to a [`Need`].
#[derive(Debug)]
pub enum Answer {
    /// To [`Need::Snapshot`].
    Snapshot(Snapshot),
    /// To [`Need::ChangedSince`].
    Changed(Option<Vec<RelPath>>),
    /// To [`Need::Children`].
    Children(Vec<Vec<crate::messages::NodeChild>>),
    /// To [`Need::Nodes`].
    Nodes(Vec<NodeReply>),
    /// To [`Need::Buckets`].
    Buckets(Vec<BucketReply>),
    /// To [`Need::PathsUnder`].
    Paths(Vec<RelPath>),
    /// To [`Need::Entries`].
    Entries(Vec<FileEntry>),
    /// To [`Need::Screen`]: the versions accepted, and a failed report for each refused one.
    Screened(Vec<FileEntry>, Vec<ItemReport>),
    /// To [`Need::Plan`].
    Planned(Vec<PlanItem>),
    /// To [`Need::CheckDeletes`].
    Guard(Result<(), MassDelete>),
    /// To [`Need::RecordPeer`].
    Done,
    /// To [`Need::Settle`]: the peer's results, as they came.
    Settled(Vec<ItemReport>),
    /// To [`Need::MeshConfig`].
    Mesh(Vec<MeshFile>),
    /// To [`Need::TakeMesh`].
    MeshChanges(Vec<MeshChange>),
    /// To [`Need::MeshAgreed`]: true if the files agree.
    Agreed(bool),
    /// To [`Need::Parity`].
    Parity(ParityInfo),
    /// To [`Need::StatePatterns`].
    Patterns(Vec<String>),
    /// To [`Need::StateToShare`]: our patterns and the records to send.
    State(Vec<String>, Vec<WireState>),
    /// To [`Need::StateRecords`].
    Records(Vec<WireState>),
    /// To [`Need::ApplyState`].
    StateTaken(StateApplied),
}

/// A request that uses the peer's request streams.
#[derive(Debug)]
pub enum Transfer {
    /// Turn wire entries into full entries, fetching the chunk-tree nodes of elided lists
    /// ([`Transferred::Completed`]).
    Complete(Vec<WireEntry>),
    /// Fetch the chunks these items need and apply them ([`Transferred::Applied`]).
    FetchAndApply(Vec<PlanItem>),
}

/// The result of a [`Transfer`].
#[derive(Debug)]
pub enum Transferred {
    /// Full entries.
    Completed(Vec<FileEntry>),
    /// What the apply did, and the chunk counters of the fetch.
    Applied(Vec<ItemReport>, Counters),
}

/// After an offer the peer answered: the versions it took as they are here become common
/// ground for later merges, and where it took our side of a conflict its vector is now the merge
/// of both histories, which we record too (so both sides hold equal versions and the next sync
/// is a no-op). Each merge is made against the version we offered: if ours changed since, apply
/// decides again between our new version and what the peer now holds (a conflict, both kept).
#[derive(Debug)]
pub struct Settle {
    /// The peer's results.
    pub results: Vec<ItemReport>,
    /// What we offered, by path.
    pub offered: HashMap<RelPath, FileEntry>,
    /// The peer's versions of the offered paths before the offer, by path.
    pub theirs: HashMap<RelPath, FileEntry>,
}

/// Carry out `need` on `replica`.
pub fn execute<R: Replica + ?Sized>(replica: &R, need: Need) -> Result<Answer, ReplicaError> {
    Ok(match need {
        Need::Snapshot => Answer::Snapshot(replica.refresh()?),
        Need::ChangedSince(root) => Answer::Changed(replica.changed_since(root)?),
        Need::Children(dirs) => Answer::Children(
            dirs.iter()
                .map(|d| replica.children(d).map(Option::unwrap_or_default))
                .collect::<Result<_, _>>()?,
        ),
        Need::Nodes(paths) => Answer::Nodes(
            paths
                .into_iter()
                .map(|path| {
                    Ok(NodeReply {
                        children: replica.children(&path)?.unwrap_or_default(),
                        path,
                    })
                })
                .collect::<Result<_, ReplicaError>>()?,
        ),
        Need::Buckets(asks) => Answer::Buckets(
            asks.iter()
                .map(|ask| {
                    let ours = replica.children(&ask.path)?.unwrap_or_default();
                    Ok(buckets::answer(ask, ours))
                })
                .collect::<Result<_, ReplicaError>>()?,
        ),
        Need::PathsUnder(dirs) => Answer::Paths(replica.paths_under(&dirs)?),
        Need::Entries(paths) => Answer::Entries(replica.entries(&paths)?),
        Need::Screen { sender, incoming } => {
            let (accepted, refused) = screen(replica, sender, incoming)?;
            Answer::Screened(accepted, refused)
        }
        Need::Plan(incoming) => Answer::Planned(
            replica
                .plan(incoming)?
                .into_iter()
                .filter(|i| i.action != Action::Nothing)
                .collect(),
        ),
        Need::CheckDeletes(items) => Answer::Guard(replica.check_deletes(&items)),
        Need::Settle(s) => Answer::Settled(settle(replica, s)?),
        Need::RecordPeer { peer, root, remote } => {
            replica.record_peer(peer, root, &remote)?;
            Answer::Done
        }
        Need::MeshConfig => Answer::Mesh(replica.mesh_config()?),
        Need::TakeMesh { peer, files } => {
            Answer::MeshChanges(replica.take_mesh_config(peer, files)?)
        }
        Need::MeshAgreed { peer, ours, theirs } => {
            Answer::Agreed(replica.mesh_config_agreed(peer, &ours, &theirs))
        }
        Need::Parity(snap) => Answer::Parity(ParityInfo {
            root: snap.root,
            files: snap.files,
            policy: replica.policy()?,
            mesh: replica.mesh_config()?,
        }),
        Need::StatePatterns => Answer::Patterns(replica.state_patterns()),
        Need::StateToShare(theirs) => {
            let ours = replica.state_patterns();
            let records = if ours.is_empty() {
                Vec::new()
            } else {
                replica.state_records(&theirs)?
            };
            Answer::State(ours, records)
        }
        Need::StateRecords(patterns) => Answer::Records(replica.state_records(&patterns)?),
        Need::ApplyState { records, peer } => {
            Answer::StateTaken(replica.apply_state(records, peer)?)
        }
    })
}

/// Refuse the incoming versions whose claims about us we cannot believe
/// ([`check_claims`]: our own counter far ahead of ours, an author the version does not count).
/// Returns the accepted entries, and for each refused one a report with action `Nothing` and
/// outcome `Failed`, so that the refusal is seen on both sides.
fn screen<R: Replica + ?Sized>(
    replica: &R,
    sender: PeerId,
    incoming: Vec<FileEntry>,
) -> Result<(Vec<FileEntry>, Vec<ItemReport>), ReplicaError> {
    if incoming.is_empty() {
        return Ok((incoming, Vec::new()));
    }
    let paths: Vec<RelPath> = incoming.iter().map(|e| e.path.clone()).collect();
    let receiver = replica.local_peer();
    let ours = by_path(replica.entries(&paths)?);
    let mut accepted = Vec::with_capacity(incoming.len());
    let mut refused = Vec::new();
    for remote in incoming {
        match check_claims(ours.get(&remote.path), &remote, receiver) {
            Ok(()) => accepted.push(remote),
            Err(refusal) => {
                warn!(peer = %sender, %refusal, "version refused");
                refused.push(ItemReport {
                    path: remote.path.clone(),
                    action: Action::Nothing,
                    outcome: Outcome::Failed {
                        reason: refusal.to_string(),
                    },
                    size: remote.size,
                    bytes_fetched: 0,
                    conflict_copy: None,
                    changed_by: Some(remote.changed_by.clone()),
                    mtime_ns: remote.mtime_ns,
                });
            }
        }
    }
    Ok((accepted, refused))
}

/// See [`Settle`].
fn settle<R: Replica + ?Sized>(replica: &R, s: Settle) -> Result<Vec<ItemReport>, ReplicaError> {
    let done = |r: &&ItemReport| r.outcome == Outcome::Done;
    let agreed: Vec<RelPath> = s
        .results
        .iter()
        .filter(done)
        .filter(|r| matches!(r.action, Action::Take | Action::TakeConflict))
        .filter(|r| s.offered.get(&r.path).is_some_and(|e| !e.is_tombstone()))
        .map(|r| r.path.clone())
        .collect();
    if !agreed.is_empty() {
        replica.record_merge_bases(&agreed);
    }
    let pairs: Vec<(&FileEntry, &FileEntry)> = s
        .results
        .iter()
        .filter(done)
        .filter(|r| r.action == Action::TakeConflict)
        .filter_map(|r| Some((s.theirs.get(&r.path)?, s.offered.get(&r.path)?)))
        .collect();
    let Some(peer) = pairs.first().map(|(t, _)| t.changed_by.peer) else {
        return Ok(s.results);
    };
    let merges: Vec<PlanItem> = pairs
        .into_iter()
        .map(|(t, ours)| {
            // What the peer holds now: our content under the merge of both vectors.
            let mut now_theirs = ours.clone();
            now_theirs.version = ours.version.merge(&t.version);
            PlanItem {
                remote: now_theirs,
                action: Action::MergeVersion,
                bytes_needed: 0,
                base: Some(Base::of(ours)),
                policy: MergePolicy::Newest,
            }
        })
        .collect();
    replica.apply(merges, peer, HeldChunks::new())?;
    Ok(s.results)
}

/// A replica answer or a transfer result the machine did not ask for (`what`, while it waited
/// for `expected`): a bug in the driver, never the peer's doing.
pub(crate) fn out_of_turn(
    what: &dyn std::fmt::Debug,
    expected: &dyn std::fmt::Debug,
) -> SessionError {
    SessionError::Task(format!(
        "{what:?} came while the session waited for {expected:?}"
    ))
}

/// Entries by path.
pub(crate) fn by_path(entries: Vec<FileEntry>) -> HashMap<RelPath, FileEntry> {
    entries.into_iter().map(|e| (e.path.clone(), e)).collect()
}

/// What a dry run reports for a planned item.
pub(crate) fn dry_report(i: &PlanItem) -> ItemReport {
    ItemReport {
        path: i.remote.path.clone(),
        action: i.action.clone(),
        outcome: if i.action.writes_file() {
            Outcome::Done
        } else {
            Outcome::Unchanged
        },
        size: i.remote.size,
        bytes_fetched: i.bytes_needed,
        conflict_copy: None,
        changed_by: Some(i.remote.changed_by.clone()),
        mtime_ns: i.remote.mtime_ns,
    }
}
