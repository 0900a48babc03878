//! Finished intervals as a gateway's workers hand them over, for the reporter's tests and the
//! merge benchmark: the same pairs and the same samples in both.

use metro::decode::Addr;
use metro::record::{IntervalStats, PairKey};

/// Pairs in each worker's interval with a few samples (1 to 8).
pub const FEW: u32 = 100_000;
/// Pairs in each worker's interval with 5,000 samples, whose counts go flat.
pub const BUSY: u32 = 50;
/// Workers whose intervals [`gateway`] builds.
pub const WORKERS: u32 = 2;

/// Two workers' settled intervals, as at a gateway: [`FEW`] pairs each with 1 to 8 samples, and
/// [`BUSY`] pairs each with 5,000; RTTs of 1 to 51 ms, drawn from `seed`. Returns them and their
/// samples.
pub fn gateway(seed: u64) -> (Vec<IntervalStats>, u64) {
    let mut seed = seed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut samples = 0;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut s = IntervalStats::default();
        for n in 0..FEW {
            let [_, a, b, c] = (n + w * FEW).to_be_bytes();
            let k = PairKey::hosts(
                Addr::v4([10, a, b, c]),
                Addr::v4([172, 16, (n % 20) as u8, (n % 250) as u8]),
            );
            for _ in 0..1 + next() % 8 {
                s.record(k, 1_000_000 + next() % 50_000_000, Some(next() % 1_000_000));
                samples += 1;
            }
        }
        for b in 0..BUSY {
            let k = PairKey::hosts(
                Addr::v4([192, 168, w as u8, b as u8]),
                Addr::v4([172, 16, 0, 1]),
            );
            for _ in 0..5_000 {
                s.record(k, 1_000_000 + next() % 50_000_000, None);
                samples += 1;
            }
        }
        s.settle();
        workers.push(s);
    }
    (workers, samples)
}
