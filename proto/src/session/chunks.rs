//! Fetching chunks from the peer: batches of ids over parallel request streams, every chunk
//! verified against its id and kept by the replica before anything is applied, except the
//! chunks of single-chunk files, which the group holds in memory for its apply and keeps only if
//! the fetch fails (so a lost link re-sends nothing verified; a killed process re-fetches at
//! most two groups of small files). A chunk the peer cannot provide (its file changed while
//! being sent) is reported missing, not fatal.
//! With the `delta` feature a batch whose chunks have delta bases (module `session::delta`) is asked
//! for with `GetChunksAgainst`, naming only bases this side could read, which it keeps in memory
//! to decode the answers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use botsync_engine::plan::{Action, ItemReport, Outcome, PlanItem};
use botsync_engine::{ChunkRef, Hash, PeerId};
use tokio::task::JoinSet;

use super::{Counters, Progress, ProgressEvent, SessionError, blocking, within};
use crate::budget::Phase;
use crate::codec::CodecError;
use crate::frame::{FrameError, read_frame, write_frame};
use crate::limits::MAX_IDS_PER_REQUEST;
use crate::messages::{ChunkWant, Compression, ErrorCode, Message};
use crate::replica::{HeldChunks, Replica};

/// Target raw bytes per request batch: large enough to fill the pipe, small enough to keep
/// memory bounded (each stream holds at most one batch).
const BATCH_BYTES: u64 = 1024 * 1024;

/// What a fetch brought.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub counters: Counters,
    /// Chunks the peer could not provide.
    pub missing: HashSet<Hash>,
    /// Verified chunks held for the apply instead of kept (those the fetch was told to hold).
    pub held: HeldChunks,
}

/// How to fetch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fetch {
    /// Parallel request streams.
    pub streams: usize,
    /// True if the ZSTD feature was negotiated: without it a zstd payload is `bad-message`.
    pub zstd: bool,
    /// True if the DELTA feature was negotiated (with ZSTD): chunks may be asked for against
    /// bases.
    pub delta: bool,
    /// How long one batch's whole reply may take to arrive.
    pub deadline: Duration,
}

/// Fetch `needed` from the peer as `how` says, each chunk against its base in `bases` (if any).
/// Chunks in `hold` are held in memory (`Fetched::held`) instead of kept.
#[allow(clippy::too_many_arguments)] // one fetch's inputs, passed down once
async fn fetch<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    needed: Vec<ChunkRef>,
    bases: HashMap<Hash, ChunkRef>,
    hold: Arc<HashSet<Hash>>,
    how: Fetch,
    progress: Arc<dyn Progress>,
) -> Result<Fetched, SessionError> {
    let queue: Arc<Mutex<VecDeque<Vec<ChunkRef>>>> = Arc::new(Mutex::new(batches(needed).into()));
    let bases = Arc::new(bases);
    let mut tasks = JoinSet::new();
    for _ in 0..how.streams.max(1) {
        let (conn, replica, queue, progress, bases, hold) = (
            conn.clone(),
            Arc::clone(replica),
            Arc::clone(&queue),
            Arc::clone(&progress),
            Arc::clone(&bases),
            Arc::clone(&hold),
        );
        tasks.spawn(async move {
            let mut got = Fetched::default();
            loop {
                let batch = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(batch) = batch else { break };
                let one = fetch_batch(
                    &conn,
                    &replica,
                    batch,
                    &bases,
                    &hold,
                    how,
                    &mut got,
                    progress.as_ref(),
                );
                if let Err(e) = within(Phase::ChunkBatch, how.deadline, one)
                    .await
                    .and_then(|r| r)
                {
                    return (got, Err(e));
                }
            }
            (got, Ok(()))
        });
    }
    let mut total = Fetched::default();
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        let result = match joined {
            Ok((got, result)) => {
                total.add(got);
                result
            }
            Err(e) => Err(SessionError::Task(e.to_string())),
        };
        if let Err(e) = result {
            // The other streams finish the batch they are reading (or fail on the same dead
            // connection) and keep what they verified; no new batch starts.
            if let Ok(mut q) = queue.lock() {
                q.clear();
            }
            failed.get_or_insert(e);
        }
    }
    match failed {
        // Never hold the disk full with a cache: nothing held is kept (and `fetch_and_apply`
        // releases what was, once nothing of the session is fetching any more).
        Some(e) if is_disk_full(&e) => Err(e),
        Some(e) => {
            // The session is lost before its apply: keep what was held after all, so the
            // next one does not fetch it again (a link that died is not a reason to re-send).
            let held: Vec<(Hash, Vec<u8>)> = total.held.into_iter().collect();
            if let Err(k) = keep(replica, held).await {
                tracing::warn!(error = %k, "could not keep the chunks held for the apply");
            }
            Err(e)
        }
        None => Ok(total),
    }
}

/// Bytes of new files fetched before they are applied. One group is applied while the next is
/// fetched, so what a sync holds in the chunk store on top of the files it writes is at most two
/// groups: the disk a sync needs is its incoming data plus twice this (or plus its two largest
/// files, when those are larger).
pub(crate) const APPLY_GROUP_BYTES: u64 = 32 * 1024 * 1024;

/// Fetch what `items` need and apply them, in groups of about [`APPLY_GROUP_BYTES`] of new
/// files, so staged chunks are released group by group instead of all being held until the end
/// (a receiver once needed twice the incoming data free); the next group is fetched while one
/// is applied. Items that still find a chunk missing
/// when applied (a chunk-store file found corrupt and dropped, a local copy that changed since
/// the plan) get one more round in the same session: their chunks are fetched again and they
/// are applied again, so one sync repairs every chunk it lacks instead of one per run. What is
/// still missing after that round is genuinely gone from the peer (its file changed while being
/// sent).
pub(crate) async fn fetch_and_apply<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    peer: PeerId,
    items: Vec<PlanItem>,
    how: Fetch,
    progress: Arc<dyn Progress>,
) -> Result<(Vec<ItemReport>, Fetched), SessionError> {
    let planned = items.clone();
    let needed = blocking(replica, move |r| r.chunks_needed(&planned)).await?;
    progress.event(ProgressEvent::Planned {
        files: items.iter().filter(|i| i.action.writes_file()).count() as u64,
        bytes: needed.iter().map(|c| u64::from(c.len)).sum(),
    });
    let mut groups = apply_groups(items).into_iter();
    let Some(first) = groups.next() else {
        return Ok((Vec::new(), Fetched::default()));
    };
    match fetch_and_apply_groups(conn, replica, peer, first, groups, how, &progress).await {
        Err(e) if is_disk_full(&e) => {
            // Never hold the disk full with a cache. Released only now that neither the apply
            // nor the next group's fetch runs: streams still reading when one hit the full disk
            // (and a repair round of the group being applied) keep chunks after `put_chunk`
            // itself released the staged ones.
            let released = blocking(replica, |r| {
                r.release_kept_chunks();
                Ok(())
            })
            .await;
            if let Err(k) = released {
                tracing::warn!(error = %k, "could not release the chunks kept for the apply");
            }
            Err(e)
        }
        other => other,
    }
}

/// The groups of [`fetch_and_apply`], from the first: each applied while the next is fetched.
async fn fetch_and_apply_groups<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    peer: PeerId,
    first: Vec<PlanItem>,
    mut groups: impl Iterator<Item = Vec<PlanItem>>,
    how: Fetch,
    progress: &Arc<dyn Progress>,
) -> Result<(Vec<ItemReport>, Fetched), SessionError> {
    let mut reports = Vec::new();
    let mut fetched = Fetched::default();
    let mut current = prefetch(conn, replica, first, how, progress).await?;
    loop {
        // The next group is fetched while this one is applied: the apply runs on a blocking
        // thread, the fetch on the runtime (the peer reading and compressing, the network,
        // decompressing and verifying here), so the two overlap instead of taking turns.
        let (done, next) = match groups.next() {
            Some(group) => {
                let (done, next) = tokio::join!(
                    finish(conn, replica, peer, current, how, progress),
                    prefetch(conn, replica, group, how, progress),
                );
                (done?, Some(next?))
            }
            None => (
                finish(conn, replica, peer, current, how, progress).await?,
                None,
            ),
        };
        reports.extend(done.0);
        fetched.add(done.1);
        match next {
            Some(n) => current = n,
            None => return Ok((reports, fetched)),
        }
    }
}

/// Bytes of single-chunk files a group holds in memory between its fetch and its apply
/// instead of keeping them in the chunk store: keeping cost each such file a create, a rename
/// and an unlink more on the receiver (issue 13; the receiving daemon of a 20,000-file push
/// spent 20 % less CPU without them). A fetch that fails keeps what it held. Two groups are in
/// memory at once (one applied, the next fetched), so a session holds at most twice this.
pub(crate) const HELD_GROUP_BYTES: u64 = 4 * 1024 * 1024;

/// What a group holds: the chunks that are a whole file each of the files `items` take. Only a
/// plain take reads its chunks through the apply's source; a merge or a review copy reads the
/// peer's version from the chunk store, so a chunk any of those need is kept, not held.
fn single_chunks(items: &[PlanItem]) -> HashSet<Hash> {
    let taken = |i: &&PlanItem| matches!(i.action, Action::Take | Action::TakeConflict);
    let from_store: HashSet<Hash> = items
        .iter()
        .filter(|i| i.action.needs_content() && !taken(i))
        .flat_map(|i| i.remote.chunks.iter().map(|c| c.id))
        .collect();
    items
        .iter()
        .filter(taken)
        .filter_map(|i| match i.remote.chunks.as_slice() {
            [only] if !from_store.contains(&only.id) => Some(only.id),
            _ => None,
        })
        .collect()
}

/// Consecutive runs of items whose new files add up to at most [`APPLY_GROUP_BYTES`], with at
/// most [`HELD_GROUP_BYTES`] of single-chunk files (at least one item each), in order.
fn apply_groups(items: Vec<PlanItem>) -> Vec<Vec<PlanItem>> {
    let mut groups = Vec::new();
    let mut cur: Vec<PlanItem> = Vec::new();
    let (mut bytes, mut held) = (0u64, 0u64);
    for item in items {
        let size = if item.action.writes_file() {
            item.remote.size
        } else {
            0
        };
        let single = if item.remote.chunks.len() == 1 {
            size
        } else {
            0
        };
        if !cur.is_empty()
            && (bytes.saturating_add(size) > APPLY_GROUP_BYTES
                || held.saturating_add(single) > HELD_GROUP_BYTES)
        {
            groups.push(std::mem::take(&mut cur));
            (bytes, held) = (0, 0);
        }
        bytes = bytes.saturating_add(size);
        held = held.saturating_add(single);
        cur.push(item);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

/// A group whose chunks are fetched: its items, the chunks it holds in memory and what the
/// fetch brought.
struct Prefetched {
    items: Vec<PlanItem>,
    hold: Arc<HashSet<Hash>>,
    fetched: Fetched,
}

/// Fetch what one group lacks.
async fn prefetch<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    items: Vec<PlanItem>,
    how: Fetch,
    progress: &Arc<dyn Progress>,
) -> Result<Prefetched, SessionError> {
    let planned = items.clone();
    let needed = blocking(replica, move |r| r.chunks_needed(&planned)).await?;
    let bases = delta_bases(replica, &items, &needed, how).await?;
    let hold = Arc::new(single_chunks(&items));
    let fetched = fetch(
        conn,
        replica,
        needed,
        bases,
        Arc::clone(&hold),
        how,
        Arc::clone(progress),
    )
    .await?;
    Ok(Prefetched {
        items,
        hold,
        fetched,
    })
}

/// Apply a fetched group, with the repair round.
async fn finish<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    peer: PeerId,
    group: Prefetched,
    how: Fetch,
    progress: &Arc<dyn Progress>,
) -> Result<(Vec<ItemReport>, Fetched), SessionError> {
    let Prefetched {
        items,
        hold,
        mut fetched,
    } = group;
    let again = items.clone();
    let held = std::mem::take(&mut fetched.held);
    let mut reports = blocking(replica, move |r| r.apply(items, peer, held)).await?;
    let retry: Vec<(usize, PlanItem)> = reports
        .iter()
        .zip(again)
        .enumerate()
        .filter(|(_, (r, _))| r.outcome == Outcome::MissingChunks)
        .map(|(i, (_, item))| (i, item))
        .collect();
    if retry.is_empty() {
        return Ok((reports, fetched));
    }
    let (at, items): (Vec<usize>, Vec<PlanItem>) = retry.into_iter().unzip();
    let planned = items.clone();
    let needed = blocking(replica, move |r| r.chunks_needed(&planned)).await?;
    tracing::info!(
        files = items.len(),
        chunks = needed.len(),
        "chunks missing at apply (corrupt or changed locally): fetching them again"
    );
    // The repair round asks for whole chunks: it runs when something local was not as planned.
    let mut more = fetch(
        conn,
        replica,
        needed,
        HashMap::new(),
        hold,
        how,
        Arc::clone(progress),
    )
    .await?;
    let held = std::mem::take(&mut more.held);
    fetched.counters.chunks_received += more.counters.chunks_received;
    fetched.counters.chunk_bytes_received += more.counters.chunk_bytes_received;
    fetched.counters.chunk_wire_bytes_received += more.counters.chunk_wire_bytes_received;
    fetched.missing = more.missing;
    let second = blocking(replica, move |r| r.apply(items, peer, held)).await?;
    for (i, report) in at.into_iter().zip(second) {
        reports[i] = report;
    }
    Ok((reports, fetched))
}

/// True if `e` is this side's disk being full.
fn is_disk_full(e: &SessionError) -> bool {
    matches!(e, SessionError::Replica(r) if r.is_disk_full())
}

/// The delta bases of `needed` for `items` (none unless `how.delta`).
async fn delta_bases<R: Replica + ?Sized>(
    replica: &Arc<R>,
    items: &[PlanItem],
    needed: &[ChunkRef],
    how: Fetch,
) -> Result<HashMap<Hash, ChunkRef>, SessionError> {
    if !how.delta || needed.is_empty() {
        return Ok(HashMap::new());
    }
    let (items, needed) = (items.to_vec(), needed.to_vec());
    blocking(replica, move |r| {
        let paths: Vec<_> = items
            .iter()
            .filter(|i| i.action.writes_file())
            .map(|i| i.remote.path.clone())
            .collect();
        let current = r.current_chunks(&paths)?;
        Ok(super::delta::bases(&items, &needed, &current))
    })
    .await
}

impl Fetched {
    fn add(&mut self, other: Fetched) {
        self.counters.chunks_received += other.counters.chunks_received;
        self.counters.chunk_bytes_received += other.counters.chunk_bytes_received;
        self.counters.chunk_wire_bytes_received += other.counters.chunk_wire_bytes_received;
        self.missing.extend(other.missing);
        self.held.extend(other.held);
    }
}

fn batches(needed: Vec<ChunkRef>) -> Vec<Vec<ChunkRef>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0u64;
    for c in needed {
        if !cur.is_empty()
            && (bytes + u64::from(c.len) > BATCH_BYTES || cur.len() >= MAX_IDS_PER_REQUEST)
        {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += u64::from(c.len);
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[allow(clippy::too_many_arguments)] // one batch's state, passed down once
async fn fetch_batch<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    batch: Vec<ChunkRef>,
    bases: &HashMap<Hash, ChunkRef>,
    hold: &HashSet<Hash>,
    how: Fetch,
    got: &mut Fetched,
    progress: &dyn Progress,
) -> Result<(), SessionError> {
    let held = read_bases(replica, &batch, bases).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let request = if held.is_empty() {
        Message::GetChunks {
            ids: batch.iter().map(|c| c.id).collect(),
        }
    } else {
        let base_of = |id: &Hash| bases.get(id).map(|b| b.id).filter(|b| held.contains_key(b));
        Message::GetChunksAgainst {
            wants: batch
                .iter()
                .map(|c| ChunkWant {
                    id: c.id,
                    base: base_of(&c.id),
                })
                .collect(),
        }
    };
    write_frame(&mut send, &request).await?;
    let _ = send.finish();
    // The base bytes each chunk was asked against, to decode a delta answer.
    let against: HashMap<Hash, &[u8]> = match &request {
        Message::GetChunksAgainst { wants } => wants
            .iter()
            .filter_map(|w| Some((w.id, held.get(&w.base?)?.as_slice())))
            .collect(),
        _ => HashMap::new(),
    };
    // Verified chunks are kept as they arrive (a few at a time, in one blocking call): a
    // connection lost in the middle of a batch refetches only what had not arrived yet.
    let mut verified: Vec<(Hash, Vec<u8>)> = Vec::new();
    let mut verified_bytes = 0usize;
    let mut held = HeldChunks::new();
    let read = read_batch(
        &mut recv,
        &batch,
        &against,
        how,
        got,
        progress,
        |chunk| {
            if hold.contains(&chunk.0) {
                held.insert(chunk.0, chunk.1);
                return None;
            }
            verified_bytes += chunk.1.len();
            verified.push(chunk);
            if verified_bytes >= KEEP_EVERY_BYTES {
                verified_bytes = 0;
                Some(std::mem::take(&mut verified))
            } else {
                None
            }
        },
        replica,
    )
    .await;
    // What arrived before a failure is held all the same: a repair round may still use it.
    got.held.extend(held);
    let kept = keep(replica, verified).await;
    read.and(kept)
}

/// Verified chunks buffered before they are written to the chunk store.
const KEEP_EVERY_BYTES: usize = 64 * 1024;

/// Most bytes of delta bases held for one batch (each distinct base once): bases beyond it are
/// not named, and their chunks come whole.
const BASE_BYTES_PER_BATCH: u64 = 2 * BATCH_BYTES;

/// Read (from our current files, verified) the distinct bases of `batch`'s chunks, up to
/// [`BASE_BYTES_PER_BATCH`]; a base that cannot be read (its file changed) is left out.
async fn read_bases<R: Replica + ?Sized>(
    replica: &Arc<R>,
    batch: &[ChunkRef],
    bases: &HashMap<Hash, ChunkRef>,
) -> Result<HashMap<Hash, Vec<u8>>, SessionError> {
    let mut wanted: Vec<Hash> = Vec::new();
    let mut bytes = 0u64;
    for base in batch.iter().filter_map(|c| bases.get(&c.id)) {
        if wanted.contains(&base.id) || bytes + u64::from(base.len) > BASE_BYTES_PER_BATCH {
            continue;
        }
        bytes += u64::from(base.len);
        wanted.push(base.id);
    }
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    blocking(replica, move |r| {
        let mut held = HashMap::new();
        for id in wanted {
            if let Some(bytes) = r.read_chunk(&id)? {
                held.insert(id, bytes);
            }
        }
        Ok(held)
    })
    .await
}

async fn keep<R: Replica + ?Sized>(
    replica: &Arc<R>,
    verified: Vec<(Hash, Vec<u8>)>,
) -> Result<(), SessionError> {
    if verified.is_empty() {
        return Ok(());
    }
    blocking(replica, move |r| {
        for (id, bytes) in &verified {
            r.put_chunk(id, bytes)?;
        }
        Ok(())
    })
    .await
}

/// Read the replies to one `GetChunks`, handing each verified chunk to `on_chunk`; whatever
/// `on_chunk` returns is written to the chunk store before the next frame is read.
#[allow(clippy::too_many_arguments)] // one fetch's state, passed down once
async fn read_batch<R: Replica + ?Sized>(
    recv: &mut quinn::RecvStream,
    batch: &[ChunkRef],
    against: &HashMap<Hash, &[u8]>,
    how: Fetch,
    got: &mut Fetched,
    progress: &dyn Progress,
    mut on_chunk: impl FnMut((Hash, Vec<u8>)) -> Option<Vec<(Hash, Vec<u8>)>>,
    replica: &Arc<R>,
) -> Result<(), SessionError> {
    for want in batch {
        match read_frame(recv).await? {
            Some(Message::ChunkData(data)) => {
                if data.id != want.id {
                    return Err(SessionError::Protocol(format!(
                        "asked for chunk {} but got {}",
                        want.id, data.id
                    )));
                }
                if data.compression == Compression::Zstd && !how.zstd {
                    return Err(FrameError::from(CodecError::Malformed(format!(
                        "chunk {} is zstd-compressed, but ZSTD was not negotiated",
                        want.id
                    )))
                    .into());
                }
                let wire = data.data.len() as u64;
                let base = against.get(&want.id).copied();
                let bytes = data
                    .into_verified_bytes_against(base)
                    .map_err(FrameError::from)?;
                if bytes.len() != want.len as usize {
                    return Err(SessionError::Protocol(format!(
                        "chunk {} has the wrong length",
                        want.id
                    )));
                }
                got.counters.chunks_received += 1;
                got.counters.chunk_bytes_received += bytes.len() as u64;
                got.counters.chunk_wire_bytes_received += wire;
                progress.event(ProgressEvent::Received {
                    bytes: bytes.len() as u64,
                });
                if let Some(full) = on_chunk((want.id, bytes)) {
                    keep(replica, full).await?;
                }
            }
            Some(Message::Error {
                code: ErrorCode::NotFound,
                ..
            }) => {
                got.missing.insert(want.id);
            }
            Some(Message::Error { code, message }) => {
                return Err(SessionError::Remote { code, message });
            }
            Some(other) => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {} on a chunk stream",
                    other.kind()
                )));
            }
            None => return Err(SessionError::Protocol("chunk stream ended early".into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use botsync_engine::ChunkRef;
    use botsync_engine::plan::PlanItem;
    use botsync_engine::reconcile::MergePolicy;

    use super::*;
    use crate::testing::file_entry;

    /// An item taking `path`, a file of `size` bytes cut into `chunks` chunks.
    fn take(path: &str, size: u64, chunks: usize) -> PlanItem {
        let mut remote = file_entry(path, path.as_bytes(), false);
        remote.size = size;
        remote.chunks = (0..chunks)
            .map(|i| ChunkRef {
                id: Hash::of(format!("{path}/{i}").as_bytes()),
                len: (size / chunks as u64) as u32,
            })
            .collect();
        PlanItem {
            remote,
            action: Action::Take,
            bytes_needed: size,
            base: None,
            policy: Default::default(),
        }
    }

    #[test]
    fn small_files_are_held_in_groups_of_bounded_memory() {
        // 5,000 notes of 4 KiB: 20 MB, held 4 MiB at a time.
        let notes: Vec<PlanItem> = (0..5_000)
            .map(|i| take(&format!("notes/n{i}.md"), 4096, 1))
            .collect();
        let groups = apply_groups(notes);
        assert_eq!(
            groups.len(),
            5,
            "20 MB of single-chunk files in 4 MiB groups"
        );
        for g in &groups {
            let held: u64 = g.iter().map(|i| i.remote.size).sum();
            assert!(held <= HELD_GROUP_BYTES, "{held}");
            assert_eq!(single_chunks(g).len(), g.len(), "every note is held");
        }
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 5_000);
    }

    #[test]
    fn large_files_are_kept_not_held() {
        // Files of several chunks are kept as they arrive (a lost session resumes them), and
        // group by the bytes the disk must hold, not by memory.
        let big: Vec<PlanItem> = (0..6)
            .map(|i| take(&format!("big{i}.bin"), 8 << 20, 40))
            .collect();
        let groups = apply_groups(big);
        assert_eq!(
            groups.len(),
            2,
            "48 MiB of files in groups of at most 32 MiB"
        );
        assert!(groups.iter().all(|g| single_chunks(g).is_empty()));
        // A deletion has no content to hold.
        let mut gone = take("old.md", 0, 0);
        gone.remote = file_entry("old.md", b"", true);
        gone.action = Action::Delete;
        assert!(single_chunks(&[gone]).is_empty());
    }

    #[test]
    fn what_a_merge_reads_from_the_chunk_store_is_never_held() {
        let note = take("notes/a.md", 4096, 1);
        let mut log = take("logs/a.jsonl", 4096, 1);
        log.action = Action::Merge {
            policy: MergePolicy::Union,
        };
        // The same bytes as the note: one chunk, needed by both.
        let mut twin = take("notes/b.md", 4096, 1);
        twin.remote.chunks = log.remote.chunks.clone();
        let held = single_chunks(&[note.clone(), log, twin]);
        assert_eq!(held, HashSet::from([note.remote.chunks[0].id]));
    }
}
