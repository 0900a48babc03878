//! The hot path allocates nothing per packet in the steady state.
//!
//! A counting global allocator counts only while `Worker::handle` runs. Intervals are handed
//! over as live capture hands them to the reporter, which gives each worker back a recycled one:
//! after a few warm-up intervals of the in-memory mix (flows created; rings, recorders, chunks
//! and flat counts at their high-water marks), whole further intervals of established traffic
//! must allocate nothing. Three shapes: few host pairs with many samples each (their counts go
//! flat), hundreds of pairs with about a hundred each (in chunks), and a pair per client host
//! with a few samples each (kept inline and in chunks).

use metro::capture::LinkType;
use metro::record::IntervalStats;
use metro::worker::{Worker, WorkerConfig};

mod support;

use support::{counting_alloc, traffic};

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

/// Runs `clients` client hosts' mix for `warm` then 5 measured intervals of `cycles` cycles
/// each; returns (allocations while handling, packets handled, samples, flat pairs in the last
/// interval).
fn steady_state(clients: u32, cycles: u32, warm: u32) -> (u64, u64, u64, usize) {
    let mut mix = traffic::Mix::new(2_000, clients, 4);
    let mut w = Worker::new(0, &WorkerConfig::default());
    // Two interval objects, swapped as the reporter swaps them.
    let mut spare = IntervalStats::default();
    for _ in 0..warm {
        for _ in 0..cycles {
            mix.cycle(|f| w.handle(LinkType::Ethernet, f));
        }
        spare = w.take_interval(spare);
    }
    let (mut packets, mut samples) = (0u64, 0u64);
    let allocs_before = counting_alloc::count();
    for _ in 0..5 {
        for _ in 0..cycles {
            mix.cycle(|f| {
                counting_alloc::start();
                w.handle(LinkType::Ethernet, f);
                counting_alloc::stop();
                packets += 1;
            });
        }
        spare = w.take_interval(spare);
        assert_eq!(spare.counters.rtt.untracked, 0);
        assert_eq!(spare.counters.rtt.karn, 0);
        samples += spare.counters.samples;
    }
    let dense = spare.pairs().filter(|p| p.is_dense()).count();
    (
        counting_alloc::count() - allocs_before,
        packets,
        samples,
        dense,
    )
}

#[test]
fn steady_state_traffic_allocates_nothing_per_packet() {
    // 4 client hosts: a few dozen pairs with thousands of samples an interval, counts flat.
    let (allocs, packets, samples, dense) = steady_state(4, 20, 3);
    assert!(samples > packets / 4, "the mix must produce samples");
    assert!(dense >= 4, "{dense} pairs with flat counts");
    assert_eq!(allocs, 0, "allocations in {packets} packets, few pairs");

    // 100 client hosts: hundreds of pairs with about a hundred samples each, in chunks.
    let (allocs, packets, samples, _) = steady_state(100, 20, 3);
    assert!(samples > packets / 4, "the mix must produce samples");
    assert_eq!(allocs, 0, "allocations in {packets} packets, some pairs");

    // 2,000 client hosts: 4,000 pairs of a few dozen samples an interval, inline and chunked.
    let (allocs, packets, samples, dense) = steady_state(2_000, 20, 3);
    assert!(samples > packets / 4, "the mix must produce samples");
    assert_eq!(
        dense, 0,
        "pairs with a few dozen samples keep them as indices"
    );
    assert_eq!(allocs, 0, "allocations in {packets} packets, many pairs");
}
