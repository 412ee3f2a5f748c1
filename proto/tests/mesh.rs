//! Mesh config and parity over a real QUIC session between two test replicas (`common/replica.rs`):
//! what travels is stripped, each side keeps its own secrets, the session mode decides the
//! direction, and a parity check returns the peer's root, rules and stripped config.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use botsync_engine::PeerId;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::frame::{read_frame, write_frame};
use botsync_proto::messages::{ErrorCode, Hello, Message, SessionMode};
use botsync_proto::replica::Replica;
use botsync_proto::session::{SessionOptions, SessionReport};
use common::TestReplica;
use serde_json::{Value, json};

const PATH: &str = ".secrets/mesh-config.json";
const TOKEN_A: &str = "ntn_Zx8qL2mN9vB4cR7tY1wE6uI3oP5aS0dF";
const TOKEN_B: &str = "ntn_hT3kP9qW2zX7mV5nB8cL1dR4fG6jH0sA";

struct Pair {
    addr: SocketAddr,
    server_id: PeerId,
    client: Endpoint,
    ours: Arc<TestReplica>,
    theirs: Arc<TestReplica>,
}

async fn pair() -> Pair {
    let common::Endpoints {
        listener,
        addr,
        server_id,
        client,
        client_id,
    } = common::endpoints();
    let theirs = Arc::new(TestReplica::new(server_id));
    common::serve_forever(listener, Arc::clone(&theirs), |_| {});
    Pair {
        addr,
        server_id,
        client,
        ours: Arc::new(TestReplica::new(client_id)),
        theirs,
    }
}

impl Pair {
    async fn session(&self, opts: SessionOptions) -> SessionReport {
        common::run_session(&self.client, self.addr, self.server_id, &self.ours, &opts).await
    }

    async fn run(&self, mode: SessionMode) -> SessionReport {
        self.session(SessionOptions::new(mode, "client")).await
    }
}

fn config(token: &str, agents: Value) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "mesh_agents": agents,
        "github": { "org": "covaultxyz", "token": token },
        "notion": { "token_file": "/home/agent/.secrets/notion-token" }
    }))
    .unwrap()
}

fn read(r: &TestReplica) -> Value {
    serde_json::from_slice(&r.read_mesh(PATH).unwrap()).unwrap()
}

fn no_secrets(v: &Value) -> Value {
    let mut v = v.clone();
    v["github"]["token"] = json!("<secret>");
    v
}

impl Pair {
    /// A raw control stream to the listener after `Hello` and `Summary` in `mode` (both
    /// answered), for a hand-driven initiator.
    async fn raw(
        &self,
        mode: SessionMode,
    ) -> (
        botsync_proto::endpoint::Connection,
        quinn::SendStream,
        quinn::RecvStream,
    ) {
        let conn = self
            .client
            .connect(self.addr, self.server_id)
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = Hello::current("raw", Default::default());
        write_frame(&mut send, &Message::Hello(hello))
            .await
            .unwrap();
        let summary = Message::Summary {
            root: botsync_engine::Hash::ZERO,
            files: 0,
            mode,
            skipped: 0,
        };
        write_frame(&mut send, &summary).await.unwrap();
        assert!(matches!(
            read_frame(&mut recv).await.unwrap(),
            Some(Message::Hello(_))
        ));
        assert!(matches!(
            read_frame(&mut recv).await.unwrap(),
            Some(Message::Summary { .. })
        ));
        (conn, send, recv)
    }
}

#[tokio::test]
async fn a_sync_shares_the_config_and_each_side_keeps_its_own_secret() {
    let p = pair().await;
    p.ours
        .write_mesh(PATH, &config(TOKEN_A, json!({"a": {"ip": "100.1.1.1"}})));
    p.theirs
        .write_mesh(PATH, &config(TOKEN_B, json!({"b": {"ip": "100.1.1.2"}})));
    let report = p.run(SessionMode::Sync).await;
    assert_eq!(report.mesh.len(), 1, "{:?}", report.mesh);
    assert_eq!(report.mesh[0].keys, ["/mesh_agents/b"]);
    let (ours, theirs) = (read(&p.ours), read(&p.theirs));
    assert_eq!(ours["github"]["token"], TOKEN_A);
    assert_eq!(theirs["github"]["token"], TOKEN_B);
    assert_eq!(no_secrets(&ours), no_secrets(&theirs));
    assert_eq!(ours["mesh_agents"]["a"]["ip"], "100.1.1.1");
    assert_eq!(ours["mesh_agents"]["b"]["ip"], "100.1.1.2");
    // A second sync changes nothing.
    assert!(p.run(SessionMode::Sync).await.mesh.is_empty());
}

#[tokio::test]
async fn an_agent_removed_on_one_side_is_removed_on_the_other() {
    let p = pair().await;
    p.ours
        .write_mesh(PATH, &config(TOKEN_A, json!({"a": 1, "gone": 2})));
    p.theirs.write_mesh(PATH, &config(TOKEN_B, json!({"b": 3})));
    p.run(SessionMode::Sync).await;
    assert_eq!(
        read(&p.theirs)["mesh_agents"],
        json!({"b": 3, "a": 1, "gone": 2})
    );
    let mut ours = read(&p.ours);
    ours["mesh_agents"].as_object_mut().unwrap().remove("gone");
    p.ours
        .write_mesh(PATH, &serde_json::to_vec_pretty(&ours).unwrap());
    let report = p.run(SessionMode::Sync).await;
    assert!(
        report.mesh.is_empty(),
        "nothing changes here: {:?}",
        report.mesh
    );
    assert_eq!(read(&p.theirs)["mesh_agents"], json!({"b": 3, "a": 1}));
    assert_eq!(read(&p.ours)["mesh_agents"], json!({"a": 1, "b": 3}));
}

#[tokio::test]
async fn pull_takes_theirs_and_push_gives_ours_only() {
    let p = pair().await;
    p.ours.write_mesh(PATH, &config(TOKEN_A, json!({"a": 1})));
    p.theirs.write_mesh(PATH, &config(TOKEN_B, json!({"b": 2})));
    p.run(SessionMode::Pull).await;
    assert_eq!(read(&p.ours)["mesh_agents"], json!({"a": 1, "b": 2}));
    assert_eq!(read(&p.theirs)["mesh_agents"], json!({"b": 2}));
    p.ours
        .write_mesh(PATH, &config(TOKEN_A, json!({"a": 1, "b": 2, "c": 3})));
    p.run(SessionMode::Push).await;
    assert_eq!(
        read(&p.theirs)["mesh_agents"],
        json!({"b": 2, "c": 3, "a": 1})
    );
    assert_eq!(read(&p.theirs)["github"]["token"], TOKEN_B);
}

#[tokio::test]
async fn a_dry_run_moves_no_config_and_a_missing_file_is_created_without_secrets() {
    let p = pair().await;
    p.theirs.write_mesh(PATH, &config(TOKEN_B, json!({"b": 2})));
    let mut opts = SessionOptions::new(SessionMode::Sync, "client");
    opts.dry_run = true;
    assert!(p.session(opts).await.mesh.is_empty());
    assert!(p.ours.read_mesh(PATH).is_none());
    let report = p.run(SessionMode::Pull).await;
    assert!(report.mesh[0].created);
    let created = read(&p.ours);
    assert_eq!(created["github"]["token"], "<secret>");
    assert!(
        !String::from_utf8(p.ours.read_mesh(PATH).unwrap())
            .unwrap()
            .contains(TOKEN_B)
    );
}

#[tokio::test]
async fn parity_returns_the_peers_root_rules_and_stripped_config() {
    let p = pair().await;
    p.theirs.write("memory/a.md", b"hello");
    p.theirs.set_policy(&["include /memory/", "exclude *.tmp"]);
    p.theirs.write_mesh(PATH, &config(TOKEN_B, json!({"b": 2})));
    let mut opts = SessionOptions::new(SessionMode::Sync, "client");
    opts.dry_run = true;
    opts.parity = true;
    let report = p.session(opts).await;
    let info = report.parity.unwrap();
    assert_eq!(info.root, p.theirs.root());
    assert_eq!(info.files, 1);
    assert_eq!(info.policy.rules, ["include /memory/", "exclude *.tmp"]);
    assert_eq!(info.policy, p.theirs.policy().unwrap());
    assert_eq!(info.mesh.len(), 1);
    let text = String::from_utf8(info.mesh[0].content.clone()).unwrap();
    assert!(
        !text.contains(TOKEN_B) && text.contains("<secret>"),
        "{text}"
    );
    assert_eq!(report.pulled.len(), 1, "the dry run lists what differs");
    assert!(p.ours.files().is_empty(), "a parity check writes nothing");
}

#[tokio::test]
async fn mesh_config_pushed_in_a_pull_session_is_refused() {
    let p = pair().await;
    let (_conn, mut send, mut recv) = p.raw(SessionMode::Pull).await;
    // A pull: the responder volunteers its (empty) mesh config after its summary.
    assert_eq!(
        read_frame(&mut recv).await.unwrap(),
        Some(Message::MeshConfig { files: vec![] })
    );
    write_frame(&mut send, &Message::MeshConfig { files: vec![] })
        .await
        .unwrap();
    match read_frame(&mut recv).await.unwrap() {
        Some(Message::Error { code, message }) => {
            assert_eq!(code, ErrorCode::UnexpectedMessage);
            assert!(message.contains("Pull"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_secret_a_hostile_peer_pushes_is_stripped_before_it_is_written() {
    let p = pair().await;
    p.theirs.write_mesh(PATH, &config(TOKEN_B, json!({"b": 2})));
    let (_conn, mut send, mut recv) = p.raw(SessionMode::Push).await;
    // Not stripped: a token under a secret key, another under an innocent one.
    let unstripped = serde_json::to_vec(&json!({
        "mesh_agents": {"b": 2, "evil": {"note": TOKEN_A}},
        "github": {"org": "covaultxyz", "token": TOKEN_A}
    }))
    .unwrap();
    let push = Message::MeshConfig {
        files: vec![botsync_proto::messages::MeshFile {
            path: botsync_engine::RelPath::new(PATH).unwrap(),
            content: unstripped,
        }],
    };
    write_frame(&mut send, &push).await.unwrap();
    let Some(Message::MeshConfig { files }) = read_frame(&mut recv).await.unwrap() else {
        panic!("expected the responder's files after its merge");
    };
    let answered = String::from_utf8(files[0].content.clone()).unwrap();
    assert!(
        !answered.contains(TOKEN_A) && !answered.contains(TOKEN_B),
        "{answered}"
    );
    let written = String::from_utf8(p.theirs.read_mesh(PATH).unwrap()).unwrap();
    assert!(!written.contains(TOKEN_A), "{written}");
    assert!(written.contains(TOKEN_B), "its own token stays: {written}");
    assert_eq!(read(&p.theirs)["mesh_agents"]["evil"]["note"], "<secret>");
}
