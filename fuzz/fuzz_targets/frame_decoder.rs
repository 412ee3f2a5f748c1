//! Any bytes as a stream, fed to `FrameDecoder` in pieces whose size the first byte picks: it
//! must not panic, must stop at the first error, and must only yield messages that re-encode.
#![no_main]

use botsync_proto::codec::encode;
use botsync_proto::frame::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let step = usize::from(data.first().copied().unwrap_or(0)).max(1);
    let mut decoder = FrameDecoder::new();
    for piece in data.chunks(step) {
        decoder.push(piece);
        loop {
            match decoder.pop() {
                Ok(Some(message)) => {
                    encode(&message).expect("a decoded message re-encodes");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});
