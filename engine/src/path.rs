//! [`RelPath`]: a normalized, validated path inside a workspace.
//!
//! Paths arrive from the local file system and from untrusted peers. Both are parsed here, once,
//! into a `RelPath`: relative, `/`-separated, UTF-8 in NFC, no empty, `.` or `..` components, no
//! NUL or control characters, no name that renders deceptively (`path/deceptive.rs`: bidi controls,
//! line separators, invisible characters, surrounding white space), bounded in length and depth,
//! and never inside `.botsync/`. Code that holds a `RelPath` can join it to the workspace root
//! without further checks.

mod deceptive;
mod ondisk;

pub(crate) use self::ondisk::name_in;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use unicode_normalization::{UnicodeNormalization, is_nfc};

/// Longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Deepest accepted path, in components.
pub const MAX_PATH_DEPTH: usize = 64;
/// Longest accepted single component, in bytes (the common file-system limit).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// The workspace state directory, never synced (defined with the rest of the layout).
pub use crate::layout::STATE_DIR;

/// A validated workspace-relative path. The empty path is the workspace root.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RelPath(String);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Absolute path (leading `/`) or a Windows prefix.
    #[error("path {0:?} is absolute; only workspace-relative paths are allowed")]
    Absolute(String),
    /// Empty, `.` or `..` component.
    #[error("path {0:?} has an empty, '.' or '..' component")]
    BadComponent(String),
    /// NUL, control character or backslash.
    #[error("path {0:?} contains a control character or backslash")]
    BadCharacter(String),
    /// A name that renders as something it is not.
    #[error(
        "path {path:?} contains U+{code:04X} {what}, which makes its name render deceptively; rename it"
    )]
    Deceptive {
        /// The path as given.
        path: String,
        /// The offending character's code point.
        code: u32,
        /// What kind of character it is.
        what: &'static str,
    },
    /// Not valid UTF-8.
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(String),
    /// Too long or too deep.
    #[error("path {0:?} exceeds the length or depth limit")]
    TooLong(String),
    /// Inside the `.botsync/` state directory.
    #[error("path {0:?} is inside .botsync/, which is never synced")]
    StateDir(String),
}

impl RelPath {
    /// The workspace root (empty path).
    pub fn root() -> RelPath {
        RelPath(String::new())
    }

    /// Parse and normalize (to NFC) a `/`-separated relative path.
    pub fn new(s: &str) -> Result<RelPath, PathError> {
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(truncate_for_error(s)));
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.to_owned()));
        }
        if s.is_empty() {
            return Ok(RelPath::root());
        }
        let normalized: String = if is_nfc(s) {
            s.to_owned()
        } else {
            s.nfc().collect()
        };
        let mut depth = 0;
        for comp in normalized.split('/') {
            depth += 1;
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(PathError::BadComponent(s.to_owned()));
            }
            if comp.len() > MAX_COMPONENT_BYTES {
                return Err(PathError::TooLong(truncate_for_error(s)));
            }
            if comp.chars().any(|c| c.is_control() || c == '\\') {
                return Err(PathError::BadCharacter(s.to_owned()));
            }
            if let Some(c) = deceptive::first_deceptive(comp) {
                let what = if c.is_whitespace() && !deceptive::is_deceptive(c) {
                    "(white space at the start or end of a name)"
                } else {
                    "(a bidirectional-text control, line separator or invisible character)"
                };
                return Err(PathError::Deceptive {
                    path: s.to_owned(),
                    code: u32::from(c),
                    what,
                });
            }
        }
        if depth > MAX_PATH_DEPTH || normalized.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(truncate_for_error(s)));
        }
        if normalized == STATE_DIR || normalized.starts_with(".botsync/") {
            return Err(PathError::StateDir(s.to_owned()));
        }
        Ok(RelPath(normalized))
    }

    /// Parse a path relative to `root` from the local file system.
    pub fn from_fs(root: &Path, full: &Path) -> Result<RelPath, PathError> {
        let rel = full
            .strip_prefix(root)
            .map_err(|_| PathError::Absolute(full.display().to_string()))?;
        let mut out = String::new();
        for comp in rel.components() {
            let std::path::Component::Normal(c) = comp else {
                return Err(PathError::BadComponent(rel.display().to_string()));
            };
            let c = c
                .to_str()
                .ok_or_else(|| PathError::NotUtf8(rel.display().to_string()))?;
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(c);
        }
        RelPath::new(&out)
    }

    /// The path as a `/`-separated string (empty for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the workspace root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path under `root` on the local file system, spelled as normalized (see
    /// [`RelPath::on_disk`] for the spelling a file already on disk has).
    pub fn to_fs(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for c in self.components() {
            p.push(c);
        }
        p
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The parent directory (the root for a top-level entry); `None` for the root itself.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => RelPath(self.0[..i].to_owned()),
            None => RelPath::root(),
        })
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &str {
        // Asked for every file of every scan (selection rules): a byte search, no splitter.
        match self.0.bytes().rposition(|b| b == b'/') {
            Some(slash) => &self.0[slash + 1..],
            None => &self.0,
        }
    }

    /// `self/name`; `name` must be a single valid component.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        if self.is_root() {
            return RelPath::new(name);
        }
        let mut joined = String::with_capacity(self.0.len() + 1 + name.len());
        joined.push_str(&self.0);
        joined.push('/');
        joined.push_str(name);
        // Scanners join every name they list: a plain ASCII name below a valid (NFC) path needs
        // only its own checks, and the joined string is kept as it is, with no second copy.
        // Anything else takes the full parse, so both ways give the same result.
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && name.len() <= MAX_COMPONENT_BYTES
            && !name.starts_with(' ')
            && !name.ends_with(' ')
            && name
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'/' && b != b'\\');
        // A path of n components has at least 2n - 1 bytes: count them only for long ones.
        let shallow = joined.len() < 2 * MAX_PATH_DEPTH
            || self.0.bytes().filter(|&b| b == b'/').count() + 2 <= MAX_PATH_DEPTH;
        if plain && joined.len() <= MAX_PATH_BYTES && shallow {
            Ok(RelPath(joined))
        } else {
            RelPath::new(&joined)
        }
    }

    /// True if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// A key under which paths that differ only in letter case collide (`Memory.md`,
    /// `memory.md`): such collisions are conflicts on case-insensitive file systems.
    pub fn case_fold_key(&self) -> String {
        self.0.to_lowercase()
    }
}

fn truncate_for_error(s: &str) -> String {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        let p = RelPath::new("memory/2026-01-01.md").unwrap();
        assert_eq!(p.file_name(), "2026-01-01.md");
        assert_eq!(RelPath::new("MEMORY.md").unwrap().file_name(), "MEMORY.md");
        assert_eq!(RelPath::root().file_name(), "");
        assert_eq!(p.parent().unwrap().as_str(), "memory");
        assert_eq!(
            p.to_fs(Path::new("/w")),
            PathBuf::from("/w/memory/2026-01-01.md")
        );
        assert!(p.starts_with(&RelPath::new("memory").unwrap()));
        assert!(
            !RelPath::new("memoryx/a")
                .unwrap()
                .starts_with(&RelPath::new("memory").unwrap())
        );
    }

    #[test]
    fn rejects_hostile_paths() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/.",
            "a\0b",
            "a\nb",
            "a\\b",
            ".botsync",
            ".botsync/identity/key.pem",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(RelPath::new(&"a/".repeat(100)).is_err());
        assert!(RelPath::new(&"x".repeat(300)).is_err());
    }

    #[test]
    fn normalizes_to_nfc() {
        let decomposed = "cafe\u{301}.md";
        assert_eq!(RelPath::new(decomposed).unwrap().as_str(), "caf\u{e9}.md");
    }

    #[test]
    fn join_agrees_with_parsing_the_joined_string() {
        let long = vec!["p".repeat(250); 16].join("/");
        let parents = [
            "memory",
            "memory/caf\u{e9}",
            &"d/".repeat(63)[..125],
            &"d/".repeat(64)[..127],
            &long,
        ];
        let names = [
            "note.md",
            "",
            ".",
            "..",
            "...",
            "a/b",
            "a\\b",
            "a\tb",
            "a\u{7f}b",
            ".botsync",
            "cafe\u{301}.md",
            "\u{301}x",
            "\u{85}",
            " note.md",
            "note.md ",
            "report\u{202E}dm.exe",
            "a\u{200B}b",
            &"n".repeat(255),
            &"n".repeat(256),
            &"x".repeat(100),
        ];
        for parent in parents {
            let parent = RelPath::new(parent).unwrap();
            for name in names {
                let expected = RelPath::new(&format!("{}/{}", parent.as_str(), name));
                assert_eq!(parent.join(name), expected, "{parent:?} / {name:?}");
            }
        }
    }

    /// Issue 10: names that render deceptively were written as given.
    #[test]
    fn names_that_render_deceptively_are_refused() {
        for bad in [
            "memory/report\u{202E}dm.exe",
            "memory/a\u{2028}b.md",
            "memory/a\u{2029}b.md",
            "memory/note\u{200B}.md",
            "memory/\u{200D}.md",
            "memory/\u{FEFF}notes.md",
            "memory/\u{2066}x\u{2069}.md",
            "memory/ notes.md",
            "memory/notes.md ",
            " memory/notes.md",
            "memory /notes.md",
            "memory/notes.md\u{00A0}",
        ] {
            assert!(
                matches!(RelPath::new(bad), Err(PathError::Deceptive { .. })),
                "{bad:?} accepted"
            );
        }
        for good in [
            "memory/my notes.md",
            "memory/caf\u{e9}.md",
            "memory/\u{65e5}\u{8a18}.md",
        ] {
            assert!(RelPath::new(good).is_ok(), "{good:?} refused");
        }
        let err = RelPath::new("x\u{202E}y").unwrap_err().to_string();
        assert!(
            err.contains("U+202E") && err.contains("deceptively"),
            "{err}"
        );
    }

    #[test]
    fn deserialize_validates() {
        let r: Result<RelPath, _> = serde_json::from_str("\"../x\"");
        assert!(r.is_err());
    }
}
