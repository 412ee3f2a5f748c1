//! Any bytes as a delta chunk payload from a peer (feature `delta`) against any base: decoding
//! never panics and never yields more than `MAX_CHUNK_LEN` bytes or unverified bytes; and any
//! chunk compressed against any base decodes back to itself. Input: a base length (u16 little-
//! endian), the base, then the payload. Replayed by `cargo test -p botsync-proto --test codec`.
#![no_main]

use botsync_engine::Hash;
use botsync_proto::messages::{ChunkData, Compression};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (base, payload) = rest.split_at(len);
    let peer_sent = ChunkData {
        id: Hash::of(payload),
        compression: Compression::ZstdDelta,
        data: payload.to_vec(),
    };
    if let Ok(bytes) = peer_sent.into_verified_bytes_against(Some(base)) {
        assert_eq!(Hash::of(&bytes), Hash::of(payload));
    }
    let sent = ChunkData::compress_against(Hash::of(payload), payload.to_vec(), base);
    assert_eq!(
        sent.into_verified_bytes_against(Some(base)).ok().as_deref(),
        Some(payload)
    );
});
