//! Any bytes as the body of a coordination message (docs/PROTOCOL.md, `Coordinate` /
//! `Coordinated`): the first byte picks a request (even) or an answer (odd), the rest is the
//! body. Decoding never panics; what decodes encodes to a body that decodes to itself; every lock
//! table that arrives (a snapshot's data, a status answer) holds its laws (each lock filed under
//! its own name, no token above the counter), and so does a table that applies the commands of
//! an append request. Seeds are written by `proto/tests/coordination.rs`.
#![no_main]

use botsync_engine::locks::{Answer, Command, LockTable};
use botsync_proto::coordination::rpc::{self, Rpc, RpcReply};
use libfuzzer_sys::fuzz_target;
use openraft::EntryPayload;

fn check(table: &LockTable) {
    for lock in table.held(0) {
        assert_eq!(table.get(&lock.project, &lock.name, 0), Some(&lock));
        assert!(lock.token <= table.last_token());
    }
}

fn apply(table: &mut LockTable, commands: &[&Command]) {
    let mut last = table.last_token();
    for c in commands {
        if let Answer::Held(l) = table.apply(c) {
            if matches!(c, Command::Acquire { .. }) {
                assert!(l.token > last, "a grant reused a fencing token");
                last = l.token;
            }
        }
        assert_eq!(table.last_token(), last);
        check(table);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        let Ok(request) = rpc::decode_request(body) else {
            return;
        };
        let again = rpc::encode(&request).expect("a decoded request encodes");
        let back = rpc::decode_request(&again).expect("an encoded request decodes");
        assert_eq!(rpc::encode(&back).expect("encodes"), again);
        match &request {
            Rpc::Append(append) => {
                let commands: Vec<&Command> = append
                    .entries
                    .iter()
                    .filter_map(|e| match &e.payload {
                        EntryPayload::Normal(c) => Some(c),
                        _ => None,
                    })
                    .collect();
                apply(&mut LockTable::default(), &commands);
            }
            Rpc::Snapshot(snapshot) => {
                if let Ok(mut table) = rpc::decode_table(&snapshot.data) {
                    check(&table);
                    // The table keeps its laws under the commands that follow a snapshot.
                    let held = table.held(0);
                    let commands: Vec<Command> = held
                        .iter()
                        .map(|l| Command::Acquire {
                            name: l.name.clone(),
                            project: l.project.clone(),
                            holder: l.holder.clone(),
                            reason: String::new(),
                            ttl_ms: 1_000,
                            now_ms: l.expires_ms,
                        })
                        .collect();
                    apply(&mut table, &commands.iter().collect::<Vec<_>>());
                }
            }
            Rpc::Write(c) => apply(&mut LockTable::default(), &[c]),
            Rpc::Vote(_) | Rpc::Status | Rpc::Formed => {}
        }
    } else if let Ok(reply) = rpc::decode_reply(body) {
        let again = rpc::encode(&reply).expect("a decoded answer encodes");
        let back = rpc::decode_reply(&again).expect("an encoded answer decodes");
        assert_eq!(rpc::encode(&back).expect("encodes"), again);
        if let RpcReply::Status(Ok(table)) = &reply {
            check(table);
        }
    }
});
