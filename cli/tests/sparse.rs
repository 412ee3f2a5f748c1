//! Issue 17: a sparse file (a VM image, a preallocated log) crosses the wire and arrives sparse:
//! its holes stay holes on the receiving disk, its bytes read back the same, and it is not taken
//! for a local edit afterwards. The suite moves a 256 MiB file; `benches/sparse.sh` moves 2 GiB
//! (`BOTSYNC_SPARSE_MIB`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use common::{noise, pair};

const MIB: u64 = 1024 * 1024;

/// Bytes the file system holds for `path` (its allocated blocks).
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Where the data of the image lies: (offset, length), the rest is holes.
fn extents(size: u64) -> Vec<(u64, usize)> {
    vec![
        (0, 64 * 1024),
        (size / 3, 300_000),
        (size / 2 + 12_345, 1_000_000),
        (size - 4096, 4096),
    ]
}

/// True if the two files hold the same bytes (read in 1 MiB pieces: the file may be GiBs).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        let mut got = 0;
        while got < n {
            let m = fb.read(&mut bb[got..n]).unwrap();
            if m == 0 {
                return false;
            }
            got += m;
        }
        if n == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[test]
fn a_sparse_image_pushed_to_a_daemon_arrives_sparse() {
    let mib: u64 = std::env::var("BOTSYNC_SPARSE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib * MIB;
    let (a, b, _server) = pair();
    let image = a.path("memory/disk.img");
    fs::create_dir_all(image.parent().unwrap()).unwrap();
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&image)
        .unwrap();
    f.set_len(size).unwrap();
    let mut data = 0;
    for (i, (at, len)) in extents(size).into_iter().enumerate() {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&noise(len, i as u64)).unwrap();
        data += len as u64;
    }
    drop(f);
    if allocated(&image) > data + 8 * MIB {
        eprintln!("skipped: this file system does not keep holes");
        return;
    }

    let started = Instant::now();
    a.ok(&["push", "beta"]);
    let took = started.elapsed();

    let copy = b.path("memory/disk.img");
    assert_eq!(fs::metadata(&copy).unwrap().len(), size);
    assert!(
        allocated(&copy) <= data + 8 * MIB,
        "the holes stay holes: {} bytes allocated for {mib} MiB holding {data} bytes of data",
        allocated(&copy)
    );
    assert!(same_bytes(&image, &copy), "the copy reads back the same");
    eprintln!(
        "sparse: {mib} MiB with {data} bytes of data pushed in {:.2} s; {} bytes allocated on the receiver",
        took.as_secs_f64(),
        allocated(&copy)
    );
    // Nothing changed on either side: neither takes the image for an edit.
    for p in [&a, &b] {
        let scan = p.ok(&["scan"]);
        assert_eq!(scan["modified"], 0, "{}: {scan}", p.name);
    }
}
