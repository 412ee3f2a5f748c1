//! Version counters: a peer must not be able to count changes in another peer's name, and no
//! counter may wrap or stick (`docs/PROTOCOL.md`, "Version vectors").

use std::sync::Arc;

use crate::common::TestReplica;
use botsync_engine::authority::MAX_OWN_COUNTER_LEAD;
use botsync_engine::plan::{Action, ItemReport, Outcome, PlanItem};
use botsync_engine::vector::MAX_VERSION_COUNTER;
use botsync_engine::{ChunkRef, FileEntry, Hash, PeerId, RelPath};
use botsync_proto::close::CloseCode;
use botsync_proto::messages::{Message, NodeChild, SessionMode, WireEntry};
use botsync_proto::replica::{Replica, ReplicaError, Snapshot};

use crate::harness::{Script, listen, listen_memory, tombstone, version_of};

/// Offer `entries` in a push session and return the results (`None`: the connection closed).
async fn offer(script: &mut Script, entries: Vec<WireEntry>) -> Option<Vec<ItemReport>> {
    script.open(SessionMode::Push).await;
    // Offers carry only paths whose entries were asked for (after a descent).
    let paths: Vec<String> = entries.iter().map(|w| w.file.path.to_string()).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    script.ask_entries(&paths).await;
    script
        .send_unchecked(&Message::Offer {
            entries,
            dry_run: false,
            last: true,
            force: false,
        })
        .await;
    match script.recv().await {
        Some(Message::OfferResult { items, .. }) => {
            Some(items.into_iter().map(ItemReport::from).collect())
        }
        _ => None,
    }
}

fn refused(items: &[ItemReport], path: &str, why: &str) -> bool {
    items.iter().any(|i| {
        i.path.as_str() == path
            && i.action == Action::Nothing
            && matches!(&i.outcome, Outcome::Failed { reason } if reason.contains(why))
    })
}

#[tokio::test]
async fn a_vector_with_our_counter_at_u64_max_is_refused_and_our_counter_keeps_counting() {
    let mut s = listen_memory().await;
    s.replica.write("memory/a.md", b"kept");
    let mut script = s.script().await;
    let forged = tombstone(
        "memory/a.md",
        s.client_id,
        &[(s.id, u64::MAX), (s.client_id, 1)],
    );
    let results = offer(&mut script, vec![forged]).await;
    assert_eq!(results, None, "the offer was answered");
    assert_eq!(script.closed().await, Some(CloseCode::BadMessage));
    let err = s.served().await.unwrap_err();
    assert!(err.contains("above the maximum"), "{err}");
    // The file stands and the next local change is counted.
    assert_eq!(s.replica.read("memory/a.md").unwrap(), b"kept");
    s.replica.write("memory/a.md", b"edited");
    assert_eq!(version_of(&*s.replica, "memory/a.md").counter(&s.id), 2);
}

#[tokio::test]
async fn a_version_counting_more_of_our_changes_than_we_made_is_refused() {
    let mut s = listen_memory().await;
    s.replica.write("memory/a.md", b"kept");
    let mut script = s.script().await;
    let claimed = 1 + MAX_OWN_COUNTER_LEAD + 1;
    let forged = tombstone(
        "memory/a.md",
        s.client_id,
        &[(s.id, claimed), (s.client_id, 2)],
    );
    let results = offer(&mut script, vec![forged]).await.unwrap();
    assert!(
        refused(&results, "memory/a.md", "changes by this peer"),
        "{results:?}"
    );
    assert_eq!(s.replica.read("memory/a.md").unwrap(), b"kept");
    assert_eq!(version_of(&*s.replica, "memory/a.md").counter(&s.id), 1);
    script.goodbye().await;
    s.served().await.unwrap();
    // Within the margin (a peer that lost its index restarts its counters), a version is
    // believed: here it deletes the file.
    let mut script = s.script().await;
    let relayed = tombstone(
        "memory/a.md",
        s.client_id,
        &[(s.id, 1 + MAX_OWN_COUNTER_LEAD), (s.client_id, 2)],
    );
    let results = offer(&mut script, vec![relayed]).await.unwrap();
    assert!(
        results.iter().all(|i| i.action == Action::Delete),
        "{results:?}"
    );
    assert_eq!(s.replica.read("memory/a.md"), None);
}

#[tokio::test]
async fn a_version_authored_in_our_name_without_counting_us_is_refused() {
    let s = listen_memory().await;
    let mut script = s.script().await;
    // "Changed by the server", with only the client's counter: the server never made it.
    let forged = tombstone("memory/b.md", s.id, &[(s.client_id, 5)]);
    let results = offer(&mut script, vec![forged]).await.unwrap();
    assert!(
        refused(&results, "memory/b.md", "counts no change by"),
        "{results:?}"
    );
    assert!(version_of(&*s.replica, "memory/b.md").is_empty());
}

/// A replica whose entries claim `counter` changes by `victim` (a hostile responder).
struct Forging {
    inner: TestReplica,
    victim: PeerId,
    counter: u64,
}

impl Replica for Forging {
    fn local_peer(&self) -> PeerId {
        self.inner.local_peer()
    }
    fn refresh(&self) -> Result<Snapshot, ReplicaError> {
        self.inner.refresh()
    }
    fn children(&self, d: &RelPath) -> Result<Option<Vec<NodeChild>>, ReplicaError> {
        self.inner.children(d)
    }
    fn paths_under(&self, d: &[RelPath]) -> Result<Vec<RelPath>, ReplicaError> {
        self.inner.paths_under(d)
    }
    fn entries(&self, p: &[RelPath]) -> Result<Vec<FileEntry>, ReplicaError> {
        let mut entries = self.inner.entries(p)?;
        for e in &mut entries {
            e.version = e
                .version
                .merge(&botsync_engine::VersionVector::from_pairs([(
                    self.victim,
                    self.counter,
                )]));
        }
        Ok(entries)
    }
    fn plan(&self, i: Vec<FileEntry>) -> Result<Vec<PlanItem>, ReplicaError> {
        self.inner.plan(i)
    }
    fn check_deletes(&self, i: &[PlanItem]) -> Result<(), botsync_engine::guard::MassDelete> {
        self.inner.check_deletes(i)
    }
    fn chunks_needed(&self, i: &[PlanItem]) -> Result<Vec<ChunkRef>, ReplicaError> {
        self.inner.chunks_needed(i)
    }
    fn read_chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        self.inner.read_chunk(id)
    }
    fn put_chunk(&self, id: &Hash, b: &[u8]) -> Result<(), ReplicaError> {
        self.inner.put_chunk(id, b)
    }
    fn apply(
        &self,
        i: Vec<PlanItem>,
        p: PeerId,
        h: botsync_proto::replica::HeldChunks,
    ) -> Result<Vec<ItemReport>, ReplicaError> {
        self.inner.apply(i, p, h)
    }
    fn record_peer(&self, p: PeerId, r: Hash, e: &[FileEntry]) -> Result<(), ReplicaError> {
        self.inner.record_peer(p, r, e)
    }
}

#[tokio::test]
async fn a_pulled_version_counting_our_changes_far_beyond_ours_is_refused() {
    let s = listen(|id, client| {
        Arc::new(Forging {
            inner: TestReplica::new(id),
            victim: client,
            counter: MAX_VERSION_COUNTER,
        })
    })
    .await;
    s.client_replica.write("memory/a.md", b"mine");
    s.replica.inner.write("memory/a.md", b"theirs");
    let report = s.session(SessionMode::Pull).await.unwrap();
    assert!(
        refused(&report.pulled, "memory/a.md", "changes by this peer"),
        "{report:?}"
    );
    assert_eq!(s.client_replica.read("memory/a.md").unwrap(), b"mine");
    let ours = version_of(&*s.client_replica, "memory/a.md");
    assert_eq!(ours.counter(&s.client_id), 1);
    assert_eq!(ours.counter(&s.id), 0);
}
