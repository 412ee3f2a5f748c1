//! Bulk throughput over loopback: botsync's QUIC endpoint against plain rustls over TCP.
//!
//! Both sides use botsync identities (Ed25519, TLS 1.3, pinned ids) so the only difference is the
//! transport. Each iteration moves 64 MiB as 64 KiB writes: over QUIC on 8 parallel
//! unidirectional streams of one connection, over TCP on one TLS stream. An iteration ends when
//! the receiver has every byte (QUIC: every stream finished; TCP: a one-byte acknowledgement).
//!
//! Variants: `quic_loopback_mtu` is what botsync ships for a loopback peer (65488-byte datagrams
//! from the first packet, no MTU discovery, segmentation offload off); `quic_tailscale_mtu` forces
//! the size every other peer reaches (1232 bytes, so packets fit Tailscale's 1280-byte tunnel) to
//! show what the cap costs on loopback.
//!
//! Run: `cargo bench -p botsync-benches --bench transport`. To compare other loopback bounds, add
//! them with `BOTSYNC_BENCH_MTUS=4096,16384` (variants `quic_mtu_N`); `BOTSYNC_BENCH_STATS=1`
//! prints each QUIC sender's path statistics (reached MTU, losses, black holes) when its variant
//! ends.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use botsync_proto::endpoint::{Connection, Endpoint, EndpointOptions};
use botsync_proto::identity::Identity;
use botsync_proto::tls::{self, AllowedPeers};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TOTAL: usize = 64 << 20;
const WRITE: usize = 64 << 10;
const STREAMS: usize = 8;

fn transport(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let payload: Arc<Vec<u8>> = Arc::new(pattern(WRITE));

    let mut group = c.benchmark_group("transport_64MiB");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));

    let tcp = rt.block_on(TcpPair::new());
    group.bench_function("tcp_tls13", |b| {
        b.iter(|| rt.block_on(tcp.transfer(&payload)));
    });

    for (name, loopback_max_mtu) in quic_variants() {
        let options = EndpointOptions {
            loopback_initial_mtu: loopback_max_mtu,
            loopback_max_mtu,
            ..EndpointOptions::default()
        };
        let quic = rt.block_on(QuicPair::new(options));
        group.bench_function(&name, |b| {
            b.iter(|| rt.block_on(quic.transfer(&payload)));
        });
        rt.block_on(quic.close());
    }
    group.finish();
}

/// The QUIC variants: name and the (fixed) datagram size towards the loopback peer.
/// `BOTSYNC_BENCH_MTUS=4096,8192` adds a sweep of other bounds (used to choose the default).
fn quic_variants() -> Vec<(String, u16)> {
    let mut variants = vec![
        ("quic_tailscale_mtu".to_owned(), 1232),
        (
            "quic_loopback_mtu".to_owned(),
            EndpointOptions::default().loopback_max_mtu,
        ),
    ];
    if let Ok(list) = std::env::var("BOTSYNC_BENCH_MTUS") {
        for mtu in list.split(',').filter_map(|m| m.trim().parse::<u16>().ok()) {
            variants.push((format!("quic_mtu_{mtu}"), mtu));
        }
    }
    variants
}

/// A connected pair of botsync endpoints and a receiver task draining incoming streams.
struct QuicPair {
    sender: Connection,
    _listener: Endpoint,
    dialer: Endpoint,
    done: tokio::sync::Mutex<mpsc::UnboundedReceiver<usize>>,
}

impl QuicPair {
    async fn new(options: EndpointOptions) -> QuicPair {
        let (a, b) = (identity(), identity());
        let (a_id, b_id) = (a.peer_id(), b.peer_id());
        let listener = Endpoint::bind_with(
            localhost(),
            b,
            [a_id].into_iter().collect(),
            options.clone(),
        )
        .expect("bind listener");
        let dialer = Endpoint::bind_with(localhost(), a, [b_id].into_iter().collect(), options)
            .expect("bind dialer");
        let addr = listener.local_addr().expect("listener address");
        let (sender, incoming) = tokio::join!(dialer.connect(addr, b_id), async {
            listener.accept().await.expect("incoming").accept().await
        });
        let (sender, receiver) = (sender.expect("connect"), incoming.expect("accept"));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(mut stream) = receiver.accept_uni().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while let Ok(Some(chunk)) = stream.read_chunk(usize::MAX, true).await {
                        n += chunk.bytes.len();
                    }
                    let _ = tx.send(n);
                });
            }
        });
        QuicPair {
            sender,
            _listener: listener,
            dialer,
            done: tokio::sync::Mutex::new(rx),
        }
    }

    async fn transfer(&self, payload: &Arc<Vec<u8>>) {
        for _ in 0..STREAMS {
            let conn = self.sender.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut send = conn.open_uni().await.expect("open stream");
                for _ in 0..TOTAL / STREAMS / WRITE {
                    send.write_all(&payload).await.expect("write");
                }
                send.finish().expect("finish");
            });
        }
        let mut done = self.done.lock().await;
        let mut received = 0;
        for _ in 0..STREAMS {
            received += done.recv().await.expect("receiver alive");
        }
        assert_eq!(black_box(received), TOTAL);
    }

    async fn close(&self) {
        if std::env::var_os("BOTSYNC_BENCH_STATS").is_some() {
            let s = self.sender.stats();
            eprintln!("sender path: {:?}; udp sent: {:?}", s.path, s.udp_tx);
        }
        self.sender.close(botsync_proto::close::CloseCode::Done);
        self.dialer.wait_idle().await;
    }
}

/// A connected TLS 1.3 over TCP pair with the same kind of identities and pinning.
struct TcpPair {
    sender: tokio::sync::Mutex<tokio_rustls::client::TlsStream<TcpStream>>,
    acks: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
}

impl TcpPair {
    async fn new() -> TcpPair {
        let (a, b) = (identity(), identity());
        let (server_tls, _) =
            tls::server_config(&b, [a.peer_id()].into_iter().collect::<AllowedPeers>())
                .expect("server tls");
        let (client_tls, _) = tls::client_config(&a, b.peer_id()).expect("client tls");
        let listener = TcpListener::bind(localhost()).await.expect("bind tcp");
        let addr = listener.local_addr().expect("tcp address");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("tcp accept");
            tcp.set_nodelay(true).expect("nodelay");
            let mut tls = acceptor.accept(tcp).await.expect("tls accept");
            let mut buf = vec![0u8; 256 << 10];
            let mut got = 0;
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                if got >= TOTAL {
                    got -= TOTAL;
                    if tls.write_all(b"k").await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                    let _ = tx.send(());
                }
            }
        });
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from("botsync").expect("server name");
        let stream = connector.connect(name, tcp).await.expect("tls connect");
        TcpPair {
            sender: tokio::sync::Mutex::new(stream),
            acks: tokio::sync::Mutex::new(rx),
        }
    }

    async fn transfer(&self, payload: &Arc<Vec<u8>>) {
        let mut stream = self.sender.lock().await;
        for _ in 0..TOTAL / WRITE {
            stream.write_all(payload).await.expect("tls write");
        }
        stream.flush().await.expect("tls flush");
        let mut ack = [0u8; 1];
        stream.read_exact(&mut ack).await.expect("ack");
        self.acks.lock().await.recv().await.expect("receiver alive");
    }
}

fn identity() -> Identity {
    Identity::generate().expect("generate identity")
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Incompressible bytes (BLAKE3 output stream), so no layer can cheat.
fn pattern(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"transport bench")
        .finalize_xof()
        .fill(&mut out);
    out
}

criterion_group!(benches, transport);
criterion_main!(benches);
