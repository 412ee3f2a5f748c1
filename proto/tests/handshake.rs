//! The handshake, told as the operator's story: two machines that know each other's ids connect;
//! anyone else (a stranger, a wrong address, a thief holding a copied certificate) is turned away
//! with an error that says what happened, and the listener keeps serving its real peers.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use botsync_engine::PeerId;
use botsync_engine::peer::ParsePeerIdError;
use botsync_proto::close::CloseCode;
use botsync_proto::endpoint::{AcceptError, ConnectError, Connection, Endpoint, EndpointOptions};
use botsync_proto::identity::Identity;
use botsync_proto::tls::{
    ALPN, AllowedPeers, PinnedClientVerifier, PinnedServerVerifier, VerdictSlot, provider,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

/// One botsync machine in a test: an endpoint on 127.0.0.1 with a fresh identity.
struct Machine {
    endpoint: Endpoint,
}

impl Machine {
    fn new() -> Machine {
        Machine::with_options(EndpointOptions::default())
    }

    fn with_options(options: EndpointOptions) -> Machine {
        let identity = Identity::generate().unwrap();
        let endpoint =
            Endpoint::bind_with(localhost(), identity, AllowedPeers::new(), options).unwrap();
        Machine { endpoint }
    }

    fn id(&self) -> PeerId {
        self.endpoint.peer_id()
    }

    fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap()
    }

    /// `botsync add`: allow `other` to connect to us.
    fn trust(&self, other: &Machine) {
        self.endpoint.allowed().insert(other.id());
    }

    async fn dial(&self, other: &Machine) -> Result<Connection, ConnectError> {
        self.endpoint.connect(other.addr(), other.id()).await
    }

    async fn accept_one(&self) -> Result<Connection, AcceptError> {
        self.endpoint.accept().await.unwrap().accept().await
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Both sides of one connection attempt: the listener's accept runs in a task.
async fn attempt(
    dialer: &Machine,
    listener: &Arc<Machine>,
) -> (
    Result<Connection, ConnectError>,
    Result<Connection, AcceptError>,
) {
    let l = listener.clone();
    let accepting: JoinHandle<_> = tokio::spawn(async move { l.accept_one().await });
    let dialed = dialer.dial(listener).await;
    (dialed, accepting.await.unwrap())
}

#[tokio::test]
async fn two_peers_that_trust_each_other_connect_and_talk() {
    let (laptop, server) = (Machine::new(), Arc::new(Machine::new()));
    laptop.trust(&server);
    server.trust(&laptop);

    let (dialed, accepted) = attempt(&laptop, &server).await;
    let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
    assert_eq!(dialed.peer_id(), server.id());
    assert_eq!(accepted.peer_id(), laptop.id());
    assert_eq!(
        botsync_proto::tls::remote_peer_id(&dialed).unwrap(),
        server.id()
    );

    let echo = tokio::spawn(async move {
        let (mut send, mut recv) = accepted.accept_bi().await.unwrap();
        let got = recv.read_to_end(1024).await.unwrap();
        send.write_all(&got).await.unwrap();
        send.finish().unwrap();
        accepted
    });
    let (mut send, mut recv) = dialed.open_bi().await.unwrap();
    send.write_all(b"hello from the laptop").await.unwrap();
    send.finish().unwrap();
    assert_eq!(
        recv.read_to_end(1024).await.unwrap(),
        b"hello from the laptop"
    );

    let accepted = echo.await.unwrap();
    dialed.close(CloseCode::Done);
    let reason = accepted.closed().await;
    assert_eq!(CloseCode::of_error(&reason), Some(CloseCode::Done));
}

#[tokio::test]
async fn a_stranger_is_refused_and_the_listener_keeps_serving_its_peers() {
    let (friend, stranger, server) = (Machine::new(), Machine::new(), Arc::new(Machine::new()));
    friend.trust(&server);
    stranger.trust(&server);
    server.trust(&friend);

    let (dialed, accepted) = attempt(&stranger, &server).await;
    match dialed.unwrap_err() {
        ConnectError::RefusedByPeer { peer, ours, .. } => {
            assert_eq!((peer, ours), (server.id(), stranger.id()));
        }
        other => panic!("stranger should be told it was refused, got: {other}"),
    }
    let err = accepted.unwrap_err();
    assert!(
        matches!(err, AcceptError::UnknownPeer { presented, .. } if presented == stranger.id()),
        "{err}"
    );
    assert!(
        err.to_string().contains("which is not in peers.json"),
        "{err}"
    );
    assert!(
        err.to_string().contains(&stranger.id().to_copy_safe()),
        "{err}"
    );

    let (dialed, accepted) = attempt(&friend, &server).await;
    assert_eq!(dialed.unwrap().peer_id(), server.id());
    assert_eq!(accepted.unwrap().peer_id(), friend.id());
}

#[tokio::test]
async fn removing_a_peer_refuses_its_next_handshake() {
    let (laptop, server) = (Machine::new(), Arc::new(Machine::new()));
    laptop.trust(&server);
    server.trust(&laptop);
    let (dialed, accepted) = attempt(&laptop, &server).await;
    assert!(dialed.is_ok() && accepted.is_ok());

    server.endpoint.allowed().remove(&laptop.id());
    let (dialed, accepted) = attempt(&laptop, &server).await;
    assert!(matches!(dialed, Err(ConnectError::RefusedByPeer { .. })));
    assert!(matches!(accepted, Err(AcceptError::UnknownPeer { .. })));
}

#[tokio::test]
async fn dialing_an_address_that_answers_with_another_id_is_refused() {
    let (laptop, server, expected) = (Machine::new(), Arc::new(Machine::new()), Machine::new());
    server.trust(&laptop);

    let l = server.clone();
    let accepting = tokio::spawn(async move { l.accept_one().await });
    let err = laptop
        .endpoint
        .connect(server.addr(), expected.id())
        .await
        .unwrap_err();
    match &err {
        ConnectError::UnexpectedPeer {
            presented,
            expected: wanted,
            ..
        } => {
            assert_eq!((*presented, *wanted), (server.id(), expected.id()));
        }
        other => panic!("expected UnexpectedPeer, got: {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!("presented id {}", server.id().to_copy_safe())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "not the expected {}",
            expected.id().to_copy_safe()
        )),
        "{text}"
    );
    assert!(
        accepting.await.unwrap().is_err(),
        "the listener must not get a connection"
    );
}

#[tokio::test]
async fn a_client_holding_a_stolen_certificate_but_not_its_key_is_refused() {
    let (victim, server) = (Machine::new(), Arc::new(Machine::new()));
    server.trust(&victim);
    let thief = quinn::Endpoint::client(localhost()).unwrap();
    let stolen = stolen_certified_key(&victim);

    let slot = VerdictSlot::default();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(server.id(), slot)))
        .with_client_cert_resolver(Arc::new(StolenCert(stolen)));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));

    let l = server.clone();
    let accepting = tokio::spawn(async move { l.accept_one().await });
    let thief_side = async {
        let conn = thief
            .connect_with(config, server.addr(), "botsync")
            .unwrap()
            .await?;
        // The thief's handshake "completes" locally; the listener's verdict arrives as a close.
        Err::<(), _>(conn.closed().await)
    };
    let thief_result = thief_side.await;
    let err = accepting.await.unwrap().unwrap_err();
    assert!(
        matches!(err, AcceptError::Impersonation { claimed, .. } if claimed == victim.id()),
        "{err}"
    );
    assert!(
        err.to_string().contains("could not prove it holds its key"),
        "{err}"
    );
    assert!(thief_result.is_err());
}

#[tokio::test]
async fn a_server_holding_a_stolen_certificate_but_not_its_key_is_refused() {
    let (victim, laptop) = (Machine::new(), Machine::new());
    laptop.trust(&victim);
    let allowed: AllowedPeers = [laptop.id()].into_iter().collect();
    let stolen = stolen_certified_key(&victim);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(PinnedClientVerifier::new(
            allowed,
            VerdictSlot::default(),
        )))
        .with_cert_resolver(Arc::new(StolenCert(stolen)));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    let thief = quinn::Endpoint::server(config, localhost()).unwrap();
    let thief_addr = thief.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let incoming = thief.accept().await.unwrap();
        incoming.await.is_err()
    });

    let err = laptop
        .endpoint
        .connect(thief_addr, victim.id())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::Impersonation { claimed, .. } if claimed == victim.id()),
        "{err}"
    );
    assert!(
        serving.await.unwrap(),
        "the thief must not get a connection"
    );
}

#[tokio::test]
async fn a_peer_that_never_answers_times_out_with_advice() {
    let silent = std::net::UdpSocket::bind(localhost()).unwrap();
    let options = EndpointOptions {
        connect_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let laptop = Machine::with_options(options);
    let nobody = Identity::generate().unwrap().peer_id();
    let err = laptop
        .endpoint
        .connect(silent.local_addr().unwrap(), nobody)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::Timeout { peer, .. } if peer == nobody),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("no answer from peer {nobody} at ")),
        "{text}"
    );
    assert!(
        text.contains("within 1 s: is botsync serve running there"),
        "{text}"
    );
}

#[test]
fn a_mistyped_copy_safe_id_is_rejected() {
    let id = Identity::generate().unwrap().peer_id();
    let good = id.to_copy_safe();
    assert_eq!(PeerId::from_str(&good), Ok(id));
    // Change the first character to another letter of the alphabet: a one-character typo.
    let first = good.as_bytes()[0];
    let typo_char = if first == b'A' { 'B' } else { 'A' };
    let typo = format!("{typo_char}{}", &good[1..]);
    assert!(matches!(
        PeerId::from_str(&typo),
        Err(ParsePeerIdError::BadCheck { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mib_crosses_parallel_streams_intact() {
    const STREAMS: u64 = 8;
    const PER_STREAM: u64 = 100 * 1024 * 1024 / STREAMS;
    let (laptop, server) = (Machine::new(), Arc::new(Machine::new()));
    laptop.trust(&server);
    server.trust(&laptop);
    let (dialed, accepted) = attempt(&laptop, &server).await;
    let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());

    // Receiver: half the streams are uni (their hash comes back through the task's result), half
    // are bi (the receiver writes its hash back on the stream itself).
    // Uni and bi streams are accepted by two independent loops: accepting them one kind after
    // the other can deadlock, when data on not-yet-accepted bi streams fills the connection's
    // flow-control window before the last uni stream's first byte could be sent.
    let bi_conn = accepted.clone();
    tokio::spawn(async move {
        for _ in 0..STREAMS / 2 {
            let (mut send, mut recv) = bi_conn.accept_bi().await.unwrap();
            tokio::spawn(async move {
                let (index, hash, _) = hash_stream(&mut recv).await;
                send.write_all(&index.to_le_bytes()).await.unwrap();
                send.write_all(hash.as_bytes()).await.unwrap();
                send.finish().unwrap();
            });
        }
    });
    let receiver = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..STREAMS / 2 {
            let mut recv = accepted.accept_uni().await.unwrap();
            tasks.push(tokio::spawn(async move { hash_stream(&mut recv).await }));
        }
        let mut uni = Vec::new();
        for t in tasks {
            uni.push(t.await.unwrap());
        }
        (uni, accepted)
    });

    let mut senders = Vec::new();
    for index in 0..STREAMS {
        let conn = dialed.clone();
        senders.push(tokio::spawn(async move {
            if index % 2 == 0 {
                let mut send = conn.open_uni().await.unwrap();
                let sent = send_pattern(&mut send, index, PER_STREAM).await;
                (index, sent, None)
            } else {
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                let sent = send_pattern(&mut send, index, PER_STREAM).await;
                let reply = recv.read_to_end(40).await.unwrap();
                let echoed_index = u64::from_le_bytes(reply[..8].try_into().unwrap());
                let echoed: [u8; 32] = reply[8..].try_into().unwrap();
                assert_eq!(echoed_index, index);
                (index, sent, Some(blake3::Hash::from(echoed)))
            }
        }));
    }
    let mut sent = Vec::new();
    for s in senders {
        sent.push(s.await.unwrap());
    }
    let (uni, accepted) = receiver.await.unwrap();

    let mut total = 0;
    for (index, sent_hash, echoed) in sent {
        let received = match echoed {
            Some(hash) => hash,
            None => {
                let (_, hash, len) = uni.iter().find(|(i, _, _)| *i == index).unwrap();
                assert_eq!(*len, PER_STREAM);
                *hash
            }
        };
        assert_eq!(received, sent_hash, "stream {index} arrived altered");
        total += PER_STREAM;
    }
    assert_eq!(total, 100 * 1024 * 1024);
    dialed.close(CloseCode::Done);
    drop(accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_on_one_machine_outgrow_the_tailscale_packet_size() {
    const LEN: u64 = 16 * 1024 * 1024;
    let (laptop, server) = (Machine::new(), Arc::new(Machine::new()));
    laptop.trust(&server);
    server.trust(&laptop);
    let (dialed, accepted) = attempt(&laptop, &server).await;
    let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());

    // A bulk transfer each way, so both sides run MTU discovery while they have data to send.
    let echo = tokio::spawn(async move {
        let (mut send, mut recv) = accepted.accept_bi().await.unwrap();
        let (index, hash, len) = hash_stream(&mut recv).await;
        let sent = send_pattern(&mut send, index + 1, LEN).await;
        (hash, len, sent, accepted)
    });
    let (mut send, mut recv) = dialed.open_bi().await.unwrap();
    let sent = send_pattern(&mut send, 7, LEN).await;
    let (index, echoed_hash, echoed_len) = hash_stream(&mut recv).await;
    let (hash, len, echo_sent, accepted) = echo.await.unwrap();
    assert_eq!((hash, len), (sent, LEN));
    assert_eq!((index, echoed_hash, echoed_len), (8, echo_sent, LEN));

    let options = EndpointOptions::default();
    for (side, conn) in [("dialer", &dialed), ("listener", &accepted)] {
        let path = conn.stats().path;
        assert!(
            path.current_mtu > options.max_mtu && path.current_mtu <= options.loopback_max_mtu,
            "{side}: {path:?}"
        );
        assert_eq!(path.black_holes_detected, 0, "{side}: {path:?}");
    }
    dialed.close(CloseCode::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_exchange_between_loopback_peers_sends_only_its_own_bytes() {
    // Regression (BENCHMARKS.md bug 2): path MTU discovery towards a loopback peer searched from
    // 1200 to 65507 bytes with padded probes, ~720 kB each way on every connection, which buried
    // a no-op sync's few kB of protocol in the benchmarks' byte counts.
    const ROUNDS: usize = 10;
    const MESSAGE: usize = 256;
    let (laptop, server) = (Machine::new(), Arc::new(Machine::new()));
    laptop.trust(&server);
    server.trust(&laptop);
    let (dialed, accepted) = attempt(&laptop, &server).await;
    let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
    let echo = tokio::spawn(async move {
        let (mut send, mut recv) = accepted.accept_bi().await.unwrap();
        let mut message = [0u8; MESSAGE];
        for _ in 0..ROUNDS {
            recv.read_exact(&mut message).await.unwrap();
            send.write_all(&message).await.unwrap();
        }
        accepted
    });
    let (mut send, mut recv) = dialed.open_bi().await.unwrap();
    let mut reply = [0u8; MESSAGE];
    for round in 0..ROUNDS {
        let message = [u8::try_from(round).unwrap(); MESSAGE];
        send.write_all(&message).await.unwrap();
        recv.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, message);
    }
    let accepted = echo.await.unwrap();
    // A session lingers a little after its last message; discovery would run meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The handshake (two certificates) plus 2.5 kB of messages and their acknowledgements.
    const BOUND: u64 = 16 * 1024;
    for (side, conn) in [("dialer", &dialed), ("listener", &accepted)] {
        let stats = conn.stats();
        assert!(
            stats.udp_tx.bytes < BOUND,
            "{side} sent {} bytes in {} datagrams: {:?}",
            stats.udp_tx.bytes,
            stats.udp_tx.datagrams,
            stats.path
        );
        assert!(
            stats.path.current_mtu > EndpointOptions::default().max_mtu,
            "{side}"
        );
    }
    dialed.close(CloseCode::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_right_after_mtu_probes_reaches_a_loopback_peer_as_its_code() {
    // Regression: with ~60 KB MTU probes in flight, quinn's default initial window left no room
    // for the close frame; the dialer saw a stateless reset ("reset by peer") instead of the code.
    for _ in 0..5 {
        let (laptop, server) = (Machine::new(), Arc::new(Machine::new()));
        laptop.trust(&server);
        server.trust(&laptop);
        let (dialed, accepted) = attempt(&laptop, &server).await;
        let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
        let refuser = tokio::spawn(async move {
            let (mut send, mut recv) = accepted.accept_bi().await.unwrap();
            let mut first = [0u8; 4];
            recv.read_exact(&mut first).await.unwrap();
            send.write_all(b"out of order: expected a hello")
                .await
                .unwrap();
            accepted.close(CloseCode::ProtocolError);
            accepted
        });
        let (mut send, _recv) = dialed.open_bi().await.unwrap();
        send.write_all(b"nope").await.unwrap();
        let reason = dialed.closed().await;
        assert_eq!(
            CloseCode::of_error(&reason),
            Some(CloseCode::ProtocolError),
            "{reason}"
        );
        drop(refuser.await.unwrap());
    }
}

/// Send the stream index, then `len` pseudo-random bytes derived from it; return their BLAKE3.
async fn send_pattern(send: &mut quinn::SendStream, index: u64, len: u64) -> blake3::Hash {
    send.write_all(&index.to_le_bytes()).await.unwrap();
    let mut xof = blake3::Hasher::new()
        .update(&index.to_le_bytes())
        .finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        send.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    send.finish().unwrap();
    hasher.finalize()
}

/// Read a stream written by [`send_pattern`]: (index, BLAKE3 of the payload, payload length).
async fn hash_stream(recv: &mut quinn::RecvStream) -> (u64, blake3::Hash, u64) {
    let mut index = [0u8; 8];
    recv.read_exact(&mut index).await.unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.unwrap() {
        hasher.update(&chunk.bytes);
        len += chunk.bytes.len() as u64;
    }
    (u64::from_le_bytes(index), hasher.finalize(), len)
}

/// The victim's certificate paired with a fresh key of the same kind: what a thief who copied
/// `cert.pem` (but not `key.pem`) could present.
fn stolen_certified_key(victim: &Machine) -> Arc<CertifiedKey> {
    let thief_key = Identity::generate().unwrap().private_key_der();
    let signer = provider().key_provider.load_private_key(thief_key).unwrap();
    let cert = victim.endpoint.identity().cert_der().clone();
    Arc::new(CertifiedKey::new(vec![cert], signer))
}

#[derive(Debug)]
struct StolenCert(Arc<CertifiedKey>);

impl ResolvesClientCert for StolenCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for StolenCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
