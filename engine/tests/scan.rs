//! The scanner on real directories, as an operator's agent workspace lives through a day.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use botsync_engine::config::SyncConfig;
use botsync_engine::scan::{ChangeKind, ScanError, SkipReason};
use botsync_engine::{EntryKind, Hash, RelPath};
use common::{Workspace, changes, content_of, wall_clock_ns};

use ChangeKind::{Added, Deleted, MetadataOnly, Modified, Unselected};

/// A workspace as the agent leaves it: notes, logs, and things that must stay home.
fn agent_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "MEMORY.md",
        "# Memory\n- the operator prefers short answers\n",
    );
    ws.write("USER.md", "# User\nname: Ada\n");
    ws.write("IDENTITY.md", "I am bot-1\n");
    ws.write("memory/2026-11-20.md", "- deployed the thing\n");
    ws.write("memory/topics/rust.md", "- edition 2024\n");
    ws.write("memory/log.jsonl", "{\"event\":\"start\"}\n");
    ws.write("config/mesh.json", "{\"peers\":[]}\n");
    ws.write("skills/weather/SKILL.md", "# weather\n");
    ws.write(".env", "OPENAI_API_KEY=sk-nope\n");
    ws.write("memory/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    ws.write("memory/certs/server.pem", "-----BEGIN CERTIFICATE-----\n");
    ws.write(".botsync/config.json", "{}\n");
    ws
}

fn selected_paths() -> Vec<(ChangeKind, String)> {
    [
        "MEMORY.md",
        "USER.md",
        "memory/2026-11-20.md",
        "memory/log.jsonl",
        "memory/topics/rust.md",
    ]
    .into_iter()
    .map(|p| (Added, p.to_owned()))
    .collect()
}

#[test]
fn initial_scan_finds_exactly_the_selected_files() {
    let mut ws = agent_workspace();
    let report = ws.scan();
    assert_eq!(changes(&report), selected_paths());
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.hashed_files, 5);

    let memory = &ws.entry("MEMORY.md").entry;
    let bytes = fs::read(ws.path("MEMORY.md")).unwrap();
    assert_eq!(memory.kind, EntryKind::File);
    assert_eq!(memory.size, bytes.len() as u64);
    assert_eq!(memory.content, content_of(&bytes));
    assert_eq!(memory.parent, None, "a creation has no parent");
    assert_eq!(memory.version.counter(&ws.local.peer), 1);
    assert_eq!(memory.changed_by, ws.local);
    assert!(ws.entry("MEMORY.md").stat.is_some());
}

#[test]
fn skills_are_scanned_once_the_operator_opts_in() {
    let mut ws = agent_workspace();
    ws.scan();
    ws.config.sync_skills = true;
    assert_eq!(
        changes(&ws.scan()),
        vec![(Added, "skills/weather/SKILL.md".to_owned())]
    );
}

#[test]
fn edits_adds_deletes_and_a_rename_are_exactly_those_changes() {
    let mut ws = agent_workspace();
    ws.scan();
    let old_memory = ws.entry("MEMORY.md").entry.clone();
    let old_topic = ws.entry("memory/topics/rust.md").entry.clone();

    ws.append("MEMORY.md", "- new fact\n");
    ws.write("memory/2026-11-21.md", "- a new day\n");
    ws.remove("memory/log.jsonl");
    ws.rename("memory/topics/rust.md", "memory/topics/rust-lang.md");
    let report = ws.scan();

    assert_eq!(
        changes(&report),
        vec![
            (Modified, "MEMORY.md".to_owned()),
            (Added, "memory/2026-11-21.md".to_owned()),
            (Deleted, "memory/log.jsonl".to_owned()),
            (Added, "memory/topics/rust-lang.md".to_owned()),
            (Deleted, "memory/topics/rust.md".to_owned()),
        ]
    );
    assert_eq!(
        report.hashed_files, 3,
        "only the edited and new files are read"
    );

    let memory = &ws.entry("MEMORY.md").entry;
    assert_eq!(
        memory.parent,
        Some(old_memory.content),
        "an edit descends from what it replaced"
    );
    assert_eq!(memory.version.counter(&ws.local.peer), 2);

    let renamed = &ws.entry("memory/topics/rust-lang.md").entry;
    assert_eq!(
        renamed.content, old_topic.content,
        "a rename keeps the content hash"
    );
    let gone = &ws.entry("memory/topics/rust.md").entry;
    assert_eq!(gone.kind, EntryKind::Tombstone);
    assert_eq!(
        (gone.size, gone.content, gone.chunks.len()),
        (0, Hash::ZERO, 0)
    );
    assert_eq!(gone.parent, Some(old_topic.content));
    assert_eq!(gone.version.counter(&ws.local.peer), 2);
}

#[test]
fn a_rescan_with_nothing_changed_reads_no_file() {
    let mut ws = agent_workspace();
    ws.scan();
    let report = ws.scan();
    assert!(
        report.changes.is_empty() && report.refreshed.is_empty(),
        "{report:?}"
    );
    assert_eq!((report.hashed_files, report.hashed_bytes), (0, 0));
    assert_eq!(report.unchanged, 5);
}

#[test]
fn deleted_files_stay_deleted_without_new_tombstones() {
    let mut ws = agent_workspace();
    ws.scan();
    ws.remove("USER.md");
    assert_eq!(changes(&ws.scan()), vec![(Deleted, "USER.md".to_owned())]);
    assert!(ws.scan().changes.is_empty(), "a tombstone is recorded once");
}

#[test]
fn a_file_recreated_after_deletion_continues_its_history() {
    let mut ws = agent_workspace();
    ws.scan();
    ws.remove("USER.md");
    ws.scan();
    ws.write("USER.md", "# User\nname: Ada Lovelace\n");
    assert_eq!(changes(&ws.scan()), vec![(Added, "USER.md".to_owned())]);
    let user = &ws.entry("USER.md").entry;
    assert_eq!(user.parent, None, "a re-creation replaces no content");
    assert_eq!(
        user.version.counter(&ws.local.peer),
        3,
        "created, deleted, re-created"
    );
}

#[test]
fn touch_without_a_content_change_is_no_change_but_refreshes_the_cache() {
    let mut ws = agent_workspace();
    ws.scan();
    let before = ws.entry("MEMORY.md").clone();
    ws.touch("MEMORY.md");
    let report = ws.scan();
    assert!(report.changes.is_empty(), "{:?}", report.changes);
    assert_eq!(report.hashed_files, 1);
    assert_eq!(report.refreshed.len(), 1);
    let after = &report.refreshed[0];
    assert_eq!(after.entry, before.entry, "same version: nothing to sync");
    assert_ne!(after.stat, before.stat, "the new stat facts are kept");
    assert_eq!(
        ws.scan().hashed_files,
        0,
        "the next scan trusts the refreshed stat"
    );
}

#[test]
fn flipping_the_exec_bit_is_a_metadata_only_change() {
    let mut ws = agent_workspace();
    ws.scan();
    let before = ws.entry("memory/2026-11-20.md").entry.clone();
    ws.set_executable("memory/2026-11-20.md", true);
    assert_eq!(
        changes(&ws.scan()),
        vec![(MetadataOnly, "memory/2026-11-20.md".to_owned())]
    );
    let after = &ws.entry("memory/2026-11-20.md").entry;
    assert!(after.mode.executable());
    assert_eq!(after.content, before.content);
    assert_eq!(after.version.counter(&ws.local.peer), 2);
}

#[test]
fn a_file_written_right_after_the_scan_started_is_hashed_again_next_time() {
    let mut ws = agent_workspace();
    ws.scan();
    let scan_start = wall_clock_ns();
    ws.write("memory/racy.md", "first words\n");
    let report = ws.scan_at(scan_start);
    assert_eq!(changes(&report), vec![(Added, "memory/racy.md".to_owned())]);

    // Same size, same stat: only the racy rule makes the next scan look inside.
    let next = ws.scan();
    assert_eq!(next.hashed_files, 1, "the racy file is re-read");
    assert!(next.changes.is_empty());
    assert_eq!(next.refreshed.len(), 1, "its later recording time is kept");
    assert_eq!(
        ws.scan().hashed_files,
        0,
        "once recorded safely later, it is trusted"
    );
}

#[test]
fn symlinks_and_fifos_are_reported_and_never_followed() {
    let mut ws = agent_workspace();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.md"), "do not sync me\n").unwrap();
    symlink(outside.path(), ws.path("memory/outside")).unwrap();
    symlink(ws.path("MEMORY.md"), ws.path("memory/alias.md")).unwrap();
    let status = Command::new("mkfifo")
        .arg(ws.path("memory/pipe.md"))
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo failed");

    let report = ws.scan();
    assert_eq!(
        changes(&report),
        selected_paths(),
        "nothing behind a link or pipe is scanned"
    );
    let mut skipped: Vec<(String, SkipReason)> = report
        .skipped
        .iter()
        .map(|s| (s.path.clone(), s.reason.clone()))
        .collect();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        skipped,
        vec![
            ("memory/alias.md".to_owned(), SkipReason::Symlink),
            ("memory/outside".to_owned(), SkipReason::Symlink),
            ("memory/pipe.md".to_owned(), SkipReason::Fifo),
        ]
    );
}

/// Issue 10: names that render deceptively were synced as given. They are skipped and
/// reported, never indexed, so they never travel.
#[test]
fn files_with_deceptive_names_are_skipped_and_reported() {
    let mut ws = agent_workspace();
    for name in [
        "report\u{202E}dm.exe",
        "a\u{2028}b.md",
        "note\u{200B}.md",
        "notes.md ",
    ] {
        fs::write(ws.path("memory").join(name), "x\n").unwrap();
    }
    let report = ws.scan();
    assert_eq!(
        changes(&report),
        selected_paths(),
        "none of them is indexed"
    );
    assert_eq!(report.skipped.len(), 4, "{:?}", report.skipped);
    for s in &report.skipped {
        assert!(
            matches!(&s.reason, SkipReason::BadName(e) if e.to_string().contains("deceptively")),
            "{s}"
        );
    }
}

#[test]
fn names_written_decomposed_on_disk_are_read_and_tracked_under_their_nfc_path() {
    // A Mac (or a tool) wrote these names in NFD: the workspace path is the NFC spelling, but
    // the file has to be read from the name as it is on disk, in a folder as in a file name.
    let mut ws = agent_workspace();
    ws.scan();
    ws.write("memory/cafe\u{301}/menu.md", "- espresso\n");
    ws.write("memory/re\u{301}sume\u{301}.md", "- botsync\n");
    let report = ws.scan();
    assert_eq!(
        changes(&report),
        vec![
            (Added, "memory/caf\u{e9}/menu.md".to_owned()),
            (Added, "memory/r\u{e9}sum\u{e9}.md".to_owned()),
        ]
    );
    assert_eq!(report.hashed_files, 2);
    assert_eq!(
        ws.entry("memory/caf\u{e9}/menu.md").entry.content,
        content_of(b"- espresso\n")
    );

    // Unchanged, they are trusted like any other file; edited, they are read again.
    assert_eq!(ws.scan().hashed_files, 0);
    ws.append("memory/cafe\u{301}/menu.md", "- tea\n");
    assert_eq!(
        changes(&ws.scan()),
        vec![(Modified, "memory/caf\u{e9}/menu.md".to_owned())]
    );
}

#[test]
fn an_unreadable_file_is_reported_and_keeps_its_entry() {
    let mut ws = agent_workspace();
    ws.scan();
    let before = ws.entry("USER.md").clone();
    ws.write("USER.md", "# User\nname: changed\n");
    let mut perms = fs::metadata(ws.path("USER.md")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o000);
    fs::set_permissions(ws.path("USER.md"), perms).unwrap();

    let report = ws.scan();
    if ws.is_root_user() {
        // Root reads a mode-000 file anyway, so the permission failure cannot happen here; the
        // scan-level unit test `a_file_that_vanishes_before_it_is_read_keeps_its_entry` covers
        // the same path with a file that disappears between the walk and the read.
        assert_eq!(changes(&report), vec![(Modified, "USER.md".to_owned())]);
        return;
    }
    assert!(report.changes.is_empty(), "{:?}", report.changes);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].path, "USER.md");
    assert!(matches!(
        report.skipped[0].reason,
        SkipReason::Unreadable(_)
    ));
    assert_eq!(ws.entry("USER.md"), &before, "the previous entry stands");
}

#[test]
fn a_directory_that_became_a_dangling_link_does_not_turn_into_tombstones() {
    let mut ws = agent_workspace();
    ws.scan();
    // A directory moved away and replaced by a link to an unmounted disk is not scanned, and
    // what it held is not deleted on peers.
    fs::rename(ws.path("memory/topics"), ws.path("topics-away")).unwrap();
    symlink("/nonexistent/botsync/topics", ws.path("memory/topics")).unwrap();
    let report = ws.scan();
    assert!(report.changes.is_empty(), "{:?}", report.changes);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].reason, SkipReason::Symlink);
}

#[test]
fn unselecting_a_path_drops_it_without_deleting_it_on_peers() {
    let mut ws = agent_workspace();
    ws.scan();
    ws.config = SyncConfig {
        exclude: vec!["memory/topics/".to_owned()],
        ..SyncConfig::default()
    };
    let report = ws.scan();
    assert_eq!(
        changes(&report),
        vec![(Unselected, "memory/topics/rust.md".to_owned())]
    );
    assert!(
        !ws.index
            .contains_key(&RelPath::new("memory/topics/rust.md").unwrap())
    );
    assert!(
        ws.path("memory/topics/rust.md").exists(),
        "the file itself is untouched"
    );
}

#[test]
fn including_one_config_file_keeps_secrets_home() {
    let mut ws = agent_workspace();
    ws.write("config/shared.json", "{\"theme\":\"dark\"}\n");
    ws.write("config/.env.production", "TOKEN=x\n");
    ws.config = SyncConfig {
        include: vec!["config/shared.json".to_owned(), "config/.env*".to_owned()],
        ..SyncConfig::default()
    };
    let report = ws.scan();
    let mut expected = selected_paths();
    expected.insert(2, (Added, "config/shared.json".to_owned()));
    assert_eq!(changes(&report), expected);
}

#[test]
fn a_missing_workspace_is_refused_not_emptied() {
    let mut ws = agent_workspace();
    ws.scan();
    fs::remove_dir_all(ws.path(".botsync")).unwrap();
    let err = ws.try_scan_at(wall_clock_ns()).unwrap_err();
    assert!(matches!(err, ScanError::NotAWorkspace { .. }), "{err}");

    // The whole tree gone (a disk not mounted): refused too, with one line saying what to do.
    fs::remove_dir_all(ws.root()).unwrap();
    let err = ws.try_scan_at(wall_clock_ns()).unwrap_err();
    assert!(matches!(err, ScanError::NotAWorkspace { .. }));
    assert!(err.to_string().contains("not a botsync workspace"), "{err}");
}

/// Odd things an agent's machine leaves in a workspace: a Unix socket, a symlink loop, a name
/// that is not UTF-8, a folder nested far past the path depth limit. Each is reported once,
/// in its own words, and the scan goes on with everything else.
#[test]
fn sockets_link_loops_non_utf8_names_and_deep_folders_are_reported_and_the_scan_goes_on() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let mut ws = agent_workspace();
    let _socket = std::os::unix::net::UnixListener::bind(ws.path("memory/agent.sock")).unwrap();
    symlink(ws.path("memory/loop-b"), ws.path("memory/loop-a")).unwrap();
    symlink(ws.path("memory/loop-a"), ws.path("memory/loop-b")).unwrap();
    let latin1 = ws.path("memory").join(OsStr::from_bytes(b"caf\xe9.md"));
    fs::write(&latin1, "written by an old tool\n").unwrap();
    let mut deep = ws.path("memory/deep");
    for _ in 0..200 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom.md"), "far down\n").unwrap();

    let report = ws.scan();
    assert_eq!(
        changes(&report),
        selected_paths(),
        "only the ordinary files are recorded"
    );
    let mut skipped: Vec<(String, String)> = report
        .skipped
        .iter()
        .map(|s| (s.path.clone(), format!("{:?}", s.reason)))
        .collect();
    skipped.sort();
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    assert_eq!(skipped[0].0, "memory/agent.sock");
    assert_eq!(skipped[0].1, "Socket");
    assert!(
        skipped[1].0.starts_with("memory/caf") && skipped[1].1.starts_with("BadName(NotUtf8"),
        "{skipped:?}"
    );
    assert!(
        skipped[2].0.starts_with("memory/deep/d/d/") && skipped[2].1.starts_with("BadName(TooLong"),
        "{skipped:?}"
    );
    assert_eq!(
        skipped[3..],
        [
            ("memory/loop-a".to_owned(), "Symlink".to_owned()),
            ("memory/loop-b".to_owned(), "Symlink".to_owned()),
        ]
    );
    // Reported once, not once per scan step: the next scan says the same, no more.
    let again = ws.scan();
    assert_eq!(again.skipped.len(), 5, "{:?}", again.skipped);
}
