//! The lock table's voters follow the configuration (docs/LOCKS.md, "Changing the voters").
//!
//! The voter set is written into the Raft log when the table forms. When the configured set
//! changes later (a peer added to or removed from `peers.json` under the default, or
//! `lock_voters` edited and the daemons restarted), the leader moves the table to it with Raft's
//! own joint-consensus change: each new voter first joins as a learner, and only when every new
//! voter has answered the leader (so has a copy of the log) is the change proposed. A voter that
//! is down therefore delays the change instead of taking the majority away from everyone.
//!
//! A peer that is new to a table that already formed elsewhere must not form a second one: before
//! it forms the table it asks the other voters ([`super::Rpc::Formed`]) and, if any has, it
//! waits to be added and sends its requests to them meanwhile.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, Raft};
use tracing::{debug, info};

use botsync_proto::coordination::rpc::{LockRaft, NodeId};

use super::Voters;

/// How often a leader compares the table's voters with the configured ones.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// How long one step of a change (adding a learner, the joint change) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The table's voters as this node has applied them (empty before it forms).
pub fn current(raft: &Raft<LockRaft>) -> BTreeSet<NodeId> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    m.membership_config.membership().voter_ids().collect()
}

/// What one round of [`reconcile`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// This node does not lead, the voters already match, or a change is in flight.
    Nothing,
    /// New voters were added as learners; the change waits until they answer.
    Waiting(Vec<NodeId>),
    /// The voters were changed.
    Changed {
        /// The voters before.
        from: BTreeSet<NodeId>,
        /// The voters now.
        to: BTreeSet<NodeId>,
    },
}

/// If this node (`me`) leads the table, move its voters one step towards `wanted`.
pub async fn reconcile(raft: &Raft<LockRaft>, me: NodeId, wanted: &Voters) -> Result<Step, String> {
    let (have, learners, caught_up) = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        if m.current_leader != Some(me) {
            return Ok(Step::Nothing);
        }
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return Ok(Step::Nothing);
        }
        let have: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let caught_up: BTreeSet<NodeId> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(_, matched)| matched.is_some())
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        (have, learners, caught_up)
    };
    let want: BTreeSet<NodeId> = wanted.members.keys().copied().collect();
    if want.is_empty() || have == want {
        return Ok(Step::Nothing);
    }
    let mut waiting = Vec::new();
    for (id, peer) in &wanted.members {
        if have.contains(id) {
            continue;
        }
        if !learners.contains(id) {
            let node = BasicNode::new(peer.to_copy_safe());
            tokio::time::timeout(STEP_TIMEOUT, raft.add_learner(*id, node, false))
                .await
                .map_err(|_| "adding a new lock voter timed out".to_owned())?
                .map_err(|e| format!("adding a new lock voter: {e}"))?;
            debug!(learner = id, "a new lock voter joins as a learner");
        }
        if *id != me && !caught_up.contains(id) {
            waiting.push(*id);
        }
    }
    if !waiting.is_empty() {
        return Ok(Step::Waiting(waiting));
    }
    tokio::time::timeout(STEP_TIMEOUT, raft.change_membership(want.clone(), false))
        .await
        .map_err(|_| "changing the lock voters timed out".to_owned())?
        .map_err(|e| format!("changing the lock voters: {e}"))?;
    info!(from = ?have, to = ?want, "the lock table's voters changed");
    Ok(Step::Changed {
        from: have,
        to: want,
    })
}
