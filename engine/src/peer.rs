//! [`PeerId`] and [`AgentLabel`]: who made a change.
//!
//! A peer id is the BLAKE3 hash of a peer's certificate public key (derived in `botsync-proto`).
//! Here it is a plain value: comparable (ties between concurrent versions break on it), printable
//! in a copy-safe form (base32 groups plus a check character, so a mistyped id is rejected before
//! any network traffic) and in a short form for logs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The identity of a peer: BLAKE3 of its certificate's public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Number of base32 characters for 32 bytes (256 bits / 5, rounded up).
const BODY_CHARS: usize = 52;
const GROUP: usize = 4;

impl PeerId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Short form for logs: the first 8 characters of the copy-safe form.
    pub fn short(&self) -> String {
        self.body().chars().take(8).collect()
    }

    /// The copy-safe form: 52 base32 characters and one check character, in dash-separated
    /// groups of four, e.g. `ABCD-EFGH-...-XYZ2-Q`.
    pub fn to_copy_safe(&self) -> String {
        let mut body = self.body();
        body.push(check_char(body.as_bytes()) as char);
        let mut out = String::with_capacity(body.len() + body.len() / GROUP);
        for (i, c) in body.chars().enumerate() {
            if i > 0 && i % GROUP == 0 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }

    fn body(&self) -> String {
        let mut s = data_encoding::BASE32_NOPAD.encode(&self.0);
        s.truncate(BODY_CHARS);
        s
    }
}

/// Luhn mod 32 check character over base32 symbols: catches every single-character typo and
/// every transposition of adjacent characters.
fn check_char(body: &[u8]) -> u8 {
    let n = ALPHABET.len() as u32;
    let mut factor = 2;
    let mut sum = 0u32;
    for &c in body.iter().rev() {
        let code = ALPHABET.iter().position(|&a| a == c).unwrap_or(0) as u32;
        let addend = factor * code;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / n + addend % n;
    }
    let remainder = sum % n;
    ALPHABET[((n - remainder) % n) as usize]
}

/// Error parsing a copy-safe peer id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParsePeerIdError {
    /// Wrong number of characters or characters outside the base32 alphabet.
    #[error(
        "peer id {input:?} is malformed: expected 53 characters of A-Z and 2-7 (dashes optional); copy it again from `botsync id` on that machine"
    )]
    Malformed {
        /// What was given.
        input: String,
    },
    /// The check character does not match: a typo.
    #[error(
        "peer id {input:?} fails its check character (a typo?); copy it again from `botsync id` on that machine"
    )]
    BadCheck {
        /// What was given.
        input: String,
    },
}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let cleaned: Vec<u8> = input
            .bytes()
            .filter(|b| *b != b'-' && !b.is_ascii_whitespace())
            .map(|b| b.to_ascii_uppercase())
            .collect();
        let malformed = || ParsePeerIdError::Malformed {
            input: input.to_owned(),
        };
        if cleaned.len() != BODY_CHARS + 1 || !cleaned.iter().all(|c| ALPHABET.contains(c)) {
            return Err(malformed());
        }
        let (body, check) = cleaned.split_at(BODY_CHARS);
        if check_char(body) != check[0] {
            return Err(ParsePeerIdError::BadCheck {
                input: input.to_owned(),
            });
        }
        // 52 base32 chars carry 260 bits; pad to a multiple of 8 characters to decode.
        let mut padded = body.to_vec();
        padded.extend_from_slice(b"====");
        let bytes = data_encoding::BASE32
            .decode(&padded)
            .map_err(|_| malformed())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        let id = PeerId(arr);
        // Reject non-canonical encodings (the 4 spare bits must be zero).
        if id.body().as_bytes() != body {
            return Err(malformed());
        }
        Ok(id)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

/// A free-form label for the agent that made a change (`--agent`, `BOTSYNC_AGENT`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct AgentLabel(String);

impl AgentLabel {
    /// Longest label accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Make a label, trimming whitespace and cutting it to [`Self::MAX_LEN`] bytes on a char
    /// boundary; control characters are dropped.
    pub fn new(label: &str) -> AgentLabel {
        AgentLabel(sanitize(label, Self::MAX_LEN))
    }

    /// The label text (may be empty: no agent given).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentLabel({:?})", self.0)
    }
}

/// The name a peer gives itself (its workspace's `name`, `botsync init --name`): the machine a
/// change was made on, as that machine calls itself, carried with the change so every peer
/// shows the same name even for a peer it has never met.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct MachineName(String);

impl MachineName {
    /// Longest name accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Make a name, trimming whitespace and cutting it to [`Self::MAX_LEN`] bytes on a char
    /// boundary; control characters are dropped.
    pub fn new(name: &str) -> MachineName {
        MachineName(sanitize(name, Self::MAX_LEN))
    }

    /// The name (empty: not known, for versions recorded before names were carried).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MachineName({:?})", self.0)
    }
}

fn sanitize(text: &str, max: usize) -> String {
    let mut s: String = text.trim().chars().filter(|c| !c.is_control()).collect();
    while s.len() > max {
        s.pop();
    }
    s
}

/// Who made a change: the peer, the machine as it names itself, and the agent on it.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Attribution {
    /// The peer whose scanner or apply recorded the change.
    pub peer: PeerId,
    /// The agent label given on that peer.
    pub agent: AgentLabel,
    /// The machine's own name for itself (may be empty: a version recorded before machine
    /// names were carried).
    pub machine: MachineName,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn copy_safe_round_trips(bytes in any::<[u8; 32]>()) {
            let id = PeerId(bytes);
            let s = id.to_copy_safe();
            prop_assert_eq!(s.parse::<PeerId>().unwrap(), id);
            prop_assert_eq!(s.to_lowercase().parse::<PeerId>().unwrap(), id);
        }

        #[test]
        fn any_single_typo_is_rejected(bytes in any::<[u8; 32]>(), pos in 0usize..53, sym in 0usize..32) {
            let id = PeerId(bytes);
            let mut chars: Vec<u8> = id.to_copy_safe().bytes().filter(|b| *b != b'-').collect();
            prop_assume!(chars[pos] != ALPHABET[sym]);
            chars[pos] = ALPHABET[sym];
            let typo = String::from_utf8(chars).unwrap();
            prop_assert!(typo.parse::<PeerId>().is_err());
        }
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert!(matches!(
            "abc".parse::<PeerId>(),
            Err(ParsePeerIdError::Malformed { .. })
        ));
        assert!("".parse::<PeerId>().is_err());
    }

    #[test]
    fn agent_label_is_sanitized() {
        assert_eq!(AgentLabel::new("  claude\n ").as_str(), "claude");
        assert_eq!(
            AgentLabel::new(&"x".repeat(100)).as_str().len(),
            AgentLabel::MAX_LEN
        );
    }
}
