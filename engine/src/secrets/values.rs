//! Secret value detectors: what a private key, an API token or a random secret looks like.
//!
//! Pure and byte-oriented: [`find_tokens`] runs the known formats (PEM private key blocks,
//! GitHub, Slack, AWS, OpenAI, Anthropic, Google, JSON web tokens) over a whole text at once and
//! reports the byte offset of each hit; [`looks_random`] judges one value on its own (a long
//! high-entropy string), with the exceptions that are random but not secret: hex digests
//! (SHA-256, BLAKE3), UUIDs and UUID-like database ids, `data:` URIs.

use std::fmt;
use std::sync::OnceLock;

use regex::bytes::Regex;

/// What kind of secret was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// A PEM `-----BEGIN ... PRIVATE KEY-----` block.
    PrivateKey,
    /// A GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GitHubToken,
    /// A Slack token (`xoxb-`, `xoxp-`, `xoxa-`, `xoxs-`).
    SlackToken,
    /// An AWS access key id (`AKIA...`, `ASIA...`).
    AwsAccessKey,
    /// An OpenAI API key (`sk-...`).
    OpenAiKey,
    /// An Anthropic API key (`sk-ant-...`).
    AnthropicKey,
    /// A Google API key (`AIza...`).
    GoogleApiKey,
    /// A JSON web token (`eyJ...eyJ...sig`).
    JsonWebToken,
    /// A secret-looking value assigned to a key whose name says secret (`password = ...`).
    KeyValue {
        /// The key's name as written.
        key: String,
    },
    /// A match of the configured `secret_patterns` entry with this index.
    Pattern {
        /// Index into `secret_patterns`.
        index: usize,
    },
}

/// Longest value [`looks_random`] judges; longer strings are data, not a credential.
const MAX_RANDOM_LEN: usize = 512;
/// Shortest value [`looks_random`] calls random.
const MIN_RANDOM_LEN: usize = 20;
/// Shannon entropy (bits per character) at or above which a long value is called random.
const ENTROPY_BITS: f64 = 3.5;

/// Every known token format found in `text`: (byte offset, kind), in order of offset.
pub fn find_tokens(text: &[u8]) -> Vec<(usize, SecretKind)> {
    let mut out = Vec::new();
    for (regex, kind) in detectors() {
        for m in regex.find_iter(text) {
            out.push((m.start(), kind.clone()));
        }
    }
    out.sort_by_key(|(offset, _)| *offset);
    // An Anthropic key also matches the OpenAI form at the same offset: keep the first kind.
    out.dedup_by_key(|(offset, _)| *offset);
    out
}

/// The known token format `value` (a whole value, e.g. a JSON string) holds, if any.
pub fn token_kind(value: &str) -> Option<SecretKind> {
    find_tokens(value.as_bytes())
        .into_iter()
        .next()
        .map(|(_, k)| k)
}

/// True if `value` looks like a random secret: long enough, one unbroken word of token
/// characters, several character classes and high Shannon entropy; and not a hex digest, a
/// UUID or UUID-like id, or a `data:` URI.
pub fn looks_random(value: &str) -> bool {
    let v = value.trim();
    if v.len() < MIN_RANDOM_LEN || v.len() > MAX_RANDOM_LEN || v.starts_with("data:") {
        return false;
    }
    if !v.bytes().all(is_token_byte) {
        return false; // words, URLs, paths with spaces: not one token
    }
    if is_hex_id(v) || v.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    // Separators split ids like `covaultxyz/mesh-protocols` into words; a random secret has no
    // more than an occasional one.
    let separators = v.bytes().filter(|b| b"/.-_".contains(b)).count();
    if separators * 8 > v.len() {
        return false;
    }
    let classes = [
        v.bytes().any(|b| b.is_ascii_lowercase()),
        v.bytes().any(|b| b.is_ascii_uppercase()),
        v.bytes().any(|b| b.is_ascii_digit()),
    ]
    .iter()
    .filter(|c| **c)
    .count();
    classes >= 3 && shannon_entropy(v.as_bytes()) >= ENTROPY_BITS
}

/// Shannon entropy of `bytes` in bits per byte (0 for empty input).
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// True for hex digests (any length, optionally `sha256:`-style prefixed) and hex ids grouped
/// by dashes (UUIDs, Notion-style database ids).
fn is_hex_id(v: &str) -> bool {
    let body = v.rsplit_once(':').map_or(v, |(_, b)| b);
    !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && body.bytes().any(|b| b.is_ascii_hexdigit())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/=_-.:".contains(&b)
}

/// The compiled detectors, in the order they are reported for one offset.
fn detectors() -> &'static [(Regex, SecretKind)] {
    static DETECTORS: OnceLock<Vec<(Regex, SecretKind)>> = OnceLock::new();
    DETECTORS.get_or_init(|| {
        let table: [(&str, SecretKind); 9] = [
            (
                r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----",
                SecretKind::PrivateKey,
            ),
            (
                r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b",
                SecretKind::GitHubToken,
            ),
            (r"\bgithub_pat_[A-Za-z0-9_]{40,}\b", SecretKind::GitHubToken),
            (r"\bxox[bpas]-[A-Za-z0-9-]{10,}", SecretKind::SlackToken),
            (r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", SecretKind::AwsAccessKey),
            (r"\bsk-ant-[A-Za-z0-9_-]{20,}", SecretKind::AnthropicKey),
            (r"\bsk-(proj-)?[A-Za-z0-9_-]{20,}", SecretKind::OpenAiKey),
            (r"\bAIza[0-9A-Za-z_-]{35}\b", SecretKind::GoogleApiKey),
            (
                r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
                SecretKind::JsonWebToken,
            ),
        ];
        table
            .into_iter()
            // The patterns above are constants checked by the tests: they compile.
            .filter_map(|(re, kind)| Regex::new(re).ok().map(|r| (r, kind)))
            .collect()
    })
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretKind::PrivateKey => f.write_str("a private key"),
            SecretKind::GitHubToken => f.write_str("a GitHub token"),
            SecretKind::SlackToken => f.write_str("a Slack token"),
            SecretKind::AwsAccessKey => f.write_str("an AWS access key"),
            SecretKind::OpenAiKey => f.write_str("an OpenAI API key"),
            SecretKind::AnthropicKey => f.write_str("an Anthropic API key"),
            SecretKind::GoogleApiKey => f.write_str("a Google API key"),
            SecretKind::JsonWebToken => f.write_str("a JSON web token"),
            SecretKind::KeyValue { key } => write!(f, "a secret value for {key:?}"),
            SecretKind::Pattern { index } => write!(f, "a match of secret_patterns[{index}]"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Realistic shapes of real credentials (random, revoked-format examples).
    pub(crate) const CAUGHT: &[(&str, SecretKind)] = &[
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n",
            SecretKind::PrivateKey,
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n",
            SecretKind::PrivateKey,
        ),
        ("-----BEGIN PRIVATE KEY-----", SecretKind::PrivateKey),
        ("-----BEGIN EC PRIVATE KEY-----", SecretKind::PrivateKey),
        (
            "GH_TOKEN=ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234",
            SecretKind::GitHubToken,
        ),
        (
            "token: gho_16C7e42F292c6912E7710c838347Ae178B4a",
            SecretKind::GitHubToken,
        ),
        (
            "github_pat_11ABCDEFG0abcdefghijkl_MNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz012345",
            SecretKind::GitHubToken,
        ),
        (
            "slack: xoxb-2048576-1234567890-AbCdEfGhIjKlMnOp",
            SecretKind::SlackToken,
        ),
        (
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
            SecretKind::AwsAccessKey,
        ),
        (
            "OPENAI_API_KEY=sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF",
            SecretKind::OpenAiKey,
        ),
        (
            "\"key\": \"sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789\"",
            SecretKind::AnthropicKey,
        ),
        (
            "maps=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
            SecretKind::GoogleApiKey,
        ),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlX2J5dGVz",
            SecretKind::JsonWebToken,
        ),
    ];

    /// Random-looking but not secret: hashes, ids, images, prose, the seed's config.
    pub(crate) const PASSES: &[&str] = &[
        "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "blake3 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        "id = 123e4567-e89b-12d3-a456-426614174000",
        "\"tasks\": \"2f835e81-2bbb-81b6-9700-e18108a40b1f\"",
        "\"virtual_team\": \"2f735e81-2bbb-81eb-903a-d3c9edd8331a\"",
        "![logo](data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==)",
        "\"webhook\": \"http://100.112.130.22:18789/hooks/agent\"",
        "The skeleton key of the risk-assessment was a secret to nobody.",
        "ask-anyone is a task name, and so is desk-organizer-for-the-team",
        "git commit 3facff4df6af6001 touched mesh-config",
        "\"token_file\": \"/home/agent/.secrets/notion-token\"",
    ];

    #[test]
    fn every_detector_compiles() {
        assert_eq!(detectors().len(), 9);
    }

    #[test]
    fn realistic_credentials_are_caught() {
        for (text, kind) in CAUGHT {
            let found = find_tokens(text.as_bytes());
            assert_eq!(found.first().map(|f| &f.1), Some(kind), "{text}");
        }
    }

    #[test]
    fn look_alikes_pass() {
        for text in PASSES {
            assert!(find_tokens(text.as_bytes()).is_empty(), "{text}");
            for word in text.split([' ', '"', '(', ')']) {
                assert!(!looks_random(word), "{word:?} in {text}");
            }
        }
    }

    #[test]
    fn random_secrets_look_random_and_ids_do_not() {
        assert!(looks_random("Zx8qL2mN9vB4cR7tY1wE6uI3oP5aS0dF"));
        assert!(looks_random("hT3/kP9+qW2zX7mV5nB8cL1dR4fG6jH0sA="));
        assert!(!looks_random("2f835e812bbb81b69700e18108a40b1f")); // Notion id, no dashes
        assert!(!looks_random("covaultxyz/mesh-protocols"));
        assert!(!looks_random("@Oracleartificialmindsetsbot"));
        assert!(!looks_random("ThisIsNotRandom"));
        assert!(!looks_random("12345678901234567890123"));
    }

    #[test]
    fn entropy_of_simple_inputs() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
    }

    proptest! {
        /// Hex digests of any length never look random, whatever their case.
        #[test]
        fn hex_never_looks_random(bytes in proptest::collection::vec(any::<u8>(), 8..64), upper: bool) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let hex = if upper { hex.to_uppercase() } else { hex };
            prop_assert!(!looks_random(&hex));
        }

        /// Detection never panics on arbitrary bytes and reports offsets inside the input.
        #[test]
        fn offsets_are_inside_the_input(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            for (offset, _) in find_tokens(&bytes) {
                prop_assert!(offset < bytes.len());
            }
        }
    }
}
