//! Staged chunks: chunks received during a sync, kept apart from the chunks of kept versions.
//!
//! A sync stages every chunk it receives (`store/staging/ab/cdef…`) before it writes any file, so
//! an interrupted sync finds them there and does not fetch them again. Once the files that needed
//! them are applied, the chunks live in those files and the staged copies are only dead weight:
//! the caller unstages them ([`ChunkStore::unstage`]). Keeping them apart from the kept-version
//! chunks is what makes that safe: unstaging can never remove a chunk some past version needs.
//! Staged chunks that no apply ever used (a sync abandoned for good) are collected by
//! [`ChunkStore::gc`] like everything else.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::{ChunkStore, ChunkStoreError, STAGING};
use crate::chunk::ChunkRef;
use crate::hash::Hash;

impl ChunkStore {
    /// Stage `bytes` as chunk `id`, refusing bytes that do not hash to `id` (they come from a
    /// peer). A chunk the store already keeps is not staged again.
    pub fn put_staged(&self, id: &Hash, bytes: &[u8]) -> Result<(), ChunkStoreError> {
        verify(id, bytes)?;
        if self.chunk_path(id).is_file() {
            return Ok(());
        }
        self.write_object(&self.staged_path(id), bytes)?;
        Ok(())
    }

    /// Keep the version made of `chunks` (content hash `content`) as a kept version: each chunk
    /// the store keeps already has its age refreshed, a staged one is moved in, any other is
    /// asked of `held` (bytes the caller has in memory, checked against the id here), and the
    /// manifest is written. Best effort and not made durable: it serves as the common ancestor
    /// of later merges (a lost one only means the next merge of that path falls back to
    /// `newest`) and as a version `restore` can bring back. Returns false if a chunk is in none
    /// of these places, so the version cannot be read back whole.
    pub fn keep_version_from(
        &self,
        content: &Hash,
        chunks: &[ChunkRef],
        held: &mut dyn FnMut(&Hash, u32) -> Option<Vec<u8>>,
    ) -> bool {
        let whole = chunks.iter().all(|c| {
            let kept = self.chunk_path(&c.id);
            if fs::symlink_metadata(&kept).is_ok_and(|m| m.len() == u64::from(c.len)) {
                super::refresh_age(&kept);
                return true;
            }
            let staged = self.staged_path(&c.id);
            if fs::symlink_metadata(&staged).is_ok() {
                return super::rename_into(&staged, &kept, &self.dir).is_ok();
            }
            held(&c.id, c.len).is_some_and(|bytes| {
                Hash::of(&bytes) == c.id && self.write_object(&kept, &bytes).is_ok()
            })
        });
        whole && self.put_manifest(content, chunks).is_ok()
    }

    /// True if chunk `id` is staged.
    pub fn is_staged(&self, id: &Hash) -> bool {
        self.staged_path(id).is_file()
    }

    /// Remove the staged copies of `ids` (those whose files were applied); returns how many
    /// were removed. Chunks kept for past versions are never touched. A copy that cannot be
    /// removed stays until [`ChunkStore::gc`] collects it: that is logged, not an error.
    pub fn unstage<'a>(&self, ids: impl IntoIterator<Item = &'a Hash>) -> u64 {
        let mut removed = 0;
        for id in ids {
            let path = self.staged_path(id);
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(chunk = %id, path = %path.display(), error = %e,
                        "could not remove a staged chunk; gc will");
                }
            }
        }
        removed
    }

    /// Remove every staged chunk (of every sync in progress): staging is only a cache that
    /// saves refetching after an interruption, so when the disk is full it is the first thing
    /// to give back. A sync whose chunks vanish this way finds them missing at apply and fetches
    /// them again. Returns the bytes freed.
    pub fn clear_staging(&self) -> u64 {
        let dir = self.dir.join(STAGING);
        let mut freed = 0;
        let Ok(shards) = fs::read_dir(&dir) else {
            return 0;
        };
        for shard in shards.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(file.path()).is_ok() {
                    freed += len;
                }
            }
        }
        tracing::warn!(bytes = freed, "disk full: staged chunks released");
        freed
    }

    pub(super) fn staged_path(&self, id: &Hash) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(STAGING).join(&hex[..2]).join(&hex[2..])
    }
}

/// Refuse `bytes` offered as chunk `id` unless they hash to it.
fn verify(id: &Hash, bytes: &[u8]) -> Result<(), ChunkStoreError> {
    let actual = Hash::of(bytes);
    if actual != *id {
        return Err(ChunkStoreError::Mismatch {
            expected: *id,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chunkstore::tests::{now_ns, store};

    #[test]
    fn a_staged_chunk_reads_like_a_kept_one_until_unstaged() {
        let (_tmp, cs) = store();
        let id = Hash::of(b"received");
        cs.put_staged(&id, b"received").unwrap();
        assert!(cs.has(&id) && cs.is_staged(&id));
        assert_eq!(cs.get(&id).unwrap(), Some(b"received".to_vec()));
        assert_eq!(cs.unstage([&id, &Hash::of(b"never staged")]), 1);
        assert!(!cs.has(&id));
        assert_eq!(cs.get(&id).unwrap(), None);
    }

    #[test]
    fn forged_bytes_are_not_staged() {
        let (_tmp, cs) = store();
        let id = Hash::of(b"real");
        let err = cs.put_staged(&id, b"forged").unwrap_err();
        assert!(matches!(err, ChunkStoreError::Mismatch { expected, .. } if expected == id));
        assert!(!cs.has(&id));
        cs.put_staged(&id, b"real").unwrap();
        assert!(cs.has(&id));
    }

    #[test]
    fn unstaging_never_removes_a_chunk_kept_for_a_past_version() {
        let (_tmp, cs) = store();
        // The chunk is kept for history first, then the same bytes arrive in a sync.
        let id = cs.put(b"shared bytes").unwrap();
        cs.put_staged(&id, b"shared bytes").unwrap();
        assert!(!cs.is_staged(&id), "a kept chunk is not staged twice");
        // Or staged first and kept later: both copies exist, unstaging removes only one.
        let other = Hash::of(b"other bytes");
        cs.put_staged(&other, b"other bytes").unwrap();
        cs.put(b"other bytes").unwrap();
        cs.unstage([&id, &other]);
        assert_eq!(cs.get(&id).unwrap(), Some(b"shared bytes".to_vec()));
        assert_eq!(cs.get(&other).unwrap(), Some(b"other bytes".to_vec()));
    }

    #[test]
    fn a_corrupt_staged_chunk_reads_as_missing() {
        let (_tmp, cs) = store();
        let id = Hash::of(b"good");
        cs.put_staged(&id, b"good").unwrap();
        fs::write(cs.staged_path(&id), b"bad!").unwrap();
        assert_eq!(cs.get(&id).unwrap(), None);
        assert!(!cs.has(&id), "the corrupt copy was deleted");
        assert_eq!(cs.corrupt_removed(), 1);
    }

    #[test]
    fn gc_collects_staged_chunks_past_the_retention() {
        let (_tmp, cs) = store();
        let id = Hash::of(b"abandoned");
        cs.put_staged(&id, b"abandoned").unwrap();
        let retention = Duration::from_secs(3600);
        let report = cs.gc(retention, now_ns(), |_| false).unwrap();
        assert_eq!(report.removed, 0, "young staged chunks stay");
        let later = now_ns() + 2 * 3600 * 1_000_000_000;
        let report = cs.gc(retention, later, |_| false).unwrap();
        assert_eq!(report.removed, 1);
        assert!(!cs.has(&id));
    }

    #[test]
    fn a_staged_copy_that_cannot_be_removed_is_left_for_the_collection() {
        let (_tmp, cs) = store();
        let (stuck, gone) = (Hash::of(b"stuck"), Hash::of(b"gone"));
        cs.put_staged(&gone, b"gone").unwrap();
        // Something that unlink refuses (a directory with a file in it) where the staged copy
        // of `stuck` would be.
        let blocked = cs.staged_path(&stuck);
        fs::create_dir_all(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        assert_eq!(
            cs.unstage([&stuck, &gone]),
            1,
            "the others are still removed"
        );
        assert!(!cs.is_staged(&gone));
        assert!(
            blocked.exists(),
            "what could not be removed is left as it was"
        );
        // The collection meets it later, reports it and goes on.
        let later = now_ns() + 2 * 3600 * 1_000_000_000;
        let report = cs.gc(Duration::from_secs(3600), later, |_| false).unwrap();
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        assert!(
            report.failures[0].to_string().contains("removing"),
            "{}",
            report.failures[0]
        );
    }
}
