//! The selection rules' tests: defaults, secrets, include/exclude order, directory scopes.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use proptest::prelude::*;

use super::*;

fn sel(include: &[&str], exclude: &[&str], skills: bool) -> Selection {
    let config = SyncConfig {
        include: include.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        sync_skills: skills,
        ..SyncConfig::default()
    };
    Selection::new(&config).unwrap()
}

fn file(s: &Selection, p: &str) -> Decision {
    s.decide(&RelPath::new(p).unwrap(), false)
}

fn descend(s: &Selection, p: &str) -> bool {
    s.may_descend(&RelPath::new(p).unwrap())
}

#[test]
fn default_selection_syncs_memory_and_the_two_notes() {
    let s = sel(&[], &[], false);
    assert_eq!(file(&s, "MEMORY.md"), Decision::Synced);
    assert_eq!(file(&s, "USER.md"), Decision::Synced);
    assert_eq!(file(&s, "memory/2026-01-01.md"), Decision::Synced);
    assert_eq!(file(&s, "memory/logs/agent.jsonl"), Decision::Synced);
    assert_eq!(
        s.decide(&RelPath::new("memory").unwrap(), true),
        Decision::Synced
    );
}

#[test]
fn default_selection_leaves_out_identity_config_and_the_rest() {
    let s = sel(&[], &[], false);
    assert_eq!(file(&s, "IDENTITY.md"), Decision::NotSelected);
    assert_eq!(file(&s, "config/mesh.json"), Decision::NotSelected);
    assert_eq!(file(&s, "notes.txt"), Decision::NotSelected);
    assert_eq!(
        file(&s, "sub/MEMORY.md"),
        Decision::NotSelected,
        "MEMORY.md is anchored"
    );
    assert_eq!(
        file(&s, "memory"),
        Decision::NotSelected,
        "memory/ is a directory rule"
    );
}

#[test]
fn skills_are_opt_in() {
    assert_eq!(
        file(&sel(&[], &[], false), "skills/x/SKILL.md"),
        Decision::NotSelected
    );
    assert!(!descend(&sel(&[], &[], false), "skills"));
    assert_eq!(
        file(&sel(&[], &[], true), "skills/x/SKILL.md"),
        Decision::Synced
    );
    assert!(descend(&sel(&[], &[], true), "skills/x"));
}

#[test]
fn secrets_are_never_synced_at_any_depth() {
    let s = sel(&["**", "*"], &[], true);
    for p in [
        ".env",
        "memory/.env.local",
        "memory/certs/server.pem",
        "skills/x/api.key",
        "memory/id_rsa",
        "memory/ssh/id_rsa.pub",
        "memory/id_ed25519",
        ".secrets/token",
        "memory/.secrets/token",
        "memory/.botsync/db",
        "memory/KEY.PEM",
    ] {
        assert_eq!(file(&s, p), Decision::Never, "{p}");
    }
    assert!(!descend(&s, "memory/.secrets"));
    assert!(!descend(&s, ".secrets"));
}

#[test]
fn never_cannot_be_re_included() {
    let s = sel(
        &["memory/.env", "!*.pem", "config/shared.json"],
        &["!.secrets/"],
        false,
    );
    assert_eq!(file(&s, "memory/.env"), Decision::Never);
    assert_eq!(file(&s, "memory/a.pem"), Decision::Never);
    assert_eq!(file(&s, ".secrets/x"), Decision::Never);
}

#[test]
fn include_picks_one_file_out_of_an_excluded_directory() {
    let s = sel(&["config/shared.json"], &[], false);
    assert_eq!(file(&s, "config/shared.json"), Decision::Synced);
    assert_eq!(file(&s, "config/local.json"), Decision::NotSelected);
    assert!(descend(&s, "config"));
    assert!(!descend(&s, "config/sub"));
    assert!(!descend(&s, "other"));
}

#[test]
fn exclude_beats_include_and_negation_re_includes() {
    let s = sel(
        &["*.txt"],
        &["memory/private/", "*.tmp", "!memory/private/keep.md"],
        false,
    );
    assert_eq!(file(&s, "memory/private/secret.md"), Decision::NotSelected);
    assert_eq!(file(&s, "memory/private/keep.md"), Decision::Synced);
    assert!(descend(&s, "memory/private"));
    assert_eq!(file(&s, "memory/scratch.tmp"), Decision::NotSelected);
    assert_eq!(file(&s, "anywhere/deep/notes.txt"), Decision::Synced);
    assert!(descend(&s, "anywhere/deep"));
}

#[test]
fn excluded_subtree_is_pruned() {
    let s = sel(&[], &["memory/cache/"], false);
    assert!(!descend(&s, "memory/cache"));
    assert!(!descend(&s, "memory/cache/x"));
    assert!(descend(&s, "memory/other"));
    assert!(!descend(&s, "config"));
    assert!(descend(&s, ""), "the root is always entered");
}

#[test]
fn include_with_negation_means_not_included() {
    let s = sel(&["!memory/draft.md"], &[], false);
    assert_eq!(file(&s, "memory/draft.md"), Decision::NotSelected);
    assert_eq!(file(&s, "memory/final.md"), Decision::Synced);
}

#[test]
fn star_stays_within_a_component() {
    let s = sel(&["config/*.json"], &[], false);
    assert_eq!(file(&s, "config/a.json"), Decision::Synced);
    assert_eq!(file(&s, "config/sub/a.json"), Decision::NotSelected);
    let s = sel(&["config/**/*.json"], &[], false);
    assert_eq!(file(&s, "config/sub/deep/a.json"), Decision::Synced);
    assert!(descend(&s, "config/sub/deep"));
    // `**` also matches no directory at all, so the file right in `config/` matches too
    // (every pattern here is anchored: the walker's per-directory shortcut is in play).
    assert_eq!(file(&s, "config/a.json"), Decision::Synced);
    let mut scope = s.root_scope();
    for dir in ["config", "config/sub"] {
        scope = s.enter(&scope, &RelPath::new(dir).unwrap());
    }
    let deep = RelPath::new("config/sub/a.json").unwrap();
    assert_eq!(s.decide_in(&scope, &deep, false), Decision::Synced);
}

#[test]
fn scoped_decisions_agree_with_decide() {
    let s = sel(
        &["config/shared.json", "*.txt"],
        &["memory/private/", "!memory/private/k.md"],
        true,
    );
    let paths = [
        "memory/private/k.md",
        "memory/private/x.md",
        "memory/a/b/c.txt",
        "config/shared.json",
        "config/x.json",
        "skills/s/.env",
        "IDENTITY.md",
    ];
    for p in paths {
        let rel = RelPath::new(p).unwrap();
        let mut scope = s.root_scope();
        let comps: Vec<&str> = rel.components().collect();
        let mut prefix = RelPath::root();
        for c in &comps[..comps.len() - 1] {
            prefix = prefix.join(c).unwrap();
            scope = s.enter(&scope, &prefix);
        }
        assert_eq!(
            s.decide_in(&scope, &rel, false),
            s.decide(&rel, false),
            "{p}"
        );
    }
}

#[test]
fn bad_patterns_are_named_in_the_error() {
    for (include, exclude) in [
        (vec!["memory/[ab"], vec![]),
        (vec![], vec!["/"]),
        (vec!["a//b"], vec![]),
    ] {
        let config = SyncConfig {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..SyncConfig::default()
        };
        let err = Selection::new(&config).unwrap_err();
        let pattern = include.first().or(exclude.first()).unwrap();
        assert!(err.to_string().contains(&format!("{pattern:?}")), "{err}");
    }
}

const COMPONENTS: &[&str] = &[
    "memory",
    "config",
    "skills",
    "a",
    "b.md",
    "MEMORY.md",
    ".env",
    "x.pem",
    "id_rsa.pub",
];
const PATTERNS: &[&str] = &[
    "memory/",
    "config/b.md",
    "*.md",
    "a/",
    "!a/b.md",
    "config/**/b.md",
    "/a",
    "**/b.md",
    "config/*",
    "!memory/a/",
    "skills/a/",
    "*.pem",
    ".env",
    "a/**",
];

/// The rules as documented, without shortcuts: the last rule matching the path or one of
/// its parent directories wins, never-names first.
fn naive_decide(s: &Selection, path: &RelPath, is_dir: bool) -> Decision {
    if path.components().any(is_never_name) {
        return Decision::Never;
    }
    let mut last = None;
    let mut prefix = RelPath::root();
    let comps: Vec<&str> = path.components().collect();
    for (i, c) in comps.iter().enumerate() {
        prefix = prefix.join(c).unwrap();
        let as_dir = i + 1 < comps.len() || is_dir;
        last = last.max(s.last_match(&prefix, as_dir));
    }
    match last {
        Some(i) if s.rules[i].selects => Decision::Synced,
        _ => Decision::NotSelected,
    }
}

fn arb_path() -> impl Strategy<Value = RelPath> {
    proptest::collection::vec(proptest::sample::select(COMPONENTS), 1..5)
        .prop_map(|parts| RelPath::new(&parts.join("/")).unwrap())
}

fn arb_selection() -> impl Strategy<Value = Selection> {
    let list = || proptest::collection::vec(proptest::sample::select(PATTERNS), 0..5);
    (list(), list(), any::<bool>()).prop_map(|(inc, exc, skills)| sel(&inc, &exc, skills))
}

/// Anchored patterns only (with `/` inside), the case where walkers skip pattern matching
/// in directories no pattern reaches.
fn arb_anchored_selection() -> impl Strategy<Value = Selection> {
    let anchored: Vec<&str> = PATTERNS
        .iter()
        .copied()
        .filter(|p| p.trim_end_matches('/').contains('/'))
        .collect();
    let list = move || proptest::collection::vec(proptest::sample::select(anchored.clone()), 0..5);
    (list(), list(), any::<bool>()).prop_map(|(inc, exc, skills)| sel(&inc, &exc, skills))
}

proptest! {
    #[test]
    fn pruning_never_hides_a_synced_path(s in arb_selection(), path in arb_path()) {
        if s.decide(&path, false) == Decision::Synced {
            let mut dir = path.parent();
            while let Some(d) = dir {
                prop_assert!(s.may_descend(&d), "{:?} pruned above synced {:?}", d, path);
                dir = d.parent();
            }
        }
    }

    #[test]
    fn deciding_from_the_parent_scope_agrees_with_matching_every_prefix(
        s in prop_oneof![arb_selection(), arb_anchored_selection()],
        path in arb_path(),
        is_dir in any::<bool>(),
    ) {
        // Walkers decide a path from its directory's scope, skipping the pattern match
        // where no pattern can match a child; matching every prefix must agree.
        let mut scope = s.root_scope();
        let mut dir = RelPath::root();
        let comps: Vec<&str> = path.components().collect();
        for c in &comps[..comps.len() - 1] {
            dir = dir.join(c).unwrap();
            scope = s.enter(&scope, &dir);
        }
        prop_assert_eq!(s.decide_in(&scope, &path, is_dir), naive_decide(&s, &path, is_dir));
        prop_assert_eq!(s.decide(&path, is_dir), naive_decide(&s, &path, is_dir));
    }

    #[test]
    fn secrets_are_never_synced_whatever_the_rules(s in arb_selection(), path in arb_path()) {
        let secret = path.components().any(is_never_name);
        prop_assert_eq!(s.decide(&path, false) == Decision::Never, secret);
        prop_assert_eq!(s.decide(&path, true) == Decision::Never, secret);
    }
}

#[test]
fn comments_are_ignored() {
    let s = sel(&["# nothing here"], &[], false);
    assert_eq!(file(&s, "# nothing here"), Decision::NotSelected);
}

#[test]
fn mesh_config_files_are_described_and_left_out_of_the_file_sync() {
    let config = SyncConfig {
        include: vec!["config/".into()],
        mesh_config: vec!["config/mesh.json".into()],
        ..SyncConfig::default()
    };
    let s = Selection::new(&config).unwrap();
    assert_eq!(file(&s, "config/shared.json"), Decision::Synced);
    assert_eq!(file(&s, "config/mesh.json"), Decision::NotSelected);
    let rules = describe(&config);
    assert_eq!(rules.first().map(String::as_str), Some("include /memory/"));
    assert_eq!(
        rules.last().map(String::as_str),
        Some("exclude /config/mesh.json")
    );
    assert_ne!(rules, describe(&SyncConfig::default()));
}
