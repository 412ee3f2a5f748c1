//! Files a rescan could not take in, told in words with what to do: shared by `scan`, `sync`
//! and `status`, so each reason reads the same everywhere.

use botsync_engine::scan::{SkipReason, Skipped};
use serde::Serialize;

/// One skipped path as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedView {
    /// The workspace path.
    pub path: String,
    /// Why, in words.
    pub reason: String,
    /// What the user can do about it.
    pub what_to_do: String,
}

impl SkippedView {
    /// From a scan's typed entry.
    pub fn of(s: &Skipped) -> SkippedView {
        SkippedView {
            path: s.path.clone(),
            reason: s.reason.to_string(),
            what_to_do: advice(&s.reason).to_owned(),
        }
    }

    /// From a session report's `path: reason` line (the same words [`Skipped`] prints).
    pub fn parse(line: &str) -> SkippedView {
        // The reason is one of a known set of phrases: split at the last ": " that starts one,
        // so a path holding ": " stays whole.
        let split = line
            .match_indices(": ")
            .map(|(i, _)| i)
            .filter(|&i| REASONS.iter().any(|(p, _)| line[i + 2..].starts_with(p)))
            .last();
        let (path, reason) = match split {
            Some(i) => (&line[..i], &line[i + 2..]),
            None => (line, ""),
        };
        let what_to_do = REASONS
            .iter()
            .find(|(p, _)| reason.starts_with(p))
            .map(|(_, a)| *a)
            .unwrap_or("look at the file; the next sync retries it");
        SkippedView {
            path: path.to_owned(),
            reason: reason.to_owned(),
            what_to_do: what_to_do.to_owned(),
        }
    }

    /// `  ! memory/x.md: changed while reading; retried next scan. What to do: ...`
    pub fn line(&self) -> String {
        format!(
            "{}: {} (not synced: {})",
            self.path, self.reason, self.what_to_do
        )
    }
}

/// Every skipped path once, in first-seen order.
pub fn dedup(views: impl IntoIterator<Item = SkippedView>) -> Vec<SkippedView> {
    let mut out: Vec<SkippedView> = Vec::new();
    for v in views {
        if !out.iter().any(|o| o.path == v.path) {
            out.push(v);
        }
    }
    out
}

/// What to do about a skipped entry.
pub fn advice(reason: &SkipReason) -> &'static str {
    let text = reason.to_string();
    REASONS
        .iter()
        .find(|(p, _)| text.starts_with(p))
        .map(|(_, a)| *a)
        .unwrap_or("look at the file; the next sync retries it")
}

/// The start of each reason's words ([`SkipReason`]'s `Display`) and the advice for it.
const REASONS: &[(&str, &str)] = &[
    (
        "symbolic link",
        "links are never followed; copy the target into the workspace if it should sync",
    ),
    (
        "named pipe",
        "only regular files sync; move it out of the workspace to silence this",
    ),
    (
        "socket",
        "only regular files sync; move it out of the workspace to silence this",
    ),
    (
        "device file",
        "only regular files sync; move it out of the workspace to silence this",
    ),
    (
        "unreadable",
        "make it readable by this user (chmod u+r), then sync again",
    ),
    (
        "bad name",
        "rename it to a name every peer's file system accepts, then sync again",
    ),
    (
        "another name in this directory normalizes",
        "two spellings of one name: rename or remove one of them, then sync again",
    ),
    (
        "changed while reading",
        "it was being written; the next sync takes it once it holds still",
    ),
    (
        "holds a secret",
        "move the secret into .secrets/ (never synced), or send the file anyway by adding its path to \"secret_allow\" in .botsync/config.json",
    ),
    (
        "the version counter",
        "this peer's counter for the file is exhausted; copy the file to a new name",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_line_splits_into_path_reason_and_advice() {
        let v = SkippedView::parse("memory/a: b.md: changed while reading; retried next scan");
        assert_eq!(v.path, "memory/a: b.md");
        assert_eq!(v.reason, "changed while reading; retried next scan");
        assert!(v.what_to_do.contains("next sync"));
        let v = SkippedView::parse(
            "memory/cafe.md: another name in this directory normalizes to the same path",
        );
        assert_eq!(v.path, "memory/cafe.md");
        assert!(v.what_to_do.starts_with("two spellings"));
    }

    #[test]
    fn a_secret_line_names_the_line_and_the_allow_rule() {
        let v = SkippedView::parse("notes/deploy.md: holds a secret: line 4 has a private key");
        assert_eq!(v.path, "notes/deploy.md");
        assert_eq!(v.reason, "holds a secret: line 4 has a private key");
        assert!(v.what_to_do.contains("secret_allow"), "{}", v.what_to_do);
    }

    #[test]
    fn every_reason_has_advice_of_its_own() {
        for r in [
            SkipReason::Symlink,
            SkipReason::Fifo,
            SkipReason::Socket,
            SkipReason::Device,
            SkipReason::Unreadable("permission denied".into()),
            SkipReason::NameCollision,
            SkipReason::ChangedWhileReading,
            SkipReason::Secret {
                line: 3,
                kind: botsync_engine::secrets::SecretKind::GitHubToken,
            },
        ] {
            assert_ne!(
                advice(&r),
                "look at the file; the next sync retries it",
                "{r}"
            );
        }
    }
}
