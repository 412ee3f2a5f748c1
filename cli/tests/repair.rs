//! A chunk store damaged on disk (bit rot, a careless `rm`), as a user meets it: the next sync
//! that needs the damaged chunks fetches every one of them again in the same run and succeeds
//! (issue 17: a 3 MiB file took about 45 syncs, one chunk each, every one exiting 3 with a
//! misleading "changed on the sender").

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::{Peer, noise, pair};

/// Flip one byte in every kept chunk file under `.botsync/store/` (not manifests, not staging).
fn corrupt_kept_chunks(p: &Peer) -> usize {
    let store = p.path(".botsync/store");
    let mut n = 0;
    for shard in std::fs::read_dir(&store).unwrap() {
        let shard = shard.unwrap();
        let name = shard.file_name().to_string_lossy().into_owned();
        if name.len() != 2 || !shard.file_type().unwrap().is_dir() {
            continue;
        }
        for chunk in std::fs::read_dir(shard.path()).unwrap() {
            flip_first_byte(&chunk.unwrap().path());
            n += 1;
        }
    }
    n
}

fn flip_first_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_sync_refetches_every_corrupt_chunk_in_one_run() {
    let (a, b, _server) = pair();
    let v1 = noise(3 << 20, 7);
    a.write("memory/model.bin", &v1);
    a.ok(&["push", "beta"]);
    // A new version replaces it: beta keeps the old one's chunks in its store.
    a.write("memory/model.bin", noise(3 << 20, 8));
    a.ok(&["push", "beta"]);
    let damaged = corrupt_kept_chunks(&b);
    assert!(damaged > 10, "a 3 MiB file is many chunks: {damaged}");

    // The old version comes back: beta would rebuild it from its store, finds every kept chunk
    // corrupt, and fetches them all in this one sync.
    a.write("memory/model.bin", &v1);
    let (code, json, stderr) = a.run(&["push", "beta"]);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(b.read("memory/model.bin").unwrap(), v1);
    let (code, json, _) = a.run(&["push", "beta"]);
    assert_eq!(code, 0, "nothing left to repair: {json}");
}
