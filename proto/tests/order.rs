//! The responder's message order (`session::order`), without sockets: whole sessions as the
//! initiator sends them are accepted step by step, anything out of order ends the session, and
//! the seed corpus of the `session_order` fuzz target (written from these sessions with
//! `BOTSYNC_BLESS=1`) replays here on every run.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use botsync_engine::{
    AgentLabel, Attribution, ChunkerParams, EntryKind, FileEntry, Hash, MachineName, Mode, PeerId,
    RelPath, VersionVector,
};
use botsync_proto::frame::{FrameDecoder, encode_frame};
use botsync_proto::messages::{Features, Message, SessionMode, WireEntry};
use botsync_proto::session::order::{Phase, ResponderOrder, Step};
use proptest::prelude::*;

fn summary(mode: SessionMode) -> Message {
    Message::Summary {
        root: Hash::of(b"root"),
        files: 3,
        mode,
        skipped: 0,
    }
}

fn paths(p: &[&str]) -> Vec<RelPath> {
    p.iter().map(|p| RelPath::new(p).unwrap()).collect()
}

/// Sessions as a real initiator sends them, each accepted to its goodbye.
fn sessions() -> Vec<(&'static str, Vec<Message>)> {
    let offer = |last| Message::Offer {
        entries: Vec::new(),
        dry_run: false,
        last,
        force: false,
    };
    vec![
        (
            "pull",
            vec![
                summary(SessionMode::Pull),
                Message::GetNodes {
                    paths: paths(&[""]),
                },
                Message::GetEntries {
                    paths: paths(&["memory/a.md", "memory/b.md"]),
                },
                Message::Goodbye,
            ],
        ),
        (
            "push",
            vec![
                summary(SessionMode::Push),
                Message::GetEntries {
                    paths: paths(&["memory/a.md"]),
                },
                offer(false),
                offer(true),
                Message::Goodbye,
            ],
        ),
        (
            // With `direct-offer`: the offer of what changed since the responder's root was
            // the initiator's, with no descent and no entries asked.
            "push-direct",
            vec![
                summary(SessionMode::Push),
                Message::Offer {
                    entries: vec![tombstone("memory/b.md")],
                    dry_run: false,
                    last: true,
                    force: false,
                },
                Message::Goodbye,
            ],
        ),
        (
            "sync-with-state",
            vec![
                summary(SessionMode::Sync),
                Message::GetMeshConfig,
                Message::GetParity,
                Message::GetState {
                    patterns: vec!["memory:*".into()],
                    digest: Hash::ZERO,
                },
                Message::State {
                    records: Vec::new(),
                    last: true,
                },
                Message::Goodbye,
            ],
        ),
        (
            "in-sync",
            vec![summary(SessionMode::Sync), Message::Goodbye],
        ),
        (
            "dry-run",
            vec![summary(SessionMode::DryRun), Message::Goodbye],
        ),
    ]
}

fn accepts_all(features: Features, msgs: &[Message]) -> Result<(), String> {
    let mut o = ResponderOrder::new(features);
    for m in msgs {
        o.accept(m).map_err(|e| format!("{}: {e}", m.kind()))?;
    }
    assert_eq!(o.phase(), Phase::Done, "every session ends with goodbye");
    Ok(())
}

#[test]
fn sessions_as_an_initiator_sends_them_are_accepted_to_the_end() {
    for (name, msgs) in sessions() {
        accepts_all(Features::SUPPORTED, &msgs).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn the_fuzz_seeds_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/session_order");
    if std::env::var_os("BOTSYNC_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, msgs) in sessions() {
            // The features as the target reads them: two bytes, little-endian.
            let mut bytes = u16::try_from(Features::SUPPORTED.bits())
                .unwrap()
                .to_le_bytes()
                .to_vec();
            for m in &msgs {
                bytes.extend(encode_frame(m).unwrap());
            }
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut seeds = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let Some((bits, stream)) = data.split_first_chunk::<2>() else {
            continue;
        };
        let features = u64::from(u16::from_le_bytes(*bits));
        let mut o = ResponderOrder::new(Features::from_bits(features));
        let mut d = FrameDecoder::new();
        d.push(stream);
        let mut ended = false;
        while let Ok(Some(m)) = d.pop() {
            let v = o.accept(&m);
            assert!(!(ended && v.is_ok()), "accepted after the end");
            ended |= v.is_err() || v == Ok(Step::Goodbye);
        }
        seeds += 1;
    }
    assert!(seeds >= 5, "the seed corpus is missing");
}

proptest! {
    /// Any message moved in front of the summary ends the session there.
    #[test]
    fn nothing_but_the_summary_opens_a_session(which in 0usize..5, at in 1usize..4) {
        let (_, msgs) = &sessions()[which];
        prop_assume!(at < msgs.len() && msgs[at] != Message::Goodbye);
        let mut o = ResponderOrder::new(Features::SUPPORTED);
        prop_assert!(o.accept(&msgs[at]).is_err());
        prop_assert!(o.accept(&msgs[0]).is_err(), "nothing after a refusal");
    }
}

/// A tombstone of `path`: an entry that needs no chunks.
fn tombstone(path: &str) -> WireEntry {
    WireEntry::inline(FileEntry {
        path: RelPath::new(path).unwrap(),
        kind: EntryKind::Tombstone,
        size: 0,
        mtime_ns: 1,
        mode: Mode::default(),
        content: Hash::ZERO,
        chunks: Vec::new(),
        chunker: ChunkerParams::DEFAULT,
        version: VersionVector::from_pairs([(PeerId([7; 32]), 1)]),
        parent: None,
        changed_by: Attribution {
            peer: PeerId([7; 32]),
            agent: AgentLabel::new("test"),
            machine: MachineName::default(),
        },
    })
}

#[test]
fn an_offer_may_name_only_paths_whose_entries_were_asked_for() {
    let without = Features::from_bits(Features::SUPPORTED.bits() & !Features::DIRECT_OFFER.bits());
    for asked in [false, true] {
        let mut o = ResponderOrder::new(without);
        o.accept(&summary(SessionMode::Push)).unwrap();
        if asked {
            o.accept(&Message::GetEntries {
                paths: paths(&["memory/a.md"]),
            })
            .unwrap();
        }
        let offered = o.accept(&Message::Offer {
            entries: vec![tombstone("memory/a.md")],
            dry_run: false,
            last: true,
            force: false,
        });
        assert_eq!(offered.is_ok(), asked, "{offered:?}");
    }
}

#[test]
fn with_direct_offer_an_offer_may_name_paths_never_asked_for() {
    let mut o = ResponderOrder::new(Features::SUPPORTED);
    o.accept(&summary(SessionMode::Push)).unwrap();
    let offered = o.accept(&Message::Offer {
        entries: vec![tombstone("memory/a.md")],
        dry_run: false,
        last: true,
        force: false,
    });
    assert!(offered.is_ok(), "{offered:?}");
    // The mode still has to send.
    let mut pull = ResponderOrder::new(Features::SUPPORTED);
    pull.accept(&summary(SessionMode::Pull)).unwrap();
    let offered = pull.accept(&Message::Offer {
        entries: vec![tombstone("memory/a.md")],
        dry_run: false,
        last: true,
        force: false,
    });
    assert!(offered.is_err(), "{offered:?}");
}
