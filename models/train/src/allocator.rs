//! glibc's malloc, tuned for training: keep freed memory for the next step.
//!
//! A co-training step allocates and frees hundreds of megabyte-sized buffers (activations,
//! unrolled convolution inputs, gradients). With glibc's defaults a buffer over its adaptive
//! `mmap` threshold comes from a fresh `mmap` and goes back on `free`, and the per-thread heaps
//! are trimmed whenever their free top passes twice that threshold, so the next step faults the
//! same memory in again and the kernel zeroes every page: about 198,000 page faults in 30 steps
//! of `scrim bench`'s co-training step, and a tenth of their CPU time (docs/PERFORMANCE.md §2d).
//! [`tune_for_training`] fixes the `mmap` threshold at 32 MiB (the ceiling of glibc's adaptive
//! one: the largest buffers of a step stay on the heaps), trims heaps only past
//! 512 MiB of free memory and grows them 64 MiB at a time: 8× fewer page faults. The cost is a
//! resident size that follows the peak of the run rather than its current need.
//!
//! jemalloc (`tikv-jemallocator`) as the global allocator was tried instead and made 30 steps
//! slower, not faster (14 s against 9–10 s with glibc's defaults, on a loaded machine).

/// `mmap` only for buffers over 32 MiB (datasets, not a step's tensors).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Return a heap's free top to the kernel only past 512 MiB.
pub const TRIM_THRESHOLD: usize = 512 << 20;
/// Grow a heap 64 MiB at a time (and keep that much when trimming).
pub const TOP_PAD: usize = 64 << 20;

/// Tunes glibc's malloc for training (see the module docs). Call it once at the start of a
/// process that trains; later calls change nothing. Returns whether every setting took effect:
/// `false` on other C libraries (musl, macOS, Windows), where it does nothing.
pub fn tune_for_training() -> bool {
    imp::tune()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::{MMAP_THRESHOLD, TOP_PAD, TRIM_THRESHOLD};

    pub(super) fn tune() -> bool {
        let set = |param: libc::c_int, value: usize| {
            let Ok(value) = libc::c_int::try_from(value) else {
                return false;
            };
            // SAFETY: `mallopt` only updates malloc's parameters under malloc's own lock; it
            // takes no pointers and is safe to call from any thread at any time.
            #[allow(unsafe_code)]
            let applied = unsafe { libc::mallopt(param, value) };
            applied == 1
        };
        // Each setting also turns glibc's adaptive threshold off, so the values stay put.
        set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            & set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            & set(libc::M_TOP_PAD, TOP_PAD)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn tune() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn every_setting_takes_effect_on_glibc() {
        assert!(tune_for_training());
        // A second call is harmless and still succeeds.
        assert!(tune_for_training());
    }
}
