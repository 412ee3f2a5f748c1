//! Keeping a replaced version whose chunk boundaries are already known.
//!
//! [`ChunkStore::put_file_version`] re-chunks the file it keeps, because it cannot know whether
//! the bytes on disk are still the version the index describes. When the caller can vouch for
//! that (apply holds the old file open, and its stat facts equal the index's record outside the
//! racy window: `apply/copy.rs`), re-chunking is wasted work: a 512 MiB file with one byte
//! inserted cost a full content-defined chunking and hashing pass here on every update, although
//! nearly all of its chunks were stored by the previous update. This path only looks up each
//! chunk of the version, and reads, verifies and writes the ones the store lacks.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{ChunkStore, ChunkStoreError, KeptVersion, encode_manifest, refresh_age, sync_files};
use crate::entry::FileEntry;
use crate::error::IoError;
use crate::hash::Hash;

impl ChunkStore {
    /// Keep `entry`, the version the open `file` (at `path`) holds, before it is replaced: each
    /// chunk the store already has is only refreshed; each other one is read at its offset,
    /// checked against its id and stored; then the manifest. All of it is durable on return.
    ///
    /// Returns `None`, having kept nothing it could not prove, if a chunk read does not match
    /// its id or the file is shorter than the version: the file is not `entry` after all, and
    /// the caller keeps it with [`ChunkStore::put_file_version`], which keeps what is on disk.
    pub fn put_known_version(
        &self,
        file: &File,
        path: &Path,
        entry: &FileEntry,
    ) -> Result<Option<KeptVersion>, ChunkStoreError> {
        let mut written = Vec::new();
        let mut new_bytes = 0u64;
        let mut offset = 0u64;
        let mut buf = Vec::new();
        for c in &entry.chunks {
            let at = offset;
            offset += u64::from(c.len);
            let target = self.chunk_path(&c.id);
            if fs::metadata(&target).is_ok_and(|m| m.len() == u64::from(c.len)) {
                refresh_age(&target);
                continue;
            }
            buf.resize(c.len as usize, 0);
            match file.read_exact_at(&mut buf, at) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(source) => {
                    return Err(IoError {
                        action: "reading the version to keep",
                        path: path.to_path_buf(),
                        source,
                    }
                    .into());
                }
            }
            if Hash::of(&buf) != c.id {
                return Ok(None);
            }
            if self.write_object(&target, &buf)? {
                new_bytes += u64::from(c.len);
                written.push(target);
            }
        }
        let manifest = self.manifest_path(&entry.content);
        if self.write_object(&manifest, &encode_manifest(&entry.chunks))? {
            written.push(manifest);
        }
        sync_files(&written)?;
        Ok(Some(KeptVersion {
            content: entry.content,
            chunks: entry.chunks.clone(),
            size: offset,
            new_bytes,
            matches_entry: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{ChunkRef, Chunker, ChunkerParams};
    use crate::chunktree::content_hash;

    /// The entry of `bytes` as the scanner would record it (default chunker).
    fn entry_of(bytes: &[u8]) -> FileEntry {
        let mut chunks = Vec::new();
        Chunker::new(ChunkerParams::DEFAULT)
            .for_each_chunk(bytes, |b| {
                chunks.push(ChunkRef {
                    id: Hash::of(b),
                    len: b.len() as u32,
                });
                Ok(())
            })
            .unwrap();
        let mut entry = crate::merkle::tests::entry("data/a.bin", bytes, 1);
        entry.content = content_hash(&chunks);
        entry.chunks = chunks;
        entry
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new().finalize_xof().fill(&mut out);
        out
    }

    #[test]
    fn only_chunks_the_store_lacks_are_read_and_written_and_the_version_restores() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(&dir.path().join("store")).unwrap();
        let bytes = noise(3 << 20);
        let path = dir.path().join("a.bin");
        fs::write(&path, &bytes).unwrap();
        let entry = entry_of(&bytes);
        let file = File::open(&path).unwrap();

        let first = store
            .put_known_version(&file, &path, &entry)
            .unwrap()
            .unwrap();
        assert_eq!(first.new_bytes, bytes.len() as u64);
        assert_eq!(first.content, entry.content);
        let again = store
            .put_known_version(&file, &path, &entry)
            .unwrap()
            .unwrap();
        assert_eq!(again.new_bytes, 0, "every chunk was already stored");

        let restored: Vec<u8> = store
            .manifest(&entry.content)
            .unwrap()
            .unwrap()
            .iter()
            .flat_map(|c| store.get(&c.id).unwrap().unwrap())
            .collect();
        assert_eq!(restored, bytes);
    }

    #[test]
    fn a_file_that_is_not_the_version_keeps_nothing_it_cannot_prove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(&dir.path().join("store")).unwrap();
        let bytes = noise(1 << 20);
        let entry = entry_of(&bytes);
        let path = dir.path().join("a.bin");
        let mut changed = bytes.clone();
        changed[700_000] ^= 0xff;
        fs::write(&path, &changed).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(store.put_known_version(&file, &path, &entry).unwrap(), None);
        assert_eq!(store.manifest(&entry.content).unwrap(), None);

        fs::write(&path, &bytes[..1000]).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(store.put_known_version(&file, &path, &entry).unwrap(), None);
    }
}
