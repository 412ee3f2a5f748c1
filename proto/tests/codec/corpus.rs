//! The fuzz seed corpus is generated from the samples in `codec.rs` and committed under
//! `fuzz/corpus/`; every file there (seeds and anything the fuzzer found and we kept) is
//! replayed through the decoders here.

use std::path::{Path, PathBuf};

use super::*;

const TARGETS: [&str; 4] = [
    "message_decode",
    "frame_decoder",
    "state_records",
    "chunk_delta",
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The seeds of each target, by file name.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut all_frames = Vec::new();
    for (name, message) in samples() {
        let frame = encode_frame(&message).unwrap();
        out.push((
            "message_decode",
            format!("seed-{name}"),
            frame[4..].to_vec(),
        ));
        out.push(("frame_decoder", format!("seed-{name}"), frame.clone()));
        all_frames.extend(frame);
    }
    out.push(("message_decode", "boundary-empty".into(), Vec::new()));
    out.push(("message_decode", "boundary-reserved-tag".into(), vec![13]));
    out.push((
        "message_decode",
        "boundary-unknown-tag".into(),
        vec![Message::TAG_COUNT as u8],
    ));
    out.push((
        "message_decode",
        "boundary-trailing-byte".into(),
        vec![12, 0],
    ));
    let mut max_len = (MAX_FRAME as u32).to_be_bytes().to_vec();
    max_len.extend([0x0c; 16]);
    out.push(("frame_decoder", "boundary-max-length".into(), max_len));
    out.push((
        "frame_decoder",
        "boundary-too-large".into(),
        (MAX_FRAME as u32 + 1).to_be_bytes().to_vec(),
    ));
    out.push((
        "frame_decoder",
        "boundary-zero-length".into(),
        vec![0, 0, 0, 0],
    ));
    let hello = encode_frame(&samples()[0].1).unwrap();
    out.push((
        "frame_decoder",
        "boundary-truncated".into(),
        hello[..hello.len() - 1].to_vec(),
    ));
    out.push(("frame_decoder", "boundary-all-messages".into(), all_frames));
    for (name, records) in state_seeds() {
        let m = Message::State {
            records,
            last: true,
        };
        out.push(("state_records", format!("seed-{name}"), encode(&m).unwrap()));
    }
    let not_state = encode(&Message::GetState {
        patterns: vec!["memory:*".into()],
        digest: Hash::ZERO,
    })
    .unwrap();
    out.push(("state_records", "boundary-not-state".into(), not_state));
    out.extend(delta_seeds());
    out
}

/// The `chunk_delta` seeds: a base length (u16 little-endian), the base, then a payload.
fn delta_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let input = |base: &[u8], payload: &[u8]| {
        let mut v = u16::try_from(base.len()).unwrap().to_le_bytes().to_vec();
        v.extend_from_slice(base);
        v.extend_from_slice(payload);
        v
    };
    let old: Vec<u8> = (0..200)
        .flat_map(|i| format!("- note line {i}: keep answers short\n").into_bytes())
        .collect();
    let mut new = old.clone();
    new.splice(3000..3010, b"an edit".iter().copied());
    let delta = ChunkData::compress_against(Hash::of(&new), new.clone(), &old);
    assert_eq!(delta.compression, Compression::ZstdDelta);
    vec![
        ("chunk_delta", "seed-edited-note".into(), input(&old, &new)),
        (
            "chunk_delta",
            "seed-real-delta".into(),
            input(&old, &delta.data),
        ),
        ("chunk_delta", "seed-no-base".into(), input(&[], &new)),
        ("chunk_delta", "boundary-short".into(), vec![1]),
    ]
}

/// The laws the `chunk_delta` target checks, replayed here over its corpus.
fn delta_decodes_safely_and_round_trips(bytes: &[u8]) {
    let Some((len, rest)) = bytes.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (base, payload) = rest.split_at(len);
    let peer_sent = ChunkData {
        id: Hash::of(payload),
        compression: Compression::ZstdDelta,
        data: payload.to_vec(),
    };
    if let Ok(out) = peer_sent.into_verified_bytes_against(Some(base)) {
        assert_eq!(Hash::of(&out), Hash::of(payload));
    }
    let sent = ChunkData::compress_against(Hash::of(payload), payload.to_vec(), base);
    assert_eq!(
        sent.into_verified_bytes_against(Some(base)).ok().as_deref(),
        Some(payload)
    );
}

/// The `state_records` seeds: record lists a peer may send.
fn state_seeds() -> Vec<(&'static str, Vec<WireState>)> {
    let rec = |value: &[u8], deleted: bool, author: u8, at_ns: i64, vv: &[(u8, u64)]| WireState {
        key: "memory:x".into(),
        value: value.to_vec(),
        deleted,
        version: VersionVector::from_pairs(vv.iter().map(|&(p, c)| (PeerId([p; 32]), c))),
        author: PeerId([author; 32]),
        agent: "bot".into(),
        at_ns,
    };
    vec![
        (
            "concurrent",
            vec![
                rec(b"a", false, 1, 10, &[(1, 1)]),
                rec(b"b", false, 2, 10, &[(2, 1)]),
            ],
        ),
        (
            "descendant",
            vec![
                rec(b"a", false, 1, 10, &[(1, 1)]),
                rec(b"c", false, 2, 5, &[(1, 1), (2, 1)]),
            ],
        ),
        (
            "tombstone",
            vec![
                rec(b"", true, 1, 99, &[(1, 2)]),
                rec(b"kept", false, 2, 1, &[(2, 1)]),
            ],
        ),
    ]
}

/// The law the `state_records` target checks, replayed here over its corpus.
fn state_merge_converges(bytes: &[u8]) {
    use botsync_engine::state::StateRecord;
    use botsync_engine::state_merge::{StateMerge, check_claims, merge};
    let Ok(Message::State { records, .. }) = decode(bytes) else {
        return;
    };
    let after =
        |local: Option<StateRecord>, remote: &StateRecord| match merge(local.as_ref(), remote) {
            StateMerge::Keep => local,
            StateMerge::Store { record, .. } => Some(record),
        };
    let records: Vec<StateRecord> = records
        .into_iter()
        .map(|w| w.into_record().1)
        .filter(|r| check_claims("k", None, r, PeerId([0xee; 32])).is_ok())
        .collect();
    for a in &records {
        for b in &records {
            let one = after(Some(a.clone()), b);
            assert_eq!(one, after(Some(b.clone()), a));
            assert_eq!(after(one.clone(), b), one);
        }
    }
}

#[test]
fn seed_corpus_is_generated_from_the_samples() {
    let bless = std::env::var_os("BOTSYNC_BLESS").is_some();
    for (target, name, bytes) in seeds() {
        let file = corpus_dir(target).join(&name);
        if bless {
            std::fs::create_dir_all(corpus_dir(target)).unwrap();
            std::fs::write(&file, &bytes).unwrap();
        }
        let committed = std::fs::read(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with BOTSYNC_BLESS=1 to regenerate",
                file.display()
            )
        });
        assert_eq!(
            committed, bytes,
            "{target}/{name} is stale; run with BOTSYNC_BLESS=1"
        );
    }
}

#[test]
fn every_corpus_file_replays_without_panic() {
    let mut replayed = 0;
    for target in TARGETS {
        for file in std::fs::read_dir(corpus_dir(target)).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            if target == "state_records" {
                state_merge_converges(&bytes);
            }
            if target == "chunk_delta" {
                delta_decodes_safely_and_round_trips(&bytes);
                replayed += 1;
                continue;
            }
            if let Ok(m) = decode(&bytes) {
                assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
            }
            let mut dec = FrameDecoder::new();
            dec.push(&bytes);
            while let Ok(Some(m)) = dec.pop() {
                assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
            }
            replayed += 1;
        }
    }
    assert!(
        replayed >= seeds().len(),
        "only {replayed} corpus files found"
    );
}

#[test]
fn seeds_decode_as_their_names_say() {
    for (target, name, bytes) in seeds() {
        let ok = name.starts_with("seed-") || name == "boundary-all-messages";
        match target {
            "message_decode" => assert_eq!(decode(&bytes).is_ok(), ok, "{name}"),
            "chunk_delta" => assert_eq!(bytes.len() >= 2, ok, "{name}"),
            "state_records" => assert_eq!(
                matches!(decode(&bytes), Ok(Message::State { .. })),
                ok,
                "{name}"
            ),
            _ => {
                let mut dec = FrameDecoder::new();
                dec.push(&bytes);
                let mut popped = 0;
                let mut failed = false;
                loop {
                    match dec.pop() {
                        Ok(Some(_)) => popped += 1,
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                let complete = !failed && dec.finish().is_ok();
                assert_eq!(complete && popped > 0, ok, "{name}: popped {popped}");
            }
        }
    }
}
