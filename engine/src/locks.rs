//! The lock table (the seed's `sync_locks`) as a deterministic state machine: commands in,
//! answers out. Every peer applies the same commands in the same order (the replicated log of
//! docs/LOCKS.md), so every peer holds the same table.
//!
//! - A lock is named (`github-push`) within a project (`--project`, may be empty).
//! - **At most one holder**: an acquire is granted only if the lock is free or its holder's
//!   lease has expired at the command's time.
//! - **Leases**: a grant or renew sets `expires_ms = now_ms + ttl_ms`; nothing happens at
//!   expiry, the next acquire after it simply wins.
//! - **Fencing tokens**: every grant takes the next number of one table-wide counter, so a
//!   later holder always has a larger token than any earlier one; a renew or release must show
//!   the holder's token, so a stale holder (its lease expired and someone else acquired) is
//!   refused.
//! - Time is the command's `now_ms`, stamped once by the node that proposed it: applying the log
//!   again gives the same table whatever the clocks say then.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest lease: one day.
pub const MAX_TTL_MS: u64 = 24 * 3600 * 1000;

/// The shortest lease: one second.
pub const MIN_TTL_MS: u64 = 1000;

/// Who holds (or asks for) a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The peer (short id).
    pub peer: String,
    /// The agent on it.
    pub agent: String,
    /// The machine's name.
    pub machine: String,
}

impl Holder {
    /// `@milo on laptop`.
    pub fn describe(&self) -> String {
        let agent = if self.agent.is_empty() {
            "(no agent)".to_owned()
        } else {
            format!("@{}", self.agent)
        };
        format!("{agent} on {}", self.machine)
    }
}

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Its name.
    pub name: String,
    /// Its project (empty: none).
    pub project: String,
    /// Who holds it.
    pub holder: Holder,
    /// Why.
    pub reason: String,
    /// The fencing token of this grant.
    pub token: u64,
    /// When it was granted (ms since the epoch).
    pub acquired_ms: u64,
    /// When the lease ends unless renewed.
    pub expires_ms: u64,
}

/// A change to the table, stamped with the proposer's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Take `name` for `ttl_ms` if it is free or expired.
    Acquire {
        /// The lock.
        name: String,
        /// Its project.
        project: String,
        /// Who asks.
        holder: Holder,
        /// Why.
        reason: String,
        /// Lease length.
        ttl_ms: u64,
        /// The proposer's time.
        now_ms: u64,
    },
    /// Extend the lease of a lock we hold.
    Renew {
        /// The lock.
        name: String,
        /// Its project.
        project: String,
        /// Who asks.
        holder: Holder,
        /// The token of our grant.
        token: u64,
        /// New lease length from now.
        ttl_ms: u64,
        /// The proposer's time.
        now_ms: u64,
    },
    /// Give a lock back.
    Release {
        /// The lock.
        name: String,
        /// Its project.
        project: String,
        /// Who asks.
        holder: Holder,
        /// The token of our grant.
        token: u64,
        /// The proposer's time.
        now_ms: u64,
    },
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Granted (acquire) or extended (renew): the lock as it is now.
    Held(Lock),
    /// Someone else holds it, until `expires_ms`.
    Blocked(Lock),
    /// Released.
    Released,
    /// A renew or release by someone who does not hold it (any more): who does, if anyone.
    NotHolder(Option<Lock>),
    /// A command that cannot be applied as given (a TTL out of range).
    Invalid(String),
}

/// The table: every lock held now (expired ones stay until replaced or released), and the
/// token counter.
///
/// A table decoded from a peer (a Raft snapshot) is checked as it decodes: every lock is filed
/// under its own valid name, no token is above the counter, no lease ends before it began.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTable")]
pub struct LockTable {
    /// By `project/name` (names hold no `/`: [`check_name`]).
    locks: BTreeMap<String, Lock>,
    last_token: u64,
}

/// A table as it decodes, before [`LockTable::try_from`] checks it.
#[derive(Deserialize)]
struct RawTable {
    locks: BTreeMap<String, Lock>,
    last_token: u64,
}

impl TryFrom<RawTable> for LockTable {
    type Error = String;

    fn try_from(raw: RawTable) -> Result<LockTable, String> {
        for (k, lock) in &raw.locks {
            check_name("lock name", &lock.name, false)?;
            check_name("project", &lock.project, true)?;
            if *k != key(&lock.project, &lock.name) {
                return Err(format!("lock {k:?} is filed under another lock's key"));
            }
            if lock.token > raw.last_token {
                return Err(format!(
                    "lock {k:?} has token {} above the table's last token {}",
                    lock.token, raw.last_token
                ));
            }
            if lock.expires_ms < lock.acquired_ms {
                return Err(format!("lock {k:?} expires before it was acquired"));
            }
        }
        Ok(LockTable {
            locks: raw.locks,
            last_token: raw.last_token,
        })
    }
}

impl LockTable {
    /// Apply one command. A command naming a lock or project [`check_name`] refuses is
    /// `Invalid` (the proposer checks names; a command from the log is checked again, so two
    /// names can never share a key).
    pub fn apply(&mut self, cmd: &Command) -> Answer {
        let (Command::Acquire { name, project, .. }
        | Command::Renew { name, project, .. }
        | Command::Release { name, project, .. }) = cmd;
        if let Err(why) =
            check_name("lock name", name, false).and_then(|()| check_name("project", project, true))
        {
            return Answer::Invalid(why);
        }
        match cmd {
            Command::Acquire {
                name,
                project,
                holder,
                reason,
                ttl_ms,
                now_ms,
            } => {
                if let Err(why) = check_ttl(*ttl_ms) {
                    return Answer::Invalid(why);
                }
                let key = key(project, name);
                if let Some(held) = self.locks.get(&key)
                    && held.expires_ms > *now_ms
                    && held.holder != *holder
                {
                    return Answer::Blocked(held.clone());
                }
                // Free, expired, or re-acquired by its holder: a new grant, a new token (never
                // the same one twice: a table whose counter is spent grants nothing).
                let Some(token) = self.last_token.checked_add(1) else {
                    return Answer::Invalid("the table's fencing tokens are spent".into());
                };
                self.last_token = token;
                let lock = Lock {
                    name: name.clone(),
                    project: project.clone(),
                    holder: holder.clone(),
                    reason: reason.clone(),
                    token: self.last_token,
                    acquired_ms: *now_ms,
                    expires_ms: now_ms.saturating_add(*ttl_ms),
                };
                self.locks.insert(key, lock.clone());
                Answer::Held(lock)
            }
            Command::Renew {
                name,
                project,
                holder,
                token,
                ttl_ms,
                now_ms,
            } => {
                if let Err(why) = check_ttl(*ttl_ms) {
                    return Answer::Invalid(why);
                }
                match self.held_by(project, name, holder, *token, *now_ms) {
                    Ok(lock) => {
                        lock.expires_ms = now_ms.saturating_add(*ttl_ms);
                        Answer::Held(lock.clone())
                    }
                    Err(current) => Answer::NotHolder(current.map(|b| *b)),
                }
            }
            Command::Release {
                name,
                project,
                holder,
                token,
                now_ms,
            } => match self.held_by(project, name, holder, *token, *now_ms) {
                Ok(_) => {
                    self.locks.remove(&key(project, name));
                    Answer::Released
                }
                Err(current) => Answer::NotHolder(current.map(|b| *b)),
            },
        }
    }

    /// The locks whose lease runs at `now_ms`, by project then name.
    pub fn held(&self, now_ms: u64) -> Vec<Lock> {
        self.locks
            .values()
            .filter(|l| l.expires_ms > now_ms)
            .cloned()
            .collect()
    }

    /// The lock `name` of `project` if its lease runs at `now_ms`.
    pub fn get(&self, project: &str, name: &str, now_ms: u64) -> Option<&Lock> {
        self.locks
            .get(&key(project, name))
            .filter(|l| l.expires_ms > now_ms)
    }

    /// The largest token granted so far.
    pub fn last_token(&self) -> u64 {
        self.last_token
    }

    fn held_by(
        &mut self,
        project: &str,
        name: &str,
        holder: &Holder,
        token: u64,
        now_ms: u64,
    ) -> Result<&mut Lock, Option<Box<Lock>>> {
        match self.locks.get_mut(&key(project, name)) {
            Some(l) if l.token == token && l.holder == *holder && l.expires_ms > now_ms => Ok(l),
            Some(l) if l.expires_ms > now_ms => Err(Some(Box::new(l.clone()))),
            _ => Err(None),
        }
    }
}

fn key(project: &str, name: &str) -> String {
    format!("{project}/{name}")
}

/// A lock or project name: 1 to 64 bytes of letters, digits and `-_.` (a project may be
/// empty).
pub fn check_name(what: &str, name: &str, may_be_empty: bool) -> Result<(), String> {
    if name.is_empty() && may_be_empty {
        return Ok(());
    }
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "invalid {what} {name:?}: use 1 to 64 letters, digits and - _ . only"
        ));
    }
    Ok(())
}

fn check_ttl(ttl_ms: u64) -> Result<(), String> {
    if (MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(format!(
            "a lease of {ttl_ms} ms is outside 1 s to 24 h; give --ttl between 1s and 24h"
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use proptest::prelude::*;

    fn who(agent: &str) -> Holder {
        Holder {
            peer: format!("P{agent}"),
            agent: agent.into(),
            machine: format!("{agent}-box"),
        }
    }

    fn acquire(agent: &str, now: u64, ttl: u64) -> Command {
        Command::Acquire {
            name: "github-push".into(),
            project: "site".into(),
            holder: who(agent),
            reason: "deploy".into(),
            ttl_ms: ttl,
            now_ms: now,
        }
    }

    #[test]
    fn a_lock_is_blocked_while_held_and_free_once_expired_with_a_larger_token() {
        let mut t = LockTable::default();
        let Answer::Held(first) = t.apply(&acquire("claude", 0, 5_000)) else {
            panic!()
        };
        let Answer::Blocked(b) = t.apply(&acquire("gemini", 4_999, 5_000)) else {
            panic!()
        };
        assert_eq!(b.holder.describe(), "@claude on claude-box");
        let Answer::Held(second) = t.apply(&acquire("gemini", 5_000, 5_000)) else {
            panic!()
        };
        assert!(second.token > first.token);
        // The stale holder can neither renew nor release.
        let stale = Command::Release {
            name: "github-push".into(),
            project: "site".into(),
            holder: who("claude"),
            token: first.token,
            now_ms: 5_001,
        };
        assert_eq!(t.apply(&stale), Answer::NotHolder(Some(second.clone())));
        let renew = Command::Renew {
            name: "github-push".into(),
            project: "site".into(),
            holder: who("gemini"),
            token: second.token,
            ttl_ms: 60_000,
            now_ms: 9_000,
        };
        let Answer::Held(renewed) = t.apply(&renew) else {
            panic!()
        };
        assert_eq!(renewed.expires_ms, 69_000);
        assert_eq!(t.held(10_000).len(), 1);
        assert!(t.held(70_000).is_empty());
        assert!(matches!(t.apply(&acquire("x", 0, 10)), Answer::Invalid(_)));
    }

    #[test]
    fn names_that_could_share_a_key_are_invalid_even_from_the_log() {
        let mut t = LockTable::default();
        for (project, name) in [("a/b", "c"), ("a", "b/c"), ("", ""), ("p", "x y")] {
            let cmd = Command::Acquire {
                name: name.into(),
                project: project.into(),
                holder: who("a"),
                reason: String::new(),
                ttl_ms: 5_000,
                now_ms: 1,
            };
            assert!(
                matches!(t.apply(&cmd), Answer::Invalid(_)),
                "{project}/{name}"
            );
        }
        assert_eq!(t, LockTable::default());
    }

    #[test]
    fn a_table_from_a_peer_is_checked_as_it_decodes() {
        let mut t = LockTable::default();
        t.apply(&acquire("a", 10, 5_000));
        let good = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<LockTable>(&good).unwrap(), t);
        for (from, to) in [
            ("\"site/github-push\"", "\"other/github-push\""),
            ("\"last_token\":1", "\"last_token\":0"),
            ("\"expires_ms\":5010", "\"expires_ms\":9"),
            ("\"name\":\"github-push\"", "\"name\":\"git/push\""),
        ] {
            assert!(good.contains(from), "{from} in {good}");
            let bad = good.replace(from, to);
            assert!(serde_json::from_str::<LockTable>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spent_token_counter_grants_nothing() {
        let raw = r#"{"locks":{},"last_token":18446744073709551615}"#;
        let mut t: LockTable = serde_json::from_str(raw).unwrap();
        assert!(matches!(
            t.apply(&acquire("a", 1, 5_000)),
            Answer::Invalid(_)
        ));
        assert!(t.held(1).is_empty());
    }

    proptest! {
        /// Whatever the commands, a grant to someone else comes only after the lease it
        /// replaces ended, at most one lease runs at any time, and tokens only grow.
        #[test]
        fn never_two_holders_and_tokens_only_grow(
            ops in proptest::collection::vec((0u8..3, 0usize..3, 0u64..2_000, 1_000u64..8_000), 1..60)
        ) {
            let mut t = LockTable::default();
            let mut now = 0;
            let mut last_token = 0;
            // The lease as the commands so far left it (None: released or never granted).
            let mut lease: Option<Lock> = None;
            for (op, agent, dt, ttl) in ops {
                now += dt;
                let h = who(["a", "b", "c"][agent]);
                let token = lease.as_ref().map_or(0, |l| l.token);
                let cmd = match op {
                    0 => acquire(&h.agent, now, ttl),
                    1 => Command::Renew { name: "github-push".into(), project: "site".into(), holder: h, token, ttl_ms: ttl, now_ms: now },
                    _ => Command::Release { name: "github-push".into(), project: "site".into(), holder: h, token, now_ms: now },
                };
                match t.apply(&cmd) {
                    Answer::Held(l) => {
                        if matches!(cmd, Command::Acquire { .. }) {
                            prop_assert!(l.token > last_token);
                            last_token = l.token;
                            if let Some(prev) = &lease {
                                prop_assert!(prev.holder == l.holder || prev.expires_ms <= now);
                            }
                        } else {
                            prop_assert_eq!(Some(l.token), lease.as_ref().map(|p| p.token));
                        }
                        lease = Some(l);
                    }
                    Answer::Released => lease = None,
                    _ => {}
                }
                prop_assert!(t.held(now).len() <= 1);
                prop_assert_eq!(t.last_token(), last_token);
            }
        }
    }
}
