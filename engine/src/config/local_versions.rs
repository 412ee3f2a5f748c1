//! [`LocalVersions`]: the `local_versions` object of `.botsync/config.json`, which local
//! versions the scanner keeps in the store so that `botsync restore` can bring them back
//! (docs/CONFLICTS.md, *History and restore*).
//!
//! ```
//! use botsync_engine::config::SyncConfig;
//!
//! let config: SyncConfig =
//!     serde_json::from_str(r#"{ "local_versions": { "max_bytes": 0 } }"#).unwrap();
//! assert!(!config.local_versions.enabled());
//! assert_eq!(config.local_versions.every_secs, 60);
//! ```

use serde::{Deserialize, Serialize};

/// The default largest local version kept: 1 MiB (agent notes and config are far smaller).
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// The default least time between two kept local versions of one path: a minute.
pub const DEFAULT_EVERY_SECS: u64 = 60;

/// Largest `max_bytes` accepted: 1 GiB.
pub const MAX_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Which local versions the scanner keeps. Files whose merge policy is `union` (append-only
/// logs) are never kept this way: each version is a prefix of the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalVersions {
    /// Largest version kept, in bytes; 0 keeps none.
    pub max_bytes: u64,
    /// Least seconds between two kept versions of one path: a file rewritten every second
    /// keeps one version a minute, not sixty (0 keeps every version a scan sees).
    pub every_secs: u64,
}

impl Default for LocalVersions {
    fn default() -> Self {
        LocalVersions {
            max_bytes: DEFAULT_MAX_BYTES,
            every_secs: DEFAULT_EVERY_SECS,
        }
    }
}

impl LocalVersions {
    /// True if the file leaves `local_versions` out (all defaults).
    pub fn is_default(&self) -> bool {
        *self == LocalVersions::default()
    }

    /// True if any local version is kept.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// Check the values; the problem is described for the user.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes > MAX_MAX_BYTES {
            return Err(format!(
                "local_versions.max_bytes is {}, it must be at most {MAX_MAX_BYTES} (1 GiB); 0 keeps none",
                self.max_bytes
            ));
        }
        if self.every_secs > 86_400 {
            return Err(format!(
                "local_versions.every_secs is {}, it must be at most 86400 (a day)",
                self.every_secs
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused_with_the_field_named() {
        let huge = LocalVersions {
            max_bytes: MAX_MAX_BYTES + 1,
            ..LocalVersions::default()
        };
        assert!(
            huge.validate()
                .unwrap_err()
                .contains("local_versions.max_bytes")
        );
        let slow = LocalVersions {
            every_secs: 86_401,
            ..LocalVersions::default()
        };
        assert!(
            slow.validate()
                .unwrap_err()
                .contains("local_versions.every_secs")
        );
        assert_eq!(LocalVersions::default().validate(), Ok(()));
    }
}
