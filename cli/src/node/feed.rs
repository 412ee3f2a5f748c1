//! The coordination feed's file, `memory/bot-sync/feed.jsonl` (engine/src/feed.rs): appending
//! one message, as `say` does and as the node layer does when it has something to tell the
//! mesh (a mesh config change).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use botsync_engine::feed::{FEED_PATH, Message};

/// Append `m` as one line: a single `O_APPEND` write, so concurrent posters never interleave,
/// then fsync (a said message survives a crash).
pub fn append(root: &Path, m: &Message) -> Result<()> {
    let path = root.join(FEED_PATH);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // A file cut mid-line by a crash gets its own line end first, so ours stays whole.
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if len > 0 && !ends_with_newline(&path, len) {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(m.to_line().as_bytes());
    f.write_all(&bytes)
        .and_then(|()| f.sync_data())
        .with_context(|| format!("writing {}", path.display()))
}

fn ends_with_newline(path: &Path, len: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut last = [0u8; 1];
    fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut last)
        })
        .map_or(true, |()| last[0] == b'\n')
}

/// The machine's name: `MACHINE_ID` (the seed's variable), else the host name.
pub fn machine_name() -> String {
    match std::env::var("MACHINE_ID") {
        Ok(m) if !m.trim().is_empty() => m.trim().to_owned(),
        _ => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    }
}

/// True if the workspace at `root` has a feed: its agents use it, so botsync posts there too.
pub fn exists(root: &Path) -> bool {
    root.join(FEED_PATH).is_file()
}
