//! Checking every chunk the store holds against its name (`botsync verify`).
//!
//! Reads verify chunks anyway (a corrupt one reads as missing and is deleted), but a chunk that
//! is never read stays corrupt unnoticed until the day it is needed, which is the day its file
//! was lost elsewhere. This walks the kept and the staged chunks, re-hashes each, and deletes
//! the ones whose bytes no longer match their id, so the next sync that needs them fetches them
//! again. Manifests are checked the same way when they are read.

use std::fs;
use std::path::Path;

use super::gc::is_fanout_name;
use super::{ChunkStore, STAGING};
use crate::hash::Hash;

/// What [`ChunkStore::verify_all`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCheck {
    /// Chunk files re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Chunk files whose bytes did not match their id: deleted.
    pub corrupt: u64,
    /// Chunk files that could not be read (left in place, counted).
    pub unreadable: u64,
}

impl ChunkStore {
    /// Re-hash every kept and staged chunk; delete the corrupt ones.
    pub fn verify_all(&self) -> ChunkCheck {
        let mut check = ChunkCheck::default();
        self.verify_fanout(&self.dir, &mut check);
        self.verify_fanout(&self.dir.join(STAGING), &mut check);
        check
    }

    fn verify_fanout(&self, root: &Path, check: &mut ChunkCheck) {
        let Ok(buckets) = fs::read_dir(root) else {
            return;
        };
        for bucket in buckets.flatten() {
            let name = bucket.file_name();
            let name = name.to_string_lossy();
            if !is_fanout_name(&name) || !bucket.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(files) = fs::read_dir(bucket.path()) else {
                check.unreadable += 1;
                continue;
            };
            for file in files.flatten() {
                let rest = file.file_name();
                let Ok(id) = format!("{name}{}", rest.to_string_lossy()).parse::<Hash>() else {
                    continue;
                };
                let path = file.path();
                match fs::read(&path) {
                    Ok(bytes) => {
                        check.checked += 1;
                        check.bytes += bytes.len() as u64;
                        if Hash::of(&bytes) != id {
                            self.discard_corrupt(&path, &id);
                            check.corrupt += 1;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not read a stored chunk");
                        check.unreadable += 1;
                    }
                }
            }
        }
    }
}
