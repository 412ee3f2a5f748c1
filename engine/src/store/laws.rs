//! The law of the backend seam: the index in memory is the index on disk. Any sequence of
//! operations through the typed API gives the same answers on both, and leaves the same
//! records (history keys aside: they are numbers the backend hands out).

use proptest::prelude::*;

use super::backend::Tree;
use super::{HistoryAction, HistoryRecord, Store};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
use crate::{ChunkerParams, EntryKind, FileEntry, Mode, VersionVector};

/// One operation of the typed API, over a few keys so that they collide.
#[derive(Debug, Clone)]
enum Op {
    KvPut(u8, u8),
    KvDel(u8),
    KvSwap(u8, Option<u8>, Option<u8>),
    KvTrim(usize),
    History(u8, i64),
    Prune(i64),
    PeerPut(u8, u8),
    PeerForget(u8),
    RaftAppend(u64, u64),
    RaftTruncate(u64),
    RaftPurge(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let small = 0u8..4;
    prop_oneof![
        (small.clone(), any::<u8>()).prop_map(|(k, v)| Op::KvPut(k, v)),
        small.clone().prop_map(Op::KvDel),
        (
            small.clone(),
            proptest::option::of(0u8..3),
            proptest::option::of(0u8..3)
        )
            .prop_map(|(k, e, n)| Op::KvSwap(k, e, n)),
        (0usize..4).prop_map(Op::KvTrim),
        (small.clone(), 0i64..10).prop_map(|(p, t)| Op::History(p, t)),
        (0i64..10).prop_map(Op::Prune),
        (0u8..2, small.clone()).prop_map(|(peer, p)| Op::PeerPut(peer, p)),
        (0u8..2).prop_map(Op::PeerForget),
        (1u64..8, 1u64..4).prop_map(|(from, n)| Op::RaftAppend(from, n)),
        (0u64..9).prop_map(Op::RaftTruncate),
        (0u64..9).prop_map(Op::RaftPurge),
    ]
}

fn path(p: u8) -> RelPath {
    RelPath::new(&format!("dir/note{p}.md")).unwrap_or_else(|e| panic!("{e}"))
}

fn entry(p: u8) -> FileEntry {
    FileEntry {
        path: path(p),
        kind: EntryKind::File,
        size: 0,
        mtime_ns: i64::from(p),
        mode: Mode::default(),
        content: Hash::ZERO,
        chunks: Vec::new(),
        chunker: ChunkerParams::DEFAULT,
        version: VersionVector::new(),
        parent: None,
        changed_by: Attribution {
            peer: PeerId([p; 32]),
            agent: AgentLabel::new("law"),
            machine: MachineName::new("law"),
        },
    }
}

/// Carry `op` out on `store`; what it answered, printed.
fn apply(store: &Store, op: &Op) -> String {
    match op {
        Op::KvPut(k, v) => format!("{:?}", store.kv_put("ns", &k.to_string(), &[*v])),
        Op::KvDel(k) => format!("{:?}", store.kv_del("ns", &k.to_string())),
        Op::KvSwap(k, expected, new) => format!(
            "{:?}",
            store.kv_compare_and_swap(
                "ns",
                &k.to_string(),
                expected.map(|e| [e]).as_ref().map(|e| &e[..]),
                new.map(|n| [n]).as_ref().map(|n| &n[..]),
            )
        ),
        Op::KvTrim(keep) => format!("{:?}", store.kv_trim("ns", *keep)),
        Op::History(p, at) => format!(
            "{:?}",
            store.history_append(&HistoryRecord {
                at_ns: *at,
                path: path(*p),
                action: HistoryAction::Modified,
                from_peer: PeerId([*p; 32]),
                agent: AgentLabel::new("law"),
                machine: MachineName::new("law"),
                old_content: None,
                new_content: None,
                bytes: 0,
            })
        ),
        Op::Prune(before) => format!("{:?}", store.history_prune(*before)),
        Op::PeerPut(peer, p) => format!("{:?}", store.peer_put(&PeerId([*peer; 32]), &entry(*p))),
        Op::PeerForget(peer) => format!("{:?}", store.peer_forget(&PeerId([*peer; 32]))),
        Op::RaftAppend(from, n) => {
            let log = store.raft_log().unwrap_or_else(|e| panic!("{e}"));
            format!(
                "{:?}",
                log.append((*from..from + n).map(|i| (i, vec![i as u8])))
            )
        }
        Op::RaftTruncate(i) => {
            let log = store.raft_log().unwrap_or_else(|e| panic!("{e}"));
            format!("{:?}", log.truncate_from(*i))
        }
        Op::RaftPurge(i) => {
            let log = store.raft_log().unwrap_or_else(|e| panic!("{e}"));
            format!("{:?}", log.purge_to(*i))
        }
    }
}

/// Everything the typed API can read, printed.
fn observe(store: &Store) -> String {
    let log = store.raft_log().unwrap_or_else(|e| panic!("{e}"));
    let mut out = vec![
        format!("{:?}", store.kv_list("ns")),
        format!("{:?}", store.history_recent(100)),
        format!("{:?}", store.peer_all(&PeerId([0; 32]))),
        format!("{:?}", store.peer_all(&PeerId([1; 32]))),
        format!("{:?}", log.range(..)),
        format!("{:?}", log.last()),
    ];
    for p in 0..4 {
        out.push(format!("{:?}", store.history_for(&path(p), 2)));
    }
    for tree in Tree::ALL {
        if !matches!(tree, Tree::History | Tree::HistoryByPath) {
            out.push(format!("{:?}", store.rows(tree)));
        }
    }
    out.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_index_in_memory_answers_as_the_index_on_disk(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (on_disk, _) = Store::open(&tmp.path().join("db")).unwrap_or_else(|e| panic!("{e}"));
        let in_memory = Store::in_memory();
        for op in &ops {
            prop_assert_eq!(apply(&on_disk, op), apply(&in_memory, op), "{:?}", op);
        }
        prop_assert_eq!(observe(&on_disk), observe(&in_memory));
    }
}
