//! Sessions between two test replicas (`common/replica.rs`) over real QUIC on 127.0.0.1: the
//! message order of docs/PROTOCOL.md, and every hostile or broken input refused while the listener
//! keeps serving.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use botsync_engine::PeerId;
use botsync_engine::plan::Outcome;
use botsync_proto::close::CloseCode;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::frame::{read_frame, write_frame};
use botsync_proto::identity::Identity;
use botsync_proto::messages::{ErrorCode, Features, Hello, Message, SessionMode};
use botsync_proto::replica::{Replica, ReplicaError, Snapshot};
use botsync_proto::session::server::{ServeOptions, serve};
use botsync_proto::session::{NoProgress, SessionError, SessionOptions, SessionReport, client};
use botsync_proto::tls::AllowedPeers;
use common::{TestReplica, pseudo_random};

/// A listening peer ("server") and a dialing peer ("client"), each with a replica.
struct Pair {
    server_addr: SocketAddr,
    server_id: PeerId,
    client: Endpoint,
    client_replica: Arc<TestReplica>,
    server_replica: Arc<dyn ReplicaDyn>,
    served: tokio::sync::mpsc::UnboundedReceiver<Result<usize, String>>,
}

/// Object-safe view of the server's replica for assertions.
trait ReplicaDyn: Send + Sync {
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    fn write(&self, path: &str, bytes: &[u8]);
    fn write_many(&self, files: &[(String, Vec<u8>)]);
    fn delete(&self, path: &str);
    fn root(&self) -> botsync_engine::Hash;
}

impl ReplicaDyn for TestReplica {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        TestReplica::read(self, path)
    }
    fn write(&self, path: &str, bytes: &[u8]) {
        TestReplica::write(self, path, bytes)
    }
    fn write_many(&self, files: &[(String, Vec<u8>)]) {
        TestReplica::write_many(self, files)
    }
    fn delete(&self, path: &str) {
        TestReplica::delete(self, path)
    }
    fn root(&self) -> botsync_engine::Hash {
        TestReplica::root(self)
    }
}

impl ReplicaDyn for Corrupting {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.0.read(path)
    }
    fn write(&self, path: &str, bytes: &[u8]) {
        self.0.write(path, bytes)
    }
    fn write_many(&self, files: &[(String, Vec<u8>)]) {
        self.0.write_many(files)
    }
    fn delete(&self, path: &str) {
        self.0.delete(path)
    }
    fn root(&self) -> botsync_engine::Hash {
        self.0.root()
    }
}

async fn pair_with<R: Replica + ReplicaDyn>(server_replica: Arc<R>) -> Pair {
    let server_identity = Identity::generate().unwrap();
    let client_identity = Identity::generate().unwrap();
    let (server_id, client_id) = (server_identity.peer_id(), client_identity.peer_id());
    let server = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        server_identity,
        [client_id].into_iter().collect::<AllowedPeers>(),
    )
    .unwrap();
    let server_addr = server.local_addr().unwrap();
    let client = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        client_identity,
        AllowedPeers::new(),
    )
    .unwrap();
    let (tx, served) = tokio::sync::mpsc::unbounded_channel();
    let replica = Arc::clone(&server_replica);
    tokio::spawn(async move {
        // The listener: one session per connection, errors reported, never stops serving.
        while let Some(incoming) = server.accept().await {
            let Ok(conn) = incoming.accept().await else {
                continue;
            };
            let (quinn, peer) = conn.into_parts();
            let opts = ServeOptions {
                name: "server".into(),
                streams: 4,
                budget: botsync_proto::budget::Budget::default(),
                features: botsync_proto::messages::Features::SUPPORTED,
            };
            let result = serve(quinn, peer, Arc::clone(&replica), opts).await;
            let _ = tx.send(result.map(|r| r.applied.len()).map_err(|e| e.to_string()));
        }
    });
    Pair {
        server_addr,
        server_id,
        client,
        client_replica: Arc::new(TestReplica::new(client_id)),
        server_replica,
        served,
    }
}

async fn pair() -> Pair {
    pair_with(Arc::new(TestReplica::new(PeerId([0xee; 32])))).await
}

impl Pair {
    async fn session(
        &self,
        mode: SessionMode,
        dry_run: bool,
    ) -> Result<SessionReport, SessionError> {
        let mut opts = SessionOptions::new(mode, "client");
        opts.dry_run = dry_run;
        self.session_with(opts).await
    }

    async fn session_with(&self, opts: SessionOptions) -> Result<SessionReport, SessionError> {
        let conn = self
            .client
            .connect(self.server_addr, self.server_id)
            .await
            .unwrap();
        let result = client::run(
            &conn,
            self.server_id,
            Arc::clone(&self.client_replica),
            &opts,
            Arc::new(NoProgress),
        )
        .await;
        conn.close(match &result {
            Ok(_) => CloseCode::Done,
            Err(e) => e.close_code(),
        });
        result
    }

    async fn sync(&self) -> SessionReport {
        self.session(SessionMode::Sync, false).await.unwrap()
    }

    /// A raw control stream to the server, for hostile inputs.
    async fn raw(&self) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
        let conn = self
            .client
            .connect(self.server_addr, self.server_id)
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        (conn.quinn().clone(), send, recv)
    }

    /// The next session outcome on the server side.
    async fn served(&mut self) -> Result<usize, String> {
        self.served.recv().await.unwrap()
    }
}

#[tokio::test]
async fn first_sync_copies_everything_and_roots_match() {
    let p = pair().await;
    p.client_replica.write("MEMORY.md", b"remember the milk\n");
    p.client_replica.write("memory/2026-11-21.md", b"# today\n");
    p.server_replica.write("USER.md", b"name: sam\n");
    let report = p.sync().await;
    assert!(!report.in_sync);
    assert_eq!(
        p.server_replica.read("MEMORY.md").unwrap(),
        b"remember the milk\n"
    );
    assert_eq!(p.client_replica.read("USER.md").unwrap(), b"name: sam\n");
    assert_eq!(p.client_replica.root(), p.server_replica.root());
}

#[tokio::test]
async fn a_workspace_in_sync_costs_one_round_trip() {
    let p = pair().await;
    p.client_replica.write("MEMORY.md", b"x");
    p.sync().await;
    let report = p.sync().await;
    assert!(report.in_sync);
    assert_eq!(report.counters.round_trips, 1);
    // Hello and Summary out, Hello, Summary and the volunteered MeshConfig back, Goodbye.
    assert_eq!(report.counters.messages_sent, 3);
    assert_eq!(report.counters.messages_received, 3);
}

#[tokio::test]
async fn a_mass_delete_is_refused_by_the_receiving_side_of_each_direction_until_forced() {
    let mut p = pair().await;
    for i in 0..8 {
        p.client_replica
            .write(&format!("memory/n{i}.md"), format!("note {i}\n").as_bytes());
    }
    p.sync().await;
    p.served().await.unwrap();
    let notes = |r: &dyn Fn(&str) -> Option<Vec<u8>>| {
        (0..8)
            .filter(|i| r(&format!("memory/n{i}.md")).is_some())
            .count()
    };

    // Push: the server refuses with one line, keeps its files and keeps serving.
    for i in 0..8 {
        p.client_replica.delete(&format!("memory/n{i}.md"));
    }
    let err = p.session(SessionMode::Push, false).await.unwrap_err();
    assert!(matches!(err, SessionError::Refused(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("would delete 8 of 8") && text.contains("--force"),
        "{text}"
    );
    assert_eq!(notes(&|x| p.server_replica.read(x)), 8);
    assert!(
        p.served().await.is_ok(),
        "a refusal is not a server failure"
    );
    let mut forced = SessionOptions::new(SessionMode::Push, "client");
    forced.force = true;
    p.session_with(forced).await.unwrap();
    assert_eq!(notes(&|x| p.server_replica.read(x)), 0);

    // Pull: the client refuses before fetching or writing anything.
    for i in 0..8 {
        p.server_replica
            .write(&format!("memory/m{i}.md"), format!("more {i}\n").as_bytes());
    }
    p.sync().await;
    for i in 0..8 {
        p.server_replica.delete(&format!("memory/m{i}.md"));
    }
    let err = p.session(SessionMode::Pull, false).await.unwrap_err();
    assert!(matches!(err, SessionError::MassDelete(_)), "{err}");
    assert!(p.client_replica.read("memory/m0.md").is_some());
    let mut forced = SessionOptions::new(SessionMode::Pull, "client");
    forced.force = true;
    p.session_with(forced).await.unwrap();
    assert!(p.client_replica.read("memory/m0.md").is_none());
}

#[tokio::test]
async fn edits_deletes_and_conflicts_converge() {
    let p = pair().await;
    for i in 0..20 {
        p.client_replica
            .write(&format!("memory/n{i}.md"), format!("note {i}\n").as_bytes());
    }
    p.sync().await;
    p.client_replica
        .write("memory/n1.md", b"edited on the client\n");
    p.server_replica.delete("memory/n2.md");
    p.server_replica
        .write("memory/new.md", b"from the server\n");
    // A true conflict: both sides edit n3; the same version wins on both sides.
    p.client_replica.write("memory/n3.md", b"client version\n");
    p.server_replica.write("memory/n3.md", b"server version\n");
    let report = p.sync().await;
    assert!(
        report
            .pulled
            .iter()
            .chain(&report.pushed)
            .any(|i| i.action.is_conflict())
    );
    assert_eq!(
        p.server_replica.read("memory/n1.md").unwrap(),
        b"edited on the client\n"
    );
    assert_eq!(p.client_replica.read("memory/n2.md"), None);
    assert_eq!(
        p.client_replica.read("memory/new.md").unwrap(),
        b"from the server\n"
    );
    let n3 = p.client_replica.read("memory/n3.md").unwrap();
    assert_eq!(p.server_replica.read("memory/n3.md").unwrap(), n3);
    // Once converged, the next sync is a no-op.
    let report = p.sync().await;
    assert!(report.in_sync, "{report:?}");
}

/// Twelve request batches of 1024 differing directories and paths, with names so long that the
/// pipelined requests and their replies each outgrow a stream window (1 MiB): the initiator must
/// keep reading replies while it sends, or both sides stall with full windows. (Before
/// `Control::exchange` this stalled from 8192 such paths on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_differing_paths_sync_without_stalling() {
    const FILES: usize = 12 * 1024;
    let p = pair().await;
    let long = "x".repeat(150);
    let path = |i: usize| format!("memory/{long}-{i:05}/{long}/note.md");
    let round = |word: &str| -> Vec<(String, Vec<u8>)> {
        (0..FILES)
            .map(|i| (path(i), format!("{word} {i}").into_bytes()))
            .collect()
    };
    p.client_replica.write_many(&round("first"));
    let deadline = std::time::Duration::from_secs(120);
    tokio::time::timeout(deadline, p.sync())
        .await
        .expect("the first sync stalled");
    // Every file changes on the client: both sides descend through every directory and the
    // client asks for every entry.
    p.client_replica.write_many(&round("second"));
    let report = tokio::time::timeout(deadline, p.sync())
        .await
        .expect("the second sync stalled");
    assert!(!report.in_sync);
    assert_eq!(p.client_replica.root(), p.server_replica.root());
    assert_eq!(p.client_replica.files().len(), FILES);
    assert_eq!(
        p.server_replica.read(&path(FILES - 1)).unwrap(),
        format!("second {}", FILES - 1).as_bytes()
    );
}

/// Found by the scaling run: a push of more than 1,024 files (more than one `Offer` batch)
/// reported nothing pushed ("0 out"), though every file arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_more_files_than_one_offer_batch_reports_every_file() {
    let p = pair().await;
    let files: Vec<(String, Vec<u8>)> = (0..1_100)
        .map(|i| {
            (
                format!("memory/n{i:04}.md"),
                format!("note {i}\n").into_bytes(),
            )
        })
        .collect();
    p.client_replica.write_many(&files);
    let report = p.session(SessionMode::Push, false).await.unwrap();
    assert_eq!(
        report.pushed.len(),
        files.len(),
        "every pushed file is reported"
    );
    assert!(
        report.pushed.iter().all(|r| r.outcome == Outcome::Done),
        "{:?}",
        report.pushed.iter().find(|r| r.outcome != Outcome::Done)
    );
    assert_eq!(p.client_replica.root(), p.server_replica.root());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_group_is_fetched_while_one_is_applied() {
    // 20 MiB of 8 KiB notes: several groups of single-chunk files (a few MiB held each).
    let p = pair().await;
    let files: Vec<(String, Vec<u8>)> = (0..2_560u64)
        .map(|i| (format!("memory/n{i:04}.md"), pseudo_random(8192, i)))
        .collect();
    p.server_replica.write_many(&files);
    // The first group's apply waits until the second group's chunks are asked for: with
    // fetch and apply taking turns that never happens, and the gate gives up after 10 s.
    p.client_replica.gate_next_apply();
    let report = p.session(SessionMode::Pull, false).await.unwrap();
    assert!(
        p.client_replica.overlap_seen(),
        "the next group was fetched while the first was applied"
    );
    assert_eq!(report.pulled.len(), files.len());
    for (path, bytes) in files.iter().step_by(97) {
        assert_eq!(p.client_replica.read(path).as_ref(), Some(bytes), "{path}");
    }
    assert_eq!(p.client_replica.root(), p.server_replica.root());
}

/// A `Nodes` reply larger than a frame: 24 directories of 1000 files with 200-byte names list
/// about 5.6 MB of children in the answer to one `GetNodes`. The responder splits it into
/// several `Nodes` messages, and the initiator reads the directory replies across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_reply_larger_than_a_frame_is_split_and_syncs() {
    let p = pair().await;
    let path = |d: usize, f: usize| format!("memory/d{d:02}/{f:0>200}");
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .flat_map(|d| (0..1000).map(move |f| (path(d, f), b"same\n".to_vec())))
        .collect();
    p.server_replica.write_many(&files);
    let deadline = std::time::Duration::from_secs(120);
    let report = tokio::time::timeout(deadline, p.session(SessionMode::Pull, false))
        .await
        .expect("the pull stalled")
        .unwrap();
    assert_eq!(report.pulled.len(), 24_000);
    assert_eq!(p.client_replica.root(), p.server_replica.root());
    assert_eq!(p.client_replica.read(&path(23, 999)).unwrap(), b"same\n");
}

/// The agent workspace's shape: hundreds of notes in one directory, a few edited on each side.
/// The directory is compared by buckets (feature `buckets`, negotiated by default): the edits
/// of both sides, a deletion and a new note all arrive, and the roots agree.
#[tokio::test]
async fn a_large_directory_compared_by_buckets_syncs_every_change_both_ways() {
    let p = pair().await;
    let note = |i: usize| format!("memory/notes/n{i:04}.md");
    for i in 0..600 {
        p.client_replica
            .write(&note(i), format!("note {i}\n").as_bytes());
    }
    p.sync().await;
    assert_eq!(p.client_replica.root(), p.server_replica.root());
    p.client_replica.write(&note(7), b"edited here\n");
    p.client_replica.write(&note(600), b"a new note\n");
    p.server_replica.write(&note(420), b"edited there\n");
    p.server_replica.delete(&note(99));
    let report = p.sync().await;
    assert!(!report.in_sync);
    assert_eq!(p.server_replica.read(&note(7)).unwrap(), b"edited here\n");
    assert_eq!(p.server_replica.read(&note(600)).unwrap(), b"a new note\n");
    assert_eq!(
        p.client_replica.read(&note(420)).unwrap(),
        b"edited there\n"
    );
    assert_eq!(p.client_replica.read(&note(99)), None);
    assert_eq!(p.client_replica.root(), p.server_replica.root());
}

/// A name that is a tombstone and a directory at once (the file `notes` was deleted, then
/// `notes/b.md` created): the descent compares each with its own kind, so the directory is
/// walked and its file arrives.
#[tokio::test]
async fn a_name_that_is_a_tombstone_and_a_directory_syncs_both() {
    let p = pair().await;
    p.server_replica.write("notes", b"a file first\n");
    p.server_replica.delete("notes");
    p.server_replica.write("notes/b.md", b"then a directory\n");
    p.session(SessionMode::Pull, false).await.unwrap();
    assert_eq!(
        p.client_replica.read("notes/b.md").unwrap(),
        b"then a directory\n"
    );
    assert_eq!(p.client_replica.root(), p.server_replica.root());
}

#[tokio::test]
async fn push_only_and_pull_only_move_one_way() {
    let p = pair().await;
    p.client_replica.write("mine.md", b"client");
    p.server_replica.write("theirs.md", b"server");
    p.session(SessionMode::Push, false).await.unwrap();
    assert!(p.server_replica.read("mine.md").is_some());
    assert!(p.client_replica.read("theirs.md").is_none());
    p.session(SessionMode::Pull, false).await.unwrap();
    assert!(p.client_replica.read("theirs.md").is_some());
}

#[tokio::test]
async fn dry_run_plans_both_ways_and_changes_nothing() {
    let p = pair().await;
    p.client_replica.write("mine.md", b"client");
    p.server_replica.write("theirs.md", b"server");
    let (before_c, before_s) = (p.client_replica.root(), p.server_replica.root());
    let report = p.session(SessionMode::Sync, true).await.unwrap();
    assert_eq!(report.pulled.len(), 1);
    assert_eq!(report.pushed.len(), 1);
    assert_eq!(report.counters.chunks_received, 0);
    assert_eq!(
        (p.client_replica.root(), p.server_replica.root()),
        (before_c, before_s)
    );
}

#[tokio::test]
async fn a_hundred_mib_file_crosses_verified_and_its_edit_moves_one_chunk() {
    let p = pair().await;
    let mut big = pseudo_random(100 * 1024 * 1024, 42);
    p.server_replica.write("memory/big.bin", &big);
    let report = p.sync().await;
    assert_eq!(p.client_replica.read("memory/big.bin").unwrap(), big);
    let first = report.counters.chunk_bytes_received;
    assert_eq!(first, big.len() as u64);
    // Edit one byte in the middle: its chunk list travels elided (> 1024 chunks) and only the
    // changed chunk-tree nodes and chunks are fetched.
    big[50 * 1024 * 1024] ^= 0xff;
    p.server_replica.write("memory/big.bin", &big);
    let report = p.sync().await;
    assert_eq!(p.client_replica.read("memory/big.bin").unwrap(), big);
    assert!(
        report.counters.chunks_received <= 2,
        "{:?}",
        report.counters
    );
}

#[tokio::test]
async fn an_interrupted_pull_resumes_without_refetching() {
    let p = pair().await;
    for i in 0..40 {
        p.server_replica
            .write(&format!("memory/f{i}.bin"), &pseudo_random(100_000, i));
    }
    p.sync().await;
    let received = p.client_replica.chunks_received();
    // Pretend the client had kept the chunks of half of a new batch from an interrupted run.
    let fresh: Vec<Vec<u8>> = (100..110).map(|i| pseudo_random(100_000, i)).collect();
    let chunker = botsync_engine::Chunker::default();
    let mut remaining = 0;
    for (i, bytes) in fresh.iter().enumerate() {
        p.server_replica.write(&format!("memory/g{i}.bin"), bytes);
        let mut offset = 0;
        for c in chunker.chunk_reader(&bytes[..]).unwrap() {
            let chunk = &bytes[offset..offset + c.len as usize];
            offset += c.len as usize;
            if i < 5 {
                p.client_replica.put_chunk(&c.id, chunk).unwrap();
            } else {
                remaining += 1;
            }
        }
    }
    let kept = p.client_replica.chunks_received();
    let report = p.sync().await;
    assert_eq!(
        report.counters.chunks_received, remaining,
        "only the chunks not already kept"
    );
    assert_eq!(p.client_replica.chunks_received(), kept + remaining);
    assert!(received < kept);
    assert_eq!(p.client_replica.root(), p.server_replica.root());
}

/// A replica that misbehaves when asked for chunks: it corrupts them (a hostile peer), or no
/// longer has some (their file changed on disk while being sent).
struct Corrupting(TestReplica, Misbehaviour);

#[derive(Clone, Copy)]
enum Misbehaviour {
    Corrupt,
    Vanish(botsync_engine::Hash),
}

impl Replica for Corrupting {
    fn local_peer(&self) -> PeerId {
        self.0.local_peer()
    }
    fn refresh(&self) -> Result<Snapshot, ReplicaError> {
        self.0.refresh()
    }
    fn children(
        &self,
        d: &botsync_engine::RelPath,
    ) -> Result<Option<Vec<botsync_proto::messages::NodeChild>>, ReplicaError> {
        self.0.children(d)
    }
    fn paths_under(
        &self,
        d: &[botsync_engine::RelPath],
    ) -> Result<Vec<botsync_engine::RelPath>, ReplicaError> {
        self.0.paths_under(d)
    }
    fn entries(
        &self,
        p: &[botsync_engine::RelPath],
    ) -> Result<Vec<botsync_engine::FileEntry>, ReplicaError> {
        self.0.entries(p)
    }
    fn plan(
        &self,
        i: Vec<botsync_engine::FileEntry>,
    ) -> Result<Vec<botsync_engine::plan::PlanItem>, ReplicaError> {
        self.0.plan(i)
    }
    fn check_deletes(
        &self,
        i: &[botsync_engine::plan::PlanItem],
    ) -> Result<(), botsync_engine::guard::MassDelete> {
        self.0.check_deletes(i)
    }
    fn chunks_needed(
        &self,
        i: &[botsync_engine::plan::PlanItem],
    ) -> Result<Vec<botsync_engine::ChunkRef>, ReplicaError> {
        self.0.chunks_needed(i)
    }
    fn read_chunk(&self, id: &botsync_engine::Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        Ok(match self.1 {
            Misbehaviour::Vanish(gone) if gone == *id => None,
            Misbehaviour::Vanish(_) => self.0.read_chunk(id)?,
            Misbehaviour::Corrupt => self.0.read_chunk(id)?.map(|mut b| {
                b[0] ^= 1;
                b
            }),
        })
    }
    fn put_chunk(&self, id: &botsync_engine::Hash, b: &[u8]) -> Result<(), ReplicaError> {
        self.0.put_chunk(id, b)
    }
    fn apply(
        &self,
        i: Vec<botsync_engine::plan::PlanItem>,
        p: PeerId,
        h: botsync_proto::replica::HeldChunks,
    ) -> Result<Vec<botsync_engine::plan::ItemReport>, ReplicaError> {
        self.0.apply(i, p, h)
    }
    fn record_peer(
        &self,
        p: PeerId,
        r: botsync_engine::Hash,
        e: &[botsync_engine::FileEntry],
    ) -> Result<(), ReplicaError> {
        self.0.record_peer(p, r, e)
    }
}

#[tokio::test]
async fn a_chunk_that_does_not_match_its_id_is_refused_and_nothing_is_written() {
    let p = pair_with(Arc::new(Corrupting(
        TestReplica::new(PeerId([0xdd; 32])),
        Misbehaviour::Corrupt,
    )))
    .await;
    p.server_replica.write("memory/a.md", b"the real content");
    let err = p.session(SessionMode::Pull, false).await.unwrap_err();
    assert_eq!(err.close_code(), CloseCode::BadChunk, "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(p.client_replica.read("memory/a.md"), None);
    assert_eq!(p.client_replica.chunks_received(), 0);
}

/// The connection ends with exactly `code` (loopback connections start with a congestion window
/// large enough that the close is never stuck behind MTU probes: see `docs/PROTOCOL.md`).
async fn expect_closed_with(conn: &quinn::Connection, code: CloseCode) {
    let reason = conn.closed().await;
    assert_eq!(CloseCode::of_error(&reason), Some(code), "{reason}");
}

#[tokio::test]
async fn hostile_and_broken_frames_are_refused_and_the_listener_keeps_serving() {
    let mut p = pair().await;
    p.server_replica.write("USER.md", b"still served");

    // Protocol version mismatch: an error message, then the version-mismatch close code.
    let (conn, mut send, mut recv) = p.raw().await;
    let mut hello = Hello::current("future", Default::default());
    (hello.protocol_min, hello.protocol_max) = (7, 9);
    hello.features = Features::NONE;
    write_frame(&mut send, &Message::Hello(hello))
        .await
        .unwrap();
    let reply = read_frame(&mut recv).await.unwrap();
    assert!(matches!(reply, Some(Message::Hello(_))));
    let reply = read_frame(&mut recv).await.unwrap();
    assert!(
        matches!(
            reply,
            Some(Message::Error {
                code: ErrorCode::VersionMismatch,
                ..
            })
        ),
        "{reply:?}"
    );
    expect_closed_with(&conn, CloseCode::VersionMismatch).await;
    assert!(
        p.served()
            .await
            .unwrap_err()
            .contains("no common protocol version")
    );

    // An oversized frame: refused on its length prefix.
    let (conn, mut send, _recv) = p.raw().await;
    send.write_all(&(64u32 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    expect_closed_with(&conn, CloseCode::FrameTooLarge).await;
    let refused = p.served().await.unwrap_err();
    assert!(refused.contains("exceeds the limit"), "{refused}");

    // A truncated frame: the stream ends inside it.
    let (conn, mut send, _recv) = p.raw().await;
    send.write_all(&[0, 0, 0, 10, 0, 1]).await.unwrap();
    send.finish().unwrap();
    expect_closed_with(&conn, CloseCode::BadMessage).await;
    let refused = p.served().await.unwrap_err();
    assert!(refused.contains("truncated"), "{refused}");

    // An unknown tag.
    let (conn, mut send, _recv) = p.raw().await;
    send.write_all(&[0, 0, 0, 1, 200]).await.unwrap();
    expect_closed_with(&conn, CloseCode::BadMessage).await;
    let refused = p.served().await.unwrap_err();
    assert!(refused.contains("unknown message tag"), "{refused}");

    // A message out of order: Summary before Hello.
    let (conn, mut send, _recv) = p.raw().await;
    let summary = Message::Summary {
        root: botsync_engine::Hash::ZERO,
        files: 0,
        mode: SessionMode::Sync,
        skipped: 0,
    };
    write_frame(&mut send, &summary).await.unwrap();
    expect_closed_with(&conn, CloseCode::ProtocolError).await;
    assert!(
        p.served()
            .await
            .unwrap_err()
            .contains("did not start with hello")
    );

    // After all that, a real peer still syncs.
    p.sync().await;
    assert_eq!(p.client_replica.read("USER.md").unwrap(), b"still served");
    assert!(p.served().await.is_ok());
}

#[tokio::test]
async fn a_file_that_changed_on_the_sender_is_skipped_and_reported_not_torn() {
    let changing = b"being rewritten while sent".to_vec();
    let gone = botsync_engine::Hash::of(&changing);
    let p = pair_with(Arc::new(Corrupting(
        TestReplica::new(PeerId([0xcc; 32])),
        Misbehaviour::Vanish(gone),
    )))
    .await;
    p.server_replica.write("memory/steady.md", b"steady");
    p.server_replica.write("memory/changing.md", &changing);
    let report = p.session(SessionMode::Pull, false).await.unwrap();
    let outcome = |path: &str| {
        report
            .pulled
            .iter()
            .find(|i| i.path.as_str() == path)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(
        outcome("memory/steady.md"),
        botsync_engine::plan::Outcome::Done
    );
    assert_eq!(
        outcome("memory/changing.md"),
        botsync_engine::plan::Outcome::MissingChunks
    );
    assert_eq!(
        p.client_replica.read("memory/steady.md").unwrap(),
        b"steady"
    );
    assert_eq!(
        p.client_replica.read("memory/changing.md"),
        None,
        "never written torn"
    );
}

/// One directory of 15,000 files with 240-byte names: its listing (about 4.3 MB) does not fit
/// one frame. With `LONG_LISTS` the responder sends it in parts and the pull takes every file;
/// a client without the feature (an older botsync) gets one line naming the directory. (The
/// count cap, 65,536 children, is split the same way: `messages/batch.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_longer_than_one_listing_syncs_in_parts() {
    let p = pair().await;
    let name = |f: usize| format!("memory/big/{f:0>240}.md");
    let files: Vec<(String, Vec<u8>)> =
        (0..15_000).map(|f| (name(f), b"same\n".to_vec())).collect();
    p.server_replica.write_many(&files);

    let mut old = SessionOptions::new(SessionMode::Pull, "client");
    old.features = Features::from_bits(Features::SUPPORTED.bits() & !Features::LONG_LISTS.bits());
    let err = p.session_with(old).await.unwrap_err().to_string();
    assert!(
        err.contains("directory \"memory/big\" has 15000 entries") && err.contains("split it"),
        "{err}"
    );

    let report = p.session(SessionMode::Pull, false).await.unwrap();
    assert_eq!(report.pulled.len(), 15_000);
    assert_eq!(p.client_replica.root(), p.server_replica.root());
    assert_eq!(p.client_replica.read(&name(14_999)).unwrap(), b"same\n");
}
