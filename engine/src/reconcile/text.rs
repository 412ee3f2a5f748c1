//! The `text` merge: a 3-way line merge (the `diffy` crate's diff3) for markdown such as
//! `MEMORY.md`. Edits to different lines merge; edits that overlap are refused, and the path
//! falls back to `newest` with a conflict record. Without a known common ancestor there is
//! nothing to merge against: refused as well.

use super::Refusal;

/// Merge `winner` and `loser` against their common `ancestor`. The arguments are ordered by
/// the `newest` rule so both sides run the same merge and get the same bytes.
pub fn merge(ancestor: Option<&[u8]>, winner: &[u8], loser: &[u8]) -> Result<Vec<u8>, Refusal> {
    if winner == loser {
        return Ok(winner.to_vec());
    }
    let Some(ancestor) = ancestor else {
        return Err(Refusal::NoAncestor);
    };
    if ancestor == loser {
        return Ok(winner.to_vec());
    }
    if ancestor == winner {
        return Ok(loser.to_vec());
    }
    diffy::merge_bytes(ancestor, winner, loser).map_err(|with_markers| {
        let hunks = with_markers
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"<<<<<<<"))
            .count();
        Refusal::Overlapping { hunks }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "# Memory\n\n- one\n- two\n- three\n\n## Notes\n\nnothing yet\n";

    #[test]
    fn edits_to_different_lines_merge() {
        let w = BASE.replace("- one", "- one (done)");
        let l = BASE.replace("nothing yet", "a note");
        let merged = merge(Some(BASE.as_bytes()), w.as_bytes(), l.as_bytes()).unwrap();
        let expected = BASE
            .replace("- one", "- one (done)")
            .replace("nothing yet", "a note");
        assert_eq!(String::from_utf8(merged).unwrap(), expected);
        let other_way = merge(Some(BASE.as_bytes()), l.as_bytes(), w.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(other_way).unwrap(), expected);
    }

    #[test]
    fn overlapping_edits_are_refused() {
        let w = BASE.replace("- two", "- two!");
        let l = BASE.replace("- two", "- 2");
        assert_eq!(
            merge(Some(BASE.as_bytes()), w.as_bytes(), l.as_bytes()),
            Err(Refusal::Overlapping { hunks: 1 })
        );
    }

    #[test]
    fn no_ancestor_no_merge() {
        assert_eq!(merge(None, b"a\n", b"b\n"), Err(Refusal::NoAncestor));
        assert_eq!(merge(None, b"a\n", b"a\n").unwrap(), b"a\n");
    }
}
