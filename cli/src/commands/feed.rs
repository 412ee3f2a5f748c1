//! `say` and `feed [--follow]`: the coordination feed (the seed's chatroom), a union-merged
//! log in the workspace (`memory/bot-sync/feed.jsonl`, engine/src/feed.rs) that every peer
//! holds whole. `say` appends one line; `feed` reads them back in the one order every peer
//! shows; `feed --follow` asks the daemon to push each new message as it lands, whether it was
//! said here or arrived from a peer.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use botsync_engine::feed::{
    self, Author, FEED_PATH, Feed, Filter, HandoffRecord, Kind, Message, Post,
};
use botsync_proto::replica::Replica as _;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::context::Globals;
use crate::exit::usage;
use crate::verb::{Ctx, Reply};

/// Arguments of `say`.
#[derive(Debug, Args)]
pub struct SayArgs {
    /// The message (`@name` mentions an agent).
    pub message: String,
    /// What it is for: chat, sync, alert, handoff, question or decision.
    #[arg(long = "type", value_name = "TYPE", default_value = "chat")]
    pub kind: String,
    /// Mention an agent (repeatable; `@name` in the text also mentions).
    #[arg(long = "mention", value_name = "NAME")]
    pub mentions: Vec<String>,
    /// The project it concerns.
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Structured extra data: a JSON object.
    #[arg(long, value_name = "JSON")]
    pub meta: Option<String>,
}

/// Arguments of `feed`.
#[derive(Debug, Args)]
pub struct FeedArgs {
    /// Keep printing messages as they arrive (needs the daemon: `botsync serve`).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only messages since TIME: RFC 3339 (2026-12-06T10:00:00Z) or a duration back (10m, 2h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only messages mentioning NAME.
    #[arg(long, value_name = "NAME")]
    pub mentions: Option<String>,
    /// Only messages about project P.
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Only messages of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Show at most the last N matching messages (0: all).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
}

/// Who is asking, as the caller's environment says (the daemon's environment is not the
/// caller's, so it travels with the request like `--agent`): `AI_IDENTITY` and `MACHINE_ID`,
/// as in the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CallerEnv {
    /// `AI_IDENTITY`.
    pub ai: String,
    /// `MACHINE_ID`, else the host name.
    pub machine: String,
}

impl CallerEnv {
    /// This process's environment.
    pub fn here() -> CallerEnv {
        CallerEnv {
            ai: std::env::var("AI_IDENTITY")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            machine: crate::node::feed::machine_name(),
        }
    }
}

/// A message to post, as data (it runs in the daemon when one holds the workspace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SayRequest {
    /// The text.
    pub text: String,
    /// Its kind.
    pub kind: Kind,
    /// Mentions given with `--mention`.
    pub mentions: Vec<String>,
    /// The project.
    pub project: Option<String>,
    /// `--meta`, checked to be a JSON object.
    pub meta: Option<String>,
    /// The handoff record of a handoff.
    pub handoff: Option<HandoffRecord>,
}

impl SayRequest {
    /// The request for parsed `say` arguments, checked before anything is opened.
    pub fn from_args(a: SayArgs) -> Result<SayRequest> {
        let kind: Kind = a.kind.parse().map_err(usage)?;
        let req = SayRequest {
            text: a.message,
            kind,
            mentions: a.mentions,
            project: a.project,
            meta: a.meta,
            handoff: None,
        };
        // Fail on bad input here, with the usage exit code, not after a daemon round trip.
        Message::new(req.post()?, &Author::default(), 0, 0).map_err(usage)?;
        Ok(req)
    }

    /// A `sync` message (posted after a completed sync verb).
    pub fn sync(text: String) -> SayRequest {
        SayRequest {
            text,
            kind: Kind::Sync,
            mentions: Vec::new(),
            project: None,
            meta: None,
            handoff: None,
        }
    }

    fn post(&self) -> Result<Post> {
        let metadata = match &self.meta {
            None => None,
            Some(text) => Some(serde_json::from_str(text).map_err(|e| {
                usage(format!(
                    "--meta is not JSON ({e}); give an object such as '{{\"pr\": 12}}'"
                ))
            })?),
        };
        Ok(Post {
            text: self.text.clone(),
            kind: Some(self.kind),
            mentions: self.mentions.clone(),
            project: self.project.clone(),
            metadata,
            handoff: self.handoff.clone(),
        })
    }
}

/// A `feed` request, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRequest {
    /// Only messages at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only messages mentioning this agent.
    pub mention: Option<String>,
    /// Only messages about this project.
    pub project: Option<String>,
    /// Only messages of this kind.
    pub kind: Option<Kind>,
    /// The last N (0: all).
    pub limit: usize,
    /// Keep streaming new messages.
    pub follow: bool,
}

impl FeedRequest {
    /// The request for parsed `feed` arguments.
    pub fn from_args(a: FeedArgs) -> Result<FeedRequest> {
        Ok(FeedRequest {
            since_ms: a
                .since
                .as_deref()
                .map(|s| feed::parse_since(s, now_ms()))
                .transpose()
                .map_err(usage)?,
            mention: a.mentions,
            project: a.project,
            kind: a
                .kind
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(usage)?,
            limit: a.limit,
            follow: a.follow,
        })
    }

    fn filter(&self) -> Filter {
        Filter {
            since_ms: self.since_ms,
            mention: self.mention.clone(),
            project: self.project.clone(),
            kind: self.kind,
        }
    }
}

/// `say`: append the message to the feed; the daemon, if it runs, rescans it at once so its
/// peers hear of it.
pub fn say(ctx: &Ctx, req: &SayRequest) -> Result<Reply> {
    let m = post(ctx, req)?;
    let human = format!("said {} ({})", m.id, m.message_type);
    Reply::ok(&m, human)
}

/// Append a message built from `req` to the feed of the workspace `ctx` opens.
pub fn post(ctx: &Ctx, req: &SayRequest) -> Result<Message> {
    let node = ctx.node()?;
    let author = Author {
        peer: node.identity.peer_id().short(),
        machine: ctx.caller.machine.clone(),
        agent: ctx.agent.as_str().to_owned(),
        ai: ctx.caller.ai.clone(),
    };
    let m = Message::new(req.post()?, &author, now_ms(), nonce()).map_err(usage)?;
    crate::node::feed::append(&ctx.root, &m)?;
    if ctx.daemon.is_some() {
        node.replica.note_changed([FEED_PATH]);
        node.replica.refresh().map_err(|e| {
            anyhow!("the message is saved, but the rescan that announces it failed: {e}")
        })?;
    }
    Ok(m)
}

/// `feed`: the messages that pass the filter, the last `limit` of them; with `follow`, then
/// every new one as it lands, until the caller goes away.
pub fn feed(ctx: &Ctx, req: &FeedRequest) -> Result<Reply> {
    let filter = req.filter();
    let read = read(&ctx.root)?;
    let mut shown: Vec<&Message> = read.select(&filter).collect();
    if req.limit > 0 && shown.len() > req.limit {
        shown.drain(..shown.len() - req.limit);
    }
    if !req.follow {
        let human = shown.iter().map(|m| line(m)).collect::<Vec<_>>().join("\n");
        let mut reply = Reply::ok(&shown, human)?;
        if read.bad_lines > 0 {
            reply.warnings.push(format!(
                "{} lines of {FEED_PATH} are not feed messages and were skipped",
                read.bad_lines
            ));
        }
        return Ok(reply);
    }
    let (Some(daemon), Some(sink)) = (&ctx.daemon, &ctx.items) else {
        bail!(
            "feed --follow needs the daemon, which receives the peers' messages: start it with `botsync serve` (or `botsync service install`), then run this again"
        );
    };
    let mut seen: std::collections::HashSet<String> =
        read.messages.iter().map(|m| m.id.clone()).collect();
    for m in shown {
        if !sink.send(serde_json::to_value(m)?) {
            return Reply::ok(serde_json::json!({"followed": true}), String::new());
        }
    }
    let mut roots = daemon.node.replica.subscribe();
    loop {
        // The daemon publishes every change of the tree (a rescan, an apply from a peer):
        // wait for one, checking now and then that the caller is still there.
        match roots.has_changed() {
            Err(_) => bail!("the daemon is stopping; the feed ends here"),
            Ok(false) => {
                if !sink.is_open() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Ok(true) => {
                roots.borrow_and_update();
            }
        }
        for m in read_new(&ctx.root, &mut seen)? {
            if filter.matches(&m) && !sink.send(serde_json::to_value(&m)?) {
                break;
            }
        }
    }
    Reply::ok(serde_json::json!({"followed": true}), String::new())
}

/// Print one streamed message (`feed --follow`): its line, or its JSON on one line.
pub fn print_item(doc: &serde_json::Value, g: &Globals) {
    if g.json {
        println!("{doc}");
    } else if let Ok(m) = serde_json::from_value::<Message>(doc.clone()) {
        println!("{}", line(&m));
    }
}

/// The feed of the workspace at `root` (empty if there is none yet).
pub fn read(root: &Path) -> Result<Feed> {
    let path = root.join(FEED_PATH);
    match fs::read(&path) {
        Ok(bytes) => Ok(Feed::parse(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Feed::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// One message as a line: `2026-12-06 10:00:00  claude/@marcus (mini)  [alert] #proj  text`.
pub fn line(m: &Message) -> String {
    let when = m
        .created_at
        .get(..19)
        .map_or_else(|| m.created_at.clone(), |s| s.replace('T', " "));
    let mut s = format!("{when}  {}", m.who());
    if m.message_type != Kind::Chat {
        s.push_str(&format!("  [{}]", m.message_type));
    }
    if let Some(p) = &m.project_context {
        s.push_str(&format!("  #{p}"));
    }
    s.push_str("  ");
    s.push_str(&m.message);
    s
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_new(root: &Path, seen: &mut std::collections::HashSet<String>) -> Result<Vec<Message>> {
    Ok(read(root)?
        .messages
        .into_iter()
        .filter(|m| seen.insert(m.id.clone()))
        .collect())
}

/// Tells apart two messages of one author in one millisecond.
fn nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) << 32 | (COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
}
