//! Feature `direct-offer`: a peer still at a root our tree had earlier gets what we changed
//! since, offered at once, without the Merkle descent or its entries; any other peer is walked
//! as before. Each story is told against a peer with the feature and, where it matters, one
//! without, and ends with both sides holding the same files.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use botsync_engine::PeerId;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::messages::{Features, SessionMode};
use botsync_proto::session::{SessionOptions, SessionReport};
use common::replica::TestReplica;
use common::{Endpoints, endpoints, run_session, serve_forever_offering};

struct Peers {
    ours: Arc<TestReplica>,
    theirs: Arc<TestReplica>,
    client: Endpoint,
    addr: SocketAddr,
    server_id: PeerId,
}

/// Two replicas, the listener offering `features`; our workspace holds 300 notes (a directory
/// large enough to be compared by buckets) and one sync made the peer equal to it.
async fn in_sync_offering(features: Features) -> Peers {
    let Endpoints {
        listener,
        addr,
        server_id,
        client,
        client_id,
    } = endpoints();
    let ours = Arc::new(TestReplica::new(client_id));
    let theirs = Arc::new(TestReplica::new(server_id));
    serve_forever_offering(listener, Arc::clone(&theirs), features, |_| {});
    let notes: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("memory/notes/{i:03}.md"),
                format!("# note {i}\n").into_bytes(),
            )
        })
        .collect();
    ours.write_many(&notes);
    ours.write("MEMORY.md", b"remember\n");
    let p = Peers {
        ours,
        theirs,
        client,
        addr,
        server_id,
    };
    // (Direct already with the feature: the empty peer is at the root our empty index had.)
    p.session(SessionMode::Sync).await;
    assert_eq!(p.ours.root(), p.theirs.root());
    p
}

impl Peers {
    async fn session(&self, mode: SessionMode) -> SessionReport {
        let opts = SessionOptions::new(mode, "client");
        run_session(&self.client, self.addr, self.server_id, &self.ours, &opts).await
    }

    fn edit(&self) {
        self.ours
            .write("memory/notes/007.md", b"# note 7, edited\n");
        self.ours
            .write("memory/notes/150.md", b"# note 150, edited\n");
        self.ours.write("memory/notes/new.md", b"# a new note\n");
        self.ours.delete("memory/notes/299.md");
    }

    fn assert_same_files(&self) {
        for path in [
            "memory/notes/007.md",
            "memory/notes/150.md",
            "memory/notes/new.md",
            "memory/notes/299.md",
            "memory/notes/000.md",
            "MEMORY.md",
        ] {
            assert_eq!(self.ours.read(path), self.theirs.read(path), "{path}");
        }
        assert_eq!(self.ours.root(), self.theirs.root());
    }
}

#[tokio::test]
async fn our_edits_reach_a_peer_still_at_our_last_root_without_a_descent() {
    let p = in_sync_offering(Features::SUPPORTED).await;
    p.edit();
    let report = p.session(SessionMode::Push).await;
    assert!(report.direct_offer, "{report:?}");
    // The summaries, then the offer: no level of the tree, no entries asked.
    assert_eq!(report.counters.round_trips, 2, "{:?}", report.counters);
    assert_eq!(report.pushed.len(), 4, "{:?}", report.pushed);
    assert!(report.pulled.is_empty());
    assert_eq!(
        p.theirs.read("memory/notes/new.md").unwrap(),
        b"# a new note\n"
    );
    assert_eq!(p.theirs.read("memory/notes/299.md"), None);
    p.assert_same_files();
    assert!(p.session(SessionMode::Sync).await.in_sync);

    // Again from the root the direct offer left both sides at, in a sync: the peer's entries
    // of the changed paths are asked (its versions there need not be older than ours), but
    // no level of the tree.
    p.ours.write("memory/notes/008.md", b"# note 8, edited\n");
    let again = p.session(SessionMode::Sync).await;
    assert!(again.direct_offer);
    assert_eq!(again.counters.round_trips, 3, "{:?}", again.counters);
    assert_eq!(again.pushed.len(), 1);
    assert_eq!(
        p.theirs.read("memory/notes/008.md").unwrap(),
        b"# note 8, edited\n"
    );
}

#[tokio::test]
async fn a_peer_without_the_feature_is_walked_and_ends_the_same() {
    let without = Features::from_bits(Features::SUPPORTED.bits() & !Features::DIRECT_OFFER.bits());
    let p = in_sync_offering(without).await;
    p.edit();
    let report = p.session(SessionMode::Sync).await;
    assert!(!report.direct_offer);
    assert!(report.counters.round_trips > 3, "{:?}", report.counters);
    assert_eq!(report.pushed.len(), 4, "{:?}", report.pushed);
    p.assert_same_files();
}

#[tokio::test]
async fn a_peer_that_changed_since_is_walked_and_both_sides_get_everything() {
    let p = in_sync_offering(Features::SUPPORTED).await;
    p.edit();
    p.theirs
        .write("memory/notes/042.md", b"# note 42, edited there\n");
    p.theirs.write("USER.md", b"name: sam\n");
    let report = p.session(SessionMode::Sync).await;
    assert!(!report.direct_offer, "its root was never ours");
    assert_eq!(report.pulled.len(), 2, "{:?}", report.pulled);
    assert_eq!(report.pushed.len(), 4, "{:?}", report.pushed);
    assert_eq!(
        p.ours.read("memory/notes/042.md").unwrap(),
        b"# note 42, edited there\n"
    );
    p.assert_same_files();
    assert_eq!(p.ours.read("USER.md"), p.theirs.read("USER.md"));
}

#[tokio::test]
async fn a_pull_from_a_peer_still_at_our_last_root_takes_nothing_and_sends_nothing() {
    let p = in_sync_offering(Features::SUPPORTED).await;
    let before = p.theirs.root();
    p.edit();
    let report = p.session(SessionMode::Pull).await;
    assert!(report.direct_offer);
    assert!(report.pulled.is_empty() && report.pushed.is_empty());
    assert_eq!(p.theirs.root(), before, "a pull changes nothing there");
    // Our edits are still ours, and go at the next push.
    assert_eq!(
        p.ours.read("memory/notes/007.md").unwrap(),
        b"# note 7, edited\n"
    );
    let push = p.session(SessionMode::Push).await;
    assert!(push.direct_offer);
    p.assert_same_files();
}

#[tokio::test]
async fn a_dry_run_against_a_peer_at_our_last_root_lists_the_push_and_changes_nothing() {
    let p = in_sync_offering(Features::SUPPORTED).await;
    let before = p.theirs.root();
    p.edit();
    let mut opts = SessionOptions::new(SessionMode::Sync, "client");
    opts.dry_run = true;
    let report = run_session(&p.client, p.addr, p.server_id, &p.ours, &opts).await;
    assert!(report.direct_offer);
    assert_eq!(report.pushed.len(), 4, "{:?}", report.pushed);
    assert_eq!(p.theirs.root(), before);
    assert_eq!(p.theirs.read("memory/notes/new.md"), None);
}
