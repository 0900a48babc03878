//! The live reporter's merge at gateway scale: two workers' intervals of 100,000 pairs each
//! (200,000 in all, a few samples a pair, as on the gateway capture, plus 100 busy pairs with
//! flat counts), merged as the reporter merges them every interval, then summarised one pair at a
//! time as an output reads them. Prints the medians of several rounds, in milliseconds.
//!
//! `cargo bench --bench merge_cost` (`MERGE_COST_ROUNDS=N`, default 7)

use std::time::Instant;

use metro::config::DEFAULT_MAX_PAIRS;
use metro::report::merge::Plan;

// The test bed is the tests' one module, shared by path: benches cannot name a tests/ module.
#[path = "../tests/support/mod.rs"]
mod support;

use support::intervals;

fn main() {
    let rounds: usize = std::env::var("MERGE_COST_ROUNDS")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    let (workers, _) = intervals::gateway(1);
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
