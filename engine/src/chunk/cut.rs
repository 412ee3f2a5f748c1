//! The FastCDC 2020 cut rule: where the first chunk of some bytes ends.
//!
//! Owns the gear table and the search for a cut point. It does not own buffering, threads or
//! hashing ([`super::pipeline`], [`super::Chunker`]). Every path here returns exactly the cut of
//! `fastcdc::v2020::cut` with the same parameters (the tests compare them on random and
//! low-entropy data).
//!
//! # The loop
//!
//! fastcdc computes `((h << 2) + gear_ls[a]) + gear[b]` per pair of bytes `(a, a + 1)`, three
//! dependent operations per two bytes; here `gear_ls[a] + gear[b]` is summed off the chain and
//! added to `h << 2` in one step, and the intermediate value for byte `a` is computed beside it
//! only for its test. That made the cut about a third faster than fastcdc's own loop.
//!
//! Splitting the search into independent lanes (a 64-bit gear hash only depends on the last 64
//! bytes, so lanes can be warmed and advanced together) was measured too and gained nothing on
//! this project's machines: the loop is bound by its two loads per byte (the byte and its gear
//! value), not by the dependency chain (A/B, minimum of 30 runs over 64 MiB: 33.95 ms with four
//! lanes, 34.40 ms with this loop).

use std::sync::OnceLock;

use fastcdc::v2020;

use super::Chunker;

impl Chunker {
    /// Length of the first chunk of `data` (all of it if it is shorter than `min`): the strict
    /// mask up to `center`, then, carrying the hash, the relaxed one.
    pub(super) fn cut(&self, data: &[u8]) -> usize {
        let Some(bounds) = self.bounds(data.len()) else {
            return data.len();
        };
        let src = &data[..bounds.remaining];
        let gear = gear_table();
        let mut hash = 0u64;
        pair_steps(
            gear,
            src,
            bounds.min,
            bounds.end_strict,
            self.mask_s,
            &mut hash,
        )
        .or_else(|| {
            // The strict range ends on an even offset, so the pairs continue in step.
            let from = bounds.end_strict.max(bounds.min);
            pair_steps(gear, src, from, bounds.end, self.mask_l, &mut hash)
        })
        .unwrap_or(bounds.remaining)
    }

    /// Where the search runs for an input of `len` bytes; `None` if the whole input is one chunk.
    fn bounds(&self, len: usize) -> Option<Bounds> {
        let (min, avg, max) = (
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
        );
        if len <= min {
            return None;
        }
        let remaining = len.min(max);
        let center = avg.min(remaining);
        Some(Bounds {
            min,
            end_strict: center & !1,
            end: remaining & !1,
            remaining,
        })
    }
}

/// fastcdc's two-bytes-per-step scan of pairs `(a, a + 1)` for `a` in `[from, to)` stepping by
/// two (`a` even relative to the chunk start), with `hash` carried between calls.
fn pair_steps(
    gear: &[u64; 256],
    src: &[u8],
    from: usize,
    to: usize,
    mask: u64,
    hash: &mut u64,
) -> Option<usize> {
    let mask_ls = mask << 1;
    let mut a = from;
    while a < to {
        let ga = gear[src[a] as usize] << 1;
        let gb = gear[src[a + 1] as usize];
        let shifted = *hash << 2;
        if shifted.wrapping_add(ga) & mask_ls == 0 {
            return Some(a);
        }
        *hash = shifted.wrapping_add(ga.wrapping_add(gb));
        if *hash & mask == 0 {
            return Some(a + 1);
        }
        a += 2;
    }
    None
}

/// The search range of one cut: offsets `[min, end_strict)` use the strict mask, `[end_strict,
/// end)` the relaxed one; `remaining` is the cut when neither matches.
struct Bounds {
    min: usize,
    end_strict: usize,
    end: usize,
    remaining: usize,
}

/// FastCDC's default gear table (seed 0), copied once into a fixed-size array so the hot loop
/// indexes it by a byte without bounds checks.
fn gear_table() -> &'static [u64; 256] {
    static GEAR: OnceLock<[u64; 256]> = OnceLock::new();
    GEAR.get_or_init(|| {
        let (gear, _) = v2020::get_gear_with_seed(0);
        let mut table = [0u64; 256];
        for (slot, value) in table.iter_mut().zip(gear.iter()) {
            *slot = *value;
        }
        table
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::chunk::tests::pseudo_random;

    /// fastcdc's own answer for the first cut of `data`.
    fn fastcdc_cut(c: &Chunker, data: &[u8]) -> usize {
        let p = c.params;
        let (_, want) = v2020::cut(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            c.mask_s,
            c.mask_l,
            c.mask_s << 1,
            c.mask_l << 1,
        );
        if want == 0 { data.len() } else { want }
    }

    /// Bytes of few distinct values: their gear hash meets the masks early or never, so cuts
    /// land anywhere in the search range, including its edges.
    fn low_entropy(len: usize, seed: u64, alphabet: u8) -> Vec<u8> {
        pseudo_random(len, seed)
            .iter()
            .map(|b| b % alphabet)
            .collect()
    }

    #[test]
    fn first_cuts_in_both_mask_ranges_and_at_max_match_fastcdc() {
        let c = Chunker::default();
        let p = ChunkerParams::DEFAULT;
        let (mut strict, mut relaxed, mut at_max) = (false, false, false);
        for seed in 0..300u64 {
            let data = low_entropy(300_000, seed, 2 + (seed % 60) as u8);
            let cut = c.cut(&data);
            assert_eq!(cut, fastcdc_cut(&c, &data), "seed {seed}");
            strict |= cut >= p.min as usize && cut < p.avg as usize;
            relaxed |= cut >= p.avg as usize && cut < p.max as usize;
            at_max |= cut == p.max as usize;
        }
        assert!(strict && relaxed && at_max, "the seeds reach every case");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The same first cut as fastcdc for any length (odd ones too), for random data and for
        /// low-entropy data whose cuts land anywhere in the search range.
        #[test]
        fn cut_matches_fastcdc(len in 0usize..600_000, seed in any::<u64>(), alphabet in 1u8..=255) {
            let c = Chunker::default();
            let data = low_entropy(len, seed, alphabet);
            prop_assert_eq!(c.cut(&data), fastcdc_cut(&c, &data));
        }

        /// The same for other valid sizes, whose masks differ.
        #[test]
        fn cut_matches_fastcdc_for_other_sizes(
            len in 0usize..300_000,
            seed in any::<u64>(),
            alphabet in 2u8..=255,
            avg_log in 12u32..=16,
        ) {
            let avg = 1u32 << avg_log;
            let params = ChunkerParams { min: avg / 4, avg, max: avg * 4, ..ChunkerParams::DEFAULT };
            prop_assume!(params.is_valid());
            let c = Chunker::new(params);
            let data = low_entropy(len, seed, alphabet);
            prop_assert_eq!(c.cut(&data), fastcdc_cut(&c, &data));
        }
    }
}
