//! Kept connections: one QUIC connection carries session after session in both directions of
//! change, and `Changed` notices reach the other side, as a daemon uses them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use botsync_engine::Hash;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::identity::Identity;
use botsync_proto::messages::SessionMode;
use botsync_proto::session::link::{LinkEvent, notify_changed, serve_connection};
use botsync_proto::session::server::ServeOptions;
use botsync_proto::session::{NoProgress, SessionOptions, client};
use botsync_proto::tls::AllowedPeers;
use common::TestReplica;
use tokio::sync::mpsc;

struct Kept {
    conn: quinn::Connection,
    server_id: botsync_engine::PeerId,
    client: Arc<TestReplica>,
    server: Arc<TestReplica>,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    _endpoints: (Endpoint, Arc<Endpoint>),
}

async fn kept_connection() -> Kept {
    let server_identity = Identity::generate().unwrap();
    let client_identity = Identity::generate().unwrap();
    let (server_id, client_id) = (server_identity.peer_id(), client_identity.peer_id());
    let server_ep = Arc::new(
        Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            server_identity,
            [client_id].into_iter().collect::<AllowedPeers>(),
        )
        .unwrap(),
    );
    let addr = server_ep.local_addr().unwrap();
    let client_ep = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        client_identity,
        AllowedPeers::new(),
    )
    .unwrap();
    let server = Arc::new(TestReplica::new(server_id));
    let (tx, events) = mpsc::unbounded_channel();
    let (ep, replica) = (Arc::clone(&server_ep), Arc::clone(&server));
    tokio::spawn(async move {
        let conn = ep.accept().await.unwrap().accept().await.unwrap();
        let (quinn, peer) = conn.into_parts();
        let opts = ServeOptions {
            name: "server".into(),
            streams: 4,
            budget: botsync_proto::budget::Budget::default(),
            features: botsync_proto::messages::Features::SUPPORTED,
        };
        let _ = serve_connection(quinn, peer, replica, opts, tx).await;
    });
    let conn = client_ep.connect(addr, server_id).await.unwrap();
    Kept {
        conn: conn.quinn().clone(),
        server_id,
        client: Arc::new(TestReplica::new(client_id)),
        server,
        events,
        _endpoints: (client_ep, server_ep),
    }
}

impl Kept {
    async fn session(&self, mode: SessionMode) -> botsync_proto::session::SessionReport {
        let opts = SessionOptions::new(mode, "client");
        client::run(
            &self.conn,
            self.server_id,
            Arc::clone(&self.client),
            &opts,
            Arc::new(NoProgress),
        )
        .await
        .unwrap()
    }

    async fn next_event(&mut self) -> LinkEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("no link event within 10 s")
            .expect("link closed")
    }
}

#[tokio::test]
async fn one_connection_carries_pull_push_and_noop_sessions_in_turn() {
    let mut k = kept_connection().await;
    k.server.write("memory/from-server.md", b"server note\n");
    let pulled = k.session(SessionMode::Pull).await;
    assert_eq!(pulled.pulled.len(), 1);
    assert_eq!(
        k.client.read("memory/from-server.md").as_deref(),
        Some(&b"server note\n"[..])
    );
    assert!(matches!(k.next_event().await, LinkEvent::Served { .. }));

    k.client.write("memory/from-client.md", b"client note\n");
    let pushed = k.session(SessionMode::Push).await;
    assert_eq!(pushed.pushed.len(), 1);
    let LinkEvent::Served { report, .. } = k.next_event().await else {
        panic!("expected the push to be reported as served");
    };
    assert_eq!(report.applied.len(), 1);
    assert_eq!(
        k.server.read("memory/from-client.md").as_deref(),
        Some(&b"client note\n"[..])
    );

    // The third session on the same connection finds nothing to do in one round trip.
    let noop = k.session(SessionMode::Sync).await;
    assert!(noop.in_sync);
    assert_eq!(noop.counters.round_trips, 1);
    assert_eq!(k.client.root(), k.server.root());
}

#[tokio::test]
async fn changed_notices_reach_the_other_side() {
    let mut k = kept_connection().await;
    let root = Hash::of(b"a new root");
    notify_changed(&k.conn, root).await.unwrap();
    match k.next_event().await {
        LinkEvent::Changed { root: got, .. } => assert_eq!(got, root),
        other => panic!("expected a changed notice, got {other:?}"),
    }
    // A session after a notice still works on the same connection.
    assert!(k.session(SessionMode::Sync).await.in_sync);
}
