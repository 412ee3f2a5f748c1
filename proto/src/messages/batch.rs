//! Packing long lists into messages that respect both the count caps and [`MAX_FRAME`].
//!
//! A reply with 20 000 entries or a request for 5 000 paths does not fit one message. These
//! helpers split them so that every message encodes, leaving room for the header fields. They
//! own only the splitting; what to ask for and in which order is the session's business.

use botsync_engine::RelPath;

use super::{Message, WireEntry};
use crate::codec::{CodecError, encoded_len};
use crate::limits::{MAX_ENTRIES_PER_BATCH, MAX_FRAME, MAX_PATHS_PER_REQUEST};

/// Bytes kept free in every batch for the tag, list length and flags.
const HEADROOM: usize = 64;

/// Split entries into `Entries` batches; the last batch has `last` set. No entries give one
/// empty batch with `last` set, so a reply always terminates.
pub fn entry_batches(
    entries: impl IntoIterator<Item = WireEntry>,
) -> Result<Vec<Message>, CodecError> {
    let groups = pack(entries, MAX_ENTRIES_PER_BATCH)?;
    let count = groups.len();
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(i, entries)| Message::Entries {
            entries,
            last: i + 1 == count,
        })
        .collect())
}

/// Split paths into `GetNodes` (if `nodes`) or `GetEntries` requests. No paths give no request.
pub fn path_requests(
    paths: impl IntoIterator<Item = RelPath>,
    nodes: bool,
) -> Result<Vec<Message>, CodecError> {
    let mut groups = pack(paths, MAX_PATHS_PER_REQUEST)?;
    if groups.first().is_some_and(Vec::is_empty) {
        groups.clear();
    }
    Ok(groups
        .into_iter()
        .map(|paths| {
            if nodes {
                Message::GetNodes { paths }
            } else {
                Message::GetEntries { paths }
            }
        })
        .collect())
}

/// Group items so each group has at most `max_items` and encodes within the frame; always at
/// least one (possibly empty) group.
fn pack<T: serde::Serialize>(
    items: impl IntoIterator<Item = T>,
    max_items: usize,
) -> Result<Vec<Vec<T>>, CodecError> {
    let budget = MAX_FRAME - HEADROOM;
    let mut groups = vec![Vec::new()];
    let mut bytes = 0;
    for item in items {
        let len = encoded_len(&item)?;
        CodecError::check_limit("one batch item in bytes", len, budget)?;
        let full = groups
            .last()
            .is_some_and(|g: &Vec<T>| g.len() == max_items || bytes + len > budget);
        if full {
            groups.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(group) = groups.last_mut() {
            group.push(item);
        }
    }
    Ok(groups)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::codec::encode;

    fn long_path(i: usize) -> RelPath {
        // 16 components of 255 bytes: 4095 bytes, just under the path limit.
        let comp = format!("{i:0>255}");
        RelPath::new(&vec![comp; 16].join("/")).unwrap()
    }

    #[test]
    fn requests_split_by_count() {
        let paths: Vec<RelPath> = (0..2500)
            .map(|i| RelPath::new(&format!("f{i}")).unwrap())
            .collect();
        let requests = path_requests(paths.clone(), true).unwrap();
        assert_eq!(requests.len(), 3);
        let mut back = Vec::new();
        for r in requests {
            encode(&r).unwrap();
            let Message::GetNodes { paths } = r else {
                panic!("not a get-nodes: {r}")
            };
            back.extend(paths);
        }
        assert_eq!(back, paths);
    }

    #[test]
    fn requests_split_by_bytes() {
        let paths: Vec<RelPath> = (0..1024).map(long_path).collect();
        let requests = path_requests(paths, false).unwrap();
        assert!(requests.len() >= 2, "{} requests", requests.len());
        assert!(requests.iter().all(|r| encode(r).is_ok()));
    }

    #[test]
    fn no_paths_no_requests_but_entries_always_terminate() {
        assert!(path_requests(Vec::new(), true).unwrap().is_empty());
        let batches = entry_batches(Vec::new()).unwrap();
        assert_eq!(
            batches,
            vec![Message::Entries {
                entries: Vec::new(),
                last: true
            }]
        );
    }
}
