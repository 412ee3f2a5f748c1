//! The message codec: [`Message`] ⇄ bytes with bincode 2, and every error a peer's bytes can cause.
//!
//! This is the only module that calls bincode. The configuration is fixed by the protocol
//! (`docs/PROTOCOL.md`, "Encoding"): little-endian, **variable-length integers** (bincode's
//! varint: values below 251 take one byte, then a marker byte 251/252/253 followed by a
//! little-endian u16/u32/u64; signed integers are zigzag-encoded first), enum variants as a varint
//! index, sequences and strings prefixed with their varint length, `Option` as a 0/1 byte.
//! Varint was chosen over fixed-width integers because most integers on the wire (lengths,
//! counters, sizes of small files) are small: a typical entry shrinks by a third. The golden tests
//! in `proto/tests/codec.rs` pin the exact bytes.
//!
//! [`decode`] never panics and never allocates more than the input's length allows: the input is
//! already capped at [`MAX_FRAME`] by the framing layer, bincode is given the same byte limit, the
//! message tag is checked before bincode runs, trailing bytes are refused,
//! [`Message::validate`] enforces the per-field caps of [`crate::limits`] afterwards, and the
//! message must encode back to exactly its bytes (its one canonical encoding).
//!
//! What this module does not own: framing ([`crate::frame`]) and the message types
//! ([`crate::messages`]).

use bincode::config::{Configuration, Fixint, Limit, LittleEndian, NoLimit, Varint};
use botsync_engine::Hash;

use crate::limits::MAX_FRAME;
use crate::messages::Message;

/// How much a decoded message may claim, as bincode counts it: the in-memory width of every
/// value it decodes (8 bytes for a `u64` or a length, 4 for an enum variant), not the bytes it
/// read. A varint of one byte can claim 8, so a valid frame of at most [`MAX_FRAME`] bytes claims
/// at most 8 times that (the protocol has no 128-bit integers); every such frame must decode
/// (docs/PROTOCOL.md: the frame is the only size limit). What stays bounded is what a lying
/// length field can make the decoder allocate before the bytes run out.
///
/// The first limit was [`MAX_FRAME`] itself, so messages packed to the frame by their wire size
/// were refused when they decoded larger: `Nodes` replies of directories of 1,000 short names
/// (44 bytes each on the wire, about 60 decoded), found by the scaling run at 10^6 files.
/// Senders still keep the decoded size within [`MAX_FRAME`] ([`claimed_len`]), so that peers
/// running a botsync with that first limit decode what they receive.
const DECODE_LIMIT: usize = 8 * MAX_FRAME;

/// The bincode configuration of protocol version 1 (encoding; decoding adds [`DECODE_LIMIT`]).
type WireConfig = Configuration<LittleEndian, Varint, NoLimit>;

const fn config() -> WireConfig {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
}

const fn decode_config() -> Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>> {
    config().with_limit::<DECODE_LIMIT>()
}

/// Fixed-width integers: the width bincode's decoder claims for each value (see
/// [`DECODE_LIMIT`]). Only ever used to measure, never on the wire.
const fn claim_config() -> Configuration<LittleEndian, Fixint, NoLimit> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Everything that can be wrong with a message's bytes.
///
/// Every variant is the peer's fault (or a bug in our own sender) and ends the connection with
/// the close code named by [`CodecError::close_reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame's length prefix announces more than the protocol allows.
    #[error(
        "frame of {len} bytes exceeds the limit of {max} bytes; the peer is misbehaving or runs an incompatible botsync"
    )]
    FrameTooLarge {
        /// The announced (or, when encoding, the actual) payload length.
        len: u64,
        /// The limit ([`MAX_FRAME`]).
        max: u64,
    },
    /// The bytes end before the message (or frame) does.
    #[error("message is truncated: the bytes end before the message does")]
    Truncated,
    /// The message tag is not one this version knows.
    #[error("unknown message tag {tag}; the peer may run a newer botsync, upgrade this one")]
    UnknownTag {
        /// The tag (the enum variant index) found.
        tag: u64,
    },
    /// The tag is reserved for a message this version does not implement yet.
    #[error(
        "unsupported message {name} (tag {tag}); the peer may run a newer botsync, upgrade this one"
    )]
    Unsupported {
        /// The tag found.
        tag: u32,
        /// The reserved slot's name.
        name: &'static str,
    },
    /// The message decoded but bytes remain after it.
    #[error("{extra} unexpected bytes after a {kind} message")]
    TrailingBytes {
        /// The message kind that was decoded.
        kind: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// The message decoded, but not from its one canonical encoding: a varint longer than its
    /// value needs, version-vector peers unsorted or repeated, a path not in NFC. Accepting
    /// these would let two byte strings mean one message (and a peer hide a repeated key).
    #[error(
        "{kind} message is not in its canonical encoding (a varint longer than needed, map keys unsorted or repeated, or a path not in NFC)"
    )]
    NonCanonical {
        /// The message kind that was decoded.
        kind: &'static str,
    },
    /// The bytes do not form a valid message (bad enum value, invalid path, bad UTF-8, …).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A field is larger than the protocol allows.
    #[error("{what} is {value}, above the protocol limit of {max}")]
    LimitExceeded {
        /// Which field.
        what: &'static str,
        /// Its size.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// A chunk's payload does not decompress or does not hash to its id.
    #[error(
        "chunk {id} is corrupt: {reason}; it will be requested again from another stream or peer"
    )]
    BadChunk {
        /// The chunk id the payload claimed.
        id: Hash,
        /// What was wrong.
        reason: &'static str,
    },
}

impl CodecError {
    /// The name of the close code this error ends a connection with (see `close.rs`):
    /// `frame-too-large`, `bad-chunk` or `bad-message`.
    pub fn close_reason(&self) -> &'static str {
        match self {
            CodecError::FrameTooLarge { .. } => "frame-too-large",
            CodecError::BadChunk { .. } => "bad-chunk",
            CodecError::Truncated
            | CodecError::UnknownTag { .. }
            | CodecError::Unsupported { .. }
            | CodecError::TrailingBytes { .. }
            | CodecError::NonCanonical { .. }
            | CodecError::Malformed(_)
            | CodecError::LimitExceeded { .. } => "bad-message",
        }
    }

    /// Shorthand for a [`CodecError::LimitExceeded`] check: `Err` if `value > max`.
    pub(crate) fn check_limit(
        what: &'static str,
        value: usize,
        max: usize,
    ) -> Result<(), CodecError> {
        if value > max {
            Err(CodecError::LimitExceeded {
                what,
                value: value as u64,
                max: max as u64,
            })
        } else {
            Ok(())
        }
    }
}

/// Encode a message to its payload bytes (without the frame header).
///
/// Fails if the message breaks a protocol limit (a sender bug: split the batch) or is a reserved
/// slot; what `encode` accepts, [`decode`] accepts.
pub fn encode(message: &Message) -> Result<Vec<u8>, CodecError> {
    if let Some(name) = message.reserved_name() {
        return Err(CodecError::Unsupported {
            tag: message.tag(),
            name,
        });
    }
    message.validate()?;
    let bytes = bincode::serde::encode_to_vec(message, config()).map_err(|e| {
        // Encoding into a Vec fails only on limits or serde-level errors of our own types.
        CodecError::Malformed(format!("cannot encode {}: {e}", message.kind()))
    })?;
    if bytes.len() > MAX_FRAME {
        return Err(CodecError::FrameTooLarge {
            len: bytes.len() as u64,
            max: MAX_FRAME as u64,
        });
    }
    Ok(bytes)
}

/// Encode a message without the protocol checks of [`encode`], as a hostile or buggy peer
/// could: for tests that play such a peer. A sender never uses it.
pub fn encode_unchecked(message: &Message) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(message, config())
        .map_err(|e| CodecError::Malformed(format!("cannot encode {}: {e}", message.kind())))
}

/// Decode one message from exactly `bytes` (a frame's payload) and validate it.
///
/// Trailing bytes, unknown or reserved tags, malformed fields and exceeded limits are errors;
/// nothing here panics or allocates beyond what `bytes.len()` allows.
pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
    if bytes.len() > MAX_FRAME {
        return Err(CodecError::FrameTooLarge {
            len: bytes.len() as u64,
            max: MAX_FRAME as u64,
        });
    }
    let tag = read_tag(bytes)?;
    if tag >= u64::from(Message::TAG_COUNT) {
        return Err(CodecError::UnknownTag { tag });
    }
    let (message, used): (Message, usize) =
        bincode::serde::decode_from_slice(bytes, decode_config()).map_err(map_decode_error)?;
    if let Some(name) = message.reserved_name() {
        return Err(CodecError::Unsupported {
            tag: message.tag(),
            name,
        });
    }
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            kind: message.kind(),
            extra: bytes.len() - used,
        });
    }
    message.validate()?;
    // One message, one byte string: the decoded message must encode back to exactly the bytes
    // it came from. bincode's decoder accepts longer varints and serde's map decoder repeated
    // or unsorted keys; this refuses them (`docs/PROTOCOL.md`, "Encoding").
    if encode_unchecked(&message)? != bytes {
        return Err(CodecError::NonCanonical {
            kind: message.kind(),
        });
    }
    Ok(message)
}

/// Feed `value`'s wire encoding to `hasher` (for digests over wire values, such as the state
/// digest of `GetState`), without building it in memory.
pub fn hash_encoding<T: serde::Serialize>(
    value: &T,
    hasher: &mut blake3::Hasher,
) -> Result<(), CodecError> {
    struct Feed<'a>(&'a mut blake3::Hasher);
    impl bincode::enc::write::Writer for Feed<'_> {
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            self.0.update(bytes);
            Ok(())
        }
    }
    bincode::serde::encode_into_writer(value, Feed(hasher), config())
        .map_err(|e| CodecError::Malformed(format!("cannot hash a value: {e}")))
}

/// The number of bytes `value` takes in a payload, without allocating it: used to pack batches
/// under [`MAX_FRAME`].
pub fn encoded_len<T: serde::Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut counter = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut counter, config())
        .map_err(|e| CodecError::Malformed(format!("cannot measure a value: {e}")))?;
    Ok(counter.bytes_written)
}

/// What decoding `value` claims against a decoder's limit (bincode counts the in-memory width
/// of each integer and length, not its varint bytes): its size with fixed-width integers.
/// Batches are packed so that this too stays within [`MAX_FRAME`], which older peers require
/// (see `DECODE_LIMIT`).
pub fn claimed_len<T: serde::Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut counter = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut counter, claim_config())
        .map_err(|e| CodecError::Malformed(format!("cannot measure a value: {e}")))?;
    Ok(counter.bytes_written)
}

/// Read the leading varint (the enum tag) without decoding the rest.
fn read_tag(bytes: &[u8]) -> Result<u64, CodecError> {
    let (&first, rest) = bytes.split_first().ok_or(CodecError::Truncated)?;
    let width = match first {
        0..=250 => return Ok(u64::from(first)),
        251 => 2,
        252 => 4,
        253 => 8,
        // 254 is a u128 marker, 255 is unused: neither is a valid u32 tag.
        _ => {
            return Err(CodecError::UnknownTag {
                tag: u64::from(first),
            });
        }
    };
    let raw = rest.get(..width).ok_or(CodecError::Truncated)?;
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(raw);
    Ok(u64::from_le_bytes(buf))
}

fn map_decode_error(e: bincode::error::DecodeError) -> CodecError {
    use bincode::error::DecodeError as D;
    match e {
        D::UnexpectedEnd { .. } => CodecError::Truncated,
        // A length field inside the message claims more than a whole frame can hold.
        D::LimitExceeded => CodecError::Malformed(format!(
            "a length inside the message claims more than a {MAX_FRAME}-byte frame can hold"
        )),
        other => CodecError::Malformed(other.to_string()),
    }
}

/// Serde adapter for `Vec<u8>` fields that hold raw payloads: encodes them as bincode bytes
/// (varint length + raw bytes, the same bytes as a sequence of `u8`) but decodes them in one
/// bounded copy instead of element by element.
pub(crate) mod raw_bytes {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Serialize as a byte string.
    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    /// Deserialize a byte string.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn tag_reader_handles_every_varint_width() {
        assert_eq!(read_tag(&[7]), Ok(7));
        assert_eq!(read_tag(&[251, 0x34, 0x12]), Ok(0x1234));
        assert_eq!(read_tag(&[252, 1, 0, 0, 0]), Ok(1));
        assert_eq!(read_tag(&[253, 0, 0, 0, 0, 0, 0, 0, 1]), Ok(1 << 56));
        assert_eq!(read_tag(&[]), Err(CodecError::Truncated));
        assert_eq!(read_tag(&[252, 1]), Err(CodecError::Truncated));
        assert!(matches!(
            read_tag(&[255]),
            Err(CodecError::UnknownTag { tag: 255 })
        ));
    }

    #[test]
    fn unknown_tags_are_refused_before_bincode_runs() {
        let tag = Message::TAG_COUNT as u8;
        assert_eq!(
            decode(&[tag]),
            Err(CodecError::UnknownTag {
                tag: u64::from(tag)
            })
        );
        assert_eq!(
            decode(&[250, 1, 2, 3]),
            Err(CodecError::UnknownTag { tag: 250 })
        );
    }

    #[test]
    fn every_frame_within_the_limit_decodes_however_large_it_is_in_memory() {
        use crate::messages::{ChildKind, NodeChild, NodeReply};
        use botsync_engine::RelPath;
        let dir = |d: usize| NodeReply {
            path: RelPath::new(&format!("d{d}")).unwrap(),
            children: (0..50_000)
                .map(|c| NodeChild {
                    name: format!("{c:05}"),
                    kind: ChildKind::File,
                    hash: Hash::of(&[d as u8]),
                })
                .collect(),
        };
        let message = Message::Nodes {
            nodes: vec![dir(0), dir(1)],
        };
        let bytes = encode(&message).unwrap();
        let claimed = claimed_len(&message).unwrap();
        assert!(
            bytes.len() <= MAX_FRAME && claimed > MAX_FRAME,
            "{} {claimed}",
            bytes.len()
        );
        assert_eq!(decode(&bytes).unwrap(), message);
    }

    #[test]
    fn a_length_that_claims_more_than_any_frame_is_refused_before_it_is_allocated() {
        // A `GetNodes` naming one path of 2^40 bytes, in a frame of a few bytes.
        let mut bytes = encode(&Message::GetNodes {
            paths: vec![botsync_engine::RelPath::new("a").unwrap()],
        })
        .unwrap();
        let one = bytes.iter().rposition(|b| *b == 1).unwrap(); // the path's length, 1
        bytes.truncate(one);
        bytes.push(253); // a u64 varint follows
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("claims more than"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&Message::Goodbye).unwrap();
        bytes.push(0);
        assert_eq!(
            decode(&bytes),
            Err(CodecError::TrailingBytes {
                kind: "goodbye",
                extra: 1
            })
        );
    }

    #[test]
    fn every_error_names_a_close_reason() {
        let id = Hash::of(b"x");
        assert_eq!(
            CodecError::FrameTooLarge { len: 1, max: 0 }.close_reason(),
            "frame-too-large"
        );
        assert_eq!(
            CodecError::BadChunk {
                id,
                reason: "hash mismatch"
            }
            .close_reason(),
            "bad-chunk"
        );
        assert_eq!(CodecError::Truncated.close_reason(), "bad-message");
        assert_eq!(
            CodecError::Malformed(String::new()).close_reason(),
            "bad-message"
        );
    }

    #[test]
    fn error_messages_are_lowercase_without_trailing_period() {
        let errors = [
            CodecError::FrameTooLarge { len: 9, max: 8 },
            CodecError::Truncated,
            CodecError::UnknownTag { tag: 99 },
            CodecError::LimitExceeded {
                what: "chunk ids",
                value: 2000,
                max: 1024,
            },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }
}
