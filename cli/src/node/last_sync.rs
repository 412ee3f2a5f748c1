//! `.botsync/last-sync.json`: when this workspace last synced with each peer, and how it went.
//!
//! Written after every real (not dry-run) session this workspace starts, by a verb or by the
//! daemon, so `status` can say "last sync 5 min ago" with or without a daemon. A missing or
//! unreadable file means "never": it is a convenience record, rewritten by the next sync.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The last sync with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// When it ended (seconds since the epoch).
    pub at: u64,
    /// True if it succeeded.
    pub ok: bool,
    /// What it did ("2 in, 1 out", "already in sync"), or why it failed.
    pub summary: String,
}

impl SyncRecord {
    /// A record of a session that ended now.
    pub fn now(ok: bool, summary: String) -> SyncRecord {
        SyncRecord {
            at: now_secs(),
            ok,
            summary,
        }
    }

    /// "12 s ago ok: 2 in, 1 out".
    pub fn describe(&self) -> String {
        let how = if self.ok { "ok" } else { "failed" };
        format!("{} {how}: {}", ago(self.at), self.summary)
    }
}

/// Every peer's last sync, by configured name.
pub fn load(state_dir: &Path) -> BTreeMap<String, SyncRecord> {
    fs::read_to_string(path(state_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Remember `record` as the last sync with `peer` (temp file + rename).
pub fn record(state_dir: &Path, peer: &str, record: SyncRecord) -> Result<()> {
    let mut all = load(state_dir);
    all.insert(peer.to_owned(), record);
    let target = path(state_dir);
    let tmp = state_dir.join("tmp").join("last-sync.json.new");
    if let Some(dir) = tmp.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(&all)?.as_bytes())?;
    f.write_all(b"\n")?;
    drop(f);
    fs::rename(&tmp, &target).with_context(|| format!("replacing {}", target.display()))
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("last-sync.json")
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// "just now", "42 s ago", "5 min ago", "3 h ago", "2 days ago".
pub fn ago(at: u64) -> String {
    let s = now_secs().saturating_sub(at);
    match s {
        0..=1 => "just now".to_owned(),
        2..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_a_reload_and_a_missing_file_means_never() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        record(
            dir.path(),
            "beta",
            SyncRecord::now(true, "1 in, 0 out".into()),
        )
        .unwrap();
        record(
            dir.path(),
            "gamma",
            SyncRecord::now(false, "timed out".into()),
        )
        .unwrap();
        let all = load(dir.path());
        assert_eq!(all.len(), 2);
        assert!(all["beta"].ok && !all["gamma"].ok);
        assert_eq!(all["beta"].describe(), "just now ok: 1 in, 0 out");
    }
}
