//! The unchanged parts of the version being replaced, copied in the kernel instead of read back.
//!
//! When a peer's version of a file shares most of its chunks with the version on disk (a byte
//! inserted in the middle of a large file: all but one or two chunks), assembly would read each
//! shared chunk from the old file, hash it and write it out again. Here the old file is trusted
//! on the terms the scan trusts a file without reading it: its stat facts (inode, size, mtime,
//! ctime) are those the index recorded with the version it holds, and its mtime is outside the
//! racy window of that record ([`crate::scan::RACY_WINDOW_NS`]). Each shared chunk is then where
//! the old version's chunk list puts it, and runs of them are copied with `copy_file_range(2)`
//! (extents shared on file systems that can, an in-kernel copy elsewhere), never entering user
//! space and never hashed again.
//!
//! The stat facts are taken again from the open file once the copies are done: a write that
//! landed meanwhile moves its mtime and ctime, and the assembly is given up as a local change,
//! as any edit the apply notices before its rename is. A sparse old file is not copied this way
//! (the copy could fill its holes); assembly reads it chunk by chunk and keeps the holes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::chunk::ChunkRef;
use crate::entry::{EntryKind, LocalEntry, StatSig};
use crate::hash::Hash;
use crate::scan::RACY_WINDOW_NS;

/// The version on disk at the target's path, open, with where each of its chunks lies.
pub(super) struct OldVersion {
    file: File,
    sig: StatSig,
    /// Chunk id to (offset, length) of its first occurrence in the old version.
    at: HashMap<Hash, (u64, u32)>,
}

impl OldVersion {
    /// The file at `fs_path` as the copy source, if it is still exactly the version `expected`
    /// records (see the module doc); `None` when it must be read and verified instead.
    pub(super) fn open(fs_path: &Path, expected: Option<&LocalEntry>) -> Option<OldVersion> {
        let expected = expected?;
        let recorded = expected.stat?;
        if expected.entry.kind != EntryKind::File
            || expected.entry.chunks.is_empty()
            || recorded.mtime_ns >= expected.recorded_at_ns.saturating_sub(RACY_WINDOW_NS)
        {
            return None;
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(fs_path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.file_type().is_file() || StatSig::of(&meta) != recorded {
            return None;
        }
        if has_holes(&file, recorded.size) {
            return None;
        }
        let mut at = HashMap::with_capacity(expected.entry.chunks.len());
        let mut offset = 0u64;
        for c in &expected.entry.chunks {
            at.entry(c.id).or_insert((offset, c.len));
            offset += u64::from(c.len);
        }
        if offset != recorded.size {
            return None;
        }
        Some(OldVersion {
            file,
            sig: recorded,
            at,
        })
    }

    /// Where chunk `c` lies in the old version.
    pub(super) fn find(&self, c: &ChunkRef) -> Option<u64> {
        self.at
            .get(&c.id)
            .filter(|(_, len)| *len == c.len)
            .map(|(offset, _)| *offset)
    }

    /// The open file.
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// True if the file was not written to since it was opened and checked.
    pub(super) fn unchanged(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|meta| StatSig::of(&meta) == self.sig)
    }
}

/// True if `file` (of `size` bytes) has a hole: the first hole is before its end. A file system
/// that cannot tell reports none.
fn has_holes(file: &File, size: u64) -> bool {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(0)) {
        Ok(first_hole) => first_hole < size,
        Err(_) => false,
    }
}

/// Ranges of the old version waiting to be copied to the end of the temp file, merged while
/// they follow each other in both files.
#[derive(Default)]
pub(super) struct Copies {
    pending: Option<(u64, u64)>,
    /// Bytes copied so far.
    pub(super) copied: u64,
}

impl Copies {
    /// Queue `len` bytes at `offset` of the old version, to follow what was queued before.
    pub(super) fn push(
        &mut self,
        old: &OldVersion,
        out: &File,
        offset: u64,
        len: u32,
    ) -> io::Result<()> {
        let len = u64::from(len);
        match &mut self.pending {
            Some((start, queued)) if *start + *queued == offset => *queued += len,
            _ => {
                self.flush(old, out)?;
                self.pending = Some((offset, len));
            }
        }
        Ok(())
    }

    /// Copy what is queued to `out` at its current position (which moves past it). Called
    /// before anything else is written to `out` and at the end.
    pub(super) fn flush(&mut self, old: &OldVersion, out: &File) -> io::Result<()> {
        if let Some((offset, len)) = self.pending.take() {
            copy_range(&old.file, offset, out, len)?;
            self.copied += len;
        }
        Ok(())
    }
}

/// Copy `len` bytes at `offset` of `src` to `out` at its position, in the kernel where it can.
fn copy_range(src: &File, mut offset: u64, out: &File, mut len: u64) -> io::Result<()> {
    // One call copies at most this much (the kernel caps a call near 2 GiB anyway).
    const MAX_CALL: u64 = 1 << 30;
    while len > 0 {
        let want = usize::try_from(len.min(MAX_CALL)).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(src, Some(&mut offset), out, None, want) {
            Ok(0) => return Err(shorter()),
            Ok(n) => len -= n as u64,
            // Not supported here (an old kernel, another file system, a FUSE mount): copy
            // through user space, still without hashing what the stat facts vouch for.
            Err(e) if kernel_cannot(e) => return copy_through_user_space(src, offset, out, len),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn kernel_cannot(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    [
        Errno::XDEV,
        Errno::NOSYS,
        Errno::OPNOTSUPP,
        Errno::INVAL,
        Errno::PERM,
    ]
    .contains(&e)
}

fn copy_through_user_space(
    src: &File,
    mut offset: u64,
    out: &File,
    mut len: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut out = out;
    while len > 0 {
        let want = usize::try_from(len.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = src.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            return Err(shorter());
        }
        out.write_all(&buf[..n])?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

fn shorter() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file being replaced got shorter while its unchanged parts were copied",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn file_with(dir: &Path, name: &str, bytes: &[u8]) -> File {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn queued_ranges_are_copied_in_order_and_merged_when_adjacent() {
        let dir = tempfile::tempdir().unwrap();
        let src: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let old_file = file_with(dir.path(), "old", &src);
        let old = OldVersion {
            sig: StatSig::of(&old_file.metadata().unwrap()),
            file: old_file,
            at: HashMap::new(),
        };
        let mut out = file_with(dir.path(), "out", b"");
        let mut copies = Copies::default();
        copies.push(&old, &out, 0, 10).unwrap();
        copies.push(&old, &out, 10, 20).unwrap();
        assert_eq!(copies.copied, 0, "adjacent ranges wait to be merged");
        copies.push(&old, &out, 50_000, 30).unwrap();
        assert_eq!(
            copies.copied, 30,
            "the merged first run went out as one copy"
        );
        copies.flush(&old, &out).unwrap();
        out.write_all(b"!").unwrap();
        copies.push(&old, &out, 99_990, 10).unwrap();
        copies.flush(&old, &out).unwrap();
        let mut got = Vec::new();
        let mut read = OpenOptions::new()
            .read(true)
            .open(dir.path().join("out"))
            .unwrap();
        read.read_to_end(&mut got).unwrap();
        let mut want = src[..30].to_vec();
        want.extend_from_slice(&src[50_000..50_030]);
        want.push(b'!');
        want.extend_from_slice(&src[99_990..]);
        assert_eq!(got, want);
        assert!(old.unchanged());
    }

    #[test]
    fn a_range_past_the_end_of_a_shrunk_file_is_an_error_not_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let old_file = file_with(dir.path(), "old", &[7u8; 1000]);
        let old = OldVersion {
            sig: StatSig::of(&old_file.metadata().unwrap()),
            file: old_file,
            at: HashMap::new(),
        };
        let out = file_with(dir.path(), "out", b"");
        let mut copies = Copies::default();
        copies.push(&old, &out, 900, 200).unwrap();
        let err = copies.flush(&old, &out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_write_after_opening_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let mut old_file = file_with(dir.path(), "old", &[1u8; 4096]);
        let old = OldVersion {
            sig: StatSig::of(&old_file.metadata().unwrap()),
            file: old_file.try_clone().unwrap(),
            at: HashMap::new(),
        };
        assert!(old.unchanged());
        std::thread::sleep(std::time::Duration::from_millis(20));
        old_file.write_all(b"edit").unwrap();
        assert!(!old.unchanged());
    }

    #[test]
    fn holes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let dense = file_with(dir.path(), "dense", &[3u8; 64 * 1024]);
        assert!(!has_holes(&dense, 64 * 1024));
        let sparse = file_with(dir.path(), "sparse", b"");
        sparse.set_len(16 << 20).unwrap();
        sparse.write_all_at(b"end", (16 << 20) - 3).unwrap();
        // tmpfs and ext4 report the hole; a file system that cannot tell says "none".
        let reported = has_holes(&sparse, 16 << 20);
        let first_data = rustix::fs::seek(&sparse, rustix::fs::SeekFrom::Data(0)).ok();
        assert_eq!(reported, first_data.is_some_and(|d| d > 0));
    }
}
