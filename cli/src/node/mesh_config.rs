//! The designated mesh config files of a workspace on disk: what leaves (stripped), how a peer's
//! version is merged in (key-wise, 3-way, our secrets kept, written atomically with the file's
//! mode), and the common ancestors kept per peer and path under `.botsync/mesh/`.
//!
//! The pure parts (strip, merge, key diff) are the engine's [`botsync_engine::mesh`]; this module
//! is the file-system side and owns the layout of `.botsync/mesh/`: one directory per peer (its
//! copy-safe id), one file per designated path (named by the BLAKE3 of the path), holding the
//! stripped version both sides last agreed on. Nothing under `.botsync/mesh/` ever holds a
//! secret: only stripped versions are kept. What this module does not own: when files travel
//! (the session) and what the user is told (`commands/sync.rs`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use botsync_engine::config::SyncConfig;
use botsync_engine::mesh::{self, diff};
use botsync_engine::secrets::SecretRules;
use botsync_engine::{Hash, PeerId, RelPath};
use botsync_proto::limits::{MAX_MESH_FILE_BYTES, MAX_MESH_FILES};
use botsync_proto::messages::MeshFile;
use botsync_proto::replica::MeshChange;

use crate::context::STATE_DIR;

/// The mesh config files of the workspace at `root` under `config`.
#[derive(Debug)]
pub struct MeshConfigs<'a> {
    root: &'a Path,
    paths: Vec<RelPath>,
    rules: SecretRules,
    /// This peer, when changes are posted to the feed.
    me: Option<PeerId>,
}

impl<'a> MeshConfigs<'a> {
    /// The designated files of `config` (its validity was checked when it was loaded).
    pub fn new(root: &'a Path, config: &SyncConfig) -> Result<MeshConfigs<'a>> {
        let paths = config
            .mesh_config_paths()
            .map_err(anyhow::Error::msg)
            .context("config.json mesh_config")?;
        let rules = config
            .secret_rules()
            .map_err(anyhow::Error::msg)
            .context("config.json secret settings")?;
        Ok(MeshConfigs {
            root,
            paths,
            rules,
            me: None,
        })
    }

    /// Post completed changes to the coordination feed as `me` (when the workspace has one).
    pub fn posting_as(mut self, me: PeerId) -> MeshConfigs<'a> {
        self.me = Some(me);
        self
    }

    /// Every designated file that exists here, stripped of its secrets. A file that is not JSON
    /// or is too large is left out with a warning: nothing but a stripped document leaves.
    pub fn stripped(&self) -> Vec<MeshFile> {
        let mut out = Vec::new();
        for path in &self.paths {
            let Ok(bytes) = fs::read(self.root.join(path.as_str())) else {
                continue;
            };
            match mesh::strip_bytes(&bytes, &self.rules) {
                Ok((content, _)) if content.len() <= MAX_MESH_FILE_BYTES => {
                    out.push(MeshFile {
                        path: path.clone(),
                        content,
                    });
                }
                Ok(_) => {
                    tracing::warn!(path = %path, "mesh config file too large to sync (over 256 KiB)")
                }
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "mesh config file is not JSON; not synced until fixed (`botsync config validate`)")
                }
            }
            if out.len() == MAX_MESH_FILES {
                break;
            }
        }
        out
    }

    /// Merge `peer`'s stripped files into ours; files not designated here are ignored. Returns
    /// the files that changed (or were refused, with why).
    pub fn take(&self, peer: PeerId, files: Vec<MeshFile>) -> Vec<MeshChange> {
        let mut out = Vec::new();
        for file in files {
            if !self.paths.contains(&file.path) {
                tracing::debug!(path = %file.path, "received mesh config for a path not designated here; ignored");
                continue;
            }
            let path = file.path.to_string();
            match self.take_one(peer, file) {
                Ok(Some(change)) => {
                    announce(self.root, self.me, peer, &change);
                    out.push(change);
                }
                Ok(None) => {}
                Err(e) => out.push(MeshChange {
                    path,
                    created: false,
                    keys: Vec::new(),
                    conflicts: Vec::new(),
                    refused: Some(format!("{e:#}")),
                }),
            }
        }
        out
    }

    /// Of `ours`, the files `theirs` holds with the same content (key order aside) are agreed
    /// with `peer`: kept as the ancestor of the next merge. True if all of `ours` are.
    pub fn record_agreed(&self, peer: PeerId, ours: &[MeshFile], theirs: &[MeshFile]) -> bool {
        let mut all = true;
        for o in ours {
            let same = theirs
                .iter()
                .any(|t| t.path == o.path && mesh::same_document(&t.content, &o.content));
            if same && let Err(e) = self.save_base(peer, &o.path, &o.content) {
                tracing::debug!(error = %format!("{e:#}"), "could not keep the mesh config ancestor");
            }
            all &= same;
        }
        all
    }

    fn take_one(&self, peer: PeerId, file: MeshFile) -> Result<Option<MeshChange>> {
        // Stripped again: a secret the peer let through is not taken in.
        let (theirs, _) = mesh::strip_bytes(&file.content, &self.rules)
            .context("the received version is not JSON")?;
        let dst = self.root.join(file.path.as_str());
        let own = match fs::read(&dst) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dst.display())),
        };
        let change = match own {
            None => {
                let keys = diff::diff_bytes(b"{}", &theirs).unwrap_or_default();
                write_atomic(&dst, &theirs, None)?;
                Some(MeshChange {
                    path: file.path.to_string(),
                    created: true,
                    keys: keys.into_iter().map(|k| k.pointer).collect(),
                    conflicts: Vec::new(),
                    refused: None,
                })
            }
            Some(own) => {
                let base = self.base(peer, &file.path);
                let merged = mesh::merge_received(&own, base.as_deref(), &theirs, &self.rules)
                    .with_context(|| format!("merging into {}", file.path))?;
                let before = mesh::strip_bytes(&own, &self.rules)
                    .map(|s| s.0)
                    .unwrap_or_default();
                let after = mesh::strip_bytes(&merged.bytes, &self.rules)
                    .map(|s| s.0)
                    .unwrap_or_default();
                let keys = diff::diff_bytes(&before, &after).unwrap_or_default();
                if merged.bytes != own && !keys.is_empty() {
                    let mode = fs::metadata(&dst)
                        .map(|m| m.permissions().mode() & 0o777)
                        .ok();
                    write_atomic(&dst, &merged.bytes, mode)?;
                }
                (!keys.is_empty() || !merged.conflicts.is_empty()).then(|| MeshChange {
                    path: file.path.to_string(),
                    created: false,
                    keys: keys.into_iter().map(|k| k.pointer).collect(),
                    conflicts: merged.conflicts,
                    refused: None,
                })
            }
        };
        self.save_base(peer, &file.path, &theirs)?;
        Ok(change)
    }

    fn base_file(&self, peer: PeerId, path: &RelPath) -> PathBuf {
        self.root
            .join(STATE_DIR)
            .join("mesh")
            .join(peer.to_copy_safe())
            .join(format!(
                "{}.json",
                Hash::of(path.as_str().as_bytes()).to_hex()
            ))
    }

    fn base(&self, peer: PeerId, path: &RelPath) -> Option<Vec<u8>> {
        fs::read(self.base_file(peer, path)).ok()
    }

    fn save_base(&self, peer: PeerId, path: &RelPath, stripped: &[u8]) -> Result<()> {
        let file = self.base_file(peer, path);
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_atomic(&file, stripped, Some(0o600))
    }
}

/// A designated mesh config file changed from a peer's version: the one place every completed
/// change passes. It is logged, and in a workspace whose agents use the coordination feed (seed
/// 004; the file exists) posted there as a `sync` message by `me`.
pub fn announce(root: &Path, me: Option<PeerId>, peer: PeerId, change: &MeshChange) {
    tracing::info!(
        peer = %peer,
        path = %change.path,
        created = change.created,
        keys = ?change.keys,
        conflicts = ?change.conflicts,
        "mesh config changed"
    );
    let Some(me) = me else { return };
    if !crate::node::feed::exists(root) {
        return;
    }
    let what = if change.created { "created" } else { "merged" };
    let mut text = format!("mesh config {}: {what} from {}", change.path, peer.short());
    if !change.keys.is_empty() {
        let mut keys: Vec<&str> = change.keys.iter().map(String::as_str).take(5).collect();
        if change.keys.len() > 5 {
            keys.push("...");
        }
        text.push_str(&format!(" ({})", keys.join(", ")));
    }
    if !change.conflicts.is_empty() {
        text.push_str(&format!(
            "; {} key(s) changed on both sides, ours kept",
            change.conflicts.len()
        ));
    }
    let author = botsync_engine::feed::Author {
        peer: me.short(),
        machine: crate::node::feed::machine_name(),
        agent: String::new(),
        ai: String::new(),
    };
    let post = botsync_engine::feed::Post {
        text,
        kind: Some(botsync_engine::feed::Kind::Sync),
        ..Default::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    match botsync_engine::feed::Message::new(post, &author, now, u64::from(std::process::id())) {
        Ok(m) => {
            if let Err(e) = crate::node::feed::append(root, &m) {
                tracing::warn!(error = %format!("{e:#}"), "could not post the mesh config change to the feed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not post the mesh config change to the feed"),
    }
}

/// Write `bytes` to `dst` atomically: a temporary file beside it with `mode` (0600 for a new
/// file), fsync, rename, fsync of the directory (created 0700 if missing).
/// A symlinked file (the config kept in a secrets store, linked into `.secrets/`) is written
/// where the link points: the link stays a link.
fn write_atomic(dst: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let linked;
    let dst = match fs::symlink_metadata(dst) {
        Ok(m) if m.file_type().is_symlink() => {
            linked = fs::canonicalize(dst).with_context(|| {
                format!(
                    "{} is a symbolic link to a file that does not exist; point it at the mesh config or replace it with the file",
                    dst.display()
                )
            })?;
            linked.as_path()
        }
        _ => dst,
    };
    let dir = dst
        .parent()
        .with_context(|| format!("{} has no directory", dst.display()))?;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.botsync-tmp"));
    let mode = mode.unwrap_or(0o600);
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dst)?;
        fs::File::open(dir)?.sync_all()
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", dst.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const TOKEN: &str = "ntn_Zx8qL2mN9vB4cR7tY1wE6uI3oP5aS0dF";

    fn file(v: &Value) -> MeshFile {
        MeshFile {
            path: RelPath::new(mesh::DEFAULT_PATH).unwrap(),
            content: serde_json::to_vec_pretty(v).unwrap(),
        }
    }

    fn read(root: &Path) -> Value {
        serde_json::from_slice(&fs::read(root.join(mesh::DEFAULT_PATH)).unwrap()).unwrap()
    }

    #[test]
    fn a_missing_file_is_created_0600_without_the_secrets_that_came_along() {
        let dir = tempfile::tempdir().unwrap();
        let configs = MeshConfigs::new(dir.path(), &SyncConfig::default()).unwrap();
        let peer = PeerId([7; 32]);
        let sent = file(&json!({"agents": {"b": {"ip": "100.1.1.2", "token": TOKEN}}}));
        let changes = configs.take(peer, vec![sent]);
        assert!(changes[0].created, "{changes:?}");
        assert_eq!(read(dir.path())["agents"]["b"]["token"], "<secret>");
        let meta = fs::metadata(dir.path().join(mesh::DEFAULT_PATH)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let base =
            fs::read_to_string(configs.base_file(peer, &RelPath::new(mesh::DEFAULT_PATH).unwrap()))
                .unwrap();
        assert!(!base.contains(TOKEN));
    }

    #[test]
    fn a_merge_keeps_our_secret_and_the_files_mode_and_ignores_undesignated_paths() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join(mesh::DEFAULT_PATH);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let ours = json!({"agents": {"a": {"ip": "1"}}, "github": {"token": TOKEN}});
        fs::write(&dst, serde_json::to_vec_pretty(&ours).unwrap()).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o640)).unwrap();
        let configs = MeshConfigs::new(dir.path(), &SyncConfig::default()).unwrap();
        let theirs = json!({"agents": {"a": {"ip": "1"}, "b": {"ip": "2"}}, "github": {"token": "<secret>"}});
        let mut other = file(&json!({"x": 1}));
        other.path = RelPath::new("memory/notes.json").unwrap();
        let changes = configs.take(PeerId([7; 32]), vec![file(&theirs), other]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].keys, ["/agents/b"]);
        let now = read(dir.path());
        assert_eq!(now["github"]["token"], TOKEN);
        assert_eq!(now["agents"]["b"]["ip"], "2");
        assert_eq!(
            fs::metadata(&dst).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(!dir.path().join("memory/notes.json").exists());
        // Nothing new: nothing changes.
        assert!(
            configs
                .take(PeerId([7; 32]), vec![file(&theirs)])
                .is_empty()
        );
        let out = configs.stripped();
        assert!(
            !String::from_utf8(out[0].content.clone())
                .unwrap()
                .contains(TOKEN)
        );
    }

    #[test]
    fn a_local_file_that_is_not_json_is_neither_sent_nor_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join(mesh::DEFAULT_PATH);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::write(&dst, "{ broken").unwrap();
        let configs = MeshConfigs::new(dir.path(), &SyncConfig::default()).unwrap();
        assert!(configs.stripped().is_empty());
        let changes = configs.take(PeerId([7; 32]), vec![file(&json!({"a": 1}))]);
        assert!(changes[0].refused.is_some(), "{changes:?}");
        assert_eq!(fs::read_to_string(&dst).unwrap(), "{ broken");
    }

    #[test]
    fn a_symlinked_config_is_merged_into_its_target_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let target = store.path().join("mesh.json");
        let ours = json!({"agents": {"a": {"ip": "1"}}, "github": {"token": TOKEN}});
        fs::write(&target, serde_json::to_vec_pretty(&ours).unwrap()).unwrap();
        let link = dir.path().join(mesh::DEFAULT_PATH);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let configs = MeshConfigs::new(dir.path(), &SyncConfig::default()).unwrap();
        let theirs = json!({"agents": {"a": {"ip": "1"}, "b": {"ip": "2"}}, "github": {"token": "<secret>"}});
        let changes = configs.take(PeerId([7; 32]), vec![file(&theirs)]);
        assert_eq!(changes[0].keys, ["/agents/b"], "{changes:?}");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let now: Value = serde_json::from_slice(&fs::read(&target).unwrap()).unwrap();
        assert_eq!(now["agents"]["b"]["ip"], "2");
        assert_eq!(now["github"]["token"], TOKEN);
    }
}
