//! A replaced file rebuilt from its unchanged parts (issue 13, the 1-byte insert): copied in
//! the kernel from the old file while the index vouches for it, read and verified otherwise.

#![allow(clippy::unwrap_used)] // a panic is a failed test

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use botsync_engine::LocalEntry;
use botsync_engine::apply::ApplyOutcome;
use botsync_engine::store::LocalUpdate;
use common::applying::{LAPTOP, Workspace, version};

/// `len` bytes of a fixed pseudo-random sequence (no two chunks alike).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The record of `local` as if its scan had run at `at_ns` (to make it racy or not).
fn recorded_at(ws: &Workspace, local: &LocalEntry, at_ns: i64) -> LocalEntry {
    let local = LocalEntry {
        recorded_at_ns: at_ns,
        ..local.clone()
    };
    ws.store
        .commit_local([LocalUpdate::Put(local.clone())])
        .unwrap();
    local
}

#[test]
fn a_byte_inserted_mid_file_is_rebuilt_by_copying_the_unchanged_parts_unread() {
    // Issue 13: a large file with one byte inserted in the middle took as long as rsync's
    // full rewrite, because every unchanged chunk was read back from the old file, hashed and
    // written again. They are now copied in the kernel from the old file, which the index
    // vouches for by its stat facts, as the scan trusts it.
    let ws = Workspace::new();
    let old_bytes = noise(512 * 1024, 13);
    let local = ws.write_and_scan("data/model.bin", &old_bytes);
    let mut new_bytes = old_bytes.clone();
    new_bytes.insert(old_bytes.len() / 2, b'!');
    let (entry, mut laptop) = version("data/model.bin", &new_bytes, LAPTOP);

    let outcome = ws.apply(&entry, Some(&local), &mut laptop).unwrap();

    let ApplyOutcome::Written {
        bytes_from_local,
        bytes_copied,
        bytes_from_source,
        ..
    } = outcome
    else {
        panic!("expected a write, got {outcome:?}");
    };
    assert_eq!(ws.read("data/model.bin"), new_bytes);
    assert_eq!(bytes_copied, bytes_from_local, "{outcome:?}");
    assert_eq!(bytes_from_local + bytes_from_source, new_bytes.len() as u64);
    // Only the chunks around the insertion travel (SMALL chunks are at most 1 KiB).
    assert!(bytes_from_source <= 4 * 1024, "{outcome:?}");
    assert!(ws.temp_files().is_empty());
}

#[test]
fn an_old_file_the_stat_cache_cannot_vouch_for_is_read_and_verified_not_copied() {
    // Written in the same instant its scan ran ("racy", as git says): equal stat facts do not
    // prove equal bytes, so its chunks are read and checked against their ids.
    let ws = Workspace::new();
    let old_bytes = noise(64 * 1024, 7);
    let local = ws.write_and_scan("data/racy.bin", &old_bytes);
    let mtime_ns = local.stat.unwrap().mtime_ns;
    let local = recorded_at(&ws, &local, mtime_ns + 1_000_000);
    let mut new_bytes = old_bytes.clone();
    new_bytes.extend_from_slice(b"appended");
    let (entry, mut laptop) = version("data/racy.bin", &new_bytes, LAPTOP);

    let outcome = ws.apply(&entry, Some(&local), &mut laptop).unwrap();

    let ApplyOutcome::Written {
        bytes_from_local,
        bytes_copied,
        ..
    } = outcome
    else {
        panic!("expected a write, got {outcome:?}");
    };
    assert_eq!(bytes_copied, 0, "{outcome:?}");
    assert!(
        bytes_from_local > 0,
        "the unchanged chunks still came from the old file"
    );
    assert_eq!(ws.read("data/racy.bin"), new_bytes);
}

#[test]
fn a_sparse_old_file_is_not_copied_so_its_holes_stay_holes() {
    let ws = Workspace::new();
    let path = ws.root.join("data/disk.img");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut old_bytes = vec![0u8; 4 << 20];
    old_bytes[..4096].copy_from_slice(&noise(4096, 3));
    let local = ws.write_and_scan("data/disk.img", &old_bytes);
    // Punch the zeros out: the file as a sparse-aware tool would have left it.
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(4096).unwrap();
    file.set_len(4 << 20).unwrap();
    drop(file);
    let local = ws.write_and_scan_sparse(&local, &path);
    if fs::metadata(&path).unwrap().blocks() * 512 >= 4 << 20 {
        eprintln!("this file system keeps no holes: nothing to check");
        return;
    }
    let mut new_bytes = old_bytes.clone();
    new_bytes[0] ^= 1;
    let (entry, mut laptop) = version("data/disk.img", &new_bytes, LAPTOP);

    let outcome = ws.apply(&entry, Some(&local), &mut laptop).unwrap();

    let ApplyOutcome::Written { bytes_copied, .. } = outcome else {
        panic!("expected a write, got {outcome:?}");
    };
    assert_eq!(bytes_copied, 0, "{outcome:?}");
    assert_eq!(ws.read("data/disk.img"), new_bytes);
    let allocated = fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "the holes were filled: {allocated} bytes allocated"
    );
}
