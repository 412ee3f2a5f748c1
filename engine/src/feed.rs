//! The coordination feed (the seed's `chatroom`): one JSON object per line in
//! `memory/bot-sync/feed.jsonl`, a file that syncs like any other and merges as a union of
//! lines, so every peer ends up holding every message.
//!
//! This module is pure: a new message is built from what the caller says and who says it
//! ([`Message::new`]), a feed file's bytes parse into messages in one order ([`Feed::parse`]),
//! and handoffs are read back from their messages ([`handoffs`]).
//!
//! - **Fields** are the seed's (`ai_source`, `machine_id`, `agent_id`, `message`,
//!   `project_context`, `mentions`, `message_type`, `metadata`, `created_at`) plus `id` (a
//!   hash of author, time and text: unique without coordination), `peer_id` (the writing
//!   peer's short id) and, on handoffs, a structured `handoff` record.
//! - **One order everywhere:** a union merge keeps each peer's lines in the order it saw
//!   them, so the file's line order differs between peers. Readers sort by `created_at`, then
//!   `id`: every peer shows the same messages in the same order.
//! - **Foreign lines** (not a feed message, a line cut by a crash) are skipped and counted,
//!   never fatal: the feed is a log others write to.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the feed lives, relative to the workspace root.
pub const FEED_PATH: &str = "memory/bot-sync/feed.jsonl";

/// The longest message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// The largest `metadata` object, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// The longest agent, project or mention name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// What a message is for (the seed's message types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// General conversation.
    Chat,
    /// A sync or push happened.
    Sync,
    /// Something needs attention.
    Alert,
    /// Work passed to another agent.
    Handoff,
    /// A question needing an answer.
    Question,
    /// A decision made.
    Decision,
}

impl Kind {
    /// Every kind, in the seed's order.
    pub const ALL: [Kind; 6] = [
        Kind::Chat,
        Kind::Sync,
        Kind::Alert,
        Kind::Handoff,
        Kind::Question,
        Kind::Decision,
    ];

    /// The name on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Sync => "sync",
            Kind::Alert => "alert",
            Kind::Handoff => "handoff",
            Kind::Question => "question",
            Kind::Decision => "decision",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = FeedError;

    fn from_str(s: &str) -> Result<Kind, FeedError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| FeedError::BadKind(s.to_owned()))
    }
}

/// The structured record a handoff message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HandoffRecord {
    /// Work handed to an agent.
    Open {
        /// The agent it is handed to.
        to: String,
        /// What is handed over (a path, a branch, a URL).
        artifact: String,
        /// What the receiver needs to know.
        context: String,
    },
    /// The handoff `of` is done.
    Done {
        /// The id of the handoff's message.
        of: String,
    },
}

/// Who writes a message: this peer, its machine, the agent and its AI.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Author {
    /// The writing peer's short id.
    pub peer: String,
    /// The machine's name (`MACHINE_ID`, else the host name).
    pub machine: String,
    /// The agent (`--agent`, `BOTSYNC_AGENT`); may be empty.
    pub agent: String,
    /// The AI behind the agent (`AI_IDENTITY`); may be empty.
    pub ai: String,
}

/// What a caller asks to post.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Post {
    /// The text.
    pub text: String,
    /// Its kind (chat if not given).
    pub kind: Option<Kind>,
    /// Agents mentioned on top of the `@name`s in the text.
    pub mentions: Vec<String>,
    /// The project it concerns.
    pub project: Option<String>,
    /// Structured extra data: a JSON object.
    pub metadata: Option<Value>,
    /// The handoff record, for handoff messages.
    pub handoff: Option<HandoffRecord>,
}

/// One message of the feed, as stored (one line of JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Unique id: a hash of author, time and text.
    pub id: String,
    /// When it was said (RFC 3339, UTC, milliseconds).
    pub created_at: String,
    /// The AI behind the agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ai_source: String,
    /// The machine it was said on.
    #[serde(default)]
    pub machine_id: String,
    /// The agent who said it.
    #[serde(default)]
    pub agent_id: String,
    /// The peer that wrote it (short id).
    #[serde(default)]
    pub peer_id: String,
    /// The text.
    pub message: String,
    /// What it is for.
    pub message_type: Kind,
    /// The project it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_context: Option<String>,
    /// Agents mentioned (lowercase, without `@`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// Structured extra data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The handoff record of a handoff message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffRecord>,
}

/// Why a message could not be made or a filter not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The text is empty.
    #[error("the message is empty; say something")]
    Empty,
    /// The text is too long.
    #[error(
        "the message is {len} bytes, more than {MAX_TEXT_BYTES}; put the details in a file and name it"
    )]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not a message type.
    #[error(
        "unknown message type {0:?}; use one of chat, sync, alert, handoff, question, decision"
    )]
    BadKind(String),
    /// A name (agent, project, mention) that cannot be one.
    #[error("invalid {what} {name:?}: {why}")]
    BadName {
        /// Which name.
        what: &'static str,
        /// As given.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// `metadata` that is not a small JSON object.
    #[error("--meta must be a JSON object of at most {MAX_METADATA_BYTES} bytes: {0}")]
    BadMetadata(String),
    /// A time that is neither RFC 3339 nor a duration.
    #[error(
        "cannot read {0:?} as a time: give an RFC 3339 time (2026-12-06T10:00:00Z) or a duration back from now (10m, 2h, 1d)"
    )]
    BadTime(String),
}

impl Message {
    /// A new message said by `author` at `now_ms` (milliseconds since the epoch); `nonce`
    /// tells apart two messages of one author in the same millisecond.
    pub fn new(post: Post, author: &Author, now_ms: u64, nonce: u64) -> Result<Message, FeedError> {
        let text = post.text.trim().to_owned();
        if text.is_empty() {
            return Err(FeedError::Empty);
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(FeedError::TooLong { len: text.len() });
        }
        let mut mentions = Vec::new();
        for m in post
            .mentions
            .iter()
            .map(String::as_str)
            .chain(text_mentions(&text))
        {
            let m = name(m, "mention")?;
            if !mentions.contains(&m) {
                mentions.push(m);
            }
        }
        let project = post
            .project
            .as_deref()
            .map(|p| name(p, "project"))
            .transpose()?;
        if let Some(meta) = &post.metadata {
            let len = serde_json::to_vec(meta).map_or(usize::MAX, |v| v.len());
            if !meta.is_object() || len > MAX_METADATA_BYTES {
                return Err(FeedError::BadMetadata(format!(
                    "got {} bytes of {}",
                    len,
                    json_kind(meta)
                )));
            }
        }
        let kind = match (&post.handoff, post.kind) {
            (Some(_), _) => Kind::Handoff,
            (None, k) => k.unwrap_or(Kind::Chat),
        };
        let created_at = format_ms(now_ms);
        let mut h = blake3::Hasher::new();
        for part in [author.peer.as_str(), &author.agent, &created_at, &text] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update(&nonce.to_le_bytes());
        let id = h.finalize().to_hex()[..16].to_owned();
        Ok(Message {
            id,
            created_at,
            ai_source: author.ai.clone(),
            machine_id: author.machine.clone(),
            agent_id: author.agent.clone(),
            peer_id: author.peer.clone(),
            message: text,
            message_type: kind,
            project_context: project,
            mentions,
            metadata: post.metadata,
            handoff: post.handoff,
        })
    }

    /// The stored line, with its final newline.
    pub fn to_line(&self) -> String {
        // A struct of strings, vectors and JSON values always serializes.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// When it was said, in milliseconds since the epoch (`None`: an unreadable time).
    pub fn at_ms(&self) -> Option<u64> {
        parse_rfc3339_ms(&self.created_at)
    }

    /// Who said it, as the seed prints it: `claude/@milo (mini)`, parts left out when unknown.
    pub fn who(&self) -> String {
        let mut s = String::new();
        if !self.ai_source.is_empty() {
            s.push_str(&self.ai_source);
            s.push('/');
        }
        if self.agent_id.is_empty() {
            s.push_str("(no agent)");
        } else {
            s.push('@');
            s.push_str(&self.agent_id);
        }
        if !self.machine_id.is_empty() {
            s.push_str(" (");
            s.push_str(&self.machine_id);
            s.push(')');
        }
        s
    }

    /// True if the message mentions `agent` (case-insensitive, `@` optional).
    pub fn mentions_agent(&self, agent: &str) -> bool {
        let agent = agent.trim_start_matches('@').to_lowercase();
        self.mentions.contains(&agent)
    }
}

/// A feed file read back: its messages in the one order every peer shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feed {
    /// The messages, ordered by time then id, each id once.
    pub messages: Vec<Message>,
    /// Lines that are not feed messages (skipped).
    pub bad_lines: usize,
}

impl Feed {
    /// Parse a feed file. A last line without its newline that does not parse is a write in
    /// progress, not a bad line.
    pub fn parse(bytes: &[u8]) -> Feed {
        let mut by_id: BTreeMap<String, (u64, Message)> = BTreeMap::new();
        let mut bad_lines = 0;
        let complete = bytes.last().is_none_or(|b| *b == b'\n');
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let count = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let partial = i + 1 == count && !complete;
            match serde_json::from_slice::<Message>(line) {
                Ok(m) => match m.at_ms() {
                    Some(at) if !m.id.is_empty() => {
                        by_id.entry(m.id.clone()).or_insert((at, m));
                    }
                    _ => bad_lines += 1,
                },
                Err(_) if partial => {}
                Err(_) => bad_lines += 1,
            }
        }
        let mut messages: Vec<(u64, Message)> = by_id.into_values().collect();
        messages.sort_by(|(a, ma), (b, mb)| a.cmp(b).then_with(|| ma.id.cmp(&mb.id)));
        Feed {
            messages: messages.into_iter().map(|(_, m)| m).collect(),
            bad_lines,
        }
    }

    /// The messages that pass `filter`.
    pub fn select<'a>(&'a self, filter: &'a Filter) -> impl Iterator<Item = &'a Message> + 'a {
        self.messages.iter().filter(move |m| filter.matches(m))
    }
}

/// Which messages a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only messages said at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only messages mentioning this agent.
    pub mention: Option<String>,
    /// Only messages about this project.
    pub project: Option<String>,
    /// Only messages of this kind.
    pub kind: Option<Kind>,
}

impl Filter {
    /// True if `m` passes.
    pub fn matches(&self, m: &Message) -> bool {
        self.since_ms
            .is_none_or(|s| m.at_ms().is_some_and(|at| at >= s))
            && self.mention.as_deref().is_none_or(|a| m.mentions_agent(a))
            && self
                .project
                .as_deref()
                .is_none_or(|p| m.project_context.as_deref() == Some(p))
            && self.kind.is_none_or(|k| m.message_type == k)
    }
}

/// A handoff as `botsync handoffs` shows it: the open record and, once done, who closed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handoff {
    /// The id of the handoff's message.
    pub id: String,
    /// When it was handed over.
    pub created_at: String,
    /// Who handed it over (`claude/@priya (mini)`).
    pub from: String,
    /// The agent it is handed to.
    pub to: String,
    /// What is handed over.
    pub artifact: String,
    /// What the receiver needs to know.
    pub context: String,
    /// Who marked it done and when, if someone did.
    pub done: Option<HandoffDone>,
}

/// Who marked a handoff done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandoffDone {
    /// Who (`@milo (laptop)`).
    pub by: String,
    /// When.
    pub at: String,
}

/// The handoffs of a feed, oldest first; a `done` record closes the handoff it names.
pub fn handoffs(feed: &Feed) -> Vec<Handoff> {
    let mut out: Vec<Handoff> = Vec::new();
    for m in &feed.messages {
        match &m.handoff {
            Some(HandoffRecord::Open {
                to,
                artifact,
                context,
            }) => out.push(Handoff {
                id: m.id.clone(),
                created_at: m.created_at.clone(),
                from: m.who(),
                to: to.clone(),
                artifact: artifact.clone(),
                context: context.clone(),
                done: None,
            }),
            Some(HandoffRecord::Done { of }) => {
                if let Some(h) = out.iter_mut().find(|h| h.id == *of && h.done.is_none()) {
                    h.done = Some(HandoffDone {
                        by: m.who(),
                        at: m.created_at.clone(),
                    });
                }
            }
            None => {}
        }
    }
    out
}

/// A name (agent, project, mention) made canonical: without `@`, lowercase but for projects;
/// letters, digits and `-_.` only.
pub fn name(raw: &str, what: &'static str) -> Result<String, FeedError> {
    let n = raw.trim().trim_start_matches('@');
    let bad = |why| FeedError::BadName {
        what,
        name: raw.to_owned(),
        why,
    };
    if n.is_empty() {
        return Err(bad("it is empty"));
    }
    if n.len() > MAX_NAME_BYTES {
        return Err(bad("it is longer than 64 bytes"));
    }
    if !n
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad("use letters, digits and - _ . only"));
    }
    Ok(if what == "project" {
        n.to_owned()
    } else {
        n.to_lowercase()
    })
}

/// `ms` as RFC 3339 in UTC with milliseconds: `2026-12-06T10:00:00.123Z`.
pub fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A `--since` value: an RFC 3339 time, or a duration back from `now_ms` (`10m`, `2h`).
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64, FeedError> {
    if let Some(ms) = parse_rfc3339_ms(s) {
        return Ok(ms);
    }
    let d = humantime::parse_duration(s.trim()).map_err(|_| FeedError::BadTime(s.to_owned()))?;
    Ok(now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s.trim()).ok()?;
    u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// The `@name`s of a text; an `@` inside a word (an e-mail address) is not a mention.
fn text_mentions(text: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        if c == '@' && !prev.is_some_and(|p| p.is_alphanumeric()) {
            let rest = &text[i + 1..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_')))
                .unwrap_or(rest.len());
            if end > 0 && end <= MAX_NAME_BYTES {
                out.push(&rest[..end]);
            }
        }
        prev = Some(c);
    }
    out.into_iter()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn author(agent: &str, machine: &str) -> Author {
        Author {
            peer: "ABCD".into(),
            machine: machine.into(),
            agent: agent.into(),
            ai: "claude".into(),
        }
    }

    fn say(text: &str, at: u64) -> Message {
        Message::new(
            Post {
                text: text.into(),
                ..Post::default()
            },
            &author("marcus", "mini"),
            at,
            0,
        )
        .unwrap()
    }

    #[test]
    fn a_message_carries_the_seeds_fields_and_its_mentions() {
        let m = Message::new(
            Post {
                text: "Starting the refresh. Need @Rowan and @priya (mail me at a@b.com)".into(),
                mentions: vec!["@Milo".into()],
                project: Some("dj-waste".into()),
                metadata: Some(serde_json::json!({"step": 1})),
                ..Post::default()
            },
            &author("marcus", "mini"),
            1_765_000_000_123,
            0,
        )
        .unwrap();
        assert_eq!(m.mentions, ["milo", "rowan", "priya"]);
        assert_eq!(m.message_type, Kind::Chat);
        assert_eq!(m.created_at, "2025-12-06T05:46:40.123Z");
        let line: Value = serde_json::from_str(&m.to_line()).unwrap();
        for field in [
            "id",
            "created_at",
            "ai_source",
            "machine_id",
            "agent_id",
            "message",
            "message_type",
            "project_context",
            "mentions",
            "metadata",
        ] {
            assert!(line.get(field).is_some(), "{field} missing from {line}");
        }
        assert_eq!(m.who(), "claude/@marcus (mini)");
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let post = |text: &str| Post {
            text: text.into(),
            ..Post::default()
        };
        let a = author("x", "m");
        assert_eq!(Message::new(post("  "), &a, 0, 0), Err(FeedError::Empty));
        assert!(matches!(
            Message::new(post(&"x".repeat(MAX_TEXT_BYTES + 1)), &a, 0, 0),
            Err(FeedError::TooLong { .. })
        ));
        let mut p = post("hi");
        p.metadata = Some(serde_json::json!([1, 2]));
        assert!(matches!(
            Message::new(p, &a, 0, 0),
            Err(FeedError::BadMetadata(_))
        ));
        let mut p = post("hi");
        p.mentions = vec!["bad name".into()];
        assert!(matches!(
            Message::new(p, &a, 0, 0),
            Err(FeedError::BadName { .. })
        ));
        assert!("shout".parse::<Kind>().is_err());
        assert!(parse_since("yesterday-ish", 0).is_err());
        assert_eq!(parse_since("10m", 3_600_000), Ok(3_000_000));
    }

    #[test]
    fn foreign_and_partial_lines_are_skipped() {
        let mut bytes = say("one", 1_000).to_line().into_bytes();
        bytes.extend_from_slice(b"not json\n{\"id\":\"x\"}\n\n");
        bytes.extend_from_slice(say("two", 2_000).to_line().as_bytes());
        bytes.extend_from_slice(b"{\"id\":\"cut");
        let feed = Feed::parse(&bytes);
        assert_eq!(feed.messages.len(), 2);
        assert_eq!(feed.bad_lines, 2);
    }

    #[test]
    fn handoffs_open_and_close() {
        let open = Message::new(
            Post {
                text: "hero section to @milo".into(),
                handoff: Some(HandoffRecord::Open {
                    to: "milo".into(),
                    artifact: "hero.tsx".into(),
                    context: "needs mobile QA".into(),
                }),
                ..Post::default()
            },
            &author("priya", "mini"),
            1_000,
            0,
        )
        .unwrap();
        assert_eq!(open.message_type, Kind::Handoff);
        let done = Message::new(
            Post {
                text: "done".into(),
                handoff: Some(HandoffRecord::Done {
                    of: open.id.clone(),
                }),
                ..Post::default()
            },
            &author("milo", "laptop"),
            2_000,
            0,
        )
        .unwrap();
        let bytes = format!("{}{}", done.to_line(), open.to_line());
        let hs = handoffs(&Feed::parse(bytes.as_bytes()));
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].to, "milo");
        assert_eq!(hs[0].done.as_ref().unwrap().by, "claude/@milo (laptop)");
    }

    #[test]
    fn filters_select_by_time_mention_project_and_kind() {
        let a = say("hi @rowan", 1_000);
        let b = say("later", 5_000);
        let feed = Feed::parse(format!("{}{}", a.to_line(), b.to_line()).as_bytes());
        let since = Filter {
            since_ms: Some(2_000),
            ..Filter::default()
        };
        assert_eq!(feed.select(&since).count(), 1);
        let rowan = Filter {
            mention: Some("@Rowan".into()),
            ..Filter::default()
        };
        assert_eq!(feed.select(&rowan).next().unwrap().id, a.id);
        let alerts = Filter {
            kind: Some(Kind::Alert),
            ..Filter::default()
        };
        assert_eq!(feed.select(&alerts).count(), 0);
    }

    proptest! {
        /// However a union merge interleaved the lines, every peer shows one order.
        #[test]
        fn every_line_order_reads_as_one_order(
            times in proptest::collection::vec(0u64..5, 1..12),
            seed in any::<u64>(),
        ) {
            let msgs: Vec<Message> = times
                .iter()
                .enumerate()
                .map(|(i, t)| say(&format!("m{i}"), *t))
                .collect();
            let text: String = msgs.iter().map(Message::to_line).collect();
            let mut shuffled = msgs.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            // A duplicated line (both sides appended it before a merge) shows once.
            shuffled.push(msgs[0].clone());
            let other: String = shuffled.iter().map(Message::to_line).collect();
            prop_assert_eq!(Feed::parse(text.as_bytes()), Feed::parse(other.as_bytes()));
        }
    }
}
