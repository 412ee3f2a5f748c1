//! Chunk-count amplification: work and memory per file are bounded by its size. A file's chunk
//! list holds at most `size / MIN_CHUNK_FLOOR + 1` chunks (every chunk but the last is at least the
//! chunker's minimum, which is at least `MIN_CHUNK_FLOOR`); a count beyond that is a malformed
//! entry, refused before anything is allocated for it (`docs/PROTOCOL.md`, "Limits").

use botsync_engine::{ChunkRef, Hash};
use botsync_proto::close::CloseCode;
use botsync_proto::limits::MIN_CHUNK_FLOOR;
use botsync_proto::messages::{ChunkListing, Message, SessionMode};
use botsync_proto::messages::{WireChunk, WireKind};

use crate::harness::{listen_memory, tombstone};

const SIZE: u64 = 256 * 1024;

/// A 256 KiB file entry offered by a scripted peer, with its chunk listing.
async fn offer_and_expect_bad_message(listing: ChunkListing, chunks: Vec<ChunkRef>, min: u32) {
    let mut s = listen_memory().await;
    let mut script = s.script().await;
    script.open(SessionMode::Push).await;
    script.ask_entries(&["memory/big.bin"]).await;
    let mut entry = tombstone("memory/big.bin", s.client_id, &[(s.client_id, 1)]);
    entry.file.kind = WireKind::File;
    entry.file.size = SIZE;
    entry.file.content = Hash::of(b"some content");
    entry.file.chunks = chunks.into_iter().map(WireChunk::from).collect();
    entry.file.chunker.min = min;
    entry.listing = listing;
    script
        .send_unchecked(&Message::Offer {
            entries: vec![entry],
            dry_run: false,
            last: true,
            force: false,
        })
        .await;
    assert_eq!(script.recv().await, None, "the offer was answered");
    assert_eq!(script.closed().await, Some(CloseCode::BadMessage));
    let err = s.served().await.unwrap_err();
    assert!(err.contains("chunks"), "{err}");
}

#[tokio::test]
async fn a_file_declared_as_one_byte_chunks_is_refused_before_allocation() {
    // The finding: 262,144 one-byte chunks for 256 KiB, list elided.
    offer_and_expect_bad_message(
        ChunkListing::Elided {
            chunk_count: SIZE as u32,
        },
        Vec::new(),
        botsync_engine::ChunkerParams::DEFAULT.min,
    )
    .await;
}

#[tokio::test]
async fn a_tiny_declared_chunker_minimum_is_refused() {
    // A chunker minimum below the floor would let a peer raise the bound itself.
    offer_and_expect_bad_message(
        ChunkListing::Elided { chunk_count: 64 },
        Vec::new(),
        MIN_CHUNK_FLOOR / 2,
    )
    .await;
}

#[tokio::test]
async fn an_inline_list_of_more_chunks_than_the_size_allows_is_refused() {
    let chunks: Vec<ChunkRef> = (0..40u32)
        .map(|i| ChunkRef {
            id: Hash::of(&i.to_le_bytes()),
            len: 1,
        })
        .collect();
    offer_and_expect_bad_message(
        ChunkListing::Inline,
        chunks,
        botsync_engine::ChunkerParams::DEFAULT.min,
    )
    .await;
}
