//! Any bytes as a workspace path, from the wire or the disk: `RelPath::new` never panics, and a
//! path it accepts is canonical (parsing it again gives itself), has no empty, `.` or `..`
//! component, no control character or backslash, is not inside `.botsync/`, and joined to a
//! root stays under it. Replayed by `cargo test -p botsync-engine --test fuzz_corpus`.
#![no_main]

use std::path::Path;

use botsync_engine::RelPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = RelPath::new(s) else {
        return;
    };
    assert_eq!(RelPath::new(p.as_str()).expect("canonical"), p);
    if p.is_root() {
        return;
    }
    for c in p.components() {
        assert!(!c.is_empty() && c != "." && c != "..", "{p:?}");
        assert!(!c.chars().any(|ch| ch.is_control() || ch == '\\'), "{p:?}");
    }
    assert!(p.as_str() != ".botsync" && !p.as_str().starts_with(".botsync/"));
    let root = Path::new("/workspace");
    assert!(p.to_fs(root).starts_with(root));
    if let Some(parent) = p.parent() {
        assert!(p.starts_with(&parent));
    }
});
