//! A prefetch hint: ask the CPU to start loading the cache line that holds a value the
//! caller will read soon, without waiting for it.
//!
//! Why a crate of its own: the order path's largest single cost is one random line of
//! the client-id table per new order, which no cache level holds (BENCHMARKS.md, order
//! path, cache misses). An ordinary early load does not hide it (a load that misses
//! blocks retirement, so the reorder buffer fills within ~100 cycles); a prefetch
//! instruction retires at once and lets the engine start the next command's miss while
//! it runs the current one. Stable Rust has no safe prefetch (`core::hint::prefetch_read`
//! is unstable; `_mm_prefetch` is an `unsafe fn`), and every shipped crate forbids
//! unsafe code, so the one call lives here, behind a signature that cannot be misused:
//! it takes a reference, so the address is always inside a live value.
//!
//! Safety argument (the workspace's only unsafe block outside the dev-only testkit;
//! `api/tests/it/tidy.rs` checks that it stays the only one): `prefetcht0` is a hint.
//! It does not read the value into any register, cannot fault (even on an unmapped
//! address), and changes no architectural state; the pointer comes from a reference,
//! so it is valid, aligned and live anyway. On targets other than x86-64 the hint
//! compiles to nothing.
#![no_std]

/// Starts loading the cache line holding `value` into every cache level (T0), for a
/// read soon after. Costs one instruction; never waits.
#[inline(always)]
pub fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = core::ptr::from_ref(value).cast::<i8>();
        // SAFETY: see the module docs: a prefetch reads nothing and cannot fault; `p`
        // comes from a live reference.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::prefetch_read;

    #[test]
    fn a_hint_changes_nothing_it_points_at() {
        let values = [1u64, 2, 3, 4];
        for v in &values {
            prefetch_read(v);
        }
        prefetch_read(&values);
        assert_eq!(values, [1, 2, 3, 4]);
    }
}
