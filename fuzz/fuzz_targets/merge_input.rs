//! Any three byte strings as ancestor and two versions of a path with a merging policy (a
//! peer's log, a hand-edited JSON config): no merge panics, `union` gives the same bytes in
//! either order and loses no line. Input: ancestor, winner and loser separated by 0xFF bytes.
//! Replayed by `cargo test -p botsync-engine --test fuzz_corpus`.
#![no_main]

use botsync_engine::reconcile::{MergePolicy, merge, union};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let (Some(a), Some(x), Some(y)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    for ancestor in [None, Some(a)] {
        if let Ok(m) = union::merge(ancestor, x, y) {
            assert_eq!(union::merge(ancestor, y, x).ok(), Some(m.clone()));
            for side in [x, y] {
                for line in side.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    assert!(m.split(|b| *b == b'\n').any(|l| l == line));
                }
            }
        }
        for policy in [MergePolicy::Json, MergePolicy::Text] {
            let _ = merge(policy, ancestor, x, y);
        }
    }
});
