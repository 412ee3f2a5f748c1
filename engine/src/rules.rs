//! [`Selection`]: which workspace paths are synced (PRODUCT.md §3).
//!
//! This module owns the selection rules: the built-in defaults, the user's gitignore-style
//! `include`/`exclude` patterns and the never-synced secrets. It answers one question per path,
//! [`Selection::decide`], used by the scanner on local files and by the receiver on incoming
//! paths, and [`Selection::may_descend`] so a walker skips directories that cannot hold anything
//! selected. It does not walk the file system (that is [`crate::scan`]).
//!
//! # Evaluation
//! 1. **Never**: a path with any component named `.botsync` or `.secrets`, starting with `.env`,
//!    `id_rsa` or `id_ed25519`, or ending in `.pem` or `.key` (ASCII case-insensitive, so `KEY.PEM`
//!    on a case-insensitive disk is caught too) is never synced. No rule can re-include it.
//! 2. **Rules**, in order: the defaults (`memory/`, `MEMORY.md`, `USER.md`, `skills/` if
//!    `sync_skills`; `IDENTITY.md` and `config/` excluded), then each `include` pattern, then each
//!    `exclude` pattern. A `!` prefix flips a pattern's sense. A rule applies to a path if its
//!    pattern matches the path or one of its parent directories; the **last** applying rule wins.
//!    So `exclude: ["memory/private/"]` removes a subtree, and `include: ["config/shared.json"]`
//!    picks one file out of an excluded directory (unlike git, a parent's exclusion does not hide
//!    its children from later rules).
//! 3. No applying rule: not selected.
//!
//! Pattern syntax is gitignore's: a pattern without an inner `/` matches at any depth, one with a
//! `/` (or a leading `/`) is anchored at the workspace root, a trailing `/` matches directories
//! only, `*` and `?` stay within a component, `**` spans components, `\` escapes. Surrounding
//! whitespace is ignored and `#` starts a comment (an entry that is only a comment is ignored).
//!
//! ```
//! use botsync_engine::RelPath;
//! use botsync_engine::config::SyncConfig;
//! use botsync_engine::rules::{Decision, Selection};
//!
//! let config = SyncConfig { include: vec!["config/shared.json".into()], ..SyncConfig::default() };
//! let selection = Selection::new(&config).unwrap();
//! let decide = |p: &str| selection.decide(&RelPath::new(p).unwrap(), false);
//! assert_eq!(decide("memory/2026-11-21.md"), Decision::Synced);
//! assert_eq!(decide("config/shared.json"), Decision::Synced);
//! assert_eq!(decide("config/local.json"), Decision::NotSelected);
//! assert_eq!(decide("memory/deploy.pem"), Decision::Never);
//! ```

use std::cell::RefCell;
use std::fmt;

use globset::{Candidate, Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::config::SyncConfig;
use crate::path::RelPath;

/// What the selection says about one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The path is synced.
    Synced,
    /// The path is not synced by the current rules (a rule change may select it).
    NotSelected,
    /// The path is a secret or state and is never synced, whatever the rules say.
    Never,
}

/// A bad `include` or `exclude` pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The pattern cannot be compiled.
    #[error("{list} pattern {pattern:?} is invalid: {reason}; fix it in .botsync/config.json")]
    BadPattern {
        /// `"include"` or `"exclude"`.
        list: &'static str,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The compiled selection rules of one config. Cheap to query: one glob-set match per path
/// component at most; cloneable and shareable between threads.
#[derive(Clone)]
pub struct Selection {
    rules: Vec<Rule>,
    set: GlobSet,
    /// Indices into `rules` of the rules that select, for [`Selection::may_descend`].
    selecting: Vec<usize>,
}

/// What the rules above a directory decided, so paths below it are decided by matching only
/// their own name. Obtained from [`Selection::root_scope`] and [`Selection::enter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirScope {
    /// The directory is never synced (nothing below can be).
    never: bool,
    /// The last rule that applies to the directory or one of its parents.
    last_rule: Option<usize>,
    /// Some rule's pattern may match a direct child of the directory. When none can, its
    /// children are decided by `last_rule` and their names' never-checks alone, with no glob
    /// matching: a directory of 10,000 notes under `memory/` costs no pattern match per note.
    children_may_match: bool,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Rule {
    /// True if a match selects the path, false if it deselects it.
    selects: bool,
    /// Only directories match (trailing `/`).
    dir_only: bool,
    /// For anchored patterns, one matcher per component (`None` for a `**` component), used
    /// to tell whether the pattern can match below a directory; `None` for unanchored patterns.
    components: Option<Vec<Option<GlobMatcher>>>,
}

/// The selection rules of `config` in the order they apply, one line each (`include /memory/`,
/// `exclude *.tmp`): what a parity check compares to tell "differs by policy".
pub fn describe(config: &SyncConfig) -> Vec<String> {
    patterns(config)
        .into_iter()
        .map(|(p, s)| match s {
            Source::Include => format!("include {p}"),
            Source::Exclude => format!("exclude {p}"),
        })
        .collect()
}

/// Every pattern of `config`'s selection, in order: defaults, `include`, `exclude`, then the
/// designated mesh config files as anchored excludes.
fn patterns(config: &SyncConfig) -> Vec<(String, Source)> {
    let mut out: Vec<(String, Source)> = vec![
        ("/memory/".into(), Source::Include),
        ("/MEMORY.md".into(), Source::Include),
        ("/USER.md".into(), Source::Include),
    ];
    if config.sync_skills {
        out.push(("/skills/".into(), Source::Include));
    }
    out.push(("/IDENTITY.md".into(), Source::Exclude));
    out.push(("/config/".into(), Source::Exclude));
    out.extend(config.include.iter().map(|p| (p.clone(), Source::Include)));
    out.extend(config.exclude.iter().map(|p| (p.clone(), Source::Exclude)));
    out.extend(
        config
            .mesh_config
            .iter()
            .map(|p| (format!("/{}", p.trim_start_matches('/')), Source::Exclude)),
    );
    out
}

/// Where a pattern came from, for error messages and its default sense.
#[derive(Debug, Clone, Copy)]
enum Source {
    Include,
    Exclude,
}

impl Selection {
    /// Compile the selection of `config`: defaults, then `include`, then `exclude`, then the
    /// designated mesh config files (they travel stripped, never as files).
    pub fn new(config: &SyncConfig) -> Result<Selection, RulesError> {
        let patterns = patterns(config);
        let user = patterns.iter().map(|(p, s)| (p.as_str(), *s));

        let mut rules = Vec::new();
        let mut builder = GlobSetBuilder::new();
        for (pattern, source) in user {
            if let Some((rule, glob)) = compile(pattern, source)? {
                rules.push(rule);
                builder.add(glob);
            }
        }
        let set = builder.build().map_err(|e| RulesError::BadPattern {
            list: "include/exclude",
            pattern: String::new(),
            reason: e.to_string(),
        })?;
        let selecting = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.selects)
            .map(|(i, _)| i)
            .collect();
        Ok(Selection {
            rules,
            set,
            selecting,
        })
    }

    /// Decide whether `path` (a directory if `is_dir`) is synced. The workspace root itself is
    /// never a synced entry ([`Decision::NotSelected`]).
    pub fn decide(&self, path: &RelPath, is_dir: bool) -> Decision {
        let Some(parent) = path.parent() else {
            return Decision::NotSelected;
        };
        let scope = self.scope_of(&parent);
        self.decide_in(&scope, path, is_dir)
    }

    /// False if no path below directory `dir` can be synced, so a walker need not enter it.
    /// May answer true for a directory that turns out to hold nothing selected (patterns with
    /// wildcards are not solved exactly), never false for one that does.
    pub fn may_descend(&self, dir: &RelPath) -> bool {
        let scope = self.scope_of(dir);
        self.may_descend_scope(&scope, dir)
    }

    /// The scope of the workspace root.
    pub fn root_scope(&self) -> DirScope {
        DirScope {
            never: false,
            last_rule: None,
            children_may_match: self.children_may_match(&RelPath::root()),
        }
    }

    /// The scope of directory `dir`, a direct child of the directory whose scope is `parent`.
    pub fn enter(&self, parent: &DirScope, dir: &RelPath) -> DirScope {
        DirScope {
            never: parent.never || is_never_name(dir.file_name()),
            last_rule: self.own_match(parent, dir, true).max(parent.last_rule),
            children_may_match: self.children_may_match(dir),
        }
    }

    /// [`Selection::decide`] for a direct child `path` of the directory whose scope is `parent`:
    /// matches only the child's own name and path, for walkers.
    pub fn decide_in(&self, parent: &DirScope, path: &RelPath, is_dir: bool) -> Decision {
        if parent.never || is_never_name(path.file_name()) {
            return Decision::Never;
        }
        let last = self.own_match(parent, path, is_dir).max(parent.last_rule);
        match last {
            Some(i) if self.rules[i].selects => Decision::Synced,
            _ => Decision::NotSelected,
        }
    }

    /// [`Selection::may_descend`] for a directory whose own scope is `scope`.
    pub fn may_descend_scope(&self, scope: &DirScope, dir: &RelPath) -> bool {
        if scope.never {
            return false;
        }
        if scope.last_rule.is_some_and(|i| self.rules[i].selects) {
            return true;
        }
        // Something below is selected only if a selecting rule can match strictly below `dir`.
        let depth = dir.components().count();
        self.selecting
            .iter()
            .any(|&i| match &self.rules[i].components {
                None => true,
                Some(parts) => may_match_below(parts, dir, depth),
            })
    }

    /// The last rule whose pattern matches `path` itself, a direct child of the directory
    /// whose scope is `parent`; no glob matching when no pattern can match there.
    fn own_match(&self, parent: &DirScope, path: &RelPath, is_dir: bool) -> Option<usize> {
        if parent.children_may_match {
            self.last_match(path, is_dir)
        } else {
            None
        }
    }

    /// True unless every pattern is anchored and none can match a path one component below
    /// `dir` (may answer true for a pattern that turns out not to match; never false for one
    /// that does).
    fn children_may_match(&self, dir: &RelPath) -> bool {
        let depth = dir.components().count();
        self.rules.iter().any(|r| match &r.components {
            None => true,
            Some(parts) => may_match_child(parts, dir, depth),
        })
    }

    /// The scope of `dir`, computed from the root down.
    fn scope_of(&self, dir: &RelPath) -> DirScope {
        let (mut never, mut last_rule) = (false, None);
        let mut prefix = String::new();
        for comp in dir.components() {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            never |= is_never_name(comp);
            last_rule = self.last_match_str(&prefix, true).max(last_rule);
        }
        DirScope {
            never,
            last_rule,
            children_may_match: self.children_may_match(dir),
        }
    }

    /// Index of the last rule whose pattern matches `path` itself.
    fn last_match(&self, path: &RelPath, is_dir: bool) -> Option<usize> {
        self.last_match_str(path.as_str(), is_dir)
    }

    fn last_match_str(&self, path: &str, is_dir: bool) -> Option<usize> {
        thread_local! {
            // One match buffer per thread: decide runs for every file of every scan.
            static HITS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
        }
        let candidate = Candidate::new(path);
        HITS.with_borrow_mut(|hits| {
            self.set.matches_candidate_into(&candidate, hits);
            hits.iter()
                .copied()
                .filter(|&i| is_dir || !self.rules[i].dir_only)
                .max()
        })
    }
}

impl fmt::Debug for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The compiled glob set's own Debug output is pages of automaton tables.
        f.debug_struct("Selection")
            .field("rules", &self.rules.len())
            .field("selecting", &self.selecting.len())
            .finish()
    }
}

/// True if a single path component marks a secret or state that is never synced.
pub fn is_never_name(name: &str) -> bool {
    // Called for every path component of every scan: compare in place, no lowercase copy.
    let n = name.as_bytes();
    let starts = |p: &str| n.len() >= p.len() && n[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    let ends =
        |p: &str| n.len() >= p.len() && n[n.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes());
    name.eq_ignore_ascii_case(".botsync")
        // Apply's temporary files (`apply::TEMP_PREFIX`): half-written, never synced.
        || starts(".botsync-tmp-")
        || name.eq_ignore_ascii_case(".secrets")
        || starts(".env")
        || ends(".pem")
        || ends(".key")
        || starts("id_rsa")
        || starts("id_ed25519")
}

/// Compile one gitignore-style pattern; `None` for a comment.
fn compile(raw: &str, source: Source) -> Result<Option<(Rule, Glob)>, RulesError> {
    let list = match source {
        Source::Include => "include",
        Source::Exclude => "exclude",
    };
    let bad = |reason: &str| RulesError::BadPattern {
        list,
        pattern: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let mut p = raw.trim();
    if p.starts_with('#') {
        return Ok(None);
    }
    let mut selects = matches!(source, Source::Include);
    if let Some(rest) = p.strip_prefix('!') {
        selects = !selects;
        p = rest;
    }
    let dir_only = p.ends_with('/') && !p.ends_with("\\/");
    let p = p.strip_suffix('/').filter(|_| dir_only).unwrap_or(p);
    let anchored = p.contains('/');
    let p = p.strip_prefix('/').unwrap_or(p);
    if p.is_empty() {
        return Err(bad("it matches no path"));
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad("it has an empty, '.' or '..' component"));
    }
    let glob_text = if anchored {
        p.to_owned()
    } else {
        format!("**/{p}")
    };
    let glob = build_glob(&glob_text).map_err(|e| bad(&e))?;
    let components = if anchored {
        let parts = p
            .split('/')
            .map(|c| {
                if c.contains("**") {
                    Ok(None)
                } else {
                    build_glob(c).map(|g| Some(g.compile_matcher()))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        Some(parts)
    } else {
        None
    };
    Ok(Some((
        Rule {
            selects,
            dir_only,
            components,
        },
        glob,
    )))
}

fn build_glob(text: &str) -> Result<Glob, String> {
    GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

/// How the first components of an anchored pattern meet the components of a directory.
enum Prefix {
    /// They cannot match it: nothing at or below it matches the pattern.
    NoMatch,
    /// A `**` is reached first: anything below may match.
    DoubleStar,
    /// Each of the directory's components matches its own pattern component.
    Matched,
}

fn match_prefix(parts: &[Option<GlobMatcher>], dir: &RelPath) -> Prefix {
    for (i, comp) in dir.components().enumerate() {
        match parts.get(i) {
            // The pattern has fewer components than the directory, and no `**`.
            None => return Prefix::NoMatch,
            Some(None) => return Prefix::DoubleStar,
            Some(Some(m)) if !m.is_match(comp) => return Prefix::NoMatch,
            Some(Some(_)) => {}
        }
    }
    Prefix::Matched
}

/// True if an anchored pattern with these components may match a path of exactly one more
/// component than `dir` (at `depth`) below it.
fn may_match_child(parts: &[Option<GlobMatcher>], dir: &RelPath, depth: usize) -> bool {
    match match_prefix(parts, dir) {
        Prefix::NoMatch => false,
        Prefix::DoubleStar => true,
        // The child's own name is the next component: a pattern of exactly that many
        // components may match it, and so may a longer one whose rest can match nothing (`**`).
        Prefix::Matched => parts.len() == depth + 1 || parts[depth..].iter().any(Option::is_none),
    }
}

/// True if an anchored pattern with these components can match a path strictly below `dir`.
fn may_match_below(parts: &[Option<GlobMatcher>], dir: &RelPath, depth: usize) -> bool {
    match match_prefix(parts, dir) {
        Prefix::NoMatch => false,
        Prefix::DoubleStar => true,
        Prefix::Matched => parts.len() > depth,
    }
}

#[cfg(test)]
mod tests;
