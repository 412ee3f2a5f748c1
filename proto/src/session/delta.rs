//! Delta bases of a fetch (feature `delta`): for each chunk about to be fetched, which chunk of
//! our current version of the same path to name as its base in `GetChunksAgainst`.
//!
//! The rule is positional: a fetched chunk's base is our chunk that covers the byte offset at
//! which the fetched chunk starts in the new version (or our last chunk if the new version has
//! grown past our end). Content-defined chunk boundaries before an edit do not move, so an edited
//! note (one chunk) gets its old self, and the new tail of an appended log gets the old tail.
//! The peer compresses against the base only when that is smaller; a poor base costs nothing but
//! its 32-byte id. This module only chooses; reading bases and decoding is `chunks`', compressing
//! is the serving side's ([`crate::messages::ChunkData::compress_against`]).

use std::collections::{HashMap, HashSet};

use botsync_engine::plan::PlanItem;
use botsync_engine::{ChunkRef, Hash, RelPath};

use crate::messages::Features;

/// True if chunks may travel as deltas: both `delta` and `zstd` negotiated.
pub(crate) fn negotiated(features: Features) -> bool {
    features.contains(Features::DELTA.union(Features::ZSTD))
}

/// For each chunk of `needed` that a file-writing item of `items` brings, the chunk of our
/// current version of that path (in `current`) to ask for it against. A chunk needed by several
/// items gets the base of the first.
pub(crate) fn bases(
    items: &[PlanItem],
    needed: &[ChunkRef],
    current: &[(RelPath, Vec<ChunkRef>)],
) -> HashMap<Hash, ChunkRef> {
    let needed: HashSet<Hash> = needed.iter().map(|c| c.id).collect();
    let ours: HashMap<&RelPath, &[ChunkRef]> =
        current.iter().map(|(p, c)| (p, c.as_slice())).collect();
    let mut out = HashMap::new();
    for item in items.iter().filter(|i| i.action.writes_file()) {
        let Some(local) = ours.get(&item.remote.path).filter(|l| !l.is_empty()) else {
            continue;
        };
        let starts = offsets(local);
        let mut at = 0u64;
        for chunk in &item.remote.chunks {
            if needed.contains(&chunk.id) && !out.contains_key(&chunk.id) {
                // The last of our chunks starting at or before `at` (there is one: ours starts
                // at 0); past our end that is our last chunk.
                let k = starts.partition_point(|s| *s <= at).saturating_sub(1);
                if let Some(base) = local.get(k).filter(|b| b.id != chunk.id) {
                    out.insert(chunk.id, *base);
                }
            }
            at += u64::from(chunk.len);
        }
    }
    out
}

/// Start offset of each chunk.
fn offsets(chunks: &[ChunkRef]) -> Vec<u64> {
    let mut at = 0u64;
    chunks
        .iter()
        .map(|c| {
            let start = at;
            at += u64::from(c.len);
            start
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use botsync_engine::plan::Action;
    use botsync_engine::{
        AgentLabel, Attribution, ChunkerParams, EntryKind, FileEntry, Hash, MachineName, Mode,
        PeerId, VersionVector,
    };

    use super::*;

    fn chunk(tag: u8, len: u32) -> ChunkRef {
        ChunkRef {
            id: Hash::of(&[tag]),
            len,
        }
    }

    fn item(path: &str, chunks: Vec<ChunkRef>, action: Action) -> PlanItem {
        let remote = FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            mtime_ns: 0,
            mode: Mode::default(),
            content: Hash::ZERO,
            chunks,
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::default(),
            parent: None,
            changed_by: Attribution {
                peer: PeerId([0; 32]),
                agent: AgentLabel::default(),
                machine: MachineName::default(),
            },
        };
        PlanItem {
            remote,
            action,
            bytes_needed: 0,
            base: None,
            policy: Default::default(),
        }
    }

    fn path(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn an_edited_one_chunk_note_is_asked_for_against_its_old_self() {
        let (old, new) = (chunk(1, 9000), chunk(2, 9100));
        let items = [item("notes/a.md", vec![new], Action::Take)];
        let current = [(path("notes/a.md"), vec![old])];
        let bases = bases(&items, &[new], &current);
        assert_eq!(bases.get(&new.id), Some(&old));
        assert_eq!(bases.len(), 1);
    }

    #[test]
    fn an_appended_log_asks_for_its_new_tail_against_its_old_tail() {
        let (a, b, old_tail) = (chunk(1, 65536), chunk(2, 70000), chunk(3, 30000));
        let (new_tail, grown) = (chunk(4, 60000), chunk(5, 40000));
        let items = [item("log.jsonl", vec![a, b, new_tail, grown], Action::Take)];
        let current = [(path("log.jsonl"), vec![a, b, old_tail])];
        let bases = bases(&items, &[new_tail, grown], &current);
        assert_eq!(bases.get(&new_tail.id), Some(&old_tail));
        // Past our end: our last chunk is still the likeliest match.
        assert_eq!(bases.get(&grown.id), Some(&old_tail));
    }

    #[test]
    fn new_files_deletions_and_chunks_not_fetched_get_no_base() {
        let (old, new) = (chunk(1, 100), chunk(2, 100));
        let items = [
            item("new.md", vec![new], Action::Take),
            item("gone.md", vec![], Action::Delete),
        ];
        let current = [(path("gone.md"), vec![old])];
        assert!(bases(&items, &[new], &current).is_empty());
        let edited = [item("gone.md", vec![new], Action::Take)];
        assert!(bases(&edited, &[], &current).is_empty());
    }
}
