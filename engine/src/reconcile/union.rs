//! The `union` merge of append-only logs (JSONL, `*.log`, daily memory notes).
//!
//! The result is the part both versions share (at most the ancestor's lines, when it is known),
//! then every line either side added after it,
//! once each (a line both added once appears once; a line one side added twice appears twice),
//! sorted by the line's timestamp field when it is a JSON object that has one, then by its bytes.
//! The order depends on nothing but the lines, so every peer computes the same bytes whichever
//! side merges and in whichever order merges happen. Lines are kept whole: a malformed or huge
//! line is never cut. A version that lost a line of the common ancestor (a rewritten or
//! truncated log) is refused: that is a conflict for the `newest` rule, never a truncation.
//! (The ancestor need not be a byte prefix: an earlier merge may have sorted its new lines
//! among lines the ancestor did not have.)

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::Refusal;

/// Largest line whose timestamp is looked for; longer lines sort by their bytes alone.
const TIMESTAMP_SCAN_LIMIT: usize = 64 * 1024;

/// The fields tried, in order, as a JSONL line's timestamp.
const TIMESTAMP_FIELDS: &[&str] = &["ts", "timestamp", "time", "created_at", "date"];

/// Merge `ours` and `theirs`, both descended from `ancestor` when it is known.
pub fn merge(ancestor: Option<&[u8]>, ours: &[u8], theirs: &[u8]) -> Result<Vec<u8>, Refusal> {
    if ours == theirs {
        return Ok(ours.to_vec());
    }
    let o = lines(ours);
    let t = lines(theirs);
    if let Some(a) = ancestor {
        // Every line of the ancestor must still be there (earlier merges may have put lines
        // in another order, so this is a count per line, not a byte prefix).
        let before = count(&lines(a));
        if !contains(&count(&o), &before) {
            return Err(Refusal::Rewritten { side: "winner" });
        }
        if !contains(&count(&t), &before) {
            return Err(Refusal::Rewritten { side: "loser" });
        }
    }
    let shared = o.iter().zip(&t).take_while(|(a, b)| a == b).count();
    // A pure extension merges to the extension: its lines stay in the order they were written.
    if shared == o.len() && ends_terminated(ours) {
        return Ok(theirs.to_vec());
    }
    if shared == t.len() && ends_terminated(theirs) {
        return Ok(ours.to_vec());
    }
    // Lines past the ancestor are sorted even where both sides happen to start alike: how far
    // they agree depends on the order earlier merges ran in, and the bytes must not (the merge
    // is associative; tests/merge_laws.rs).
    let common = match ancestor {
        Some(a) => shared.min(lines(a).len()),
        None => shared,
    };
    let mut counts: BTreeMap<&[u8], (usize, usize)> = BTreeMap::new();
    for line in &o[common..] {
        counts.entry(line).or_default().0 += 1;
    }
    for line in &t[common..] {
        counts.entry(line).or_default().1 += 1;
    }
    let mut added: Vec<(&[u8], usize)> = counts
        .into_iter()
        .map(|(line, (a, b))| (line, a.max(b)))
        .collect();
    added.sort_by(|(a, _), (b, _)| order(a, b));
    let mut out = Vec::with_capacity(ours.len().max(theirs.len()));
    for line in &o[..common] {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    for (line, n) in added {
        for _ in 0..n {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// The lines of `text` without their `\n`; a last line without one counts as a line.
fn lines(text: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    if text.is_empty() || text.ends_with(b"\n") {
        out.pop();
    }
    out
}

fn count<'a>(lines: &[&'a [u8]]) -> BTreeMap<&'a [u8], usize> {
    let mut out = BTreeMap::new();
    for l in lines {
        *out.entry(*l).or_default() += 1;
    }
    out
}

/// True if `all` has every line of `part` at least as often.
fn contains(all: &BTreeMap<&[u8], usize>, part: &BTreeMap<&[u8], usize>) -> bool {
    part.iter()
        .all(|(line, n)| all.get(line).is_some_and(|have| have >= n))
}

fn ends_terminated(text: &[u8]) -> bool {
    text.is_empty() || text.ends_with(b"\n")
}

/// The deterministic order of added lines: timestamped lines by timestamp, before lines
/// without one; ties by bytes.
fn order(a: &[u8], b: &[u8]) -> Ordering {
    match (timestamp(a), timestamp(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// A line's timestamp: numbers before strings, numbers by value, strings by bytes (ISO 8601
/// strings sort by time that way).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stamp {
    Number(OrderedF64),
    Text(String),
}

#[derive(Debug, PartialEq)]
struct OrderedF64(f64);

impl Eq for OrderedF64 {}

impl PartialOrd for OrderedF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn timestamp(line: &[u8]) -> Option<Stamp> {
    let trimmed = line.trim_ascii_start();
    if !trimmed.starts_with(b"{") || line.len() > TIMESTAMP_SCAN_LIMIT {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let object = value.as_object()?;
    TIMESTAMP_FIELDS
        .iter()
        .find_map(|field| match object.get(*field)? {
            serde_json::Value::Number(n) => n.as_f64().map(|f| Stamp::Number(OrderedF64(f))),
            serde_json::Value::String(s) => Some(Stamp::Text(s.clone())),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(a: &str, o: &str, t: &str) -> String {
        String::from_utf8(merge(Some(a.as_bytes()), o.as_bytes(), t.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn both_sides_new_lines_are_kept_once_in_timestamp_order() {
        let a = "{\"ts\":1,\"m\":\"start\"}\n";
        let o = "{\"ts\":1,\"m\":\"start\"}\n{\"ts\":3,\"m\":\"ours\"}\n";
        let t = "{\"ts\":1,\"m\":\"start\"}\n{\"ts\":2,\"m\":\"theirs\"}\n";
        let merged = m(a, o, t);
        assert_eq!(
            merged,
            "{\"ts\":1,\"m\":\"start\"}\n{\"ts\":2,\"m\":\"theirs\"}\n{\"ts\":3,\"m\":\"ours\"}\n"
        );
        assert_eq!(m(a, t, o), merged);
    }

    #[test]
    fn a_rewritten_prefix_is_refused_never_truncated() {
        let err = merge(Some(b"one\ntwo\n"), b"one\nTWO\n", b"one\ntwo\nthree\n").unwrap_err();
        assert_eq!(err, Refusal::Rewritten { side: "winner" });
    }

    #[test]
    fn an_extension_keeps_its_own_order() {
        assert_eq!(m("x\n", "x\nz\n", "x\nz\nb\na\n"), "x\nz\nb\na\n");
    }

    #[test]
    fn an_unterminated_last_line_is_kept_whole() {
        assert_eq!(m("x\n", "x\npart", "x\nother\n"), "x\nother\npart\n");
        assert_eq!(m("", "not json {", ""), "not json {");
    }

    #[test]
    fn lines_without_a_timestamp_follow_timestamped_ones() {
        assert_eq!(
            m("", "plain\n", "{\"time\":\"2026-12-05T10:00:00Z\"}\n"),
            "{\"time\":\"2026-12-05T10:00:00Z\"}\nplain\n"
        );
    }
}
