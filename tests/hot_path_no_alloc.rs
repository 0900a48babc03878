//! The hot path allocates nothing per packet in the steady state.
//!
//! A counting global allocator counts only while `Worker::handle` runs. After two warm-up cycles
//! of the in-memory mix (flows created, histograms and rings allocated), whole further cycles of
//! established traffic must allocate nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use metro::capture::LinkType;
use metro::worker::{Worker, WorkerConfig};

#[path = "support/traffic.rs"]
mod traffic;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn steady_state_traffic_allocates_nothing_per_packet() {
    let mut mix = traffic::Mix::new(2_000, 2_000, 4);
    let mut w = Worker::new(0, &WorkerConfig::default());
    for _ in 0..2 {
        mix.cycle(|f| w.handle(LinkType::Ethernet, f));
    }
    let mut packets = 0u64;
    for _ in 0..5 {
        mix.cycle(|f| {
            COUNTING.store(true, Ordering::Relaxed);
            w.handle(LinkType::Ethernet, f);
            COUNTING.store(false, Ordering::Relaxed);
            packets += 1;
        });
    }
    let stats = w.take_interval(Default::default());
    assert!(
        stats.counters.samples > packets / 4,
        "the mix must produce samples: {:?}",
        stats.counters
    );
    assert_eq!(stats.counters.rtt.untracked, 0);
    assert_eq!(stats.counters.rtt.karn, 0);
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations in {packets} steady-state packets"
    );
}
