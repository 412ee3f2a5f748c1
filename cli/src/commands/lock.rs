//! `lock acquire|release|renew|status`: TTL locks with fencing tokens (the seed's
//! `sync_locks`), held in the lock table the daemons replicate (cli/src/coord, docs/LOCKS.md).
//! The verbs run in the daemon, which is the table's replica on this machine.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use botsync_engine::locks::{self, Answer, Command, Holder, Lock};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::commands::feed::now_ms;
use crate::commands::history::utc;
use crate::exit::{ATTENTION, usage};
use crate::verb::{Ctx, Reply};

/// Arguments of `lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: LockAction,
}

/// The `lock` sub-verbs.
#[derive(Debug, Subcommand)]
pub enum LockAction {
    /// Take a lock for a while (exit 3 if someone else holds it: who, why, until when).
    Acquire {
        /// The lock, e.g. `github-push`.
        name: String,
        /// The project it belongs to.
        #[arg(long, value_name = "P", default_value = "")]
        project: String,
        /// How long it is held unless renewed (1s to 24h).
        #[arg(long, value_name = "DURATION", default_value = "5m")]
        ttl: String,
        /// Why (shown to whoever is refused).
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
        /// Keep trying this long while someone else holds it.
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
    },
    /// Give a lock back.
    Release {
        /// The lock.
        name: String,
        /// Its project.
        #[arg(long, value_name = "P", default_value = "")]
        project: String,
    },
    /// Extend a lock this agent holds by another TTL from now.
    Renew {
        /// The lock.
        name: String,
        /// Its project.
        #[arg(long, value_name = "P", default_value = "")]
        project: String,
        /// The new lease, from now.
        #[arg(long, value_name = "DURATION", default_value = "5m")]
        ttl: String,
    },
    /// The locks held now.
    Status,
}

/// A `lock` request, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LockRequest {
    /// `lock acquire`.
    Acquire {
        /// The lock.
        name: String,
        /// Its project.
        project: String,
        /// Lease, ms.
        ttl_ms: u64,
        /// Why.
        reason: String,
        /// How long to keep trying, ms.
        wait_ms: u64,
    },
    /// `lock release`.
    Release {
        /// The lock.
        name: String,
        /// Its project.
        project: String,
    },
    /// `lock renew`.
    Renew {
        /// The lock.
        name: String,
        /// Its project.
        project: String,
        /// Lease, ms.
        ttl_ms: u64,
    },
    /// `lock status`.
    Status,
}

impl LockRequest {
    /// The request for parsed arguments, checked before the daemon is asked.
    pub fn from_args(a: LockArgs) -> Result<LockRequest> {
        let named = |name: &str, project: &str| -> Result<()> {
            locks::check_name("lock name", name, false).map_err(usage)?;
            locks::check_name("project", project, true).map_err(usage)
        };
        Ok(match a.action {
            LockAction::Acquire {
                name,
                project,
                ttl,
                reason,
                wait,
            } => {
                named(&name, &project)?;
                LockRequest::Acquire {
                    name,
                    project,
                    ttl_ms: duration_ms("--ttl", &ttl)?,
                    reason,
                    wait_ms: wait
                        .as_deref()
                        .map(|w| duration_ms("--wait", w))
                        .transpose()?
                        .unwrap_or(0),
                }
            }
            LockAction::Release { name, project } => {
                named(&name, &project)?;
                LockRequest::Release { name, project }
            }
            LockAction::Renew { name, project, ttl } => {
                named(&name, &project)?;
                LockRequest::Renew {
                    name,
                    project,
                    ttl_ms: duration_ms("--ttl", &ttl)?,
                }
            }
            LockAction::Status => LockRequest::Status,
        })
    }
}

/// Run a `lock` request (in the daemon).
pub fn run(ctx: &Ctx, req: LockRequest) -> Result<Reply> {
    let Some(daemon) = &ctx.daemon else {
        bail!(
            "locks are kept by the daemons of the mesh: start this workspace's daemon with `botsync serve` (or `botsync auto on`), then retry"
        );
    };
    let coord = &daemon.coord;
    let node = ctx.node()?;
    let me = Holder {
        peer: node.identity.peer_id().short(),
        agent: ctx.agent.as_str().to_owned(),
        machine: ctx.caller.machine.clone(),
    };
    match req {
        LockRequest::Acquire {
            name,
            project,
            ttl_ms,
            reason,
            wait_ms,
        } => {
            let until = Instant::now() + Duration::from_millis(wait_ms);
            loop {
                let cmd = Command::Acquire {
                    name: name.clone(),
                    project: project.clone(),
                    holder: me.clone(),
                    reason: reason.clone(),
                    ttl_ms,
                    now_ms: now_ms(),
                };
                let answer = match ctx.rt.block_on(coord.write(cmd)) {
                    Ok(a) => a,
                    // With time left to wait, a table that cannot answer now (an election in
                    // progress, a voter restarting) is asked again.
                    Err(e) if Instant::now() < until => {
                        tracing::debug!(error = %format!("{e:#}"), "lock table busy; retrying");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match answer {
                    Answer::Held(l) => {
                        let human =
                            format!("acquired {}: token {}, {}", label(&l), l.token, lease(&l));
                        return Reply::ok(&l, human);
                    }
                    Answer::Blocked(l) if Instant::now() < until => {
                        let left = until.saturating_duration_since(Instant::now());
                        let expiry = Duration::from_millis(l.expires_ms.saturating_sub(now_ms()));
                        std::thread::sleep(
                            left.min(expiry)
                                .clamp(Duration::from_millis(100), Duration::from_millis(500)),
                        );
                    }
                    Answer::Blocked(l) => {
                        let human = blocked(&l);
                        let mut reply = Reply::ok(
                            serde_json::json!({"ok": false, "blocked": true, "lock": l}),
                            human,
                        )?;
                        reply.exit_code = ATTENTION;
                        return Ok(reply);
                    }
                    Answer::Invalid(why) => return Err(usage(why)),
                    other => bail!("the lock table answered an acquire with {other:?}"),
                }
            }
        }
        LockRequest::Release { name, project } => {
            let held = mine(ctx, &name, &project, &me)?;
            let cmd = Command::Release {
                name: name.clone(),
                project: project.clone(),
                holder: me,
                token: held.token,
                now_ms: now_ms(),
            };
            match ctx.rt.block_on(coord.write(cmd))? {
                Answer::Released => Reply::ok(
                    serde_json::json!({"released": true, "name": name, "project": project, "token": held.token}),
                    format!("released {}", label(&held)),
                ),
                Answer::NotHolder(now) => Err(not_holder(&name, now.as_ref())),
                other => bail!("the lock table answered a release with {other:?}"),
            }
        }
        LockRequest::Renew {
            name,
            project,
            ttl_ms,
        } => {
            let held = mine(ctx, &name, &project, &me)?;
            let cmd = Command::Renew {
                name: name.clone(),
                project,
                holder: me,
                token: held.token,
                ttl_ms,
                now_ms: now_ms(),
            };
            match ctx.rt.block_on(coord.write(cmd))? {
                Answer::Held(l) => {
                    let human = format!("renewed {}: token {}, {}", label(&l), l.token, lease(&l));
                    Reply::ok(&l, human)
                }
                Answer::NotHolder(now) => Err(not_holder(&name, now.as_ref())),
                Answer::Invalid(why) => Err(usage(why)),
                other => bail!("the lock table answered a renew with {other:?}"),
            }
        }
        LockRequest::Status => {
            let table = ctx.rt.block_on(coord.table())?;
            let held = table.held(now_ms());
            let voters = coord.voter_names();
            let members = coord.members();
            let changing = members.as_ref().filter(|m| {
                let mut m = (*m).clone();
                let mut v = voters.clone();
                m.sort();
                v.sort();
                m != v
            });
            let mut human = if held.is_empty() {
                format!("no lock is held (voters: {})", voters.join(", "))
            } else {
                held.iter()
                    .map(|l| {
                        let why = if l.reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", l.reason)
                        };
                        format!(
                            "{}  {}{why}  token {}  {}",
                            label(l),
                            l.holder.describe(),
                            l.token,
                            lease(l)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            if let Some(now) = changing {
                human.push_str(&format!(
                    "\nthe voters are changing: the table still counts {}",
                    now.join(", ")
                ));
            }
            Reply::ok(
                serde_json::json!({"voters": voters, "members": members, "locks": held, "last_token": table.last_token()}),
                human,
            )
        }
    }
}

/// The lock `name` as this agent holds it now, or why not.
fn mine(ctx: &Ctx, name: &str, project: &str, me: &Holder) -> Result<Lock> {
    let Some(daemon) = &ctx.daemon else {
        bail!("locks need the daemon");
    };
    let table = ctx.rt.block_on(daemon.coord.table())?;
    match table.get(project, name, now_ms()) {
        Some(l) if l.holder == *me => Ok(l.clone()),
        other => Err(not_holder(name, other)),
    }
}

fn not_holder(name: &str, now: Option<&Lock>) -> anyhow::Error {
    match now {
        Some(l) => anyhow!(
            "you do not hold {name}: {} does ({}), until {} UTC; wait for it or ask them",
            l.holder.describe(),
            if l.reason.is_empty() {
                "no reason given"
            } else {
                &l.reason
            },
            when(l.expires_ms)
        ),
        None => {
            anyhow!("{name} is not held (it was released or its lease ran out); acquire it again")
        }
    }
}

/// The seed's `BLOCKED:` message.
fn blocked(l: &Lock) -> String {
    format!(
        "BLOCKED: {} holds {}\nReason: {}\nExpires: {} UTC (token {})",
        l.holder.describe(),
        label(l),
        if l.reason.is_empty() {
            "(none given)"
        } else {
            &l.reason
        },
        when(l.expires_ms),
        l.token
    )
}

fn label(l: &Lock) -> String {
    if l.project.is_empty() {
        l.name.clone()
    } else {
        format!("{} (project {})", l.name, l.project)
    }
}

fn lease(l: &Lock) -> String {
    format!("held until {} UTC", when(l.expires_ms))
}

fn when(ms: u64) -> String {
    utc(i64::try_from(ms)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000))
}

fn duration_ms(flag: &str, text: &str) -> Result<u64> {
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        usage(format!(
            "{flag} {text:?} is not a duration; write 30s, 5m or 1h"
        ))
    })?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
