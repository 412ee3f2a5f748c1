//! Fetching chunks from the peer: batches of ids over parallel request streams, every chunk
//! verified against its id and kept by the replica before anything is applied. A chunk the
//! peer cannot provide (its file changed while being sent) is reported missing, not fatal.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use botsync_engine::plan::{ItemReport, Outcome, PlanItem};
use botsync_engine::{ChunkRef, Hash, PeerId};
use tokio::task::JoinSet;

use super::{Counters, Progress, ProgressEvent, SessionError, blocking, within};
use crate::budget::Phase;
use crate::codec::CodecError;
use crate::frame::{FrameError, read_frame, write_frame};
use crate::limits::MAX_IDS_PER_REQUEST;
use crate::messages::{Compression, ErrorCode, Message};
use crate::replica::Replica;

/// Target raw bytes per request batch: large enough to fill the pipe, small enough to keep
/// memory bounded (each stream holds at most one batch).
const BATCH_BYTES: u64 = 1024 * 1024;

/// What a fetch brought.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub counters: Counters,
    /// Chunks the peer could not provide.
    pub missing: HashSet<Hash>,
}

/// How to fetch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fetch {
    /// Parallel request streams.
    pub streams: usize,
    /// True if the ZSTD feature was negotiated: without it a zstd payload is `bad-message`.
    pub zstd: bool,
    /// How long one batch's whole reply may take to arrive.
    pub deadline: Duration,
}

/// Fetch `needed` from the peer as `how` says.
pub(crate) async fn fetch<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    needed: Vec<ChunkRef>,
    how: Fetch,
    progress: Arc<dyn Progress>,
) -> Result<Fetched, SessionError> {
    let queue: Arc<Mutex<VecDeque<Vec<ChunkRef>>>> = Arc::new(Mutex::new(batches(needed).into()));
    let mut tasks = JoinSet::new();
    for _ in 0..how.streams.max(1) {
        let (conn, replica, queue, progress) = (
            conn.clone(),
            Arc::clone(replica),
            Arc::clone(&queue),
            Arc::clone(&progress),
        );
        tasks.spawn(async move {
            let mut got = Fetched::default();
            loop {
                let batch = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(batch) = batch else { break };
                let one = fetch_batch(&conn, &replica, batch, how, &mut got, progress.as_ref());
                within(Phase::ChunkBatch, how.deadline, one).await??;
            }
            Ok::<_, SessionError>(got)
        });
    }
    let mut total = Fetched::default();
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        let got = match joined.map_err(|e| SessionError::Task(e.to_string())) {
            Ok(Ok(got)) => got,
            Ok(Err(e)) | Err(e) => {
                // The other streams finish the batch they are reading (or fail on the same
                // dead connection) and keep what they verified; no new batch starts.
                if let Ok(mut q) = queue.lock() {
                    q.clear();
                }
                failed.get_or_insert(e);
                continue;
            }
        };
        total.counters.chunks_received += got.counters.chunks_received;
        total.counters.chunk_bytes_received += got.counters.chunk_bytes_received;
        total.counters.chunk_wire_bytes_received += got.counters.chunk_wire_bytes_received;
        total.missing.extend(got.missing);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Bytes of new files fetched before they are applied: what a sync holds in the chunk store on
/// top of the files it writes. Bounds the disk a sync needs to its incoming data plus this (or
/// plus its largest file, when that is larger).
pub(crate) const APPLY_GROUP_BYTES: u64 = 32 * 1024 * 1024;

/// Fetch what `items` need and apply them, in groups of about [`APPLY_GROUP_BYTES`] of new
/// files, so staged chunks are released group by group instead of all being held until the end
/// (a receiver once needed twice the incoming data free). Items that still find a chunk missing
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
    let mut reports = Vec::with_capacity(items.len());
    let mut fetched = Fetched::default();
    for group in apply_groups(items) {
        let (r, f) = group_round(conn, replica, peer, group, how, &progress).await?;
        reports.extend(r);
        fetched.add(f);
    }
    Ok((reports, fetched))
}

/// Consecutive runs of items whose new files add up to at most [`APPLY_GROUP_BYTES`] (at
/// least one item each), in order.
fn apply_groups(items: Vec<PlanItem>) -> Vec<Vec<PlanItem>> {
    let mut groups = Vec::new();
    let mut cur: Vec<PlanItem> = Vec::new();
    let mut bytes = 0u64;
    for item in items {
        let size = if item.action.writes_file() {
            item.remote.size
        } else {
            0
        };
        if !cur.is_empty() && bytes.saturating_add(size) > APPLY_GROUP_BYTES {
            groups.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        cur.push(item);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

/// Fetch and apply one group, with the repair round.
async fn group_round<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    peer: PeerId,
    items: Vec<PlanItem>,
    how: Fetch,
    progress: &Arc<dyn Progress>,
) -> Result<(Vec<ItemReport>, Fetched), SessionError> {
    let planned = items.clone();
    let needed = blocking(replica, move |r| r.chunks_needed(&planned)).await?;
    let mut fetched = fetch(conn, replica, needed, how, Arc::clone(progress)).await?;
    let again = items.clone();
    let mut reports = blocking(replica, move |r| r.apply(items, peer)).await?;
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
    let more = fetch(conn, replica, needed, how, Arc::clone(progress)).await?;
    fetched.counters.chunks_received += more.counters.chunks_received;
    fetched.counters.chunk_bytes_received += more.counters.chunk_bytes_received;
    fetched.counters.chunk_wire_bytes_received += more.counters.chunk_wire_bytes_received;
    fetched.missing = more.missing;
    let second = blocking(replica, move |r| r.apply(items, peer)).await?;
    for (i, report) in at.into_iter().zip(second) {
        reports[i] = report;
    }
    Ok((reports, fetched))
}

impl Fetched {
    fn add(&mut self, other: Fetched) {
        self.counters.chunks_received += other.counters.chunks_received;
        self.counters.chunk_bytes_received += other.counters.chunk_bytes_received;
        self.counters.chunk_wire_bytes_received += other.counters.chunk_wire_bytes_received;
        self.missing.extend(other.missing);
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

async fn fetch_batch<R: Replica + ?Sized>(
    conn: &quinn::Connection,
    replica: &Arc<R>,
    batch: Vec<ChunkRef>,
    how: Fetch,
    got: &mut Fetched,
    progress: &dyn Progress,
) -> Result<(), SessionError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let ids: Vec<Hash> = batch.iter().map(|c| c.id).collect();
    write_frame(&mut send, &Message::GetChunks { ids: ids.clone() }).await?;
    let _ = send.finish();
    // Verified chunks are kept as they arrive (a few at a time, in one blocking call): a
    // connection lost in the middle of a batch refetches only what had not arrived yet.
    let mut verified: Vec<(Hash, Vec<u8>)> = Vec::new();
    let mut verified_bytes = 0usize;
    let read = read_batch(
        &mut recv,
        &batch,
        how,
        got,
        progress,
        |chunk| {
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
    let kept = keep(replica, verified).await;
    read.and(kept)
}

/// Verified chunks buffered before they are written to the chunk store.
const KEEP_EVERY_BYTES: usize = 64 * 1024;

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
async fn read_batch<R: Replica + ?Sized>(
    recv: &mut quinn::RecvStream,
    batch: &[ChunkRef],
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
                let bytes = data.into_verified_bytes().map_err(FrameError::from)?;
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
