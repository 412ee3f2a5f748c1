//! The state phase of a session (feature STATE, issue 14): skill state records travel after the
//! file phase, in `GetState` / `State` on the control stream.
//!
//! The initiator sends `GetState` with its `state_sync` patterns and the digest of its records
//! matching them; the responder answers with its own `GetState` (its patterns, the digest of
//! the records it shares with the initiator), then those records in `State` batches (the last
//! marked), or none if the two digests are equal. If the responder's digest equals the digest
//! of the initiator's shared records, the initiator pushes nothing: an unchanged state costs one
//! round trip of three small messages. The initiator takes them if it pulls, then, if it pushes, sends in `State`
//! batches its records as they were **before** it took the responder's (any it holds that the
//! responder's versions do not already cover), which the responder takes and confirms with one
//! empty `State` marked last. Sending the records
//! from before the pull lets both sides see the same pair of versions of a key written on both:
//! each decides the conflict by the same rule and keeps the same losing value. An initiator
//! without `state_sync` skips the phase. The receiver of a record decides what to do with it
//! (its replica: own patterns, claims, merge). The steps are the machines' ([`super::initiator`],
//! [`super::responder`]); this module holds the phase's report and its record cap.

use serde::Serialize;

use super::SessionError;
use crate::limits::MAX_STATE_RECORDS_PER_SESSION;
use crate::replica::StateApplied;

/// What the state phase did, from the initiator's side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateReport {
    /// True if both sides negotiated STATE and the phase ran.
    pub exchanged: bool,
    /// Records the peer sent (none when both digests agreed).
    pub received: u64,
    /// What taking the peer's records did here.
    pub pulled: StateApplied,
    /// Records sent to the peer.
    pub pushed: u64,
}

/// Records received in one session, against [`MAX_STATE_RECORDS_PER_SESSION`].
#[derive(Debug, Default)]
pub(crate) struct Counter(usize);

impl Counter {
    /// Count `n` more records; past the cap the peer broke the protocol.
    pub(crate) fn add(&mut self, n: usize) -> Result<(), SessionError> {
        self.0 = self.0.saturating_add(n);
        if self.0 > MAX_STATE_RECORDS_PER_SESSION {
            return Err(SessionError::Protocol(format!(
                "more than {MAX_STATE_RECORDS_PER_SESSION} state records in one session"
            )));
        }
        Ok(())
    }
}
