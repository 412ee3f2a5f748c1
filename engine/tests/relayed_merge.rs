//! A merge made by a peer that never edited the path (a relay between two writers): the merged
//! version must be one every other peer accepts. Found in the soak of five daemons ("changed by
//! X, but the version counts no change by X: refused"): the merge was attributed to the relay,
//! whose counter in the merged version is zero, so the writers refused it until they merged
//! the same pair themselves.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;

use botsync_engine::authority::check_claims;
use botsync_engine::plan::Action;
use botsync_engine::workspace::Workspace;
use botsync_engine::{PeerId, RelPath};

use common::open_workspace;

const NOW: i64 = 1_800_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;
const LOG: &str = "memory/log.jsonl";

fn append(ws: &Workspace, line: &str, now: i64) {
    let p = ws.root().join(LOG);
    let mut text = fs::read_to_string(&p).unwrap_or_default();
    text.push_str(line);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    ws.refresh(now).unwrap();
}

/// Send `from`'s version of the log to `to` and apply it there; the action `to` took.
fn send(from: &Workspace, to: &Workspace, now: i64) -> Action {
    let paths = [RelPath::new(LOG).unwrap()];
    let plan = to.plan(from.entries(&paths).unwrap()).unwrap();
    for c in to.chunks_needed(&plan).unwrap() {
        let bytes = from.read_chunk(&c.id).unwrap().unwrap();
        to.put_chunk(&c.id, &bytes).unwrap();
    }
    let action = plan[0].action.clone();
    to.apply(plan, now).unwrap();
    to.record_merge_bases(&paths);
    from.record_merge_bases(&paths);
    action
}

#[test]
fn a_union_merged_by_a_relay_is_accepted_by_the_writers() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [alpha, beta, relay] = [1u8, 2, 3].map(|p| open_workspace(dirs[p as usize - 1].path(), p));
    append(&alpha, "{\"n\":0}\n", NOW);
    send(&alpha, &relay, NOW);
    send(&relay, &beta, NOW);
    // Both writers append at once; the relay, which never writes the log, meets both.
    append(&alpha, "{\"n\":1,\"by\":\"alpha\"}\n", NOW + SECOND);
    append(&beta, "{\"n\":2,\"by\":\"beta\"}\n", NOW + 2 * SECOND);
    send(&alpha, &relay, NOW + 3 * SECOND);
    let merged_at_relay = send(&beta, &relay, NOW + 4 * SECOND);
    assert!(
        matches!(merged_at_relay, Action::Merge { .. }),
        "{merged_at_relay:?}"
    );
    let path = RelPath::new(LOG).unwrap();
    let merged = relay
        .entries(std::slice::from_ref(&path))
        .unwrap()
        .remove(0);
    for writer in [&alpha, &beta] {
        let theirs = writer
            .entries(std::slice::from_ref(&path))
            .unwrap()
            .remove(0);
        let me = writer.local().peer;
        assert_eq!(check_claims(Some(&theirs), &merged, me), Ok(()));
    }
    assert!(
        merged.version.counter(&merged.changed_by.peer) > 0,
        "the merge is attributed to a peer the version counts"
    );
    // The writers take the relay's merge and all three hold the same lines.
    send(&relay, &alpha, NOW + 5 * SECOND);
    send(&relay, &beta, NOW + 6 * SECOND);
    let text = |ws: &Workspace| fs::read_to_string(ws.root().join(LOG)).unwrap();
    assert_eq!(text(&alpha), text(&relay));
    assert_eq!(text(&beta), text(&relay));
    assert!(text(&relay).contains("alpha") && text(&relay).contains("beta"));
    assert_ne!(merged.changed_by.peer, PeerId([3; 32]));
}
