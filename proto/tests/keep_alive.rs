//! A side busy with a long local step (an apply of a million entries, a slow disk) while its
//! peer waits must not be taken for a dead peer. The finding: settling two identical workspaces
//! of 10^6 files, the initiator applied for more than 600 s and the responder closed the
//! session on its request deadline ("no progress on its next request"), although the session
//! was making progress. With the feature `still-working` the busy side sends `Working` every
//! keep-alive interval; without it, the deadline closes the session as before.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use botsync_proto::budget::{Budget, Deadlines, Limits};
use botsync_proto::close::CloseCode;
use botsync_proto::messages::{Features, SessionMode};
use botsync_proto::session::server::{ServeOptions, serve};
use botsync_proto::session::{NoProgress, SessionError, SessionOptions, SessionReport, client};
use common::TestReplica;

/// Deadlines of a test: a peer silent for 1 s is dead; a busy one says so every 200 ms.
const SHORT: Deadlines = Deadlines {
    request: Duration::from_secs(1),
    keep_alive: Duration::from_millis(200),
    ..Deadlines::DEFAULT
};

/// How long the slow side's apply takes: three request deadlines.
const SLOW: Duration = Duration::from_secs(3);

/// Two peers offering `features`, both under [`SHORT`] deadlines; the server holds
/// `memory/server.md`, the client `memory/client.md`.
struct Peers {
    client_endpoint: botsync_proto::endpoint::Endpoint,
    addr: std::net::SocketAddr,
    server_id: botsync_engine::PeerId,
    server: Arc<TestReplica>,
    client: Arc<TestReplica>,
    features: Features,
}

impl Peers {
    fn new(features: Features) -> Peers {
        let ep = common::endpoints();
        let server = Arc::new(TestReplica::new(ep.server_id));
        server.write("memory/server.md", b"from the server\n");
        let client = Arc::new(TestReplica::new(ep.client_id));
        client.write("memory/client.md", b"from the client\n");
        let (listener, replica) = (ep.listener, Arc::clone(&server));
        // One session per connection; their outcomes are not needed: the client's tell.
        tokio::spawn(async move {
            while let Some(incoming) = listener.accept().await {
                let (quinn, peer) = incoming.accept().await.unwrap().into_parts();
                let mut opts = ServeOptions::new(
                    "server",
                    Budget::new(Limits {
                        deadlines: SHORT,
                        ..Limits::DEFAULT
                    }),
                );
                opts.features = features;
                let _ = serve(quinn, peer, Arc::clone(&replica), opts).await;
            }
        });
        Peers {
            client_endpoint: ep.client,
            addr: ep.addr,
            server_id: ep.server_id,
            server,
            client,
            features,
        }
    }

    /// One session of `mode` from the client.
    async fn session(&self, mode: SessionMode) -> Result<SessionReport, SessionError> {
        let conn = self
            .client_endpoint
            .connect(self.addr, self.server_id)
            .await
            .unwrap();
        let mut opts = SessionOptions::new(mode, "client");
        opts.deadlines = SHORT;
        opts.features = self.features;
        let result = client::run(
            &conn,
            self.server_id,
            Arc::clone(&self.client),
            &opts,
            Arc::new(NoProgress),
        )
        .await;
        conn.close(CloseCode::Done);
        result
    }
}

fn without_keep_alive() -> Features {
    Features::from_bits(Features::SUPPORTED.bits() & !Features::STILL_WORKING.bits())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiator_applying_longer_than_the_request_deadline_keeps_its_session() {
    let peers = Peers::new(Features::SUPPORTED);
    peers.client.slow_next_apply(SLOW);
    let result = peers.session(SessionMode::Pull).await;
    let report = result.expect("a busy initiator is not a dead one");
    assert_eq!(report.pulled.len(), 1, "{report:?}");
    assert_eq!(
        peers.client.read("memory/server.md").as_deref(),
        Some(&b"from the server\n"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_busy_with_a_long_apply_says_so_and_the_push_completes() {
    // The initiator waits for a push's results without a deadline of its own (only the
    // connection's idle timeout, which QUIC keep-alives hold off), so this checks that the
    // responder's `Working`s reach it and are taken for what they are, not for results.
    let peers = Peers::new(Features::SUPPORTED);
    peers.server.slow_next_apply(SLOW);
    let slow = peers.session(SessionMode::Push).await.unwrap();
    assert_eq!(slow.pushed.len(), 1, "{slow:?}");
    assert_eq!(
        peers.server.read("memory/client.md").as_deref(),
        Some(&b"from the client\n"[..])
    );
    peers
        .client
        .write("memory/client.md", b"edited by the client\n");
    let quick = peers.session(SessionMode::Push).await.unwrap();
    assert_eq!(quick.pushed.len(), 1, "{quick:?}");
    let workings = slow.counters.messages_received - quick.counters.messages_received;
    assert!(
        (5..=20).contains(&workings),
        "about one `Working` per 200 ms of a 3 s apply, got {workings}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_feature_a_long_apply_still_meets_the_deadline() {
    // The control case: the same slow pull between peers that do not both speak
    // `still-working` is closed by the responder's request deadline, so the tests above
    // measure the feature, not generous deadlines.
    let peers = Peers::new(without_keep_alive());
    peers.client.slow_next_apply(SLOW);
    let result = peers.session(SessionMode::Pull).await;
    let err = result.expect_err("the responder's request deadline closes the session");
    assert!(
        matches!(
            err,
            SessionError::Connection(_) | SessionError::Remote { .. } | SessionError::Frame(_)
        ) || err.to_string().contains("timeout"),
        "{err}"
    );
}
