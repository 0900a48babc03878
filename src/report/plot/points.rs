//! The samples a plot draws, kept within fixed bounds.
//!
//! A run can report far more samples than a page can show or memory should hold, so each host
//! pair keeps an evenly thinned series: every `stride`-th sample in the order they arrive. When a
//! series reaches its cap, every other kept point is dropped and the stride doubles, so the kept
//! points stay evenly spread over the whole run, whatever its length. A second cap bounds the
//! points of all pairs together (the largest series is halved first), and a third the number of
//! pairs whose points are kept at all. Thinned series say so, and by how much, on the page.
//!
//! This reads finished [`SampleRecord`]s (those `--samples` prints), never packets: it costs
//! nothing unless a plot is asked for, and then one hash look-up per sample.

use std::collections::HashMap;

use crate::record::PairKey;
use crate::report::PairSummary;
use crate::rtt::Method;
use crate::worker::SampleRecord;

/// How many points a plot keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointLimits {
    /// Most points kept per pair.
    pub per_pair: usize,
    /// Most points kept for all pairs together.
    pub total: usize,
    /// Most pairs whose points are kept (the first ones seen), unless `only` names them.
    pub pairs: usize,
    /// When set, only these pairs' points are kept.
    pub only: Option<Vec<PairKey>>,
}

impl Default for PointLimits {
    fn default() -> Self {
        PointLimits {
            // More dots than a panel has pixels: thinning below this would show.
            per_pair: 100_000,
            // 24 bytes a point: at most 24 MiB, for ten full pairs.
            total: 1_000_000,
            // A busy gateway sees thousands of pairs; a page shows a handful. Pairs beyond this
            // are still counted by the histograms, only their dots are not kept.
            pairs: 1024,
            only: None,
        }
    }
}

/// One kept sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Capture time of the ACK, ns.
    pub ts_ns: u64,
    /// The RTT, ns.
    pub rtt_ns: u64,
    /// The rule that produced it.
    pub method: Method,
}

/// One pair's kept samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// One sample in every `stride` is kept (a power of two).
    stride: u64,
    /// Samples offered so far.
    seen: u64,
    points: Vec<Point>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            stride: 1,
            seen: 0,
            points: Vec::new(),
        }
    }
}

impl Series {
    /// The kept points, in capture order.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// One sample in this many was kept.
    pub fn stride(&self) -> u64 {
        self.stride
    }

    /// Samples offered, kept or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    fn push(&mut self, p: Point, cap: usize) {
        if self.seen.is_multiple_of(self.stride) {
            self.points.push(p);
            if self.points.len() > cap {
                self.halve();
            }
        }
        self.seen += 1;
    }

    /// Keeps every other point and doubles the stride: the points kept are those whose offer
    /// index is a multiple of the new stride.
    fn halve(&mut self) {
        let mut i = 0;
        self.points.retain(|_| {
            i += 1;
            i % 2 == 1
        });
        self.stride *= 2;
    }

    /// Thins to `stride` (a multiple of the current one, both powers of two).
    fn thin_to(&mut self, stride: u64) {
        while self.stride < stride {
            self.halve();
        }
    }
}

/// Thinned samples per pair, within [`PointLimits`].
#[derive(Debug, Clone, Default)]
pub struct PlotPoints {
    limits: PointLimits,
    series: HashMap<PairKey, Series>,
    /// Points kept over all series.
    kept: usize,
    /// Samples of pairs beyond `limits.pairs`, not kept.
    untracked: u64,
}

impl PlotPoints {
    /// An empty set that keeps points within `limits`.
    pub fn new(limits: PointLimits) -> PlotPoints {
        PlotPoints {
            limits,
            ..PlotPoints::default()
        }
    }

    /// Offers one sample.
    pub fn add(&mut self, s: &SampleRecord) {
        let key = PairKey::hosts(s.src, s.dst);
        if let Some(only) = &self.limits.only {
            if !only.contains(&key) {
                return;
            }
        }
        let full = self.series.len() >= self.limits.pairs;
        let series = match self.series.get_mut(&key) {
            Some(s) => s,
            None if full => {
                self.untracked += 1;
                return;
            }
            None => self.series.entry(key).or_default(),
        };
        let before = series.points.len();
        series.push(
            Point {
                ts_ns: s.ts_ns,
                rtt_ns: s.rtt_ns,
                method: s.method,
            },
            self.limits.per_pair,
        );
        self.kept = self.kept + series.points.len() - before;
        self.fit_total();
    }

    /// Offers every sample of `samples`.
    pub fn extend<'a>(&mut self, samples: impl IntoIterator<Item = &'a SampleRecord>) {
        for s in samples {
            self.add(s);
        }
    }

    /// Takes in another set's points (another worker's): each pair's series is thinned to the
    /// coarser stride of the two, so that the merged series stays even, and put in capture
    /// order (each worker's samples are in capture order, but not the workers' together).
    pub fn merge(&mut self, other: PlotPoints) {
        self.untracked += other.untracked;
        for (key, mut theirs) in other.series {
            match self.series.get_mut(&key) {
                Some(ours) => {
                    let stride = ours.stride.max(theirs.stride);
                    ours.thin_to(stride);
                    theirs.thin_to(stride);
                    ours.seen += theirs.seen;
                    ours.points.append(&mut theirs.points);
                    ours.points.sort_by_key(|p| p.ts_ns);
                    while ours.points.len() > self.limits.per_pair {
                        ours.halve();
                    }
                }
                None => {
                    self.series.insert(key, theirs);
                }
            }
        }
        self.kept = self.series.values().map(|s| s.points.len()).sum();
        self.fit_total();
    }

    /// The series of `key`, if any of its samples were kept.
    pub fn series(&self, key: &PairKey) -> Option<&Series> {
        self.series.get(key)
    }

    /// One summary per pair with kept points, from those points: the count is every sample
    /// offered; extremes, mean and percentiles (nearest rank) are of the kept points, exact
    /// unless the pair was thinned. Jitter and the smoothed RTT are not known here (0).
    pub fn summaries(&self) -> Vec<PairSummary> {
        let mut out: Vec<PairSummary> = self
            .series
            .iter()
            .filter(|(_, s)| !s.points.is_empty())
            .map(|(k, s)| {
                let mut rtts: Vec<u64> = s.points.iter().map(|p| p.rtt_ns).collect();
                rtts.sort_unstable();
                let n = rtts.len();
                let rank = |q: f64| rtts[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
                PairSummary {
                    src: k.src,
                    dst: k.dst,
                    other: false,
                    port: None,
                    samples: s.seen,
                    min_ns: rtts[0],
                    p50_ns: rank(0.50),
                    avg_ns: rtts.iter().sum::<u64>() as f64 / n as f64,
                    p95_ns: rank(0.95),
                    p99_ns: rank(0.99),
                    max_ns: rtts[n - 1],
                    jitter_ns: 0.0,
                    srtt_ns: 0.0,
                }
            })
            .collect();
        out.sort_by_key(|p| (p.src, p.dst));
        out
    }

    /// Samples not kept because their pair came after `limits.pairs` others.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// The limits in force.
    pub fn limits(&self) -> &PointLimits {
        &self.limits
    }

    /// Halves the largest series until all together fit `limits.total`.
    fn fit_total(&mut self) {
        while self.kept > self.limits.total {
            let Some(largest) = self.series.values_mut().max_by_key(|s| s.points.len()) else {
                return;
            };
            let before = largest.points.len();
            largest.halve();
            self.kept -= before - largest.points.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Addr;

    fn sample(i: u64, dst: u8) -> SampleRecord {
        SampleRecord {
            ts_ns: i * 1000,
            src: Addr::v4([10, 0, 0, 1]),
            sport: 1,
            dst: Addr::v4([10, 0, 0, dst]),
            dport: 2,
            rtt_ns: i,
            method: Method::Seq,
        }
    }

    fn key(dst: u8) -> PairKey {
        PairKey::hosts(Addr::v4([10, 0, 0, 1]), Addr::v4([10, 0, 0, dst]))
    }

    fn limits(per_pair: usize, total: usize, pairs: usize) -> PointLimits {
        PointLimits {
            per_pair,
            total,
            pairs,
            only: None,
        }
    }

    #[test]
    fn a_full_series_keeps_every_stride_th_sample() {
        let mut p = PlotPoints::new(limits(10, 100, 10));
        for i in 0..100 {
            p.add(&sample(i, 2));
        }
        let s = p.series(&key(2)).unwrap();
        assert_eq!((s.seen(), s.stride()), (100, 16));
        let rtts: Vec<u64> = s.points().iter().map(|p| p.rtt_ns).collect();
        assert_eq!(rtts, vec![0, 16, 32, 48, 64, 80, 96]);
    }

    #[test]
    fn a_series_under_its_cap_keeps_everything() {
        let mut p = PlotPoints::new(limits(10, 100, 10));
        for i in 0..10 {
            p.add(&sample(i, 2));
        }
        let s = p.series(&key(2)).unwrap();
        assert_eq!((s.points().len(), s.stride()), (10, 1));
    }

    #[test]
    fn the_total_cap_halves_the_largest_series() {
        let mut p = PlotPoints::new(limits(100, 30, 10));
        for i in 0..25 {
            p.add(&sample(i, 2));
        }
        for i in 0..10 {
            p.add(&sample(i, 3));
        }
        assert_eq!(p.series(&key(2)).unwrap().points().len(), 13);
        assert_eq!(p.series(&key(2)).unwrap().stride(), 2);
        assert_eq!(p.series(&key(3)).unwrap().points().len(), 10);
    }

    #[test]
    fn pairs_beyond_the_cap_are_counted_not_kept() {
        let mut p = PlotPoints::new(limits(100, 1000, 2));
        for dst in 2..6 {
            p.add(&sample(1, dst));
        }
        assert!(p.series(&key(3)).is_some());
        assert!(p.series(&key(4)).is_none());
        assert_eq!(p.untracked(), 2);
    }

    #[test]
    fn only_named_pairs_are_kept() {
        let mut l = limits(100, 1000, 10);
        l.only = Some(vec![key(3)]);
        let mut p = PlotPoints::new(l);
        p.add(&sample(1, 2));
        p.add(&sample(1, 3));
        assert!(p.series(&key(2)).is_none());
        assert_eq!(p.series(&key(3)).unwrap().points().len(), 1);
    }

    #[test]
    fn merging_thins_both_to_the_coarser_stride_and_sorts_by_time() {
        let mut a = PlotPoints::new(limits(10, 100, 10));
        let mut b = PlotPoints::new(limits(10, 100, 10));
        for i in 0..16 {
            a.add(&sample(2 * i, 2));
        }
        for i in 0..4 {
            b.add(&sample(2 * i + 1, 2));
        }
        a.merge(b);
        let s = a.series(&key(2)).unwrap();
        assert_eq!((s.seen(), s.stride()), (20, 2));
        let rtts: Vec<u64> = s.points().iter().map(|p| p.rtt_ns).collect();
        assert_eq!(rtts, vec![0, 1, 4, 5, 8, 12, 16, 20, 24, 28]);
    }
}
