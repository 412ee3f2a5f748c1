//! The allocator settings of a long-running daemon.
//!
//! glibc's malloc raises its mmap threshold each time a large block obtained with `mmap` is
//! freed (up to 32 MiB on 64-bit), so after the first chunk batches, the 128 KiB-1 MiB buffers
//! of a sync come from the per-thread heap arenas instead. Across tokio's worker threads those
//! arenas keep what they once held: under the soak of five daemons (docs/BENCHMARKS.md, *Soak*)
//! the resident set grew by about 1 KiB per edit while the live heap stayed flat (a heap
//! profile). A fixed threshold keeps such buffers in their own mappings, which go back to the
//! system when freed; smaller allocations are unaffected.
//!
//! Small blocks still come from the arenas, and what a large sync freed stays mapped there: after
//! a push of 20,000 small files the receiving daemon sat at 92 MiB with 19 MiB of it free memory
//! (measured with `malloc_trim` called from a debugger). [`give_back_periodically`] hands the
//! free pages back to the system every few seconds, so the daemon at rest holds what it uses.

use std::time::Duration;

/// Blocks this large or larger get their own mapping (glibc's initial default, made fixed).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// How often the daemon gives freed memory back to the system.
pub const GIVE_BACK_EVERY: Duration = Duration::from_secs(10);

/// Fix the mmap threshold at [`MMAP_THRESHOLD`]; returns false if the allocator refused (on a
/// C library other than glibc this does nothing and returns true).
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes a malloc tunable under the allocator's own lock; it
        // takes no pointers and is safe to call while other threads allocate.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) };
        ok == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}

/// Give the free pages of every malloc arena back to the system (glibc's `malloc_trim`). Takes
/// a few milliseconds on a heap of tens of MiB; does nothing on another C library.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the
        // system, under the allocator's locks; it takes no pointers.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// [`give_back`] every [`GIVE_BACK_EVERY`], on a blocking thread, for as long as the daemon runs.
pub async fn give_back_periodically() {
    let mut tick = tokio::time::interval(GIVE_BACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(give_back).await;
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Bytes in blocks that have their own mapping, as glibc counts them.
    fn mapped_bytes() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        #[allow(unsafe_code)]
        let info = unsafe { libc::mallinfo2() };
        info.hblkhd
    }

    #[test]
    fn a_large_buffer_freed_and_taken_again_keeps_its_own_mapping() {
        assert!(tune());
        const SIZE: usize = 1024 * 1024;
        // Without the fixed threshold, freeing the first mapped block raises glibc's threshold
        // above SIZE and every later buffer of that size comes from a heap arena. Other tests
        // of this process allocate at the same time, so a few tries are allowed.
        let kept_own_mapping = (0..5).any(|_| {
            drop(std::hint::black_box(vec![1u8; SIZE]));
            let before = mapped_bytes();
            let again = std::hint::black_box(vec![2u8; SIZE]);
            let grew = mapped_bytes().saturating_sub(before);
            drop(again);
            grew >= SIZE
        });
        assert!(kept_own_mapping, "a 1 MiB buffer came from a heap arena");
    }

    /// Resident anonymous memory of this process, in bytes.
    fn rss_anon() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    #[test]
    fn memory_a_burst_freed_goes_back_to_the_system() {
        // A sync's many small blocks, freed but for one in 64 that keeps each stretch of the
        // arena in use, as a daemon's long-lived state does.
        const BLOCKS: usize = 400_000;
        let mut blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![(i % 251) as u8; 480]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        let before = rss_anon();
        give_back();
        let after = rss_anon();
        drop(kept);
        // About 190 MiB were freed; other tests of this process allocate meanwhile.
        assert!(
            before.saturating_sub(after) > 64 << 20,
            "gave back only {} KiB ({} -> {} KiB)",
            before.saturating_sub(after) >> 10,
            before >> 10,
            after >> 10
        );
    }
}
