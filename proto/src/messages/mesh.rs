//! The payloads of the mesh-config and parity messages (`GetMeshConfig` / `MeshConfig`, feature
//! `mesh-config`; `GetParity` / `Parity`, feature `parity`) and their post-decode checks.
//!
//! A [`MeshFile`] is one designated config file as its owner strips it: secret values replaced by
//! a placeholder (`botsync_engine::mesh::strip_bytes`). Nothing here checks that a file really
//! holds no secret: the receiver strips what it gets again before taking anything in. A
//! [`ParityInfo`] is what a peer says about itself for `botsync parity`: its Merkle root, its
//! selection rules (a digest and the rules themselves, so "differs by policy" can name them) and
//! its stripped mesh config. What this module does not own: when the messages may be sent (the
//! session, `crate::session::mesh`) and the merge (the replica).

use botsync_engine::{Hash, RelPath};
use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::limits::{
    MAX_MESH_FILE_BYTES, MAX_MESH_FILES, MAX_POLICY_RULE_BYTES, MAX_POLICY_RULES, fit_text,
};

/// One designated mesh config file, stripped of its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshFile {
    /// Where the file lives in the sender's workspace (`.secrets/mesh-config.json` by default).
    pub path: RelPath,
    /// Its stripped JSON text (≤ [`MAX_MESH_FILE_BYTES`]).
    pub content: Vec<u8>,
}

/// A peer's selection rules: what it syncs, as a digest and as the rules in order (as many as
/// one report holds: see [`Policy::of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// BLAKE3 of the rules joined by newlines: equal digests mean the same selection.
    pub digest: Hash,
    /// The rules in the order they apply (`include /memory/`, `exclude *.tmp`, ...).
    pub rules: Vec<String>,
}

impl Policy {
    /// The policy made of `rules`, with its digest over all of them. The list is fitted to what
    /// a peer accepts: a rule longer than [`MAX_POLICY_RULE_BYTES`] is cut and ends in `…`, and
    /// past [`MAX_POLICY_RULES`] the last place says how many more rules the digest covers.
    /// (A config with 300 excludes made every parity check and status of its peer fail: the
    /// report did not encode, and the session closed as `bad message`.)
    pub fn of(rules: Vec<String>) -> Policy {
        Policy {
            digest: Hash::of(rules.join("\n").as_bytes()),
            rules: fitted(rules),
        }
    }
}

fn fitted(rules: Vec<String>) -> Vec<String> {
    let mut rules: Vec<String> = rules
        .into_iter()
        .map(|r| fit_text(r, MAX_POLICY_RULE_BYTES))
        .collect();
    if rules.len() > MAX_POLICY_RULES {
        let kept = MAX_POLICY_RULES - 1;
        let more = rules.len() - kept;
        rules.truncate(kept);
        rules.push(format!("… and {more} more rules"));
    }
    rules
}

/// What a peer reports about itself for a parity check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParityInfo {
    /// Its workspace Merkle root (over its synced selection).
    pub root: Hash,
    /// Files under that root.
    pub files: u64,
    /// Its selection rules.
    pub policy: Policy,
    /// Its designated mesh config files, stripped.
    pub mesh: Vec<MeshFile>,
}

/// Check a list of mesh files against the caps.
pub(crate) fn validate_files(files: &[MeshFile]) -> Result<(), CodecError> {
    CodecError::check_limit("mesh config files", files.len(), MAX_MESH_FILES)?;
    for f in files {
        CodecError::check_limit(
            "bytes of a mesh config file",
            f.content.len(),
            MAX_MESH_FILE_BYTES,
        )?;
    }
    Ok(())
}

/// Check a parity report against the caps.
pub(crate) fn validate_parity(info: &ParityInfo) -> Result<(), CodecError> {
    CodecError::check_limit(
        "selection rules in a policy",
        info.policy.rules.len(),
        MAX_POLICY_RULES,
    )?;
    for rule in &info.policy.rules {
        CodecError::check_limit(
            "bytes of a selection rule",
            rule.len(),
            MAX_POLICY_RULE_BYTES,
        )?;
    }
    validate_files(&info.mesh)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::messages::Message;

    fn file(len: usize) -> MeshFile {
        MeshFile {
            path: RelPath::new(".secrets/mesh-config.json").unwrap(),
            content: vec![b' '; len],
        }
    }

    #[test]
    fn policy_digest_depends_on_rules_and_their_order() {
        let a = Policy::of(vec!["include /memory/".into(), "exclude *.tmp".into()]);
        let b = Policy::of(vec!["exclude *.tmp".into(), "include /memory/".into()]);
        assert_ne!(a.digest, b.digest);
        assert_eq!(a, Policy::of(a.rules.clone()));
    }

    #[test]
    fn a_policy_of_many_or_long_rules_fits_one_report_and_its_digest_covers_them_all() {
        let many: Vec<String> = (0..300).map(|i| format!("exclude *.tmp{i}.md")).collect();
        let long = format!("exclude {}", "é".repeat(MAX_POLICY_RULE_BYTES));
        let policy = Policy::of(many.iter().cloned().chain([long]).collect());
        assert_eq!(policy.rules.len(), MAX_POLICY_RULES);
        assert_eq!(
            policy.rules[..MAX_POLICY_RULES - 1],
            many[..MAX_POLICY_RULES - 1]
        );
        assert_eq!(policy.rules[MAX_POLICY_RULES - 1], "… and 46 more rules");
        assert_ne!(
            policy.digest,
            Policy::of(many.clone()).digest,
            "the cut rules count"
        );
        let info = ParityInfo {
            root: Hash::ZERO,
            files: 1,
            policy,
            mesh: vec![],
        };
        let bytes = encode(&Message::Parity(info.clone())).unwrap();
        assert_eq!(decode(&bytes).unwrap(), Message::Parity(info));

        let cut = Policy::of(vec![format!(
            "exclude {}",
            "é".repeat(MAX_POLICY_RULE_BYTES)
        )]);
        assert!(cut.rules[0].len() <= MAX_POLICY_RULE_BYTES && cut.rules[0].ends_with('…'));
    }

    #[test]
    fn too_many_or_too_large_files_are_refused() {
        assert!(validate_files(&[file(MAX_MESH_FILE_BYTES)]).is_ok());
        let err = validate_files(&[file(MAX_MESH_FILE_BYTES + 1)]).unwrap_err();
        assert!(err.to_string().contains("mesh config file"), "{err}");
        let many = vec![file(1); MAX_MESH_FILES + 1];
        assert!(validate_files(&many).is_err());
    }

    #[test]
    fn a_parity_with_an_oversized_rule_does_not_decode() {
        let info = ParityInfo {
            root: Hash::ZERO,
            files: 1,
            policy: Policy {
                digest: Hash::ZERO,
                rules: vec!["x".repeat(MAX_POLICY_RULE_BYTES + 1)],
            },
            mesh: vec![],
        };
        assert!(encode(&Message::Parity(info.clone())).is_err());
        let mut ok = info;
        ok.policy.rules = vec!["include /memory/".into()];
        let bytes = encode(&Message::Parity(ok.clone())).unwrap();
        assert_eq!(decode(&bytes).unwrap(), Message::Parity(ok));
    }

    #[test]
    fn a_mesh_file_outside_the_workspace_does_not_decode() {
        let good = encode(&Message::MeshConfig {
            files: vec![file(2)],
        })
        .unwrap();
        // Swap the path for "../secrets.json" of the same length (25 bytes).
        let bad_path = b"../secrets/mesh-conf.json";
        let mut bytes = good.clone();
        let at = bytes
            .windows(25)
            .position(|w| w == b".secrets/mesh-config.json")
            .unwrap();
        bytes[at..at + 25].copy_from_slice(bad_path);
        assert!(decode(&good).is_ok());
        assert!(decode(&bytes).is_err());
    }
}
