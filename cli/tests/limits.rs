//! `limits` in `.botsync/config.json`: what a daemon lets its peers make it hold. A daemon set
//! to one connection per peer tells a second connection it is busy, in one line, and serves it
//! once the first has gone; settings that make no sense are refused before anything runs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use botsync_engine::PeerId;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::identity::Identity;
use botsync_proto::tls::AllowedPeers;
use common::{Peer, eventually, human};
use serde_json::json;

/// `p`'s own identity, read from its workspace (what its daemon would present).
fn identity_of(p: &Peer) -> Identity {
    let dir = p.path(".botsync/identity");
    let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let cert = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    Identity::from_pem(&key, &cert).unwrap()
}

#[test]
fn a_daemon_allowing_one_connection_per_peer_says_busy_to_a_second_and_serves_it_later() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    b.configure(json!({ "limits": { "connections_per_peer": 1 } }));
    let server = b.serve();
    b.add(&a, 7474);
    a.add(&b, server.port);
    a.write("memory/note.md", "hello\n");

    // alpha already holds a connection to beta, as a daemon's kept link does.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let beta: PeerId = b.id().parse().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let held = rt.block_on(async {
        let allowed = AllowedPeers::new();
        allowed.insert(beta);
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(identity_of(&a)),
            allowed,
        )
        .unwrap();
        let conn = ep.connect(addr, beta).await.unwrap();
        (ep, conn)
    });

    let (code, _, err) = human(&a, &["push", "beta"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("busy") && err.contains("retry"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Once that connection is gone, the push goes through.
    rt.block_on(async {
        held.1.into_parts().0.close(0u32.into(), b"done");
        held.0.wait_idle().await;
    });
    assert!(
        eventually(15, || a.run(&["push", "beta"]).0 == 0),
        "the push after the first connection closed"
    );
    assert_eq!(b.read("memory/note.md").unwrap(), b"hello\n");
}

#[test]
fn limits_that_make_no_sense_are_refused_in_one_line_naming_them() {
    let p = Peer::new("solo");
    p.configure(json!({ "limits": { "sessions": 0 } }));
    let (code, _, err) = human(&p, &["status"]);
    assert_ne!(code, 0);
    assert!(err.contains("limits.sessions is 0"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Each valid on its own, but a peer may not hold more than everyone together.
    p.configure(json!({ "limits": { "requests_per_peer": 64 } }));
    let out = p
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("limits.requests_per_peer (64) is above limits.requests (32)"),
        "{err}"
    );
}
