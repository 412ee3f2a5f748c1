//! Any bytes as a JSON list of lock-table commands (the entries of the replicated log a peer may
//! send): decoding never panics, and applying whatever decodes keeps the table's laws: at most
//! one running lease per lock, and every grant's fencing token larger than all before it.
//! Replayed by `cargo test -p botsync-engine --test fuzz_corpus`.
#![no_main]

use botsync_engine::locks::{Answer, Command, LockTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(commands) = serde_json::from_slice::<Vec<Command>>(data) else {
        return;
    };
    let mut table = LockTable::default();
    let mut last = 0;
    for c in &commands {
        let now = match c {
            Command::Acquire { now_ms, .. }
            | Command::Renew { now_ms, .. }
            | Command::Release { now_ms, .. } => *now_ms,
        };
        let acquire = matches!(c, Command::Acquire { .. });
        if let Answer::Held(l) = table.apply(c) {
            if acquire {
                assert!(l.token > last);
                last = l.token;
            }
        }
        let held = table.held(now);
        for (i, a) in held.iter().enumerate() {
            for b in &held[i + 1..] {
                assert!(
                    !(a.name == b.name && a.project == b.project),
                    "two leases of one lock"
                );
            }
        }
        assert_eq!(table.last_token(), last);
    }
});
