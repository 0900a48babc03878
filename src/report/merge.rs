//! The reporter's merge: one summary per host pair from the workers' finished intervals.
//!
//! Workers record each pair's samples as bucket indices or flat counts ([`crate::record`]); the
//! same pair can have samples in several workers (its flows hash to different ones). The merge
//! orders every worker's pairs by key, and summarises each pair in turn, so that only one pair's
//! histogram is in memory at a time and memory follows the number of pairs, not their ranges:
//! - a pair with flat counts in some worker (a busy pair) is merged into an HdrHistogram, built
//!   for it and dropped after;
//! - a pair whose samples are all kept as indices (at most a few thousand) is summarised from
//!   its sorted indices by HdrHistogram's own quantile rule: the rank `max(1, ⌈q·n⌉)` picks the
//!   bucket, and the histogram's equivalence arithmetic its value. This is exactly what
//!   recording the samples into a histogram gives (the tests check it on random sample sets),
//!   without zeroing a 12 KiB counts array for every one of a gateway's 200,000 pairs.
//!
//! With the server-port dimension on, a series is a (src, dst, port) key, and a host pair keeps
//! at most `max_ports` ports apart after the merge too (workers bound their own, but two workers
//! may keep different ports of one pair): the pair's ports with the fewest samples are folded
//! into its `other` port, and every sample reported under an `other` port is counted.
//!
//! The interval keeps at most `max_pairs` series apart: past it, the series with the fewest
//! samples are folded, with the workers' own overflow recorders, into one `other` series, and
//! counted.

use hdrhistogram::Histogram;

use crate::decode::Addr;
use crate::record::{
    Counters, IntervalStats, Moments, PairKey, PairSamples, ServicePort, HIST_HIGH_NS,
    HIST_INITIAL_HIGH_NS, HIST_LOW_NS, RTT, RTT_SIGFIG,
};

/// Samples of a pair kept only as indices that are summarised by sorting them; a pair with
/// more gets a histogram.
const SORT_MAX: u64 = 4096;

/// The statistics of one pair over one report interval (or a whole file).
#[derive(Debug, Clone, PartialEq)]
pub struct PairSummary {
    /// The data sender.
    pub src: Addr,
    /// The acknowledging end, whose RTT this is.
    pub dst: Addr,
    /// True for the `other` series: the pairs beyond `max_pairs`, together (`src` and `dst`
    /// are then meaningless).
    pub other: bool,
    /// The server port, when series are per port (`other` for the global `other` series, and
    /// for a host pair's ports beyond `max_ports`); `None` when they are per host pair.
    pub port: Option<ServicePort>,
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

impl PairSummary {
    /// The sender as printed: its address, or `other`.
    pub fn src_name(&self) -> String {
        if self.other {
            "other".into()
        } else {
            self.src.to_string()
        }
    }

    /// The acknowledger as printed: its address, or `other`.
    pub fn dst_name(&self) -> String {
        if self.other {
            "other".into()
        } else {
            self.dst.to_string()
        }
    }
}

/// Several workers' intervals, merged: the summaries collected, for a caller that reads them more
/// than once (a plot). [`Plan`] streams them instead, as every report does.
#[derive(Debug, Default)]
pub struct Merged {
    pairs: Vec<PairSummary>,
    /// Counters summed over the workers, with the overflow's.
    pub counters: Counters,
}

impl Merged {
    /// Merges settled intervals (one per worker), keeping at most `max_pairs` pairs apart.
    pub fn new(intervals: &[&IntervalStats], max_pairs: usize) -> Merged {
        let plan = Plan::new(intervals.iter().copied(), max_pairs);
        let mut pairs = Vec::with_capacity(plan.len());
        let collected: Result<(), std::convert::Infallible> = plan.for_each(|p| {
            pairs.push(p.clone());
            Ok(())
        });
        let Ok(()) = collected;
        Merged {
            pairs,
            counters: plan.counters,
        }
    }

    /// Merges the intervals of workers that are of no use afterwards (settling each first); the
    /// tests' shorthand, since the engines keep their intervals and merge through [`Plan`].
    #[cfg(test)]
    pub fn from_owned(mut intervals: Vec<IntervalStats>, max_pairs: usize) -> Merged {
        for s in &mut intervals {
            s.settle();
        }
        let refs: Vec<&IntervalStats> = intervals.iter().collect();
        Merged::new(&refs, max_pairs)
    }

    /// One summary per pair, ordered by sender then acknowledger, and the `other` series last.
    pub fn summaries(&self) -> &[PairSummary] {
        &self.pairs
    }

    /// The summaries, owned.
    pub fn into_summaries(self) -> Vec<PairSummary> {
        self.pairs
    }
}

/// One pair of one worker, by key.
struct Ref {
    src: u128,
    dst: u128,
    port: Option<ServicePort>,
    worker: u32,
    slot: u32,
}

impl Ref {
    /// The series this part is reported in.
    fn key(&self) -> PairKey {
        PairKey {
            src: Addr(self.src.to_be_bytes()),
            dst: Addr(self.dst.to_be_bytes()),
            port: self.port,
        }
    }
}

/// The merge of settled intervals, ordered and bounded, whose summaries are made one at a time
/// as they are written: at 200,000 pairs the summaries are never all in memory.
pub struct Plan<'a> {
    intervals: Vec<&'a IntervalStats>,
    /// Every worker's pairs, by key then worker.
    refs: Vec<Ref>,
    /// The runs of `refs` that are one pair each, and whether it is folded into `other`.
    groups: Vec<(u32, u32, bool)>,
    /// True when some pair is reported as `other`.
    other: bool,
    /// True when series are per server port.
    by_port: bool,
    /// Counters summed over the workers, with the overflow's.
    pub counters: Counters,
}

impl<'a> Plan<'a> {
    /// Orders the pairs of settled intervals (one per worker), keeping at most `max_pairs` apart.
    pub fn new(
        intervals: impl IntoIterator<Item = &'a IntervalStats>,
        max_pairs: usize,
    ) -> Plan<'a> {
        let intervals: Vec<&IntervalStats> = intervals.into_iter().collect();
        let max_ports = intervals.iter().find_map(|s| s.max_ports());
        let mut counters = Counters::default();
        let mut refs = Vec::with_capacity(intervals.iter().map(|s| s.len()).sum());
        for (w, s) in intervals.iter().enumerate() {
            counters.add(&s.counters);
            for (slot, p) in s.pairs().enumerate() {
                let k = p.key();
                refs.push(Ref {
                    src: u128::from_be_bytes(k.src.0),
                    dst: u128::from_be_bytes(k.dst.0),
                    port: k.port,
                    worker: w as u32,
                    slot: slot as u32,
                });
            }
        }
        // Big-endian words order as the addresses' bytes do: the output's order (by port
        // within a host pair, its `other` port last).
        refs.sort_unstable_by_key(|r| (r.src, r.dst, r.port, r.worker));
        let part = |r: &Ref| intervals[r.worker as usize].pair(r.slot);
        if let Some(max_ports) = max_ports {
            counters.port_overflow_samples = cap_ports(&mut refs, max_ports, |r| part(r).count());
        }
        // At most one group a ref: sized once, rather than grown by doubling.
        let mut groups: Vec<(u32, u32, bool)> = Vec::with_capacity(refs.len());
        let mut at = 0;
        while at < refs.len() {
            let key = (refs[at].src, refs[at].dst, refs[at].port);
            let end = at
                + refs[at..]
                    .iter()
                    .take_while(|r| (r.src, r.dst, r.port) == key)
                    .count();
            groups.push((at as u32, end as u32, false));
            at = end;
        }
        let samples = |a: u32, b: u32| -> u64 {
            refs[a as usize..b as usize]
                .iter()
                .map(|r| part(r).count())
                .sum()
        };

        // Past the bound, the pairs with the fewest samples are folded into `other`.
        let max_pairs = max_pairs.max(1);
        let mut overflow: u64 = intervals
            .iter()
            .filter_map(|s| s.overflow())
            .map(|p| p.count())
            .sum();
        let mut other = overflow > 0;
        if groups.len() > max_pairs {
            let mut by_count: Vec<(u64, u32)> = groups
                .iter()
                .enumerate()
                .map(|(i, g)| (samples(g.0, g.1), i as u32))
                .collect();
            // Most samples first, then the key's order.
            by_count.select_nth_unstable_by(max_pairs, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(n, i) in &by_count[max_pairs..] {
                groups[i as usize].2 = true;
                overflow += n;
            }
            other = true;
        }
        counters.overflow_samples = overflow;
        Plan {
            intervals,
            refs,
            groups,
            other,
            by_port: max_ports.is_some(),
            counters,
        }
    }

    /// True when series are per server port.
    pub fn by_port(&self) -> bool {
        self.by_port
    }

    /// Number of summaries: the pairs kept apart, and `other` if any pair is folded into it.
    pub fn len(&self) -> usize {
        self.groups.iter().filter(|g| !g.2).count() + usize::from(self.other)
    }

    /// True when there is no summary.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples of every summary, without summarising.
    pub fn samples(&self) -> u64 {
        let own: u64 = self
            .intervals
            .iter()
            .filter_map(|s| s.overflow())
            .map(|p| p.count())
            .sum();
        self.refs.iter().map(|r| self.part(r).count()).sum::<u64>() + own
    }

    fn part(&self, r: &Ref) -> PairSamples<'a> {
        self.intervals[r.worker as usize].pair(r.slot)
    }

    /// The summaries' (sender, acknowledger) as printed, in order, without summarising.
    pub fn names(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let kept = self.groups.iter().filter(|g| !g.2).map(|g| {
            let k = self.refs[g.0 as usize].key();
            (k.src.to_string(), k.dst.to_string())
        });
        kept.chain(
            self.other
                .then(|| ("other".to_string(), "other".to_string())),
        )
    }

    /// Calls `f` with each summary in order (by sender then acknowledger, `other` last), made
    /// as it is needed and dropped after.
    pub fn for_each<E>(&self, mut f: impl FnMut(&PairSummary) -> Result<(), E>) -> Result<(), E> {
        let mut sm = Summariser::default();
        for &(a, b, folded) in &self.groups {
            if folded {
                continue;
            }
            let parts = self.refs[a as usize..b as usize]
                .iter()
                .map(|r| self.part(r));
            let key = self.refs[a as usize].key();
            f(&sm.summarise(parts, key, false))?;
        }
        if self.other {
            let folded = self
                .groups
                .iter()
                .filter(|g| g.2)
                .flat_map(|g| self.refs[g.0 as usize..g.1 as usize].iter())
                .map(|r| self.part(r));
            let own = self.intervals.iter().filter_map(|s| s.overflow());
            let key = PairKey {
                port: self.by_port.then_some(ServicePort::Other),
                ..PairKey::default()
            };
            f(&sm.summarise(folded.chain(own), key, true))?;
        }
        Ok(())
    }
}

/// Keeps at most `max_ports` ports of each host pair apart in `refs` (sorted by key): the ports
/// with the fewest samples (`count` gives a part's) go to the pair's `other` port, which is then
/// sorted last again. Returns the samples reported under `other` ports.
fn cap_ports(refs: &mut [Ref], max_ports: usize, count: impl Fn(&Ref) -> u64) -> u64 {
    let mut overflow = 0;
    let mut ports: Vec<(u64, u16, u32, u32)> = Vec::new();
    let mut at = 0;
    while at < refs.len() {
        let hosts = (refs[at].src, refs[at].dst);
        let end = at
            + refs[at..]
                .iter()
                .take_while(|r| (r.src, r.dst) == hosts)
                .count();
        // The host pair's ports: (samples, port, first ref, end).
        ports.clear();
        let mut i = at;
        while i < end {
            let port = refs[i].port;
            let j = i + refs[i..end].iter().take_while(|r| r.port == port).count();
            if let Some(ServicePort::Port(p)) = port {
                let n = refs[i..j].iter().map(&count).sum();
                ports.push((n, p, i as u32, j as u32));
            }
            i = j;
        }
        if ports.len() > max_ports {
            // Most samples first, then the lower port.
            ports.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(_, _, i, j) in &ports[max_ports..] {
                for r in &mut refs[i as usize..j as usize] {
                    r.port = Some(ServicePort::Other);
                }
            }
            refs[at..end].sort_unstable_by_key(|r| (r.port, r.worker));
        }
        overflow += refs[at..end]
            .iter()
            .filter(|r| r.port == Some(ServicePort::Other))
            .map(&count)
            .sum::<u64>();
        at = end;
    }
    overflow
}

/// Summarises pairs one at a time, reusing its buffers.
struct Summariser {
    /// The sample indices of a pair summarised by sorting.
    indices: Vec<u16>,
    /// Knows HdrHistogram's equivalence arithmetic (which does not depend on counts).
    layout: Histogram<u32>,
}

impl Default for Summariser {
    fn default() -> Summariser {
        Summariser {
            indices: Vec::new(),
            layout: new_histogram(),
        }
    }
}

/// An empty RTT histogram, as the reporter has always made them.
fn new_histogram() -> Histogram<u32> {
    let mut h = Histogram::new_with_bounds(HIST_LOW_NS, HIST_INITIAL_HIGH_NS, RTT_SIGFIG)
        .expect("constant histogram bounds are valid");
    h.auto(true);
    h
}

/// The quantiles every summary gives.
const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

impl Summariser {
    /// The summary of one pair's parts (its samples in each worker).
    fn summarise<'a>(
        &mut self,
        parts: impl Iterator<Item = PairSamples<'a>> + Clone,
        key: PairKey,
        other: bool,
    ) -> PairSummary {
        let mut m = Moments::EMPTY;
        let mut sortable = true;
        for p in parts.clone() {
            m.merge(p.moments());
            sortable &= !p.is_dense();
        }
        let [p50, p95, p99] = if m.count == 0 {
            [0; 3]
        } else if sortable && m.count <= SORT_MAX {
            self.by_rank(parts, &m)
        } else {
            by_histogram(parts, &m)
        };
        let mean = |sum: u128, n: u64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        PairSummary {
            src: key.src,
            dst: key.dst,
            other,
            port: key.port,
            samples: m.count,
            min_ns: if m.count == 0 { 0 } else { m.min_ns },
            p50_ns: p50,
            avg_ns: mean(m.sum_ns.get(), m.count),
            p95_ns: p95,
            p99_ns: p99,
            max_ns: m.max_ns,
            jitter_ns: mean(m.jitter_sum_ns.get(), m.jitter_count),
            srtt_ns: m.srtt_ns,
        }
    }

    /// Quantiles from the sorted sample indices, by `Histogram::value_at_quantile`'s rule.
    fn by_rank<'a>(
        &mut self,
        parts: impl Iterator<Item = PairSamples<'a>>,
        m: &Moments,
    ) -> [u64; 3] {
        self.indices.clear();
        for p in parts {
            p.for_each_bucket(|i, n| {
                for _ in 0..n {
                    self.indices.push(i as u16);
                }
            });
        }
        self.indices.sort_unstable();
        let total = self.indices.len() as u64;
        QUANTILES.map(|q| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let i = usize::from(self.indices[(rank - 1) as usize]);
            let v = self.layout.highest_equivalent(RTT.value_for(i));
            self.layout.median_equivalent(v).clamp(m.min_ns, m.max_ns)
        })
    }
}

/// Quantiles from an HdrHistogram of the parts' buckets, made for this pair and dropped after.
fn by_histogram<'a>(parts: impl Iterator<Item = PairSamples<'a>>, m: &Moments) -> [u64; 3] {
    let mut h = new_histogram();
    for p in parts {
        p.for_each_bucket(|i, n| record_n(&mut h, RTT.value_for(i), n));
    }
    QUANTILES.map(|q| {
        h.median_equivalent(h.value_at_quantile(q))
            .clamp(m.min_ns, m.max_ns)
    })
}

/// Records `n` samples of `v`, clamped to the histogram's range; the histogram grows to fit it.
/// (`saturating_record` would clamp to the current size instead of growing.)
fn record_n(h: &mut Histogram<u32>, v: u64, n: u32) {
    let v = v.clamp(HIST_LOW_NS, HIST_HIGH_NS);
    if h.record_n(v, n).is_err() {
        h.saturating_record_n(v, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::Rng;
    use crate::record::{Recorded, SPARSE_MAX};

    fn key(a: u8, b: u8) -> PairKey {
        PairKey::hosts(Addr::v4([10, 0, 0, a]), Addr::v4([10, 0, 0, b]))
    }

    /// The reference: every sample recorded straight into one HdrHistogram, with exact moments,
    /// as the reporter summarised pairs before it merged recorders.
    fn reference(key: PairKey, samples: &[(u64, Option<u64>)]) -> PairSummary {
        let mut h = new_histogram();
        let mut m = Moments::EMPTY;
        for &(v, j) in samples {
            record_n(&mut h, v, 1);
            m.record(v, j);
        }
        let q = |q: f64| {
            h.median_equivalent(h.value_at_quantile(q))
                .clamp(m.min_ns, m.max_ns)
        };
        let mean = |sum: u128, n: u64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        PairSummary {
            src: key.src,
            dst: key.dst,
            other: false,
            port: key.port,
            samples: m.count,
            min_ns: m.min_ns,
            p50_ns: q(0.5),
            avg_ns: mean(m.sum_ns.get(), m.count),
            p95_ns: q(0.95),
            p99_ns: q(0.99),
            max_ns: m.max_ns,
            jitter_ns: mean(m.jitter_sum_ns.get(), m.jitter_count),
            srtt_ns: m.srtt_ns,
        }
    }

    /// srtt depends on the order of samples and their split among workers; the rest must not.
    fn strip(mut p: PairSummary) -> PairSummary {
        p.srtt_ns = 0.0;
        p
    }

    /// Records `samples` of pair `k` across `workers` intervals, by `split`.
    fn spread(
        intervals: &mut [IntervalStats],
        k: PairKey,
        samples: &[(u64, Option<u64>)],
        split: &mut impl FnMut() -> usize,
    ) {
        for &(v, j) in samples {
            let w = split() % intervals.len();
            intervals[w].record(k, v, j);
        }
    }

    #[test]
    fn merged_quantiles_equal_a_dense_hdrhistogram_on_random_sample_sets() {
        let mut rng = Rng(42);
        let sizes = [
            1usize, 2, 3, 5, 8, 9, 17, 40, 100, 500, 968, 969, 2_000, 4_096, 4_097, 20_000,
        ];
        for (case, &n) in sizes.iter().cycle().take(160).enumerate() {
            // Value ranges from loopback to past the histogram's top, and all at once.
            let (lo, hi) = [(0, 12), (10, 24), (18, 30), (30, 40), (35, 63), (0, 63)][case % 6];
            let samples: Vec<(u64, Option<u64>)> = (0..n)
                .map(|k| {
                    let v = match rng.next() % 10 {
                        0 => 20_000_000 + rng.next() % 3,
                        _ => rng.log_uniform(lo, hi),
                    };
                    (v, (k % 4 != 0).then(|| rng.log_uniform(0, 30)))
                })
                .collect();
            let workers = 1 + case % 3;
            let mut intervals: Vec<IntervalStats> =
                (0..workers).map(|_| IntervalStats::default()).collect();
            let mut split = || rng.next() as usize;
            spread(&mut intervals, key(1, 2), &samples, &mut split);
            let got = Merged::from_owned(intervals, 100);
            let want = reference(key(1, 2), &samples);
            assert_eq!(
                got.summaries()
                    .iter()
                    .cloned()
                    .map(strip)
                    .collect::<Vec<_>>(),
                vec![strip(want)],
                "case {case}: {n} samples over {workers} workers, 2^{lo}..2^{hi}"
            );
        }
    }

    #[test]
    fn one_worker_keeps_srtt_exactly() {
        let mut rng = Rng(5);
        for n in [1, 7, 8, 9, 100, SPARSE_MAX as usize + 3] {
            let samples: Vec<(u64, Option<u64>)> = (0..n)
                .map(|k| {
                    (
                        rng.log_uniform(10, 40),
                        (k > 0).then(|| rng.log_uniform(0, 20)),
                    )
                })
                .collect();
            let mut s = IntervalStats::default();
            for &(v, j) in &samples {
                s.record(key(1, 2), v, j);
            }
            let got = Merged::from_owned(vec![s], 10);
            assert_eq!(got.summaries(), &[reference(key(1, 2), &samples)], "{n}");
        }
    }

    #[test]
    fn pairs_are_ordered_by_sender_then_acknowledger() {
        let mut a = IntervalStats::default();
        let mut b = IntervalStats::default();
        a.record(key(3, 1), 1_000_000, None);
        b.record(key(1, 9), 1_000_000, None);
        a.record(key(1, 2), 1_000_000, None);
        b.record(key(3, 1), 3_000_000, None);
        let v6 = PairKey::hosts(
            Addr::from("2001:db8::1".parse::<std::net::IpAddr>().unwrap()),
            Addr::v4([10, 0, 0, 1]),
        );
        b.record(v6, 5_000_000, None);
        let m = Merged::from_owned(vec![a, b], 100);
        let got: Vec<(Addr, Addr, u64)> = m
            .summaries()
            .iter()
            .map(|p| (p.src, p.dst, p.samples))
            .collect();
        let mut want = vec![
            (key(1, 2).src, key(1, 2).dst, 1),
            (key(1, 9).src, key(1, 9).dst, 1),
            (key(3, 1).src, key(3, 1).dst, 2),
            (v6.src, v6.dst, 1),
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn ports_past_the_cap_fold_into_their_pairs_other_port_after_the_merge() {
        use ServicePort::{Other, Port};
        let k = |port| PairKey {
            port: Some(port),
            ..key(1, 2)
        };
        // Each worker keeps 2 ports; together they keep 4, and the merge keeps the 2 busiest.
        let mut w = [IntervalStats::new(100), IntervalStats::new(100)];
        for s in &mut w {
            s.set_max_ports(Some(2));
        }
        let mut other = Vec::new();
        for (i, &(worker, port, n)) in [
            (0, 443, 3),
            (0, 80, 1),
            (1, 5432, 2),
            (1, 22, 1),
            (1, 8080, 1),
        ]
        .iter()
        .enumerate()
        {
            for j in 0..n {
                let v = 1_000_000 * (i as u64 + 1) + j;
                w[worker].record(k(Port(port)), v, None);
                if matches!(port, 80 | 22 | 8080) {
                    other.push((v, None));
                }
            }
        }
        let m = Merged::from_owned(w.into(), 100);
        let got: Vec<(Option<ServicePort>, u64)> =
            m.summaries().iter().map(|p| (p.port, p.samples)).collect();
        assert_eq!(
            got,
            vec![
                (Some(Port(443)), 3),
                (Some(Port(5432)), 2),
                (Some(Other), 3)
            ]
        );
        assert_eq!(
            strip(m.summaries()[2].clone()),
            strip(reference(k(Other), &other))
        );
        assert_eq!(m.counters.port_overflow_samples, 3);
        assert_eq!(m.counters.overflow_samples, 0);
    }

    #[test]
    fn pairs_past_the_bound_fold_into_other_busiest_kept() {
        // Two workers of at most 6 pairs each. Pair i (0..10) has i + 1 samples, in worker
        // i % 2; then each worker sees 3 new pairs of one sample: the first takes its last
        // slot, the other two go to its own overflow recorder. Merged with a bound of 4, the 4
        // busiest pairs stay apart and everything else is `other`.
        let mut w = [IntervalStats::new(6), IntervalStats::new(6)];
        let mut other = Vec::new();
        let mut kept = Vec::new();
        for i in 0..10u8 {
            let samples: Vec<(u64, Option<u64>)> = (0..=u64::from(i))
                .map(|n| (1_000_000 * (u64::from(i) + 1) + n * 1_000, None))
                .collect();
            for &(v, j) in &samples {
                let r = w[usize::from(i % 2)].record(key(i, 100), v, j);
                assert!(matches!(r, Recorded::Slot(_)));
            }
            if i < 6 {
                other.extend(samples);
            } else {
                kept.push(reference(key(i, 100), &samples));
            }
        }
        for (n, s) in w.iter_mut().enumerate() {
            for k in 0..3u8 {
                let v = 50_000_000 + u64::from(k) * 1_000_000 + n as u64;
                let r = s.record(key(200 + k, 1), v, None);
                assert_eq!(
                    r,
                    if k == 0 {
                        Recorded::Slot(5)
                    } else {
                        Recorded::Overflow
                    }
                );
                other.push((v, None));
            }
        }
        let m = Merged::from_owned(w.into(), 4);
        let got = m.summaries();
        assert_eq!(got.len(), 5);
        assert_eq!(
            got[..4].iter().cloned().map(strip).collect::<Vec<_>>(),
            kept.into_iter().map(strip).collect::<Vec<_>>()
        );
        let mut want_other = reference(PairKey::default(), &other);
        want_other.other = true;
        assert_eq!(strip(got[4].clone()), strip(want_other));
        assert_eq!(got[4].src_name(), "other");
        assert_eq!(m.counters.overflow_samples, other.len() as u64);
        assert_eq!(other.len(), 21 + 2 + 4);
    }
}
