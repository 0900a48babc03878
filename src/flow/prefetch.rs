//! The one CPU hint the hot path needs: start loading a cache line that will be touched soon.
//!
//! The flow table prefetches a frame's index slot and entry several frames before it matches the
//! frame, so that the lookup finds them in cache. It is a module of its own so that its `unsafe`
//! block sits alone with its SAFETY comment.

/// Asks the CPU to start loading the cache line at `p`. Any pointer value is allowed: nothing is
/// read through it.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint: it never faults, whatever the address, and changes no
    // memory or register the program can see, so any pointer value is sound. SSE, which it
    // needs, is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
