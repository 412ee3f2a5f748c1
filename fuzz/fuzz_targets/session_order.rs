//! Message sequences against the responder's order rules (`session::order`): the first two
//! bytes (little-endian) pick the negotiated features (bits 0-15: every feature up to
//! `direct-offer`, bit 11), the rest is a stream of frames. Whatever arrives, the machine
//! must not panic, and what it accepts must follow the rules a model checks here: nothing after
//! an end, one summary first, offers only of asked paths (any path with `direct-offer`), state
//! pushed only after it was asked.
#![no_main]

use std::collections::HashSet;

use botsync_proto::frame::FrameDecoder;
use botsync_proto::messages::{Features, Message};
use botsync_proto::session::order::{Phase, ResponderOrder, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((bits, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let features = Features::from_bits(u64::from(u16::from_le_bytes(*bits)));
    let direct = features.contains(Features::DIRECT_OFFER);
    let mut order = ResponderOrder::new(features);
    let mut decoder = FrameDecoder::new();
    decoder.push(stream);
    let (mut ended, mut summarized, mut state_asked) = (false, false, false);
    let mut asked = HashSet::new();
    while let Ok(Some(m)) = decoder.pop() {
        let verdict = order.accept(&m);
        if ended {
            assert!(verdict.is_err(), "accepted {} after the end", m.kind());
            continue;
        }
        match verdict {
            Err(_) => {
                ended = true;
                assert_eq!(order.phase(), Phase::Done);
            }
            Ok(step) => {
                assert!(summarized || matches!(step, Step::Summary(_) | Step::Goodbye));
                match (step, &m) {
                    (Step::Summary(_), _) => {
                        assert!(!summarized, "a second summary");
                        summarized = true;
                    }
                    (Step::Entries, Message::GetEntries { paths }) => {
                        asked.extend(paths.iter().cloned());
                    }
                    (Step::Offer { .. }, Message::Offer { entries, .. }) => {
                        assert!(direct || entries.iter().all(|w| asked.contains(&w.file.path)));
                    }
                    (Step::StateAsked, _) => state_asked = true,
                    (Step::StatePushed { .. }, _) => assert!(state_asked),
                    (Step::Goodbye, _) => ended = true,
                    _ => {}
                }
            }
        }
    }
});
