//! Shared set-up of the session tests: two endpoints on 127.0.0.1 that trust each other, and a
//! listener answering one session per connection against a test replica (`replica.rs`: a
//! workspace in a temporary directory, its index in memory).

#![allow(dead_code)] // each test crate uses what it needs
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;

use botsync_engine::PeerId;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::identity::Identity;
use botsync_proto::messages::Features;
use botsync_proto::session::server::{ServeOptions, ServeReport, serve};
use botsync_proto::tls::AllowedPeers;

pub mod replica;

pub use replica::TestReplica;

/// A listener that trusts the dialer, and the dialer.
pub struct Endpoints {
    /// The listening endpoint (give it to [`serve_forever`]).
    pub listener: Endpoint,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its id.
    pub server_id: PeerId,
    /// The dialing endpoint.
    pub client: Endpoint,
    /// Its id.
    pub client_id: PeerId,
}

/// Fresh identities for both sides and their endpoints.
pub fn endpoints() -> Endpoints {
    let (server_identity, client_identity) =
        (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (server_id, client_id) = (server_identity.peer_id(), client_identity.peer_id());
    let listener = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        server_identity,
        [client_id].into_iter().collect::<AllowedPeers>(),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        client_identity,
        AllowedPeers::new(),
    )
    .unwrap();
    Endpoints {
        listener,
        addr,
        server_id,
        client,
        client_id,
    }
}

/// Answer one session per connection on `listener` against `replica`, forever; each report of a
/// session that ended well goes to `on_report`.
pub fn serve_forever(
    listener: Endpoint,
    replica: Arc<TestReplica>,
    on_report: impl Fn(ServeReport) + Send + 'static,
) {
    serve_forever_offering(listener, replica, Features::SUPPORTED, on_report);
}

/// [`serve_forever`], offering only `features` in the listener's `Hello` (an older peer).
pub fn serve_forever_offering(
    listener: Endpoint,
    replica: Arc<TestReplica>,
    features: Features,
    on_report: impl Fn(ServeReport) + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(incoming) = listener.accept().await {
            let Ok(conn) = incoming.accept().await else {
                continue;
            };
            let (quinn, peer) = conn.into_parts();
            let mut opts = ServeOptions::new("server", botsync_proto::budget::Budget::default());
            opts.features = features;
            if let Ok(report) = serve(quinn, peer, Arc::clone(&replica), opts).await {
                on_report(report);
            }
        }
    });
}

/// One whole session of `replica` over a fresh connection from `client` to the peer `server_id`
/// at `addr`, as the initiator with `opts`; the connection is closed after it.
pub async fn run_session(
    client: &Endpoint,
    addr: SocketAddr,
    server_id: PeerId,
    replica: &Arc<TestReplica>,
    opts: &botsync_proto::session::SessionOptions,
) -> botsync_proto::session::SessionReport {
    let conn = client.connect(addr, server_id).await.unwrap();
    let report = botsync_proto::session::client::run(
        &conn,
        server_id,
        Arc::clone(replica),
        opts,
        Arc::new(botsync_proto::session::NoProgress),
    )
    .await
    .unwrap();
    conn.close(botsync_proto::close::CloseCode::Done);
    report
}

/// `len` bytes of a fixed pseudo-random sequence (xorshift from `seed`): the same for a seed on
/// every run, and incompressible enough that zstd does not shrink them.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}
