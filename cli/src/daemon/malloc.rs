//! The allocator settings of a long-running daemon.
//!
//! glibc's malloc raises its mmap threshold each time a large block obtained with `mmap` is
//! freed (up to 32 MiB on 64-bit), so after the first chunk batches, the 128 KiB-1 MiB buffers
//! of a sync come from the per-thread heap arenas instead. Across tokio's worker threads those
//! arenas keep what they once held: under the soak of five daemons (docs/BENCHMARKS.md, *Soak*)
//! the resident set grew by about 1 KiB per edit while the live heap stayed flat (a heap
//! profile). A fixed threshold keeps such buffers in their own mappings, which go back to the
//! system when freed; smaller allocations are unaffected.

/// Blocks this large or larger get their own mapping (glibc's initial default, made fixed).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

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

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
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
}
