//! The per-packet hot path: decode → flow lookup → RTT update → histogram record.
//!
//! Runs over an in-memory mix of 2,000 concurrent flows (a quarter bulk with delayed ACKs, the
//! rest request/response), replayed as an endless steady state (see `tests/support/traffic.rs`).
//! Two shapes: `few_pairs` (100 client hosts × 4 servers, as on a server or a benchmark host)
//! and `many_pairs` (every flow from its own client host, as on a busy gateway), where each
//! sample lands in a different pair's histogram and costs cache misses. A third mix,
//! `pairs_100k`, is the gateway at scale: 50,000 request/response flows, each from its own
//! client host, so that 100,000 host pairs get samples; its flow table is larger too, as a
//! gateway's is. (It has no bulk flows: 12,500 bulk halves in flight at once would need more
//! segment rings than a worker lends, and their ACKs would give no samples.) A fourth,
//! `few_pairs_ipv6`, is the first over IPv6, whose flows' keys name their addresses by host id.
//! The benchmark pins itself to the last core, as live workers are pinned.
//! Criterion reports time per cycle and packets per second; divide for ns per packet. Before the
//! timed runs it counts the allocations that `Worker::handle` makes over whole steady-state
//! cycles, which must be zero.
//!
//! Run: `cargo bench --bench hot_path`. With `HOT_PATH_CYCLES=N` in the environment the binary
//! skips criterion and only replays N cycles of the first mix through one worker, printing the
//! time per packet (run two builds alternately to compare them on a noisy machine); this is also
//! what `scripts/hot-path-instructions` counts instructions of under callgrind. `HOT_PATH_FLOWS=N`
//! replays a mix of N flows instead of 2,000: with 100, everything the worker touches stays in
//! the core's own caches, which tells a slowdown of the core from one of the shared cache.
//! `HOT_PATH_FLOWS=50000 HOT_PATH_CLIENTS=50000 HOT_PATH_BULK_EVERY=0` replays the
//! `pairs_100k` mix (`HOT_PATH_BULK_EVERY` is 4 unless set); the replay prints how many host
//! pairs got samples, and any ACK that gave none. `HOT_PATH_IPV6=1` replays the mix over IPv6.

use criterion::{criterion_group, Criterion, Throughput};

use metro::capture::LinkType;
use metro::decode;
use metro::worker::{Worker, WorkerConfig};

// The test bed is the tests' one module, shared by path: benches cannot name a tests/ module.
#[path = "../tests/support/mod.rs"]
mod support;

use support::{counting_alloc, traffic};

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

const FLOWS: u32 = 2_000;
/// Flows (and client hosts) of the `pairs_100k` mix: each request/response flow gives samples
/// to two host pairs, one per direction.
const PAIRS_100K_FLOWS: u32 = 50_000;

fn hot_path(c: &mut Criterion) {
    // Allocation proof: warm up, then count over 10 steady-state cycles.
    let n = {
        let mut mix = traffic::Mix::new(FLOWS, 2_000, 4);
        let n = mix.len() as u64;
        let mut w = Worker::new(0, &WorkerConfig::default());
        for _ in 0..2 {
            mix.cycle(|f| w.handle(LinkType::Ethernet, f));
        }
        counting_alloc::start();
        for _ in 0..10 {
            mix.cycle(|f| w.handle(LinkType::Ethernet, f));
        }
        counting_alloc::stop();
        let allocs = counting_alloc::count();
        println!(
            "steady state: {allocs} allocations in {} packets ({:.6} per packet)",
            10 * n,
            allocs as f64 / (10 * n) as f64
        );
        n
    };

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(n));
    g.bench_function("decode_only", |b| {
        let mut mix = traffic::Mix::new(FLOWS, 100, 4);
        b.iter(|| {
            let mut acc = 0u32;
            mix.cycle(|f| {
                if let Ok(s) = decode::decode(LinkType::Ethernet, f.data, f.wire_len) {
                    acc = acc.wrapping_add(s.ack());
                }
            });
            acc
        })
    });
    // Each mix gets its own worker, warmed up for two cycles (flows created, rings and histograms
    // allocated) just before its run, and dropped after it. The first mix is the headline one.
    for (name, flows, clients, bulk_every, v6) in [
        ("few_pairs", FLOWS, 100, 4, false),
        ("many_pairs", FLOWS, 2_000, 4, false),
        ("pairs_100k", PAIRS_100K_FLOWS, PAIRS_100K_FLOWS, 0, false),
        ("few_pairs_ipv6", FLOWS, 100, 4, true),
    ] {
        let mut mix = mix(flows, clients, bulk_every, v6);
        g.throughput(Throughput::Elements(mix.len() as u64));
        let mut w = Worker::new(0, &WorkerConfig::default());
        for _ in 0..2 {
            mix.cycle(|f| w.handle(LinkType::Ethernet, f));
        }
        g.bench_function(format!("worker_handle/{name}"), |b| {
            b.iter(|| mix.cycle(|f| w.handle(LinkType::Ethernet, f)))
        });
    }
    g.finish();
}

/// A mix of `flows` flows, `clients` client hosts and 4 servers, every `bulk_every`-th flow bulk,
/// over IPv6 when `v6`.
fn mix(flows: u32, clients: u32, bulk_every: u32, v6: bool) -> traffic::Mix {
    if v6 {
        traffic::Mix::ipv6(flows, clients, 4, bulk_every)
    } else {
        traffic::Mix::with_bulk(flows, clients, 4, bulk_every)
    }
}

/// Replays `cycles` cycles of a mix (see [`mix`]) through one worker, and prints the time per
/// packet after two warm-up cycles (one run; compare runs interleaved).
fn replay_only(cycles: u32, flows: u32, clients: u32, bulk_every: u32, v6: bool) {
    let mut mix = mix(flows, clients, bulk_every, v6);
    let mut w = Worker::new(0, &WorkerConfig::default());
    // Two cycles to warm up, then the rest timed.
    let warm = cycles.min(2);
    for _ in 0..warm {
        mix.cycle(|f| w.handle(LinkType::Ethernet, f));
    }
    let t = std::time::Instant::now();
    for _ in warm..cycles {
        mix.cycle(|f| w.handle(LinkType::Ethernet, f));
    }
    let ns = t.elapsed().as_nanos() as f64 / ((cycles - warm) as f64 * mix.len() as f64);
    let stats = w.take_interval(Default::default());
    let c = &stats.counters;
    println!(
        "{cycles} cycles of {} packets, {} samples in {} host pairs ({} flows evicted, {} ACKs \
         untracked, {} samples filtered), {ns:.1} ns per packet after {warm}",
        mix.len(),
        c.samples,
        stats.pairs().count(),
        c.table.evicted,
        c.rtt.untracked,
        c.filtered
    );
}

criterion_group!(benches, hot_path);

fn main() {
    // Pinned to one core, as live workers are: a thread that migrates mid-run measures the
    // migration too.
    if let Some(last) = core_affinity::get_core_ids().and_then(|c| c.last().copied()) {
        core_affinity::set_for_current(last);
    }
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    if let Some(cycles) = env("HOT_PATH_CYCLES") {
        let flows = env("HOT_PATH_FLOWS").unwrap_or(FLOWS);
        replay_only(
            cycles,
            flows,
            env("HOT_PATH_CLIENTS").unwrap_or(100).min(flows),
            env("HOT_PATH_BULK_EVERY").unwrap_or(4),
            env("HOT_PATH_IPV6").is_some_and(|v| v != 0),
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
