//! The hot path allocates nothing per packet in the steady state.
//!
//! A counting global allocator counts only while `Worker::handle` runs. After two warm-up cycles
//! of the in-memory mix (flows created, histograms and rings allocated), whole further cycles of
//! established traffic must allocate nothing.

use metro::capture::LinkType;
use metro::worker::{Worker, WorkerConfig};

#[path = "support/traffic.rs"]
mod traffic;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

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
            counting_alloc::start();
            w.handle(LinkType::Ethernet, f);
            counting_alloc::stop();
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
        counting_alloc::count(),
        0,
        "allocations in {packets} steady-state packets"
    );
}
