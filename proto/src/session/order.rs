//! The order of an initiator's control messages, as the responder checks it: a pure state
//! machine with no I/O, the first piece of the sans-IO session core (issue 10). The responder's
//! driver (`server.rs`) asks [`ResponderOrder::accept`] about every control message after
//! `Hello` and before it acts on it; a refusal is sent as `Error(UnexpectedMessage)` and closes
//! the connection with `protocol-error` (docs/PROTOCOL.md, "A sync session"). Because the rules
//! live here, the message order is tested and fuzzed without sockets (`fuzz_targets/
//! session_order.rs`).
//!
//! The rules:
//! - the first message is the initiator's `Summary`, once; nothing else comes before it;
//! - then, in any order: `GetNodes`, `GetEntries`, `Offer` batches, the mesh messages (with their
//!   feature), `GetState` once (with STATE), then the pushed `State` batches up to `last`;
//! - an `Offer` needs a mode that sends (Sync, Push, or DryRun with `dry_run` set) and, unless
//!   `direct-offer` was negotiated, may name only paths whose entries the initiator asked for
//!   in this session;
//! - `Goodbye` ends the session; after it, or after any refusal, nothing is accepted.

use std::collections::HashSet;

use botsync_engine::RelPath;

use super::mesh;
use crate::limits::MAX_STATE_RECORDS_PER_SESSION;
use crate::messages::{Features, Message, SessionMode};

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `Hello` was exchanged; the initiator's `Summary` is next.
    AwaitingSummary,
    /// Summaries exchanged: the initiator asks, offers and pushes state.
    Requests,
    /// `Goodbye` arrived, or a message was refused: nothing more is accepted.
    Done,
}

/// What an accepted message asks the driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Answer the initiator's `Summary` (the session's mode is now set).
    Summary(SessionMode),
    /// Answer or take a mesh message (`GetMeshConfig`, `MeshConfig`, `GetParity`).
    Mesh,
    /// Answer `GetNodes`.
    Nodes,
    /// Answer `GetEntries`.
    Entries,
    /// Keep an `Offer` batch; take the whole offer if `last`.
    Offer {
        /// The offer's last batch.
        last: bool,
    },
    /// Answer `GetState`.
    StateAsked,
    /// Take pushed `State` records; confirm if `last`.
    StatePushed {
        /// The push's last batch.
        last: bool,
    },
    /// End the session.
    Goodbye,
}

/// The responder's view of the message order of one session.
#[derive(Debug, Clone)]
pub struct ResponderOrder {
    features: Features,
    phase: Phase,
    mode: Option<SessionMode>,
    /// Paths the initiator asked entries for: the only paths it may offer.
    asked: HashSet<RelPath>,
    state_asked: bool,
    state_pushed: bool,
    state_records: usize,
}

impl ResponderOrder {
    /// A session whose `Hello`s negotiated `features`.
    pub fn new(features: Features) -> ResponderOrder {
        ResponderOrder {
            features,
            phase: Phase::AwaitingSummary,
            mode: None,
            asked: HashSet::new(),
            state_asked: false,
            state_pushed: false,
            state_records: 0,
        }
    }

    /// Where the session stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The initiator's mode, once its `Summary` was accepted.
    pub fn mode(&self) -> Option<SessionMode> {
        self.mode
    }

    /// Check `m` against the order; on success the session moves on and the driver does what
    /// the [`Step`] says. On refusal (one line: why) the session is over.
    pub fn accept(&mut self, m: &Message) -> Result<Step, String> {
        let verdict = self.judge(m);
        match &verdict {
            Ok(Step::Goodbye) | Err(_) => self.phase = Phase::Done,
            Ok(_) => {}
        }
        verdict
    }

    fn judge(&mut self, m: &Message) -> Result<Step, String> {
        let mode = match (self.phase, self.mode) {
            (Phase::Done, _) => return Err(format!("{} after the session ended", m.kind())),
            (Phase::AwaitingSummary, _) => {
                return match m {
                    Message::Summary { mode, .. } => {
                        self.mode = Some(*mode);
                        self.phase = Phase::Requests;
                        Ok(Step::Summary(*mode))
                    }
                    Message::Goodbye => Ok(Step::Goodbye),
                    other => Err(format!("{} before the summaries", other.kind())),
                };
            }
            (Phase::Requests, Some(mode)) => mode,
            (Phase::Requests, None) => return Err("no mode after the summaries".to_owned()),
        };
        match m {
            Message::GetMeshConfig | Message::MeshConfig { .. } | Message::GetParity => {
                match mesh::refusal(m, mode, self.features) {
                    Some(why) => Err(why),
                    None => Ok(Step::Mesh),
                }
            }
            Message::GetNodes { .. } => Ok(Step::Nodes),
            Message::GetBuckets { .. } if self.features.contains(Features::BUCKETS) => {
                Ok(Step::Nodes)
            }
            Message::GetEntries { paths } => {
                self.asked.extend(paths.iter().cloned());
                Ok(Step::Entries)
            }
            Message::Offer {
                entries,
                dry_run,
                last,
                ..
            } => {
                match mode {
                    SessionMode::Sync | SessionMode::Push => {}
                    SessionMode::DryRun if *dry_run => {}
                    m => return Err(format!("offer in a session whose summary said {m:?}")),
                }
                let direct = self.features.contains(Features::DIRECT_OFFER);
                if let Some(w) = entries
                    .iter()
                    .find(|w| !direct && !self.asked.contains(&w.file.path))
                {
                    return Err(format!(
                        "offer of {}, whose entries were never asked for in this session",
                        w.file.path
                    ));
                }
                Ok(Step::Offer { last: *last })
            }
            Message::GetState { .. }
                if !self.state_asked && self.features.contains(Features::STATE) =>
            {
                self.state_asked = true;
                Ok(Step::StateAsked)
            }
            Message::State { records, last }
                if self.state_asked
                    && !self.state_pushed
                    && matches!(mode, SessionMode::Sync | SessionMode::Push) =>
            {
                self.state_records = self.state_records.saturating_add(records.len());
                if self.state_records > MAX_STATE_RECORDS_PER_SESSION {
                    return Err(format!(
                        "more than {MAX_STATE_RECORDS_PER_SESSION} state records in one session"
                    ));
                }
                self.state_pushed = *last;
                Ok(Step::StatePushed { last: *last })
            }
            Message::Goodbye => Ok(Step::Goodbye),
            other => Err(format!("unexpected {} here", other.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use botsync_engine::Hash;

    use super::*;

    fn summary(mode: SessionMode) -> Message {
        Message::Summary {
            root: Hash::ZERO,
            files: 0,
            mode,
            skipped: 0,
        }
    }

    fn ask(path: &str) -> Message {
        Message::GetEntries {
            paths: vec![RelPath::new(path).unwrap()],
        }
    }

    #[test]
    fn a_pull_asks_then_says_goodbye() {
        let mut o = ResponderOrder::new(Features::SUPPORTED);
        assert_eq!(
            o.accept(&summary(SessionMode::Pull)),
            Ok(Step::Summary(SessionMode::Pull))
        );
        assert_eq!(
            o.accept(&Message::GetNodes { paths: vec![] }),
            Ok(Step::Nodes)
        );
        assert_eq!(o.accept(&ask("a.md")), Ok(Step::Entries));
        assert_eq!(o.accept(&Message::Goodbye), Ok(Step::Goodbye));
        assert_eq!(o.phase(), Phase::Done);
        assert!(
            o.accept(&ask("a.md"))
                .unwrap_err()
                .contains("after the session ended")
        );
    }

    #[test]
    fn buckets_are_asked_only_with_the_feature() {
        let get = Message::GetBuckets { dirs: vec![] };
        let mut o = ResponderOrder::new(Features::SUPPORTED);
        o.accept(&summary(SessionMode::Pull)).unwrap();
        assert_eq!(o.accept(&get), Ok(Step::Nodes));
        let without = Features::from_bits(Features::SUPPORTED.bits() & !Features::BUCKETS.bits());
        let mut o = ResponderOrder::new(without);
        o.accept(&summary(SessionMode::Pull)).unwrap();
        assert!(o.accept(&get).is_err());
        assert_eq!(o.phase(), Phase::Done);
    }

    #[test]
    fn nothing_comes_before_the_summary_and_it_comes_once() {
        let mut o = ResponderOrder::new(Features::SUPPORTED);
        assert!(
            o.accept(&ask("a.md"))
                .unwrap_err()
                .contains("before the summaries")
        );
        let mut o = ResponderOrder::new(Features::SUPPORTED);
        o.accept(&summary(SessionMode::Sync)).unwrap();
        assert!(
            o.accept(&summary(SessionMode::Sync))
                .unwrap_err()
                .contains("unexpected summary")
        );
    }

    #[test]
    fn an_offer_needs_a_sending_mode_and_asked_paths() {
        let offer = |dry_run| Message::Offer {
            entries: vec![],
            dry_run,
            last: true,
            force: false,
        };
        let mut pull = ResponderOrder::new(Features::SUPPORTED);
        pull.accept(&summary(SessionMode::Pull)).unwrap();
        assert!(pull.accept(&offer(false)).unwrap_err().contains("Pull"));
        let mut dry = ResponderOrder::new(Features::SUPPORTED);
        dry.accept(&summary(SessionMode::DryRun)).unwrap();
        assert_eq!(dry.accept(&offer(true)), Ok(Step::Offer { last: true }));
    }

    #[test]
    fn state_is_asked_once_and_pushed_only_with_the_feature_and_a_sending_mode() {
        let get = Message::GetState {
            patterns: vec![],
            digest: Hash::ZERO,
        };
        let push = Message::State {
            records: vec![],
            last: true,
        };
        let mut none = ResponderOrder::new(Features::NONE);
        none.accept(&summary(SessionMode::Sync)).unwrap();
        assert!(none.accept(&get).is_err());
        let mut o = ResponderOrder::new(Features::SUPPORTED);
        o.accept(&summary(SessionMode::Push)).unwrap();
        assert!(o.accept(&push).is_err(), "state pushed before it was asked");
        let asked = || {
            let mut o = ResponderOrder::new(Features::SUPPORTED);
            o.accept(&summary(SessionMode::Push)).unwrap();
            assert_eq!(o.accept(&get), Ok(Step::StateAsked));
            o
        };
        assert!(asked().accept(&get).is_err(), "asked twice");
        let mut o = asked();
        assert_eq!(o.accept(&push), Ok(Step::StatePushed { last: true }));
        assert!(o.accept(&push).is_err(), "pushed after the last batch");
        // A refusal ends the session: nothing is accepted after it.
        assert_eq!(o.phase(), Phase::Done);
        assert!(o.accept(&Message::Goodbye).is_err());
    }
}
