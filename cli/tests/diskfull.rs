//! A receiver whose disk is small or full, as a user meets it on a nearly full laptop: a push
//! needs the incoming data plus a bounded margin (not twice the data), a full disk is said by
//! name on the pushing side, old files stay intact, nothing staged keeps the disk full, and the
//! next sync after freeing space completes. Each test mounts its own tmpfs (root only; skipped
//! with a note elsewhere).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Peer, noise};

/// A tmpfs of `mib` MiB mounted on a temp dir, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Alpha (on the normal disk) and beta (on `disk`), beta serving.
fn peers_on(disk: &SmallDisk) -> (Peer, Peer, common::Server) {
    let a = Peer::new("alpha");
    let b = Peer::new_in("beta", disk.path());
    let server = b.serve();
    a.add(&b, server.port);
    b.add(&a, 7474);
    (a, b, server)
}

fn staged_bytes(p: &Peer) -> u64 {
    fn walk(dir: PathBuf) -> u64 {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                if e.file_type().unwrap().is_dir() {
                    walk(e.path())
                } else {
                    e.metadata().unwrap().len()
                }
            })
            .sum()
    }
    walk(p.path(".botsync/store/staging"))
}

#[test]
fn a_push_needs_the_incoming_data_plus_a_margin_not_twice_the_data() {
    let Some(disk) = SmallDisk::mount(160) else {
        return;
    };
    let (a, b, _server) = peers_on(&disk);
    // 96 MiB: staging all of it before writing any file needed 192 MiB.
    for i in 0..6 {
        a.write(&format!("memory/data{i}.bin"), noise(16 << 20, i));
    }
    let (code, json, stderr) = a.run(&["push", "beta"]);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert!(a.tree() == b.tree());
    assert_eq!(staged_bytes(&b), 0, "nothing staged is left behind");
}

#[test]
fn a_full_disk_is_named_keeps_old_files_and_the_next_sync_completes() {
    let Some(disk) = SmallDisk::mount(64) else {
        return;
    };
    let (a, b, _server) = peers_on(&disk);
    b.write("memory/keep.md", "beta's own note\n");
    // Something of the user's, outside what syncs, fills most of the disk.
    b.write("ballast.iso", noise(30 << 20, 99));
    a.write("memory/big1.bin", noise(20 << 20, 1));
    a.write("memory/big2.bin", noise(20 << 20, 2));

    let (code, json, stderr) = a.run(&["push", "beta"]);
    assert_ne!(code, 0, "the push cannot fit: {json}");
    let said = format!("{json}{stderr}");
    assert!(said.contains("disk full"), "the reason by name: {said}");
    assert_eq!(
        b.read("memory/keep.md").unwrap(),
        b"beta's own note\n",
        "old files intact"
    );
    assert_eq!(staged_bytes(&b), 0, "a failed sync holds no staged chunks");

    // The user frees the space the sync needs; the next push completes.
    b.remove("ballast.iso");
    let (code, json, stderr) = a.run(&["push", "beta"]);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(b.read("memory/big1.bin").unwrap(), noise(20 << 20, 1));
    assert_eq!(b.read("memory/big2.bin").unwrap(), noise(20 << 20, 2));
}
