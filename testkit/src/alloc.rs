//! A counting global allocator for the no-allocation tests, counting per thread.
//!
//! A test binary installs it (`#[global_allocator] static GLOBAL: CountingAllocator =
//! CountingAllocator;`); a test arms it on its own thread, runs the hot path there,
//! disarms it and reads its own thread's count. Other tests of the same binary
//! allocate in parallel on their own threads without touching that count, so several
//! no-allocation tests can run at once in one binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting allocations (`alloc`, `alloc_zeroed`, `realloc`) made
/// on threads that armed it. Deallocation is free and not counted.
pub struct CountingAllocator;

thread_local! {
    // Const-initialized without destructors: reading them never allocates and works
    // until the thread is gone.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn note() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

/// Bytes this thread allocated (positive) or freed (negative) while armed.
fn live(delta: i64) {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = LIVE.try_with(|c| c.set(c.get() + delta));
    }
}

fn size(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// SAFETY: every call goes to the system allocator unchanged; counting only touches two
// thread-locals that never allocate (const-initialized, no destructor).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        live(size(layout.size()));
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        live(size(layout.size()));
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        live(size(new_size) - size(layout.size()));
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(-size(layout.size()));
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Starts counting this thread's allocations (the count keeps its value; see [`reset`]).
pub fn arm() {
    ARMED.set(true);
}

/// Stops counting this thread's allocations.
pub fn disarm() {
    ARMED.set(false);
}

/// Sets this thread's count to zero.
pub fn reset() {
    COUNT.set(0);
}

/// Allocations counted on this thread while it was armed.
pub fn count() -> u64 {
    COUNT.get()
}

/// Runs `f` armed on this thread and returns its result with the allocations it made
/// on this thread.
pub fn count_allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    reset();
    arm();
    let r = f();
    disarm();
    (r, count())
}

/// Runs `f` armed on this thread and returns its result with the heap bytes it left
/// allocated: what it allocated on this thread minus what it freed there (a structure
/// built by `f` and returned, or grown in place, is what it holds).
pub fn live_bytes<R>(f: impl FnOnce() -> R) -> (R, i64) {
    LIVE.set(0);
    arm();
    let r = f();
    disarm();
    (r, LIVE.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: CountingAllocator = CountingAllocator;

    #[test]
    fn counts_this_threads_allocations_only_while_armed() {
        let (v, n) = count_allocations(|| std::hint::black_box(vec![1u8; 32]));
        assert!(n >= 1, "an allocation while armed is counted");
        drop(v);
        let before = count();
        let unarmed = std::hint::black_box(vec![2u8; 32]);
        assert_eq!(count(), before, "nothing counted while disarmed");
        drop(unarmed);
        let (_, n) = count_allocations(|| std::hint::black_box(vec![0u8; 8]).len());
        assert!(n >= 1);
    }

    #[test]
    fn other_threads_allocations_are_not_counted() {
        // Another thread allocates (armed, on its own) the whole time this one counts.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                arm();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += std::hint::black_box(vec![0u8; 64]).len() as u64;
                }
                disarm();
                (n, count())
            })
        };
        let (sum, n) = count_allocations(|| {
            let mut sum = 0u64;
            for i in 0..100_000u64 {
                sum = sum.wrapping_add(std::hint::black_box(i));
            }
            sum
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (bytes, theirs) = busy.join().unwrap();
        assert!(sum > 0);
        assert_eq!(n, 0, "no allocation on this thread");
        assert!(bytes == 0 || theirs > 0, "the other thread counted its own");
    }

    #[test]
    fn live_bytes_are_what_stays_allocated() {
        let (v, n) = live_bytes(|| {
            let gone = std::hint::black_box(vec![0u8; 1000]);
            drop(gone);
            let mut kept: Vec<u8> = Vec::with_capacity(100);
            kept.reserve_exact(400);
            std::hint::black_box(kept)
        });
        assert_eq!(
            n,
            v.capacity() as i64,
            "freed bytes are subtracted, a grown buffer counted once"
        );
        let (_, freed) = live_bytes(|| drop(v));
        assert!(freed < 0, "freeing what was allocated before counts negative");
    }
}
