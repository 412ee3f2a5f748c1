//! Entry exchange: the initiator's `GetEntries` and the peer's answers ([`EntriesAsked`]), entry
//! batches as they are sent (`outgoing`), and completing entries whose chunk list was elided
//! by walking the peer's chunk tree (only the nodes we do not already have).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use botsync_engine::chunktree::{ChunkTree, Rebuild};
use botsync_engine::{FileEntry, Hash, RelPath};

use super::work::Io;
use super::{SessionError, blocking, within};
use crate::budget::Phase;
use crate::frame::{FrameError, read_frame, write_frame};
use crate::limits::{
    MAX_ENTRIES_PER_BATCH, MAX_INLINE_CHUNKS, MAX_PATHS_PER_REQUEST, MAX_TREE_NODES_PER_REQUEST,
};
use crate::messages::{ChunkListing, Message, TreeAddr, WireEntry, flagged_batches};
use crate::replica::Replica;

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

/// Turn wire entries into full entries, fetching the chunk-tree nodes of elided ones over
/// `conn` (the machines refuse elided lists without CHUNK_TREE before they ask for this). Each
/// `GetTreeNodes` must be answered within `deadline`.
pub(crate) async fn complete<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    wire: Vec<WireEntry>,
    deadline: Duration,
) -> Result<Vec<FileEntry>, SessionError> {
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

/// Queue `entries` as wire batches built by `make` (the last with `last = true`), bounded by
/// count and by exact encoded size; the chunk trees of lists elided from them are advertised
/// first, so the peer may ask for their nodes as soon as it reads the batch.
pub(crate) fn outgoing(
    out: &mut VecDeque<Io>,
    entries: Vec<FileEntry>,
    make: impl Fn(Vec<WireEntry>, bool) -> Message,
) -> Result<(), SessionError> {
    let wire: Vec<WireEntry> = entries
        .into_iter()
        .map(|e| {
            if e.chunks.len() > MAX_INLINE_CHUNKS {
                out.push_back(Io::Advertise(e.content, e.chunks.clone()));
            }
            WireEntry::new(e, MAX_INLINE_CHUNKS)
        })
        .collect();
    let batches = flagged_batches(wire, MAX_ENTRIES_PER_BATCH, make).map_err(FrameError::from)?;
    out.extend(batches.into_iter().map(Io::Send));
    Ok(())
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
