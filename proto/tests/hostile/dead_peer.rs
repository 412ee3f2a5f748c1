//! A peer that vanishes mid-transfer (killed, crashed, cable pulled) is noticed within seconds,
//! and the session says so in one line. The peer's packets pass through a UDP relay that the
//! test cuts: from then on nothing arrives, exactly as from a killed process (no close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use botsync_proto::messages::SessionMode;
use botsync_proto::session::{NoProgress, SessionError, SessionOptions, client};
use tokio::net::UdpSocket;

use crate::harness::listen_memory;

/// A UDP relay in front of `server`: what it forwards, and a switch that drops everything.
struct Relay {
    addr: SocketAddr,
    forwarded: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
}

async fn relay(server: SocketAddr) -> Relay {
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
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_mid_push_is_noticed_within_seconds() {
    let s = listen_memory().await;
    s.client_replica.write("memory/big.bin", &noise(48 << 20));
    let relay = relay(s.addr).await;
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
