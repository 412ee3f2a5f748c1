//! Entry exchange: asking for and answering `GetEntries`, and completing entries whose chunk
//! list was elided by walking the peer's chunk tree (only the nodes we do not already have).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use botsync_engine::authority::check_claims;
use botsync_engine::chunktree::{ChunkTree, Rebuild};
use botsync_engine::plan::{Action, ItemReport, Outcome};
use botsync_engine::{FileEntry, Hash, PeerId, RelPath};
use tracing::warn;

use super::{Advertised, Control, SessionError, blocking, within};
use crate::budget::Phase;
use crate::codec::CodecError;
use crate::frame::{FrameError, read_frame, write_frame};
use crate::limits::{
    MAX_ENTRIES_PER_BATCH, MAX_INLINE_CHUNKS, MAX_PATHS_PER_REQUEST, MAX_TREE_NODES_PER_REQUEST,
};
use crate::messages::{ChunkListing, Message, TreeAddr, WireEntry, flagged_batches};
use crate::replica::Replica;

/// Ask the peer for its entries of `paths` (pipelined: one round trip) and complete elided
/// chunk lists.
pub(crate) async fn request<R: Replica + ?Sized>(
    ctl: &mut Control,
    conn: &quinn::Connection,
    replica: &Arc<R>,
    paths: &[RelPath],
    chunk_tree: bool,
) -> Result<Vec<FileEntry>, SessionError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    ctl.counters.round_trips += 1;
    // Pipelined batches, replies read while sending (see `Control::exchange`).
    let (mut phase, requests) = EntriesAsked::new(paths);
    ctl.exchange(&requests, |reply| {
        phase.accept(reply).map_err(SessionError::Protocol)
    })
    .await?;
    let deadline = ctl.deadlines.chunk_batch;
    complete(conn, replica, phase.finish(), chunk_tree, deadline).await
}

/// The entries exchange of the initiator as a pure state machine: the `GetEntries` requests for
/// some paths, then the peer's `Entries` batches, each request answered up to a batch marked
/// `last`. An entry for a path that was not asked for, or a second entry for one path, is a
/// protocol error: a responder answers what it was asked, nothing else.
#[derive(Debug)]
pub struct EntriesAsked {
    /// Asked paths not answered yet.
    open: HashSet<RelPath>,
    /// Requests whose last batch has not come yet.
    requests_left: usize,
    received: Vec<WireEntry>,
}

impl EntriesAsked {
    /// The state for asking `paths` (one or more), and the requests to send.
    pub fn new(paths: &[RelPath]) -> (EntriesAsked, Vec<Message>) {
        let requests: Vec<Message> = paths
            .chunks(MAX_PATHS_PER_REQUEST)
            .map(|b| Message::GetEntries { paths: b.to_vec() })
            .collect();
        let phase = EntriesAsked {
            open: paths.iter().cloned().collect(),
            requests_left: requests.len(),
            received: Vec::new(),
        };
        (phase, requests)
    }

    /// Take one reply; true once every request has had its last batch.
    pub fn accept(&mut self, reply: Message) -> Result<bool, String> {
        let Message::Entries { entries, last } = reply else {
            return Err(format!("expected entries, got {}", reply.kind()));
        };
        if self.requests_left == 0 {
            return Err("entries after the last batch of every request".into());
        }
        for entry in entries {
            if !self.open.remove(&entry.file.path) {
                return Err(format!(
                    "an entry for {}, which was not asked for or was already answered",
                    entry.file.path
                ));
            }
            self.received.push(entry);
        }
        if last {
            self.requests_left -= 1;
        }
        Ok(self.requests_left == 0)
    }

    /// The entries received (the peer has none for the paths it did not answer).
    pub fn finish(self) -> Vec<WireEntry> {
        self.received
    }
}

/// Turn wire entries into full entries, fetching the chunk-tree nodes of elided ones. An elided
/// list without the CHUNK_TREE feature (`chunk_tree` false) is `bad-message`, before any request.
/// Each `GetTreeNodes` must be answered within `deadline`.
pub(crate) async fn complete<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    wire: Vec<WireEntry>,
    chunk_tree: bool,
    deadline: Duration,
) -> Result<Vec<FileEntry>, SessionError> {
    if let Some(w) = wire
        .iter()
        .find(|w| !chunk_tree && matches!(w.listing, ChunkListing::Elided { .. }))
    {
        return Err(FrameError::from(CodecError::Malformed(format!(
            "entry {} has an elided chunk list, but CHUNK_TREE was not negotiated",
            w.file.path
        )))
        .into());
    }
    let mut out = Vec::with_capacity(wire.len());
    for w in wire {
        match w.listing {
            ChunkListing::Inline => out.push(w.file.into()),
            ChunkListing::Elided { chunk_count } => {
                let mut entry = FileEntry::from(w.file);
                let path = entry.path.clone();
                let ours = blocking(replica, move |r| r.entries(&[path])).await?;
                let local = ChunkTree::new(
                    ours.into_iter()
                        .next()
                        .map(|e| e.chunks)
                        .unwrap_or_default(),
                );
                let walk = Rebuild::new(entry.content, u64::from(chunk_count), local)
                    .map_err(|e| SessionError::Protocol(format!("entry {}: {e}", entry.path)))?;
                entry.chunks = rebuild(conn, entry.content, walk, deadline).await?;
                out.push(entry);
            }
        }
    }
    Ok(out)
}

/// Refuse the incoming versions whose claims about us we cannot believe
/// ([`check_claims`]: our own counter far ahead of ours, an author the version does not count).
/// Returns the accepted entries, and for each refused one a report with action `Nothing` and
/// outcome `Failed`, so that the refusal is seen on both sides.
pub(crate) async fn screen<R: Replica + ?Sized>(
    replica: &Arc<R>,
    sender: PeerId,
    incoming: Vec<FileEntry>,
) -> Result<(Vec<FileEntry>, Vec<ItemReport>), SessionError> {
    if incoming.is_empty() {
        return Ok((incoming, Vec::new()));
    }
    let paths: Vec<RelPath> = incoming.iter().map(|e| e.path.clone()).collect();
    let (receiver, ours) =
        blocking(replica, move |r| Ok((r.local_peer(), r.entries(&paths)?))).await?;
    let ours = by_path(ours);
    let mut accepted = Vec::with_capacity(incoming.len());
    let mut refused = Vec::new();
    for remote in incoming {
        match check_claims(ours.get(&remote.path), &remote, receiver) {
            Ok(()) => accepted.push(remote),
            Err(refusal) => {
                warn!(peer = %sender, %refusal, "version refused");
                refused.push(ItemReport {
                    path: remote.path.clone(),
                    action: Action::Nothing,
                    outcome: Outcome::Failed {
                        reason: refusal.to_string(),
                    },
                    size: remote.size,
                    bytes_fetched: 0,
                    conflict_copy: None,
                    changed_by: Some(remote.changed_by.clone()),
                    mtime_ns: remote.mtime_ns,
                });
            }
        }
    }
    Ok((accepted, refused))
}

/// Drive the engine's [`Rebuild`] of the chunk list of `content`: ask the peer for the nodes it
/// wants, a request stream per batch, until the list is whole.
async fn rebuild(
    conn: &quinn::Connection,
    content: Hash,
    mut walk: Rebuild,
    deadline: Duration,
) -> Result<Vec<botsync_engine::ChunkRef>, SessionError> {
    loop {
        if let Some(list) = walk.finish() {
            return Ok(list);
        }
        let wanted: Vec<TreeAddr> = walk.wanted().into_iter().map(TreeAddr::from).collect();
        if wanted.is_empty() {
            return Err(SessionError::Protocol(format!(
                "the chunk tree of {content} does not add up to its chunk count"
            )));
        }
        for batch in wanted.chunks(MAX_TREE_NODES_PER_REQUEST) {
            let (mut send, mut recv) = conn.open_bi().await?;
            let ask = Message::GetTreeNodes {
                content,
                nodes: batch.to_vec(),
            };
            let reply = async {
                write_frame(&mut send, &ask).await?;
                let _ = send.finish();
                read_frame(&mut recv).await
            };
            match within(Phase::ChunkBatch, deadline, reply).await?? {
                Some(Message::TreeNodes { nodes, .. }) => {
                    for node in nodes {
                        let (addr, children) =
                            node.into_children().map_err(SessionError::Protocol)?;
                        walk.accept(addr, children)
                            .map_err(|e| SessionError::Protocol(e.to_string()))?;
                    }
                }
                Some(Message::Error { code, message }) => {
                    return Err(SessionError::Remote { code, message });
                }
                _ => return Err(SessionError::Protocol("expected tree nodes".into())),
            }
        }
    }
}

/// Answer a `GetEntries`: our entries of `paths` in batches, chunk lists of large files elided
/// and remembered for the tree-node service.
pub(crate) async fn answer<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
    advertised: &Advertised,
    paths: Vec<RelPath>,
) -> Result<(), SessionError> {
    let entries = blocking(replica, move |r| r.entries(&paths)).await?;
    send_batches(ctl, advertised, entries, |entries, last| Message::Entries {
        entries,
        last,
    })
    .await
}

/// Send entries as wire batches built by `make`; the last batch has `last = true`.
pub(crate) async fn send_batches(
    ctl: &mut Control,
    advertised: &Advertised,
    entries: Vec<FileEntry>,
    make: impl Fn(Vec<WireEntry>, bool) -> Message,
) -> Result<(), SessionError> {
    let wire: Vec<WireEntry> = entries
        .into_iter()
        .map(|e| {
            if e.chunks.len() > MAX_INLINE_CHUNKS {
                advertised.add(e.content, &e.chunks);
            }
            WireEntry::new(e, MAX_INLINE_CHUNKS)
        })
        .collect();
    // Batches bounded by count and by exact encoded size.
    let batches = flagged_batches(wire, MAX_ENTRIES_PER_BATCH, make).map_err(FrameError::from)?;
    for batch in &batches {
        ctl.send(batch).await?;
    }
    Ok(())
}

/// Entries by path, for planning.
pub(crate) fn by_path(entries: Vec<FileEntry>) -> HashMap<RelPath, FileEntry> {
    entries.into_iter().map(|e| (e.path.clone(), e)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::testing::file_entry;

    fn entry(path: &str) -> WireEntry {
        WireEntry::new(file_entry(path, path.as_bytes(), false), MAX_INLINE_CHUNKS)
    }

    fn paths(n: usize) -> Vec<RelPath> {
        (0..n)
            .map(|i| RelPath::new(&format!("memory/n{i:04}.md")).unwrap())
            .collect()
    }

    #[test]
    fn every_request_is_answered_up_to_its_last_batch() {
        let asked = paths(1500);
        let (mut phase, requests) = EntriesAsked::new(&asked);
        assert_eq!(requests.len(), 2, "1024 paths a request");
        let first: Vec<WireEntry> = asked[..1024].iter().map(|p| entry(p.as_str())).collect();
        let reply = |entries: Vec<WireEntry>, last| Message::Entries { entries, last };
        assert!(!phase.accept(reply(first[..500].to_vec(), false)).unwrap());
        assert!(!phase.accept(reply(first[500..].to_vec(), true)).unwrap());
        // The peer has only some of the second request's paths: it says so by leaving them out.
        let second = vec![entry(asked[1400].as_str())];
        assert!(phase.accept(reply(second, true)).unwrap());
        assert_eq!(phase.finish().len(), 1025);
    }

    #[test]
    fn entries_never_asked_for_or_sent_twice_are_refused() {
        let asked = paths(3);
        let reply = |entries: Vec<WireEntry>| Message::Entries {
            entries,
            last: true,
        };
        let (mut phase, _) = EntriesAsked::new(&asked);
        let err = phase.accept(reply(vec![entry("USER.md")])).unwrap_err();
        assert!(err.contains("USER.md"), "{err}");
        let (mut phase, _) = EntriesAsked::new(&asked);
        let twice = vec![entry(asked[0].as_str()), entry(asked[0].as_str())];
        assert!(phase.accept(reply(twice)).is_err());
        let (mut phase, _) = EntriesAsked::new(&asked);
        assert!(phase.accept(reply(vec![])).unwrap());
        assert!(phase.accept(reply(vec![])).is_err(), "after the last batch");
        let (mut phase, _) = EntriesAsked::new(&asked);
        assert!(phase.accept(Message::Goodbye).is_err());
    }
}
