//! The initiator's state phase (docs/PROTOCOL.md, "A sync session", step 7): our records
//! for the shared keys, the responder's batches taken, ours pushed unless the responder holds
//! them as new already. Split from `initiator.rs`; the machine's fields stay private to it.

use std::collections::{HashMap, HashSet};

use botsync_engine::Hash;

use super::{Expect, Initiator};
use crate::budget::Phase;
use crate::frame::FrameError;
use crate::messages::{Features, SessionMode, WireState, state_batches};
use crate::session::SessionError;
use crate::session::state::Counter;
use crate::session::work::{Io, Need};

/// The state phase in flight.
#[derive(Debug, Default)]
pub(super) struct StatePhase {
    pub(super) their_digest: Hash,
    /// Our records of the keys both share, before anything of the peer's is taken.
    pub(super) mine: Vec<WireState>,
    pub(super) in_step: bool,
    /// Keys the responder already holds as new as ours.
    covered: HashSet<String>,
    count: Counter,
}

impl Initiator {
    /// The state phase (see `state.rs`), when STATE was negotiated and this is no dry run.
    pub(super) fn state_phase(&mut self) {
        if self.features.contains(Features::STATE)
            && !self.opts.dry_run
            && self.opts.mode != SessionMode::DryRun
        {
            self.need(Expect::StatePatterns, Need::StatePatterns);
        } else {
            self.goodbye();
        }
    }

    pub(super) fn take_state_batch(
        &mut self,
        records: Vec<WireState>,
        last: bool,
    ) -> Result<(), SessionError> {
        self.state.count.add(records.len())?;
        self.report.state.received += records.len() as u64;
        let ours: HashMap<&str, &WireState> = self
            .state
            .mine
            .iter()
            .map(|w| (w.key.as_str(), w))
            .collect();
        let covered = records.iter().filter(|r| {
            // An equal vector over another value (a lost index) is not covered: both sides
            // must see the pair to decide it alike.
            ours.get(r.key.as_str())
                .is_some_and(|w| match w.version.compare(&r.version) {
                    botsync_engine::vector::Causality::DominatedBy => true,
                    botsync_engine::vector::Causality::Equal => **w == **r,
                    _ => false,
                })
        });
        let covered: Vec<String> = covered.map(|r| r.key.clone()).collect();
        self.state.covered.extend(covered);
        if self.pulls() && !records.is_empty() {
            let peer = self.peer;
            self.need(
                Expect::StateApplied { last },
                Need::ApplyState { records, peer },
            );
            return Ok(());
        }
        self.after_state_batch(last)
    }

    pub(super) fn after_state_batch(&mut self, last: bool) -> Result<(), SessionError> {
        if !last {
            self.recv(Expect::StateBatches, Some(Phase::Reply));
            return Ok(());
        }
        if !self.pushes() || self.state.in_step {
            self.goodbye();
            return Ok(());
        }
        let state = std::mem::take(&mut self.state);
        let offer: Vec<WireState> = state
            .mine
            .into_iter()
            .filter(|w| !state.covered.contains(&w.key))
            .collect();
        self.report.state.pushed = offer.len() as u64;
        for batch in state_batches(offer).map_err(FrameError::from)? {
            self.out.push_back(Io::Send(batch));
        }
        // The responder confirms once it has taken them: closing before would discard what is
        // still in flight.
        self.recv(Expect::StateConfirm, Some(Phase::Reply));
        Ok(())
    }
}
