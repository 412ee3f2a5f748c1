//! Assembling a file version from verified chunks: the unchanged parts of the version being
//! replaced first (copied in the kernel, [`super::copy`]), then local files (via the index's
//! chunk locations), then the chunk store, then the caller's [`ChunkSource`].
//!
//! Every chunk read is checked against its id before a byte of it is written; the copied ones
//! are vouched for by the old file's stat facts instead. This module writes only
//! into apply's temporary file and, when chunks are missing, stages what the source sent in the
//! chunk store; it never touches the target.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::copy::{Copies, OldVersion};
use super::disk::TempFile;
use super::{ApplyContext, ApplyError, io_err};
use crate::chunk::ChunkRef;
use crate::entry::FileEntry;
use crate::hash::Hash;
use crate::path::RelPath;
use crate::store::{Store, StoreError};

/// An error from a [`ChunkSource`].
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where chunks that are not available locally come from (bytes received from a peer).
pub trait ChunkSource {
    /// The bytes of chunk `id` (of length `len`), or `None` if this source does not have it.
    /// The bytes are verified by the caller.
    fn fetch(&mut self, id: &Hash, len: u32) -> Result<Option<Vec<u8>>, SourceError>;

    /// True if this source has chunk `id` at hand (in memory): assembly then takes it from
    /// here first, without looking it up in the workspace's files or the chunk store.
    fn holds(&self, _id: &Hash) -> bool {
        false
    }
}

/// A source that has no chunks: apply uses only what is already local (renames, restores).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSource;

impl ChunkSource for NoSource {
    fn fetch(&mut self, _id: &Hash, _len: u32) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(None)
    }
}

/// Chunks held in memory, by id.
impl ChunkSource for HashMap<Hash, Vec<u8>> {
    fn fetch(&mut self, id: &Hash, _len: u32) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self.get(id).cloned())
    }

    fn holds(&self, id: &Hash) -> bool {
        self.contains_key(id)
    }
}

/// Where an assembled file's bytes came from, and which chunks were found nowhere.
#[derive(Default)]
pub(super) struct Assembled {
    pub(super) from_local: u64,
    pub(super) from_store: u64,
    /// (id, offset in the temp file, len) of chunks written from the source.
    pub(super) from_source: Vec<(Hash, u64, u32)>,
    pub(super) missing: Vec<Hash>,
    /// The version being replaced was written to while its unchanged parts were copied: the
    /// temp file must not be used.
    pub(super) old_changed: bool,
    /// Of `from_local`, the bytes copied from the version being replaced.
    pub(super) copied: u64,
}

/// Write the target's chunks into the temp file, each verified. After the first missing chunk
/// nothing more is written; the remaining chunks are only looked up (and source chunks staged in
/// the chunk store) so that the report lists every missing chunk.
pub(super) fn assemble(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    source: &mut dyn ChunkSource,
    old: Option<&OldVersion>,
    temp: &mut TempFile,
) -> Result<Assembled, ApplyError> {
    let path = &target.path;
    let mut out = Assembled::default();
    let mut copies = Copies::default();
    // Writes to the temp file go after what is queued for copying.
    let flush = |copies: &mut Copies, temp: &TempFile| match old {
        Some(old) => copies
            .flush(old, &temp.file)
            .map_err(|e| io_err(path, "copying the unchanged parts into", &temp.path, e)),
        None => Ok(()),
    };
    let mut written: HashMap<Hash, u64> = HashMap::new();
    let mut missing_seen = HashSet::new();
    let mut holes: HashSet<Hash> = HashSet::new();
    let mut reader = LocalReader::new(ctx.root);
    let mut offset = 0u64;
    // True while the bytes written so far end in a hole (a seek, not a write).
    let mut tail_hole = false;
    for c in &target.chunks {
        let writing = out.missing.is_empty();
        // A chunk of zeros seen before is a hole again: nothing to read back (a hole at the end
        // is past the temp file's end until `set_len`).
        if holes.contains(&c.id) {
            if writing {
                flush(&mut copies, temp)?;
                skip_hole(&mut temp.file, c.len)
                    .map_err(|e| io_err(path, "writing", &temp.path, e))?;
                tail_hole = true;
                out.from_local += u64::from(c.len);
                offset += u64::from(c.len);
            }
            continue;
        }
        // Once a chunk is missing nothing more is written: skip what needs no lookup. A chunk
        // the store merely lists is still read (and verified) below: trusting its presence
        // would report one corrupt chunk per attempt instead of all of them at once.
        if !writing && (missing_seen.contains(&c.id) || written.contains_key(&c.id)) {
            continue;
        }
        if let Some((old, at)) = old.and_then(|o| Some((o, o.find(c)?))) {
            if writing {
                copies
                    .push(old, &temp.file, at, c.len)
                    .map_err(|e| io_err(path, "copying the unchanged parts into", &temp.path, e))?;
                tail_hole = false;
                out.from_local += u64::from(c.len);
                offset += u64::from(c.len);
            }
            continue;
        }
        let (bytes, origin) = if let Some(&at) = written.get(&c.id) {
            (
                read_at(&temp.file, at, c.len)
                    .map_err(|e| io_err(path, "re-reading", &temp.path, e))?,
                Origin::Local,
            )
        } else if let Some(b) = reader
            .find(ctx.store, c)
            .map_err(|source| ApplyError::Store {
                path: path.clone(),
                source,
            })?
        {
            (b, Origin::Local)
        } else if let Some(b) = held(path, source, c)? {
            // At hand in memory (a small file's chunk, fetched for this apply): the chunk
            // store is not searched for it.
            (b, Origin::Source)
        } else if let Some(b) = ctx
            .chunks
            .get(&c.id)
            .map_err(|source| ApplyError::ChunkStore {
                path: path.clone(),
                source,
            })?
        {
            (b, Origin::Store)
        } else {
            match fetch_verified(path, source, c)? {
                Some(b) => (b, Origin::Source),
                None => {
                    if missing_seen.insert(c.id) {
                        out.missing.push(c.id);
                    }
                    continue;
                }
            }
        };
        if !writing {
            if origin == Origin::Source {
                ctx.chunks
                    .put_staged(&c.id, &bytes)
                    .map_err(|source| ApplyError::ChunkStore {
                        path: path.clone(),
                        source,
                    })?;
            }
            continue;
        }
        flush(&mut copies, temp)?;
        if is_zero(&bytes) {
            // A run of zeros is left as a hole, so a sparse file stays sparse (a file system
            // without holes reads them back as the same zeros).
            skip_hole(&mut temp.file, c.len).map_err(|e| io_err(path, "writing", &temp.path, e))?;
            holes.insert(c.id);
            tail_hole = true;
        } else {
            // A fault point (tests only): the disk fails this write.
            fail::fail_point!("apply::write", |arg| Err(io_err(
                path,
                "writing",
                &temp.path,
                crate::error::injected(arg)
            )));
            temp.file
                .write_all(&bytes)
                .map_err(|e| io_err(path, "writing", &temp.path, e))?;
            tail_hole = false;
            written.entry(c.id).or_insert(offset);
        }
        match origin {
            Origin::Local => out.from_local += u64::from(c.len),
            Origin::Store => out.from_store += u64::from(c.len),
            Origin::Source => out.from_source.push((c.id, offset, c.len)),
        }
        offset += u64::from(c.len);
    }
    flush(&mut copies, temp)?;
    out.copied = copies.copied;
    if copies.copied > 0 && old.is_some_and(|o| !o.unchanged()) {
        out.old_changed = true;
        return Ok(out);
    }
    if out.missing.is_empty() && tail_hole {
        // A file that ends in a hole: the seek past it does not extend the file by itself.
        temp.file
            .set_len(offset)
            .map_err(|e| io_err(path, "writing", &temp.path, e))?;
    }
    Ok(out)
}

fn skip_hole(file: &mut File, len: u32) -> io::Result<()> {
    file.seek(SeekFrom::Current(i64::from(len))).map(|_| ())
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Local,
    Store,
    Source,
}

/// The verified bytes of `c` if `source` holds it in memory.
fn held(
    path: &RelPath,
    source: &mut dyn ChunkSource,
    c: &ChunkRef,
) -> Result<Option<Vec<u8>>, ApplyError> {
    if source.holds(&c.id) {
        fetch_verified(path, source, c)
    } else {
        Ok(None)
    }
}

fn fetch_verified(
    path: &RelPath,
    source: &mut dyn ChunkSource,
    c: &ChunkRef,
) -> Result<Option<Vec<u8>>, ApplyError> {
    let fetched = source.fetch(&c.id, c.len).map_err(|e| ApplyError::Source {
        path: path.clone(),
        id: c.id,
        source: e,
    })?;
    let Some(bytes) = fetched else {
        return Ok(None);
    };
    let actual = Hash::of(&bytes);
    if actual != c.id || bytes.len() != c.len as usize {
        return Err(ApplyError::ChunkMismatch {
            path: path.clone(),
            id: c.id,
            actual,
        });
    }
    Ok(Some(bytes))
}

/// A missing chunk aborts the apply; keep what the source already sent so a retry does not
/// fetch it again.
pub(super) fn stage_source_chunks(
    ctx: &ApplyContext<'_>,
    path: &RelPath,
    temp: &TempFile,
    from_source: &[(Hash, u64, u32)],
) -> Result<(), ApplyError> {
    for (id, at, len) in from_source {
        let bytes = read_at(&temp.file, *at, *len)
            .map_err(|e| io_err(path, "re-reading", &temp.path, e))?;
        ctx.chunks
            .put_staged(id, &bytes)
            .map_err(|source| ApplyError::ChunkStore {
                path: path.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Reads chunks from workspace files at the offsets the index records, verifying each; keeps the
/// last file open (a renamed file's chunks all come from one file).
struct LocalReader<'a> {
    root: &'a Path,
    open: Option<(RelPath, File)>,
}

impl<'a> LocalReader<'a> {
    fn new(root: &'a Path) -> Self {
        LocalReader { root, open: None }
    }

    /// The verified bytes of `c` from some local file, if any location still holds them.
    fn find(&mut self, store: &Store, c: &ChunkRef) -> Result<Option<Vec<u8>>, StoreError> {
        store.find_chunk(&c.id, |loc| {
            if loc.len != c.len {
                return None;
            }
            if self.open.as_ref().is_none_or(|(p, _)| *p != loc.path) {
                let file = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(loc.path.on_disk(self.root));
                // A location whose file is gone or unreadable is stale: try the next one.
                self.open = Some((loc.path.clone(), file.ok()?));
            }
            let (_, file) = self.open.as_ref()?;
            read_at(file, loc.offset, c.len)
                .ok()
                .filter(|bytes| Hash::of(bytes) == c.id)
        })
    }
}

fn read_at(file: &File, offset: u64, len: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}
