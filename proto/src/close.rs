//! [`CloseCode`]: the application error codes botsync puts in a QUIC `CONNECTION_CLOSE`.
//!
//! The numbering is part of the wire protocol and append-only: a code, once published, keeps its
//! number and meaning forever; a retired code stays reserved. A receiver maps a number it does not
//! know to [`CloseCode::Unknown`] rather than failing.
//!
//! Handshake refusals (an unknown certificate, a bad signature) are not application codes: TLS
//! ends those with a crypto alert before the application runs. This module owns the code table and
//! its reason strings; it does not decide when to close (that is the session's job).

use std::fmt;

use quinn::VarInt;

/// Why a botsync connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 0: the session finished normally.
    Done,
    /// 1: the peer broke the protocol state machine (a message out of order).
    ProtocolError,
    /// 2: no protocol version in common (see `Hello`).
    VersionMismatch,
    /// 3: the peer is no longer in peers.json (it was removed while connected).
    UnknownPeer,
    /// 4: a frame exceeded its size cap.
    FrameTooLarge,
    /// 5: a message failed to decode or carried an invalid value.
    BadMessage,
    /// 6: a chunk's bytes did not hash to its id.
    BadChunk,
    /// 7: the peer is busy (too many sessions); retry later.
    Busy,
    /// 8: the process is shutting down.
    Shutdown,
    /// 9: the peer stopped answering within the session's time limit.
    Timeout,
    /// 10: an internal error on the closing side (storage failure, bug).
    Internal,
    /// A code this version does not know (sent by a newer peer).
    Unknown(u64),
}

impl CloseCode {
    /// Every named code, in numbering order.
    pub const ALL: [CloseCode; 11] = [
        CloseCode::Done,
        CloseCode::ProtocolError,
        CloseCode::VersionMismatch,
        CloseCode::UnknownPeer,
        CloseCode::FrameTooLarge,
        CloseCode::BadMessage,
        CloseCode::BadChunk,
        CloseCode::Busy,
        CloseCode::Shutdown,
        CloseCode::Timeout,
        CloseCode::Internal,
    ];

    /// The number on the wire.
    pub fn code(self) -> u64 {
        match self {
            CloseCode::Done => 0,
            CloseCode::ProtocolError => 1,
            CloseCode::VersionMismatch => 2,
            CloseCode::UnknownPeer => 3,
            CloseCode::FrameTooLarge => 4,
            CloseCode::BadMessage => 5,
            CloseCode::BadChunk => 6,
            CloseCode::Busy => 7,
            CloseCode::Shutdown => 8,
            CloseCode::Timeout => 9,
            CloseCode::Internal => 10,
            CloseCode::Unknown(n) => n,
        }
    }

    /// The code for a number read from the wire; unknown numbers are kept, not rejected.
    pub fn from_code(code: u64) -> CloseCode {
        CloseCode::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .unwrap_or(CloseCode::Unknown(code))
    }

    /// The short reason string sent alongside the code (ASCII, lowercase).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Done => "done",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::VersionMismatch => "no common protocol version",
            CloseCode::UnknownPeer => "peer not in peers.json",
            CloseCode::FrameTooLarge => "frame too large",
            CloseCode::BadMessage => "bad message",
            CloseCode::BadChunk => "chunk does not match its hash",
            CloseCode::Busy => "busy, retry later",
            CloseCode::Shutdown => "shutting down",
            CloseCode::Timeout => "timed out",
            CloseCode::Internal => "internal error",
            CloseCode::Unknown(_) => "unknown close code",
        }
    }

    /// The code as a QUIC variable-length integer. Codes above 2^62-1 cannot exist on the wire;
    /// an `Unknown` that large (only constructible by hand) saturates to [`VarInt::MAX`].
    pub fn to_varint(self) -> VarInt {
        VarInt::from_u64(self.code()).unwrap_or(VarInt::MAX)
    }

    /// Close `conn` with this code and its reason string.
    pub fn close(self, conn: &quinn::Connection) {
        conn.close(self.to_varint(), self.reason().as_bytes());
    }

    /// The code a closed connection ended with, if the peer (or we) closed it at the application
    /// level; `None` for transport errors, timeouts and resets.
    pub fn of_error(err: &quinn::ConnectionError) -> Option<CloseCode> {
        match err {
            quinn::ConnectionError::ApplicationClosed(close) => {
                Some(CloseCode::from(close.error_code))
            }
            _ => None,
        }
    }
}

impl From<VarInt> for CloseCode {
    fn from(v: VarInt) -> CloseCode {
        CloseCode::from_code(v.into_inner())
    }
}

impl From<CloseCode> for VarInt {
    fn from(c: CloseCode) -> VarInt {
        c.to_varint()
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close code {})", self.reason(), self.code())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn numbering_is_the_published_table() {
        // Append-only: these numbers are on the wire. Never change a line, only add one.
        let table: Vec<(CloseCode, u64)> = CloseCode::ALL.iter().map(|c| (*c, c.code())).collect();
        assert_eq!(
            table,
            vec![
                (CloseCode::Done, 0),
                (CloseCode::ProtocolError, 1),
                (CloseCode::VersionMismatch, 2),
                (CloseCode::UnknownPeer, 3),
                (CloseCode::FrameTooLarge, 4),
                (CloseCode::BadMessage, 5),
                (CloseCode::BadChunk, 6),
                (CloseCode::Busy, 7),
                (CloseCode::Shutdown, 8),
                (CloseCode::Timeout, 9),
                (CloseCode::Internal, 10),
            ]
        );
    }

    #[test]
    fn reasons_are_distinct_lowercase_ascii() {
        let mut seen = std::collections::HashSet::new();
        for c in CloseCode::ALL {
            let r = c.reason();
            assert!(r.is_ascii() && r == r.to_lowercase(), "{r}");
            assert!(seen.insert(r), "duplicate reason {r}");
        }
    }

    #[test]
    fn display_names_reason_and_number() {
        assert_eq!(
            CloseCode::BadChunk.to_string(),
            "chunk does not match its hash (close code 6)"
        );
    }

    proptest! {
        #[test]
        fn varint_round_trip(n in 0u64..(1u64 << 62)) {
            let code = CloseCode::from_code(n);
            prop_assert_eq!(code.code(), n);
            prop_assert_eq!(CloseCode::from(VarInt::from(code)), code);
        }
    }
}
