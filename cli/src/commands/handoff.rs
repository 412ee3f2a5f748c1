//! `handoff`, `handoffs` and `handoff done`: work passed from one agent to another (the seed's
//! handoff protocol). A handoff is a feed message of type `handoff` carrying a structured
//! record (to whom, what, why); marking it done is another such message naming it. Both
//! travel in the feed, so every peer sees the same handoffs without a table of their own.

use anyhow::{Result, bail};
use botsync_engine::feed::{self, Handoff, HandoffRecord, Kind};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::commands::feed::{SayRequest, post, read};
use crate::exit::usage;
use crate::verb::{Ctx, Reply};

/// Arguments of `handoff`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct HandoffArgs {
    /// `handoff done ID`.
    #[command(subcommand)]
    pub action: Option<HandoffAction>,
    /// The agent the work goes to.
    #[arg(long, value_name = "AGENT", required = true)]
    pub to: Option<String>,
    /// What is handed over (a path, a branch, a URL).
    #[arg(long, value_name = "PATH", required = true)]
    pub artifact: Option<String>,
    /// What the receiving agent needs to know.
    #[arg(long, value_name = "TEXT", required = true)]
    pub context: Option<String>,
    /// The project it concerns.
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
}

/// The `handoff` sub-verbs.
#[derive(Debug, Subcommand)]
pub enum HandoffAction {
    /// Mark a handoff done (its id as `handoffs` prints it).
    Done {
        /// The handoff's id.
        id: String,
    },
}

/// Arguments of `handoffs`.
#[derive(Debug, Args)]
pub struct HandoffsArgs {
    /// Only handoffs not done yet.
    #[arg(long)]
    pub open: bool,
}

/// A `handoff` request, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum HandoffRequest {
    /// Hand work over.
    Give(SayRequest),
    /// Mark one done.
    Done {
        /// Its id.
        id: String,
    },
    /// List them.
    List {
        /// Only the open ones.
        open: bool,
    },
}

impl HandoffRequest {
    /// The request for parsed `handoff` arguments.
    pub fn from_args(a: HandoffArgs) -> Result<HandoffRequest> {
        if let Some(HandoffAction::Done { id }) = a.action {
            return Ok(HandoffRequest::Done { id });
        }
        let (Some(to), Some(artifact), Some(context)) = (a.to, a.artifact, a.context) else {
            return Err(usage(
                "handoff needs --to AGENT --artifact PATH --context TEXT",
            ));
        };
        let to = feed::name(&to, "agent").map_err(usage)?;
        let text = format!("Handing off {artifact} to @{to}: {context}");
        Ok(HandoffRequest::Give(SayRequest {
            text,
            kind: Kind::Handoff,
            mentions: vec![to.clone()],
            project: a.project,
            meta: None,
            handoff: Some(HandoffRecord::Open {
                to,
                artifact,
                context,
            }),
        }))
    }
}

/// Run a `handoff` request.
pub fn run(ctx: &Ctx, req: HandoffRequest) -> Result<Reply> {
    match req {
        HandoffRequest::Give(say) => {
            let m = post(ctx, &say)?;
            let human = format!(
                "handoff {} posted; the receiver sees it in `botsync handoffs`",
                m.id
            );
            Reply::ok(&m, human)
        }
        HandoffRequest::Done { id } => {
            let open = feed::handoffs(&read(&ctx.root)?);
            let Some(h) = open.iter().find(|h| h.id == id) else {
                return Err(usage(format!(
                    "no handoff {id} in the feed; `botsync handoffs` lists them (a handoff said on another peer shows after a sync)"
                )));
            };
            if let Some(done) = &h.done {
                bail!(
                    "handoff {id} was already marked done by {} at {}",
                    done.by,
                    done.at
                );
            }
            let say = SayRequest {
                text: format!("Done: {} (handoff {id} from {})", h.artifact, h.from),
                kind: Kind::Handoff,
                mentions: Vec::new(),
                project: None,
                meta: None,
                handoff: Some(HandoffRecord::Done { of: id.clone() }),
            };
            let m = post(ctx, &say)?;
            Reply::ok(&m, format!("handoff {id} marked done"))
        }
        HandoffRequest::List { open } => {
            let all = feed::handoffs(&read(&ctx.root)?);
            let shown: Vec<&Handoff> = all.iter().filter(|h| !open || h.done.is_none()).collect();
            let human = if shown.is_empty() {
                if open {
                    "no open handoffs"
                } else {
                    "no handoffs"
                }
                .to_owned()
            } else {
                shown
                    .iter()
                    .map(|h| describe(h))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Reply::ok(&shown, human)
        }
    }
}

fn describe(h: &Handoff) -> String {
    let status = match &h.done {
        None => "open".to_owned(),
        Some(d) => format!("done by {} at {}", d.by, d.at.get(..19).unwrap_or(&d.at)),
    };
    format!(
        "{}  {}  {} -> @{}  {}\n    {}\n    {status}",
        h.id,
        h.created_at
            .get(..19)
            .unwrap_or(&h.created_at)
            .replace('T', " "),
        h.from,
        h.to,
        h.artifact,
        h.context
    )
}
