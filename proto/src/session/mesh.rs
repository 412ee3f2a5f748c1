//! The mesh-config and parity exchanges of a session: which side sends, which side answers, and
//! when (the session mode decides which way mesh config may flow).
//!
//! When a session negotiated `mesh-config` and its initiator's summary says sync or pull, the
//! responder sends its stripped mesh config (`MeshConfig`) right after its `Summary`: the
//! initiator reads it in the same round trip, so a workspace in sync still costs one. After the
//! file sync the initiator (unless it is a dry run) merges it into its own, then, in modes sync
//! and push, sends its own files unless they already equal the responder's; the responder merges
//! them and answers with its files after the merge, so the initiator knows which versions both
//! now hold (the common ancestor of the next merge) and never closes before the push was taken.
//! `GetMeshConfig` asks for the responder's files at any point after the summaries. Both sides
//! strip their secrets before sending (the replica does) and strip what they receive again
//! before merging. A parity check asks `GetParity` right after the summaries. What this module
//! does not own: the steps themselves (the machines, [`super::initiator`] and
//! [`super::responder`]), the merge and the files (the replica), the message payloads
//! ([`crate::messages::mesh`]). It holds the rules both machines and the responder's order share.

use crate::messages::{Features, Message, SessionMode};

/// True if the responder volunteers its mesh config after its summary in this session.
pub(crate) fn volunteered(features: Features, mode: SessionMode) -> bool {
    features.contains(Features::MESH_CONFIG)
        && matches!(mode, SessionMode::Sync | SessionMode::Pull)
}

/// Why a mesh-config or parity message is out of order in a session whose initiator said
/// `mode` and which negotiated `features`, if it is.
pub(crate) fn refusal(m: &Message, mode: SessionMode, features: Features) -> Option<String> {
    let (feature, name) = match m {
        Message::GetParity => (Features::PARITY, "parity"),
        _ => (Features::MESH_CONFIG, "mesh-config"),
    };
    if !features.contains(feature) {
        return Some(format!(
            "{} without the negotiated feature {name}",
            m.kind()
        ));
    }
    match m {
        Message::MeshConfig { .. } if !matches!(mode, SessionMode::Sync | SessionMode::Push) => {
            Some(format!(
                "mesh-config pushed in a session whose summary said {mode:?}"
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_messages_follow_the_mode_and_the_features() {
        let all = Features::SUPPORTED;
        let push = Message::MeshConfig { files: vec![] };
        assert_eq!(refusal(&push, SessionMode::Sync, all), None);
        assert_eq!(refusal(&push, SessionMode::Push, all), None);
        assert!(refusal(&push, SessionMode::Pull, all).is_some());
        assert_eq!(
            refusal(&Message::GetMeshConfig, SessionMode::Push, all),
            None
        );
        assert!(volunteered(all, SessionMode::Pull) && volunteered(all, SessionMode::Sync));
        assert!(!volunteered(all, SessionMode::Push));
        let old = Features::ZSTD.union(Features::CHUNK_TREE);
        let why = refusal(&Message::GetParity, SessionMode::Sync, old).unwrap_or_default();
        assert!(why.contains("parity"), "{why}");
        assert!(refusal(&Message::GetParity, SessionMode::DryRun, all).is_none());
        assert!(refusal(&Message::GetMeshConfig, SessionMode::Sync, old).is_some());
        assert!(!volunteered(old, SessionMode::Sync));
    }
}
