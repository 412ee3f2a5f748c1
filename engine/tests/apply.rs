//! Applying a peer's versions to a real workspace on disk, as a sync does.

// Test helpers unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use botsync_engine::apply::{
    ApplyContext, ApplyError, ApplyItem, ApplyOutcome, BATCH_FILES, ChunkSource, NoSource,
    SourceError, TEMP_PREFIX, apply_batch, missing_chunks,
};
use botsync_engine::plan::{Action, Outcome};
use botsync_engine::store::HistoryAction;
use botsync_engine::workspace::Workspace as Replica;
use botsync_engine::{
    AgentLabel, Attribution, EntryKind, FileEntry, Hash, LocalEntry, MachineName, RelPath,
};
use common::applying::{LAPTOP, ME, NOW, Workspace, notes, version};
use common::wall_clock_ns;

#[test]
fn a_new_note_from_a_peer_appears_whole() {
    let ws = Workspace::new();
    let text = notes(200, "new");
    let (entry, mut laptop) = version("memory/2026-11-21.md", &text, LAPTOP);

    let outcome = ws.apply(&entry, None, &mut laptop).unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome::Written {
            bytes_from_local: 0,
            bytes_copied: 0,
            bytes_from_store: 0,
            bytes_from_source: text.len() as u64
        }
    );
    assert_eq!(ws.read("memory/2026-11-21.md"), text);
    let recorded = ws.store.local_get(&entry.path).unwrap().unwrap();
    assert_eq!(recorded.entry, entry);
    assert_eq!(recorded.recorded_at_ns, NOW);
    let history = ws.store.history_for(&entry.path, 10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].action, history[0].from_peer),
        (HistoryAction::Created, LAPTOP)
    );
    assert!(ws.temp_files().is_empty());
}

#[test]
fn a_modified_note_replaces_the_old_which_stays_restorable() {
    let ws = Workspace::new();
    let old_text = notes(200, "v1");
    let local = ws.write_and_scan("MEMORY.md", &old_text);
    let mut new_text = old_text.clone();
    new_text.extend_from_slice(b"- the laptop learned something new\n");
    let (entry, mut laptop) = version("MEMORY.md", &new_text, LAPTOP);

    let outcome = ws.apply(&entry, Some(&local), &mut laptop).unwrap();

    // Unchanged chunks came from the old file on disk; only the tail came from the peer.
    let ApplyOutcome::Written {
        bytes_from_local,
        bytes_from_source,
        ..
    } = outcome
    else {
        panic!("expected a write, got {outcome:?}");
    };
    assert!(bytes_from_local > bytes_from_source, "{outcome:?}");
    assert_eq!(ws.read("MEMORY.md"), new_text);

    // The old version is in the chunk store and can be rebuilt from its content hash.
    let history = ws.store.history_for(&entry.path, 1).unwrap();
    assert_eq!(history[0].action, HistoryAction::Modified);
    let old_content = history[0].old_content.unwrap();
    assert_eq!(old_content, local.entry.content);
    let manifest = ws.chunks.manifest(&old_content).unwrap().unwrap();
    let restored: Vec<u8> = manifest
        .iter()
        .flat_map(|c| ws.chunks.get(&c.id).unwrap().unwrap())
        .collect();
    assert_eq!(restored, old_text);
}

#[test]
fn a_renamed_file_is_rebuilt_from_local_bytes_without_fetching() {
    let ws = Workspace::new();
    let text = notes(300, "topic");
    ws.write_and_scan("memory/topics/draft.md", &text);
    let (renamed, _) = version("memory/topics/rust.md", &text, LAPTOP);

    assert!(
        missing_chunks(&ws.store, &ws.chunks, &renamed)
            .unwrap()
            .is_empty(),
        "nothing to fetch"
    );
    let outcome = ws.apply(&renamed, None, &mut NoSource).unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome::Written {
            bytes_from_local: text.len() as u64,
            bytes_copied: 0,
            bytes_from_store: 0,
            bytes_from_source: 0
        }
    );
    assert_eq!(ws.read("memory/topics/rust.md"), text);
}

#[test]
fn a_file_edited_after_planning_is_never_clobbered() {
    let ws = Workspace::new();
    let planned_from = ws.write_and_scan("USER.md", b"name: Ada\n");
    let (entry, mut laptop) = version("USER.md", b"name: Ada Lovelace\n", LAPTOP);

    // The local agent edits USER.md after the sync planned but before it applies.
    fs::write(ws.root.join("USER.md"), b"name: Ada\ntimezone: UTC\n").unwrap();
    let outcome = ws.apply(&entry, Some(&planned_from), &mut laptop).unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome::LocalChanged {
            path: entry.path.clone()
        }
    );
    assert_eq!(ws.read("USER.md"), b"name: Ada\ntimezone: UTC\n");
    assert_eq!(ws.store.local_get(&entry.path).unwrap(), Some(planned_from));
    assert!(ws.store.history_recent(10).unwrap().is_empty());
    assert!(ws.temp_files().is_empty());
}

#[test]
fn an_edit_during_the_apply_is_noticed_before_the_rename() {
    /// A peer that is slow: while its chunk is in flight, the local agent edits the file.
    struct EditWhileFetching<'a> {
        file: PathBuf,
        chunks: &'a mut HashMap<Hash, Vec<u8>>,
    }
    impl ChunkSource for EditWhileFetching<'_> {
        fn fetch(&mut self, id: &Hash, len: u32) -> Result<Option<Vec<u8>>, SourceError> {
            fs::write(&self.file, b"- edited by the local agent meanwhile\n")?;
            self.chunks.fetch(id, len)
        }
    }
    let ws = Workspace::new();
    let planned_from = ws.write_and_scan("memory/log.md", b"- first\n");
    let (entry, mut laptop) = version("memory/log.md", b"- first\n- from the laptop\n", LAPTOP);
    let mut source = EditWhileFetching {
        file: ws.root.join("memory/log.md"),
        chunks: &mut laptop,
    };

    let outcome = ws.apply(&entry, Some(&planned_from), &mut source).unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome::LocalChanged {
            path: entry.path.clone()
        }
    );
    assert_eq!(
        ws.read("memory/log.md"),
        b"- edited by the local agent meanwhile\n"
    );
    assert!(ws.temp_files().is_empty());
}

#[test]
fn a_symlinked_directory_is_never_written_through() {
    let ws = Workspace::new();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), ws.root.join("memory")).unwrap();
    let (entry, mut laptop) = version("memory/inject.md", b"payload\n", LAPTOP);

    let err = ws.apply(&entry, None, &mut laptop).unwrap_err();

    assert!(
        matches!(&err, ApplyError::UnsafePath { component, .. } if component.ends_with("memory")),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing appears outside"
    );

    // A symlink deeper in the path is refused as well, and so is a file where a directory
    // should be.
    fs::create_dir_all(ws.root.join("skills")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), ws.root.join("skills/evil")).unwrap();
    let (deep, mut laptop) = version("skills/evil/new/SKILL.md", b"payload\n", LAPTOP);
    assert!(matches!(
        ws.apply(&deep, None, &mut laptop),
        Err(ApplyError::UnsafePath { .. })
    ));
    fs::write(ws.root.join("config"), b"a file").unwrap();
    let (under_file, mut laptop) = version("config/x.json", b"{}", LAPTOP);
    assert!(matches!(
        ws.apply(&under_file, None, &mut laptop),
        Err(ApplyError::UnsafePath { .. })
    ));
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn a_forged_chunk_is_rejected() {
    let ws = Workspace::new();
    let text = notes(50, "forged");
    let (entry, mut laptop) = version("memory/facts.md", &text, LAPTOP);
    let victim = entry.chunks[1].id;
    let forged = laptop.get_mut(&victim).unwrap();
    forged[0] ^= 0xFF;

    let err = ws.apply(&entry, None, &mut laptop).unwrap_err();

    assert!(
        matches!(err, ApplyError::ChunkMismatch { id, .. } if id == victim),
        "{err}"
    );
    assert!(!ws.root.join("memory/facts.md").exists());
    assert!(ws.temp_files().is_empty());
}

#[test]
fn missing_chunks_leave_no_temp_file_and_a_retry_fetches_only_those() {
    let ws = Workspace::new();
    let text = notes(200, "partial");
    let (entry, mut laptop) = version("memory/big.md", &text, LAPTOP);
    // The connection dropped: the peer's chunks 3 and 5 never arrived.
    let lost: Vec<Hash> = vec![entry.chunks[3].id, entry.chunks[5].id];
    let mut partial = laptop.clone();
    for id in &lost {
        partial.remove(id);
    }
    assert_eq!(
        missing_chunks(&ws.store, &ws.chunks, &entry).unwrap().len(),
        entry.chunks.len()
    );

    let outcome = ws.apply(&entry, None, &mut partial).unwrap();

    assert_eq!(outcome, ApplyOutcome::MissingChunks { ids: lost.clone() });
    assert!(!ws.root.join("memory/big.md").exists());
    assert!(ws.temp_files().is_empty());
    // What did arrive was staged in the chunk store: only the lost chunks are still missing.
    let still: Vec<Hash> = missing_chunks(&ws.store, &ws.chunks, &entry)
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(still, lost);

    let mut retry: HashMap<Hash, Vec<u8>> = lost
        .iter()
        .map(|id| (*id, laptop.remove(id).unwrap()))
        .collect();
    let outcome = ws.apply(&entry, None, &mut retry).unwrap();
    let ApplyOutcome::Written {
        bytes_from_source,
        bytes_from_store,
        ..
    } = outcome
    else {
        panic!("expected a write, got {outcome:?}");
    };
    let lost_bytes: u64 = entry
        .chunks
        .iter()
        .filter(|c| lost.contains(&c.id))
        .map(|c| u64::from(c.len))
        .sum();
    assert_eq!(bytes_from_source, lost_bytes);
    assert_eq!(bytes_from_store, text.len() as u64 - lost_bytes);
    assert_eq!(ws.read("memory/big.md"), text);
}

#[test]
fn a_remote_deletion_keeps_the_last_version() {
    let ws = Workspace::new();
    let text = notes(40, "obsolete");
    let local = ws.write_and_scan("memory/old-topic.md", &text);
    let mut tombstone = local.entry.clone();
    tombstone.kind = EntryKind::Tombstone;
    tombstone.size = 0;
    tombstone.chunks.clear();
    tombstone.content = Hash::ZERO;
    tombstone.version.increment(LAPTOP).unwrap();
    tombstone.changed_by.peer = LAPTOP;

    let outcome = ws.apply(&tombstone, Some(&local), &mut NoSource).unwrap();

    assert_eq!(outcome, ApplyOutcome::Deleted);
    assert!(!ws.root.join("memory/old-topic.md").exists());
    let recorded = ws.store.local_get(&tombstone.path).unwrap().unwrap();
    assert!(recorded.entry.is_tombstone());
    assert!(
        ws.store
            .locate_chunk(&local.entry.chunks[0].id)
            .unwrap()
            .is_empty()
    );
    let history = ws.store.history_for(&tombstone.path, 1).unwrap();
    assert_eq!(
        (history[0].action, history[0].old_content),
        (HistoryAction::Deleted, Some(local.entry.content))
    );
    let manifest = ws.chunks.manifest(&local.entry.content).unwrap().unwrap();
    let restored: Vec<u8> = manifest
        .iter()
        .flat_map(|c| ws.chunks.get(&c.id).unwrap().unwrap())
        .collect();
    assert_eq!(restored, text);

    // Applying the same deletion again changes nothing on disk.
    assert_eq!(
        ws.apply(&tombstone, Some(&recorded), &mut NoSource)
            .unwrap(),
        ApplyOutcome::AlreadyCurrent
    );
}

#[test]
fn a_deletion_of_a_locally_edited_file_is_refused() {
    let ws = Workspace::new();
    let local = ws.write_and_scan("memory/keep.md", b"v1\n");
    let mut tombstone = local.entry.clone();
    tombstone.kind = EntryKind::Tombstone;
    tombstone.size = 0;
    tombstone.chunks.clear();
    tombstone.content = Hash::ZERO;
    fs::write(ws.root.join("memory/keep.md"), b"v1\nedited\n").unwrap();

    let outcome = ws.apply(&tombstone, Some(&local), &mut NoSource).unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome::LocalChanged {
            path: tombstone.path.clone()
        }
    );
    assert_eq!(ws.read("memory/keep.md"), b"v1\nedited\n");
}

#[test]
fn identical_content_only_updates_the_index() {
    let ws = Workspace::new();
    let local = ws.write_and_scan("IDENTITY.md", b"I am the server agent\n");
    let (mut same, _) = version("IDENTITY.md", b"I am the server agent\n", LAPTOP);
    same.version = local.entry.version.merge(&same.version);
    let inode_before = fs::metadata(ws.root.join("IDENTITY.md")).unwrap().ino();

    let outcome = ws.apply(&same, Some(&local), &mut NoSource).unwrap();

    assert_eq!(outcome, ApplyOutcome::AlreadyCurrent);
    assert_eq!(
        fs::metadata(ws.root.join("IDENTITY.md")).unwrap().ino(),
        inode_before,
        "file untouched"
    );
    let recorded = ws.store.local_get(&same.path).unwrap().unwrap();
    assert_eq!(recorded.entry.version, same.version);
    assert_eq!(recorded.stat, local.stat);
}

#[test]
fn a_batch_applies_each_entry_independently() {
    let ws = Workspace::new();
    let edited_locally = ws.write_and_scan("USER.md", b"name: Ada\n");
    let mut versions: Vec<(FileEntry, Option<LocalEntry>)> = (0..300)
        .map(|i| {
            (
                version(
                    &format!("memory/day-{i:03}.md"),
                    &notes(3, &format!("day {i}")),
                    LAPTOP,
                )
                .0,
                None,
            )
        })
        .collect();
    versions.push((
        version("USER.md", b"name: Ada Lovelace\n", LAPTOP).0,
        Some(edited_locally),
    ));
    let lost = version("memory/lost.md", &notes(20, "lost"), LAPTOP).0;
    versions.push((lost.clone(), None));
    let mut laptop: HashMap<Hash, Vec<u8>> = HashMap::new();
    for i in 0..300 {
        laptop.extend(
            version(
                &format!("memory/day-{i:03}.md"),
                &notes(3, &format!("day {i}")),
                LAPTOP,
            )
            .1,
        );
    }
    laptop.extend(version("USER.md", b"name: Ada Lovelace\n", LAPTOP).1);
    // The local agent edits USER.md after planning.
    fs::write(ws.root.join("USER.md"), b"name: Ada\nlanguage: en\n").unwrap();

    let items: Vec<ApplyItem<'_>> = versions
        .iter()
        .map(|(target, expected)| ApplyItem {
            target,
            expected: expected.as_ref(),
            merged: false,
        })
        .collect();
    let ctx = ApplyContext {
        root: &ws.root,
        store: &ws.store,
        chunks: &ws.chunks,
        now_ns: NOW,
    };
    let results = apply_batch(&ctx, &items, &mut laptop);

    assert_eq!(results.len(), items.len());
    for (i, result) in results[..300].iter().enumerate() {
        assert!(
            matches!(result, Ok(ApplyOutcome::Written { .. })),
            "{result:?}"
        );
        assert_eq!(
            ws.read(&format!("memory/day-{i:03}.md")),
            notes(3, &format!("day {i}"))
        );
    }
    assert!(matches!(
        results[300],
        Ok(ApplyOutcome::LocalChanged { .. })
    ));
    assert_eq!(ws.read("USER.md"), b"name: Ada\nlanguage: en\n");
    assert!(
        matches!(&results[301], Ok(ApplyOutcome::MissingChunks { ids }) if ids.len() == lost.chunks.len())
    );
    assert!(ws.temp_files().is_empty());
    assert_eq!(
        ws.store.local_all().unwrap().len(),
        301,
        "300 new notes and USER.md as it was"
    );
    assert_eq!(ws.store.history_recent(1000).unwrap().len(), 300);
}

#[test]
fn a_symlink_at_the_target_is_replaced_never_followed() {
    let ws = Workspace::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("passwd");
    fs::write(&outside, b"root:x:0:0\n").unwrap();
    std::os::unix::fs::symlink(&outside, ws.root.join("USER.md")).unwrap();
    let (entry, mut laptop) = version("USER.md", b"name: Ada\n", LAPTOP);

    // The plan did not know of USER.md, yet something is there: it is left alone.
    let outcome = ws.apply(&entry, None, &mut laptop).unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome::LocalChanged {
            path: entry.path.clone()
        }
    );
    assert_eq!(fs::read(&outside).unwrap(), b"root:x:0:0\n");
    assert!(
        fs::symlink_metadata(ws.root.join("USER.md"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(ws.temp_files().is_empty());
}

#[test]
fn a_deletion_of_a_file_already_deleted_here_converges() {
    let ws = Workspace::new();
    let local = ws.write_and_scan("memory/scratch.md", b"temporary\n");
    let mut tombstone = local.entry.clone();
    tombstone.kind = EntryKind::Tombstone;
    tombstone.size = 0;
    tombstone.chunks.clear();
    tombstone.content = Hash::ZERO;
    tombstone.version.increment(LAPTOP).unwrap();
    // Both sides deleted it; the scanner here has not run yet.
    fs::remove_file(ws.root.join("memory/scratch.md")).unwrap();

    let outcome = ws.apply(&tombstone, Some(&local), &mut NoSource).unwrap();

    assert_eq!(outcome, ApplyOutcome::AlreadyCurrent);
    assert_eq!(
        ws.store.local_get(&tombstone.path).unwrap().unwrap().entry,
        tombstone
    );
}

/// A real replica (index, chunk store, selection) that received `files` from the laptop: every
/// chunk staged in its chunk store, as a sync does before applying. Returns the incoming versions.
fn receive(
    replica: &Replica,
    files: &[(String, Vec<u8>)],
    parents: &[Option<&FileEntry>],
) -> Vec<FileEntry> {
    files
        .iter()
        .zip(parents)
        .map(|((path, bytes), parent)| {
            let (mut entry, chunks) = version(path, bytes, LAPTOP);
            for (id, b) in &chunks {
                replica.put_chunk(id, b).unwrap();
            }
            if let Some(parent) = parent {
                entry.version = parent.version.clone();
                entry.version.increment(LAPTOP).unwrap();
                entry.parent = Some(parent.content);
            }
            entry
        })
        .collect()
}

fn open_replica(root: &Path) -> Replica {
    Replica::init(root, None).unwrap();
    let me = Attribution {
        peer: ME,
        agent: AgentLabel::new("desk-agent"),
        machine: MachineName::default(),
    };
    Replica::open(root, me).unwrap().0
}

#[test]
fn more_than_a_batch_of_new_notes_lands_whole_with_one_index_entry_each() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = open_replica(tmp.path());
    let count = BATCH_FILES + 88;
    let files: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            (
                format!("memory/d{:02}/note-{i:04}.md", i % 7),
                notes(2 + i % 5, &format!("note {i}")),
            )
        })
        .collect();
    let incoming = receive(&replica, &files, &vec![None; count]);
    let plan = replica.plan(incoming.clone()).unwrap();

    let reports = replica.apply(plan, NOW).unwrap();

    assert_eq!(reports.len(), count);
    for (report, ((path, bytes), entry)) in reports.iter().zip(files.iter().zip(&incoming)) {
        assert_eq!(report.path.as_str(), path);
        assert_eq!(report.outcome, Outcome::Done, "{path}");
        let on_disk = tmp.path().join(path);
        assert_eq!(fs::read(&on_disk).unwrap(), *bytes, "{path}");
        let recorded = replica.store().local_get(&entry.path).unwrap().unwrap();
        assert_eq!(recorded.entry.content, entry.content, "{path}");
        assert_eq!(recorded.entry.chunks, entry.chunks, "{path}");
        assert_eq!(recorded.recorded_at_ns, NOW);
        let meta = fs::metadata(&on_disk).unwrap();
        let stat = recorded.stat.unwrap();
        assert_eq!((stat.ino, stat.size), (meta.ino(), meta.len()), "{path}");
    }
    assert_eq!(replica.store().local_all().unwrap().len(), count);
    assert_eq!(replica.store().history_recent(10_000).unwrap().len(), count);
    assert_eq!(
        replica.snapshot().1,
        count as u64,
        "the Merkle tree has every file"
    );
    let mut leftovers = Vec::new();
    for dir in fs::read_dir(tmp.path().join("memory")).unwrap().flatten() {
        for f in fs::read_dir(dir.path()).unwrap().flatten() {
            if f.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                leftovers.push(f.path());
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_note_edited_during_a_batched_sync_is_kept_and_the_rest_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = open_replica(tmp.path());
    let count = 60;
    let paths: Vec<String> = (0..count)
        .map(|i| format!("memory/day-{i:02}.md"))
        .collect();
    fs::create_dir_all(tmp.path().join("memory")).unwrap();
    for (i, p) in paths.iter().enumerate() {
        fs::write(tmp.path().join(p), notes(3, &format!("desk {i}"))).unwrap();
    }
    // Scanned a minute later, so the stat cache trusts every file.
    let scanned_at = wall_clock_ns() + 60_000_000_000;
    replica.refresh(scanned_at).unwrap();
    let ours: Vec<FileEntry> = paths
        .iter()
        .map(|p| {
            let path = RelPath::new(p).unwrap();
            replica.store().local_get(&path).unwrap().unwrap().entry
        })
        .collect();
    let theirs: Vec<(String, Vec<u8>)> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), notes(4, &format!("laptop {i}"))))
        .collect();
    let parents: Vec<Option<&FileEntry>> = ours.iter().map(Some).collect();
    let incoming = receive(&replica, &theirs, &parents);
    let plan = replica.plan(incoming).unwrap();
    assert!(plan.iter().all(|i| i.action == Action::Take), "{plan:?}");
    // The desk agent appends to one note after the sync was planned.
    let edited = 17;
    let mut mine = notes(3, &format!("desk {edited}"));
    mine.extend_from_slice(b"- one more thing\n");
    fs::write(tmp.path().join(&paths[edited]), &mine).unwrap();

    let reports = replica.apply(plan, scanned_at).unwrap();

    for (i, report) in reports.iter().enumerate() {
        let on_disk = fs::read(tmp.path().join(&paths[i])).unwrap();
        if i == edited {
            assert_eq!(report.outcome, Outcome::LocalChanged);
            assert_eq!(on_disk, mine, "the local edit is never clobbered");
            let recorded = replica.store().local_get(&report.path).unwrap().unwrap();
            assert_eq!(
                recorded.entry.content, ours[i].content,
                "the index still has ours"
            );
        } else {
            assert_eq!(report.outcome, Outcome::Done, "{}", paths[i]);
            assert_eq!(on_disk, theirs[i].1);
        }
    }
}
