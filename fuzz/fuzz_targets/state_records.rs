//! Any bytes as a `State` message from a peer (skill state records, issue 14): decoding never
//! panics, and every pair of accepted records whose claims a receiver believes merges to the
//! same record whichever side holds which (the convergence law of `state_merge`), taking one
//! twice changes nothing. Replayed by `cargo test -p botsync-proto --test codec`.
#![no_main]

use botsync_engine::PeerId;
use botsync_engine::state::StateRecord;
use botsync_engine::state_merge::{StateMerge, check_claims, merge};
use botsync_proto::codec::decode;
use botsync_proto::messages::Message;
use libfuzzer_sys::fuzz_target;

fn after(local: Option<StateRecord>, remote: &StateRecord) -> Option<StateRecord> {
    match merge(local.as_ref(), remote) {
        StateMerge::Keep => local,
        StateMerge::Store { record, .. } => Some(record),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(Message::State { records, .. }) = decode(data) else {
        return;
    };
    let receiver = PeerId([0xee; 32]);
    let records: Vec<StateRecord> = records
        .into_iter()
        .map(|w| w.into_record().1)
        .filter(|r| check_claims("k", None, r, receiver).is_ok())
        .collect();
    for a in &records {
        for b in &records {
            let one = after(Some(a.clone()), b);
            assert_eq!(one, after(Some(b.clone()), a), "merge depends on the side");
            assert_eq!(after(one.clone(), b), one, "merge is not idempotent");
        }
    }
});
