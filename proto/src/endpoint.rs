//! [`Endpoint`]: one QUIC endpoint (one UDP socket) that both listens for and dials botsync peers.
//!
//! This module owns the QUIC transport parameters ([`EndpointOptions`]) and turns handshake
//! outcomes into errors a user can act on ([`ConnectError`], [`AcceptError`]): which id a peer
//! presented, which one was expected, whether a peer refused us. It hands out authenticated
//! [`Connection`]s whose [`PeerId`] comes from the peer's certificate. It does not know what is
//! sent over a connection (that is the session) nor where peer addresses come from (peers.json,
//! read by the CLI).
//!
//! # Path MTU: Tailscale everywhere, except loopback
//!
//! Every connection starts at 1200-byte UDP payloads and MTU discovery may grow them up to
//! [`EndpointOptions::max_mtu`] (1232: packets fit Tailscale's 1280-byte tunnel). The one
//! exception is a peer whose address is loopback (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z` on a
//! dual-stack socket): no tunnel sits between two processes on one machine, the loopback
//! interface carries 64 KiB packets, and bulk throughput there is bounded by the CPU cost per
//! packet (encryption, acknowledgements, system calls). Such connections send datagrams of
//! [`EndpointOptions::loopback_initial_mtu`] (65488 bytes: the loopback interface's 65536-byte MTU
//! less the IPv6 and UDP headers, so valid for `::1` and `127.0.0.1` alike) from the first packet
//! and run no MTU discovery, on both sides: the dialer picks its transport by the address it dials
//! ([`Endpoint::connect`]), the listener by the address an attempt comes from
//! ([`Incoming::accept`]). [`EndpointOptions::transport_config_for`] is that rule in one place.
//! No discovery, because its binary search from 1200 bytes sends a dozen padded probes of up to
//! 64 KiB each way, about 720 kB per side on every connection: more than a no-op sync's own
//! bytes a hundred times over, and it made every byte figure measured on loopback meaningless.
//! A datagram is still never larger than the peer accepts (its `max_udp_payload_size`), and
//! should a loopback interface carry less, quinn's black-hole detection falls back to 1200 bytes.
//! Loopback connections also turn segmentation offload (GSO) off: quinn batches up to 10
//! datagrams in one send, and a batch of datagrams above 6550 bytes exceeds what one UDP send may
//! carry (see `exceeds_gso_batch`). The endpoint accepts datagrams up to the larger of the two bounds from any
//! peer (QUIC's `max_udp_payload_size`); a non-loopback peer still never *sends* more than its own
//! bound. quinn sizes its receive buffer from that value (up to 64 KiB × 64 GRO segments × 32
//! datagrams of address space), but the kernel writes at most one 64 KiB datagram or GRO batch
//! per slot, so only a few MiB of it is ever resident (12 MiB peak RSS for two endpoints moving
//! 16 MiB each way in `tests/handshake.rs`).
//!
//! A dialer's QUIC handshake completes before the listener has checked the dialer's certificate;
//! [`Endpoint::connect`] therefore also waits for the listener's `HANDSHAKE_DONE` (the handshake
//! is *confirmed*, RFC 9001 §4.1.2), so a listener that refuses us fails `connect` itself instead
//! of the first stream operation.

use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use botsync_engine::PeerId;
use quinn::congestion::{BbrConfig, CubicConfig};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    ConnectionError, EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt,
};

mod error;

pub use error::{AcceptError, ConnectError, EndpointError};

use crate::close::CloseCode;
use crate::identity::{CERT_SUBJECT, Identity};
use crate::tls::{self, AllowedPeers, Verdict, VerdictSlot};

/// The UDP port botsync listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7474;

/// QUIC and handshake parameters. [`Default`] is tuned for peers joined by Tailscale (1280-byte
/// tunnel MTU) on links up to about 100 Mbit/s × 100 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointOptions {
    /// Give up dialing (or accepting) a handshake after this long.
    pub connect_timeout: Duration,
    /// UDP payload size used from the first packet: 1200, the QUIC minimum.
    pub initial_mtu: u16,
    /// Largest UDP payload MTU discovery may probe: 1232 = 1280 (Tailscale's tunnel MTU, also the
    /// IPv6 minimum) − 40 (IPv6 header) − 8 (UDP header).
    pub max_mtu: u16,
    /// UDP payload size used from the first packet to a loopback peer (see the module docs).
    pub loopback_initial_mtu: u16,
    /// Largest UDP payload MTU discovery may probe towards a loopback peer; discovery runs only
    /// when this exceeds `loopback_initial_mtu` (by default they are equal: see the module docs).
    pub loopback_max_mtu: u16,
    /// Send a keep-alive after this much silence: a live peer is never silent longer, so
    /// `idle_timeout` can be short (and NAT and Tailscale mappings stay open).
    pub keep_alive: Duration,
    /// Close a connection after this much silence from the peer: a peer that sends keep-alives
    /// every second and is silent for this long was killed, crashed or lost its network. Short,
    /// so that an active transfer notices within seconds (issue 10: a client pushing to a killed
    /// daemon waited 70 s); five missed keep-alives in a row leave room for a lossy link.
    pub idle_timeout: Duration,
    /// Bytes the peer may have in flight to us across all streams. A 100 Mbit/s × 100 ms path has
    /// a bandwidth-delay product of about 1.25 MB; twice and a bit more leaves room for loss
    /// recovery.
    pub connection_window: u32,
    /// Bytes the peer may have in flight to us on one stream.
    pub stream_window: u32,
    /// Bytes we keep in flight to the peer across all streams.
    pub send_window: u32,
    /// Concurrent bidirectional (and, separately, unidirectional) streams a peer may open. A
    /// session uses the control stream and up to 6 request streams; every stream beyond the
    /// request budget waits holding its decoded request (≤ 33 KiB), so this bounds what a peer
    /// can queue per connection (`crate::budget`).
    pub max_streams: u32,
    /// Kernel receive and send buffer asked for the UDP socket. Linux's default (208 KiB) is
    /// smaller than one window, so a burst overflows it and the drop reads as congestion. The
    /// kernel caps the request at `net.core.rmem_max` / `wmem_max`; a capped request is not an
    /// error.
    pub socket_buffer: usize,
    /// The round-trip time assumed before the first sample, towards a peer that is not on
    /// loopback. It sets how soon a lost handshake packet is sent again (about three times
    /// this, doubling each time). QUIC's default of 333 ms sends the fourth copy of a lost
    /// handshake flight only after 7 s, past `idle_timeout`: over a link losing packets in
    /// bursts, the listener gave up on handshakes its dialer would still have finished. At
    /// 100 ms, four copies go out within 4.5 s; a tailnet path slower than that costs one
    /// early copy of a ~1 KB packet.
    pub initial_rtt: Duration,
    /// The same towards a loopback peer (the same machine: microseconds).
    pub loopback_initial_rtt: Duration,
}

impl Default for EndpointOptions {
    fn default() -> EndpointOptions {
        EndpointOptions {
            connect_timeout: Duration::from_secs(10),
            initial_mtu: 1200,
            max_mtu: 1232,
            loopback_initial_mtu: LOOPBACK_INITIAL_MTU,
            loopback_max_mtu: LOOPBACK_MAX_MTU,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            connection_window: 4 << 20,
            stream_window: 1 << 20,
            send_window: 4 << 20,
            max_streams: 32,
            socket_buffer: 4 << 20,
            initial_rtt: Duration::from_millis(100),
            loopback_initial_rtt: Duration::from_millis(10),
        }
    }
}

impl EndpointOptions {
    /// The quinn transport configuration for a peer at a non-loopback address (every path that
    /// may cross a Tailscale tunnel).
    pub fn transport_config(&self) -> TransportConfig {
        let mut t = self.transport_with_mtu(self.initial_mtu, self.max_mtu);
        t.initial_rtt(self.initial_rtt);
        // BBR, not the default Cubic: across a tunnel with a little random loss (Wi-Fi, a busy
        // uplink), Cubic halves its window at each loss and a 100 ms path at 1 % loss crawls
        // (docs/BENCHMARKS.md, benches/netem.sh); BBR paces at the measured bottleneck rate.
        t.congestion_controller_factory(Arc::new(BbrConfig::default()));
        t
    }

    /// The quinn transport configuration for a peer at `remote`: for a loopback address the
    /// loopback MTU bounds and no segmentation offload (see the module docs),
    /// [`EndpointOptions::transport_config`] otherwise.
    pub fn transport_config_for(&self, remote: SocketAddr) -> TransportConfig {
        if is_loopback(remote.ip()) {
            self.loopback_transport_config()
        } else {
            self.transport_config()
        }
    }

    fn loopback_transport_config(&self) -> TransportConfig {
        let mut t = self.transport_with_mtu(self.loopback_initial_mtu, self.loopback_max_mtu);
        t.initial_rtt(self.loopback_initial_rtt);
        let largest = self.loopback_initial_mtu.max(self.loopback_max_mtu);
        if exceeds_gso_batch(largest) {
            t.enable_segmentation_offload(false);
        }
        // RFC 9002's initial window is 10 datagrams; quinn's default counts 1200-byte ones
        // (14720 bytes), less than one loopback datagram, and grows it to only 2 datagrams when
        // the MTU grows. With MTU probes of ~60 KB in flight (when discovery is configured) a
        // close frame then waited behind them until the closing side had drained and answered
        // the peer with a stateless reset ("reset by peer" instead of the close code). Ten
        // loopback datagrams keep that room.
        let mut cubic = CubicConfig::default();
        cubic.initial_window(10 * u64::from(largest.max(QUIC_MIN_MTU)));
        t.congestion_controller_factory(Arc::new(cubic));
        t
    }

    /// The (initial, maximum) UDP payload sizes for a peer at `remote`.
    pub fn mtu_bounds_for(&self, remote: SocketAddr) -> (u16, u16) {
        if is_loopback(remote.ip()) {
            (self.loopback_initial_mtu, self.loopback_max_mtu)
        } else {
            (self.initial_mtu, self.max_mtu)
        }
    }

    /// The largest UDP payload this endpoint accepts from any peer: the largest of the sizes it
    /// may send, never below QUIC's 1200-byte minimum.
    pub fn max_accepted_payload(&self) -> u16 {
        self.max_mtu
            .max(self.loopback_max_mtu)
            .max(self.loopback_initial_mtu)
            .max(QUIC_MIN_MTU)
    }

    fn transport_with_mtu(&self, initial_mtu: u16, max_mtu: u16) -> TransportConfig {
        let mut t = TransportConfig::default();
        t.initial_mtu(initial_mtu);
        if max_mtu > initial_mtu {
            let mut discovery = MtuDiscoveryConfig::default();
            discovery.upper_bound(max_mtu);
            t.mtu_discovery_config(Some(discovery));
        } else {
            t.mtu_discovery_config(None);
        }
        t.keep_alive_interval(Some(self.keep_alive));
        // Saturate: an idle timeout beyond 2^32 ms (49 days) is indistinguishable from forever.
        let idle_ms = u32::try_from(self.idle_timeout.as_millis()).unwrap_or(u32::MAX);
        t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(idle_ms))));
        t.receive_window(VarInt::from_u32(self.connection_window));
        t.stream_receive_window(VarInt::from_u32(self.stream_window));
        t.send_window(u64::from(self.send_window));
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams));
        t.max_concurrent_uni_streams(VarInt::from_u32(self.max_streams));
        t
    }
}

/// A bound QUIC endpoint: listens on its UDP socket and dials from the same socket.
#[derive(Debug)]
pub struct Endpoint {
    quinn: quinn::Endpoint,
    identity: Arc<Identity>,
    allowed: AllowedPeers,
    transports: Transports,
    options: EndpointOptions,
}

impl Endpoint {
    /// Bind `addr` with the default [`EndpointOptions`]; peers in `allowed` may connect.
    /// Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: impl Into<Arc<Identity>>,
        allowed: AllowedPeers,
    ) -> Result<Endpoint, EndpointError> {
        Endpoint::bind_with(addr, identity, allowed, EndpointOptions::default())
    }

    /// Bind `addr` with explicit options.
    pub fn bind_with(
        addr: SocketAddr,
        identity: impl Into<Arc<Identity>>,
        allowed: AllowedPeers,
        options: EndpointOptions,
    ) -> Result<Endpoint, EndpointError> {
        let identity = identity.into();
        let transports = Transports::new(&options);
        let (server, _slot) = quic_server_config(&identity, &allowed, &transports.wide)?;
        let mut endpoint_config = EndpointConfig::default();
        let accepted = options.max_accepted_payload().min(QUIC_MAX_UDP_PAYLOAD);
        endpoint_config
            .max_udp_payload_size(accepted)
            .map_err(|_| EndpointError::PayloadSize { bytes: accepted })?;
        let bind_err = |source| EndpointError::Bind { addr, source };
        let socket = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
        size_socket_buffers(&socket, options.socket_buffer);
        let runtime = quinn::default_runtime().ok_or(EndpointError::NoRuntime)?;
        let quinn = quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime)
            .map_err(bind_err)?;
        Ok(Endpoint {
            quinn,
            identity,
            allowed,
            transports,
            options,
        })
    }

    /// Dial the peer at `addr`, which must prove it is `expected`. Returns once the handshake is
    /// confirmed by both sides, or fails after [`EndpointOptions::connect_timeout`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: PeerId,
    ) -> Result<Connection, ConnectError> {
        self.connect_for(addr, expected, tls::ALPN).await
    }

    /// [`Endpoint::connect`] for the protocol `alpn` ([`tls::ALPN`] for sync sessions,
    /// [`tls::COORD_ALPN`] for coordination).
    pub async fn connect_for(
        &self,
        addr: SocketAddr,
        expected: PeerId,
        alpn: &[u8],
    ) -> Result<Connection, ConnectError> {
        let (tls, slot) = tls::client_config_for(&self.identity, expected, alpn)?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| EndpointError::QuicTls {
            reason: e.to_string(),
        })?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.transports.for_peer(addr));
        let connecting = self
            .quinn
            .connect_with(config, addr, CERT_SUBJECT)
            .map_err(|source| ConnectError::Start { addr, source })?;
        let after = self.options.connect_timeout;
        let handshake = async {
            let conn = connecting.await?;
            wait_confirmed(&conn).await?;
            Ok::<_, ConnectionError>(conn)
        };
        let conn = match tokio::time::timeout(after, handshake).await {
            Err(_) => {
                return Err(ConnectError::Timeout {
                    addr,
                    peer: expected,
                    after,
                });
            }
            Ok(Err(source)) => {
                return Err(self.connect_failure(addr, expected, slot.get(), source));
            }
            Ok(Ok(conn)) => conn,
        };
        let peer = tls::remote_peer_id(&conn)
            .map_err(|source| ConnectError::NoIdentity { addr, source })?;
        if peer != expected {
            // Unreachable while the verifier works; checked again because it is the whole point.
            CloseCode::UnknownPeer.close(&conn);
            return Err(ConnectError::UnexpectedPeer {
                addr,
                expected,
                presented: peer,
            });
        }
        Ok(Connection { inner: conn, peer })
    }

    /// Wait for the next incoming connection attempt; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        let inner = self.quinn.accept().await?;
        Some(Incoming {
            inner,
            identity: self.identity.clone(),
            allowed: self.allowed.clone(),
            transports: self.transports.clone(),
            timeout: self.options.connect_timeout,
        })
    }

    /// The address the UDP socket is bound to (with the real port if 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr, EndpointError> {
        self.quinn.local_addr().map_err(EndpointError::LocalAddr)
    }

    /// This endpoint's own peer id.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// This endpoint's identity.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The shared set of peers allowed to connect; updates apply to the next handshake.
    pub fn allowed(&self) -> &AllowedPeers {
        &self.allowed
    }

    /// The options this endpoint was bound with.
    pub fn options(&self) -> &EndpointOptions {
        &self.options
    }

    /// Close every connection with `code` and stop accepting.
    pub fn close(&self, code: CloseCode) {
        self.quinn.close(code.to_varint(), code.reason().as_bytes());
    }

    /// Wait until every connection has finished closing (so close frames reach the peers).
    pub async fn wait_idle(&self) {
        self.quinn.wait_idle().await;
    }

    fn connect_failure(
        &self,
        addr: SocketAddr,
        expected: PeerId,
        verdict: Option<Verdict>,
        source: ConnectionError,
    ) -> ConnectError {
        match verdict {
            Some(Verdict::Refused(presented)) => ConnectError::UnexpectedPeer {
                addr,
                expected,
                presented,
            },
            Some(Verdict::BadSignature(claimed)) => ConnectError::Impersonation { addr, claimed },
            Some(Verdict::Accepted(_)) if closed_by_tls_alert(&source) => {
                ConnectError::RefusedByPeer {
                    addr,
                    peer: expected,
                    ours: self.peer_id(),
                }
            }
            _ if CloseCode::of_error(&source) == Some(CloseCode::Busy) => ConnectError::Busy {
                addr,
                peer: expected,
            },
            _ => ConnectError::Handshake {
                addr,
                peer: expected,
                source,
            },
        }
    }
}

/// A connection attempt from a peer, not yet authenticated.
#[derive(Debug)]
pub struct Incoming {
    inner: quinn::Incoming,
    identity: Arc<Identity>,
    allowed: AllowedPeers,
    transports: Transports,
    timeout: Duration,
}

impl Incoming {
    /// The address the attempt comes from (not yet authenticated).
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Run the handshake: succeeds only if the peer presents a certificate whose id is allowed
    /// and proves it holds the matching key.
    pub async fn accept(self) -> Result<Connection, AcceptError> {
        let addr = self.inner.remote_address();
        // One TLS configuration per attempt, so its verdict slot belongs to this handshake alone;
        // its transport follows the attempt's address (loopback peers get the loopback MTU).
        let transport = self.transports.for_peer(addr);
        let (config, slot) = quic_server_config(&self.identity, &self.allowed, &transport)
            .map_err(AcceptError::Config)?;
        let connecting = self
            .inner
            .accept_with(Arc::new(config))
            .map_err(|source| handshake_failure(addr, &slot, source))?;
        let conn = match tokio::time::timeout(self.timeout, connecting).await {
            Err(_) => {
                return Err(AcceptError::Timeout {
                    addr,
                    after: self.timeout,
                });
            }
            Ok(Err(source)) => return Err(handshake_failure(addr, &slot, source)),
            Ok(Ok(conn)) => conn,
        };
        let peer = tls::remote_peer_id(&conn)
            .map_err(|source| AcceptError::NoIdentity { addr, source })?;
        if !self.allowed.contains(&peer) {
            // Removed from peers.json during the handshake.
            CloseCode::UnknownPeer.close(&conn);
            return Err(AcceptError::UnknownPeer {
                addr,
                presented: peer,
            });
        }
        Ok(Connection { inner: conn, peer })
    }

    /// Turn the attempt away without a handshake (the daemon is at its connection limit).
    pub fn refuse(self) {
        self.inner.refuse();
    }
}

/// An authenticated connection: the QUIC connection and the peer id its certificate proves.
///
/// Derefs to [`quinn::Connection`] for streams.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: quinn::Connection,
    peer: PeerId,
}

impl Connection {
    /// The remote peer's id, proven by its certificate.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The underlying QUIC connection.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }

    /// True if this is a coordination connection ([`tls::COORD_ALPN`]), not a sync one.
    pub fn is_coordination(&self) -> bool {
        self.inner
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol)
            .is_some_and(|p| p == tls::COORD_ALPN)
    }

    /// Split into the QUIC connection and the peer id.
    pub fn into_parts(self) -> (quinn::Connection, PeerId) {
        (self.inner, self.peer)
    }

    /// Close the connection with a named code.
    pub fn close(&self, code: CloseCode) {
        code.close(&self.inner);
    }
}

impl Deref for Connection {
    type Target = quinn::Connection;

    fn deref(&self) -> &quinn::Connection {
        &self.inner
    }
}

/// The two transport configurations an endpoint hands out, built once at bind.
#[derive(Debug, Clone)]
struct Transports {
    /// For every peer that may sit behind a tunnel.
    wide: Arc<TransportConfig>,
    /// For peers on a loopback address.
    loopback: Arc<TransportConfig>,
}

impl Transports {
    fn new(options: &EndpointOptions) -> Transports {
        Transports {
            wide: Arc::new(options.transport_config()),
            loopback: Arc::new(options.loopback_transport_config()),
        }
    }

    fn for_peer(&self, remote: SocketAddr) -> Arc<TransportConfig> {
        if is_loopback(remote.ip()) {
            self.loopback.clone()
        } else {
            self.wide.clone()
        }
    }
}

/// Whether a GSO batch of datagrams of `mtu` bytes could exceed what one `sendmsg` may carry.
///
/// quinn hands the kernel up to [`QUINN_GSO_SEGMENTS`] datagrams in one segmentation-offload
/// send; their total is limited to the largest UDP payload (65507 bytes over IPv4). A larger batch
/// fails with `EMSGSIZE`, which quinn-udp drops silently (it expects that error only from MTU
/// probes): every datagram of the batch is lost, the loss reads as a black hole, and the path
/// falls back to 1200 bytes. Above 6550 bytes per datagram, segmentation offload must be off.
fn exceeds_gso_batch(mtu: u16) -> bool {
    usize::from(mtu) * QUINN_GSO_SEGMENTS > usize::from(MAX_IPV4_UDP_PAYLOAD)
}

/// Whether `ip` is a loopback address, IPv4-mapped IPv6 included (what a dual-stack socket
/// reports for an IPv4 peer).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn quic_server_config(
    identity: &Identity,
    allowed: &AllowedPeers,
    transport: &Arc<TransportConfig>,
) -> Result<(quinn::ServerConfig, VerdictSlot), EndpointError> {
    let (tls, slot) = tls::server_config(identity, allowed.clone())?;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| EndpointError::QuicTls {
        reason: e.to_string(),
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport.clone());
    Ok((config, slot))
}

/// Ask for larger kernel socket buffers; best effort (the kernel may cap or refuse the size, and
/// the endpoint still works with its default buffers, only with more drops under bursts).
fn size_socket_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    let Ok(state) = quinn::udp::UdpSocketState::new(socket.into()) else {
        return;
    };
    if let Err(e) = state.set_recv_buffer_size(socket.into(), bytes) {
        tracing::debug!(error = %e, bytes, "cannot enlarge the udp receive buffer");
    }
    if let Err(e) = state.set_send_buffer_size(socket.into(), bytes) {
        tracing::debug!(error = %e, bytes, "cannot enlarge the udp send buffer");
    }
}

fn handshake_failure(addr: SocketAddr, slot: &VerdictSlot, source: ConnectionError) -> AcceptError {
    match slot.get() {
        Some(Verdict::Refused(presented)) => AcceptError::UnknownPeer { addr, presented },
        Some(Verdict::BadSignature(claimed)) => AcceptError::Impersonation { addr, claimed },
        _ => AcceptError::Handshake { addr, source },
    }
}

/// Whether the peer ended the connection with a TLS alert (QUIC crypto error 0x100-0x1ff).
fn closed_by_tls_alert(err: &ConnectionError) -> bool {
    match err {
        ConnectionError::ConnectionClosed(close) => u64::from(close.error_code) & !0xff == 0x100,
        _ => false,
    }
}

/// Wait until the listener confirms the handshake (its `HANDSHAKE_DONE` frame arrived), or the
/// connection closes. quinn surfaces no event for confirmation, so the dialer watches the frame
/// counter; on a live link this takes at most one round trip after the handshake.
async fn wait_confirmed(conn: &quinn::Connection) -> Result<(), ConnectionError> {
    const POLL: Duration = Duration::from_millis(1);
    loop {
        if let Some(reason) = conn.close_reason() {
            return Err(reason);
        }
        if conn.stats().frame_rx.handshake_done > 0 {
            return Ok(());
        }
        tokio::select! {
            reason = conn.closed() => return Err(reason),
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// QUIC's smallest allowed UDP payload (RFC 9000 §14).
const QUIC_MIN_MTU: u16 = 1200;

/// The largest UDP payload quinn allows (65535 − 8-byte UDP header, reachable over IPv6).
const QUIC_MAX_UDP_PAYLOAD: u16 = 65527;

/// The largest UDP payload over IPv4: 65535 − 20 (IPv4 header) − 8 (UDP header).
const MAX_IPV4_UDP_PAYLOAD: u16 = 65507;

/// Datagrams quinn 0.11 puts in one segmentation-offload send (`MAX_TRANSMIT_SEGMENTS`).
const QUINN_GSO_SEGMENTS: usize = 10;

/// UDP payload towards loopback peers, from the first packet: the loopback interface's default
/// MTU (65536 on Linux) less the IPv6 (40) and UDP (8) headers, which fits IPv4 loopback too. The size was chosen with
/// `benches/benches/transport.rs`: 64 MiB moved in about 61 ms at the 65507 bound, 69 ms at 32 KiB,
/// 103 ms at 16 KiB, 115 ms at 6 KiB (with offload), 280 ms at 1232 (load average 5-6). The
/// client's first datagram is still padded to 1200 bytes only, and nothing larger is sent before
/// the peer's transport parameters say what it accepts.
const LOOPBACK_INITIAL_MTU: u16 = 65488;

/// Equal to [`LOOPBACK_INITIAL_MTU`]: no MTU discovery towards loopback peers (module docs).
const LOOPBACK_MAX_MTU: u16 = LOOPBACK_INITIAL_MTU;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_transport_fits_a_tailscale_tunnel() {
        let o = EndpointOptions::default();
        assert_eq!(o.initial_mtu, 1200);
        assert!(o.max_mtu <= 1280 - 40 - 8);
        assert!(o.keep_alive < o.idle_timeout);
        // A handshake flight is sent four times before the listener's idle timeout: at about
        // 3, 9, 21 and 45 times the initial RTT (RFC 9002's probe timeout, doubling).
        for rtt in [o.initial_rtt, o.loopback_initial_rtt] {
            assert!(rtt * 45 < o.idle_timeout, "{rtt:?}");
        }
        // 100 Mbit/s × 100 ms = 1.25 MB must fit in the connection window.
        assert!(u64::from(o.connection_window) >= 100_000_000 / 8 / 10);
        // A session's control stream, its 6 request streams and the next session's Hello.
        assert!(o.max_streams >= 16);
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_peers_get_the_loopback_mtu_and_every_other_peer_keeps_1232() {
        let o = EndpointOptions::default();
        for loopback in [
            "127.0.0.1:7474",
            "127.1.2.3:7474",
            "[::1]:7474",
            "[::ffff:127.0.0.1]:7474",
        ] {
            let bounds = o.mtu_bounds_for(addr(loopback));
            assert_eq!(
                bounds,
                (o.loopback_initial_mtu, o.loopback_max_mtu),
                "{loopback}"
            );
        }
        for tunnelled in [
            "100.101.102.103:7474",
            "[fd7a:115c:a1e0::1]:7474",
            "192.168.1.20:7474",
            "[::ffff:10.0.0.1]:7474",
            "0.0.0.0:7474",
        ] {
            assert_eq!(
                o.mtu_bounds_for(addr(tunnelled)),
                (1200, 1232),
                "{tunnelled}"
            );
        }
    }

    #[test]
    fn the_transport_config_follows_the_address() {
        // quinn's TransportConfig has no getters; its Debug output names every field.
        let o = EndpointOptions::default();
        let wide = format!("{:?}", o.transport_config_for(addr("100.64.0.7:7474")));
        assert!(wide.contains("upper_bound: 1232"), "{wide}");
        assert!(wide.contains("enable_segmentation_offload: true"), "{wide}");
        let near = format!("{:?}", o.transport_config_for(addr("127.0.0.1:7474")));
        let initial = format!("initial_mtu: {}", o.loopback_initial_mtu);
        assert!(near.contains(&initial), "{near}");
        assert!(near.contains("mtu_discovery_config: None"), "{near}");
        assert!(
            near.contains("enable_segmentation_offload: false"),
            "{near}"
        );
    }

    #[test]
    fn the_endpoint_accepts_the_largest_datagram_any_peer_may_send() {
        let o = EndpointOptions::default();
        assert!(o.max_accepted_payload() >= o.loopback_max_mtu);
        assert!(o.max_accepted_payload() >= o.max_mtu);
        let tiny = EndpointOptions {
            max_mtu: 1000,
            loopback_initial_mtu: 1000,
            loopback_max_mtu: 1000,
            ..o
        };
        assert_eq!(tiny.max_accepted_payload(), QUIC_MIN_MTU);
    }

    #[test]
    fn segmentation_offload_stops_where_a_batch_would_exceed_one_udp_payload() {
        assert!(!exceeds_gso_batch(1232));
        assert!(!exceeds_gso_batch(6550));
        assert!(exceeds_gso_batch(6551));
        assert!(exceeds_gso_batch(LOOPBACK_MAX_MTU));
    }

    #[test]
    fn loopback_datagrams_fit_the_loopback_link_over_ipv4_and_ipv6() {
        let o = EndpointOptions::default();
        assert_eq!(o.loopback_initial_mtu, o.loopback_max_mtu);
        assert!(usize::from(o.loopback_initial_mtu) + 40 + 8 <= 65536);
        assert!(o.loopback_initial_mtu <= MAX_IPV4_UDP_PAYLOAD);
        assert!(o.max_accepted_payload() >= o.loopback_initial_mtu);
    }

    #[test]
    fn alert_closes_are_recognised() {
        let alert = quinn::TransportErrorCode::crypto(42);
        let close = quinn::ConnectionClose {
            error_code: alert,
            frame_type: None,
            reason: Default::default(),
        };
        assert!(closed_by_tls_alert(&ConnectionError::ConnectionClosed(
            close
        )));
        assert!(!closed_by_tls_alert(&ConnectionError::TimedOut));
    }

    #[tokio::test]
    async fn binding_port_zero_reports_the_real_port() {
        let id = Identity::generate().unwrap();
        let ep = Endpoint::bind("127.0.0.1:0".parse().unwrap(), id, AllowedPeers::new()).unwrap();
        assert_ne!(ep.local_addr().unwrap().port(), 0);
    }

    #[tokio::test]
    async fn binding_a_used_port_names_the_address() {
        let a = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            Identity::generate().unwrap(),
            AllowedPeers::new(),
        )
        .unwrap();
        let addr = a.local_addr().unwrap();
        let err =
            Endpoint::bind(addr, Identity::generate().unwrap(), AllowedPeers::new()).unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
