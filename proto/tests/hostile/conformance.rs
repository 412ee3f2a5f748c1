//! The responder does what `docs/PROTOCOL.md` says, where the hostile peer found it did not:
//! refusals carry `Error(UnexpectedMessage)` before the `protocol-error` close, a malformed
//! request stream closes the connection, offers come only where the session allows them,
//! un-negotiated features and non-canonical encodings are refused, a missing chunk is
//! answered in its place while the reply goes on, and large directories asked by buckets are
//! answered by the rules of tag 30.

use botsync_engine::chunktree::content_hash;
use botsync_engine::{ChunkRef, Hash, PeerId, RelPath, VersionVector};
use botsync_proto::close::CloseCode;
use botsync_proto::codec::{CodecError, decode, encode};
use botsync_proto::frame::{read_frame, write_frame};
use botsync_proto::messages::{BucketAsk, BucketDigest, WireChunk, WireKind, buckets};
use botsync_proto::messages::{
    ChunkData, ChunkListing, Compression, ErrorCode, Features, Message, SessionMode, WireEntry,
};
use botsync_proto::replica::Replica;

use crate::harness::{Script, listen_memory, tombstone};

fn is_unexpected(m: &Option<Message>) -> bool {
    matches!(
        m,
        Some(Message::Error {
            code: ErrorCode::UnexpectedMessage,
            ..
        })
    )
}

/// A one-chunk file entry holding `data`, by `author`.
fn file(path: &str, author: PeerId, data: &[u8]) -> WireEntry {
    let mut w = tombstone(path, author, &[(author, 1)]);
    let chunks = vec![ChunkRef {
        id: Hash::of(data),
        len: data.len() as u32,
    }];
    w.file.kind = WireKind::File;
    w.file.size = data.len() as u64;
    w.file.content = content_hash(&chunks);
    w.file.chunks = chunks.into_iter().map(WireChunk::from).collect();
    w
}

async fn offer(script: &mut Script, entries: Vec<WireEntry>) {
    script
        .send_unchecked(&Message::Offer {
            entries,
            dry_run: false,
            last: true,
            force: false,
        })
        .await;
}

#[tokio::test]
async fn a_message_out_of_order_is_answered_with_unexpected_message_before_the_close() {
    let mut s = listen_memory().await;
    // Before Hello.
    let mut script = s.script().await;
    script
        .send(&Message::Summary {
            root: Hash::ZERO,
            files: 0,
            mode: SessionMode::Sync,
            skipped: 0,
        })
        .await;
    let reply = script.recv().await;
    assert!(is_unexpected(&reply), "{reply:?}");
    assert_eq!(script.closed().await, Some(CloseCode::ProtocolError));
    assert!(s.served().await.is_err());
    // Mid-session: a reply sent to the responder.
    let mut script = s.script().await;
    script.open(SessionMode::Sync).await;
    script.send(&Message::Nodes { nodes: Vec::new() }).await;
    let reply = script.recv().await;
    assert!(is_unexpected(&reply), "{reply:?}");
    assert_eq!(script.closed().await, Some(CloseCode::ProtocolError));
    assert!(s.served().await.unwrap_err().contains("unexpected nodes"));
}

#[tokio::test]
async fn a_malformed_frame_on_a_request_stream_closes_the_connection() {
    let s = listen_memory().await;
    let mut script = s.script().await;
    script.open(SessionMode::Sync).await;
    let (mut send, _recv) = script.conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 1, 200]).await.unwrap();
    let _ = send.finish();
    assert_eq!(script.closed_within(5).await, Some(CloseCode::BadMessage));
}

#[tokio::test]
async fn a_request_stream_opened_with_a_control_message_is_refused_and_closed() {
    let s = listen_memory().await;
    let mut script = s.script().await;
    script.open(SessionMode::Sync).await;
    let (mut send, mut recv) = script.conn.open_bi().await.unwrap();
    write_frame(&mut send, &Message::Goodbye).await.unwrap();
    let _ = send.finish();
    let reply = read_frame(&mut recv).await.ok().flatten();
    assert!(is_unexpected(&reply), "{reply:?}");
    assert_eq!(
        script.closed_within(5).await,
        Some(CloseCode::ProtocolError)
    );
}

#[tokio::test]
async fn an_offer_in_a_pull_session_is_refused() {
    let mut s = listen_memory().await;
    let mut script = s.script().await;
    script.open(SessionMode::Pull).await;
    script.ask_entries(&["memory/a.md"]).await;
    offer(
        &mut script,
        vec![file("memory/a.md", s.client_id, b"pushed")],
    )
    .await;
    let reply = script.recv().await;
    assert!(is_unexpected(&reply), "{reply:?}");
    assert_eq!(script.closed().await, Some(CloseCode::ProtocolError));
    assert!(s.served().await.unwrap_err().contains("Pull"));
    assert_eq!(s.replica.read("memory/a.md"), None);
}

#[tokio::test]
async fn an_offer_of_paths_never_asked_for_is_refused() {
    let mut s = listen_memory().await;
    let mut script = s.script().await;
    let without = Features::from_bits(Features::SUPPORTED.bits() & !Features::DIRECT_OFFER.bits());
    script.open_with(without, SessionMode::Push).await;
    offer(
        &mut script,
        vec![file("memory/a.md", s.client_id, b"pushed")],
    )
    .await;
    let reply = script.recv().await;
    assert!(is_unexpected(&reply), "{reply:?}");
    assert_eq!(script.closed().await, Some(CloseCode::ProtocolError));
    assert!(s.served().await.unwrap_err().contains("never asked"));
    assert_eq!(s.replica.read("memory/a.md"), None);
}

/// With `direct-offer` the initiator may offer what it changed since the responder's root was
/// one of its own: the responder plans the offer against its own versions like any other.
#[tokio::test]
async fn with_direct_offer_an_offer_without_the_descent_is_taken() {
    let s = listen_memory().await;
    let mut script = s.script().await;
    script.open(SessionMode::Push).await;
    offer(
        &mut script,
        vec![file("memory/a.md", s.client_id, b"pushed")],
    )
    .await;
    // The responder fetches the pushed chunk from us.
    let (mut send, mut recv) = script.conn.accept_bi().await.unwrap();
    let request = read_frame(&mut recv).await.unwrap();
    assert!(
        matches!(request, Some(Message::GetChunks { .. })),
        "{request:?}"
    );
    write_frame(
        &mut send,
        &Message::ChunkData(ChunkData::compress(
            Hash::of(b"pushed"),
            b"pushed".to_vec(),
            false,
        )),
    )
    .await
    .unwrap();
    let _ = send.finish();
    let reply = script.recv().await;
    assert!(
        matches!(&reply, Some(Message::OfferResult { items, last: true }) if items.len() == 1),
        "{reply:?}"
    );
    assert_eq!(
        s.replica.read("memory/a.md").as_deref(),
        Some(&b"pushed"[..])
    );
}

#[tokio::test]
async fn a_zstd_chunk_without_zstd_negotiated_is_refused() {
    let s = listen_memory().await;
    let data = b"compressible ".repeat(200);
    let mut script = s.script().await;
    script
        .open_with(Features::CHUNK_TREE, SessionMode::Push)
        .await;
    script.ask_entries(&["memory/z.md"]).await;
    offer(&mut script, vec![file("memory/z.md", s.client_id, &data)]).await;
    // The responder fetches the pushed chunk from us: answer it compressed anyway.
    let (mut send, mut recv) = script.conn.accept_bi().await.unwrap();
    let request = read_frame(&mut recv).await.unwrap();
    assert!(
        matches!(request, Some(Message::GetChunks { .. })),
        "{request:?}"
    );
    let chunk = ChunkData::compress(Hash::of(&data), data.clone(), true);
    assert_eq!(chunk.compression, Compression::Zstd);
    write_frame(&mut send, &Message::ChunkData(chunk))
        .await
        .unwrap();
    let _ = send.finish();
    assert_eq!(script.closed_within(5).await, Some(CloseCode::BadMessage));
    assert_eq!(s.replica.read("memory/z.md"), None);
}

#[tokio::test]
async fn an_elided_chunk_list_without_chunk_tree_is_refused() {
    let s = listen_memory().await;
    let mut script = s.script().await;
    script.open_with(Features::ZSTD, SessionMode::Push).await;
    script.ask_entries(&["memory/big.bin"]).await;
    let mut entry = file("memory/big.bin", s.client_id, b"x");
    entry.file.chunks.clear();
    entry.listing = ChunkListing::Elided { chunk_count: 2000 };
    offer(&mut script, vec![entry]).await;
    assert_eq!(script.closed_within(5).await, Some(CloseCode::BadMessage));
}

#[tokio::test]
async fn a_varint_longer_than_needed_is_refused() {
    let s = listen_memory().await;
    let mut script = s.script().await;
    // Hello with protocol_min spelled `fb NN 00` instead of `NN`.
    let mut payload = encode(&Message::Hello(botsync_proto::messages::Hello::current(
        "script",
        Default::default(),
    )))
    .unwrap();
    let version = botsync_proto::messages::PROTOCOL_VERSION;
    assert_eq!(u16::from(payload[1]), version);
    payload.splice(1..2, [0xfb, version as u8, 0x00]);
    assert!(matches!(
        decode(&payload),
        Err(CodecError::NonCanonical { kind: "hello" })
    ));
    script.send_raw(&payload).await;
    assert_eq!(script.closed_within(5).await, Some(CloseCode::BadMessage));
}

#[test]
fn unsorted_or_repeated_vector_peers_are_refused() {
    let (x, y) = (PeerId([0x11; 32]), PeerId([0x22; 32]));
    let mut w = tombstone("memory/a.md", x, &[]);
    w.file.version = VersionVector::from_pairs([(x, 5), (y, 7)]);
    let bytes = encode(&Message::Offer {
        entries: vec![w],
        dry_run: true,
        last: true,
        force: false,
    })
    .unwrap();
    let sorted: Vec<u8> = [&[2u8][..], &[0x11; 32], &[5], &[0x22; 32], &[7]].concat();
    let at = bytes
        .windows(sorted.len())
        .position(|win| win == sorted.as_slice())
        .unwrap();
    let with = |pairs: Vec<u8>| {
        let mut b = bytes.clone();
        b.splice(at..at + sorted.len(), pairs);
        decode(&b)
    };
    let unsorted = [&[2u8][..], &[0x22; 32], &[7], &[0x11; 32], &[5]].concat();
    let repeated = [&[2u8][..], &[0x11; 32], &[5], &[0x11; 32], &[7]].concat();
    for bad in [unsorted, repeated] {
        assert!(
            matches!(with(bad), Err(CodecError::NonCanonical { kind: "offer" })),
            "accepted"
        );
    }
}

#[tokio::test]
async fn a_missing_chunk_is_answered_in_its_place_and_the_reply_goes_on() {
    let s = listen_memory().await;
    s.replica.write("memory/x.md", b"first file");
    s.replica.write("memory/y.md", b"second file");
    let mut script = s.script().await;
    script.open(SessionMode::Pull).await;
    let ids = vec![
        Hash::of(b"first file"),
        Hash::of(b"no such chunk"),
        Hash::of(b"second file"),
    ];
    let (mut send, mut recv) = script.conn.open_bi().await.unwrap();
    write_frame(&mut send, &Message::GetChunks { ids: ids.clone() })
        .await
        .unwrap();
    let _ = send.finish();
    let mut replies = Vec::new();
    while let Some(m) = read_frame(&mut recv).await.unwrap() {
        replies.push(m);
    }
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert!(matches!(&replies[0], Message::ChunkData(c) if c.id == ids[0]));
    assert!(matches!(
        &replies[1],
        Message::Error {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    assert!(matches!(&replies[2], Message::ChunkData(c) if c.id == ids[2]));
}

/// `GetBuckets` is a request of feature `buckets`: without it negotiated it is out of order.
#[tokio::test]
async fn buckets_asked_without_the_feature_are_refused() {
    let mut s = listen_memory().await;
    let mut script = s.script().await;
    script
        .open_with(
            Features::ZSTD.union(Features::CHUNK_TREE),
            SessionMode::Pull,
        )
        .await;
    script
        .send(&Message::GetBuckets {
            dirs: vec![BucketAsk {
                path: RelPath::root(),
                digests: buckets::digests(&[], 16),
            }],
        })
        .await;
    let reply = script.recv().await;
    assert!(is_unexpected(&reply), "{reply:?}");
    assert_eq!(script.closed().await, Some(CloseCode::ProtocolError));
    assert!(s.served().await.unwrap_err().contains("get-buckets"));
}

/// A bucket count that is not a power of two from 16 to 4096 does not decode.
#[tokio::test]
async fn a_bucket_count_outside_the_rules_is_a_bad_message() {
    let s = listen_memory().await;
    let mut script = s.script().await;
    script.open(SessionMode::Pull).await;
    // tag 30, one directory, the root (""), 16 digests: then spelled as 17.
    let mut payload = encode(&Message::GetBuckets {
        dirs: vec![BucketAsk {
            path: RelPath::root(),
            digests: vec![BucketDigest([7; 16]); 16],
        }],
    })
    .unwrap();
    assert_eq!(payload[..4], [30, 1, 0, 16]);
    payload[3] = 17;
    payload.extend_from_slice(&[7; 16]);
    assert!(matches!(decode(&payload), Err(CodecError::Malformed(_))));
    script.send_raw(&payload).await;
    assert_eq!(script.closed_within(5).await, Some(CloseCode::BadMessage));
}

/// The responder lists only the children of the buckets whose digests differ from the asker's.
#[tokio::test]
async fn the_responder_answers_only_the_differing_buckets() {
    let s = listen_memory().await;
    for i in 0..300 {
        s.replica
            .write(&format!("notes/n{i:03}.md"), format!("{i}\n").as_bytes());
    }
    let notes = RelPath::new("notes").unwrap();
    let mut ours = s.replica.children(&notes).unwrap().unwrap();
    assert_eq!(ours.len(), 300);
    // The asker's copy of one note differs; another note it does not have at all.
    ours[10].hash = Hash::of(b"edited");
    let gone = ours.remove(200);
    let count = buckets::bucket_count_for(ours.len());
    let mut script = s.script().await;
    script.open(SessionMode::Pull).await;
    script
        .send(&Message::GetBuckets {
            dirs: vec![BucketAsk {
                path: notes.clone(),
                digests: buckets::digests(&ours, count),
            }],
        })
        .await;
    let Some(Message::Buckets { nodes }) = script.recv().await else {
        panic!("expected buckets");
    };
    assert_eq!(nodes.len(), 1);
    let mut want = vec![
        buckets::bucket_of(&ours[10].name, count),
        buckets::bucket_of(&gone.name, count),
    ];
    want.sort_unstable();
    want.dedup();
    assert_eq!(nodes[0].differ, want);
    let names: Vec<&str> = nodes[0].children.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"n010.md") && names.contains(&"n200.md"),
        "{names:?}"
    );
    assert!(names.len() < 20, "{} children listed", names.len());
    script.goodbye().await;
}
