//! A user-space network impairment layer: a UDP proxy between a client and a daemon that
//! drops, bursts, reorders, duplicates, corrupts, delays and caps datagrams, seeded so a
//! failure replays. The kernel of the test machines has no `netem`; this stands in for it.
//!
//! The client is pointed at [`Netem::port`]; the proxy forwards to the daemon from its own
//! socket and sends the replies back to the last client address it saw. Each direction runs
//! on its own thread with its own random stream and delay queue. [`Netem::blackout`] drops
//! everything in both directions until [`Netem::restore`].

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test helper: a failed unwrap is a failed test

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happens to the datagrams of one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram starts a loss (0.0-1.0).
    pub loss: f64,
    /// Datagrams dropped in a row once a loss starts (1 = independent losses).
    pub burst: u32,
    /// Probability that a datagram is held back and sent after the next one.
    pub reorder: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Probability that one byte of a datagram is flipped.
    pub corrupt: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Uniform extra delay in `0..jitter` (reorders on its own when larger than the gap).
    pub jitter: Duration,
    /// Datagrams longer than this are dropped (a path MTU, as a UDP payload size).
    pub mtu: usize,
}

impl Impairment {
    /// A perfect link.
    pub const CLEAN: Impairment = Impairment {
        loss: 0.0,
        burst: 1,
        reorder: 0.0,
        duplicate: 0.0,
        corrupt: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        mtu: 65_535,
    };

    /// Independent loss of `p` of the datagrams.
    pub fn lossy(p: f64) -> Impairment {
        Impairment {
            loss: p,
            ..Impairment::CLEAN
        }
    }
}

/// Datagram counts of one direction, for the test's own report.
#[derive(Debug, Default)]
pub struct Counts {
    pub seen: AtomicU64,
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
    /// Payload bytes forwarded.
    pub bytes: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct Netem {
    /// The port a client connects to (127.0.0.1).
    pub port: u16,
    /// Client → daemon counts.
    pub up: Arc<Counts>,
    /// Daemon → client counts.
    pub down: Arc<Counts>,
    dark: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Netem {
    /// Proxy to the daemon at `127.0.0.1:target` with the same impairment both ways.
    pub fn start(target: u16, both: Impairment, seed: u64) -> Netem {
        Netem::start_asym(target, both, both, seed)
    }

    /// Proxy with `up` applied to client → daemon and `down` to daemon → client.
    pub fn start_asym(target: u16, up: Impairment, down: Impairment, seed: u64) -> Netem {
        Netem::start_on("127.0.0.1".parse().unwrap(), target, up, down, seed)
    }

    /// Proxy on `ip` (both its sockets) to a daemon listening at `ip:target`. A non-loopback
    /// `ip` (an address of a dummy interface) makes both peers use their non-loopback transport,
    /// as across a Tailscale tunnel.
    pub fn start_on(
        ip: std::net::IpAddr,
        target: u16,
        up: Impairment,
        down: Impairment,
        seed: u64,
    ) -> Netem {
        let front = UdpSocket::bind((ip, 0)).unwrap();
        let back = UdpSocket::bind((ip, 0)).unwrap();
        back.connect((ip, target)).unwrap();
        let port = front.local_addr().unwrap().port();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let dark = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (up_counts, down_counts) = (Arc::new(Counts::default()), Arc::new(Counts::default()));

        let upstream = Direction {
            rx: front.try_clone().unwrap(),
            tx: back.try_clone().unwrap(),
            imp: up,
            rng: Rng::new(seed),
            counts: up_counts.clone(),
            dark: dark.clone(),
            stop: stop.clone(),
            client: client.clone(),
            to_client: false,
        };
        let downstream = Direction {
            rx: back,
            tx: front,
            imp: down,
            rng: Rng::new(seed ^ 0x5DEE_CE66_D1CE_4E5D),
            counts: down_counts.clone(),
            dark: dark.clone(),
            stop: stop.clone(),
            client,
            to_client: true,
        };
        let threads = vec![
            std::thread::spawn(move || upstream.run()),
            std::thread::spawn(move || downstream.run()),
        ];
        Netem {
            port,
            up: up_counts,
            down: down_counts,
            dark,
            stop,
            threads,
        }
    }

    /// Drop every datagram both ways from now on.
    pub fn blackout(&self) {
        self.dark.store(true, Ordering::SeqCst);
    }

    /// End a blackout.
    pub fn restore(&self) {
        self.dark.store(false, Ordering::SeqCst);
    }

    /// Datagrams dropped so far, both ways.
    pub fn dropped(&self) -> u64 {
        self.up.dropped.load(Ordering::Relaxed) + self.down.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One direction of the proxy.
struct Direction {
    rx: UdpSocket,
    tx: UdpSocket,
    imp: Impairment,
    rng: Rng,
    counts: Arc<Counts>,
    dark: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// The client's address: learnt upstream, used downstream.
    client: Arc<Mutex<Option<SocketAddr>>>,
    to_client: bool,
}

/// A datagram waiting for its send time.
struct Due {
    at: Instant,
    seq: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Due) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Due) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

impl Direction {
    fn run(mut self) {
        let mut queue: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
        let mut held: Option<Vec<u8>> = None;
        let mut burst_left = 0u32;
        let mut seq = 0u64;
        let mut buf = vec![0u8; 65_536];
        while !self.stop.load(Ordering::SeqCst) {
            let wait = queue
                .peek()
                .map(|Reverse(d)| d.at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(20))
                .clamp(Duration::from_micros(200), Duration::from_millis(20));
            self.rx.set_read_timeout(Some(wait)).unwrap();
            match self.rx.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if !self.to_client {
                        *self.client.lock().unwrap() = Some(from);
                    }
                    self.counts.seen.fetch_add(1, Ordering::Relaxed);
                    let mut bytes = buf[..n].to_vec();
                    let drop = if self.dark.load(Ordering::SeqCst) || n > self.imp.mtu {
                        true
                    } else if burst_left > 0 {
                        burst_left -= 1;
                        true
                    } else if self.rng.chance(self.imp.loss) {
                        burst_left = self.imp.burst.saturating_sub(1);
                        true
                    } else {
                        false
                    };
                    if drop {
                        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        if self.rng.chance(self.imp.corrupt) {
                            let i = self.rng.below(bytes.len() as u64) as usize;
                            bytes[i] ^= 1 << self.rng.below(8);
                        }
                        let copies = if self.rng.chance(self.imp.duplicate) {
                            2
                        } else {
                            1
                        };
                        let mut out = Vec::with_capacity(3);
                        if self.rng.chance(self.imp.reorder) && held.is_none() {
                            held = Some(bytes);
                        } else {
                            for _ in 0..copies {
                                out.push(bytes.clone());
                            }
                            out.extend(held.take());
                        }
                        for b in out {
                            let jitter = if self.imp.jitter.is_zero() {
                                Duration::ZERO
                            } else {
                                Duration::from_micros(
                                    self.rng.below(self.imp.jitter.as_micros() as u64),
                                )
                            };
                            seq += 1;
                            queue.push(Reverse(Due {
                                at: Instant::now() + self.imp.delay + jitter,
                                seq,
                                bytes: b,
                            }));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // The daemon went away (ICMP port unreachable on the connected socket): keep
                // proxying, a test may restart it.
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
            let now = Instant::now();
            while queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
                let Reverse(d) = queue.pop().unwrap();
                self.send(&d.bytes);
            }
        }
    }

    fn send(&self, bytes: &[u8]) {
        let sent = if self.to_client {
            let to = *self.client.lock().unwrap();
            to.map(|a| self.tx.send_to(bytes, a).is_ok())
        } else {
            Some(self.tx.send(bytes).is_ok())
        };
        if sent == Some(true) {
            self.counts.sent.fetch_add(1, Ordering::Relaxed);
            self.counts
                .bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    }
}

/// xorshift64*: small, seeded, good enough to pick packets.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}
