//! The laptop's two rounds the crash and fault tests replay: a first state both sides hold, then
//! edits, a delete and new files (one in a new folder) to pull, and what to check afterwards.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset; tests fail loudly

use std::fs;
use std::path::Path;

use botsync_engine::FileEntry;
use botsync_engine::plan::ItemReport;
use botsync_engine::workspace::{Workspace, WorkspaceError};

use super::wall_clock_ns;

/// Files both sides hold before the laptop's second round: (path, bytes).
pub const FIRST: &[(&str, &str)] = &[
    ("MEMORY.md", "# memory\n- first fact\n"),
    ("memory/2026-12-04.md", "notes of the day\n"),
    ("memory/old.md", "to be deleted\n"),
    ("memory/projects/a.md", "project a\n"),
];

/// What the laptop does next: edits two files, deletes one, adds two (one in a new folder).
pub fn second_round(laptop: &Path) {
    fs::write(
        laptop.join("MEMORY.md"),
        "# memory\n- first fact\n- second fact\n",
    )
    .unwrap();
    fs::write(
        laptop.join("memory/projects/a.md"),
        "project a, version 2\n",
    )
    .unwrap();
    fs::remove_file(laptop.join("memory/old.md")).unwrap();
    fs::write(laptop.join("memory/2026-12-05.md"), "a new day\n").unwrap();
    fs::create_dir_all(laptop.join("memory/people")).unwrap();
    fs::write(laptop.join("memory/people/b.md"), "person b\n").unwrap();
}

/// Every path either side ever held.
pub const ALL: &[&str] = &[
    "MEMORY.md",
    "memory/2026-12-04.md",
    "memory/old.md",
    "memory/2026-12-05.md",
    "memory/projects/a.md",
    "memory/people/b.md",
];

pub fn write_all(root: &Path, files: &[(&str, &str)]) {
    for (path, bytes) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
}

/// One sync from `laptop` into `here`: plan the laptop's entries, move the chunks, apply.
pub fn pull(here: &Workspace, laptop: &Workspace) {
    pull_reports(here, laptop).unwrap();
}

/// [`pull`], returning what the apply reported for each item (or its error).
pub fn pull_reports(
    here: &Workspace,
    laptop: &Workspace,
) -> Result<Vec<ItemReport>, WorkspaceError> {
    laptop.refresh(wall_clock_ns()).unwrap();
    let offered: Vec<FileEntry> = laptop.entries(&paths()).unwrap();
    let items = here.plan(offered).unwrap();
    for chunk in here.chunks_needed(&items).unwrap() {
        let bytes = laptop.read_chunk(&chunk.id).unwrap().unwrap();
        here.put_chunk(&chunk.id, &bytes).unwrap();
    }
    here.apply(items, wall_clock_ns())
}

pub fn paths() -> Vec<botsync_engine::RelPath> {
    ALL.iter()
        .map(|p| botsync_engine::RelPath::new(p).unwrap())
        .collect()
}

/// The bytes of every path (None when absent).
pub fn contents(root: &Path) -> Vec<Option<Vec<u8>>> {
    ALL.iter().map(|p| fs::read(root.join(p)).ok()).collect()
}

pub fn temp_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                if name != ".botsync" {
                    dirs.push(e.path());
                }
            } else if name.starts_with(".botsync-tmp-") {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}
