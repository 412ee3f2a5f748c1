//! The laws of the merge policies (docs/CONFLICTS.md, *Merge policies*): whichever peer merges,
//! in whichever order, the bytes are the same, and no line is ever lost.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use botsync_engine::reconcile::{MergePolicy, json, merge, union};
use proptest::prelude::*;

/// A log line: JSONL with a timestamp, plain text, or something malformed.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..50, "[a-z]{1,6}").prop_map(|(ts, m)| format!("{{\"ts\":{ts},\"m\":\"{m}\"}}")),
        "[a-z ]{0,8}",
        "\\{[a-z\"]{0,5}",
    ]
}

fn lines(max: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(line(), 0..max)
}

fn text(ls: &[String]) -> Vec<u8> {
    ls.iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// An ancestor and three logs that each append to it.
fn logs() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)> {
    (lines(5), lines(6), lines(6), lines(6)).prop_map(|(a, x, y, z)| {
        let base = text(&a);
        let ext = |more: &[String]| [base.clone(), text(more)].concat();
        (base.clone(), ext(&x), ext(&y), ext(&z))
    })
}

fn u(a: &[u8], x: &[u8], y: &[u8]) -> Vec<u8> {
    union::merge(Some(a), x, y).unwrap()
}

fn counts(bytes: &[u8]) -> BTreeMap<Vec<u8>, usize> {
    let mut out = BTreeMap::new();
    for l in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        *out.entry(l.to_vec()).or_default() += 1;
    }
    out
}

proptest! {
    #[test]
    fn union_is_commutative((a, x, y, _z) in logs()) {
        prop_assert_eq!(u(&a, &x, &y), u(&a, &y, &x));
    }

    #[test]
    fn union_is_associative((a, x, y, z) in logs()) {
        prop_assert_eq!(u(&a, &u(&a, &x, &y), &z), u(&a, &x, &u(&a, &y, &z)));
    }

    #[test]
    fn union_is_idempotent_and_absorbs_what_it_merged((a, x, y, _z) in logs()) {
        let m = u(&a, &x, &y);
        prop_assert_eq!(&u(&a, &x, &x), &x);
        prop_assert_eq!(&u(&a, &m, &m), &m);
        prop_assert_eq!(&u(&a, &m, &x), &m);
        prop_assert_eq!(&u(&a, &y, &m), &m);
    }

    #[test]
    fn a_pure_extension_merges_to_the_extension((a, x, _y, _z) in logs(), more in lines(4)) {
        let extended = [x.clone(), text(&more)].concat();
        prop_assert_eq!(&u(&a, &x, &extended), &extended);
        prop_assert_eq!(&u(&a, &extended, &x), &extended);
    }

    #[test]
    fn union_never_loses_a_line((a, x, y, _z) in logs()) {
        let merged = counts(&u(&a, &x, &y));
        for side in [&x, &y] {
            for (line, n) in counts(side) {
                prop_assert!(merged.get(&line).copied().unwrap_or(0) >= n, "lost {:?}", line);
            }
        }
    }

    #[test]
    fn json_disjoint_key_edits_keep_both(
        base in proptest::collection::btree_map("[a-e]", 0u8..9, 0..5),
        ours in proptest::collection::btree_map("[f-j]", 0u8..9, 0..4),
        theirs in proptest::collection::btree_map("[k-o]", 0u8..9, 0..4),
    ) {
        let doc = |extra: &BTreeMap<String, u8>| {
            let mut all = base.clone();
            all.extend(extra.iter().map(|(k, v)| (k.clone(), *v)));
            serde_json::to_vec(&all).unwrap()
        };
        let a = doc(&BTreeMap::new());
        let merged = json::merge(Some(&a), &doc(&ours), &doc(&theirs)).unwrap();
        prop_assert!(merged.conflicts.is_empty());
        let got: BTreeMap<String, u8> = serde_json::from_slice(&merged.bytes).unwrap();
        let mut want = base.clone();
        want.extend(ours);
        want.extend(theirs);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn text_non_overlapping_edits_keep_both(
        base in proptest::collection::vec("[a-z]{1,8}", 6..20),
        i in 0usize..100,
        gap in 3usize..6,
    ) {
        let n = base.len();
        let i = i % (n - gap);
        let j = i + gap;
        let mut w = base.clone();
        w[i] = format!("{}-winner", w[i]);
        let mut l = base.clone();
        l[j] = format!("{}-loser", l[j]);
        let mut want = base.clone();
        want[i] = w[i].clone();
        want[j] = l[j].clone();
        let merged = merge(MergePolicy::Text, Some(&text(&base)), &text(&w), &text(&l)).unwrap();
        prop_assert_eq!(merged.bytes, text(&want));
        let swapped = merge(MergePolicy::Text, Some(&text(&base)), &text(&l), &text(&w)).unwrap();
        prop_assert_eq!(swapped.bytes, text(&want));
    }
}
