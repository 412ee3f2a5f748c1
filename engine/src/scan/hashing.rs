//! Reading one file for a scan: open safely, chunk and hash, check it held still.
//!
//! This module owns the file-level I/O of a scan. A file is opened with `O_NOFOLLOW` (a symlink
//! swapped in since the walk is refused) and `O_NONBLOCK` (a FIFO swapped in cannot hang the
//! scan), checked to be the same regular file the walk saw, and exactly the bytes it held at that
//! stat are hashed. Then it is checked again: unchanged, the digest stands; grown (a log being
//! appended), the prefix is read a second time and the digest stands only if both reads agree,
//! so an append-only file syncs its stable prefix instead of being skipped on every scan; any
//! other movement (shrunk, rewritten in place) throws the digest away and the next scan retries.
//! It does not decide what is a change (that is [`super`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::chunk::{ChunkRef, Chunker};
use crate::chunktree;
use crate::entry::{Mode, StatSig};
use crate::hash::Hash;

use super::walk::Found;

/// The content of one file as read by a scan.
#[derive(Debug, Clone)]
pub(crate) struct Digest {
    /// Bytes read.
    pub size: u64,
    /// The chunk list.
    pub chunks: Vec<ChunkRef>,
    /// The content hash (root of the chunk tree).
    pub content: Hash,
    /// The stat facts of the open file, taken before reading: they describe the bytes hashed
    /// (for a file that grew meanwhile, its prefix; the stat cache then sees the growth next
    /// time).
    pub sig: StatSig,
    /// The permission bits of the open file.
    pub mode: Mode,
}

/// Why a file could not be hashed.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// Opening or reading failed (permissions, vanished, replaced by a symlink).
    Io(io::Error),
    /// The file is no longer the regular file the walk saw.
    Replaced,
    /// It shrank or was rewritten while it was being read.
    Changed,
}

/// Open, hash and re-check the file the walk found in the workspace at `root` ([`read_file_keeping`]
/// without the bytes; the scan itself calls that).
#[cfg(test)]
pub(crate) fn read_file(
    chunker: &Chunker,
    root: &Path,
    found: &Found,
) -> Result<Digest, ReadFailure> {
    read_file_keeping(chunker, root, found, false).map(|(d, _)| d)
}

/// [`read_file`], also handing back the bytes hashed when `keep_small` is set and the file is
/// smaller than one minimum chunk (most agent files): the secret guard checks them without
/// reading the file again.
pub(crate) fn read_file_keeping(
    chunker: &Chunker,
    root: &Path,
    found: &Found,
    keep_small: bool,
) -> Result<(Digest, Option<Vec<u8>>), ReadFailure> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(found.fs_path(root))
        .map_err(ReadFailure::Io)?;
    let before = file.metadata().map_err(ReadFailure::Io)?;
    let sig = StatSig::of(&before);
    if !before.is_file() || sig.ino != found.sig.ino || sig.dev != found.sig.dev {
        return Err(ReadFailure::Replaced);
    }
    let (size, chunks, content, kept) = if keep_small && sig.size < u64::from(chunker.params().min)
    {
        // Freshly opened: the position is the start. A file that shrank fails the exact read.
        let mut bytes = vec![0u8; usize::try_from(sig.size).unwrap_or(0)];
        (&file).read_exact(&mut bytes).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadFailure::Changed,
            _ => ReadFailure::Io(e),
        })?;
        let (chunks, content) = digest_bytes(&bytes);
        (sig.size, chunks, content, Some(bytes))
    } else {
        let (size, chunks, content) = digest_prefix(chunker, &file, sig.size)?;
        (size, chunks, content, None)
    };
    let after = StatSig::of(&file.metadata().map_err(ReadFailure::Io)?);
    let held_still = after.size == sig.size && after.mtime_ns == sig.mtime_ns;
    if !held_still {
        // Appends leave the prefix alone: a second read of it that agrees with the first shows
        // it held still. A rewrite in place, caught mid-way, does not agree (or shrinks).
        let grew = after.size > sig.size;
        if !grew || digest_prefix(chunker, &file, sig.size)?.2 != content {
            return Err(ReadFailure::Changed);
        }
        tracing::debug!(path = %found.rel, bytes = sig.size, "growing file: its stable prefix recorded");
    }
    let digest = Digest {
        size,
        chunks,
        content,
        sig,
        mode: Mode::from_st_mode(before.mode()),
    };
    Ok((digest, kept))
}

/// The bytes `d` describes, read again for the secret guard: the first `d.size` bytes of the
/// file the walk found, proven to be the ones hashed by hashing them again (a log being appended
/// keeps its prefix and passes; a file rewritten since the digest fails with `Changed`).
pub(crate) fn read_to_check(
    chunker: &Chunker,
    root: &Path,
    found: &Found,
    d: &Digest,
) -> Result<Vec<u8>, ReadFailure> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(found.fs_path(root))
        .map_err(ReadFailure::Io)?;
    let sig = StatSig::of(&file.metadata().map_err(ReadFailure::Io)?);
    if sig.ino != d.sig.ino || sig.dev != d.sig.dev {
        return Err(ReadFailure::Replaced);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(d.size).unwrap_or(0));
    file.take(d.size)
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Io)?;
    if bytes.len() as u64 != d.size {
        return Err(ReadFailure::Changed);
    }
    let content = if d.size >= u64::from(chunker.params().min) {
        digest_reader(chunker, &bytes[..])
            .map_err(ReadFailure::Io)?
            .2
    } else {
        digest_bytes(&bytes).1
    };
    if content != d.content {
        return Err(ReadFailure::Changed);
    }
    Ok(bytes)
}

/// [`digest_file`] of the first `len` bytes from the start of the file; a file now shorter
/// than that changed under us.
fn digest_prefix(
    chunker: &Chunker,
    file: &File,
    len: u64,
) -> Result<(u64, Vec<ChunkRef>, Hash), ReadFailure> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(ReadFailure::Io)?;
    match digest_file(chunker, file, len) {
        Ok(d) if d.0 == len => Ok(d),
        Ok(_) => Err(ReadFailure::Changed),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadFailure::Changed),
        Err(e) => Err(ReadFailure::Io(e)),
    }
}

/// Chunk and hash the first `expected` bytes of an open file, from its current position:
/// (bytes read, chunks, content hash); fewer bytes read means it shrank. The one place the
/// scanner hashes content, so a faster pipelined digest can be swapped in here.
pub(crate) fn digest_file(
    chunker: &Chunker,
    file: &File,
    expected: u64,
) -> io::Result<(u64, Vec<ChunkRef>, Hash)> {
    let min = u64::from(chunker.params().min);
    if expected >= min {
        // Never past the size of the stat: bytes appended meanwhile belong to the next version.
        return digest_reader(chunker, file.take(expected));
    }
    // Most agent files are smaller than one minimum chunk, and such a file is exactly one chunk:
    // read it whole with one small buffer instead of the chunker's 1.25 MiB streaming buffer.
    // No end-of-file probe: `read_file`'s fstat after reading proves the size did not change,
    // and a file that shrank fails here with `UnexpectedEof`.
    let mut bytes = vec![0u8; expected as usize];
    let mut reader = file;
    reader.read_exact(&mut bytes)?;
    let (chunks, content) = digest_bytes(&bytes);
    Ok((expected, chunks, content))
}

/// The chunks and content hash of a whole file smaller than one minimum chunk: one chunk (none
/// when empty).
fn digest_bytes(bytes: &[u8]) -> (Vec<ChunkRef>, Hash) {
    let chunks = if bytes.is_empty() {
        Vec::new()
    } else {
        vec![ChunkRef {
            id: Hash::of(bytes),
            len: bytes.len() as u32,
        }]
    };
    let content = chunktree::content_hash(&chunks);
    (chunks, content)
}

/// Chunk and hash a reader through the chunker's two-thread pipeline.
fn digest_reader(chunker: &Chunker, reader: impl Read) -> io::Result<(u64, Vec<ChunkRef>, Hash)> {
    let d = chunker.digest_reader(reader)?;
    Ok((d.size, d.chunks, d.content))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::path::RelPath;

    /// The tests' files carry their own path on disk: no root is joined.
    const NO_ROOT: &str = "/nonexistent";

    fn found(path: &std::path::Path) -> Found {
        let meta = fs::symlink_metadata(path).unwrap();
        Found::new(
            RelPath::new("memory/x.md").unwrap(),
            Some(path.to_path_buf()),
            StatSig::of(&meta),
            Mode::from_st_mode(meta.mode()),
        )
    }

    #[test]
    fn digest_matches_the_chunker() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.md");
        fs::write(&p, b"remember the milk\n").unwrap();
        let d = read_file(&Chunker::default(), Path::new(NO_ROOT), &found(&p)).unwrap();
        let chunks = Chunker::default()
            .chunk_reader(&b"remember the milk\n"[..])
            .unwrap();
        assert_eq!(d.size, 18);
        assert_eq!(d.content, chunktree::content_hash(&chunks));
        assert_eq!(d.chunks, chunks);
    }

    #[test]
    fn small_file_shortcut_agrees_with_the_streaming_chunker() {
        let dir = tempfile::tempdir().unwrap();
        let chunker = Chunker::default();
        let min = chunker.params().min as usize;
        for len in [0, 1, 1000, min - 1, min, min + 1, 3 * min] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            fs::write(&p, &data).unwrap();
            let d = read_file(&chunker, Path::new(NO_ROOT), &found(&p)).unwrap();
            let chunks = chunker.chunk_reader(&data[..]).unwrap();
            assert_eq!((d.size, &d.chunks), (len as u64, &chunks), "length {len}");
            assert_eq!(d.content, chunktree::content_hash(&chunks), "length {len}");
        }
    }

    #[test]
    fn a_small_file_that_shrank_before_the_read_is_not_digested() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shrunk");
        fs::write(&p, b"short").unwrap();
        let file = File::open(&p).unwrap();
        let err = digest_file(&Chunker::default(), &file, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_symlink_swapped_in_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.md");
        fs::write(&p, b"a").unwrap();
        let f = found(&p);
        fs::remove_file(&p).unwrap();
        fs::write(dir.path().join("target"), b"secret").unwrap();
        symlink(dir.path().join("target"), &p).unwrap();
        assert!(matches!(
            read_file(&Chunker::default(), Path::new(NO_ROOT), &f),
            Err(ReadFailure::Io(_))
        ));
    }

    #[test]
    fn a_file_replaced_since_the_walk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.md");
        fs::write(&p, b"a").unwrap();
        let f = found(&p);
        // Keep the old inode alive so the new file cannot reuse its number.
        fs::rename(&p, dir.path().join("old")).unwrap();
        fs::write(&p, b"b").unwrap();
        assert!(matches!(
            read_file(&Chunker::default(), Path::new(NO_ROOT), &f),
            Err(ReadFailure::Replaced)
        ));
    }

    #[test]
    fn a_small_file_hands_back_the_bytes_it_hashed_and_a_large_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let chunker = Chunker::default();
        let small = dir.path().join("small.md");
        fs::write(&small, b"small note\n").unwrap();
        let (d, kept) =
            read_file_keeping(&chunker, Path::new(NO_ROOT), &found(&small), true).unwrap();
        assert_eq!(kept.as_deref(), Some(&b"small note\n"[..]));
        let plain = read_file(&chunker, Path::new(NO_ROOT), &found(&small)).unwrap();
        assert_eq!(
            (d.content, d.chunks, d.size),
            (plain.content, plain.chunks, plain.size)
        );
        let (_, kept) =
            read_file_keeping(&chunker, Path::new(NO_ROOT), &found(&small), false).unwrap();
        assert_eq!(kept, None);

        let large = dir.path().join("large.md");
        fs::write(&large, vec![b'a'; 3 * chunker.params().min as usize]).unwrap();
        let (d, kept) =
            read_file_keeping(&chunker, Path::new(NO_ROOT), &found(&large), true).unwrap();
        assert_eq!(kept, None);
        let bytes = read_to_check(&chunker, Path::new(NO_ROOT), &found(&large), &d).unwrap();
        assert_eq!(bytes.len() as u64, d.size);
    }
}
