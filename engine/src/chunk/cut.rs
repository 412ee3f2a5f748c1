//! The FastCDC 2020 cut rule: where the first chunk of some bytes ends.
//!
//! Owns the gear table and the search for a cut point. It does not own buffering, threads or
//! hashing ([`super::pipeline`], [`super::Chunker`]). Every path here returns exactly the cut of
//! `fastcdc::v2020::cut` with the same parameters (the tests compare them on random and
//! low-entropy data).
//!
//! # The rule, restated
//!
//! fastcdc scans two bytes per step with a doubled gear table, but what it computes is the plain
//! gear hash `H(p) = (H(p-1) << 1) + GEAR[byte p]`, started at zero at offset `min`, tested at
//! every offset `p` in `[min, end)`: the chunk ends at the first `p` with `H(p) & mask == 0` (the
//! strict mask before `center`, the relaxed one from there; `end` is the input length rounded
//! down to even, so an odd last byte is never tested). Its even-offset test is
//! `(H(p) << 1) & (mask << 1)`, which is `H(p) & mask` whenever the mask's top bit is clear, as it
//! is for every mask fastcdc defines.
//!
//! # Why lanes
//!
//! The hash is one long dependency chain, and a test-and-branch per byte keeps the one-lane loop
//! at about 1.6 GB/s on this project's machines: as slow as BLAKE3 itself. But a 64-bit gear hash
//! forgets: each step shifts left by one, so `H(p)` depends only on the 64 bytes ending at `p`.
//! [`find`] therefore splits the search into windows of four lanes, warms each lane's hash on the
//! 64 bytes before it, and advances the four independent hashes together, each lane reading its
//! bytes eight at a time (the loop is bound by loads: one per eight bytes instead of one per
//! byte). When any lane meets its mask, the earlier lanes are finished one by one, so the first
//! cut in input order wins exactly as in the one-lane loop.

use std::sync::OnceLock;

use fastcdc::v2020;

use super::Chunker;

/// Independent hash lanes per window.
const LANES: usize = 4;

/// Bytes per lane per window: long enough that warming three lanes (64 bytes each) costs little,
/// short enough that the work past a cut in the other lanes stays small.
const LANE: usize = 1024;

/// A gear hash depends on this many trailing bytes (one per bit of `u64`).
const WARM: usize = 64;

impl Chunker {
    /// Length of the first chunk of `data` (all of it if it is shorter than `min`).
    pub(super) fn cut(&self, data: &[u8]) -> usize {
        if (self.mask_s | self.mask_l) >> 63 != 0 {
            // Not a fastcdc mask: keep its even-offset quirk exactly (see the module docs).
            return self.cut_pairs(data);
        }
        self.search(data, find)
    }

    /// Run `step` over the strict range, then, carrying the hash, over the relaxed one.
    fn search(&self, data: &[u8], step: Step) -> usize {
        let Some(bounds) = self.bounds(data.len()) else {
            return data.len();
        };
        let src = &data[..bounds.remaining];
        let gear = gear_table();
        let mut hash = 0u64;
        step(
            gear,
            src,
            bounds.min,
            bounds.end_strict,
            self.mask_s,
            &mut hash,
        )
        .or_else(|| {
            // The strict range ends on an even offset, so pairs continue in step.
            let from = bounds.end_strict.max(bounds.min);
            step(gear, src, from, bounds.end, self.mask_l, &mut hash)
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

    /// The cut as fastcdc computes it, two bytes per step: the reference [`Chunker::cut`] must
    /// equal, and its path for masks with the top bit set.
    ///
    /// fastcdc computes `((h << 2) + gear_ls[a]) + gear[b]`, three dependent operations per two
    /// bytes; here `gear_ls[a] + gear[b]` is summed off the chain and added to `h << 2` in one
    /// step, and the intermediate value for byte `a` is computed beside it only for its test.
    pub(super) fn cut_pairs(&self, data: &[u8]) -> usize {
        self.search(data, pair_steps)
    }
}

/// A search for the first offset in `[from, to)` whose hash matches `mask`, with the hash of
/// the bytes before `from` carried in and, on a miss, out ([`find`], [`pair_steps`]).
type Step = fn(&[u64; 256], &[u8], usize, usize, u64, &mut u64) -> Option<usize>;

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

/// One gear step.
#[inline(always)]
fn roll(gear: &[u64; 256], hash: u64, byte: u8) -> u64 {
    (hash << 1).wrapping_add(gear[byte as usize])
}

/// The first offset in `[from, to)` whose gear hash matches `mask`, with `hash` holding the hash
/// of the bytes before `from` (zero if the chunk's hashing starts at `from`). On a miss, `hash`
/// is left holding the hash through `to - 1`, so a search can continue at `to` with another mask.
fn find(
    gear: &[u64; 256],
    src: &[u8],
    from: usize,
    to: usize,
    mask: u64,
    hash: &mut u64,
) -> Option<usize> {
    let mut at = from;
    // Lane k of a window starts at `at + k * LANE`; lanes 1.. are warmed on the WARM bytes
    // before them, which lie inside the window (LANE >= WARM), so after `from` and exact.
    while to.saturating_sub(at) >= LANES * LANE {
        let Some(window) = src[at..].first_chunk::<{ LANES * LANE }>() else {
            break;
        };
        let warm = |k: usize| {
            window[k * LANE - WARM..k * LANE]
                .iter()
                .fold(0, |acc, &b| roll(gear, acc, b))
        };
        // Four named hashes, not an array: they must stay in registers through the hot loop.
        let (mut h0, mut h1, mut h2, mut h3) = (*hash, warm(1), warm(2), warm(3));
        // One test and branch per lane and step; a match in lane 0 is the window's first, a
        // match in a later lane first finishes the lanes before it.
        let word = |k: usize, i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&window[k * LANE + i..k * LANE + i + 8]);
            u64::from_le_bytes(bytes)
        };
        for base in (0..LANE).step_by(8) {
            let (w0, w1, w2, w3) = (word(0, base), word(1, base), word(2, base), word(3, base));
            for j in 0..8 {
                let i = base + j;
                h0 = roll(gear, h0, (w0 >> (8 * j)) as u8);
                if h0 & mask == 0 {
                    return Some(at + i);
                }
                h1 = roll(gear, h1, (w1 >> (8 * j)) as u8);
                if h1 & mask == 0 {
                    return Some(at + first_in_window(gear, window, [h0, 0, 0], 1, i, mask));
                }
                h2 = roll(gear, h2, (w2 >> (8 * j)) as u8);
                if h2 & mask == 0 {
                    return Some(at + first_in_window(gear, window, [h0, h1, 0], 2, i, mask));
                }
                h3 = roll(gear, h3, (w3 >> (8 * j)) as u8);
                if h3 & mask == 0 {
                    return Some(at + first_in_window(gear, window, [h0, h1, h2], 3, i, mask));
                }
            }
        }
        *hash = h3;
        at += LANES * LANE;
    }
    while at < to {
        *hash = roll(gear, *hash, src[at]);
        if *hash & mask == 0 {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Lane `matched` matched at step `i`, and no lane before it matched at or before `i`: the
/// window's first match in input order. The earlier lanes' offsets after `i` come before the
/// match, so each is finished first, from its hash at step `i` (`hashes[k]` for lane `k`).
#[cold]
#[inline(never)]
fn first_in_window(
    gear: &[u64; 256],
    window: &[u8; LANES * LANE],
    hashes: [u64; LANES - 1],
    matched: usize,
    i: usize,
    mask: u64,
) -> usize {
    for (k, &start) in hashes.iter().enumerate().take(matched) {
        let lane = &window[k * LANE..(k + 1) * LANE];
        let mut hash = start;
        for (j, &byte) in lane.iter().enumerate().skip(i + 1) {
            hash = roll(gear, hash, byte);
            if hash & mask == 0 {
                return k * LANE + j;
            }
        }
    }
    matched * LANE + i
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

    /// Bytes whose gear hash matches the strict mask often: few distinct values, so cuts land
    /// in every lane and at window edges.
    fn low_entropy(len: usize, seed: u64, alphabet: u8) -> Vec<u8> {
        pseudo_random(len, seed)
            .iter()
            .map(|b| b % alphabet)
            .collect()
    }

    #[test]
    fn first_cuts_in_every_lane_match_fastcdc() {
        // Low-entropy inputs cut early and often; over these seeds the first cut lands in every
        // lane of a window (checked below), and inputs truncated around lane edges end the
        // search inside a window, at its edge, or in the one-lane tail.
        let c = Chunker::default();
        let min = ChunkerParams::DEFAULT.min as usize;
        let mut lanes_hit = [false; LANES];
        for seed in 0..200u64 {
            let data = low_entropy(300_000, seed, 3 + (seed % 40) as u8);
            for edge in [
                LANE - 1,
                LANE,
                LANE + 1,
                2 * LANE,
                3 * LANE + 5,
                4 * LANE - 1,
            ] {
                let len = (min + edge).min(data.len());
                assert_eq!(c.cut(&data[..len]), fastcdc_cut(&c, &data[..len]));
            }
            let cut = c.cut(&data);
            assert_eq!(cut, fastcdc_cut(&c, &data), "seed {seed}");
            if cut >= min && cut < c.params.max as usize {
                lanes_hit[(cut - min) / LANE % LANES] = true;
            }
        }
        assert_eq!(lanes_hit, [true; LANES], "the seeds exercise every lane");
    }

    #[test]
    fn the_pair_loop_and_the_lanes_agree_on_random_data() {
        let c = Chunker::default();
        let data = pseudo_random(8 << 20, 99);
        let mut at = 0;
        while at < data.len() {
            let n = c.cut(&data[at..]);
            assert_eq!(n, c.cut_pairs(&data[at..]), "at {at}");
            at += n;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The lanes find the same first cut as fastcdc for any length (odd ones too), for random
        /// data and for low-entropy data whose cuts land anywhere in the window.
        #[test]
        fn cut_matches_fastcdc(len in 0usize..600_000, seed in any::<u64>(), alphabet in 1u8..=255) {
            let c = Chunker::default();
            let data = low_entropy(len, seed, alphabet);
            prop_assert_eq!(c.cut(&data), fastcdc_cut(&c, &data));
            prop_assert_eq!(c.cut_pairs(&data), fastcdc_cut(&c, &data));
        }

        /// The same for other valid sizes, whose masks and windows differ.
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
