//! A peer that vanishes mid-transfer (killed, crashed, cable pulled) is noticed within seconds,
//! and the session says so in one line. The peer's packets pass through a UDP relay that the
//! test cuts: from then on nothing arrives, exactly as from a killed process (no close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use botsync_proto::messages::SessionMode;
use botsync_proto::session::{
    NoProgress, Progress, ProgressEvent, SessionError, SessionOptions, client,
};
use tokio::net::UdpSocket;

use crate::harness::listen_memory;

/// A UDP relay in front of `server`: what it forwards, and a switch that drops everything.
struct Relay {
    addr: SocketAddr,
    /// Bytes forwarded from the dialer to the server.
    forwarded: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
}

/// `pace`: bytes per second the server's replies are held to (none: as fast as they come).
async fn relay(server: SocketAddr, pace: Option<u64>) -> Relay {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let forwarded = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let client_addr = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    {
        let (front, back, cut, forwarded, client_addr) = (
            Arc::clone(&front),
            Arc::clone(&back),
            Arc::clone(&cut),
            Arc::clone(&forwarded),
            Arc::clone(&client_addr),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client_addr.lock().unwrap() = Some(from);
                if !cut.load(Ordering::SeqCst) {
                    forwarded.fetch_add(n as u64, Ordering::SeqCst);
                    let _ = back.send(&buf[..n]).await;
                }
            }
        });
    }
    {
        let cut = Arc::clone(&cut);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = back.recv(&mut buf).await {
                let to = *client_addr.lock().unwrap();
                if let (Some(to), false) = (to, cut.load(Ordering::SeqCst)) {
                    let _ = front.send_to(&buf[..n], to).await;
                    if let Some(rate) = pace {
                        tokio::time::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate))
                            .await;
                    }
                }
            }
        });
    }
    Relay {
        addr,
        forwarded,
        cut,
    }
}

fn noise(len: usize) -> Vec<u8> {
    crate::common::pseudo_random(len, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_mid_push_is_noticed_within_seconds() {
    let s = listen_memory().await;
    s.client_replica.write("memory/big.bin", &noise(48 << 20));
    let relay = relay(s.addr, None).await;
    let conn = s.client.connect(relay.addr, s.id).await.unwrap();
    let replica = Arc::clone(&s.client_replica);
    let id = s.id;
    let push = tokio::spawn(async move {
        let opts = SessionOptions::new(SessionMode::Push, "client");
        client::run(&conn, id, replica, &opts, Arc::new(NoProgress)).await
    });
    // Cut the wire once the transfer is under way.
    while relay.forwarded.load(Ordering::SeqCst) < 4 << 20 {
        assert!(!push.is_finished(), "the push ended before the cut");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), push)
        .await
        .expect("the push was still waiting 20 s after its peer vanished")
        .unwrap();
    let waited = cut_at.elapsed();
    let err = result.unwrap_err();
    assert!(matches!(err, SessionError::PeerVanished), "{err}");
    assert!(waited < Duration::from_secs(8), "noticed after {waited:?}");
    let line = err.to_string();
    assert!(
        !line.contains('\n') && line.contains("stopped answering"),
        "{line}"
    );
}

fn note(i: usize) -> Vec<u8> {
    let mut bytes = noise(8192 + i);
    bytes.truncate(8192);
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    bytes
}

/// Counts the chunks a session received (verified), whether it keeps or holds them.
#[derive(Default)]
struct Arrived(AtomicU64);

impl Progress for Arrived {
    fn event(&self, event: ProgressEvent) {
        if let ProgressEvent::Received { .. } = event {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Issue 17: what arrived is kept when the link dies, not lost with its batch. 256 notes of
/// 8 KiB (one chunk each) are pulled over one request stream, in batches of 1 MiB: 128 chunks.
/// The link dies as soon as the first chunk has arrived, in the middle of the first batch. What
/// arrived is kept (fewer than a batch: keeping per batch would keep none, or 128), and the
/// next pull fetches only the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_that_arrived_before_the_link_died_mid_batch_are_not_fetched_again() {
    let s = listen_memory().await;
    for i in 0..256 {
        s.replica.write(&format!("memory/n{i:03}.md"), &note(i));
    }
    // Replies held to 4 MB/s, so a batch takes a quarter of a second to arrive.
    let relay = relay(s.addr, Some(4_000_000)).await;
    let conn = s.client.connect(relay.addr, s.id).await.unwrap();
    let replica = Arc::clone(&s.client_replica);
    let id = s.id;
    let arrived = Arc::new(Arrived::default());
    let progress = Arc::clone(&arrived);
    let pull = tokio::spawn(async move {
        let mut opts = SessionOptions::new(SessionMode::Pull, "client");
        opts.streams = 1;
        client::run(&conn, id, replica, &opts, progress).await
    });
    // The notes are one chunk each: the session holds them for its apply, and keeps what it
    // holds when the link dies.
    while arrived.0.load(Ordering::SeqCst) == 0 {
        assert!(!pull.is_finished(), "the pull ended before the cut");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    relay.cut.store(true, Ordering::SeqCst);
    let result = tokio::time::timeout(Duration::from_secs(20), pull)
        .await
        .expect("the pull noticed the dead link")
        .unwrap();
    assert!(result.is_err(), "a pull over a dead link fails");
    let kept = s.client_replica.chunks_received();
    assert!(
        kept > 0 && kept < 128,
        "kept {kept} chunks when the link died inside the first batch of 128"
    );

    // The next pull, over a working link, fetches only what had not arrived.
    let again = s.session(SessionMode::Pull).await.unwrap();
    assert_eq!(s.client_replica.files().len(), 256);
    assert_eq!(s.client_replica.read("memory/n200.md"), Some(note(200)));
    assert_eq!(
        again.counters.chunks_received + kept,
        256,
        "{kept} kept before the cut, {} fetched after",
        again.counters.chunks_received
    );
}
