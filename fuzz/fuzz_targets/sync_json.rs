//! Any bytes as a skill's `SYNC.json` (it may arrive from a peer): parsing never panics, every
//! refusal names the file, and an accepted manifest holds what the runner relies on (schema
//! "1", at least one pattern, a generator inside the skill directory, a non-empty output path).
//! Replayed by `cargo test -p botsync-engine --test fuzz_corpus`.
#![no_main]

use std::path::Path;

use botsync_engine::skill::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("skills/fuzz/SYNC.json");
    match Manifest::parse(file, data) {
        Ok(m) => {
            assert_eq!(m.version, "1");
            assert!(!m.patterns.is_empty());
            assert!(!m.output_file.trim().is_empty() && !m.output_file.contains('\0'));
            let g = Path::new(&m.generator);
            assert!(g.is_relative());
            assert!(g.components().all(|c| c != std::path::Component::ParentDir));
        }
        Err(e) => assert!(e.to_string().contains("skills/fuzz/SYNC.json")),
    }
});
