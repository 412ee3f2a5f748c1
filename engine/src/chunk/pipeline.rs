//! Chunk and hash one large input on two threads, with bounded memory.
//!
//! Owns the parallel schedule of [`Chunker::digest_reader`] and [`Chunker::digest_bytes`] for
//! inputs larger than one segment. It does not own the cut rule ([`Chunker::cut`], plain FastCDC
//! 2020) nor the content hash ([`crate::chunktree`]): the chunks it returns are exactly the ones
//! the sequential chunker returns, byte for byte.
//!
//! # Why speculative segments
//!
//! On this project's machines FastCDC's gear loop and BLAKE3 run at about 2.0 and 2.6 GB/s on one
//! core, so doing them one after the other reaches only about half of plain BLAKE3. Finding cut
//! points looks sequential (each cut depends on the previous one), but content-defined chunking
//! resynchronizes: a chunker started at an arbitrary offset produces, after one or two chunks, the
//! same cut points as one started at the beginning, because from any common cut on both see the
//! same bytes. So the input is split into segments of [`SEGMENT`] bytes, and each segment is a
//! task: cut it *speculatively* from its own first byte, hashing each chunk right after its cut
//! while the bytes are still in cache. Both threads take whichever segment is next. The driver
//! then stitches, in input order: from the true cut that ends the previous segment it follows true
//! cuts, cutting and hashing those chunks itself, until it meets one of the segment's speculative
//! cuts; from there every speculative chunk is true and already hashed. That costs about 1.2
//! extra chunks per 2 MiB segment (measured on random data); the segment's first speculative chunk,
//! which is almost never true, is not hashed at all.
//!
//! Each segment buffer also holds the first [`crate::chunk::ChunkerParams::max`] bytes of the next
//! segment, so every chunk that starts in a segment lies entirely in its buffer and a cut there
//! sees exactly the bytes the sequential chunker sees. At most [`MAX_SEGMENTS`] buffers are alive
//! at a time: 9 MiB whatever the input size. Segments of 2 MiB rather than 1 MiB halve the
//! stitching and lookahead-copy overhead (measured: about 15 % more throughput from a reader).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use super::{ChunkRef, Chunker};
use crate::hash::Hash;

/// Bytes of input per segment (each buffer holds this plus one maximum chunk of lookahead).
pub(super) const SEGMENT: usize = 2 << 20;

/// Segment buffers alive at once: one being read, one being cut on each thread, and one cut
/// ahead so that neither thread waits for the other to stitch (measured: 3 buffers gave
/// 0.70 × single-thread BLAKE3 on average, 4 gave 0.76; more gave nothing).
const MAX_SEGMENTS: usize = 4;

/// Where segment bytes come from: a borrowed slice (no copy) or a reader (owned buffers).
pub(super) trait SegmentSource<'a> {
    /// The next segment's bytes, starting where `prev`'s segment ends (from the start of the input
    /// if `prev` is `None`), including up to `lookahead` bytes past the segment; `None` at the end.
    fn next_segment(
        &mut self,
        prev: Option<&Segment<'a>>,
        lookahead: usize,
    ) -> io::Result<Option<SegmentBytes<'a>>>;

    /// Hand back a buffer that no task uses any more, for reuse.
    fn recycle(&mut self, _bytes: SegmentBytes<'a>) {}
}

/// The bytes of one segment buffer.
#[derive(Debug)]
pub(super) enum SegmentBytes<'a> {
    /// A slice of an in-memory input.
    Borrowed(&'a [u8]),
    /// A buffer filled from a reader.
    Owned(Vec<u8>),
}

impl SegmentBytes<'_> {
    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            SegmentBytes::Borrowed(s) => s,
            SegmentBytes::Owned(v) => v,
        }
    }
}

/// One segment: its place in the input and its buffer (segment bytes plus lookahead).
#[derive(Debug)]
pub(super) struct Segment<'a> {
    /// Input offset of the buffer's first byte.
    start: u64,
    /// Bytes that belong to this segment (the rest of the buffer is lookahead).
    own_len: usize,
    bytes: SegmentBytes<'a>,
}

impl Segment<'_> {
    fn data(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    fn end(&self) -> u64 {
        self.start + self.own_len as u64
    }

    /// The bytes of chunk `(start, len)`, which must start inside this segment.
    fn chunk(&self, start: u64, len: u32) -> &[u8] {
        // Invariant: stitched chunks start in [self.start, self.end()) and are at most `max`
        // long, and the buffer extends `max` bytes past the segment or to the end of the input.
        let from = (start - self.start) as usize;
        &self.data()[from..from + len as usize]
    }
}

/// Reads segments from any reader into owned, recycled buffers.
#[derive(Debug)]
pub(super) struct ReaderSource<R> {
    reader: R,
    spare: Vec<Vec<u8>>,
    eof: bool,
}

impl<R: Read> ReaderSource<R> {
    pub(super) fn new(reader: R) -> Self {
        ReaderSource {
            reader,
            spare: Vec::new(),
            eof: false,
        }
    }

    /// True once the reader returned end of file.
    pub(super) fn at_eof(&self) -> bool {
        self.eof
    }
}

impl<'a, R: Read> SegmentSource<'a> for ReaderSource<R> {
    fn next_segment(
        &mut self,
        prev: Option<&Segment<'a>>,
        lookahead: usize,
    ) -> io::Result<Option<SegmentBytes<'a>>> {
        let cap = SEGMENT + lookahead;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        if let Some(prev) = prev {
            buf.extend_from_slice(&prev.data()[prev.own_len..]);
        }
        if !self.eof {
            let want = (cap - buf.len()) as u64;
            let got = (&mut self.reader).take(want).read_to_end(&mut buf)?;
            self.eof = (got as u64) < want;
        }
        Ok((!buf.is_empty()).then_some(SegmentBytes::Owned(buf)))
    }

    fn recycle(&mut self, bytes: SegmentBytes<'a>) {
        if let SegmentBytes::Owned(v) = bytes
            && self.spare.len() < MAX_SEGMENTS
        {
            self.spare.push(v);
        }
    }
}

/// Serves segments of an in-memory input without copying.
#[derive(Debug)]
pub(super) struct SliceSource<'a> {
    data: &'a [u8],
}

impl<'a> SliceSource<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        SliceSource { data }
    }
}

impl<'a> SegmentSource<'a> for SliceSource<'a> {
    fn next_segment(
        &mut self,
        prev: Option<&Segment<'a>>,
        lookahead: usize,
    ) -> io::Result<Option<SegmentBytes<'a>>> {
        let start = prev.map_or(0, |p| p.end() as usize);
        if start >= self.data.len() {
            return Ok(None);
        }
        let end = self.data.len().min(start + SEGMENT + lookahead);
        Ok(Some(SegmentBytes::Borrowed(&self.data[start..end])))
    }
}

/// Chunk and hash everything `source` yields, starting with the already-read `first` buffer, on
/// the calling thread and one helper thread. Returns the chunks in input order.
pub(super) fn digest_parallel<'a>(
    chunker: &Chunker,
    source: &mut dyn SegmentSource<'a>,
    first: SegmentBytes<'a>,
) -> io::Result<Vec<ChunkRef>> {
    let shared = Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    };
    thread::scope(|scope| {
        let helper = scope.spawn(|| helper_loop(chunker, &shared));
        let result = drive(chunker, source, first, &shared);
        shared.lock().finished = true;
        shared.wake.notify_all();
        let joined = helper.join();
        match (result, joined) {
            (Ok(chunks), Ok(())) => Ok(chunks),
            (Err(e), _) => Err(e),
            (Ok(_), Err(_)) => Err(io::Error::other("chunk hashing thread panicked")),
        }
    })
}

/// State shared by the driver and the helper, behind one mutex.
struct Shared<'a> {
    state: Mutex<State<'a>>,
    wake: Condvar,
}

impl<'a> Shared<'a> {
    fn lock(&self) -> MutexGuard<'_, State<'a>> {
        // A panic in a task never leaves the state half-updated (tasks run outside the lock),
        // so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'g>(&self, guard: MutexGuard<'g, State<'a>>) -> MutexGuard<'g, State<'a>> {
        self.wake
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State<'a> {
    /// Segments waiting for a thread to cut and hash them, oldest first.
    tasks: VecDeque<Task<'a>>,
    /// Live segments in input order; `slots[0]` has index `first_slot`.
    slots: VecDeque<Slot<'a>>,
    first_slot: usize,
    /// Set by the driver when it returns: the helper exits.
    finished: bool,
    /// Set if the helper died: the driver stops waiting for it.
    helper_failed: bool,
}

struct Slot<'a> {
    segment: Arc<Segment<'a>>,
    /// The segment's speculative chunks once its task ran.
    speculative: Option<Speculative>,
}

/// Cut and hash one segment speculatively, from its first byte.
struct Task<'a> {
    slot: usize,
    segment: Arc<Segment<'a>>,
}

/// A segment cut as if a chunk started at its first byte.
struct Speculative {
    /// The segment start, then each cut, until a cut reaches or passes the segment end.
    cuts: Vec<u64>,
    /// `ids[i]` is the id of chunk `cuts[i + 1]..cuts[i + 2]`. The first chunk, which starts at
    /// the segment start, is almost never a true chunk, so it is not hashed.
    ids: Vec<Hash>,
}

impl Task<'_> {
    /// Cut and hash the segment. Each chunk is hashed right after it is cut, while its bytes are
    /// still in the core's cache. The task's `Arc` is dropped before the result is reported, so
    /// a finished segment's buffer can be recycled as soon as it is stitched.
    fn run(self, chunker: &Chunker) -> (usize, Speculative) {
        let segment = &self.segment;
        let data = segment.data();
        let mut cuts = Vec::with_capacity(2 * SEGMENT / chunker.params.avg as usize + 2);
        let mut ids = Vec::with_capacity(cuts.capacity());
        let mut at = chunker.cut(data);
        cuts.push(segment.start);
        cuts.push(segment.start + at as u64);
        while at < segment.own_len {
            let len = chunker.cut(&data[at..]);
            ids.push(Hash::of(&data[at..at + len]));
            at += len;
            cuts.push(segment.start + at as u64);
        }
        (self.slot, Speculative { cuts, ids })
    }
}

/// The driver: reads, stitches, releases buffers, and runs tasks when it has nothing else to do.
fn drive<'a>(
    chunker: &Chunker,
    source: &mut dyn SegmentSource<'a>,
    first: SegmentBytes<'a>,
    shared: &Shared<'a>,
) -> io::Result<Vec<ChunkRef>> {
    let lookahead = chunker.params.max as usize;
    let mut next_bytes = Some(first);
    let mut last: Option<Arc<Segment<'a>>> = None;
    let mut input_done = false;
    let mut next_slot = 0usize;
    let mut frontier = 0u64;
    let mut chunks = Vec::new();
    let mut state = shared.lock();
    loop {
        if state.helper_failed {
            return Err(io::Error::other("chunk hashing thread panicked"));
        }
        // 1. Keep the pipeline full: read the next segment when a buffer is free.
        if !input_done && state.slots.len() < MAX_SEGMENTS {
            drop(state);
            let bytes = match next_bytes.take() {
                Some(b) => Some(b),
                None => source.next_segment(last.as_deref(), lookahead)?,
            };
            state = shared.lock();
            if let Some(bytes) = bytes {
                let start = last.as_ref().map_or(0, |l| l.end());
                let own_len = bytes.as_slice().len().min(SEGMENT);
                let segment = Arc::new(Segment {
                    start,
                    own_len,
                    bytes,
                });
                state.slots.push_back(Slot {
                    segment: Arc::clone(&segment),
                    speculative: None,
                });
                state.tasks.push_back(Task {
                    slot: next_slot,
                    segment: Arc::clone(&segment),
                });
                shared.wake.notify_one();
                next_slot += 1;
                last = Some(segment);
                continue;
            }
            input_done = true;
        }
        // 2. Stitch the oldest segment once its speculative chunks are known, then release it.
        if let Some(speculative) = state.slots.front_mut().and_then(|s| s.speculative.take())
            && let Some(slot) = state.slots.pop_front()
        {
            state.first_slot += 1;
            drop(state);
            stitch(
                chunker,
                &slot.segment,
                &speculative,
                &mut frontier,
                &mut chunks,
            );
            if let Ok(segment) = Arc::try_unwrap(slot.segment) {
                source.recycle(segment.bytes);
            }
            state = shared.lock();
            continue;
        }
        // 3. Done when the input is exhausted and every segment is stitched.
        if input_done && state.slots.is_empty() {
            return Ok(chunks);
        }
        // 4. Cut a segment too, or wait for the helper's.
        if let Some(task) = state.tasks.pop_front() {
            drop(state);
            let (slot, speculative) = task.run(chunker);
            state = shared.lock();
            state.report(slot, speculative);
        } else {
            state = shared.wait(state);
        }
    }
}

impl State<'_> {
    fn report(&mut self, slot: usize, speculative: Speculative) {
        if let Some(s) = self.slots.get_mut(slot - self.first_slot) {
            s.speculative = Some(speculative);
        }
    }
}

/// The helper: runs tasks until the driver finishes.
fn helper_loop(chunker: &Chunker, shared: &Shared<'_>) {
    let _flag = FailureFlag(shared);
    let mut state = shared.lock();
    while !state.finished {
        if let Some(task) = state.tasks.pop_front() {
            drop(state);
            let (slot, speculative) = task.run(chunker);
            state = shared.lock();
            state.report(slot, speculative);
            shared.wake.notify_all();
        } else {
            state = shared.wait(state);
        }
    }
}

/// Tells the driver if the helper unwinds, so it does not wait forever for a lost task.
struct FailureFlag<'s, 'a>(&'s Shared<'a>);

impl Drop for FailureFlag<'_, '_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.lock().helper_failed = true;
            self.0.wake.notify_all();
        }
    }
}

/// Extend the true chunk list through `segment`: follow true cuts from `frontier`, cutting and
/// hashing here, until one of the speculative cuts is met; from there every speculative chunk is
/// true and already hashed. Moves `frontier` to the first true cut at or past the segment end.
fn stitch(
    chunker: &Chunker,
    segment: &Segment<'_>,
    speculative: &Speculative,
    frontier: &mut u64,
    chunks: &mut Vec<ChunkRef>,
) {
    let cuts = &speculative.cuts;
    let end = segment.end();
    while *frontier < end {
        match cuts.binary_search(frontier) {
            // The segment start: the one speculative chunk that was not hashed.
            Ok(0) => {}
            Ok(i) => {
                let ids = &speculative.ids[i - 1..];
                chunks.extend(cuts[i..].windows(2).zip(ids).map(|(w, &id)| ChunkRef {
                    id,
                    len: (w[1] - w[0]) as u32,
                }));
                *frontier = cuts.last().copied().unwrap_or(end);
                break;
            }
            Err(_) => {}
        }
        let from = (*frontier - segment.start) as usize;
        let len = chunker.cut(&segment.data()[from..]);
        chunks.push(ChunkRef {
            id: Hash::of(segment.chunk(*frontier, len as u32)),
            len: len as u32,
        });
        *frontier += len as u64;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::chunk::tests::pseudo_random;

    fn sequential(chunker: &Chunker, data: &[u8]) -> Vec<ChunkRef> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let n = chunker.cut(&data[at..]);
            out.push(ChunkRef {
                id: Hash::of(&data[at..at + n]),
                len: n as u32,
            });
            at += n;
        }
        out
    }

    #[test]
    fn parallel_equals_sequential_over_many_segments() {
        let chunker = Chunker::default();
        // Sizes around segment and lookahead boundaries, where off-by-one errors hide.
        let max = ChunkerParams::DEFAULT.max as usize;
        for len in [
            5 * SEGMENT,
            3 * SEGMENT + max,
            3 * SEGMENT + max + 1,
            2 * SEGMENT + 7,
            4 * SEGMENT - 1,
        ] {
            let data = pseudo_random(len, len as u64);
            let want = sequential(&chunker, &data);
            let mut slices = SliceSource::new(&data);
            let first = slices.next_segment(None, max).unwrap().unwrap();
            assert_eq!(
                digest_parallel(&chunker, &mut slices, first).unwrap(),
                want,
                "slice, {len}"
            );
            let mut reader = ReaderSource::new(&data[..]);
            let first = reader.next_segment(None, max).unwrap().unwrap();
            assert_eq!(
                digest_parallel(&chunker, &mut reader, first).unwrap(),
                want,
                "reader, {len}"
            );
        }
    }

    #[test]
    fn low_entropy_input_cuts_at_max_everywhere() {
        // All-zero data never matches a mask: every chunk is `max` long, and speculative cuts
        // started at segment boundaries never meet the true ones; stitching must still be exact.
        let chunker = Chunker::default();
        let data = vec![0u8; 3 * SEGMENT + 12345];
        let mut slices = SliceSource::new(&data);
        let first = slices
            .next_segment(None, ChunkerParams::DEFAULT.max as usize)
            .unwrap()
            .unwrap();
        let got = digest_parallel(&chunker, &mut slices, first).unwrap();
        assert_eq!(got, sequential(&chunker, &data));
    }

    #[test]
    fn reader_errors_are_returned() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0).min(64 * 1024);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let chunker = Chunker::default();
        let mut reader = ReaderSource::new(Failing(3 * SEGMENT));
        let first = reader.next_segment(None, 256 * 1024).unwrap().unwrap();
        let err = digest_parallel(&chunker, &mut reader, first).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
    }
}
