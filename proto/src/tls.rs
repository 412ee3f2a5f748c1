//! Pinned mutual TLS 1.3: rustls configurations whose only trust decision is a peer id.
//!
//! botsync certificates are self-signed; there is no CA. Instead each side pins the other's peer
//! id (BLAKE3 of the certificate's public key, see [`crate::identity`]):
//!
//! - the dialer accepts exactly one server certificate, no intermediates, whose id equals the id
//!   peers.json names for that host ([`PinnedServerVerifier`]);
//! - the listener demands a client certificate, exactly one, whose id is in the shared, runtime-
//!   updatable [`AllowedPeers`] set ([`PinnedClientVerifier`]);
//! - both still verify the TLS 1.3 `CertificateVerify` signature with the ring provider, so a
//!   stolen certificate without its private key fails the handshake.
//!
//! Each verifier records what it saw in a [`VerdictSlot`], which the endpoint reads after a failed
//! handshake to tell the user which id was presented. Session resumption is disabled on both
//! sides: a resumed session would skip the certificate check and let a peer removed from
//! peers.json back in. This module owns the rustls configuration; it does not open sockets.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use botsync_engine::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{Identity, peer_id_of_cert};

/// The ALPN protocol id: the protocol's major version lives here and in `Hello`.
pub const ALPN: &[u8] = b"botsync/1";

/// The ALPN of coordination connections (the replicated lock table, docs/LOCKS.md): the same
/// pinned TLS, a separate connection, so a peer without coordination refuses it at the
/// handshake and its sync connections never see a coordination message.
pub const COORD_ALPN: &[u8] = b"botsync-coord/1";

/// The set of peer ids this peer accepts connections from (the ids in peers.json).
///
/// Cloning shares the set: the endpoint's verifier sees an update made through any clone at the
/// next handshake, without rebinding.
#[derive(Clone, Default)]
pub struct AllowedPeers(Arc<RwLock<HashSet<PeerId>>>);

impl AllowedPeers {
    /// An empty set: nobody may connect.
    pub fn new() -> AllowedPeers {
        AllowedPeers::default()
    }

    /// Allow `peer`. Returns whether it was newly added.
    pub fn insert(&self, peer: PeerId) -> bool {
        self.write().insert(peer)
    }

    /// Stop allowing `peer` for future handshakes. Returns whether it was present.
    pub fn remove(&self, peer: &PeerId) -> bool {
        self.write().remove(peer)
    }

    /// Replace the whole set (after peers.json was edited).
    pub fn replace(&self, peers: impl IntoIterator<Item = PeerId>) {
        *self.write() = peers.into_iter().collect();
    }

    /// Whether `peer` is allowed.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.read().contains(peer)
    }

    /// Number of allowed peers.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no peer is allowed.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A panic while holding the lock cannot leave a HashSet half-updated in a way that matters
    // here (insert/remove are atomic from our point of view), so a poisoned lock is used as is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<PeerId>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<PeerId>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FromIterator<PeerId> for AllowedPeers {
    fn from_iter<I: IntoIterator<Item = PeerId>>(iter: I) -> AllowedPeers {
        AllowedPeers(Arc::new(RwLock::new(iter.into_iter().collect())))
    }
}

impl fmt::Debug for AllowedPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.read().iter()).finish()
    }
}

/// What a pinned verifier concluded about the certificate a peer presented in one handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The certificate could not be parsed, or intermediates were sent.
    Malformed,
    /// The certificate parsed, but its id is not the one expected (dialer) or not allowed
    /// (listener).
    Refused(PeerId),
    /// The id was accepted; the signature check had not failed (yet).
    Accepted(PeerId),
    /// The id was acceptable but the handshake signature did not verify: the peer does not hold
    /// the private key of the certificate it presented.
    BadSignature(PeerId),
}

/// Where a verifier records its [`Verdict`] for one handshake. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct VerdictSlot(Arc<Mutex<Option<Verdict>>>);

impl VerdictSlot {
    /// The last verdict recorded, if the peer got as far as presenting a certificate.
    pub fn get(&self) -> Option<Verdict> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, verdict: Verdict) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
    }
}

/// The dialer's verifier: accepts only the server certificate whose id is `expected`.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    expected: PeerId,
    algorithms: WebPkiSupportedAlgorithms,
    slot: VerdictSlot,
}

impl PinnedServerVerifier {
    /// A verifier that accepts only `expected`, recording its verdict in `slot`.
    pub fn new(expected: PeerId, slot: VerdictSlot) -> PinnedServerVerifier {
        PinnedServerVerifier {
            expected,
            algorithms: algorithms(),
            slot,
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_id(end_entity, intermediates, &self.slot, |id| {
            *id == self.expected
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algorithms, &self.slot)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The listener's verifier: demands a client certificate whose id is in an [`AllowedPeers`].
#[derive(Debug)]
pub struct PinnedClientVerifier {
    allowed: AllowedPeers,
    algorithms: WebPkiSupportedAlgorithms,
    slot: VerdictSlot,
}

impl PinnedClientVerifier {
    /// A verifier that accepts the ids in `allowed` (read at each handshake), recording its
    /// verdict in `slot`.
    pub fn new(allowed: AllowedPeers, slot: VerdictSlot) -> PinnedClientVerifier {
        PinnedClientVerifier {
            allowed,
            algorithms: algorithms(),
            slot,
        }
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_id(end_entity, intermediates, &self.slot, |id| {
            self.allowed.contains(id)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algorithms, &self.slot)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }

    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// The crypto provider botsync uses everywhere: rustls' ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's TLS configuration: TLS 1.3 only, ALPN [`ALPN`], our certificate, client
/// certificates pinned to `allowed`, no session tickets. The returned slot receives the verdict
/// on the client's certificate; build one configuration per incoming connection to read it.
pub fn server_config(
    identity: &Identity,
    allowed: AllowedPeers,
) -> Result<(rustls::ServerConfig, VerdictSlot), TlsError> {
    let slot = VerdictSlot::default();
    let verifier = PinnedClientVerifier::new(allowed, slot.clone());
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![identity.cert_der().clone()],
            identity.private_key_der(),
        )?;
    config.alpn_protocols = vec![ALPN.to_vec(), COORD_ALPN.to_vec()];
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok((config, slot))
}

/// The dialer's TLS configuration: TLS 1.3 only, ALPN [`ALPN`], our certificate as client
/// certificate, the server pinned to `expected`, no resumption. The returned slot receives the
/// verdict on the server's certificate.
pub fn client_config(
    identity: &Identity,
    expected: PeerId,
) -> Result<(rustls::ClientConfig, VerdictSlot), TlsError> {
    client_config_for(identity, expected, ALPN)
}

/// [`client_config`] asking for the protocol `alpn` ([`ALPN`] or [`COORD_ALPN`]).
pub fn client_config_for(
    identity: &Identity,
    expected: PeerId,
    alpn: &[u8],
) -> Result<(rustls::ClientConfig, VerdictSlot), TlsError> {
    let slot = VerdictSlot::default();
    let verifier = PinnedServerVerifier::new(expected, slot.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(
            vec![identity.cert_der().clone()],
            identity.private_key_der(),
        )?;
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok((config, slot))
}

/// The id of the peer at the other end of an established connection, read from the certificate
/// it presented (the only source of a remote identity botsync trusts).
pub fn remote_peer_id(conn: &quinn::Connection) -> Result<PeerId, RemoteIdError> {
    let identity = conn.peer_identity().ok_or(RemoteIdError::NoCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| RemoteIdError::NoCertificate)?;
    let first = certs.first().ok_or(RemoteIdError::NoCertificate)?;
    peer_id_of_cert(first).map_err(|e| RemoteIdError::Malformed { reason: e.reason })
}

/// Error building a TLS configuration (an identity rustls does not accept).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the tls configuration from this identity: {0}")]
pub struct TlsError(#[from] rustls::Error);

/// Error reading the remote peer's id from a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteIdError {
    /// The connection carries no certificate (handshake not complete, or not a botsync peer).
    #[error("the connection carries no peer certificate")]
    NoCertificate,
    /// The certificate does not parse.
    #[error("the peer certificate is malformed: {reason}")]
    Malformed {
        /// The parser's complaint.
        reason: String,
    },
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered)
}

/// The shared half of both verifiers: one certificate, parsable, with an acceptable id.
fn check_id(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    slot: &VerdictSlot,
    acceptable: impl Fn(&PeerId) -> bool,
) -> Result<PeerId, rustls::Error> {
    if !intermediates.is_empty() {
        slot.set(Verdict::Malformed);
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ));
    }
    let id = peer_id_of_cert(end_entity).map_err(|_| {
        slot.set(Verdict::Malformed);
        rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
    })?;
    if !acceptable(&id) {
        slot.set(Verdict::Refused(id));
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ));
    }
    slot.set(Verdict::Accepted(id));
    Ok(id)
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
    slot: &VerdictSlot,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let result = rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms);
    if result.is_err()
        && let Some(Verdict::Accepted(id)) = slot.get()
    {
        slot.set(Verdict::BadSignature(id));
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity::generate().unwrap()
    }

    #[test]
    fn allowed_peers_are_shared_between_clones() {
        let a = identity().peer_id();
        let allowed = AllowedPeers::new();
        let clone = allowed.clone();
        assert!(clone.insert(a));
        assert!(allowed.contains(&a));
        assert!(allowed.remove(&a));
        assert!(!clone.contains(&a) && clone.is_empty());
        clone.replace([a]);
        assert_eq!(allowed.len(), 1);
    }

    #[test]
    fn server_verifier_accepts_only_the_expected_id() {
        let (good, bad) = (identity(), identity());
        let slot = VerdictSlot::default();
        let v = PinnedServerVerifier::new(good.peer_id(), slot.clone());
        let name = ServerName::try_from("botsync").unwrap();
        let now = UnixTime::now();
        assert!(
            v.verify_server_cert(good.cert_der(), &[], &name, &[], now)
                .is_ok()
        );
        assert_eq!(slot.get(), Some(Verdict::Accepted(good.peer_id())));
        assert!(
            v.verify_server_cert(bad.cert_der(), &[], &name, &[], now)
                .is_err()
        );
        assert_eq!(slot.get(), Some(Verdict::Refused(bad.peer_id())));
    }

    #[test]
    fn client_verifier_follows_runtime_updates_of_the_allowed_set() {
        let peer = identity();
        let allowed = AllowedPeers::new();
        let slot = VerdictSlot::default();
        let v = PinnedClientVerifier::new(allowed.clone(), slot.clone());
        let now = UnixTime::now();
        assert!(v.verify_client_cert(peer.cert_der(), &[], now).is_err());
        allowed.insert(peer.peer_id());
        assert!(v.verify_client_cert(peer.cert_der(), &[], now).is_ok());
        assert!(v.client_auth_mandatory() && v.offer_client_auth());
    }

    #[test]
    fn intermediates_and_garbage_are_refused_as_malformed() {
        let peer = identity();
        let allowed: AllowedPeers = [peer.peer_id()].into_iter().collect();
        let slot = VerdictSlot::default();
        let v = PinnedClientVerifier::new(allowed, slot.clone());
        let now = UnixTime::now();
        let chain = [peer.cert_der().clone()];
        assert!(v.verify_client_cert(peer.cert_der(), &chain, now).is_err());
        assert_eq!(slot.get(), Some(Verdict::Malformed));
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(v.verify_client_cert(&garbage, &[], now).is_err());
        assert_eq!(slot.get(), Some(Verdict::Malformed));
    }

    #[test]
    fn configs_use_botsync_alpn_and_no_resumption() {
        let me = identity();
        let (server, _) = server_config(&me, AllowedPeers::new()).unwrap();
        let (client, _) = client_config(&me, me.peer_id()).unwrap();
        assert_eq!(
            server.alpn_protocols,
            vec![ALPN.to_vec(), COORD_ALPN.to_vec()]
        );
        assert_eq!(client.alpn_protocols, vec![ALPN.to_vec()]);
        assert_eq!(server.send_tls13_tickets, 0);
    }
}
