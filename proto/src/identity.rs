//! [`Identity`]: this peer's key pair and self-signed certificate, and how a peer id is derived.
//!
//! A peer id is the BLAKE3 hash of the DER `SubjectPublicKeyInfo` of a peer's certificate. It is
//! computed from the certificate a peer presents in the TLS handshake ([`peer_id_of_cert`]), so
//! the only way to own an id is to hold the private key behind that public key.
//!
//! This module keeps key material in memory only: it generates an identity, parses one from PEM
//! text ([`Identity::from_pem`], which checks that the certificate belongs to the key) and turns
//! it back into PEM ([`Identity::key_pem`], [`Identity::cert_pem`]). It does not touch the disk:
//! where the key lives and who may read it is the CLI's node layer. It does not decide which peers
//! are trusted (that is [`crate::tls`]) and does not open sockets (that is [`crate::endpoint`]).

use std::fmt;

use botsync_engine::PeerId;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ParsedCertificate;

/// Subject common name and DNS name written into every botsync certificate.
pub const CERT_SUBJECT: &str = "botsync";

/// This peer's identity: an Ed25519 key pair and a self-signed certificate over its public key.
///
/// Ed25519 is used because rustls' ring provider accepts it for TLS 1.3 handshake signatures in
/// both directions, and its signatures are small and fast to verify.
pub struct Identity {
    key: KeyPair,
    cert: CertificateDer<'static>,
    peer_id: PeerId,
}

impl Identity {
    /// Generate a fresh identity: a new Ed25519 key pair and a self-signed certificate for
    /// [`CERT_SUBJECT`], valid from 2024 to 9999 (validity is not what botsync trusts; the pinned
    /// peer id is).
    pub fn generate() -> Result<Identity, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(IdentityError::Generate)?;
        Identity::self_signed(key)
    }

    /// Rebuild an identity from its private key alone (PEM text [`Identity::key_pem`] wrote): a
    /// new self-signed certificate over the same public key, so the peer id is unchanged. Used
    /// when the certificate file is lost or damaged.
    pub fn from_key_pem(key_pem: &str) -> Result<Identity, IdentityError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| IdentityError::Garbled {
            part: IdentityPart::Key,
            reason: e.to_string(),
        })?;
        Identity::self_signed(key)
    }

    fn self_signed(key: KeyPair) -> Result<Identity, IdentityError> {
        let mut params = CertificateParams::new(vec![CERT_SUBJECT.to_owned()])
            .map_err(IdentityError::Generate)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, CERT_SUBJECT);
        params.distinguished_name = name;
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(9999, 12, 31);
        let cert = params.self_signed(&key).map_err(IdentityError::Generate)?;
        let cert = cert.der().clone();
        let peer_id =
            peer_id_of_cert(&cert).map_err(|source| IdentityError::Generated { source })?;
        Ok(Identity { key, cert, peer_id })
    }

    /// Parse an identity from the PEM text [`Identity::key_pem`] and [`Identity::cert_pem`]
    /// produced: a PKCS#8 private key and a single `CERTIFICATE` block.
    ///
    /// Refuses text that does not parse, and a certificate that does not carry the key's public
    /// key (it would prove another peer's id, and every handshake would fail).
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Identity, IdentityError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| IdentityError::Garbled {
            part: IdentityPart::Key,
            reason: e.to_string(),
        })?;
        let cert = parse_cert_pem(cert_pem).map_err(|reason| IdentityError::Garbled {
            part: IdentityPart::Certificate,
            reason,
        })?;
        let peer_id = peer_id_of_cert(&cert).map_err(|source| IdentityError::Garbled {
            part: IdentityPart::Certificate,
            reason: source.reason,
        })?;
        let key_spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        if PeerId(*blake3::hash(&key_spki).as_bytes()) != peer_id {
            return Err(IdentityError::Mismatch);
        }
        Ok(Identity { key, cert, peer_id })
    }

    /// This peer's id: BLAKE3 of its certificate's public key.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The certificate, DER-encoded, as presented in handshakes.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate, PEM-encoded, as [`Identity::from_pem`] reads it back.
    pub fn cert_pem(&self) -> String {
        let body = data_encoding::BASE64.encode(self.cert.as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            // base64 output is ASCII, so every 64-byte slice is valid UTF-8.
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// The private key, PKCS#8 PEM, as [`Identity::from_pem`] reads it back. Whoever stores it
    /// must keep it readable by its owner only: it is this peer's id.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The private key as rustls wants it (PKCS#8 DER). Keep it in memory only.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// The peer id a certificate proves: BLAKE3 of its DER `SubjectPublicKeyInfo`.
///
/// `der` comes from the network: a malformed certificate is an error, never a panic.
pub fn peer_id_of_cert(der: &CertificateDer<'_>) -> Result<PeerId, CertError> {
    let parsed = ParsedCertificate::try_from(der).map_err(|e| CertError {
        reason: e.to_string(),
    })?;
    let spki = parsed.subject_public_key_info();
    Ok(PeerId(*blake3::hash(spki.as_ref()).as_bytes()))
}

/// A certificate that could not be parsed into a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate is malformed: {reason}")]
pub struct CertError {
    /// What the X.509 parser said.
    pub reason: String,
}

/// Errors generating or parsing an [`Identity`].
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key pair or certificate could not be generated.
    #[error("cannot generate an identity: {0}")]
    Generate(#[source] rcgen::Error),
    /// A freshly generated certificate did not parse back (a bug in a dependency).
    #[error("generated certificate does not parse back")]
    Generated {
        /// The parse error.
        #[source]
        source: CertError,
    },
    /// The PEM text of the key or the certificate cannot be parsed.
    #[error("identity {part} is garbled: {reason}")]
    Garbled {
        /// Which of the two.
        part: IdentityPart,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate does not carry the key's public key.
    #[error("identity certificate does not belong to the key")]
    Mismatch,
}

/// One of the two halves of an identity's PEM text, named in [`IdentityError::Garbled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityPart {
    /// The private key.
    Key,
    /// The certificate.
    Certificate,
}

impl fmt::Display for IdentityPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentityPart::Key => "key",
            IdentityPart::Certificate => "certificate",
        })
    }
}

/// Decode the single `CERTIFICATE` block of PEM text.
fn parse_cert_pem(pem: &str) -> Result<CertificateDer<'static>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN).ok_or("no BEGIN CERTIFICATE line")? + BEGIN.len();
    let len = pem[start..].find(END).ok_or("no END CERTIFICATE line")?;
    let body: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = data_encoding::BASE64
        .decode(body.as_bytes())
        .map_err(|e| format!("bad base64: {e}"))?;
    Ok(CertificateDer::from(der))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn peer_id_is_blake3_of_the_key_spki() {
        let id = Identity::generate().unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&id.key);
        assert_eq!(id.peer_id(), PeerId(*blake3::hash(&spki).as_bytes()));
    }

    #[test]
    fn two_identities_differ() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.peer_id(), b.peer_id());
    }

    #[test]
    fn pem_round_trip_keeps_the_identity() {
        let id = Identity::generate().unwrap();
        let back = Identity::from_pem(&id.key_pem(), &id.cert_pem()).unwrap();
        assert_eq!(back.peer_id(), id.peer_id());
        assert_eq!(back.cert_der(), id.cert_der());
        assert_eq!(back.key_pem(), id.key_pem());
    }

    #[test]
    fn a_certificate_rebuilt_from_the_key_proves_the_same_id() {
        let id = Identity::generate().unwrap();
        let rebuilt = Identity::from_key_pem(&id.key_pem()).unwrap();
        assert_eq!(rebuilt.peer_id(), id.peer_id());
        let back = Identity::from_pem(&id.key_pem(), &rebuilt.cert_pem()).unwrap();
        assert_eq!(back.peer_id(), id.peer_id());
    }

    #[test]
    fn from_pem_reports_a_garbled_key() {
        let id = Identity::generate().unwrap();
        let err = Identity::from_pem("not a key", &id.cert_pem()).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::Garbled {
                    part: IdentityPart::Key,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("identity key is garbled: "),
            "{err}"
        );
    }

    #[test]
    fn from_pem_reports_a_garbled_certificate() {
        let id = Identity::generate().unwrap();
        for cert in [
            "",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n",
        ] {
            let err = Identity::from_pem(&id.key_pem(), cert).unwrap_err();
            assert!(
                matches!(
                    err,
                    IdentityError::Garbled {
                        part: IdentityPart::Certificate,
                        ..
                    }
                ),
                "{cert:?}: {err}"
            );
        }
    }

    #[test]
    fn from_pem_refuses_a_certificate_of_another_key() {
        let id = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let err = Identity::from_pem(&id.key_pem(), &other.cert_pem()).unwrap_err();
        assert!(matches!(err, IdentityError::Mismatch), "{err}");
        assert_eq!(
            err.to_string(),
            "identity certificate does not belong to the key"
        );
    }

    #[test]
    fn debug_never_prints_the_key() {
        let id = Identity::generate().unwrap();
        let text = format!("{id:?}");
        let key_body = id.key_pem().lines().nth(1).unwrap().to_owned();
        assert!(!text.contains(&key_body), "{text}");
        assert!(text.contains("peer_id"), "{text}");
    }

    #[test]
    fn a_garbage_certificate_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x30",
            b"\x30\x82\xff\xff",
            b"not a certificate at all",
        ] {
            assert!(peer_id_of_cert(&CertificateDer::from(bytes.to_vec())).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_the_cert_parser(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = peer_id_of_cert(&CertificateDer::from(bytes));
        }

        #[test]
        fn a_corrupted_certificate_never_panics_and_never_keeps_its_id(
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let id = Identity::generate().unwrap();
            let mut der = id.cert_der().to_vec();
            let i = at.index(der.len());
            der[i] ^= flip;
            // Either the certificate no longer parses, or it names a key; if the flipped byte was
            // inside the public key, the id must change.
            if let Ok(other) = peer_id_of_cert(&CertificateDer::from(der)) {
                let spki = rcgen::PublicKeyData::subject_public_key_info(&id.key);
                let cert = id.cert_der().as_ref();
                let start = cert.windows(spki.len()).position(|w| w == spki.as_slice()).unwrap();
                if (start..start + spki.len()).contains(&i) {
                    prop_assert_ne!(other, id.peer_id());
                }
            }
        }
    }
}
