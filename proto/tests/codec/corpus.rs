//! The fuzz seed corpus is generated from the samples in `codec.rs` and committed under
//! `fuzz/corpus/`; every file there (seeds and anything the fuzzer found and we kept) is
//! replayed through the decoders here.

use std::path::{Path, PathBuf};

use super::*;

const TARGETS: [&str; 2] = ["message_decode", "frame_decoder"];

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
    out
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
