//! Per-pair statistics: what a worker records, and how the reporter merges workers.
//!
//! A worker keeps one [`PairRecorder`] per reporting key — the pair (data sender's address,
//! acknowledger's address) — never one per flow, so memory follows the number of host pairs, not
//! connections. Besides the RTT histogram it keeps the exact count, sum, min and max, so the
//! average and extremes are exact and only percentiles carry HdrHistogram's 0.1 % quantisation.
//! Jitter (go-metro's: the mean absolute difference between consecutive samples of one flow) has
//! its own histogram so that it merges the same way.
//!
//! Recording is on the per-packet hot path, so a worker does not record into HdrHistograms.
//! `Histogram::record` is an out-of-line call of about 53 instructions (it keeps its own total,
//! min and max and checks whether to grow), made twice per sample (RTT and jitter), and a sample
//! touched about six cache lines (the key, two `Histogram` structs, two counts arrays, the
//! moments). A [`PairRecorder`] instead keeps its key, its moments and its counts' pointer in two
//! adjacent cache lines, and flat `u32` counts laid out exactly as `hdrhistogram` lays out a
//! `Histogram<u32>` of the same bounds and precision: a sample costs an inlined index computation
//! (a `bsr` and two shifts) and a plain increment per histogram, and touches those two lines and
//! one line of counts per histogram. With the key check and the moments that is about 60
//! instructions, 80 with a jitter, where it was about 230. The counts grow only when a pair
//! first sees an RTT beyond them. The reporter converts at handover ([`Merged::add`]): each
//! non-empty bucket is recorded into a real `Histogram` at its lowest value with its count, which
//! lands in the same bucket, so percentiles are bit-identical to recording every sample there
//! (the tests check it). On the `hot_path` benchmark (0.53 samples per packet) this took a packet
//! from 683.6 to 599.5 instructions (callgrind, either mix) and from 7.0 to 5.4 simulated L1 data
//! misses (many pairs); criterion's medians, on a noisy shared VM, went from 100 to 90 ns per
//! packet with few pairs and from 123 to 92 ns with many.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use hdrhistogram::Histogram;

use crate::decode::{Addr, Skip};
use crate::flow::TableStats;
use crate::rtt::RttStats;

/// Smallest RTT the histograms tell apart, in ns. Below 1 µs only loopback lives.
const HIST_LOW_NS: u64 = 1_000;
/// Largest RTT recorded, in ns; larger values are clamped to it (100 s).
const HIST_HIGH_NS: u64 = 100_000_000_000;
/// What a new histogram covers before it first grows: LAN and metro-area RTTs. Histograms grow
/// (by whole powers of two) only when a pair first sees a larger RTT, so a worker's pair with
/// 20 ms RTTs costs about 32 KB of counts instead of the 79 KB that the full 1 µs–100 s range
/// would (16 KB below 2 ms).
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
    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 31)
    }
}

type PairMap<V> = HashMap<PairKey, V, BuildHasherDefault<PairHasher>>;

/// The reporting key: who sent the data, and who acknowledged it (whose RTT it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PairKey {
    /// The data sender.
    pub src: Addr,
    /// The acknowledging end.
    pub dst: Addr,
}

/// Hashes the two addresses as four words (the derived hash feeds each array's length and its
/// bytes separately).
impl Hash for PairKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        for a in [&self.src, &self.dst] {
            let w = u128::from_ne_bytes(a.0);
            state.write_u64(w as u64);
            state.write_u64((w >> 64) as u64);
        }
    }
}

impl PairKey {
    /// Equality in wide words, with one branch (the derived `==` compares the arrays byte-wise).
    #[inline]
    fn same(&self, o: &PairKey) -> bool {
        let w = |a: &Addr| u128::from_ne_bytes(a.0);
        (w(&self.src) ^ w(&o.src)) | (w(&self.dst) ^ w(&o.dst)) == 0
    }
}

/// The exact statistics of one pair's samples: everything but the histograms.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Moments {
    sum_ns: u128,
    jitter_sum_ns: u128,
    count: u64,
    min_ns: u64,
    max_ns: u64,
    /// The kernel's smoothed RTT (RFC 6298 §2: srtt ← 7/8 srtt + 1/8 r), over this pair's samples.
    srtt_ns: f64,
    jitter_count: u64,
}

impl Moments {
    const EMPTY: Moments = Moments {
        sum_ns: 0,
        jitter_sum_ns: 0,
        count: 0,
        min_ns: u64::MAX,
        max_ns: 0,
        srtt_ns: 0.0,
        jitter_count: 0,
    };

    /// Adds one sample, and the jitter it makes with the previous sample of its flow.
    fn record(&mut self, rtt_ns: u64, jitter_ns: Option<u64>) {
        let r = rtt_ns as f64;
        self.srtt_ns = if self.count == 0 {
            r
        } else {
            self.srtt_ns + (r - self.srtt_ns) / 8.0
        };
        self.count += 1;
        self.sum_ns += u128::from(rtt_ns);
        self.min_ns = self.min_ns.min(rtt_ns);
        self.max_ns = self.max_ns.max(rtt_ns);
        if let Some(j) = jitter_ns {
            self.jitter_count += 1;
            self.jitter_sum_ns += u128::from(j);
        }
    }

    /// Adds another worker's samples of the same pair.
    fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
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
}

/// Samples of one pair: HdrHistograms plus exact moments. This is what the reporter merges and
/// summarises; workers record into [`PairRecorder`]s, which convert to it.
#[derive(Clone)]
pub struct PairHist {
    rtt: Histogram<u32>,
    jitter: Histogram<u32>,
    m: Moments,
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
            m: Moments::EMPTY,
        }
    }

    /// Records one sample, and the jitter it makes with the previous sample of its flow.
    pub fn record(&mut self, rtt_ns: u64, jitter_ns: Option<u64>) {
        record_n(&mut self.rtt, rtt_ns, 1);
        if let Some(j) = jitter_ns {
            record_n(&mut self.jitter, j, 1);
        }
        self.m.record(rtt_ns, jitter_ns);
    }

    /// Adds another worker's samples of the same pair.
    pub fn merge(&mut self, other: &PairHist) {
        if other.m.count == 0 {
            return;
        }
        // Both use the same bounds, so adding cannot fail.
        let _ = self.rtt.add(&other.rtt);
        let _ = self.jitter.add(&other.jitter);
        self.m.merge(&other.m);
    }

    /// Adds a worker's recorder of the same pair: each non-empty bucket of its flat counts goes
    /// into the same bucket here, so the result is what recording the samples here would give.
    pub fn merge_recorder(&mut self, r: &PairRecorder) {
        if r.m.count == 0 {
            return;
        }
        self.add_buckets(r);
        self.m.merge(&r.m);
    }

    fn add_buckets(&mut self, r: &PairRecorder) {
        for (i, n) in r.rtt_buckets() {
            record_n(&mut self.rtt, RTT.value_for(i), n);
        }
        for (i, n) in r.jitter_buckets() {
            record_n(&mut self.jitter, JITTER.value_for(i), n);
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.m.count
    }

    /// The RTT at quantile `q` (0..=1), in ns, kept within the exact min and max.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.m.count == 0 {
            return 0;
        }
        let v = self.rtt.median_equivalent(self.rtt.value_at_quantile(q));
        v.clamp(self.m.min_ns, self.m.max_ns)
    }

    /// A summary for printing and sending.
    pub fn summary(&self, key: PairKey) -> PairSummary {
        let mean = |sum: u128, n: u64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        let m = &self.m;
        PairSummary {
            src: key.src,
            dst: key.dst,
            samples: m.count,
            min_ns: if m.count == 0 { 0 } else { m.min_ns },
            p50_ns: self.quantile_ns(0.5),
            avg_ns: mean(m.sum_ns, m.count),
            p95_ns: self.quantile_ns(0.95),
            p99_ns: self.quantile_ns(0.99),
            max_ns: m.max_ns,
            jitter_ns: mean(m.jitter_sum_ns, m.jitter_count),
            srtt_ns: m.srtt_ns,
        }
    }
}

impl From<&PairRecorder> for PairHist {
    /// The recorder's samples as HdrHistograms (its moments copied as they are).
    fn from(r: &PairRecorder) -> PairHist {
        let mut h = PairHist::new();
        h.add_buckets(r);
        h.m = r.m;
        h
    }
}

/// Records `n` samples of `v`, clamped to the histogram's range; the histogram grows to fit it.
/// (`saturating_record` would clamp to the current size instead of growing.)
fn record_n(h: &mut Histogram<u32>, v: u64, n: u32) {
    let v = v.clamp(HIST_LOW_NS, HIST_HIGH_NS);
    if h.record_n(v, n).is_err() {
        h.saturating_record_n(v, n);
    }
}

/// HdrHistogram's bucket layout (as `hdrhistogram` 7 computes it) for a lowest discernible value
/// and a number of significant figures. A flat counts array indexed this way holds exactly what
/// a `Histogram` with those parameters would, so it converts bucket by bucket.
#[derive(Clone, Copy)]
struct Layout {
    /// log2 of the lowest discernible value, rounded down.
    unit_magnitude: u32,
    /// log2 of half the number of sub-buckets per bucket.
    sub_bucket_half_count_magnitude: u32,
    /// `(sub_bucket_count - 1) << unit_magnitude`: ORed in, it maps small values to bucket 0.
    sub_bucket_mask: u64,
    /// `64 - unit_magnitude - sub_bucket_count_magnitude`.
    leading_zero_count_base: u32,
}

impl Layout {
    const fn new(low: u64, sigfig: u8) -> Layout {
        let unit_magnitude = 63 - low.leading_zeros();
        // Single-unit resolution up to 2 × 10^sigfig, rounded up to a power of two.
        let largest = 2 * 10u64.pow(sigfig as u32);
        let sub_bucket_count_magnitude = 64 - (largest - 1).leading_zeros();
        Layout {
            unit_magnitude,
            sub_bucket_half_count_magnitude: sub_bucket_count_magnitude - 1,
            sub_bucket_mask: ((1 << sub_bucket_count_magnitude) - 1) << unit_magnitude,
            leading_zero_count_base: 64 - unit_magnitude - sub_bucket_count_magnitude,
        }
    }

    /// The counts index of `v` (HdrHistogram's `index_for`).
    #[inline(always)]
    const fn index(&self, v: u64) -> usize {
        let bucket = self.leading_zero_count_base - (v | self.sub_bucket_mask).leading_zeros();
        let sub_bucket = (v >> (bucket + self.unit_magnitude)) as usize;
        // HdrHistogram's ((bucket + 1) << half_magnitude) + sub_bucket - half_count.
        ((bucket as usize) << self.sub_bucket_half_count_magnitude) + sub_bucket
    }

    /// The lowest value counted at index `i` (HdrHistogram's `value_for`).
    const fn value_for(&self, i: usize) -> u64 {
        let half_magnitude = self.sub_bucket_half_count_magnitude;
        let bucket = i >> half_magnitude;
        if bucket == 0 {
            (i as u64) << self.unit_magnitude
        } else {
            let sub_bucket = (i & ((1 << half_magnitude) - 1)) | (1 << half_magnitude);
            (sub_bucket as u64) << (bucket as u32 - 1 + self.unit_magnitude)
        }
    }

    /// The counts needed to cover index `i`, in whole buckets (as HdrHistogram grows).
    const fn covering(&self, i: usize) -> usize {
        ((i >> self.sub_bucket_half_count_magnitude) + 1) << self.sub_bucket_half_count_magnitude
    }
}

/// The RTT histograms' layout.
const RTT: Layout = Layout::new(HIST_LOW_NS, RTT_SIGFIG);
/// The jitter histograms' layout.
const JITTER: Layout = Layout::new(HIST_LOW_NS, JITTER_SIGFIG);
/// Jitter counts cover every `u64` from the start, so that no value needs clamping when it is
/// recorded (at conversion, those beyond the range count as its top): they are few.
const JITTER_LEN: usize = JITTER.index(u64::MAX) + 1;
/// The RTT counts' last index: [`HIST_HIGH_NS`]'s.
const RTT_MAX_INDEX: usize = RTT.index(HIST_HIGH_NS);
// The fast path converts RTTs within the counts to f64 as i64s.
const _: () = assert!(RTT.value_for(RTT_MAX_INDEX + 1) <= i64::MAX as u64);
/// Samples of a pair after its first that take the fast path: up to where a count could
/// overflow, since none can exceed the samples (2^31 - 1 compares in one instruction).
const FAST_SAMPLES: u64 = (1 << 31) - 1;
/// RTT counts a new recorder starts with (what `Histogram::new_with_bounds` allocates for
/// [`HIST_INITIAL_HIGH_NS`]).
const RTT_INITIAL_LEN: usize = RTT.covering(RTT.index(HIST_INITIAL_HIGH_NS));

/// What a worker records for one pair: the key, the exact moments, and flat counts in
/// HdrHistogram's layout (jitter's first, then the RTT's), all of the hot part in two adjacent
/// cache lines. Converted to a [`PairHist`] when the reporter merges it.
#[derive(Clone)]
#[repr(C, align(64))]
pub struct PairRecorder {
    key: PairKey,
    m: Moments,
    /// `JITTER_LEN` jitter counts, then the RTT counts, which grow by whole buckets.
    counts: Box<[u32]>,
}

// Two cache lines: the key, the moments and the counts' pointer.
const _: () = assert!(std::mem::size_of::<PairRecorder>() == 128);

impl PairRecorder {
    /// An empty recorder for `key`, in `counts` (zeroed, at least the initial length).
    fn new(key: PairKey, counts: Box<[u32]>) -> PairRecorder {
        debug_assert!(counts.len() >= JITTER_LEN + RTT_INITIAL_LEN);
        PairRecorder {
            key,
            m: Moments::EMPTY,
            counts,
        }
    }

    /// Zeroed counts for a new recorder.
    fn fresh_counts() -> Box<[u32]> {
        vec![0; JITTER_LEN + RTT_INITIAL_LEN].into_boxed_slice()
    }

    /// Records one sample, and the jitter it makes with the previous sample of its flow.
    #[inline(always)]
    fn record(&mut self, rtt_ns: u64, jitter_ns: Option<u64>) {
        if let Some(d) = self.record_moments(rtt_ns, jitter_ns) {
            self.add_counts(d);
        }
    }

    /// Records the sample's moments now, and returns its counts increments for the caller to
    /// apply later ([`PairRecorder::add_counts`]). On the slow path (see below) it records
    /// everything itself and returns `None`.
    #[inline(always)]
    fn record_moments(&mut self, rtt_ns: u64, jitter_ns: Option<u64>) -> Option<Counts> {
        // Unclamped: values below the range count at index 0 (as the range's lowest, when
        // converted), values beyond it fall past the counts (the slow path clamps them).
        let i = JITTER_LEN + RTT.index(rtt_ns);
        let m = &mut self.m;
        // The fast path: the RTT within the counts, and neither the first sample (srtt starts
        // at it) nor one that could overflow a count (no count exceeds the samples).
        if i < self.counts.len() && m.count.wrapping_sub(1) < FAST_SAMPLES {
            // The counts end before 2^63 ns, so the RTT is a non-negative i64, which converts
            // to f64 in one instruction (a u64 takes six).
            let r = rtt_ns as i64 as f64;
            m.srtt_ns += (r - m.srtt_ns) / 8.0;
            m.count += 1;
            m.sum_ns += u128::from(rtt_ns);
            m.min_ns = m.min_ns.min(rtt_ns);
            m.max_ns = m.max_ns.max(rtt_ns);
            // No jitter adds nothing, to index 0: one add either way, no branch.
            let (jitter, jitter_add) = match jitter_ns {
                Some(j) => {
                    m.jitter_count += 1;
                    m.jitter_sum_ns += u128::from(j);
                    (JITTER.index(j) as u32, 1)
                }
                None => (0, 0),
            };
            Some(Counts {
                pair: 0,
                rtt: i as u32,
                jitter,
                jitter_add,
            })
        } else {
            self.record_slowly(i, rtt_ns, jitter_ns);
            None
        }
    }

    /// Applies the counts increments [`PairRecorder::record_moments`] returned.
    #[inline(always)]
    fn add_counts(&mut self, d: Counts) {
        self.counts[d.rtt as usize] += 1;
        self.counts[d.jitter as usize] += d.jitter_add;
    }

    /// [`PairRecorder::record`] for a pair's first sample, for an RTT beyond the counts (which
    /// grow by whole buckets, as HdrHistogram's do, up to the range's end, where they clamp), and
    /// past [`FAST_SAMPLES`] (where counts saturate, as HdrHistogram's do).
    #[cold]
    #[inline(never)]
    fn record_slowly(&mut self, i: usize, rtt_ns: u64, jitter_ns: Option<u64>) {
        let i = i.min(JITTER_LEN + RTT_MAX_INDEX);
        if i >= self.counts.len() {
            let len = JITTER_LEN + RTT.covering(i - JITTER_LEN).min(RTT_MAX_INDEX + 1);
            let mut v = std::mem::take(&mut self.counts).into_vec();
            v.reserve_exact(len - v.len());
            v.resize(len, 0);
            self.counts = v.into_boxed_slice();
        }
        let c = &mut self.counts[i];
        *c = c.saturating_add(1);
        if let Some(j) = jitter_ns {
            let c = &mut self.counts[JITTER.index(j)];
            *c = c.saturating_add(1);
        }
        self.m.record(rtt_ns, jitter_ns);
    }

    /// The RTT counts that can be non-zero: from the minimum's bucket to the maximum's.
    fn rtt_range(&self) -> std::ops::Range<usize> {
        if self.m.count == 0 {
            return JITTER_LEN..JITTER_LEN;
        }
        let lo = RTT.index(self.m.min_ns);
        let hi = RTT.index(self.m.max_ns).min(RTT_MAX_INDEX);
        JITTER_LEN + lo..JITTER_LEN + hi + 1
    }

    /// The non-empty RTT buckets, as (index in HdrHistogram's layout, count).
    fn rtt_buckets(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let r = self.rtt_range();
        let first = r.start - JITTER_LEN;
        self.counts[r]
            .iter()
            .enumerate()
            .filter(|(_, &n)| n != 0)
            .map(move |(i, &n)| (first + i, n))
    }

    /// The non-empty jitter buckets, as (index in HdrHistogram's layout, count).
    fn jitter_buckets(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let n = if self.m.jitter_count == 0 {
            0
        } else {
            JITTER_LEN
        };
        self.counts[..n]
            .iter()
            .enumerate()
            .filter(|(_, &n)| n != 0)
            .map(|(i, &n)| (i, n))
    }

    /// The counts, zeroed for reuse.
    fn into_counts(mut self) -> Box<[u32]> {
        let r = self.rtt_range();
        self.counts[r].fill(0);
        if self.m.jitter_count != 0 {
            self.counts[..JITTER_LEN].fill(0);
        }
        self.counts
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.m.count
    }

    /// A summary for printing and sending (by way of a [`PairHist`]).
    pub fn summary(&self) -> PairSummary {
        PairHist::from(self).summary(self.key)
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

/// One sample's counts increments, waiting in the log: the pair's slot, the RTT's counts index,
/// and the jitter's index with what to add there (0 when there is no jitter).
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    pair: u32,
    rtt: u32,
    jitter: u32,
    jitter_add: u32,
}

/// Samples whose counts increments wait in the log before they are applied, pair by pair.
///
/// With thousands of pairs (a gateway), each pair's counts lie in pages of their own, and a
/// sample's two increments, made at once, cost two cache misses and often two TLB misses:
/// prefetching does not hide them. Instead the recorder takes the sample's exact moments at once
/// and appends its increments to the log, which is written in sequence. When the log reaches
/// [`flush_at`] entries (and before an interval is handed over) it is applied; with more than
/// [`SORT_ABOVE_PAIRS`] pairs it is first sorted by pair, in linear time, so that each pair's
/// increments are applied together and its counts are fetched once per flush instead of once
/// per sample. At most 8,192 entries: 128 KiB of log and as much sorted, which stay in a core's
/// cache.
const LOG: usize = 8192;

/// Up to this many pairs, every pair's counts lines in use stay cached, and the log is applied
/// as it is, without sorting it first.
const SORT_ABOVE_PAIRS: usize = 256;

/// The log's length at which it is flushed, for `pairs` pairs: about four entries a pair, so
/// that each pair's counts are fetched for several increments, and no longer than that, so that
/// with few pairs (whose counts stay cached anyway) the log stays small too.
fn flush_at(pairs: usize) -> usize {
    (pairs * 4).clamp(512, LOG)
}

/// What a worker hands the reporter for one interval: its pairs and its counters.
///
/// Interval objects are recycled between worker and reporter, so their maps and counts arrays
/// keep their memory from one interval to the next. A worker calls [`IntervalStats::settle`]
/// before handing one over.
pub struct IntervalStats {
    index: PairMap<u32>,
    pairs: Vec<PairRecorder>,
    /// Zeroed counts arrays of the pairs of earlier intervals.
    spare: Vec<Box<[u32]>>,
    /// Counts increments not yet applied, at most [`LOG`].
    log: Vec<Counts>,
    /// For a flush: the log sorted by pair ([`LOG`] long), and each pair's place in it.
    sorted: Vec<Counts>,
    starts: Vec<u32>,
    /// The log's length that triggers a flush (see [`flush_at`]).
    flush_at: usize,
    /// The worker's counters for the interval.
    pub counters: Counters,
}

impl Default for IntervalStats {
    fn default() -> IntervalStats {
        IntervalStats {
            index: PairMap::default(),
            pairs: Vec::new(),
            spare: Vec::new(),
            log: Vec::with_capacity(LOG),
            sorted: vec![Counts::default(); LOG],
            starts: Vec::new(),
            flush_at: flush_at(0),
            counters: Counters::default(),
        }
    }
}

impl IntervalStats {
    /// Records a sample for `key`. `hint` is a slot number this key had before (0 for none); the
    /// slot actually used is returned (0 when it does not fit in 16 bits), so the caller can
    /// skip the hash lookup next time. A stale hint is harmless: the slot's key is checked.
    #[inline]
    pub fn record(&mut self, key: PairKey, hint: u16, rtt_ns: u64, jitter_ns: Option<u64>) -> u16 {
        // No hint (0) wraps to an index that no slot has.
        let slot = usize::from(hint).wrapping_sub(1);
        if self.pairs.get(slot).is_some_and(|p| p.key.same(&key)) {
            self.record_slot(slot, rtt_ns, jitter_ns);
            return hint;
        }
        self.record_looked_up(key, rtt_ns, jitter_ns)
    }

    /// Records a sample for the pair in `slot`: a number [`IntervalStats::record`] returned for
    /// it in this interval, minus one. False (nothing recorded) when the interval has no such
    /// slot.
    #[inline]
    pub fn record_slot(&mut self, slot: usize, rtt_ns: u64, jitter_ns: Option<u64>) -> bool {
        let Some(p) = self.pairs.get_mut(slot) else {
            return false;
        };
        if let Some(mut d) = p.record_moments(rtt_ns, jitter_ns) {
            d.pair = slot as u32;
            if self.log.len() >= self.flush_at {
                self.flush();
            }
            self.log.push(d);
        }
        true
    }

    /// Applies the log's counts increments, pair by pair.
    #[inline(never)]
    fn flush(&mut self) {
        let n = self.log.len();
        let in_order: &[Counts] = if self.pairs.len() <= SORT_ABOVE_PAIRS {
            &self.log
        } else {
            // A counting sort by pair: count each pair's entries, turn the counts into places,
            // then place every entry (stable, in linear time).
            let starts = &mut self.starts;
            starts.clear();
            starts.resize(self.pairs.len() + 1, 0);
            for d in &self.log {
                starts[d.pair as usize + 1] += 1;
            }
            for i in 1..starts.len() {
                starts[i] += starts[i - 1];
            }
            for d in &self.log {
                let at = &mut starts[d.pair as usize];
                self.sorted[*at as usize] = *d;
                *at += 1;
            }
            &self.sorted[..n]
        };
        for d in in_order {
            self.pairs[d.pair as usize].add_counts(*d);
        }
        self.log.clear();
    }

    /// Applies every counts increment in the log. Call before handing the interval over: until
    /// then, the counts may lag the moments by a few thousand samples.
    pub fn settle(&mut self) {
        if !self.log.is_empty() {
            self.flush();
        }
    }

    /// True when no counts increment waits in the log.
    fn settled(&self) -> bool {
        self.log.is_empty()
    }

    /// [`IntervalStats::record`] without a (valid) hint.
    #[inline(never)]
    fn record_looked_up(&mut self, key: PairKey, rtt_ns: u64, jitter_ns: Option<u64>) -> u16 {
        let i = match self.index.entry(key) {
            Entry::Occupied(e) => *e.get() as usize,
            Entry::Vacant(e) => {
                let i = self.pairs.len();
                e.insert(i as u32);
                let counts = self.spare.pop().unwrap_or_else(PairRecorder::fresh_counts);
                self.pairs.push(PairRecorder::new(key, counts));
                self.flush_at = flush_at(self.pairs.len());
                // Room for a flush's sort, grown here, where allocating is expected, rather
                // than in a flush on the hot path (`starts` is empty between flushes).
                self.starts.reserve(self.pairs.len() + 1);
                i
            }
        };
        self.pairs[i].record(rtt_ns, jitter_ns);
        u16::try_from(i + 1).unwrap_or(0)
    }

    /// Every pair with samples, with its recorder. The interval must be settled.
    pub fn pairs(&self) -> impl Iterator<Item = (&PairKey, &PairRecorder)> {
        debug_assert!(self.settled(), "IntervalStats::settle first");
        self.pairs.iter().map(|p| (&p.key, p))
    }

    /// Empties the interval, keeping its allocations for the next one.
    pub fn clear(&mut self) {
        // Logged increments belong to pairs being dropped.
        self.log.clear();
        self.flush_at = flush_at(0);
        self.index.clear();
        for p in self.pairs.drain(..) {
            self.spare.push(p.into_counts());
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
        for (k, r) in s.pairs() {
            self.pairs.entry(*k).or_default().merge_recorder(r);
        }
        self.counters.add(&s.counters);
    }

    /// Adds one worker's interval that is of no use afterwards (the offline path): a pair new
    /// here takes the recorder's moments as they are.
    pub fn absorb(&mut self, mut s: IntervalStats) {
        s.settle();
        let IntervalStats {
            index,
            pairs,
            spare,
            counters,
            ..
        } = s;
        drop((index, spare));
        self.counters.add(&counters);
        // Each recorder is freed as soon as it is converted, so that the recorders and the
        // histograms made from them are not all in memory at once.
        for r in pairs {
            match self.pairs.entry(r.key) {
                Entry::Occupied(mut e) => e.get_mut().merge_recorder(&r),
                Entry::Vacant(e) => {
                    e.insert(PairHist::from(&r));
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
        a.settle();
        m.add(&a);
        b.settle();
        m.add(&b);
        let mut m1 = Merged::default();
        one.settle();
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
        s.settle();
        assert_eq!(s.pairs().count(), 0);
        assert_eq!(
            s.record(key(3, 4), 1, 7_000_000, None),
            1,
            "a stale hint is checked"
        );
        s.settle();
        let (_, h) = s.pairs().next().unwrap();
        assert_eq!(h.count(), 1);
        assert_eq!(h.summary().min_ns, 7_000_000);
    }

    /// A deterministic stream of pseudo-random numbers (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Log-uniform over [2^lo, 2^hi).
        fn log_uniform(&mut self, lo: u32, hi: u32) -> u64 {
            let e = lo + (self.next() % u64::from(hi - lo)) as u32;
            (1u64 << e) | (self.next() & ((1u64 << e) - 1))
        }
    }

    /// Values around every power of two and every bucket edge from 0 to past the top, plus the
    /// clamping bounds and the extremes.
    fn edge_values() -> Vec<u64> {
        let mut v = vec![
            0,
            1,
            511,
            512,
            999,
            1_000,
            1_001,
            1_023,
            1_024,
            2_000_000,
            u64::MAX,
        ];
        v.extend([HIST_HIGH_NS - 1, HIST_HIGH_NS, HIST_HIGH_NS + 1, 1 << 63]);
        for e in 0..63 {
            let p = 1u64 << e;
            v.extend([p - 1, p, p + 1, p + p / 2, p * 2 - 1]);
        }
        v
    }

    /// The reference: recording straight into HdrHistogram, as `PairHist` always did.
    fn direct(sigfig: u8, values: &[u64]) -> Histogram<u32> {
        let mut h = Histogram::new_with_bounds(HIST_LOW_NS, HIST_INITIAL_HIGH_NS, sigfig).unwrap();
        h.auto(true);
        for &v in values {
            record_n(&mut h, v, 1);
        }
        h
    }

    fn assert_same_hist(got: &Histogram<u32>, want: &Histogram<u32>, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: len");
        assert_eq!(got.min(), want.min(), "{what}: min");
        assert_eq!(got.max(), want.max(), "{what}: max");
        for q in [
            0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
        ] {
            assert_eq!(
                got.value_at_quantile(q),
                want.value_at_quantile(q),
                "{what}: quantile {q}"
            );
        }
        let buckets = |h: &Histogram<u32>| -> Vec<(u64, u32)> {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        assert_eq!(buckets(got), buckets(want), "{what}: buckets");
    }

    /// Records `rtts` (each with a jitter from `jitters`, cycled, where it has one) through an
    /// interval, then checks that both ways the reporter converts it (`Merged::add` and
    /// `Merged::absorb`) equal recording straight into HdrHistogram, bit for bit.
    fn check_conversion(what: &str, s: &mut IntervalStats, rtts: &[u64], jitters: &[Option<u64>]) {
        let mut reference = PairHist::new();
        let mut hint = 0;
        for (n, &v) in rtts.iter().enumerate() {
            let j = jitters[n % jitters.len()];
            hint = s.record(key(1, 2), hint, v, j);
            reference.record(v, j);
        }
        let jitter_values: Vec<u64> = (0..rtts.len())
            .filter_map(|n| jitters[n % jitters.len()])
            .collect();
        s.settle();
        let (_, r) = s.pairs().next().unwrap();
        let h = PairHist::from(r);
        assert_same_hist(&h.rtt, &direct(RTT_SIGFIG, rtts), &format!("{what}: rtt"));
        assert_same_hist(
            &h.jitter,
            &direct(JITTER_SIGFIG, &jitter_values),
            &format!("{what}: jitter"),
        );
        assert_eq!(r.summary(), reference.summary(key(1, 2)), "{what}: summary");

        // What the reporter did before: merge the worker's `PairHist` into an empty one.
        let mut old = PairHist::new();
        old.merge(&reference);
        let mut m = Merged::default();
        m.add(s);
        assert_eq!(m.summaries(), vec![old.summary(key(1, 2))], "{what}: added");
        let h = &m.pairs[&key(1, 2)];
        assert_same_hist(&h.rtt, &old.rtt, &format!("{what}: added rtt"));
        assert_same_hist(&h.jitter, &old.jitter, &format!("{what}: added jitter"));
    }

    #[test]
    fn layout_is_hdrhistograms() {
        for (layout, sigfig) in [(RTT, RTT_SIGFIG), (JITTER, JITTER_SIGFIG)] {
            let mut h =
                Histogram::<u32>::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, sigfig).unwrap();
            h.auto(true);
            let mut rng = Rng(u64::from(sigfig));
            let mut values = edge_values();
            values.extend((0..20_000).map(|_| rng.log_uniform(0, 40)));
            for v in values {
                let i = layout.index(v);
                assert_eq!(
                    layout.value_for(i),
                    h.lowest_equivalent(v),
                    "sigfig {sigfig}, {v}"
                );
                if v <= HIST_HIGH_NS {
                    // The index is the one HdrHistogram counts `v` at.
                    let mut one = Histogram::<u32>::new_from(&h);
                    one.record(v).unwrap();
                    let at = one.iter_all().position(|x| x.count_at_value() == 1);
                    assert_eq!(at, Some(i), "sigfig {sigfig}, {v}");
                }
            }
        }
        let initial = |sigfig| {
            Histogram::<u32>::new_with_bounds(HIST_LOW_NS, HIST_INITIAL_HIGH_NS, sigfig)
                .unwrap()
                .distinct_values()
        };
        assert_eq!(RTT_INITIAL_LEN, initial(RTT_SIGFIG));
        assert_eq!(JITTER.index(u64::MAX), JITTER_LEN - 1);
        let full =
            Histogram::<u32>::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, RTT_SIGFIG).unwrap();
        assert!(RTT_MAX_INDEX < full.distinct_values());
    }

    #[test]
    fn recorder_converts_to_what_hdrhistogram_records() {
        let mut rng = Rng(7);
        let spread: Vec<u64> = (0..50_000).map(|_| rng.log_uniform(0, 44)).collect();
        let lan: Vec<u64> = (0..10_000)
            .map(|_| 50_000 + rng.next() % 1_500_000)
            .collect();
        let small: Vec<u64> = (0..1_000).map(|_| rng.next() % 1_500).collect();
        let huge: Vec<u64> = (0..1_000).map(|_| rng.log_uniform(36, 64)).collect();
        let one_bucket = vec![123_456_789; 5_000];
        let mut jitters: Vec<Option<u64>> = (0..997)
            .map(|n| (n % 5 != 0).then(|| rng.log_uniform(0, 42)))
            .collect();
        jitters.extend(edge_values().into_iter().map(Some));
        for (what, rtts) in [
            ("spread", spread),
            ("edges", edge_values()),
            ("lan", lan),
            ("small", small),
            ("huge", huge),
            ("one bucket", one_bucket),
        ] {
            check_conversion(what, &mut IntervalStats::default(), &rtts, &jitters);
            check_conversion(
                &format!("{what}, no jitter"),
                &mut IntervalStats::default(),
                &rtts,
                &[None],
            );
        }
    }

    #[test]
    fn recorder_grows_past_its_initial_range_and_clears_for_reuse() {
        let mut s = IntervalStats::default();
        s.record(key(1, 2), 0, 1_500_000, Some(3_000));
        let before = s.pairs[0].counts.len();
        assert_eq!(before, JITTER_LEN + RTT_INITIAL_LEN);
        s.record(key(1, 2), 1, 30_000_000, Some(40_000_000_000));
        s.record(key(1, 2), 1, 500_000_000_000, None);
        assert!(s.pairs[0].counts.len() > before, "grew for 30 ms and 100 s");
        s.settle();
        let (_, r) = s.pairs().next().unwrap();
        let h = PairHist::from(r);
        assert_same_hist(
            &h.rtt,
            &direct(RTT_SIGFIG, &[1_500_000, 30_000_000, 500_000_000_000]),
            "grown",
        );

        // The grown array is reused, zeroed: a second round matches a fresh recording.
        s.clear();
        assert!(s.pairs.is_empty() && s.spare.len() == 1);
        assert!(
            s.spare[0].iter().all(|&n| n == 0),
            "cleared counts are zero"
        );
        let mut rng = Rng(3);
        let rtts: Vec<u64> = (0..5_000).map(|_| rng.log_uniform(8, 40)).collect();
        let jitters: Vec<Option<u64>> = (0..101).map(|_| Some(rng.log_uniform(8, 40))).collect();
        check_conversion("after clear", &mut s, &rtts, &jitters);
        s.clear();
        assert!(
            s.spare[0].iter().all(|&n| n == 0),
            "cleared counts are zero"
        );
    }

    #[test]
    fn absorbing_equals_adding_and_recording_in_one() {
        let mut rng = Rng(11);
        let mut a = IntervalStats::default();
        let mut b = IntervalStats::default();
        let mut one = PairHist::new();
        let mut hints = [0u16; 2];
        for n in 0..20_000 {
            let v = rng.log_uniform(10, 38);
            let j = (n % 3 != 0).then(|| rng.log_uniform(5, 30));
            let k = key(1, 2 + (n % 2) as u8);
            let (s, hint) = if n % 7 < 3 {
                (&mut a, &mut hints[0])
            } else {
                (&mut b, &mut hints[1])
            };
            *hint = s.record(k, *hint, v, j);
            if n % 2 == 0 {
                one.record(v, j);
            }
        }
        let mut added = Merged::default();
        a.settle();
        added.add(&a);
        b.settle();
        added.add(&b);
        let mut absorbed = Merged::default();
        absorbed.absorb(a);
        absorbed.absorb(b);
        let (x, y) = (added.summaries(), absorbed.summaries());
        assert_eq!(x.len(), 2);
        // srtt depends on the order of samples, and the split among workers; the rest must not.
        let strip = |mut p: PairSummary| {
            p.srtt_ns = 0.0;
            p
        };
        assert_eq!(strip(x[0].clone()), strip(one.summary(key(1, 2))));
        assert_eq!(
            x.iter().cloned().map(strip).collect::<Vec<_>>(),
            y.into_iter().map(strip).collect::<Vec<_>>()
        );
        let h = &added.pairs[&key(1, 2)];
        assert_same_hist(&h.rtt, &one.rtt, "merged rtt");
        assert_same_hist(&h.jitter, &one.jitter, "merged jitter");
    }

    #[test]
    fn logged_counts_reach_their_own_pair_when_the_log_is_sorted() {
        // More pairs than are applied unsorted, and several logs' worth of samples, so that
        // the log is sorted by pair and flushed mid-stream as well as when settled.
        let keys: Vec<PairKey> = (0..600)
            .map(|i| key((i / 20) as u8 + 1, (i % 20) as u8 + 100))
            .collect();
        let mut rng = Rng(17);
        let mut s = IntervalStats::default();
        let mut hints = vec![0u16; keys.len()];
        let mut want: HashMap<PairKey, PairHist> = HashMap::new();
        for n in 0..30_000 {
            let i = (rng.next() % keys.len() as u64) as usize;
            let v = rng.log_uniform(10, 30);
            let j = (n % 4 != 0).then(|| rng.log_uniform(5, 25));
            hints[i] = s.record(keys[i], hints[i], v, j);
            want.entry(keys[i]).or_default().record(v, j);
        }
        assert!(s.pairs.len() > SORT_ABOVE_PAIRS);
        assert!(30_000 > 2 * flush_at(s.pairs.len()));
        s.settle();
        let mut m = Merged::default();
        m.add(&s);
        assert_eq!(m.pairs.len(), want.len());
        for (k, h) in &want {
            let got = &m.pairs[k];
            assert_same_hist(&got.rtt, &h.rtt, &format!("{k:?} rtt"));
            assert_same_hist(&got.jitter, &h.jitter, &format!("{k:?} jitter"));
        }
    }

    #[test]
    fn srtt_starts_at_the_first_sample_and_smooths_exactly() {
        let mut rng = Rng(5);
        for n in 1..=40 {
            let mut s = IntervalStats::default();
            let mut reference = PairHist::new();
            let mut hint = 0;
            for k in 0..n {
                // Mostly within the counts (the fast path), now and then beyond them.
                let v = if k % 9 == 8 {
                    rng.log_uniform(40, 64)
                } else {
                    rng.log_uniform(10, 30)
                };
                let j = (k % 3 != 0).then(|| rng.log_uniform(0, 64));
                hint = s.record(key(1, 2), hint, v, j);
                reference.record(v, j);
            }
            s.settle();
            let (_, r) = s.pairs().next().unwrap();
            assert_eq!(r.summary(), reference.summary(key(1, 2)), "{n} samples");
        }
    }

    #[test]
    fn pair_keys_hash_by_value() {
        let mut s = IntervalStats::default();
        for a in 0..=255u8 {
            for b in [1u8, 2, 3] {
                assert_eq!(
                    s.record(key(a, b), 0, 1_000_000, None),
                    s.pairs.len() as u16
                );
            }
        }
        for a in 0..=255u8 {
            for b in [1u8, 2, 3] {
                let i = s.record(key(a, b), 0, 2_000_000, None);
                assert_eq!(s.pairs[usize::from(i) - 1].key, key(a, b));
                assert_eq!(s.pairs[usize::from(i) - 1].count(), 2);
            }
        }
    }
}
