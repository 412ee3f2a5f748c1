//! Which merge policy a path gets: the `merge` rules of `config.json` first, then the defaults of
//! PRODUCT.md §4 (docs/CONFLICTS.md, *Merge policies*).

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::path::RelPath;

/// How concurrent versions of one path are reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MergePolicy {
    /// The newer version wins; the loser is kept in `conflicts/` (the default).
    #[default]
    Newest,
    /// Append-only logs: the common part, then both sides' new lines, once each, in a
    /// deterministic order.
    Union,
    /// JSON documents: key-wise 3-way merge; a key changed on both sides goes to the newer.
    Json,
    /// Text: 3-way line merge; overlapping edits fall back to `newest` with a conflict record.
    Text,
    /// Leave both versions where they are and report the conflict until it is resolved.
    Skip,
    /// Keep the local version in place and the remote one here for review.
    Manual,
}

impl MergePolicy {
    /// The name used in config files, records and reports.
    pub fn name(self) -> &'static str {
        match self {
            MergePolicy::Newest => "newest",
            MergePolicy::Union => "union",
            MergePolicy::Json => "json",
            MergePolicy::Text => "text",
            MergePolicy::Skip => "skip",
            MergePolicy::Manual => "manual",
        }
    }

    /// True for the policies that compute a merged version (union, json, text): the receiver
    /// needs the peer's content and, for json and text, the common ancestor.
    pub fn merges(self) -> bool {
        matches!(
            self,
            MergePolicy::Union | MergePolicy::Json | MergePolicy::Text
        )
    }
}

/// One `merge` rule of `config.json`: a pattern and the policy of the paths it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRule {
    /// A glob: without a `/` it matches the file name anywhere (`*.jsonl`), with one it matches
    /// the path from the workspace root (`memory/????-??-??.md`).
    pub pattern: String,
    /// The policy of matching paths.
    pub policy: MergePolicy,
}

/// The built-in rules, after the configured ones (PRODUCT.md §4).
pub const DEFAULT_RULES: &[(&str, MergePolicy)] = &[
    ("*.jsonl", MergePolicy::Union),
    ("*.log", MergePolicy::Union),
    (
        "memory/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9].md",
        MergePolicy::Union,
    ),
    ("*.json", MergePolicy::Json),
    ("*.md", MergePolicy::Text),
];

/// The compiled rules: the first that matches a path decides; no match is `newest`.
#[derive(Debug, Clone)]
pub struct Policies {
    rules: Vec<(Matcher, MergePolicy)>,
}

#[derive(Debug, Clone)]
struct Matcher {
    glob: GlobMatcher,
    /// Matches the file name only (the pattern has no `/`).
    name_only: bool,
}

impl Policies {
    /// Compile the configured rules followed by [`DEFAULT_RULES`]. The error names the bad
    /// pattern and why.
    pub fn new(configured: &[MergeRule]) -> Result<Policies, String> {
        let mut rules = Vec::with_capacity(configured.len() + DEFAULT_RULES.len());
        for rule in configured {
            rules.push((compile(&rule.pattern)?, rule.policy));
        }
        for (pattern, policy) in DEFAULT_RULES {
            rules.push((compile(pattern)?, *policy));
        }
        Ok(Policies { rules })
    }

    /// Only the defaults.
    pub fn defaults() -> Policies {
        // The built-in patterns are valid globs (checked by a test).
        Policies::new(&[]).unwrap_or(Policies { rules: Vec::new() })
    }

    /// The policy of `path`.
    pub fn for_path(&self, path: &RelPath) -> MergePolicy {
        let full = path.as_str();
        let name = full.rsplit('/').next().unwrap_or(full);
        self.rules
            .iter()
            .find(|(m, _)| m.glob.is_match(if m.name_only { name } else { full }))
            .map_or(MergePolicy::Newest, |(_, p)| *p)
    }
}

fn compile(pattern: &str) -> Result<Matcher, String> {
    let trimmed = pattern.trim_start_matches('/');
    if trimmed.is_empty() {
        return Err(format!("merge pattern {pattern:?} is empty"));
    }
    let glob: Glob = GlobBuilder::new(trimmed)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("merge pattern {pattern:?} is not a valid glob: {e}"))?;
    Ok(Matcher {
        glob: glob.compile_matcher(),
        name_only: !pattern.contains('/'),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: &Policies, path: &str) -> MergePolicy {
        p.for_path(&RelPath::new(path).unwrap())
    }

    #[test]
    fn defaults_follow_the_product() {
        let p = Policies::defaults();
        assert_eq!(p.rules.len(), DEFAULT_RULES.len());
        assert_eq!(policy(&p, "logs/agent.jsonl"), MergePolicy::Union);
        assert_eq!(policy(&p, "run.log"), MergePolicy::Union);
        assert_eq!(policy(&p, "memory/2026-12-05.md"), MergePolicy::Union);
        assert_eq!(policy(&p, "notes/memory/2026-12-05.md"), MergePolicy::Text);
        assert_eq!(policy(&p, "MEMORY.md"), MergePolicy::Text);
        assert_eq!(policy(&p, "config/settings.json"), MergePolicy::Json);
        assert_eq!(policy(&p, "image.png"), MergePolicy::Newest);
    }

    #[test]
    fn configured_rules_come_first() {
        let p = Policies::new(&[
            MergeRule {
                pattern: "MEMORY.md".into(),
                policy: MergePolicy::Manual,
            },
            MergeRule {
                pattern: "/data/*.json".into(),
                policy: MergePolicy::Newest,
            },
        ])
        .unwrap();
        assert_eq!(policy(&p, "MEMORY.md"), MergePolicy::Manual);
        assert_eq!(policy(&p, "sub/MEMORY.md"), MergePolicy::Manual);
        assert_eq!(policy(&p, "data/a.json"), MergePolicy::Newest);
        assert_eq!(policy(&p, "data/deep/a.json"), MergePolicy::Json);
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let err = Policies::new(&[MergeRule {
            pattern: "a[".into(),
            policy: MergePolicy::Union,
        }])
        .unwrap_err();
        assert!(err.contains("\"a[\""), "{err}");
    }
}
