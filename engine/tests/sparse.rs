//! A sparse file (a VM image, a preallocated log, a database with holes) arrives sparse: the
//! runs of zeros its chunks carry are left as holes on the receiving disk instead of being
//! written out, and the file reads back byte for byte the same.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use botsync_engine::RelPath;
use botsync_engine::plan::Outcome;
use botsync_engine::workspace::Workspace;
use common::{open_workspace, wall_clock_ns};

const MIB: u64 = 1024 * 1024;

/// Bytes the file system holds for `path` (its allocated blocks).
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

fn pull(here: &Workspace, laptop: &Workspace, path: &RelPath) {
    laptop.refresh(wall_clock_ns()).unwrap();
    let items = here
        .plan(laptop.entries(std::slice::from_ref(path)).unwrap())
        .unwrap();
    for chunk in here.chunks_needed(&items).unwrap() {
        let bytes = laptop.read_chunk(&chunk.id).unwrap().unwrap();
        here.put_chunk(&chunk.id, &bytes).unwrap();
    }
    let reports = here.apply(items, wall_clock_ns()).unwrap();
    assert_eq!(reports[0].outcome, Outcome::Done, "{reports:?}");
}

#[test]
fn a_sparse_file_arrives_sparse_and_reads_back_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (here_dir, laptop_dir) = (tmp.path().join("here"), tmp.path().join("laptop"));
    fs::create_dir_all(laptop_dir.join("memory")).unwrap();
    fs::create_dir_all(&here_dir).unwrap();
    let here = open_workspace(&here_dir, 1);
    let laptop = open_workspace(&laptop_dir, 2);

    // 32 MiB with data only at its start and in its middle; it ends in a hole.
    let image = laptop_dir.join("memory/disk.img");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&image)
        .unwrap();
    f.set_len(32 * MIB).unwrap();
    f.write_all(b"header of the image\n").unwrap();
    f.seek(SeekFrom::Start(16 * MIB)).unwrap();
    f.write_all(&[7u8; 100_000]).unwrap();
    drop(f);
    if allocated(&image) >= 4 * MIB {
        eprintln!("skipped: this file system does not keep holes");
        return;
    }

    let path = RelPath::new("memory/disk.img").unwrap();
    pull(&here, &laptop, &path);

    let copy = here_dir.join("memory/disk.img");
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&image).unwrap());
    assert_eq!(fs::metadata(&copy).unwrap().len(), 32 * MIB);
    assert!(
        allocated(&copy) < 4 * MIB,
        "the holes stay holes: {} bytes allocated for a file of 32 MiB holding 100 KB of data",
        allocated(&copy)
    );
    // Nothing changed locally: the copy is not taken for an edit.
    let refresh = here.refresh(wall_clock_ns()).unwrap();
    assert_eq!(refresh.scan.modified, 0, "{:?}", refresh.scan);
}
