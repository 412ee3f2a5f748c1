//! [`SyncConfig`]: the workspace's `.botsync/config.json`, what is synced and how.
//!
//! This module owns the file format (serde JSON, unknown fields refused), its defaults, loading
//! with one clear error line, and saving atomically. It does not interpret the patterns (that is
//! [`crate::rules`]) nor read the peer list (`peers.json` belongs to the CLI).
//!
//! ```
//! use botsync_engine::config::SyncConfig;
//!
//! let config: SyncConfig = serde_json::from_str(r#"{ "sync_skills": true }"#).unwrap();
//! assert!(config.sync_skills);
//! assert_eq!(config.retention_days, 30);
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::reconcile::{MergeRule, Policies};
use crate::secrets::SecretRules;

mod limits;
mod local_versions;

pub use limits::ServeLimits;
pub use local_versions::LocalVersions;

/// The config format version this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;

/// The default QUIC listen address (UDP port 7474 on every interface).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7474";

/// The contents of `.botsync/config.json`. Every field is optional in the file; missing fields
/// take their default, unknown fields are an error (a typo must not silently sync a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Format version, [`CONFIG_VERSION`].
    pub version: u32,
    /// Extra gitignore-style patterns of paths to sync, on top of the default selection.
    pub include: Vec<String>,
    /// gitignore-style patterns of paths not to sync; evaluated after `include`.
    pub exclude: Vec<String>,
    /// Sync `skills/` (off by default: skills are opt-in).
    pub sync_skills: bool,
    /// How long replaced and deleted versions stay in the local store, in days.
    pub retention_days: u32,
    /// A sync that would delete more than this stops and asks for `--force`.
    pub delete_threshold: DeleteThreshold,
    /// Address the daemon listens on (`host:port`), kept as written.
    pub listen: String,
    /// A human name for this instance (shown to peers); `None` until `init --name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the daemon does on its own (`botsync auto on|off`).
    pub daemon: DaemonConfig,
    /// Merge policies per path, tried in order before the built-in ones
    /// ([`crate::reconcile::DEFAULT_RULES`]); the first matching pattern decides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merge: Vec<MergeRule>,
    /// Extra key names that hold secrets (matched case-insensitively inside a key's name), on
    /// top of the built-in ones ([`crate::secrets::keys::SECRET_WORDS`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<String>,
    /// Extra regular expressions of secret values: a file holding a match is not sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_patterns: Vec<String>,
    /// Glob paths that may hold secrets and are sent anyway (the secret guard's allow rules).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_allow: Vec<String>,
    /// The peers whose daemons replicate the lock table (docs/LOCKS.md): configured peer
    /// names, and `self` (or this workspace's name) for this one. Empty: this peer and every
    /// configured peer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lock_voters: Vec<String>,
    /// Workspace-relative JSON files synced as mesh config (stripped of secrets, merged
    /// key-wise), on top of [`crate::mesh::DEFAULT_PATH`]; they are left out of the file sync.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mesh_config: Vec<String>,
    /// Skill state keys that travel between peers (globs as in `state list --pattern`, such as
    /// `memory:*`); none by default: no state leaves this machine. A key travels only if it
    /// matches the patterns of both peers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state_sync: Vec<String>,
    /// The daemon runs the approved SYNC.json generators before each sync it starts or serves
    /// through its control socket.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub generate_before_sync: bool,
    /// What peers may make this one hold, and the deadline of each session phase; unset
    /// fields keep the protocol's defaults.
    #[serde(skip_serializing_if = "ServeLimits::is_default")]
    pub limits: ServeLimits,
    /// Which local versions the scanner keeps for `restore`.
    #[serde(skip_serializing_if = "LocalVersions::is_default")]
    pub local_versions: LocalVersions,
}

/// The daemon's schedule. Serving peers never stops; `auto` only decides whether the daemon
/// also starts syncs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Sync on its own: after local changes, when a peer announces a new root, and on every
    /// heartbeat.
    pub auto: bool,
    /// Seconds between heartbeat syncs with every peer while `auto` is on.
    pub heartbeat_secs: u64,
    /// Seconds between full rescans, the safety net for file-system events the watcher missed.
    pub rescan_secs: u64,
    /// Milliseconds of quiet after a file-system event before the daemon rescans (a burst of
    /// writes is one rescan).
    pub debounce_ms: u64,
    /// Seconds between the daemon's looks at its in-memory index: an index nothing used
    /// between two looks (no rescan, no sync that changed anything) leaves memory, keeping only
    /// the root and file count a no-op sync needs, and is read back from disk on its next use.
    /// 0 keeps it in memory always.
    pub unload_index_secs: u64,
}

/// The mass-delete guard: a sync stops when it would delete more than `files` files or more
/// than `percent` percent of the workspace's synced files, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteThreshold {
    /// Most files one sync may delete without `--force`.
    pub files: u64,
    /// Largest share of synced files one sync may delete without `--force`, 0 to 100.
    pub percent: u8,
}

/// Why a config file could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON or does not fit the format.
    #[error(
        "{path} line {line} column {column}: {message}; fix it there by hand, or run `botsync init --reset-config` to keep it as a backup and write the default",
        path = path.display()
    )]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error (0 if unknown).
        line: usize,
        /// 1-based column of the error (0 if unknown).
        column: usize,
        /// What is wrong, without the position.
        message: String,
    },
    /// The file parses but a value is out of range.
    #[error(
        "{path}: {problem}; fix it there by hand, or run `botsync init --reset-config` to keep it as a backup and write the default",
        path = path.display()
    )]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl SyncConfig {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<SyncConfig, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
            action: "reading config",
            path: path.to_path_buf(),
            source,
        })?;
        SyncConfig::parse(path, &text)
    }

    /// Parse and validate config text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<SyncConfig, ConfigError> {
        let config: SyncConfig = serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: message_without_position(&e),
        })?;
        config.validate().map_err(|problem| ConfigError::Invalid {
            path: path.to_path_buf(),
            problem,
        })?;
        Ok(config)
    }

    /// Write the config atomically: a temporary file in the same directory, fsync, rename,
    /// fsync of the directory. A crash leaves either the old or the new file, never a mix.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io_err = |action: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| ConfigError::Io {
                action,
                path: p,
                source,
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{}.tmp.{}",
            file_name.as_deref().unwrap_or("config.json"),
            std::process::id()
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err("creating", &tmp))?;
            f.write_all(self.to_json().as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io_err("writing", &tmp))?;
            fs::rename(&tmp, path).map_err(io_err("replacing", path))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing directory", &dir))
        })();
        if result.is_err() {
            // Best effort: do not leave a stray temporary file behind; the original error matters.
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The config as pretty JSON with a trailing newline (the saved form).
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and booleans to a String cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// A complete example config (the defaults, every field written out), for
    /// (what `botsync init --reset-config` writes, with a name).
    pub fn template() -> String {
        let example = SyncConfig {
            name: Some("my-agent".to_owned()),
            merge: vec![MergeRule {
                pattern: "logs/*.txt".to_owned(),
                policy: crate::reconcile::MergePolicy::Union,
            }],
            ..SyncConfig::default()
        };
        example.to_json()
    }

    /// Every designated mesh config file: [`crate::mesh::DEFAULT_PATH`], then `mesh_config`,
    /// each once. The error names the entry that is not a plain workspace-relative path.
    pub fn mesh_config_paths(&self) -> Result<Vec<crate::RelPath>, String> {
        let mut out =
            vec![crate::RelPath::new(crate::mesh::DEFAULT_PATH).map_err(|e| e.to_string())?];
        for (i, p) in self.mesh_config.iter().enumerate() {
            let bad = |why: &str| format!("mesh_config[{i}] {p:?} {why}");
            if p.contains(['*', '?', '[', ']', '!', '\\']) {
                return Err(bad("must be a plain path, not a pattern"));
            }
            let path = crate::RelPath::new(p.trim_start_matches('/'))
                .map_err(|e| bad(&format!("is not a workspace-relative path: {e}")))?;
            if path.as_str().split('/').any(|c| c == ".botsync") {
                return Err(bad("is inside .botsync/"));
            }
            if !out.contains(&path) {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// The secret guard's compiled settings (`secret_keys`, `secret_patterns`, `secret_allow`);
    /// the error names the entry that does not compile.
    pub fn secret_rules(&self) -> Result<SecretRules, String> {
        SecretRules::new(&self.secret_keys, &self.secret_patterns, &self.secret_allow)
    }

    /// Check values that parse but make no sense; the problem is described for the user.
    fn validate(&self) -> Result<(), String> {
        if self.version != CONFIG_VERSION {
            return Err(format!(
                "version {} is not supported (this botsync reads version {CONFIG_VERSION})",
                self.version
            ));
        }
        if self.delete_threshold.percent > 100 {
            return Err(format!(
                "delete_threshold.percent is {}, it must be between 0 and 100",
                self.delete_threshold.percent
            ));
        }
        if self.daemon.heartbeat_secs == 0 || self.daemon.rescan_secs == 0 {
            return Err("daemon.heartbeat_secs and daemon.rescan_secs must be at least 1".into());
        }
        if self.daemon.debounce_ms > 60_000 {
            return Err(format!(
                "daemon.debounce_ms is {}, it must be at most 60000",
                self.daemon.debounce_ms
            ));
        }
        self.limits.validate()?;
        self.local_versions.validate()?;
        Policies::new(&self.merge)?;
        self.secret_rules()?;
        self.mesh_config_paths()?;
        if self.state_sync.len() > crate::state::MAX_PATTERNS {
            return Err(format!(
                "state_sync has {} patterns, at most {} are allowed (a peer refuses more); merge some into wider ones",
                self.state_sync.len(),
                crate::state::MAX_PATTERNS
            ));
        }
        for p in &self.state_sync {
            crate::state::validate_pattern(p).map_err(|e| format!("state_sync: {e}"))?;
        }
        if self
            .listen
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!(
                "listen {:?} is not of the form host:port",
                self.listen
            ));
        }
        Ok(())
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            version: CONFIG_VERSION,
            include: Vec::new(),
            exclude: Vec::new(),
            sync_skills: false,
            retention_days: 30,
            delete_threshold: DeleteThreshold::default(),
            listen: DEFAULT_LISTEN.to_owned(),
            name: None,
            daemon: DaemonConfig::default(),
            merge: Vec::new(),
            secret_keys: Vec::new(),
            secret_patterns: Vec::new(),
            secret_allow: Vec::new(),
            lock_voters: Vec::new(),
            mesh_config: Vec::new(),
            state_sync: Vec::new(),
            generate_before_sync: false,
            limits: ServeLimits::default(),
            local_versions: LocalVersions::default(),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            auto: false,
            heartbeat_secs: 60,
            rescan_secs: 600,
            debounce_ms: 300,
            unload_index_secs: 60,
        }
    }
}

impl Default for DeleteThreshold {
    fn default() -> Self {
        DeleteThreshold {
            files: 50,
            percent: 25,
        }
    }
}

/// serde_json's message without its " at line L column C" suffix (the line is reported apart).
fn message_without_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_product_brief() {
        let c = SyncConfig::default();
        assert_eq!(c.version, 1);
        assert!(!c.sync_skills);
        assert_eq!(c.retention_days, 30);
        assert_eq!(
            c.delete_threshold,
            DeleteThreshold {
                files: 50,
                percent: 25
            }
        );
        assert_eq!(c.listen, "0.0.0.0:7474");
        assert!(c.include.is_empty() && c.exclude.is_empty() && c.name.is_none());
    }

    #[test]
    fn empty_object_is_the_default() {
        let c = SyncConfig::parse(Path::new("config.json"), "{}").unwrap();
        assert_eq!(c, SyncConfig::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let text = r#"{ "exclude": ["memory/private/"], "delete_threshold": { "files": 10 } }"#;
        let c = SyncConfig::parse(Path::new("config.json"), text).unwrap();
        assert_eq!(c.exclude, vec!["memory/private/".to_owned()]);
        assert_eq!(
            c.delete_threshold,
            DeleteThreshold {
                files: 10,
                percent: 25
            }
        );
        assert_eq!(c.retention_days, 30);
    }

    #[test]
    fn unknown_field_is_one_clear_line() {
        let text = "{\n  \"version\": 1,\n  \"foo\": true\n}\n";
        let err = SyncConfig::parse(Path::new("config.json"), text).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err:?}");
        assert!(msg.starts_with("config.json line 3 column"), "{msg}");
        assert!(msg.contains("unknown field `foo`"), "{msg}");
        assert!(
            msg.ends_with(
                "run `botsync init --reset-config` to keep it as a backup and write the default"
            ),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn state_sync_patterns_are_validated() {
        let ok = r#"{ "state_sync": ["memory:*", "notes:*"], "generate_before_sync": true }"#;
        let c = SyncConfig::parse(Path::new("c.json"), ok).unwrap();
        assert_eq!(c.state_sync, ["memory:*", "notes:*"]);
        assert!(c.generate_before_sync);
        assert!(SyncConfig::default().state_sync.is_empty());
        let many: Vec<String> = (0..65).map(|i| format!("k{i}:*")).collect();
        let text = serde_json::json!({ "state_sync": many }).to_string();
        let err = SyncConfig::parse(Path::new("c.json"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state_sync has 65 patterns, at most 64"),
            "{err}"
        );
        let bad = r#"{ "state_sync": ["memory:["] }"#;
        let err = SyncConfig::parse(Path::new("c.json"), bad).unwrap_err();
        assert!(
            err.to_string().contains("state_sync: invalid pattern"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = "{\n  \"sync_skills\": \"yes\"\n}";
        let err = SyncConfig::parse(Path::new("c.json"), text).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for text in [
            r#"{ "version": 2 }"#,
            r#"{ "delete_threshold": { "percent": 101 } }"#,
            r#"{ "listen": "7474" }"#,
            r#"{ "listen": "0.0.0.0:99999" }"#,
        ] {
            let err = SyncConfig::parse(Path::new("config.json"), text).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { .. }),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let config = SyncConfig {
            include: vec!["config/shared.json".to_owned()],
            sync_skills: true,
            name: Some("box-1".to_owned()),
            ..SyncConfig::default()
        };
        config.save(&path).unwrap();
        assert_eq!(SyncConfig::load(&path).unwrap(), config);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
    }

    #[test]
    fn template_is_a_valid_config() {
        let parsed = SyncConfig::parse(Path::new("t.json"), &SyncConfig::template()).unwrap();
        assert_eq!(parsed.name.as_deref(), Some("my-agent"));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let err = SyncConfig::load(Path::new("/nonexistent/botsync/config.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/botsync/config.json"),
            "{err}"
        );
    }

    #[test]
    fn secret_settings_parse_and_bad_ones_name_the_entry() {
        let text = r#"{ "secret_keys": ["signing"], "secret_patterns": ["acme_[0-9]+"], "secret_allow": ["notes/keys/**"] }"#;
        let c = SyncConfig::parse(Path::new("config.json"), text).unwrap();
        assert!(c.secret_rules().unwrap().allows("notes/keys/a.pem"));
        let err = SyncConfig::parse(Path::new("config.json"), r#"{ "secret_patterns": ["(x"] }"#)
            .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("secret_patterns[0]"), "{err}");
        assert!(!SyncConfig::default().to_json().contains("secret"));
    }

    #[test]
    fn mesh_config_paths_start_with_the_default_and_bad_ones_name_the_entry() {
        let c = SyncConfig::parse(
            Path::new("config.json"),
            r#"{ "mesh_config": ["config/mesh.json", ".secrets/mesh-config.json"] }"#,
        )
        .unwrap();
        let paths: Vec<String> = c
            .mesh_config_paths()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(paths, [crate::mesh::DEFAULT_PATH, "config/mesh.json"]);
        for (bad, why) in [
            (r#"["config/*.json"]"#, "not a pattern"),
            (r#"["../mesh.json"]"#, "workspace-relative"),
            (r#"[".botsync/mesh.json"]"#, "inside .botsync"),
        ] {
            let text = format!(r#"{{ "mesh_config": {bad} }}"#);
            let err = SyncConfig::parse(Path::new("config.json"), &text).unwrap_err();
            assert!(err.to_string().contains("mesh_config[0]"), "{err}");
            assert!(err.to_string().contains(why), "{err}");
        }
    }
}
