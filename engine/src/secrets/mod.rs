//! The secret guard's detectors: does this text hold a private key or a token, and on which line.
//!
//! Pure and fast: bytes go in, [`Finding`]s (1-based line, [`SecretKind`]) come out. `keys` knows
//! which key names hold a secret (`password`, `api_key`; not `token_file`), `values` what secret
//! values look like (PEM private keys, GitHub/Slack/AWS/OpenAI/Anthropic/Google tokens, JSON web
//! tokens, long high-entropy strings, but not hashes, UUIDs or `data:` images).
//!
//! [`SecretRules`] is the compiled form of the config's `secret_keys`, `secret_patterns` and
//! `secret_allow`. A file is checked by [`SecretRules::check`]: known token formats and the
//! configured patterns anywhere, and assignments (`password = ...`, `"api_key": "..."`) of a
//! random-looking value to a secret key. A long random string alone does not hold a file back
//! (too many innocent ones live in notes); it does count in a config file's template.

pub mod keys;
pub mod values;

use std::sync::OnceLock;

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::bytes::Regex;

pub use self::keys::is_secret_key;
pub use self::values::{SecretKind, looks_random};

/// Files larger than this are not checked (a secret is a few hundred bytes of a small text file;
/// a large file is data, and reading it twice per change would slow the scan).
pub const MAX_CHECKED_BYTES: u64 = 4 * 1024 * 1024;

/// How much of the start of a file decides whether it is text (no NUL byte).
const TEXT_PROBE_BYTES: usize = 8 * 1024;

/// One secret found: where and what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// 1-based line number.
    pub line: u64,
    /// What was found.
    pub kind: SecretKind,
}

/// The secret settings of a workspace, compiled.
#[derive(Debug, Clone, Default)]
pub struct SecretRules {
    keys: Vec<String>,
    patterns: Vec<Regex>,
    allow: Option<GlobSet>,
    /// The assignment finder with the configured `keys` among its words; `None`: the built-in.
    assignment: Option<Regex>,
}

impl SecretRules {
    /// Compile the config's `secret_keys` (extra key-name words), `secret_patterns` (extra
    /// regular expressions) and `secret_allow` (glob paths that may hold secrets). The error
    /// names the field and entry that is wrong.
    pub fn new(
        keys: &[String],
        patterns: &[String],
        allow: &[String],
    ) -> Result<SecretRules, String> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Regex::new(p).map_err(|e| {
                    let first = e.to_string().lines().last().unwrap_or("").trim().to_owned();
                    format!("secret_patterns[{i}] {p:?} is not a valid regular expression: {first}")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow = if allow.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for (i, a) in allow.iter().enumerate() {
                let glob = Glob::new(a.trim_start_matches('/'))
                    .map_err(|e| format!("secret_allow[{i}] {a:?} is not a valid glob: {e}"))?;
                set.add(glob);
            }
            Some(
                set.build()
                    .map_err(|e| format!("secret_allow is not a valid set of globs: {e}"))?,
            )
        };
        let extra: Vec<String> = keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| regex::escape(k))
            .collect();
        let assignment = if extra.is_empty() {
            None
        } else {
            let words = format!("{KEY_WORDS}|{}", extra.join("|"));
            Some(
                assignment_regex(&words)
                    .map_err(|e| format!("secret_keys do not make a valid pattern: {e}"))?,
            )
        };
        Ok(SecretRules {
            keys: keys.to_vec(),
            patterns,
            allow,
            assignment,
        })
    }

    /// True if `path` (a workspace path) is allowed to hold secrets.
    pub fn allows(&self, path: &str) -> bool {
        self.allow.as_ref().is_some_and(|set| set.is_match(path))
    }

    /// True if a key called `name` holds a secret under these rules.
    pub fn is_secret_key(&self, name: &str) -> bool {
        keys::is_secret_key(name, &self.keys)
    }

    /// True if `value` (a whole value, like a JSON string) looks like a secret: a known token
    /// format, a configured pattern, or a long random string.
    pub fn is_secret_value(&self, value: &str) -> bool {
        values::token_kind(value).is_some()
            || self.patterns.iter().any(|p| p.is_match(value.as_bytes()))
            || looks_random(value)
    }

    /// The first secret in `text`, if any: a known token format or configured pattern anywhere,
    /// or a random-looking value assigned to a secret key. Binary text (a NUL byte near the
    /// start) holds none as far as this check goes.
    pub fn check(&self, text: &[u8]) -> Option<Finding> {
        if !is_text(text) {
            return None;
        }
        let mut hits: Vec<(usize, SecretKind)> = values::find_tokens(text);
        for (index, p) in self.patterns.iter().enumerate() {
            if let Some(m) = p.find(text) {
                hits.push((m.start(), SecretKind::Pattern { index }));
            }
        }
        let assignment = self.assignment.as_ref().or_else(|| builtin_assignment());
        for caps in assignment.into_iter().flat_map(|a| a.captures_iter(text)) {
            let (Some(key), Some(value)) = (caps.get(1), caps.get(2)) else {
                continue;
            };
            // The value first: most are short or plain, and that is cheaper to see.
            if !std::str::from_utf8(value.as_bytes()).is_ok_and(looks_random) {
                continue;
            }
            let Ok(name) = std::str::from_utf8(key.as_bytes()) else {
                continue;
            };
            if self.is_secret_key(name) {
                hits.push((
                    value.start(),
                    SecretKind::KeyValue {
                        key: name.to_owned(),
                    },
                ));
            }
        }
        let (offset, kind) = hits.into_iter().min_by_key(|(offset, _)| *offset)?;
        Some(Finding {
            line: line_of(text, offset),
            kind,
        })
    }
}

/// True if `bytes` looks like text: no NUL byte in the first few kilobytes.
pub fn is_text(bytes: &[u8]) -> bool {
    !bytes[..bytes.len().min(TEXT_PROBE_BYTES)].contains(&0)
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &[u8], offset: usize) -> u64 {
    1 + text[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

/// Words any secret key name holds (a superset of `keys`' rules), as a regular expression.
const KEY_WORDS: &str =
    r"token|passw|secret|api[_.-]?key|private[_.-]?key|access[_.-]?key|credential|auth";

/// `key = value`, `key: value`, `"key": "value"`, `export KEY=value` where the key holds one of
/// `words` (a regular expression alternation; case-insensitive): the key and the value. The
/// regex engine skips the rest of the text, so a large file without such a key costs one pass.
fn assignment_regex(words: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!(
        r#"(?i)["']?([a-z0-9_.-]*(?:{words})[a-z0-9_.-]*)["']?[ \t]*[:=][ \t]*["']?([^\s"',;}}\]]+)"#
    ))
}

/// [`assignment_regex`] of the built-in key words.
fn builtin_assignment() -> Option<&'static Regex> {
    static ASSIGNMENT: OnceLock<Option<Regex>> = OnceLock::new();
    ASSIGNMENT
        // A constant pattern, checked by the tests: it compiles.
        .get_or_init(|| assignment_regex(KEY_WORDS).ok())
        .as_ref()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    fn rules() -> SecretRules {
        SecretRules::default()
    }

    #[test]
    fn the_assignment_pattern_compiles() {
        assert!(builtin_assignment().is_some());
    }

    #[test]
    fn a_pem_key_in_notes_is_found_on_its_line() {
        let text = b"# deploy notes\n\nkey for the box:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----\n";
        let f = rules().check(text).unwrap();
        assert_eq!(f.line, 4);
        assert_eq!(f.kind, SecretKind::PrivateKey);
    }

    #[test]
    fn the_first_secret_is_reported() {
        let text = b"line one\nexport GITHUB_TOKEN=ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234\nAKIAIOSFODNN7EXAMPLE\n";
        let f = rules().check(text).unwrap();
        assert_eq!((f.line, f.kind), (2, SecretKind::GitHubToken));
    }

    #[test]
    fn a_random_value_of_a_secret_key_is_found() {
        let text =
            b"{\n  \"notion\": {\n    \"api_key\": \"Zx8qL2mN9vB4cR7tY1wE6uI3oP5aS0dF\"\n  }\n}\n";
        let f = rules().check(text).unwrap();
        assert_eq!(f.line, 3);
        assert_eq!(
            f.kind,
            SecretKind::KeyValue {
                key: "api_key".into()
            }
        );
        let env = b"DB_PASSWORD=hT3kP9qW2zX7mV5nB8cL1dR4\n";
        assert_eq!(rules().check(env).unwrap().line, 1);
    }

    #[test]
    fn the_seed_mesh_config_template_passes() {
        let seed = br#"{
  "mesh_agents": {
    "cassian": {
      "name": "Cassian Sandman",
      "bot": "@Covault_Sandman_Bot",
      "webhook": "http://100.112.130.22:18789/hooks/agent",
      "tailscale_ip": "100.112.130.22"
    }
  },
  "databases": {
    "tasks": "2f835e81-2bbb-81b6-9700-e18108a40b1f",
    "virtual_team": "2f735e81-2bbb-81eb-903a-d3c9edd8331a"
  },
  "github": { "org": "covaultxyz", "repos": { "mesh_protocols": "covaultxyz/mesh-protocols" } },
  "notion": { "token_file": "/home/agent/.secrets/notion-token" }
}"#;
        assert_eq!(rules().check(seed), None);
    }

    #[test]
    fn false_positive_fixtures_pass() {
        for text in values::tests::PASSES {
            assert_eq!(rules().check(text.as_bytes()), None, "{text}");
        }
        for text in [
            "password: see the vault entry for the box",
            "token = ${GITHUB_TOKEN}",
            "max_tokens: 4096",
            "auth: true",
            "\"password\": \"<secret>\"",
            "checksum = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "secret_id = 123e4567-e89b-12d3-a456-426614174000",
        ] {
            assert_eq!(rules().check(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn every_caught_fixture_is_caught_in_a_file() {
        for (text, kind) in values::tests::CAUGHT {
            let file = format!("intro\n{text}\n");
            let f = rules().check(file.as_bytes()).unwrap();
            assert_eq!((f.line, &f.kind), (2, kind), "{text}");
        }
    }

    #[test]
    fn assignments_are_found_on_any_line_of_a_large_file() {
        let mut text = "plain line of notes: nothing here\n".repeat(2000);
        text.push_str("db.api-key = hT3kP9qW2zX7mV5nB8cL1dR4\n");
        text.push_str("first\nlast_line_auth: Zx8qL2mN9vB4cR7tY1wE6uI3");
        let f = rules().check(text.as_bytes()).unwrap();
        assert_eq!(f.line, 2001);
        let tail = "x\nlast_line_auth: Zx8qL2mN9vB4cR7tY1wE6uI3";
        assert_eq!(rules().check(tail.as_bytes()).unwrap().line, 2);
    }

    #[test]
    fn binary_content_is_not_checked() {
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0".to_vec();
        bytes.extend_from_slice(b"AKIAIOSFODNN7EXAMPLE");
        assert_eq!(rules().check(&bytes), None);
    }

    #[test]
    fn configured_patterns_keys_and_allow_rules() {
        let r = SecretRules::new(
            &["signing".into()],
            &[r"acme_[0-9a-z]{12}".into()],
            &["notes/keys/**".into(), "/deploy.md".into()],
        )
        .unwrap();
        let f = r.check(b"a\nb\nlicense acme_0123456789ab\n").unwrap();
        assert_eq!((f.line, f.kind), (3, SecretKind::Pattern { index: 0 }));
        let f = r
            .check(b"webhook_signing = Zx8qL2mN9vB4cR7tY1wE6uI3\n")
            .unwrap();
        assert_eq!(f.line, 1);
        assert!(r.allows("notes/keys/box.pem"));
        assert!(r.allows("deploy.md"));
        assert!(!r.allows("notes/other.md"));
        assert!(r.is_secret_value("acme_0123456789ab"));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = SecretRules::new(&[], &["(unclosed".into()], &[]).unwrap_err();
        assert!(e.starts_with("secret_patterns[0] \"(unclosed\""), "{e}");
        let e = SecretRules::new(&[], &[], &["a/{b".into()]).unwrap_err();
        assert!(e.starts_with("secret_allow[0]"), "{e}");
    }

    proptest::proptest! {
        /// Any text: no panic, and a finding is on one of its lines.
        #[test]
        fn a_finding_is_on_a_line_of_the_text(
            lines in proptest::collection::vec("[ -~]{0,60}", 0..30),
            secret_at in proptest::option::of(0usize..30),
        ) {
            let mut lines = lines;
            if let Some(at) = secret_at {
                let at = at.min(lines.len());
                lines.insert(at, "GH_TOKEN=ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234".to_owned());
            }
            let text = lines.join("\n");
            if let Some(f) = rules().check(text.as_bytes()) {
                proptest::prop_assert!(f.line >= 1 && f.line as usize <= lines.len().max(1));
            }
            if secret_at.is_some() {
                proptest::prop_assert!(rules().check(text.as_bytes()).is_some());
            }
        }
    }
}
