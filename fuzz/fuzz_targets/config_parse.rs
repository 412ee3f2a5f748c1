//! Any bytes as `.botsync/config.json` (a user's editor, a bad merge, a synced template): parsing
//! and validation never panic; an accepted config compiles into a selection or says why not, and
//! what botsync writes back parses to the same config. Replayed by
//! `cargo test -p botsync-engine --test fuzz_corpus`.
#![no_main]

use std::path::Path;

use botsync_engine::config::SyncConfig;
use botsync_engine::rules::Selection;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("config.json");
    if let Ok(config) = SyncConfig::parse(path, text) {
        let _ = Selection::new(&config);
        let written = config.to_json();
        let again = SyncConfig::parse(path, &written).expect("a config botsync wrote parses");
        assert_eq!(again.to_json(), written);
    }
});
