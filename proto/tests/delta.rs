//! An edited note travels as a delta against the version the peer already holds (feature
//! `delta`), in either direction, and whole (zstd) when either side does not offer the feature.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use botsync_engine::PeerId;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::messages::{Features, SessionMode};
use botsync_proto::session::{SessionOptions, SessionReport};
use common::TestReplica;

/// The client's and the listener's replicas, and a session runner.
struct Peers {
    dialer: Endpoint,
    addr: SocketAddr,
    server_id: PeerId,
    client: Arc<TestReplica>,
    server: Arc<TestReplica>,
}

impl Peers {
    /// The listener offers `server_features`.
    fn new(server_features: Features) -> Peers {
        let common::Endpoints {
            listener,
            addr,
            server_id,
            client: dialer,
            client_id,
        } = common::endpoints();
        let server = Arc::new(TestReplica::new(server_id));
        let client = Arc::new(TestReplica::new(client_id));
        common::serve_forever_offering(listener, Arc::clone(&server), server_features, |_| {});
        Peers {
            dialer,
            addr,
            server_id,
            client,
            server,
        }
    }

    /// One session in `mode`, the client offering `features`.
    async fn session(&self, mode: SessionMode, features: Features) -> SessionReport {
        let mut opts = SessionOptions::new(mode, "client");
        opts.features = features;
        common::run_session(&self.dialer, self.addr, self.server_id, &self.client, &opts).await
    }
}

fn without_delta() -> Features {
    Features::from_bits(Features::SUPPORTED.bits() & !Features::DELTA.bits())
}

/// A 16 KB note of prose-like lines (one chunk), compressible about as real notes are.
fn note(seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "agent", "memory", "user", "prefers", "short", "answers", "the", "tests", "failed",
        "because", "config", "was", "stale", "remember", "to", "check",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    while out.len() < 16_000 {
        out.extend_from_slice(b"- ");
        for _ in 0..10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(WORDS[(x >> 60) as usize].as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(format!("{}\n", x % 100_000).as_bytes());
    }
    out
}

/// `old` with one line in the middle rewritten and a line appended, as an editing agent does.
fn edited(old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    let middle = new.len() / 2;
    new.splice(
        middle..middle + 40,
        b"a sentence written in this session".iter().copied(),
    );
    new.extend_from_slice(b"- [ ] follow up on the failing tests\n");
    new
}

const PATH: &str = "memory/notes/plan.md";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_note_is_pulled_as_a_small_delta_against_the_version_we_hold() {
    let p = Peers::new(Features::SUPPORTED);
    let old = note(1);
    p.server.write(PATH, &old);
    p.session(SessionMode::Sync, Features::SUPPORTED).await;
    assert_eq!(p.client.read(PATH).unwrap(), old);

    let new = edited(&old);
    p.server.write(PATH, &new);
    let report = p.session(SessionMode::Sync, Features::SUPPORTED).await;
    assert_eq!(p.client.read(PATH).unwrap(), new);
    assert_eq!(report.counters.chunk_bytes_received, new.len() as u64);
    let wire = report.counters.chunk_wire_bytes_received;
    assert!(
        wire * 20 < new.len() as u64,
        "{wire} bytes for {}",
        new.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_note_is_pushed_as_a_delta_and_arrives_intact() {
    let p = Peers::new(Features::SUPPORTED);
    let old = note(2);
    p.client.write(PATH, &old);
    p.session(SessionMode::Push, Features::SUPPORTED).await;
    assert_eq!(p.server.read(PATH).unwrap(), old);

    // Edited twice: each push is against what the listener took last time.
    let once = edited(&old);
    p.client.write(PATH, &once);
    let report = p.session(SessionMode::Push, Features::SUPPORTED).await;
    assert_eq!(p.server.read(PATH).unwrap(), once);
    assert_eq!(report.bytes_sent, once.len() as u64);
    let twice = edited(&once);
    p.client.write(PATH, &twice);
    p.session(SessionMode::Push, Features::SUPPORTED).await;
    assert_eq!(p.server.read(PATH).unwrap(), twice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_delta_on_either_side_an_edited_note_travels_whole() {
    for (client_offers, server_offers) in [
        (without_delta(), Features::SUPPORTED),
        (Features::SUPPORTED, without_delta()),
    ] {
        let p = Peers::new(server_offers);
        let old = note(3);
        p.server.write(PATH, &old);
        p.session(SessionMode::Sync, client_offers).await;

        let new = edited(&old);
        p.server.write(PATH, &new);
        let report = p.session(SessionMode::Sync, client_offers).await;
        assert_eq!(p.client.read(PATH).unwrap(), new);
        // Whole, zstd-compressed: prose shrinks a few times, not a hundredfold.
        let wire = report.counters.chunk_wire_bytes_received;
        let whole = zstd::bulk::compress(&new, 3).unwrap().len() as u64;
        assert_eq!(
            wire, whole,
            "client {client_offers:?}, server {server_offers:?}"
        );

        // And a push the other way, fetched by the listener, arrives intact.
        let newer = edited(&new);
        p.client.write(PATH, &newer);
        p.session(SessionMode::Push, client_offers).await;
        assert_eq!(p.server.read(PATH).unwrap(), newer);
    }
}
