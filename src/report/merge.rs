//! Per-pair statistics: what a worker records, and how the reporter merges workers.
//!
//! A worker keeps one [`PairHist`] per reporting key — the pair (data sender's address,
//! acknowledger's address) — never one per flow, so memory follows the number of host pairs, not
//! connections. Besides the RTT HdrHistogram it keeps the exact count, sum, min and max, so the
//! average and extremes are exact and only percentiles carry HdrHistogram's 0.1 % quantisation.
//! Jitter (go-metro's: the mean absolute difference between consecutive samples of one flow) has
//! its own histogram so that it merges the same way.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use hdrhistogram::Histogram;

use crate::decode::{Addr, Skip};
use crate::flow::TableStats;
use crate::rtt::RttStats;

/// Smallest RTT the histograms tell apart, in ns. Below 1 µs only loopback lives.
const HIST_LOW_NS: u64 = 1_000;
/// Largest RTT recorded, in ns; larger values are clamped to it (100 s).
const HIST_HIGH_NS: u64 = 100_000_000_000;
/// What a new histogram covers before it first grows: LAN and metro-area RTTs. Histograms grow
/// (by whole powers of two) only when a pair first sees a larger RTT, so a pair with 20 ms RTTs
/// costs about 24 KB instead of the 68 KB that the full 1 µs–100 s range would.
const HIST_INITIAL_HIGH_NS: u64 = 2_000_000;
/// Significant digits: 3 keeps percentiles within 0.1 %.
const RTT_SIGFIG: u8 = 3;
/// Jitter is reported as a mean, from the exact sum; its histogram only needs the shape, and a
/// small one keeps the per-sample cache footprint down.
const JITTER_SIGFIG: u8 = 1;

/// A fast hasher for [`PairKey`]s (std's SipHash costs more than the rest of a sample). Keys
/// come from packets, so a flood of crafted addresses could collide; the pair map is small and
/// rebuilt every interval, which bounds the damage to one interval's CPU.
#[derive(Default)]
pub struct PairHasher(u64);

impl Hasher for PairHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(w))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 31)
    }
}

type PairMap<V> = HashMap<PairKey, V, BuildHasherDefault<PairHasher>>;

/// The reporting key: who sent the data, and who acknowledged it (whose RTT it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    /// The data sender.
    pub src: Addr,
    /// The acknowledging end.
    pub dst: Addr,
}

impl PairKey {
    /// Equality as two wide compares (the derived `==` compares the arrays byte-wise).
    #[inline]
    fn same(&self, o: &PairKey) -> bool {
        u128::from_ne_bytes(self.src.0) == u128::from_ne_bytes(o.src.0)
            && u128::from_ne_bytes(self.dst.0) == u128::from_ne_bytes(o.dst.0)
    }
}

/// Samples of one pair: a histogram plus exact moments.
#[derive(Clone)]
pub struct PairHist {
    rtt: Histogram<u32>,
    jitter: Histogram<u32>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
    jitter_count: u64,
    jitter_sum_ns: u128,
    /// The kernel's smoothed RTT (RFC 6298 §2: srtt ← 7/8 srtt + 1/8 r), over this pair's samples.
    srtt_ns: f64,
}

impl Default for PairHist {
    fn default() -> Self {
        PairHist::new()
    }
}

impl PairHist {
    /// An empty set of samples.
    pub fn new() -> PairHist {
        let make = |sig| {
            let mut h = Histogram::new_with_bounds(HIST_LOW_NS, HIST_INITIAL_HIGH_NS, sig)
                .expect("constant histogram bounds are valid");
            h.auto(true);
            h
        };
        PairHist {
            rtt: make(RTT_SIGFIG),
            jitter: make(JITTER_SIGFIG),
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            jitter_count: 0,
            jitter_sum_ns: 0,
            srtt_ns: 0.0,
        }
    }

    /// Records one sample, and the jitter it makes with the previous sample of its flow.
    #[inline]
    pub fn record(&mut self, rtt_ns: u64, jitter_ns: Option<u64>) {
        record(&mut self.rtt, rtt_ns);
        self.srtt_ns = if self.count == 0 {
            rtt_ns as f64
        } else {
            self.srtt_ns + (rtt_ns as f64 - self.srtt_ns) / 8.0
        };
        self.count += 1;
        self.sum_ns += u128::from(rtt_ns);
        self.min_ns = self.min_ns.min(rtt_ns);
        self.max_ns = self.max_ns.max(rtt_ns);
        if let Some(j) = jitter_ns {
            record(&mut self.jitter, j);
            self.jitter_count += 1;
            self.jitter_sum_ns += u128::from(j);
        }
    }

    /// Adds another worker's samples of the same pair.
    pub fn merge(&mut self, other: &PairHist) {
        if other.count == 0 {
            return;
        }
        // Both use the same bounds, so adding cannot fail.
        let _ = self.rtt.add(&other.rtt);
        let _ = self.jitter.add(&other.jitter);
        // Smoothed averages of disjoint flows combine by weight.
        let total = (self.count + other.count) as f64;
        self.srtt_ns =
            (self.srtt_ns * self.count as f64 + other.srtt_ns * other.count as f64) / total;
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.jitter_count += other.jitter_count;
        self.jitter_sum_ns += other.jitter_sum_ns;
    }

    /// Forgets every sample, keeping the memory.
    pub fn reset(&mut self) {
        self.rtt.reset();
        self.jitter.reset();
        self.count = 0;
        self.sum_ns = 0;
        self.min_ns = u64::MAX;
        self.max_ns = 0;
        self.jitter_count = 0;
        self.jitter_sum_ns = 0;
        self.srtt_ns = 0.0;
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The RTT at quantile `q` (0..=1), in ns, kept within the exact min and max.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let v = self.rtt.median_equivalent(self.rtt.value_at_quantile(q));
        v.clamp(self.min_ns, self.max_ns)
    }

    /// A summary for printing and sending.
    pub fn summary(&self, key: PairKey) -> PairSummary {
        let mean = |sum: u128, n: u64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        PairSummary {
            src: key.src,
            dst: key.dst,
            samples: self.count,
            min_ns: if self.count == 0 { 0 } else { self.min_ns },
            p50_ns: self.quantile_ns(0.5),
            avg_ns: mean(self.sum_ns, self.count),
            p95_ns: self.quantile_ns(0.95),
            p99_ns: self.quantile_ns(0.99),
            max_ns: self.max_ns,
            jitter_ns: mean(self.jitter_sum_ns, self.jitter_count),
            srtt_ns: self.srtt_ns,
        }
    }
}

/// Records `v`, clamped to the histogram's range; the histogram grows to fit it.
/// (`saturating_record` would clamp to the current size instead of growing.)
#[inline]
fn record(h: &mut Histogram<u32>, v: u64) {
    let v = v.clamp(HIST_LOW_NS, HIST_HIGH_NS);
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// The statistics of one pair over one report interval (or a whole file).
#[derive(Debug, Clone, PartialEq)]
pub struct PairSummary {
    /// The data sender.
    pub src: Addr,
    /// The acknowledging end, whose RTT this is.
    pub dst: Addr,
    /// Number of samples.
    pub samples: u64,
    /// Smallest sample, exact.
    pub min_ns: u64,
    /// Median (HdrHistogram, ±0.1 %).
    pub p50_ns: u64,
    /// Mean, exact.
    pub avg_ns: f64,
    /// 95th percentile (±0.1 %).
    pub p95_ns: u64,
    /// 99th percentile (±0.1 %).
    pub p99_ns: u64,
    /// Largest sample, exact.
    pub max_ns: u64,
    /// Mean absolute difference between consecutive samples of the same flow, exact.
    pub jitter_ns: f64,
    /// Smoothed RTT (the kernel's 1/8 EWMA), for go-metro's `-st`.
    pub srtt_ns: f64,
}

/// Packet and flow counters of one worker (or, merged, of all).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Frames seen.
    pub packets: u64,
    /// Frames that decoded to a TCP segment.
    pub tcp: u64,
    /// Frames skipped, by [`Skip`] reason (indexed by [`Skip::index`]).
    pub skipped: [u64; Skip::ALL.len()],
    /// RTT samples taken (reported or not).
    pub samples: u64,
    /// Samples not reported because the acknowledging end is local or not whitelisted.
    pub filtered: u64,
    /// Flow table counters.
    pub table: TableStats,
    /// Flows live at the end of the interval.
    pub active_flows: u64,
    /// Estimator counters.
    pub rtt: RttStats,
}

impl Counters {
    /// Adds another worker's counters.
    pub fn add(&mut self, o: &Counters) {
        self.packets += o.packets;
        self.tcp += o.tcp;
        for (a, b) in self.skipped.iter_mut().zip(o.skipped) {
            *a += b;
        }
        self.samples += o.samples;
        self.filtered += o.filtered;
        self.table.created += o.table.created;
        self.table.evicted += o.table.evicted;
        self.table.expired += o.table.expired;
        self.active_flows += o.active_flows;
        self.rtt.karn += o.rtt.karn;
        self.rtt.untracked += o.rtt.untracked;
        self.rtt.pool_exhausted += o.rtt.pool_exhausted;
        self.rtt.ring_full += o.rtt.ring_full;
    }

    /// Frames skipped for one reason.
    pub fn skipped(&self, why: Skip) -> u64 {
        self.skipped[why.index()]
    }
}

/// What a worker hands the reporter for one interval: its pairs and its counters.
///
/// Interval objects are recycled between worker and reporter, so their maps and histograms keep
/// their memory from one interval to the next.
#[derive(Default)]
pub struct IntervalStats {
    index: PairMap<u32>,
    keys: Vec<PairKey>,
    hists: Vec<PairHist>,
    spare: Vec<PairHist>,
    /// The worker's counters for the interval.
    pub counters: Counters,
}

impl IntervalStats {
    /// Records a sample for `key`. `hint` is a slot number this key had before (0 for none); the
    /// slot actually used is returned (0 when it does not fit in 16 bits), so the caller can
    /// skip the hash lookup next time. A stale hint is harmless: the slot's key is checked.
    #[inline]
    pub fn record(&mut self, key: PairKey, hint: u16, rtt_ns: u64, jitter_ns: Option<u64>) -> u16 {
        let h = hint as usize;
        let i = if h != 0 && h <= self.keys.len() && self.keys[h - 1].same(&key) {
            h - 1
        } else {
            match self.index.get(&key) {
                Some(&i) => i as usize,
                None => {
                    let i = self.keys.len();
                    self.index.insert(key, i as u32);
                    self.keys.push(key);
                    self.hists.push(self.spare.pop().unwrap_or_default());
                    i
                }
            }
        };
        self.hists[i].record(rtt_ns, jitter_ns);
        u16::try_from(i + 1).unwrap_or(0)
    }

    /// Every pair with samples, with its histogram.
    pub fn pairs(&self) -> impl Iterator<Item = (&PairKey, &PairHist)> {
        self.keys.iter().zip(&self.hists)
    }

    /// Empties the interval, keeping its allocations for the next one.
    pub fn clear(&mut self) {
        self.index.clear();
        self.keys.clear();
        for mut h in self.hists.drain(..) {
            h.reset();
            self.spare.push(h);
        }
        self.counters = Counters::default();
    }
}

/// Several workers' intervals, merged.
#[derive(Default)]
pub struct Merged {
    pairs: HashMap<PairKey, PairHist>,
    /// Counters summed over the workers.
    pub counters: Counters,
}

impl Merged {
    /// Adds one worker's interval.
    pub fn add(&mut self, s: &IntervalStats) {
        for (k, h) in s.pairs() {
            self.pairs.entry(*k).or_default().merge(h);
        }
        self.counters.add(&s.counters);
    }

    /// Adds one worker's interval, taking its histograms instead of copying them where the pair
    /// is new (the offline path, which has no use for the interval afterwards).
    pub fn absorb(&mut self, mut s: IntervalStats) {
        self.counters.add(&s.counters);
        for (k, h) in s.keys.drain(..).zip(s.hists.drain(..)) {
            match self.pairs.entry(k) {
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(&h),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(h);
                }
            }
        }
    }

    /// One summary per pair, ordered by sender then acknowledger.
    pub fn summaries(&self) -> Vec<PairSummary> {
        let mut v: Vec<_> = self.pairs.iter().map(|(k, h)| h.summary(*k)).collect();
        v.sort_by_key(|p| (p.src, p.dst));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: u8, b: u8) -> PairKey {
        PairKey {
            src: Addr::v4([10, 0, 0, a]),
            dst: Addr::v4([10, 0, 0, b]),
        }
    }

    #[test]
    fn exact_moments_and_close_percentiles() {
        let mut h = PairHist::new();
        for (i, v) in [10_000_000u64, 20_000_000, 30_000_000, 40_000_000]
            .iter()
            .enumerate()
        {
            h.record(*v, (i > 0).then_some(10_000_000));
        }
        let s = h.summary(key(1, 2));
        assert_eq!(s.samples, 4);
        assert_eq!((s.min_ns, s.max_ns), (10_000_000, 40_000_000));
        assert_eq!(s.avg_ns, 25_000_000.0);
        assert_eq!(s.jitter_ns, 10_000_000.0);
        assert!(
            (s.p50_ns as f64 - 20_000_000.0).abs() <= 20_000.0,
            "{}",
            s.p50_ns
        );
    }

    #[test]
    fn merging_two_workers_equals_recording_in_one() {
        let mut a = IntervalStats::default();
        let mut b = IntervalStats::default();
        let mut one = IntervalStats::default();
        for i in 0..100u64 {
            let v = 1_000_000 + i * 37_000;
            if i % 2 == 0 {
                a.record(key(1, 2), 0, v, None);
            } else {
                b.record(key(1, 2), 0, v, None);
            }
            one.record(key(1, 2), 0, v, None);
        }
        let mut m = Merged::default();
        m.add(&a);
        m.add(&b);
        let mut m1 = Merged::default();
        m1.add(&one);
        let (x, y) = (m.summaries(), m1.summaries());
        assert_eq!(
            (x[0].samples, x[0].min_ns, x[0].max_ns, x[0].p50_ns),
            (y[0].samples, y[0].min_ns, y[0].max_ns, y[0].p50_ns)
        );
        assert_eq!(x[0].avg_ns, y[0].avg_ns);
    }

    #[test]
    fn cleared_interval_reuses_histograms_and_starts_empty() {
        let mut s = IntervalStats::default();
        s.record(key(1, 2), 0, 5_000_000, None);
        s.clear();
        assert_eq!(s.pairs().count(), 0);
        assert_eq!(
            s.record(key(3, 4), 1, 7_000_000, None),
            1,
            "a stale hint is checked"
        );
        let (_, h) = s.pairs().next().unwrap();
        assert_eq!(h.count(), 1);
        assert_eq!(h.summary(key(3, 4)).min_ns, 7_000_000);
    }
}
