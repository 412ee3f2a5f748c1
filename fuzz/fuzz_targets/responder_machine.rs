//! Message sequences against the whole responder machine (`session::responder`), the order
//! rules and every step they lead to: the first two bytes pick the features offered (bits, little
//! endian; seeds from `proto/tests/pair.rs`, recorded sessions), the rest is a
//! stream of frames fed as the initiator's control messages (a `Hello` is sent first when the
//! stream does not start with one, so most inputs get past the greeting). Needs are answered
//! by a small replica that takes every version it is offered; transfers as the wire would
//! (inline lists converted, elided ones refused as a lost chunk tree). Whatever arrives, the
//! machine must not panic, everything it sends must encode as a frame, it reads nothing after a
//! refusal or `Goodbye`, and a refusal is the last thing it asks for.
#![no_main]

use botsync_engine::config::DeleteThreshold;
use botsync_engine::guard::MassDelete;
use botsync_engine::plan::{Action, ItemReport, Outcome, PlanItem};
use botsync_engine::reconcile::MergePolicy;
use botsync_engine::{ChunkRef, FileEntry, Hash, PeerId, RelPath};
use botsync_proto::frame::{FrameDecoder, encode_frame};
use botsync_proto::messages::{ChildKind, ChunkListing, Features, Hello, Message, NodeChild};
use botsync_proto::replica::{HeldChunks, Replica, ReplicaError, Snapshot};
use botsync_proto::session::responder::Responder;
use botsync_proto::session::work::{self, Io, Transfer, Transferred};
use botsync_proto::session::{Counters, SessionError};
use libfuzzer_sys::fuzz_target;

/// A workspace of one file, `memory/a.md`, that takes every version offered.
struct Taker;

impl Replica for Taker {
    fn local_peer(&self) -> PeerId {
        PeerId([0x5e; 32])
    }
    fn refresh(&self) -> Result<Snapshot, ReplicaError> {
        Ok(Snapshot {
            root: Hash::of(b"root"),
            files: 1,
            skipped: Vec::new(),
        })
    }
    fn children(&self, dir: &RelPath) -> Result<Option<Vec<NodeChild>>, ReplicaError> {
        Ok((dir.as_str().is_empty() || dir.as_str() == "memory").then(|| {
            vec![NodeChild {
                name: "a.md".into(),
                kind: ChildKind::File,
                hash: Hash::of(b"a"),
            }]
        }))
    }
    fn paths_under(&self, _: &[RelPath]) -> Result<Vec<RelPath>, ReplicaError> {
        Ok(Vec::new())
    }
    fn entries(&self, _: &[RelPath]) -> Result<Vec<FileEntry>, ReplicaError> {
        Ok(Vec::new())
    }
    fn plan(&self, incoming: Vec<FileEntry>) -> Result<Vec<PlanItem>, ReplicaError> {
        Ok(incoming
            .into_iter()
            .map(|remote| PlanItem {
                action: if remote.is_tombstone() {
                    Action::Delete
                } else {
                    Action::Take
                },
                bytes_needed: remote.size,
                remote,
                base: None,
                policy: MergePolicy::Newest,
            })
            .collect())
    }
    fn check_deletes(&self, items: &[PlanItem]) -> Result<(), MassDelete> {
        let deletes = items.iter().filter(|i| i.action == Action::Delete).count() as u64;
        if deletes > 2 {
            return Err(MassDelete {
                deletes,
                synced: 1,
                threshold: DeleteThreshold {
                    files: 2,
                    percent: 50,
                },
            });
        }
        Ok(())
    }
    fn chunks_needed(&self, _: &[PlanItem]) -> Result<Vec<ChunkRef>, ReplicaError> {
        Ok(Vec::new())
    }
    fn read_chunk(&self, _: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        Ok(None)
    }
    fn put_chunk(&self, _: &Hash, _: &[u8]) -> Result<(), ReplicaError> {
        Ok(())
    }
    fn apply(
        &self,
        items: Vec<PlanItem>,
        _: PeerId,
        _: HeldChunks,
    ) -> Result<Vec<ItemReport>, ReplicaError> {
        Ok(items
            .into_iter()
            .map(|i| ItemReport {
                path: i.remote.path.clone(),
                action: i.action,
                outcome: Outcome::Done,
                size: i.remote.size,
                bytes_fetched: 0,
                conflict_copy: None,
                changed_by: Some(i.remote.changed_by),
                mtime_ns: i.remote.mtime_ns,
            })
            .collect())
    }
    fn record_peer(&self, _: PeerId, _: Hash, _: &[FileEntry]) -> Result<(), ReplicaError> {
        Ok(())
    }
}

/// Answer everything the machine asks until it waits for the next message; false once it
/// stopped (refused, said goodbye, or failed).
fn settle(r: &mut Responder) -> bool {
    let mut refused = false;
    while let Some(io) = r.poll() {
        assert!(!refused, "the machine asked for {io:?} after a refusal");
        let step: Result<(), SessionError> = match io {
            Io::Send(m) => {
                assert!(encode_frame(&m).is_ok(), "an unsendable {}", m.kind());
                Ok(())
            }
            Io::Recv(_) => {
                assert!(!r.is_done(), "a read asked for after the end");
                return true;
            }
            Io::Need(need) => match work::execute(&Taker, need) {
                Ok(answer) => r.on_answer(answer),
                Err(_) => return false,
            },
            Io::Transfer(Transfer::Complete(wire)) => {
                if wire
                    .iter()
                    .any(|w| matches!(w.listing, ChunkListing::Elided { .. }))
                {
                    return false;
                }
                let entries = wire.into_iter().map(|w| w.file.into()).collect();
                r.on_transfer(Transferred::Completed(entries))
            }
            Io::Transfer(Transfer::FetchAndApply(items)) => {
                match Taker.apply(items, PeerId([0x1a; 32]), HeldChunks::new()) {
                    Ok(reports) => r.on_transfer(Transferred::Applied(reports, Counters::default())),
                    Err(_) => return false,
                }
            }
            Io::Refuse { .. } => {
                refused = true;
                assert!(r.is_done(), "a refusal ends the session");
                Ok(())
            }
            Io::Exchange(_) => panic!("the responder pipelines nothing"),
            Io::Advertise(..) | Io::Progress(_) => Ok(()),
        };
        if step.is_err() {
            return false;
        }
    }
    !refused && !r.is_done()
}

fuzz_target!(|data: &[u8]| {
    let [lo, hi, stream @ ..] = data else {
        return;
    };
    let features = Features::from_bits(u64::from(u16::from_le_bytes([*lo, *hi])));
    let mut r = Responder::new(PeerId([0x1a; 32]), "fuzz", features);
    let mut decoder = FrameDecoder::new();
    decoder.push(stream);
    let mut first = true;
    while let Ok(Some(m)) = decoder.pop() {
        if first && !matches!(m, Message::Hello(_)) {
            let mut hello = Hello::current("fuzz", Default::default());
            hello.features = features;
            if r.on_message(Message::Hello(hello)).is_err() || !settle(&mut r) {
                return;
            }
        }
        first = false;
        if r.on_message(m).is_err() || !settle(&mut r) {
            break;
        }
    }
});
