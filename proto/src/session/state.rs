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
//! (its replica: own patterns, claims, merge); this module only moves records and counts them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use botsync_engine::vector::Causality;
use botsync_engine::{Hash, PeerId};
use serde::Serialize;

use super::{Control, SessionError, blocking};
use crate::budget::Phase;
use crate::frame::FrameError;
use crate::limits::MAX_STATE_RECORDS_PER_SESSION;
use crate::messages::state::digest as state_digest;
use crate::messages::{Message, SessionMode, WireState, state_batches};
use crate::replica::{Replica, StateApplied};

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

/// Run the state phase as the initiator of a session in `mode` with `peer`.
pub(crate) async fn initiate<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
    peer: PeerId,
    mode: SessionMode,
) -> Result<StateReport, SessionError> {
    let mut report = StateReport::default();
    let ours = blocking(replica, |r| Ok(r.state_patterns())).await?;
    if ours.is_empty() {
        return Ok(report);
    }
    report.exchanged = true;
    let asked = ours.clone();
    let own = blocking(replica, move |r| r.state_records(&asked)).await?;
    let digest = state_digest(&own).map_err(FrameError::from)?;
    drop(own);
    ctl.send(&Message::GetState {
        patterns: ours,
        digest,
    })
    .await?;
    ctl.counters.round_trips += 1;
    let (theirs, their_digest) = match ctl.recv_within(Phase::Reply).await? {
        Message::GetState { patterns, digest } => (patterns, digest),
        other => {
            return Err(SessionError::Protocol(format!(
                "expected get-state, got {}",
                other.kind()
            )));
        }
    };
    // Ours as they are before anything of the peer's is taken (see the module documentation).
    let mine = blocking(replica, move |r| r.state_records(&theirs)).await?;
    // The responder holds exactly our shared records: nothing to push.
    let in_step = state_digest(&mine).map_err(FrameError::from)? == their_digest;
    let pull = matches!(mode, SessionMode::Sync | SessionMode::Pull);
    // Our versions by key, and the keys the responder already holds as new as ours: only those
    // are remembered from its records, so the memory spent here is bounded by our own state.
    let ours: HashMap<&str, &WireState> = mine.iter().map(|w| (w.key.as_str(), w)).collect();
    let mut covered: HashSet<String> = HashSet::new();
    let mut count = Counter::default();
    loop {
        let (records, last) = match ctl.recv_within(Phase::Reply).await? {
            Message::State { records, last } => (records, last),
            other => {
                return Err(SessionError::Protocol(format!(
                    "expected state, got {}",
                    other.kind()
                )));
            }
        };
        count.add(records.len())?;
        report.received += records.len() as u64;
        covered.extend(
            records
                .iter()
                .filter(|r| {
                    // An equal vector over another value (a lost index) is not covered: both
                    // sides must see the pair to decide it alike.
                    ours.get(r.key.as_str())
                        .is_some_and(|w| match w.version.compare(&r.version) {
                            Causality::DominatedBy => true,
                            Causality::Equal => *w == *r,
                            _ => false,
                        })
                })
                .map(|r| r.key.clone()),
        );
        if pull && !records.is_empty() {
            let applied = blocking(replica, move |r| r.apply_state(records, peer)).await?;
            report.pulled.extend(applied);
        }
        if last {
            break;
        }
    }
    if matches!(mode, SessionMode::Sync | SessionMode::Push) && !in_step {
        let offer: Vec<WireState> = mine
            .into_iter()
            .filter(|w| !covered.contains(&w.key))
            .collect();
        report.pushed = offer.len() as u64;
        send(ctl, offer).await?;
        // The responder confirms with an empty `State` once it has taken them: closing before
        // would discard what is still in flight.
        match ctl.recv_within(Phase::Reply).await? {
            Message::State {
                records,
                last: true,
            } if records.is_empty() => {}
            other => {
                return Err(SessionError::Protocol(format!(
                    "expected an empty state confirming the push, got {other}"
                )));
            }
        }
    }
    Ok(report)
}

/// Answer the initiator's `GetState` with its `theirs` patterns and `their_digest`: our patterns
/// and the digest of our records of the keys matching both, then those records (none if the
/// digests are equal: the initiator holds them all already).
pub(crate) async fn answer<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
    theirs: Vec<String>,
    their_digest: Hash,
) -> Result<(), SessionError> {
    let (ours, records) = blocking(replica, move |r| {
        let ours = r.state_patterns();
        let records = if ours.is_empty() {
            Vec::new()
        } else {
            r.state_records(&theirs)?
        };
        Ok((ours, records))
    })
    .await?;
    let digest = state_digest(&records).map_err(FrameError::from)?;
    ctl.send(&Message::GetState {
        patterns: ours,
        digest,
    })
    .await?;
    if digest == their_digest {
        return send(ctl, Vec::new()).await;
    }
    send(ctl, records).await
}

async fn send(ctl: &mut Control, records: Vec<WireState>) -> Result<(), SessionError> {
    let batches = state_batches(records).map_err(FrameError::from)?;
    for batch in &batches {
        ctl.send(batch).await?;
    }
    Ok(())
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
