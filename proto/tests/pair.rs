//! Whole sessions without sockets: the initiator and responder machines wired in memory
//! (`session::pair::Pair`), each over a real workspace (`common/replica.rs`). The same stories
//! as the quinn tests (`session.rs`, `mesh.rs`, `state.rs`), told step by step: every message is
//! in the transcript, in order, and a session is deterministic.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use botsync_engine::PeerId;
use botsync_proto::messages::{ErrorCode, Features, Message, SessionMode};
use botsync_proto::session::pair::{Pair, Side};
use botsync_proto::session::responder::ServeReport;
use botsync_proto::session::{SessionError, SessionOptions, SessionReport};
use common::{TestReplica, pseudo_random};

/// The laptop (which opens sessions) and the server (which answers them).
struct Machines {
    laptop: TestReplica,
    server: TestReplica,
}

fn machines() -> Machines {
    Machines {
        laptop: TestReplica::new(PeerId([0x1a; 32])),
        server: TestReplica::new(PeerId([0x5e; 32])),
    }
}

type Transcript = Vec<(Side, Message)>;

impl Machines {
    fn session(&self, opts: SessionOptions) -> (SessionReport, ServeReport, Transcript) {
        let end = Pair::new(&self.laptop, &self.server, opts, Features::SUPPORTED).run();
        (
            end.initiator.unwrap(),
            end.responder.unwrap(),
            end.transcript,
        )
    }

    fn sync(&self, mode: SessionMode) -> (SessionReport, ServeReport, Transcript) {
        self.session(SessionOptions::new(mode, "laptop"))
    }
}

fn kinds(t: &Transcript) -> Vec<(Side, &'static str)> {
    t.iter().map(|(side, m)| (*side, m.kind())).collect()
}

#[test]
fn two_workspaces_converge_in_one_session_and_the_next_is_one_round_trip() {
    let m = machines();
    m.laptop
        .write("memory/today.md", b"# written on the laptop\n");
    m.server
        .write("memory/server.md", b"# written on the server\n");
    m.server.write("skills/x/SKILL.md", b"a skill\n");
    let (report, served, _) = m.sync(SessionMode::Sync);
    assert!(!report.in_sync);
    assert_eq!(report.pulled.len(), 2, "{report:?}");
    assert_eq!(report.pushed.len(), 1, "{report:?}");
    assert_eq!(served.applied.len(), 1);
    assert_eq!(m.laptop.read("skills/x/SKILL.md").unwrap(), b"a skill\n");
    assert_eq!(
        m.server.read("memory/today.md").unwrap(),
        b"# written on the laptop\n"
    );
    assert_eq!(m.laptop.root(), m.server.root());

    // In sync: hello and summary both ways (with the responder's mesh config, volunteered in
    // a sync) in one round trip, then goodbye.
    let (report, served, transcript) = m.sync(SessionMode::Sync);
    assert!(report.in_sync && served.in_sync);
    assert_eq!(report.counters.round_trips, 1);
    assert_eq!(
        kinds(&transcript),
        vec![
            (Side::Initiator, "hello"),
            (Side::Responder, "hello"),
            (Side::Initiator, "summary"),
            (Side::Responder, "summary"),
            (Side::Responder, "mesh-config"),
            (Side::Initiator, "goodbye"),
        ]
    );
}

#[test]
fn pull_and_push_move_changes_one_way_and_a_dry_run_moves_nothing() {
    let m = machines();
    m.laptop.write("memory/mine.md", b"laptop\n");
    m.server.write("memory/theirs.md", b"server\n");

    let (report, _, transcript) = m.session(SessionOptions {
        dry_run: true,
        ..SessionOptions::new(SessionMode::Sync, "laptop")
    });
    assert_eq!((report.pulled.len(), report.pushed.len()), (1, 1));
    assert_eq!(m.laptop.read("memory/theirs.md"), None);
    assert_eq!(m.server.read("memory/mine.md"), None);
    assert!(
        transcript
            .iter()
            .all(|(_, msg)| !matches!(msg, Message::GetChunks { .. })),
        "a dry run fetches nothing"
    );

    let (report, _, _) = m.sync(SessionMode::Pull);
    assert_eq!((report.pulled.len(), report.pushed.len()), (1, 0));
    assert_eq!(m.laptop.read("memory/theirs.md").unwrap(), b"server\n");
    assert_eq!(m.server.read("memory/mine.md"), None);

    let (report, served, _) = m.sync(SessionMode::Push);
    assert_eq!((report.pulled.len(), report.pushed.len()), (0, 1));
    assert_eq!(served.applied.len(), 1);
    assert_eq!(m.server.read("memory/mine.md").unwrap(), b"laptop\n");
    assert_eq!(m.laptop.root(), m.server.root());
}

#[test]
fn a_conflict_is_decided_alike_on_both_sides_and_then_settled() {
    let m = machines();
    m.laptop.write("memory/plan.md", b"v1\n");
    m.sync(SessionMode::Sync);
    m.laptop.write("memory/plan.md", b"the laptop's plan\n");
    m.server.write("memory/plan.md", b"the server's plan\n");
    let (report, _, _) = m.sync(SessionMode::Sync);
    assert!(
        report
            .pulled
            .iter()
            .chain(&report.pushed)
            .any(|i| i.action.is_conflict()),
        "{report:?}"
    );
    let winner = m.laptop.read("memory/plan.md").unwrap();
    assert_eq!(m.server.read("memory/plan.md").unwrap(), winner);
    // Both sides keep the loser for review, and the next session has nothing to do.
    assert_eq!(m.laptop.files(), m.server.files());
    let (report, _, _) = m.sync(SessionMode::Sync);
    assert!(report.in_sync, "{report:?}");
}

#[test]
fn a_large_file_travels_with_its_chunk_list_elided_and_rebuilt_from_the_tree() {
    let m = machines();
    let mut big = pseudo_random(96 * 1024 * 1024, 7);
    m.server.write("memory/big.bin", &big);
    let (report, _, transcript) = m.sync(SessionMode::Sync);
    assert_eq!(m.laptop.read("memory/big.bin").unwrap(), big);
    assert_eq!(report.counters.chunk_bytes_received, big.len() as u64);
    let elided = transcript.iter().any(|(_, msg)| match msg {
        Message::Entries { entries, .. } => entries.iter().any(|e| {
            matches!(
                e.listing,
                botsync_proto::messages::ChunkListing::Elided { .. }
            )
        }),
        _ => false,
    });
    assert!(elided, "the list of more than 1024 chunks travels elided");
    // One byte changed in the middle: one or two chunks travel.
    big[48 * 1024 * 1024] ^= 0xff;
    m.server.write("memory/big.bin", &big);
    let (report, _, _) = m.sync(SessionMode::Sync);
    assert_eq!(m.laptop.read("memory/big.bin").unwrap(), big);
    assert!(
        report.counters.chunks_received <= 2,
        "{:?}",
        report.counters
    );
}

#[test]
fn skill_state_and_mesh_config_travel_in_the_same_session() {
    let m = machines();
    for r in [&m.laptop, &m.server] {
        r.set_state_sync(&["memory:*"]);
    }
    m.laptop.state_set("memory:focus", b"ship the daemon");
    m.server.state_set("memory:mood", b"calm");
    let mesh = |agents: &str| {
        format!(
            r#"{{"mesh_agents": {agents}, "github": {{"org": "o", "token": "ntn_Zx8qL2mN9vB4cR7tY1wE6uI3oP5aS0dF"}}}}"#
        )
    };
    m.laptop
        .write_mesh(".secrets/mesh-config.json", mesh(r#"{"a": 1}"#).as_bytes());
    m.server
        .write_mesh(".secrets/mesh-config.json", mesh(r#"{"b": 2}"#).as_bytes());
    let (report, served, transcript) = m.sync(SessionMode::Sync);
    assert!(report.state.exchanged);
    assert_eq!(report.state.pushed, 1);
    assert_eq!(served.state.changed, vec!["memory:focus".to_owned()]);
    assert_eq!(m.laptop.state("memory:mood").unwrap().value, b"calm");
    assert_eq!(
        m.server.state("memory:focus").unwrap().value,
        b"ship the daemon"
    );
    let merged: serde_json::Value =
        serde_json::from_slice(&m.server.read_mesh(".secrets/mesh-config.json").unwrap()).unwrap();
    assert_eq!(merged["mesh_agents"], serde_json::json!({"a": 1, "b": 2}));
    assert!(!report.mesh.is_empty() && !served.mesh.is_empty());
    // The mesh config went with its secret stripped.
    let leaked = transcript
        .iter()
        .any(|(_, msg)| format!("{msg:?}").contains("ntn_Zx8qL2mN9vB4cR7tY1wE6uI3oP5aS0dF"));
    assert!(!leaked, "a secret crossed the wire");
    // The ends of a session: goodbye after the state was confirmed.
    let tail: Vec<_> = kinds(&transcript).into_iter().rev().take(2).collect();
    assert_eq!(
        tail,
        vec![(Side::Initiator, "goodbye"), (Side::Responder, "state")]
    );
}

#[test]
fn a_push_that_would_delete_most_files_is_refused_and_the_responder_goes_on() {
    let m = machines();
    for i in 0..20 {
        m.laptop
            .write(&format!("memory/n{i}.md"), format!("note {i}\n").as_bytes());
    }
    m.sync(SessionMode::Sync);
    for i in 0..20 {
        m.laptop.delete(&format!("memory/n{i}.md"));
    }
    let end = Pair::new(
        &m.laptop,
        &m.server,
        SessionOptions::new(SessionMode::Push, "laptop"),
        Features::SUPPORTED,
    )
    .run();
    let (ours, theirs, transcript) = (end.initiator, end.responder, end.transcript);
    let err = ours.unwrap_err();
    assert!(matches!(err, SessionError::Refused(_)), "{err}");
    assert!(err.to_string().contains("delete"), "{err}");
    assert!(
        theirs.is_ok(),
        "the responder refused the offer, not the session"
    );
    assert!(transcript.iter().any(|(side, msg)| *side == Side::Responder
        && matches!(
            msg,
            Message::Error {
                code: ErrorCode::Refused,
                ..
            }
        )));
    assert_eq!(m.server.files().len(), 20, "nothing deleted on the server");
}

/// The initiator's side of recorded sessions is the seed corpus of the `responder_machine` fuzz
/// target (two bytes of features, then the frames; written with `BOTSYNC_BLESS=1`): each seed
/// must still decode to the messages a session of today sends.
#[test]
fn recorded_sessions_are_the_fuzz_seeds_and_replay() {
    let m = machines();
    for r in [&m.laptop, &m.server] {
        r.set_state_sync(&["memory:*"]);
    }
    m.laptop.write("memory/a.md", b"a\n");
    m.server.write("memory/b.md", b"b\n");
    m.laptop.state_set("memory:focus", b"fuzz");
    let mut seeds = vec![("first-sync", m.sync(SessionMode::Sync).2)];
    m.laptop.write("memory/a.md", b"a, edited\n");
    m.laptop.delete("memory/b.md");
    seeds.push(("push-edit-delete", m.sync(SessionMode::Push).2));
    seeds.push(("in-sync", m.sync(SessionMode::Sync).2));
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/responder_machine");
    let bits = u16::try_from(Features::SUPPORTED.bits()).unwrap();
    for (name, transcript) in seeds {
        let sent: Vec<&Message> = transcript
            .iter()
            .filter(|(side, _)| *side == Side::Initiator)
            .map(|(_, msg)| msg)
            .collect();
        let mut bytes = bits.to_le_bytes().to_vec();
        for msg in &sent {
            bytes.extend(botsync_proto::frame::encode_frame(msg).unwrap());
        }
        if std::env::var_os("BOTSYNC_BLESS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), &bytes).unwrap();
        }
        let seed = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; run with BOTSYNC_BLESS=1 to write it"));
        let mut decoder = botsync_proto::frame::FrameDecoder::new();
        decoder.push(&seed[2..]);
        let mut replayed = Vec::new();
        while let Some(msg) = decoder.pop().unwrap() {
            replayed.push(msg.kind());
        }
        let kinds: Vec<&str> = sent.iter().map(|msg| msg.kind()).collect();
        assert_eq!(replayed, kinds, "{name}: the seed is stale; bless it again");
    }
}
