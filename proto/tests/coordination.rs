//! The coordination bodies are peer input: any body a peer sends decodes to a request (or an
//! answer) or to an error, never to a panic; every body a daemon sends decodes to itself; a lock
//! table a peer ships as a snapshot is checked as it decodes. The bodies built here are also the
//! seed corpus of the `coord_bodies` fuzz target (written with `BOTSYNC_BLESS=1`) and replay on
//! every run.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use botsync_engine::locks::{Answer, Command, Holder, LockTable};
use botsync_proto::coordination::rpc::{
    self, BodyError, LockRaft, Rpc, RpcReply, decode_reply, decode_request, decode_table,
};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use proptest::prelude::*;

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

fn release(token: u64) -> Command {
    Command::Release {
        name: "deploy".into(),
        project: String::new(),
        holder: holder(),
        token,
        now_ms: 1_700_000_001_000,
    }
}

fn table() -> LockTable {
    let mut t = LockTable::default();
    t.apply(&acquire());
    t
}

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(3, 7), index)
}

/// One request of every kind, as a daemon sends it.
fn requests() -> Vec<(&'static str, Rpc)> {
    let vote = Vote::new(3, 7);
    let snapshot = InstallSnapshotRequest::<LockRaft> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(12)),
            last_membership: StoredMembership::new(
                Some(log_id(1)),
                Membership::new(vec![[7u64, 9].into_iter().collect()], None),
            ),
            snapshot_id: "3-7-12".into(),
        },
        offset: 0,
        data: rpc::encode(&table()).unwrap(),
        done: true,
    };
    vec![
        ("vote", Rpc::Vote(VoteRequest::new(vote, Some(log_id(12))))),
        (
            "append",
            Rpc::Append(AppendEntriesRequest {
                vote,
                prev_log_id: Some(log_id(12)),
                entries: vec![
                    Entry {
                        log_id: log_id(13),
                        payload: EntryPayload::Normal(acquire()),
                    },
                    Entry {
                        log_id: log_id(14),
                        payload: EntryPayload::Normal(release(1)),
                    },
                ],
                leader_commit: Some(log_id(12)),
            }),
        ),
        ("snapshot", Rpc::Snapshot(snapshot)),
        ("write_release", Rpc::Write(release(4))),
        ("write_acquire", Rpc::Write(acquire())),
        ("status", Rpc::Status),
        ("formed", Rpc::Formed),
    ]
}

/// One answer of the kinds a daemon sends.
fn replies() -> Vec<(&'static str, RpcReply)> {
    let mut t = LockTable::default();
    let Answer::Held(lock) = t.apply(&acquire()) else {
        panic!("a free lock is granted")
    };
    vec![
        ("formed", RpcReply::Formed(true)),
        ("write_refused", RpcReply::Write(Err("not a voter".into()))),
        ("write_held", RpcReply::Write(Ok(Answer::Blocked(lock)))),
        ("status", RpcReply::Status(Ok(table()))),
        (
            "append",
            RpcReply::Append(Ok(AppendEntriesResponse::Success)),
        ),
    ]
}

#[test]
fn every_request_decodes_to_itself() {
    for (name, request) in requests() {
        let bytes = rpc::encode(&request).unwrap();
        let back = decode_request(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rpc::encode(&back).unwrap(), bytes, "{name}");
    }
}

#[test]
fn every_reply_decodes_to_itself() {
    for (name, reply) in replies() {
        let bytes = rpc::encode(&reply).unwrap();
        let back = decode_reply(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rpc::encode(&back).unwrap(), bytes, "{name}");
    }
}

#[test]
fn a_snapshot_whose_table_breaks_its_rules_is_refused() {
    let good = String::from_utf8(rpc::encode(&table()).unwrap()).unwrap();
    assert_eq!(decode_table(good.as_bytes()).unwrap(), table());
    // A lock filed under another lock's key, a token above the counter, a name with a `/`.
    for (from, to) in [
        ("\"site/deploy\"", "\"other/deploy\""),
        ("\"last_token\":1", "\"last_token\":0"),
        ("\"name\":\"deploy\"", "\"name\":\"de/ploy\""),
    ] {
        let bad = good.replace(from, to);
        assert_ne!(bad, good, "{from}");
        let err = decode_table(bad.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                BodyError::Malformed {
                    what: "snapshot",
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn a_body_over_the_limit_is_refused_before_it_is_parsed() {
    let huge = vec![b' '; botsync_proto::limits::MAX_COORD_BODY + 1];
    assert!(matches!(decode_request(&huge), Err(BodyError::TooLong(_))));
    assert!(matches!(decode_reply(&huge), Err(BodyError::TooLong(_))));
}

#[test]
fn the_fuzz_seeds_are_the_bodies_a_daemon_sends() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/coord_bodies");
    // The fuzz target reads the first byte as the kind: 0 a request, 1 an answer.
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, request) in requests() {
        let mut bytes = vec![0];
        bytes.extend(rpc::encode(&request).unwrap());
        seeds.push((format!("request_{name}"), bytes));
    }
    for (name, reply) in replies() {
        let mut bytes = vec![1];
        bytes.extend(rpc::encode(&reply).unwrap());
        seeds.push((format!("reply_{name}"), bytes));
    }
    if std::env::var_os("BOTSYNC_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in seeds {
        let stored = std::fs::read(dir.join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e}; run with BOTSYNC_BLESS=1 to write it"));
        assert_eq!(stored, bytes, "{name} changed; run with BOTSYNC_BLESS=1");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_body_decodes_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_reply(&bytes);
        let _ = decode_table(&bytes);
    }

    #[test]
    fn a_damaged_request_decodes_or_is_refused(
        which in 0usize..7,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = rpc::encode(&requests()[which].1).unwrap();
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
        if let Ok(request) = decode_request(&bytes) {
            // What decodes re-encodes, and decodes again to the same document.
            let again = rpc::encode(&request).unwrap();
            let back = decode_request(&again).unwrap();
            prop_assert_eq!(rpc::encode(&back).unwrap(), again);
        }
    }
}
