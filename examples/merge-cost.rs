//! The live reporter's merge at gateway scale: two workers' intervals of 100,000 pairs each
//! (200,000 in all, a few samples a pair, as on the gateway capture, plus 100 busy pairs with
//! flat counts), merged as the reporter merges them every interval, then summarised one pair at a
//! time as an output reads them. Prints the medians of several rounds, in milliseconds.
//!
//! `cargo run --release --example merge-cost [ROUNDS]`

use std::time::Instant;

use metro::config::DEFAULT_MAX_PAIRS;
use metro::decode::Addr;
use metro::record::{IntervalStats, PairKey};
use metro::report::merge::Plan;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    let mut seed = 1u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut workers = Vec::new();
    for w in 0..2u32 {
        let mut s = IntervalStats::default();
        for n in 0..100_000u32 {
            let [_, a, b, c] = (n + w * 100_000).to_be_bytes();
            let k = PairKey::hosts(
                Addr::v4([10, a, b, c]),
                Addr::v4([172, 16, (n % 20) as u8, (n % 250) as u8]),
            );
            for _ in 0..1 + next() % 8 {
                s.record(k, 1_000_000 + next() % 50_000_000, Some(next() % 1_000_000));
            }
        }
        for b in 0..50u32 {
            let k = PairKey::hosts(
                Addr::v4([192, 168, w as u8, b as u8]),
                Addr::v4([172, 16, 0, 1]),
            );
            for _ in 0..5_000 {
                s.record(k, 1_000_000 + next() % 50_000_000, None);
            }
        }
        s.settle();
        workers.push(s);
    }
    let mut merges = Vec::new();
    let mut passes = Vec::new();
    let mut pairs = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let plan = Plan::new(&workers, DEFAULT_MAX_PAIRS);
        merges.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        pairs = 0;
        let summarised: Result<(), std::convert::Infallible> = plan.for_each(|p| {
            pairs += usize::from(p.samples > 0);
            Ok(())
        });
        let Ok(()) = summarised;
        passes.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (m, m0, m1) = median(&mut merges);
    let (p, p0, p1) = median(&mut passes);
    println!(
        "{pairs} pairs from {} workers over {rounds} rounds: merge median {m:.1} ms ({m0:.1}-{m1:.1}), \
         summarising pass median {p:.1} ms ({p0:.1}-{p1:.1})",
        workers.len()
    );
}
