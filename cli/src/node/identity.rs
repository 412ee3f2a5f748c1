//! `.botsync/identity/`: this peer's private key (`key.pem`, mode 0600) and certificate
//! (`cert.pem`), in a directory of mode 0700.
//!
//! The node layer owns these files: it creates them private from the start, refuses to overwrite
//! a key (a new key is a new peer id, which every other peer would refuse), and refuses to load a
//! key others can read or write. What the PEM text means (parsing, the check that the certificate
//! belongs to the key, the peer id) is `botsync_proto::identity`, which keeps key material in
//! memory only. The paths come from the engine's [`Layout`].

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use botsync_engine::layout::Layout;
use botsync_proto::identity::{Identity, IdentityError, IdentityPart};

use crate::exit::usage;

/// Write `id` into the workspace's identity directory, creating it with mode 0700. The key file
/// is created with mode 0600 from the start, never widened then narrowed. Refuses to overwrite an
/// existing key.
pub fn save(layout: &Layout, id: &Identity) -> Result<()> {
    let dir = layout.identity();
    create_private_dir(&dir)
        .with_context(|| format!("cannot create the identity directory {}", dir.display()))?;
    let key = layout.identity_key();
    if key.exists() {
        bail!(
            "an identity already exists at {}; remove it first only if you really want a new peer id",
            key.display()
        );
    }
    write_new(&layout.identity_cert(), id.cert_pem().as_bytes(), 0o644)?;
    write_new(&key, id.key_pem().as_bytes(), 0o600)?;
    Ok(())
}

/// Load the identity [`save`] wrote.
///
/// Refuses a key file that group or others may read or write, a missing or garbled file, and a
/// certificate that does not belong to the key; each is a usage error (exit code 2) naming the
/// file and what to do.
pub fn load(layout: &Layout) -> Result<Identity> {
    let key = layout.identity_key();
    let cert = layout.identity_cert();
    check_key_mode(layout, &key)?;
    let key_pem = read_text(&key)?.ok_or_else(|| missing(layout))?;
    let cert_pem = read_text(&cert)?.ok_or_else(|| {
        usage(format!(
            "identity certificate {} is missing; run `botsync init` to rebuild it from key.pem (the id stays the same)",
            cert.display()
        ))
    })?;
    Identity::from_pem(&key_pem, &cert_pem).map_err(|e| match e {
        IdentityError::Garbled { part, reason } => {
            let path = match part {
                IdentityPart::Key => &key,
                IdentityPart::Certificate => &cert,
            };
            garbled(path, &reason)
        }
        IdentityError::Mismatch => usage(format!(
            "identity certificate {} does not belong to key {}; run `botsync init` to rebuild the certificate from the key",
            cert.display(),
            key.display()
        )),
        other => usage(other),
    })
}

/// What [`ensure`] did to the identity files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Both files were fine.
    Kept,
    /// A new workspace got its first identity.
    Created,
    /// The certificate was lost or damaged and was rebuilt from the key: the id is unchanged.
    CertificateRebuilt,
    /// The key was lost or damaged and a new identity was made (`--new-identity`).
    Replaced,
}

impl Repair {
    /// A stable name for `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Repair::Kept => "kept",
            Repair::Created => "created",
            Repair::CertificateRebuilt => "certificate_rebuilt",
            Repair::Replaced => "replaced",
        }
    }
}

/// Make the identity usable, for `botsync init`: create it in a new workspace, rebuild a lost
/// or damaged certificate from the key (same id), and replace a lost or damaged key only with
/// `new_identity`. `existed`: `.botsync/` was there before this `init`.
pub fn ensure(layout: &Layout, existed: bool, new_identity: bool) -> Result<Repair> {
    let key = layout.identity_key();
    if !key.exists() {
        // A workspace that was used before (its identity directory, peers or index exist) had
        // an id its peers know: a new one is only made when asked.
        let used = existed
            && (layout.identity().exists() || layout.peers().exists() || layout.db().exists());
        if used && !new_identity {
            return Err(missing(layout));
        }
        remove_if_present(&layout.identity_cert())?;
        save(layout, &Identity::generate()?)?;
        return Ok(if used {
            Repair::Replaced
        } else {
            Repair::Created
        });
    }
    check_key_mode(layout, &key)?;
    let parsed = read_text(&key).and_then(|t| {
        let text = t.ok_or_else(|| missing(layout))?;
        Identity::from_key_pem(&text).map_err(|e| match e {
            IdentityError::Garbled { reason, .. } => garbled(&key, &reason),
            other => usage(other),
        })
    });
    match parsed {
        Ok(id) if new_identity => Err(usage(format!(
            "this workspace's identity is fine (id {}); --new-identity only replaces a lost or damaged key",
            id.peer_id().to_copy_safe()
        ))),
        Ok(id) => {
            if load(layout).is_ok() {
                return Ok(Repair::Kept);
            }
            write_new(&layout.identity_cert(), id.cert_pem().as_bytes(), 0o644)?;
            Ok(Repair::CertificateRebuilt)
        }
        Err(_) if new_identity => {
            let damaged = key.with_extension("pem.damaged");
            fs::rename(&key, &damaged)
                .with_context(|| format!("keeping the damaged key {} aside", key.display()))?;
            remove_if_present(&layout.identity_cert())?;
            save(layout, &Identity::generate()?)?;
            Ok(Repair::Replaced)
        }
        Err(e) => Err(e),
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// The error for a workspace without a key.
fn missing(layout: &Layout) -> anyhow::Error {
    usage(format!(
        "{} has no identity key ({}); restore key.pem from a backup, or run `botsync init --new-identity` to make a new one (a new peer id: every peer must re-add it)",
        layout.root().display(),
        layout.identity_key().display()
    ))
}

fn garbled(path: &Path, reason: &str) -> anyhow::Error {
    let is_key = path.file_name().is_some_and(|n| n == "key.pem");
    let what_to_do = if is_key {
        "restore it from a backup, or run `botsync init --new-identity` to make a new one (a new peer id: every peer must re-add it)"
    } else {
        "run `botsync init` to rebuild it from key.pem (the id stays the same)"
    };
    usage(format!(
        "identity file {} is garbled ({reason}); {what_to_do}",
        path.display()
    ))
}

/// The file's text, or `None` if it does not exist.
fn read_text(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(garbled(path, "not UTF-8 text")),
        Err(e) => Err(usage(format!(
            "cannot read identity file {}: {e}; check its owner and permissions",
            path.display()
        ))),
    }
}

#[cfg(unix)]
fn check_key_mode(layout: &Layout, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(layout)),
        Err(e) => {
            return Err(usage(format!(
                "cannot read identity key {}: {e}; check its owner and permissions",
                path.display()
            )));
        }
    };
    let mode = meta.permissions().mode() & 0o7777;
    let readable = mode & 0o044 != 0;
    let writable = mode & 0o022 != 0;
    let what = match (readable, writable) {
        (false, false) => return Ok(()),
        (true, false) => "readable",
        (false, true) => "writable",
        (true, true) => "readable and writable",
    };
    Err(usage(format!(
        "identity key {} is {what} by others (mode {mode:04o}); run chmod 600 on it",
        path.display()
    )))
}

#[cfg(not(unix))]
fn check_key_mode(layout: &Layout, path: &Path) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(missing(layout))
    }
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

/// Write `bytes` to a temporary file created (O_CREAT|O_EXCL) with `mode`, fsync it and rename it
/// to `path`, so a crash leaves either no file or a complete one, and the key is never briefly
/// readable by others.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let context = || format!("cannot write identity file {}", path.display());
    let tmp = path.with_extension("pem.tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(context),
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
    let mut file = options.open(&tmp).with_context(context)?;
    file.write_all(bytes).with_context(context)?;
    file.sync_all().with_context(context)?;
    drop(file);
    fs::rename(&tmp, path).with_context(context)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::exit::{USAGE, code_for, one_line};

    /// A workspace directory with nothing in it yet.
    fn workspace() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        (dir, layout)
    }

    /// A workspace with a freshly saved identity.
    fn saved() -> (tempfile::TempDir, Layout, Identity) {
        let (dir, layout) = workspace();
        let id = Identity::generate().unwrap();
        save(&layout, &id).unwrap();
        (dir, layout, id)
    }

    /// Load must fail with a usage error; its one line.
    fn load_usage_error(layout: &Layout) -> String {
        let err = load(layout).unwrap_err();
        assert_eq!(code_for(&err), USAGE, "{err:#}");
        one_line(&err)
    }

    #[test]
    fn save_then_load_keeps_the_peer_id() {
        let (_dir, layout, id) = saved();
        let back = load(&layout).unwrap();
        assert_eq!(back.peer_id(), id.peer_id());
        assert_eq!(back.cert_der(), id.cert_der());
    }

    #[cfg(unix)]
    #[test]
    fn saved_key_is_private_and_dir_is_0700() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, layout, _id) = saved();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let key_mode = mode(&layout.identity_key());
        let dir_mode = mode(&layout.identity());
        assert_eq!(key_mode & 0o077, 0, "key mode {key_mode:o}");
        assert_eq!(dir_mode & 0o077, 0, "dir mode {dir_mode:o}");
        assert!(!layout.identity().join("key.pem.tmp").exists());
    }

    #[test]
    fn save_refuses_to_overwrite_an_identity() {
        let (_dir, layout, id) = saved();
        let err = save(&layout, &Identity::generate().unwrap()).unwrap_err();
        let text = one_line(&err);
        assert!(text.starts_with("an identity already exists at "), "{text}");
        assert!(text.contains("key.pem"), "{text}");
        assert_eq!(load(&layout).unwrap().peer_id(), id.peer_id());
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_a_group_writable_key() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, layout, _id) = saved();
        let key = layout.identity_key();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o620)).unwrap();
        assert_eq!(
            load_usage_error(&layout),
            format!(
                "identity key {} is writable by others (mode 0620); run chmod 600 on it",
                key.display()
            )
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_world_readable_key_is_refused_on_load() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, layout, _id) = saved();
        let key = layout.identity_key();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load_usage_error(&layout),
            format!(
                "identity key {} is readable by others (mode 0644); run chmod 600 on it",
                key.display()
            )
        );
    }

    #[test]
    fn load_reports_a_missing_identity() {
        let (_dir, layout) = workspace();
        let text = load_usage_error(&layout);
        assert!(
            text.starts_with(&format!(
                "{} has no identity key (",
                layout.root().display()
            )),
            "{text}"
        );
        assert!(text.contains("`botsync init --new-identity`"), "{text}");
    }

    #[test]
    fn load_reports_a_missing_certificate() {
        let (_dir, layout, _id) = saved();
        fs::remove_file(layout.identity_cert()).unwrap();
        let text = load_usage_error(&layout);
        assert!(text.starts_with("identity certificate "), "{text}");
        assert!(
            text.contains("cert.pem is missing; run `botsync init` to rebuild it"),
            "{text}"
        );
    }

    #[test]
    fn load_reports_a_garbled_certificate() {
        let (_dir, layout, _id) = saved();
        let cert = layout.identity_cert();
        fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = load_usage_error(&layout);
        assert!(
            text.starts_with(&format!("identity file {} is garbled (", cert.display())),
            "{text}"
        );
        assert!(
            text.ends_with("run `botsync init` to rebuild it from key.pem (the id stays the same)"),
            "{text}"
        );
    }

    #[test]
    fn load_reports_a_garbled_key() {
        let (_dir, layout, _id) = saved();
        let key = layout.identity_key();
        fs::write(&key, "not a key").unwrap();
        let text = load_usage_error(&layout);
        assert!(
            text.starts_with(&format!("identity file {} is garbled (", key.display())),
            "{text}"
        );
    }

    #[test]
    fn load_refuses_a_certificate_of_another_key() {
        let (_dir, layout, _id) = saved();
        let other = Identity::generate().unwrap();
        fs::write(layout.identity_cert(), other.cert_pem()).unwrap();
        let text = load_usage_error(&layout);
        assert_eq!(
            text,
            format!(
                "identity certificate {} does not belong to key {}; run `botsync init` to rebuild the certificate from the key",
                layout.identity_cert().display(),
                layout.identity_key().display()
            )
        );
    }
}
