//! The state phase of a session (feature STATE, issue 14) between two test replicas
//! (`common/replica.rs`) over real QUIC on 127.0.0.1: records travel for the keys both sides share,
//! concurrent writes converge with the loser kept on both sides, tombstones travel, the session
//! mode is obeyed, and forged claims are refused.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use botsync_engine::{Hash, PeerId, VersionVector};
use botsync_proto::endpoint::Endpoint;
use botsync_proto::frame::{read_frame, write_frame};
use botsync_proto::messages::{ErrorCode, Hello, Message, SessionMode, WireState};
use botsync_proto::replica::{Replica, StateApplied};
use botsync_proto::session::{SessionOptions, SessionReport};
use common::TestReplica;

/// A listening replica ("server") and a dialing one ("client").
struct Pair {
    addr: SocketAddr,
    server_id: PeerId,
    endpoint: Endpoint,
    client: Arc<TestReplica>,
    server: Arc<TestReplica>,
    served: tokio::sync::mpsc::UnboundedReceiver<StateApplied>,
}

async fn pair() -> Pair {
    let common::Endpoints {
        listener,
        addr,
        server_id,
        client: endpoint,
        client_id,
    } = common::endpoints();
    let server = Arc::new(TestReplica::new(server_id));
    let (tx, served) = tokio::sync::mpsc::unbounded_channel();
    common::serve_forever(listener, Arc::clone(&server), move |report| {
        let _ = tx.send(report.state);
    });
    let client = Arc::new(TestReplica::new(client_id));
    for r in [&client, &server] {
        r.set_state_sync(&["memory:*", "notes:*"]);
    }
    Pair {
        addr,
        server_id,
        endpoint,
        client,
        server,
        served,
    }
}

impl Pair {
    async fn session(&mut self, mode: SessionMode) -> (SessionReport, StateApplied) {
        let opts = SessionOptions::new(mode, "client");
        let report = common::run_session(
            &self.endpoint,
            self.addr,
            self.server_id,
            &self.client,
            &opts,
        )
        .await;
        (report, self.served.recv().await.unwrap())
    }
}

impl Pair {
    /// A raw control stream to the server after `Hello` and `Summary` in `mode`, for a hostile
    /// initiator.
    async fn raw(
        &self,
        mode: SessionMode,
    ) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
        let conn = self
            .endpoint
            .connect(self.addr, self.server_id)
            .await
            .unwrap();
        let (mut send, mut recv) = conn.quinn().open_bi().await.unwrap();
        let summary = Message::Summary {
            root: Hash::ZERO,
            files: 0,
            mode,
            skipped: 0,
        };
        // Without the mesh config feature: its volunteered `MeshConfig` would come between
        // the responder's `Summary` and what these scripts read next.
        let mut hello = Hello::current("hostile", Default::default());
        hello.features = botsync_proto::messages::Features::from_bits(
            hello.features.bits() & !botsync_proto::messages::Features::MESH_CONFIG.bits(),
        );
        for m in [Message::Hello(hello), summary] {
            write_frame(&mut send, &m).await.unwrap();
        }
        for _ in 0..2 {
            read_frame(&mut recv).await.unwrap().unwrap();
        }
        (conn.quinn().clone(), send, recv)
    }
}

async fn next(recv: &mut quinn::RecvStream) -> Message {
    read_frame(recv).await.unwrap().unwrap()
}

fn value(r: &TestReplica, key: &str) -> Option<Vec<u8>> {
    r.state(key).filter(|r| !r.deleted).map(|r| r.value)
}

#[tokio::test]
async fn a_key_set_on_one_side_travels_both_ways_in_one_sync() {
    let mut p = pair().await;
    p.client.state_set("memory:editor", b"helix");
    p.server.state_set("notes:todo", b"milk");
    let (report, served) = p.session(SessionMode::Sync).await;
    assert!(report.state.exchanged);
    assert_eq!(report.state.pulled.changed, ["notes:todo"]);
    assert_eq!(report.state.pushed, 1);
    assert_eq!(served.changed, ["memory:editor"]);
    assert_eq!(value(&p.server, "memory:editor").unwrap(), b"helix");
    assert_eq!(value(&p.client, "notes:todo").unwrap(), b"milk");
    // In sync now: the next session moves nothing.
    let (again, served) = p.session(SessionMode::Sync).await;
    assert_eq!(again.state.pulled, StateApplied::default());
    assert_eq!(again.state.pushed, 0);
    assert_eq!(served, StateApplied::default());
}

#[tokio::test]
async fn concurrent_writes_converge_and_both_sides_keep_the_loser() {
    let mut p = pair().await;
    p.client.state_set("memory:x", b"from client");
    p.server.state_set("memory:x", b"from server");
    let (report, served) = p.session(SessionMode::Sync).await;
    let (c, s) = (
        p.client.state("memory:x").unwrap(),
        p.server.state("memory:x").unwrap(),
    );
    assert_eq!(c, s, "both sides hold the same record");
    assert_eq!(c.vector().counter(&p.server_id), 1);
    let losers_c = p.client.state_conflicts();
    let losers_s = p.server.state_conflicts();
    assert_eq!(losers_c.len(), 1);
    assert_eq!(
        losers_c, losers_s,
        "the same losing value is kept on both sides"
    );
    assert_ne!(losers_c[0].1.value, c.value);
    assert_eq!(
        report.state.pulled.conflicts.len() + served.conflicts.len(),
        2
    );
}

#[tokio::test]
async fn a_tombstone_travels_and_unshared_keys_stay_home() {
    let mut p = pair().await;
    p.client.state_set("memory:gone", b"soon");
    p.client.state_set("secret:token", b"hunter2");
    p.server.set_state_sync(&["memory:*", "secret:*"]);
    p.client.set_state_sync(&["memory:*"]);
    p.session(SessionMode::Sync).await;
    assert_eq!(value(&p.server, "memory:gone").unwrap(), b"soon");
    assert!(
        p.server.state("secret:token").is_none(),
        "a key outside the sender's state_sync never travels"
    );
    p.client.state_del("memory:gone");
    p.session(SessionMode::Sync).await;
    assert!(p.server.state("memory:gone").unwrap().deleted);
}

#[tokio::test]
async fn pull_only_and_push_only_move_state_one_way() {
    let mut p = pair().await;
    p.client.state_set("memory:mine", b"c");
    p.server.state_set("memory:theirs", b"s");
    p.session(SessionMode::Pull).await;
    assert_eq!(value(&p.client, "memory:theirs").unwrap(), b"s");
    assert!(p.server.state("memory:mine").is_none());
    p.server.state_set("memory:later", b"s2");
    p.session(SessionMode::Push).await;
    assert_eq!(value(&p.server, "memory:mine").unwrap(), b"c");
    assert!(p.client.state("memory:later").is_none());
}

#[tokio::test]
async fn without_state_sync_on_either_side_nothing_travels() {
    let mut p = pair().await;
    p.client.state_set("memory:x", b"1");
    p.server.set_state_sync(&[]);
    let (report, served) = p.session(SessionMode::Sync).await;
    assert!(report.state.exchanged);
    assert_eq!(report.state.pushed, 0);
    assert_eq!(served, StateApplied::default());
    assert!(p.server.state("memory:x").is_none());
    p.client.set_state_sync(&[]);
    let (report, _) = p.session(SessionMode::Sync).await;
    assert!(
        !report.state.exchanged,
        "an initiator without state_sync skips the phase"
    );
}

#[tokio::test]
async fn a_version_claiming_the_receivers_writes_is_refused_and_nothing_is_stored() {
    let mut p = pair().await;
    let me = p.client.local_peer();
    let (_conn, mut send, mut recv) = p.raw(SessionMode::Sync).await;
    let ask = Message::GetState {
        patterns: vec!["memory:*".into()],
        digest: Hash::ZERO,
    };
    write_frame(&mut send, &ask).await.unwrap();
    assert!(matches!(next(&mut recv).await, Message::GetState { .. }));
    assert!(matches!(
        next(&mut recv).await,
        Message::State { last: true, .. }
    ));
    let forged = WireState {
        key: "memory:x".into(),
        value: b"forged".to_vec(),
        deleted: false,
        // A million writes by the server it never made: enough to push its counter far ahead.
        version: VersionVector::from_pairs([(p.server_id, 1 << 20), (me, 1)]),
        author: me,
        agent: String::new(),
        at_ns: 1,
    };
    let push = Message::State {
        records: vec![forged],
        last: true,
    };
    write_frame(&mut send, &push).await.unwrap();
    let ack = next(&mut recv).await;
    assert_eq!(
        ack,
        Message::State {
            records: vec![],
            last: true
        }
    );
    write_frame(&mut send, &Message::Goodbye).await.unwrap();
    let served = p.served.recv().await.unwrap();
    assert_eq!(served.refused.len(), 1, "{served:?}");
    assert!(served.refused[0].contains("counts 1048576 writes by this peer"));
    assert!(p.server.state("memory:x").is_none());
}

#[tokio::test]
async fn state_pushed_in_a_pull_session_or_before_asking_is_refused() {
    let p = pair().await;
    let push = Message::State {
        records: vec![],
        last: true,
    };
    for (mode, ask_first) in [(SessionMode::Pull, true), (SessionMode::Sync, false)] {
        let (_conn, mut send, mut recv) = p.raw(mode).await;
        if ask_first {
            let ask = Message::GetState {
                patterns: vec!["memory:*".into()],
                digest: Hash::ZERO,
            };
            write_frame(&mut send, &ask).await.unwrap();
            next(&mut recv).await;
            next(&mut recv).await;
        }
        write_frame(&mut send, &push).await.unwrap();
        let reply = read_frame(&mut recv).await.unwrap();
        assert!(
            matches!(
                reply,
                Some(Message::Error {
                    code: ErrorCode::UnexpectedMessage,
                    ..
                })
            ),
            "{mode:?}: {reply:?}"
        );
    }
}

#[tokio::test]
async fn a_peer_without_the_state_feature_never_gets_state_messages_and_may_not_send_them() {
    let p = pair().await;
    let conn = p.endpoint.connect(p.addr, p.server_id).await.unwrap();
    let (mut send, mut recv) = conn.quinn().open_bi().await.unwrap();
    // An older peer: no STATE bit in its Hello.
    let mut hello = Hello::current("old", Default::default());
    hello.features = botsync_proto::messages::Features::ZSTD;
    let summary = Message::Summary {
        root: Hash::ZERO,
        files: 0,
        mode: SessionMode::Sync,
        skipped: 0,
    };
    for m in [Message::Hello(hello), summary] {
        write_frame(&mut send, &m).await.unwrap();
    }
    next(&mut recv).await;
    next(&mut recv).await;
    let ask = Message::GetState {
        patterns: vec!["memory:*".into()],
        digest: Hash::ZERO,
    };
    write_frame(&mut send, &ask).await.unwrap();
    let reply = read_frame(&mut recv).await.unwrap();
    assert!(
        matches!(
            reply,
            Some(Message::Error {
                code: ErrorCode::UnexpectedMessage,
                ..
            })
        ),
        "{reply:?}"
    );
}

#[tokio::test]
async fn an_unchanged_state_is_not_sent_again() {
    let mut p = pair().await;
    let big = vec![b'm'; 60_000];
    p.server.state_set("memory:big", &big);
    p.client.state_set("memory:small", b"s");
    let (first, _) = p.session(SessionMode::Sync).await;
    assert_eq!((first.state.received, first.state.pushed), (1, 1));
    assert_eq!(value(&p.client, "memory:big").unwrap(), big);
    // Equal digests on both sides: no record moves either way.
    let (report, served) = p.session(SessionMode::Sync).await;
    assert_eq!(
        report.state.received, 0,
        "the responder sent its records again"
    );
    assert_eq!(report.state.pushed, 0);
    assert_eq!(served, StateApplied::default());
    // One change on either side: the records move again, and converge.
    p.client.state_set("memory:small", b"s2");
    let (report, served) = p.session(SessionMode::Sync).await;
    assert_eq!(report.state.pushed, 1);
    assert_eq!(served.changed, ["memory:small"]);
}
