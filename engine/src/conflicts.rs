//! [`ConflictStore`]: the losing versions kept under `.botsync/conflicts/` and their records.
//!
//! Every kept loser is a plain file (`<id>-<name>`, the file's own name so an editor opens it as
//! what it is) and a JSON record (`records/<id>.json`) saying which path it belongs to, both
//! versions (content hash, size, version vector, the peer and agent that made each), when, under
//! which policy, which side lost and on which machine the loser is kept. The id is derived from
//! the path and the losing content, so the same loser of the same path is stored once however
//! often the conflict repeats (the record then takes the newest facts).
//!
//! Records are JSON files next to the kept copies, not sled rows: the index is a rebuildable
//! cache (`crate::store`), while a record must survive an index rebuild as long as its kept
//! copy does, and a user must be able to read both without botsync. `.botsync/` is never
//! synced or scanned, so a kept copy never becomes a conflict of its own.
//!
//! This module only keeps and reads what it is given: deciding what is a conflict is the
//! plan's, resolving one is the workspace's (`workspace/review.rs`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::entry::FileEntry;
use crate::error::{IoContext, IoError};
use crate::hash::Hash;
use crate::layout::STATE_DIR;
use crate::path::RelPath;
use crate::peer::PeerId;

/// The directory of the records, inside the conflicts directory.
const RECORDS: &str = "records";
/// The longest file name kept from the original (bytes), so `<id>-<name>` stays under NAME_MAX.
const MAX_NAME: usize = 200;

/// Which side of a conflict, seen from the machine that keeps the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The version this machine had.
    Local,
    /// The version a peer sent.
    Remote,
}

impl Side {
    /// `local` or `remote`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

/// What kind of conflict a record is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ConflictKind {
    /// Two concurrent versions of one path: one won, the loser is kept.
    Content,
    /// A peer's path differs from one of ours only in letter case: the peer's version was not
    /// taken (it would overwrite ours on a case-insensitive file system).
    CaseCollision {
        /// Our path that the peer's collides with.
        local_path: RelPath,
    },
    /// A `json` merge where both sides changed the same keys: the merge took the winner's
    /// values there, and the loser is kept whole.
    MergedKeys {
        /// JSON pointers of the keys that took the winner's value.
        keys: Vec<String>,
    },
}

/// One version taking part in a conflict, as the record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFacts {
    /// Content hash (hex; all zeros for a deletion).
    pub content: String,
    /// Size in bytes.
    pub size: u64,
    /// True if the version is a deletion.
    pub deleted: bool,
    /// The version vector: copy-safe peer id and counter.
    pub vector: Vec<(String, u64)>,
    /// The peer that made the version (copy-safe id).
    pub peer: String,
    /// The agent label recorded with it (empty when none was given).
    pub agent: String,
    /// The machine it was made on, as that machine names itself (empty when not carried).
    #[serde(default)]
    pub machine: String,
    /// Its competing time (ns since the epoch).
    pub mtime_ns: i64,
}

impl VersionFacts {
    /// The facts of `entry`.
    pub fn of(entry: &FileEntry) -> VersionFacts {
        VersionFacts {
            content: entry.content.to_hex(),
            size: entry.size,
            deleted: entry.is_tombstone(),
            vector: entry
                .version
                .iter()
                .map(|(p, c)| (p.to_copy_safe(), *c))
                .collect(),
            peer: entry.changed_by.peer.to_copy_safe(),
            agent: entry.changed_by.agent.as_str().to_owned(),
            machine: entry.changed_by.machine.as_str().to_owned(),
            mtime_ns: entry.mtime_ns,
        }
    }

    /// The short form of the author's peer id (for names and output).
    pub fn peer_short(&self) -> String {
        self.peer
            .parse::<PeerId>()
            .map(|p| p.short())
            .unwrap_or_else(|_| self.peer.chars().filter(|c| *c != '-').take(8).collect())
    }
}

/// One open conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// Stable id: derived from the path and the losing content.
    pub id: String,
    /// The path in conflict.
    pub path: RelPath,
    /// Content conflict or case collision.
    #[serde(flatten)]
    pub kind: ConflictKind,
    /// When the conflict was (last) recorded (ns since the epoch).
    pub at_ns: i64,
    /// The merge policy that decided it (`newest` until per-path policies exist).
    pub policy: String,
    /// Which version lost.
    pub lost: Side,
    /// The machine that keeps the loser (this one; copy-safe id).
    pub kept_on: String,
    /// The kept copy, relative to the workspace (`.botsync/conflicts/...`); `None` when there
    /// are no bytes to keep (a case collision: the peer still has its file).
    pub kept: Option<String>,
    /// This machine's version.
    pub local: VersionFacts,
    /// The peer's version.
    pub remote: VersionFacts,
}

impl ConflictRecord {
    /// The version that lost.
    pub fn loser(&self) -> &VersionFacts {
        match self.lost {
            Side::Local => &self.local,
            Side::Remote => &self.remote,
        }
    }
}

/// What a new record says; [`ConflictStore::keep`] adds the id and the kept copy.
#[derive(Debug, Clone)]
pub struct NewConflict<'a> {
    /// Content conflict or case collision.
    pub kind: ConflictKind,
    /// This machine's version.
    pub local: &'a FileEntry,
    /// The peer's version.
    pub remote: &'a FileEntry,
    /// Which one lost.
    pub lost: Side,
    /// The policy that decided.
    pub policy: &'a str,
    /// This machine.
    pub kept_on: PeerId,
    /// Now (ns since the epoch).
    pub now_ns: i64,
}

impl NewConflict<'_> {
    /// The version that lost.
    fn loser(&self) -> &FileEntry {
        match self.lost {
            Side::Local => self.local,
            Side::Remote => self.remote,
        }
    }
}

/// A conflict store failure.
#[derive(Debug, thiserror::Error)]
pub enum ConflictError {
    /// A file operation failed.
    #[error("conflicts: {0}")]
    Io(#[from] IoError),
    /// A record could not be written (a bug, not bad data).
    #[error("conflicts: encoding the record of {path} failed: {reason}")]
    Encode {
        /// The path of the record.
        path: RelPath,
        /// The encoder's message.
        reason: String,
    },
}

/// The kept losers and their records of one workspace (`.botsync/conflicts/`).
#[derive(Debug, Clone)]
pub struct ConflictStore {
    dir: PathBuf,
}

impl ConflictStore {
    /// The store in `dir` (usually `.botsync/conflicts`); created on first write.
    pub fn new(dir: &Path) -> ConflictStore {
        ConflictStore {
            dir: dir.to_path_buf(),
        }
    }

    /// Keep the loser of a conflict: copy its bytes from `loser_file` (when given and present)
    /// and write the record. The same loser of the same path is stored once. Returns the record,
    /// or `None` if the loser's file vanished before it could be copied (then there is nothing
    /// to keep: the file that is in place is the one a scan will see).
    pub fn keep(
        &self,
        new: NewConflict<'_>,
        loser_file: Option<&Path>,
    ) -> Result<Option<ConflictRecord>, ConflictError> {
        let name = kept_name(&new);
        let kept = match loser_file {
            Some(src) => match copy_atomic(src, &self.dir.join(&name), &self.dir) {
                Ok(()) => Some(name),
                Err(e) if e.source.kind() == io::ErrorKind::NotFound && !src.exists() => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        self.record(new, kept).map(Some)
    }

    /// Keep a loser whose bytes are in memory (a merge that fell back to one side) and write
    /// its record, as [`ConflictStore::keep`] does.
    pub fn keep_bytes(
        &self,
        new: NewConflict<'_>,
        bytes: &[u8],
    ) -> Result<ConflictRecord, ConflictError> {
        let name = kept_name(&new);
        fs::create_dir_all(&self.dir).io_context("creating", &self.dir)?;
        write_atomic(&self.dir.join(&name), bytes, &self.dir)?;
        self.record(new, Some(name))
    }

    /// Write the record of `new`, whose loser was kept as `kept` (a name in the directory).
    fn record(
        &self,
        new: NewConflict<'_>,
        kept: Option<String>,
    ) -> Result<ConflictRecord, ConflictError> {
        let loser = new.loser();
        let record = ConflictRecord {
            id: conflict_id(&loser.path, &loser.content),
            path: loser.path.clone(),
            kind: new.kind,
            at_ns: new.now_ns,
            policy: new.policy.to_owned(),
            lost: new.lost,
            kept_on: new.kept_on.to_copy_safe(),
            kept: kept.map(|name| format!("{STATE_DIR}/conflicts/{name}")),
            local: VersionFacts::of(new.local),
            remote: VersionFacts::of(new.remote),
        };
        self.write_record(&record)?;
        Ok(record)
    }

    /// Every open conflict, oldest first. A record that cannot be read is skipped with a
    /// warning (it is a file a user may have edited), never a failure.
    pub fn list(&self) -> Result<Vec<ConflictRecord>, ConflictError> {
        let dir = self.dir.join(RECORDS);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(IoError {
                    action: "listing",
                    path: dir,
                    source: e,
                }
                .into());
            }
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.io_context("listing", &dir)?;
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(reason) => {
                    tracing::warn!(record = %path.display(), %reason, "unreadable conflict record skipped");
                }
            }
        }
        out.sort_by(|a: &ConflictRecord, b| (a.at_ns, &a.path).cmp(&(b.at_ns, &b.path)));
        Ok(out)
    }

    /// The open conflicts of `path` (its case-collision records included), oldest first.
    pub fn for_path(&self, path: &RelPath) -> Result<Vec<ConflictRecord>, ConflictError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| {
                &r.path == path
                    || matches!(&r.kind, ConflictKind::CaseCollision { local_path } if local_path == path)
            })
            .collect())
    }

    /// Where a record's kept copy is on disk.
    pub fn kept_file(&self, record: &ConflictRecord) -> Option<PathBuf> {
        let name = record.kept.as_ref()?.rsplit('/').next()?.to_owned();
        Some(self.dir.join(name))
    }

    /// Close a record: remove it and its kept copy.
    pub fn close(&self, record: &ConflictRecord) -> Result<(), ConflictError> {
        if let Some(kept) = self.kept_file(record) {
            remove_if_present(&kept)?;
        }
        remove_if_present(&self.record_path(&record.id))?;
        Ok(())
    }

    /// Drop a copy [`ConflictStore::keep`] just made (named by its `kept` path) and its record:
    /// the loser was not replaced after all.
    pub fn discard(&self, kept: &str) -> Result<(), ConflictError> {
        let name = kept.rsplit('/').next().unwrap_or(kept);
        let Some((id, _)) = name.split_once('-') else {
            return Ok(());
        };
        remove_if_present(&self.dir.join(name))?;
        remove_if_present(&self.record_path(id))?;
        Ok(())
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(RECORDS).join(format!("{id}.json"))
    }

    fn write_record(&self, record: &ConflictRecord) -> Result<(), ConflictError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| ConflictError::Encode {
            path: record.path.clone(),
            reason: e.to_string(),
        })?;
        let dir = self.dir.join(RECORDS);
        fs::create_dir_all(&dir).io_context("creating", &dir)?;
        write_atomic(&self.record_path(&record.id), &bytes, &dir)?;
        Ok(())
    }
}

/// The id of the conflict whose loser is `content` at `path`: the first 16 hex digits of a
/// hash of both, so one loser of one path is one record however often it loses.
pub fn conflict_id(path: &RelPath, content: &Hash) -> String {
    let mut bytes = path.as_str().as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(content.as_bytes());
    Hash::of(&bytes).to_hex()[..16].to_owned()
}

/// `<id>-<file name>` of the loser of `new`, the name cut to [`MAX_NAME`] bytes at a character
/// boundary.
fn kept_name(new: &NewConflict<'_>) -> String {
    let loser = new.loser();
    let id = conflict_id(&loser.path, &loser.content);
    let name = loser.path.file_name();
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{id}-{}", &name[..end])
}

fn copy_atomic(src: &Path, dst: &Path, dir: &Path) -> Result<(), IoError> {
    let bytes = fs::read(src).io_context("reading the losing version", src)?;
    fs::create_dir_all(dir).io_context("creating", dir)?;
    write_atomic(dst, &bytes, dir)
}

/// Write `bytes` to `dst` through a temp file in `dir`, fsynced, renamed into place.
fn write_atomic(dst: &Path, bytes: &[u8], dir: &Path) -> Result<(), IoError> {
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        dst.file_name().and_then(|n| n.to_str()).unwrap_or("record")
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp).io_context("creating", &tmp)?;
        f.write_all(bytes).io_context("writing", &tmp)?;
        f.sync_all().io_context("syncing", &tmp)?;
        fs::rename(&tmp, dst).io_context("renaming into place", dst)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn remove_if_present(path: &Path) -> Result<(), IoError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).io_context("removing", path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::entry::{EntryKind, Mode};
    use crate::peer::{AgentLabel, Attribution, MachineName};
    use crate::vector::VersionVector;

    fn entry(path: &str, bytes: &[u8], peer: u8, agent: &str) -> FileEntry {
        FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            size: bytes.len() as u64,
            mtime_ns: 5,
            mode: Mode::default(),
            content: Hash::of(bytes),
            chunks: Vec::new(),
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::from_pairs([(PeerId([peer; 32]), 1)]),
            parent: None,
            changed_by: Attribution {
                peer: PeerId([peer; 32]),
                agent: AgentLabel::new(agent),
                machine: MachineName::default(),
            },
        }
    }

    #[test]
    fn a_repeated_loser_is_kept_once_and_closing_removes_copy_and_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ConflictStore::new(&tmp.path().join("conflicts"));
        let src = tmp.path().join("MEMORY.md");
        fs::write(&src, "ours\n").unwrap();
        let ours = entry("MEMORY.md", b"ours\n", 1, "claude");
        let theirs = entry("MEMORY.md", b"theirs\n", 2, "codex");
        let new = |now_ns| NewConflict {
            kind: ConflictKind::Content,
            local: &ours,
            remote: &theirs,
            lost: Side::Local,
            policy: "newest",
            kept_on: PeerId([1; 32]),
            now_ns,
        };
        let first = store.keep(new(10), Some(&src)).unwrap().unwrap();
        let again = store.keep(new(20), Some(&src)).unwrap().unwrap();
        assert_eq!(first.id, again.id);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1, "the same loser is one record");
        assert_eq!(listed[0].at_ns, 20);
        assert_eq!(listed[0].local.agent, "claude");
        assert_eq!(listed[0].remote.agent, "codex");
        let kept = store.kept_file(&listed[0]).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"ours\n");
        assert!(
            kept.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("-MEMORY.md")
        );

        store.close(&listed[0]).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!kept.exists());
    }

    #[test]
    fn a_loser_given_as_bytes_is_kept_as_a_plain_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ConflictStore::new(&tmp.path().join("conflicts"));
        let ours = entry("memory/log.jsonl", b"{}\n", 1, "");
        let theirs = entry("memory/log.jsonl", b"{\"a\":1}\n", 2, "");
        let r = store
            .keep_bytes(
                NewConflict {
                    kind: ConflictKind::Content,
                    local: &ours,
                    remote: &theirs,
                    lost: Side::Remote,
                    policy: "json",
                    kept_on: PeerId([1; 32]),
                    now_ns: 1,
                },
                b"{\"a\":1}\n",
            )
            .unwrap();
        assert_eq!(r.loser().peer, PeerId([2; 32]).to_copy_safe());
        assert_eq!(
            fs::read(store.kept_file(&r).unwrap()).unwrap(),
            b"{\"a\":1}\n"
        );
    }

    #[test]
    fn a_vanished_loser_keeps_nothing_and_a_broken_record_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conflicts");
        let store = ConflictStore::new(&dir);
        let ours = entry("a.md", b"x", 1, "");
        let theirs = entry("a.md", b"y", 2, "");
        let new = NewConflict {
            kind: ConflictKind::Content,
            local: &ours,
            remote: &theirs,
            lost: Side::Local,
            policy: "newest",
            kept_on: PeerId([1; 32]),
            now_ns: 1,
        };
        assert!(
            store
                .keep(new, Some(&tmp.path().join("gone.md")))
                .unwrap()
                .is_none()
        );
        fs::create_dir_all(dir.join(RECORDS)).unwrap();
        fs::write(dir.join(RECORDS).join("junk.json"), "{not json").unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
