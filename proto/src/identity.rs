//! [`Identity`]: this peer's key pair and self-signed certificate, and how a peer id is derived.
//!
//! A peer id is the BLAKE3 hash of the DER `SubjectPublicKeyInfo` of a peer's certificate. It is
//! computed from the certificate a peer presents in the TLS handshake ([`peer_id_of_cert`]), so
//! the only way to own an id is to hold the private key behind that public key.
//!
//! This module owns generating, saving and loading the identity files (`key.pem`, mode 0600, and
//! `cert.pem`) in a workspace's `.botsync/identity/` directory. It does not decide which peers are
//! trusted (that is [`crate::tls`]) and does not open sockets (that is [`crate::endpoint`]).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use botsync_engine::PeerId;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ParsedCertificate;

/// Name of the private key file inside the identity directory.
pub const KEY_FILE: &str = "key.pem";
/// Name of the certificate file inside the identity directory.
pub const CERT_FILE: &str = "cert.pem";
/// Name of the identity directory inside a workspace's `.botsync/` directory.
pub const IDENTITY_DIR: &str = "identity";
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

    /// Write `key.pem` and `cert.pem` into `dir` (a workspace's `.botsync/identity/`), creating
    /// the directory with mode 0700. The key file is created with mode 0600 from the start, never
    /// widened then narrowed. Refuses to overwrite an existing key: replacing it would change this
    /// peer's id and every other peer would refuse it.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        create_private_dir(dir).map_err(|source| IdentityError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        if key_path.exists() {
            return Err(IdentityError::AlreadyExists { path: key_path });
        }
        write_new(&cert_path, self.cert_pem().as_bytes(), 0o644)?;
        write_new(&key_path, self.key.serialize_pem().as_bytes(), 0o600)?;
        Ok(())
    }

    /// Load the identity saved in `dir` by [`Identity::save`].
    ///
    /// Refuses a key file that group or others may read or write, a missing or garbled file, and
    /// a certificate that does not belong to the key.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        check_key_mode(&key_path)?;
        let key_pem = read_text(&key_path)?;
        let cert_pem = read_text(&cert_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::Garbled {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let cert = parse_cert_pem(&cert_pem).map_err(|reason| IdentityError::Garbled {
            path: cert_path.clone(),
            reason,
        })?;
        let peer_id = peer_id_of_cert(&cert).map_err(|source| IdentityError::Garbled {
            path: cert_path.clone(),
            reason: source.to_string(),
        })?;
        let key_spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        if PeerId(*blake3::hash(&key_spki).as_bytes()) != peer_id {
            return Err(IdentityError::Mismatch {
                key: key_path,
                cert: cert_path,
            });
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

    /// The certificate, PEM-encoded (the content of `cert.pem`).
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

/// Errors generating, saving or loading an [`Identity`].
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
    /// An identity file is missing.
    #[error("no identity at {path}: run `botsync init` to create one")]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// An identity file exists but cannot be parsed.
    #[error(
        "identity file {path} is garbled ({reason}); restore it from a backup or run `botsync init` in a fresh workspace"
    )]
    Garbled {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file may be read or written by users other than its owner.
    #[error("identity key {path} is {what} by others (mode {mode:04o}); run chmod 600 on it")]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// "readable", "writable" or "readable and writable".
        what: &'static str,
    },
    /// The certificate does not carry the key's public key.
    #[error(
        "identity certificate {cert} does not belong to key {key}; restore both files from the same backup"
    )]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// `save` found an identity already there.
    #[error(
        "an identity already exists at {path}; remove it first only if you really want a new peer id"
    )]
    AlreadyExists {
        /// The existing key file.
        path: PathBuf,
    },
    /// Any other file system error.
    #[error("cannot access identity file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn read_text(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => IdentityError::Missing {
            path: path.to_owned(),
        },
        io::ErrorKind::InvalidData => IdentityError::Garbled {
            path: path.to_owned(),
            reason: "not UTF-8 text".into(),
        },
        _ => IdentityError::Io {
            path: path.to_owned(),
            source,
        },
    })
}

/// Decode the single `CERTIFICATE` block of a PEM file.
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

#[cfg(unix)]
fn check_key_mode(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => IdentityError::Missing {
            path: path.to_owned(),
        },
        _ => IdentityError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    let readable = mode & 0o044 != 0;
    let writable = mode & 0o022 != 0;
    let what = match (readable, writable) {
        (false, false) => return Ok(()),
        (true, false) => "readable",
        (false, true) => "writable",
        (true, true) => "readable and writable",
    };
    Err(IdentityError::KeyExposed {
        path: path.to_owned(),
        mode,
        what,
    })
}

#[cfg(not(unix))]
fn check_key_mode(_path: &Path) -> Result<(), IdentityError> {
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Write `bytes` to a temporary file created with `mode`, fsync it and rename it to `path`, so a
/// crash leaves either no file or a complete one, and the key is never briefly world-readable.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)
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
    fn save_then_load_keeps_the_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".botsync").join(IDENTITY_DIR);
        let id = Identity::generate().unwrap();
        id.save(&path).unwrap();
        let back = Identity::load(&path).unwrap();
        assert_eq!(back.peer_id(), id.peer_id());
        assert_eq!(back.cert_der(), id.cert_der());
    }

    #[cfg(unix)]
    #[test]
    fn saved_key_is_private_and_dir_is_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity");
        Identity::generate().unwrap().save(&path).unwrap();
        let key_mode = fs::metadata(path.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let dir_mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode & 0o077, 0, "key mode {key_mode:o}");
        assert_eq!(dir_mode & 0o077, 0, "dir mode {dir_mode:o}");
    }

    #[test]
    fn save_refuses_to_overwrite_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        Identity::generate().unwrap().save(dir.path()).unwrap();
        let err = Identity::generate().unwrap().save(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::AlreadyExists { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_a_group_writable_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Identity::generate().unwrap().save(dir.path()).unwrap();
        let key = dir.path().join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o620)).unwrap();
        let err = Identity::load(dir.path()).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::KeyExposed {
                what: "writable",
                mode: 0o620,
                ..
            }
        ));
        assert!(err.to_string().contains("run chmod 600"), "{err}");
    }

    #[test]
    fn load_reports_a_missing_identity() {
        let dir = tempfile::tempdir().unwrap();
        let err = Identity::load(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("botsync init"), "{err}");
    }

    #[test]
    fn load_reports_a_garbled_certificate() {
        let dir = tempfile::tempdir().unwrap();
        Identity::generate().unwrap().save(dir.path()).unwrap();
        fs::write(
            dir.path().join(CERT_FILE),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = Identity::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, IdentityError::Garbled { ref path, .. } if path.ends_with(CERT_FILE)),
            "{err}"
        );
    }

    #[test]
    fn load_refuses_a_certificate_of_another_key() {
        let dir = tempfile::tempdir().unwrap();
        Identity::generate().unwrap().save(dir.path()).unwrap();
        let other = Identity::generate().unwrap();
        fs::write(dir.path().join(CERT_FILE), other.cert_pem()).unwrap();
        let err = Identity::load(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Mismatch { .. }), "{err}");
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
