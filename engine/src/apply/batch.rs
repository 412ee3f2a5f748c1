//! The steps of apply, run over a batch of entries so that one sync covers them all.
//!
//! Each entry goes through the same steps as a single apply, in the same order: assemble a
//! verified temp file; make it durable; re-check the target; keep the old version; rename (or
//! unlink); make the directory entry durable; record in the index. A batch runs each step for
//! all entries before the next step, so the two durability barriers are taken once per batch (one
//! `syncfs` each, see [`super::durable`]) instead of once per file, and the index and history
//! are written in one commit each. Entries fail independently.
//!
//! This module owns the order of the steps; the file-system checks live in [`super::disk`],
//! chunk assembly in [`super::assemble`] and the barriers in [`super::durable`].

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::assemble::{assemble, stage_source_chunks};
use super::copy::OldVersion;
use super::disk::{LocalState, TempFile, local_state, prepare_parent, time_from_ns};
use super::durable::{Durable, barrier};
use super::{
    ApplyContext, ApplyError, ApplyItem, ApplyOutcome, ChunkSource, TEMP_PREFIX, check_entry,
    invalid, io_err,
};
use crate::chunkstore::create_temp;
use crate::entry::{FileEntry, LocalEntry, StatSig};
use crate::path::RelPath;
use crate::store::{ApplyIntent, HistoryAction, HistoryRecord, LocalUpdate};

/// Where one entry of the batch stands.
enum Step<'a> {
    /// Finished (written nothing, or failed).
    Done(Result<ApplyOutcome, ApplyError>),
    /// Nothing to change on disk; the index learns of the version.
    Record(Pending),
    /// A verified temp file waits to be made durable and renamed over the target.
    Staged(Staged),
    /// The file is to be deleted.
    Delete {
        fs_path: PathBuf,
        dir: PathBuf,
        /// The device the directory is on.
        dev: u64,
        old: &'a LocalEntry,
    },
    /// Changed on disk; waits for its directory entry to be durable, then the index.
    Placed {
        pending: Pending,
        dir: PathBuf,
        /// The device the directory is on.
        dev: u64,
        /// The replaced file, still open: checked again once the batch is durable.
        replaced: Option<Box<Replaced>>,
    },
}

/// A file an apply replaced, held open with what the last check saw of it: a local write still
/// in flight when the rename happened lands on it, and must not be lost.
struct Replaced {
    held: File,
    checked: fs::Metadata,
    fs_path: PathBuf,
    dir: PathBuf,
}

/// An assembled, verified temp file.
struct Staged {
    temp: TempFile,
    fs_path: PathBuf,
    dir: PathBuf,
    /// The device the temp file (and so its directory) is on.
    dev: u64,
    /// True if a file was at the target when the temp file was made.
    old_present: bool,
    from_local: u64,
    copied: u64,
    from_store: u64,
    from_source: u64,
}

/// What to record once the change is durable.
struct Pending {
    outcome: ApplyOutcome,
    local: LocalEntry,
    history: Option<HistoryRecord>,
}

/// Apply `items` in order of steps; one result per item, in item order.
pub(super) fn run(
    ctx: &ApplyContext<'_>,
    items: &[ApplyItem<'_>],
    source: &mut dyn ChunkSource,
) -> Vec<Result<ApplyOutcome, ApplyError>> {
    let mut steps: Vec<Step<'_>> = items
        .iter()
        .map(|item| prepare(ctx, *item, source).unwrap_or_else(|e| Step::Done(Err(e))))
        .collect();
    // The crash points (`fail_point!`, compiled out of normal builds): the engine's tests kill
    // a process at each of them and check what the next start finds (tests/crash_points.rs).
    fail::fail_point!("apply::staged");
    sync_staged(&mut steps, items);
    fail::fail_point!("apply::durable");
    let intended = record_intents(ctx, &mut steps, items);
    fail::fail_point!("apply::intended");
    for (step, item) in steps.iter_mut().zip(items) {
        let taken = std::mem::replace(step, Step::Done(Ok(ApplyOutcome::AlreadyCurrent)));
        *step = place(ctx, *item, taken).unwrap_or_else(|e| Step::Done(Err(e)));
        fail::fail_point!("apply::placed");
    }
    sync_dirs(&mut steps, items);
    fail::fail_point!("apply::dirs-durable");
    recheck_replaced(&mut steps, items);
    let results = record_all(ctx, steps, items);
    fail::fail_point!("apply::recorded");
    // An entry that failed after its rename keeps its intent: the next scan settles it.
    let settled = intended
        .iter()
        .filter(|&&i| results[i].is_ok())
        .map(|&i| &items[i].target.path);
    if let Err(e) = ctx.store.intents_clear(settled) {
        tracing::warn!(error = %e, "could not clear apply intents; they are settled on next open");
    }
    results
}

/// Between the barriers: durably record, for every file about to be renamed or deleted, the
/// entry it is about to become (`store::intents`), so a process killed before [`record_all`]
/// leaves an index that can be made consistent with the disk (`super::recover`). Returns the
/// items that have an intent. If the intents cannot be written, nothing is renamed.
fn record_intents(
    ctx: &ApplyContext<'_>,
    steps: &mut [Step<'_>],
    items: &[ApplyItem<'_>],
) -> Vec<usize> {
    let mut intended = Vec::new();
    let mut intents = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let target = items[i].target;
        let record = match step {
            Step::Staged(s) => {
                let old = items[i]
                    .expected
                    .filter(|e| !e.entry.is_tombstone() && s.old_present);
                let action = match old {
                    Some(_) if items[i].merged => HistoryAction::Merged,
                    Some(_) => HistoryAction::Modified,
                    None => HistoryAction::Created,
                };
                history(ctx, target, action, old.map(|o| o.entry.content))
            }
            Step::Delete { old, .. } => {
                history(ctx, target, HistoryAction::Deleted, Some(old.entry.content))
            }
            _ => continue,
        };
        intended.push(i);
        intents.push(ApplyIntent {
            target: target.clone(),
            history: Some(record),
            at_ns: ctx.now_ns,
        });
    }
    if let Err(e) = ctx.store.intents_put(&intents) {
        let why = e.to_string();
        for &i in &intended {
            steps[i] = Step::Done(Err(ApplyError::Intent {
                path: items[i].target.path.clone(),
                reason: why.clone(),
            }));
        }
        return Vec::new();
    }
    intended
}

/// Check the entry and the target, and assemble the new version in a temp file.
fn prepare<'a>(
    ctx: &ApplyContext<'_>,
    item: ApplyItem<'a>,
    source: &mut dyn ChunkSource,
) -> Result<Step<'a>, ApplyError> {
    let target = item.target;
    let path = &target.path;
    check_entry(target)?;
    let fs_path = path.on_disk(ctx.root);
    let Some(dir) = prepare_parent(ctx.root, path, !target.is_tombstone())? else {
        // A parent directory is missing, so the file is already absent: as deleted as can be.
        return Ok(Step::Record(current(ctx, target, None)));
    };
    if target.is_tombstone() && !exists(path, &fs_path)? {
        // Already absent (deleted here too, or never there): only the index changes.
        return Ok(Step::Record(current(ctx, target, None)));
    }
    let before = local_state(path, &fs_path, item.expected)?;
    let LocalState::Same(meta) = before else {
        return Ok(Step::Done(Ok(ApplyOutcome::LocalChanged {
            path: path.clone(),
        })));
    };
    if target.is_tombstone() {
        let old = item
            .expected
            .filter(|e| !e.entry.is_tombstone() && meta.is_some());
        let Some(old) = old else {
            // Not reached: a file the plan did not expect reads as changed above.
            return Ok(Step::Done(Ok(ApplyOutcome::LocalChanged {
                path: path.clone(),
            })));
        };
        // The directory's own device: the entry to make durable is in it.
        let dev = fs::symlink_metadata(&dir)
            .map_err(|e| io_err(path, "checking", &dir, e))?
            .dev();
        return Ok(Step::Delete {
            fs_path,
            dir,
            dev,
            old,
        });
    }
    if let (Some(meta), Some(exp)) = (&meta, item.expected)
        && exp.entry.same_content(target)
    {
        return Ok(Step::Record(current(ctx, target, Some(meta))));
    }
    let old = meta.as_ref().and(item.expected);
    stage(ctx, target, source, fs_path, dir, old)
}

/// Assemble `target` into a temp file next to it, with its size, mode and mtime checked and set.
fn stage<'a>(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    source: &mut dyn ChunkSource,
    fs_path: PathBuf,
    dir: PathBuf,
    old: Option<&LocalEntry>,
) -> Result<Step<'a>, ApplyError> {
    let path = &target.path;
    // Created with the target's bits (the umask may only narrow them): a private file's bytes
    // are never readable by others, not even in the temp file, and the usual 0644 needs no
    // chmod afterwards.
    let mode = target.mode.file_permissions();
    let (tmp_path, file) = create_temp(&dir, TEMP_PREFIX, mode)
        .map_err(|e| io_err(path, e.action, e.path, e.source))?;
    let mut temp = TempFile {
        path: tmp_path,
        file,
        keep: false,
    };
    let old_version = OldVersion::open(&fs_path, old);
    let assembled = assemble(ctx, target, source, old_version.as_ref(), &mut temp)?;
    drop(old_version);
    if assembled.old_changed {
        return Ok(Step::Done(Ok(ApplyOutcome::LocalChanged {
            path: path.clone(),
        })));
    }
    if !assembled.missing.is_empty() {
        stage_source_chunks(ctx, path, &temp, &assembled.from_source)?;
        return Ok(Step::Done(Ok(ApplyOutcome::MissingChunks {
            ids: assembled.missing,
        })));
    }
    let t = &temp.path;
    let written = temp
        .file
        .metadata()
        .map_err(|e| io_err(path, "checking", t, e))?;
    let len = written.len();
    if len != target.size {
        return Err(invalid(
            path,
            format!("assembled {len} bytes, entry says {}", target.size),
        ));
    }
    // Exactly the source's bits: never wider than the file we were sent (the umask may have
    // narrowed them at creation).
    if written.permissions().mode() & 0o7777 != mode {
        temp.file
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| io_err(path, "setting permissions of", t, e))?;
    }
    temp.file
        .set_modified(time_from_ns(target.mtime_ns))
        .map_err(|e| io_err(path, "setting mtime of", t, e))?;
    Ok(Step::Staged(Staged {
        temp,
        fs_path,
        dir,
        dev: written.dev(),
        old_present: old.is_some(),
        from_local: assembled.from_local,
        copied: assembled.copied,
        from_store: assembled.from_store,
        from_source: assembled
            .from_source
            .iter()
            .map(|(_, _, len)| u64::from(*len))
            .sum(),
    }))
}

/// First barrier: make every staged temp file's data durable before any is renamed. A file that
/// cannot be synced is dropped (and its temp file removed).
fn sync_staged(steps: &mut [Step<'_>], items: &[ApplyItem<'_>]) {
    let staged: Vec<(usize, &Staged)> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| match step {
            Step::Staged(s) => Some((i, s)),
            _ => None,
        })
        .collect();
    let targets: Vec<Durable<'_>> = staged
        .iter()
        .map(|(_, s)| Durable::File(&s.temp.file))
        .collect();
    let (results, counts) = barrier(&targets, |k| staged[k].1.dev);
    tracing::debug!(
        files = targets.len(),
        syncfs = counts.syncfs,
        fsync = counts.fsync,
        "new data durable"
    );
    let failed: Vec<(usize, PathBuf, io::Error)> = staged
        .iter()
        .zip(results)
        .filter_map(|((i, s), r)| r.err().map(|e| (*i, s.temp.path.clone(), e)))
        .collect();
    for (i, tmp, e) in failed {
        steps[i] = Step::Done(Err(io_err(&items[i].target.path, "syncing", tmp, e)));
    }
}

/// Re-check the target, keep the version it holds, and rename or unlink.
fn place<'a>(
    ctx: &ApplyContext<'_>,
    item: ApplyItem<'a>,
    step: Step<'a>,
) -> Result<Step<'a>, ApplyError> {
    let target = item.target;
    let path = &target.path;
    match step {
        Step::Staged(mut s) => {
            let old = item
                .expected
                .filter(|e| !e.entry.is_tombstone() && s.old_present);
            if let Some(old) = old
                && old.entry.content != target.content
            {
                // Opened again, not held since assembly: a batch already holds a temp file and
                // a replaced file open per entry.
                let vouched = OldVersion::open(&s.fs_path, Some(old));
                keep_version(ctx, path, &s.fs_path, &old.entry, vouched.as_ref())?;
            }
            // The file about to be replaced, held open from before the last check: a write
            // that lands on it between that check and the rename (an agent appending to its
            // log) shows on this handle afterwards.
            let held = old.and_then(|_| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&s.fs_path)
                    .ok()
            });
            // Last moment to notice a local edit made while we were assembling.
            let checked = match local_state(path, &s.fs_path, item.expected)? {
                LocalState::Changed => {
                    return Ok(Step::Done(Ok(ApplyOutcome::LocalChanged {
                        path: path.clone(),
                    })));
                }
                LocalState::Same(meta) => meta,
            };
            fail::fail_point!("apply::before-rename");
            // A fault point (tests only): the rename fails.
            fail::fail_point!("apply::rename", |arg| Err(io_err(
                path,
                "renaming into place",
                &s.fs_path,
                crate::error::injected(arg)
            )));
            fs::rename(&s.temp.path, &s.fs_path)
                .map_err(|e| io_err(path, "renaming into place", &s.fs_path, e))?;
            s.temp.keep = true;
            let replaced = match (held, checked) {
                (Some(held), Some(checked)) => Some(Box::new(Replaced {
                    held,
                    checked,
                    fs_path: s.fs_path.clone(),
                    dir: s.dir.clone(),
                })),
                _ => None,
            };
            if let Some(r) = &replaced
                && written_since(&r.held, &r.checked)
            {
                rescue(path, r)?;
                return Ok(Step::Done(Ok(ApplyOutcome::LocalChanged {
                    path: path.clone(),
                })));
            }
            let meta = s
                .temp
                .file
                .metadata()
                .map_err(|e| io_err(path, "checking", &s.fs_path, e))?;
            let action = match old {
                Some(_) if item.merged => HistoryAction::Merged,
                Some(_) => HistoryAction::Modified,
                None => HistoryAction::Created,
            };
            let outcome = ApplyOutcome::Written {
                bytes_from_local: s.from_local,
                bytes_copied: s.copied,
                bytes_from_store: s.from_store,
                bytes_from_source: s.from_source,
            };
            let history = history(ctx, target, action, old.map(|o| o.entry.content));
            let local = LocalEntry {
                entry: target.clone(),
                stat: Some(StatSig::of(&meta)),
                recorded_at_ns: ctx.now_ns,
            };
            Ok(Step::Placed {
                pending: Pending {
                    outcome,
                    local,
                    history: Some(history),
                },
                dir: s.dir,
                dev: s.dev,
                replaced,
            })
        }
        Step::Delete {
            fs_path,
            dir,
            dev,
            old,
        } => {
            keep_version(ctx, path, &fs_path, &old.entry, None)?;
            if let LocalState::Changed = local_state(path, &fs_path, item.expected)? {
                return Ok(Step::Done(Ok(ApplyOutcome::LocalChanged {
                    path: path.clone(),
                })));
            }
            fs::remove_file(&fs_path).map_err(|e| io_err(path, "deleting", &fs_path, e))?;
            let history = history(ctx, target, HistoryAction::Deleted, Some(old.entry.content));
            let local = LocalEntry {
                entry: target.clone(),
                stat: None,
                recorded_at_ns: ctx.now_ns,
            };
            let pending = Pending {
                outcome: ApplyOutcome::Deleted,
                local,
                history: Some(history),
            };
            Ok(Step::Placed {
                pending,
                dir,
                dev,
                replaced: None,
            })
        }
        other => Ok(other),
    }
}

/// True if the file held open (the one just replaced) changed after `checked` was taken of it.
fn written_since(held: &File, checked: &fs::Metadata) -> bool {
    match held.metadata() {
        // Size and mtime: the rename itself changes the replaced inode's ctime (its link count).
        Ok(now) => {
            now.ino() == checked.ino()
                && (now.len(), now.mtime(), now.mtime_nsec())
                    != (checked.len(), checked.mtime(), checked.mtime_nsec())
        }
        Err(_) => false,
    }
}

/// A local write landed on the replaced file in the instant before the rename: put those bytes
/// back in place as the local version (written beside the target and renamed over it, made
/// durable first), so the next scan sees a local change and the next sync merges it with the
/// peer's version instead of losing it. The peer's version stays in the store.
fn rescue(path: &RelPath, r: &Replaced) -> Result<(), ApplyError> {
    let mut held = &r.held;
    tracing::warn!(path = %path, "the file was written to while a peer's version replaced it; the local bytes are put back and merged at the next sync");
    let (tmp_path, mut file) = create_temp(&r.dir, TEMP_PREFIX, 0o600)
        .map_err(|e| io_err(path, e.action, e.path, e.source))?;
    let mut temp = TempFile {
        path: tmp_path,
        file: file
            .try_clone()
            .map_err(|e| io_err(path, "opening", &r.fs_path, e))?,
        keep: false,
    };
    held.seek(io::SeekFrom::Start(0))
        .and_then(|_| io::copy(&mut held, &mut file))
        .and_then(|_| file.set_permissions(held.metadata()?.permissions()))
        .and_then(|_| file.sync_all())
        .map_err(|e| io_err(path, "putting back local bytes", &temp.path, e))?;
    fs::rename(&temp.path, &r.fs_path)
        .map_err(|e| io_err(path, "renaming into place", &r.fs_path, e))?;
    temp.keep = true;
    Ok(())
}

/// Once the batch is durable (milliseconds after the renames), look at each replaced file once
/// more: a local write that was in flight during the rename has landed by now.
fn recheck_replaced(steps: &mut [Step<'_>], items: &[ApplyItem<'_>]) {
    for (step, item) in steps.iter_mut().zip(items) {
        let Step::Placed {
            replaced: Some(r), ..
        } = step
        else {
            continue;
        };
        if !written_since(&r.held, &r.checked) {
            continue;
        }
        let path = &item.target.path;
        *step = match rescue(path, r) {
            Ok(()) => Step::Done(Ok(ApplyOutcome::LocalChanged { path: path.clone() })),
            Err(e) => Step::Done(Err(e)),
        };
    }
}

/// Second barrier: make every rename and unlink durable before the index records it. Each
/// directory that had an entry renamed into or unlinked from it is a target once; if its sync
/// fails, every entry placed in it is reported failed (the file is in place, the index does not
/// know it yet: a rescan records it).
fn sync_dirs(steps: &mut [Step<'_>], items: &[ApplyItem<'_>]) {
    let mut by_dir: BTreeMap<(&PathBuf, u64), Vec<usize>> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        if let Step::Placed { dir, dev, .. } = step {
            by_dir.entry((dir, *dev)).or_default().push(i);
        }
    }
    let dirs: Vec<(&PathBuf, u64)> = by_dir.keys().copied().collect();
    let targets: Vec<Durable<'_>> = dirs.iter().map(|(d, _)| Durable::Dir(d)).collect();
    let (results, counts) = barrier(&targets, |k| dirs[k].1);
    tracing::debug!(
        directories = targets.len(),
        syncfs = counts.syncfs,
        fsync = counts.fsync,
        "renames durable"
    );
    let failed: Vec<(PathBuf, Vec<usize>, io::Error)> = by_dir
        .into_iter()
        .zip(results)
        .filter_map(|(((dir, _), members), r)| r.err().map(|e| (dir.clone(), members, e)))
        .collect();
    for (dir, members, e) in failed {
        for i in members {
            let copy = io::Error::new(e.kind(), e.to_string());
            steps[i] = Step::Done(Err(io_err(
                &items[i].target.path,
                "syncing directory",
                &dir,
                copy,
            )));
        }
    }
}

/// Record every change in the index in one commit, then in history. If the joint commit fails,
/// each entry is committed alone so that each gets its own result.
fn record_all(
    ctx: &ApplyContext<'_>,
    steps: Vec<Step<'_>>,
    items: &[ApplyItem<'_>],
) -> Vec<Result<ApplyOutcome, ApplyError>> {
    let pending = |s: &Step<'_>| match s {
        Step::Record(p) | Step::Placed { pending: p, .. } => Some(p.local.clone()),
        _ => None,
    };
    let joint: Vec<LocalUpdate> = steps
        .iter()
        .filter_map(pending)
        .map(LocalUpdate::Put)
        .collect();
    let joint_ok = joint.is_empty() || ctx.store.commit_local(joint).is_ok();
    let mut history = Vec::new();
    let mut results: Vec<Result<ApplyOutcome, ApplyError>> = steps
        .into_iter()
        .zip(items)
        .map(|(step, item)| {
            let p = match step {
                Step::Done(result) => return result,
                Step::Record(p) | Step::Placed { pending: p, .. } => p,
                // `place` turns every staged or deleting step into `Placed` or `Done`; reaching
                // this would be a bug in the step order, reported rather than panicking.
                Step::Staged(_) | Step::Delete { .. } => {
                    return Err(invalid(&item.target.path, "apply step skipped".into()));
                }
            };
            if !joint_ok {
                ctx.store
                    .commit_local([LocalUpdate::Put(p.local)])
                    .map_err(|source| ApplyError::Store {
                        path: item.target.path.clone(),
                        source,
                    })?;
            }
            history.extend(p.history);
            Ok(p.outcome)
        })
        .collect();
    if let Err(e) = ctx.store.history_append_many(&history) {
        // The files and the index are right; only the log lacks these records. Report it once,
        // on the first entry that succeeded.
        tracing::warn!(error = %e, records = history.len(), "could not append sync history");
        if let Some(i) = results.iter().position(Result::is_ok) {
            results[i] = Err(ApplyError::Store {
                path: items[i].target.path.clone(),
                source: e,
            });
        }
    }
    results
}

/// True if something (file, directory or symlink) is at `fs_path`.
fn exists(path: &RelPath, fs_path: &Path) -> Result<bool, ApplyError> {
    match fs::symlink_metadata(fs_path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path, "checking", fs_path, e)),
    }
}

/// The workspace already holds `target` (or its absence): only the index changes.
fn current(ctx: &ApplyContext<'_>, target: &FileEntry, meta: Option<&fs::Metadata>) -> Pending {
    let local = LocalEntry {
        entry: target.clone(),
        stat: meta.map(StatSig::of),
        recorded_at_ns: ctx.now_ns,
    };
    Pending {
        outcome: ApplyOutcome::AlreadyCurrent,
        local,
        history: None,
    }
}

fn history(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    action: HistoryAction,
    old_content: Option<crate::hash::Hash>,
) -> HistoryRecord {
    let live = !target.is_tombstone();
    HistoryRecord {
        at_ns: ctx.now_ns,
        path: target.path.clone(),
        action,
        from_peer: target.changed_by.peer,
        agent: target.changed_by.agent.clone(),
        machine: target.changed_by.machine.clone(),
        old_content,
        new_content: live.then_some(target.content),
        bytes: if live { target.size } else { 0 },
    }
}

/// Keep the version being replaced in the chunk store. When its stat facts vouch for it
/// (`open`), its known chunk boundaries spare re-chunking it (only chunks the store lacks are
/// read); otherwise the file is read and chunked whole.
fn keep_version(
    ctx: &ApplyContext<'_>,
    path: &RelPath,
    fs_path: &Path,
    old: &FileEntry,
    open: Option<&OldVersion>,
) -> Result<(), ApplyError> {
    let store_err = |source| ApplyError::ChunkStore {
        path: path.clone(),
        source,
    };
    if let Some(open) = open
        && let Some(kept) = ctx
            .chunks
            .put_known_version(open.file(), fs_path, old)
            .map_err(store_err)?
    {
        tracing::debug!(%path, content = %kept.content, new_bytes = kept.new_bytes, "kept the replaced version");
        return Ok(());
    }
    let kept = ctx
        .chunks
        .put_file_version(fs_path, old)
        .map_err(|source| ApplyError::ChunkStore {
            path: path.clone(),
            source,
        })?;
    tracing::debug!(%path, content = %kept.content, new_bytes = kept.new_bytes, "kept the replaced version");
    Ok(())
}
