//! The coordination envelope is peer input: any body a peer sends decodes to a request or to an
//! error, never to a panic, and every request we send decodes to itself.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use botsync_engine::locks::{Command, Holder};
use openraft::{Entry, EntryPayload, LogId, Vote};
use proptest::prelude::*;

use super::*;

fn holder() -> Holder {
    Holder {
        peer: "abcd-efgh".into(),
        agent: "claude".into(),
        machine: "laptop".into(),
    }
}

fn acquire() -> Command {
    Command::Acquire {
        name: "deploy".into(),
        project: "site".into(),
        holder: holder(),
        reason: "release".into(),
        ttl_ms: 60_000,
        now_ms: 1_700_000_000_000,
    }
}

/// One request of every kind, as a daemon sends it.
fn requests() -> Vec<Rpc> {
    let vote = Vote::new(3, 7);
    let log_id = LogId::new(openraft::CommittedLeaderId::new(3, 7), 12);
    vec![
        Rpc::Vote(VoteRequest::new(vote, Some(log_id))),
        Rpc::Append(AppendEntriesRequest {
            vote,
            prev_log_id: Some(log_id),
            entries: vec![Entry {
                log_id: LogId::new(openraft::CommittedLeaderId::new(3, 7), 13),
                payload: EntryPayload::Normal(acquire()),
            }],
            leader_commit: Some(log_id),
        }),
        Rpc::Write(Command::Release {
            name: "deploy".into(),
            project: String::new(),
            holder: holder(),
            token: 4,
            now_ms: 1,
        }),
        Rpc::Write(acquire()),
        Rpc::Status,
        Rpc::Formed,
    ]
}

#[test]
fn every_request_decodes_to_itself() {
    for rpc in requests() {
        let bytes = serde_json::to_vec(&rpc).unwrap();
        let back: Rpc = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), bytes);
    }
}

#[test]
fn every_reply_decodes_to_itself() {
    for reply in [
        RpcReply::Formed(true),
        RpcReply::Write(Err("not a voter".into())),
        RpcReply::Status(Ok(LockTable::default())),
    ] {
        let bytes = serde_json::to_vec(&reply).unwrap();
        let back: RpcReply = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_body_decodes_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Rpc>(&bytes);
        let _ = serde_json::from_slice::<RpcReply>(&bytes);
    }

    #[test]
    fn a_damaged_request_decodes_or_is_refused(
        which in 0usize..6,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = serde_json::to_vec(&requests()[which]).unwrap();
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => bytes.truncate(i),
            }
        }
        if let Ok(rpc) = serde_json::from_slice::<Rpc>(&bytes) {
            // What decodes re-encodes, and decodes again to the same document.
            let again = serde_json::to_vec(&rpc).unwrap();
            let back: Rpc = serde_json::from_slice(&again).unwrap();
            prop_assert_eq!(serde_json::to_vec(&back).unwrap(), again);
        }
    }
}
