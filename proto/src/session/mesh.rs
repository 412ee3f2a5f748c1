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
//! does not own: the merge itself and the files (the replica), the message payloads
//! ([`crate::messages::mesh`]).

use std::sync::Arc;

use botsync_engine::PeerId;
use tracing::debug;

use super::{Control, SessionError, blocking};
use crate::messages::{Features, MeshFile, Message, ParityInfo, SessionMode};
use crate::replica::{MeshChange, Replica, Snapshot};

/// True if the responder volunteers its mesh config after its summary in this session.
pub(crate) fn volunteered(features: Features, mode: SessionMode) -> bool {
    features.contains(Features::MESH_CONFIG)
        && matches!(mode, SessionMode::Sync | SessionMode::Pull)
}

/// As the initiator: read the mesh config the responder volunteers after its summary.
pub(crate) async fn receive(ctl: &mut Control) -> Result<Vec<MeshFile>, SessionError> {
    match ctl.recv().await? {
        Message::MeshConfig { files } => Ok(files),
        other => Err(SessionError::Protocol(format!(
            "expected mesh-config, got {}",
            other.kind()
        ))),
    }
}

/// As the initiator of a session that negotiated `parity`: ask the responder for its report.
pub(crate) async fn ask_parity(ctl: &mut Control) -> Result<ParityInfo, SessionError> {
    ctl.send(&Message::GetParity).await?;
    ctl.counters.round_trips += 1;
    match ctl.recv().await? {
        Message::Parity(info) => Ok(info),
        other => Err(SessionError::Protocol(format!(
            "expected parity, got {}",
            other.kind()
        ))),
    }
}

/// As the initiator of a session in `mode`, after the file sync: merge the responder's
/// volunteered files (`theirs`, sync and pull), then give it ours (sync and push) unless they are
/// what it already holds. Does nothing unless `mesh-config` was negotiated. Returns the files
/// that changed here.
pub(crate) async fn exchange<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
    peer: PeerId,
    mode: SessionMode,
    theirs: Option<Vec<MeshFile>>,
) -> Result<Vec<MeshChange>, SessionError> {
    if !ctl.features.contains(Features::MESH_CONFIG) {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    if let Some(files) = theirs.clone() {
        debug!(files = files.len(), "mesh config received");
        changes = blocking(replica, move |r| r.take_mesh_config(peer, files)).await?;
    }
    if !matches!(mode, SessionMode::Sync | SessionMode::Push) {
        return Ok(changes);
    }
    let files = blocking(replica, |r| r.mesh_config()).await?;
    if files.is_empty() {
        return Ok(changes);
    }
    if let Some(theirs) = theirs {
        // After our merge, theirs may already be ours (key order aside): nothing to push.
        let ours = files.clone();
        if blocking(replica, move |r| {
            Ok(r.mesh_config_agreed(peer, &ours, &theirs))
        })
        .await?
        {
            return Ok(changes);
        }
    }
    ctl.send(&Message::MeshConfig {
        files: files.clone(),
    })
    .await?;
    ctl.counters.round_trips += 1;
    // The responder's files after its merge: the ones equal to ours are agreed.
    let after = receive(ctl).await?;
    blocking(replica, move |r| {
        Ok(r.mesh_config_agreed(peer, &files, &after))
    })
    .await?;
    Ok(changes)
}

/// As the responder: send our stripped files (volunteered after the summary, or the answer to
/// `GetMeshConfig`).
pub(crate) async fn send_ours<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
) -> Result<(), SessionError> {
    let files = blocking(replica, |r| r.mesh_config()).await?;
    ctl.send(&Message::MeshConfig { files }).await
}

/// As the responder: merge the initiator's pushed files (the merge remembers them as the common
/// ancestor), then answer with ours as they are now, so it can tell what we agree on.
pub(crate) async fn take_pushed<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
    peer: PeerId,
    files: Vec<MeshFile>,
) -> Result<Vec<MeshChange>, SessionError> {
    let changes = blocking(replica, move |r| r.take_mesh_config(peer, files)).await?;
    send_ours(ctl, replica).await?;
    Ok(changes)
}

/// As the responder: answer `GetParity` with our root (from this session's summary), rules and
/// stripped mesh config.
pub(crate) async fn answer_parity<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
    snap: &Snapshot,
) -> Result<(), SessionError> {
    let (policy, mesh) = blocking(replica, |r| Ok((r.policy()?, r.mesh_config()?))).await?;
    ctl.send(&Message::Parity(ParityInfo {
        root: snap.root,
        files: snap.files,
        policy,
        mesh,
    }))
    .await
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
