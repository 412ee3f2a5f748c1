//! Frames: a 4-byte big-endian payload length, then the payload (one encoded [`Message`]).
//!
//! This module owns the byte stream side of the wire: [`read_frame`] / [`write_frame`] over tokio
//! streams (a QUIC stream in practice) and [`FrameDecoder`], a sync push-bytes/pop-messages
//! decoder used by the fuzzer and by tests. The length prefix is checked against
//! [`MAX_FRAME`] before a single payload byte is buffered, so a hostile length costs nothing.
//! A stream that ends exactly at a frame boundary is a clean end (`Ok(None)`); one that ends
//! inside a frame is [`CodecError::Truncated`]. What this module does not own: the payload format
//! ([`crate::codec`]) and which stream carries which messages (the session).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, CodecError};
use crate::limits::{FRAME_HEADER_LEN, MAX_FRAME};
use crate::messages::Message;

/// Payload buffer reserved up front when reading a frame; larger payloads grow it as they arrive.
const INITIAL_PAYLOAD_CAPACITY: usize = 64 * 1024;

/// Failure reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed underneath.
    #[error("stream i/o failed while {action} a frame: {source}")]
    Io {
        /// "reading" or "writing".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The bytes were not a valid frame or message.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl FrameError {
    /// The name of the close code this error ends a connection with: the codec's reason, or
    /// `protocol-error` for a failed stream.
    pub fn close_reason(&self) -> &'static str {
        match self {
            FrameError::Io { .. } => "protocol-error",
            FrameError::Codec(e) => e.close_reason(),
        }
    }
}

/// Encode `message` as one complete frame (header and payload).
pub fn encode_frame(message: &Message) -> Result<Vec<u8>, CodecError> {
    let payload = codec::encode(message)?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(&frame_header(payload.len())?);
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Write one message as a frame. Does not flush or finish the stream.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    message: &Message,
) -> Result<(), FrameError> {
    let frame = encode_frame(message)?;
    tracing::trace!(kind = message.kind(), bytes = frame.len(), "frame written");
    w.write_all(&frame).await.map_err(|source| FrameError::Io {
        action: "writing",
        source,
    })
}

/// Read one message. `Ok(None)` if the stream ended cleanly before a new frame began; a stream
/// that ends inside a frame is an error.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Message>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut filled = 0;
    while filled < FRAME_HEADER_LEN {
        let n = r
            .read(&mut header[filled..])
            .await
            .map_err(|source| FrameError::Io {
                action: "reading",
                source,
            })?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(CodecError::Truncated.into())
            };
        }
        filled += n;
    }
    let len = payload_len(header)?;
    // Grow the buffer as bytes arrive instead of trusting the prefix: a peer that announces
    // 4 MiB on many streams and then stalls holds only what it actually sent.
    let mut payload = Vec::with_capacity(len.min(INITIAL_PAYLOAD_CAPACITY));
    r.take(len as u64)
        .read_to_end(&mut payload)
        .await
        .map_err(|source| FrameError::Io {
            action: "reading",
            source,
        })?;
    if payload.len() < len {
        return Err(CodecError::Truncated.into());
    }
    Ok(Some(codec::decode(&payload)?))
}

/// A sync frame decoder: push bytes as they arrive, pop whole messages.
///
/// It buffers at most one frame ([`MAX_FRAME`] plus the header) beyond what has been popped. After
/// an error the stream is unusable (the frame boundary is lost): further pops repeat the error.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    failed: Option<CodecError>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    ///
    /// The length prefix is checked as soon as its four bytes are here, before the payload
    /// arrives, so an oversized frame fails without buffering it.
    pub fn pop(&mut self) -> Result<Option<Message>, CodecError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(header) = self.buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = match payload_len(*header) {
            Ok(len) => len,
            Err(e) => return Err(self.fail(e)),
        };
        let end = FRAME_HEADER_LEN + len;
        let Some(payload) = self.buf.get(FRAME_HEADER_LEN..end) else {
            return Ok(None);
        };
        let result = codec::decode(payload);
        self.buf.drain(..end);
        result.map(Some).map_err(|e| self.fail(e))
    }

    /// Call when the stream has ended: an error if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), CodecError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None if self.buf.is_empty() => Ok(()),
            None => Err(CodecError::Truncated),
        }
    }

    /// Bytes buffered and not yet popped.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn fail(&mut self, e: CodecError) -> CodecError {
        self.buf = Vec::new();
        self.failed = Some(e.clone());
        e
    }
}

fn frame_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], CodecError> {
    if len > MAX_FRAME {
        return Err(CodecError::FrameTooLarge {
            len: len as u64,
            max: MAX_FRAME as u64,
        });
    }
    // MAX_FRAME fits a u32 (asserted in limits.rs), so this conversion cannot fail here.
    let len32 = u32::try_from(len).map_err(|_| CodecError::FrameTooLarge {
        len: len as u64,
        max: MAX_FRAME as u64,
    })?;
    Ok(len32.to_be_bytes())
}

fn payload_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header);
    if len as usize > MAX_FRAME {
        return Err(CodecError::FrameTooLarge {
            len: u64::from(len),
            max: MAX_FRAME as u64,
        });
    }
    Ok(len as usize)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use botsync_engine::Hash;

    fn messages() -> Vec<Message> {
        vec![
            Message::Changed {
                root: Hash::of(b"root"),
            },
            Message::GetChunks {
                ids: vec![Hash::of(b"a"), Hash::of(b"b")],
            },
            Message::Goodbye,
        ]
    }

    #[test]
    fn decoder_reassembles_frames_fed_one_byte_at_a_time() {
        let bytes: Vec<u8> = messages()
            .iter()
            .flat_map(|m| encode_frame(m).unwrap())
            .collect();
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for b in bytes {
            dec.push(&[b]);
            while let Some(m) = dec.pop().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, messages());
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn oversized_length_fails_before_the_payload_arrives() {
        let mut dec = FrameDecoder::new();
        dec.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        let err = dec.pop().unwrap_err();
        assert_eq!(
            err,
            CodecError::FrameTooLarge {
                len: MAX_FRAME as u64 + 1,
                max: MAX_FRAME as u64
            }
        );
        assert_eq!(dec.buffered(), 0);
        dec.push(&[0; 16]);
        assert_eq!(dec.pop().unwrap_err(), err);
    }

    #[test]
    fn partial_frame_at_end_is_truncated() {
        let frame = encode_frame(&Message::Goodbye).unwrap();
        let mut dec = FrameDecoder::new();
        dec.push(&frame[..frame.len() - 1]);
        assert_eq!(dec.pop(), Ok(None));
        assert_eq!(dec.finish(), Err(CodecError::Truncated));
    }

    #[tokio::test]
    async fn async_round_trip_and_clean_eof() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for m in messages() {
                write_frame(&mut a, &m).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(m) = read_frame(&mut b).await.unwrap() {
            got.push(m);
        }
        writer.await.unwrap();
        assert_eq!(got, messages());
    }

    #[tokio::test]
    async fn async_eof_inside_a_frame_is_truncated() {
        let frame = encode_frame(&Message::Changed { root: Hash::ZERO }).unwrap();
        for cut in [2, FRAME_HEADER_LEN + 3] {
            let mut r = &frame[..cut];
            let err = read_frame(&mut r).await.unwrap_err();
            assert!(
                matches!(err, FrameError::Codec(CodecError::Truncated)),
                "cut {cut}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn async_oversized_length_is_refused_without_reading_on() {
        let header = u32::MAX.to_be_bytes();
        let mut r = &header[..];
        let err = read_frame(&mut r).await.unwrap_err();
        assert_eq!(err.close_reason(), "frame-too-large");
    }
}
