//! The worker's per-pair recorder: what an RTT sample costs to keep.
//!
//! A worker keeps one [`PairRecorder`] per reporting key — the pair (data sender's address,
//! acknowledger's address) — never one per flow, so memory follows the number of host pairs, not
//! connections. Beside the RTT's bucket counts it keeps the exact count, sum, min and max, so the
//! average and extremes are exact and only percentiles carry HdrHistogram's 0.1 % quantisation.
//! Jitter (go-metro's: the mean absolute difference between consecutive samples of one flow) is
//! reported as a mean, so only its exact sum and count are kept.
//!
//! A sample is kept as its HdrHistogram bucket index (3 significant digits, 1 µs to 100 s: the
//! index fits 16 bits), and where it is kept follows how many samples the pair has, not the range
//! of its values:
//! - the first [`INLINE`] samples in the recorder itself, in the cache lines the sample's moments
//!   are written to anyway: a pair that sees a few samples costs its 128-byte recorder and nothing
//!   else;
//! - the next ones in 64-byte chunks of [`CHUNK`] indices from the interval's arena, linked from
//!   the newest back, up to [`SPARSE_MAX`] samples (2 KiB of chunks);
//! - past that, flat `u32` counts laid out as `hdrhistogram` lays out a `Histogram<u32>` of the
//!   same bounds and precision, which grow by whole buckets to the largest RTT the pair has seen
//!   (16 KiB below 2 ms, 32 KiB for a 20 ms pair, 76 KiB at most). Such a pair has thousands of
//!   samples, so this is a few bytes a sample and bounded whatever arrives.
//!
//! A busy (dense) pair's sample is an inlined index computation and a count increment that
//! waits in a log (see [`LOG`]), applied pair by pair; a sparse pair's sample is an out-of-line
//! call that stores one index. The reporter ([`crate::report::merge`]) turns either form into
//! exactly what recording every sample into an HdrHistogram would give.
//!
//! The number of pairs is bounded too: past `max_pairs` pairs in an interval, a new pair's
//! samples go to one overflow recorder, whose samples the reporter reports as the `other` series.
//!
//! With the server-port dimension on (`group_by: [src, dst, port]`), the key also holds the
//! connection's server port, and a host pair keeps at most `max_ports` ports apart in an
//! interval: the samples of its further ports go to its own `other` port. The port lives beside
//! the recorders (a recorder is two cache lines without it), so it costs the per-packet path
//! nothing: a half's slot is cached, and the port is read only when a key is looked up.

use std::hash::{Hash, Hasher};

use hashbrown::HashTable;

use crate::config::DEFAULT_MAX_PAIRS;
use crate::decode::{Addr, Skip};
use crate::flow::prefetch::prefetch;
use crate::flow::TableStats;
use crate::rtt::RttStats;

/// Smallest RTT the histograms tell apart, in ns. Below 1 µs only loopback lives.
pub const HIST_LOW_NS: u64 = 1_000;
/// Largest RTT a histogram counts, in ns; larger values count as it (100 s). The exact maximum
/// is kept apart.
pub const HIST_HIGH_NS: u64 = 100_000_000_000;
/// What a new histogram covers before it first grows: LAN and metro-area RTTs. Counts grow (by
/// whole powers of two) only when a pair first sees a larger RTT.
pub const HIST_INITIAL_HIGH_NS: u64 = 2_000_000;
/// Significant digits: 3 keeps percentiles within 0.1 %.
pub const RTT_SIGFIG: u8 = 3;

/// Samples a recorder keeps inline, before it borrows chunks.
pub const INLINE: usize = 8;
/// Sample indices in one chunk (a 64-byte line with its link).
pub const CHUNK: usize = 30;
/// Samples a pair keeps as indices (inline and in chunks) before its counts go flat.
pub const SPARSE_MAX: u64 = (INLINE + 32 * CHUNK) as u64;

/// A fast hasher for [`PairKey`]s (std's SipHash costs more than the rest of a sample). Keys
/// come from packets, so a flood of crafted addresses could collide; the pair map is bounded by
/// `max_pairs` and rebuilt every interval, which bounds the damage to one interval's CPU.
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

/// A pair's hash, by [`PairHasher`].
#[inline]
fn hash_pair(k: &PairKey) -> u64 {
    let mut h = PairHasher::default();
    k.hash(&mut h);
    h.finish()
}

/// The server port of a reporting key, when series are kept per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServicePort {
    /// The server port of the connections (the SYN's destination port).
    Port(u16),
    /// The host pair's ports beyond `max_ports`, together.
    Other,
}

impl ServicePort {
    /// A distinct word for hashing.
    #[inline]
    fn word(self) -> u64 {
        match self {
            ServicePort::Port(p) => u64::from(p),
            ServicePort::Other => 1 << 16,
        }
    }
}

/// The reporting key: who sent the data, who acknowledged it (whose RTT it is), and, with the
/// server-port dimension on, the connections' server port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PairKey {
    /// The data sender.
    pub src: Addr,
    /// The acknowledging end.
    pub dst: Addr,
    /// The server port; `None` when series are per host pair only.
    pub port: Option<ServicePort>,
}

impl PairKey {
    /// The key of a host pair, without a port.
    pub fn hosts(src: Addr, dst: Addr) -> PairKey {
        PairKey {
            src,
            dst,
            port: None,
        }
    }
}

/// Hashes the two addresses as four words (the derived hash feeds each array's length and its
/// bytes separately), and the port as a fifth when there is one.
impl Hash for PairKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        for a in [&self.src, &self.dst] {
            let w = u128::from_ne_bytes(a.0);
            state.write_u64(w as u64);
            state.write_u64((w >> 64) as u64);
        }
        if let Some(p) = self.port {
            state.write_u64(p.word());
        }
    }
}

/// A 128-bit sum kept at 8-byte alignment, so that [`Moments`] packs into a recorder's cache
/// lines without the padding a `u128` field's 16-byte alignment would add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Sum {
    lo: u64,
    hi: u64,
}

impl Sum {
    /// The sum.
    #[inline]
    pub fn get(self) -> u128 {
        u128::from(self.hi) << 64 | u128::from(self.lo)
    }

    #[inline]
    fn set(&mut self, v: u128) {
        self.lo = v as u64;
        self.hi = (v >> 64) as u64;
    }

    /// Adds `v`.
    #[inline]
    pub fn add(&mut self, v: u128) {
        self.set(self.get() + v);
    }
}

/// The exact statistics of one pair's samples: everything but the percentiles.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Moments {
    /// Sum of the samples, ns.
    pub sum_ns: Sum,
    /// Sum of the jitters, ns.
    pub jitter_sum_ns: Sum,
    /// Number of samples.
    pub count: u64,
    /// Smallest sample, ns (`u64::MAX` when there is none).
    pub min_ns: u64,
    /// Largest sample, ns.
    pub max_ns: u64,
    /// The kernel's smoothed RTT (RFC 6298 §2: srtt ← 7/8 srtt + 1/8 r), over this pair's samples.
    pub srtt_ns: f64,
    /// Number of samples that had a jitter (a previous sample of their flow).
    pub jitter_count: u64,
}

impl Moments {
    /// No samples.
    pub const EMPTY: Moments = Moments {
        sum_ns: Sum { lo: 0, hi: 0 },
        jitter_sum_ns: Sum { lo: 0, hi: 0 },
        count: 0,
        min_ns: u64::MAX,
        max_ns: 0,
        srtt_ns: 0.0,
        jitter_count: 0,
    };

    /// Adds one sample, and the jitter it makes with the previous sample of its flow.
    pub fn record(&mut self, rtt_ns: u64, jitter_ns: Option<u64>) {
        let r = rtt_ns as f64;
        if self.count == 0 {
            // srtt starts at the first sample: smoothing it then adds exactly 0.
            self.srtt_ns = r;
        }
        self.add(r, rtt_ns, jitter_ns);
    }

    /// [`Moments::record`] for a sample that is not the first, with its RTT already as `r`.
    #[inline(always)]
    fn add(&mut self, r: f64, rtt_ns: u64, jitter_ns: Option<u64>) {
        self.srtt_ns += (r - self.srtt_ns) / 8.0;
        self.count += 1;
        self.sum_ns.add(u128::from(rtt_ns));
        self.min_ns = self.min_ns.min(rtt_ns);
        self.max_ns = self.max_ns.max(rtt_ns);
        if let Some(j) = jitter_ns {
            self.jitter_count += 1;
            self.jitter_sum_ns.add(u128::from(j));
        }
    }

    /// Adds the samples of other flows of the same pair (another worker's, say).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        // Smoothed averages of disjoint flows combine by weight.
        let total = (self.count + other.count) as f64;
        self.srtt_ns =
            (self.srtt_ns * self.count as f64 + other.srtt_ns * other.count as f64) / total;
        self.count += other.count;
        self.sum_ns.add(other.sum_ns.get());
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.jitter_count += other.jitter_count;
        self.jitter_sum_ns.add(other.jitter_sum_ns.get());
    }
}

/// HdrHistogram's bucket layout (as `hdrhistogram` 7 computes it) for a lowest discernible value
/// and a number of significant figures. A flat counts array indexed this way holds exactly what
/// a `Histogram` with those parameters would, so it converts bucket by bucket.
#[derive(Clone, Copy)]
pub struct Layout {
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
    pub const fn index(&self, v: u64) -> usize {
        let bucket = self.leading_zero_count_base - (v | self.sub_bucket_mask).leading_zeros();
        let sub_bucket = (v >> (bucket + self.unit_magnitude)) as usize;
        // HdrHistogram's ((bucket + 1) << half_magnitude) + sub_bucket - half_count.
        ((bucket as usize) << self.sub_bucket_half_count_magnitude) + sub_bucket
    }

    /// The lowest value counted at index `i` (HdrHistogram's `value_for`).
    pub const fn value_for(&self, i: usize) -> u64 {
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
    pub const fn covering(&self, i: usize) -> usize {
        ((i >> self.sub_bucket_half_count_magnitude) + 1) << self.sub_bucket_half_count_magnitude
    }
}

/// The RTT histograms' layout.
pub const RTT: Layout = Layout::new(HIST_LOW_NS, RTT_SIGFIG);
/// The RTT counts' last index: [`HIST_HIGH_NS`]'s. Larger RTTs count there.
pub const RTT_MAX_INDEX: usize = RTT.index(HIST_HIGH_NS);
// A sample's index is kept in 16 bits.
const _: () = assert!(RTT_MAX_INDEX <= u16::MAX as usize);
// The fast path converts RTTs within the counts to f64 as i64s.
const _: () = assert!(RTT.value_for(RTT_MAX_INDEX + 1) <= i64::MAX as u64);
/// Samples of a dense pair that take the fast path: up to where a count could overflow, since
/// none can exceed the samples (2^31 - 1 compares in one instruction).
const FAST_SAMPLES: u64 = (1 << 31) - 1;
/// RTT counts flat storage starts with (what `Histogram::new_with_bounds` allocates for
/// [`HIST_INITIAL_HIGH_NS`]).
const RTT_INITIAL_LEN: usize = RTT.covering(RTT.index(HIST_INITIAL_HIGH_NS));

/// The bucket index a sample of `rtt_ns` is kept as: that of the value clamped to the
/// histograms' range, as the reporter records it.
#[inline]
pub fn rtt_index(rtt_ns: u64) -> usize {
    RTT.index(rtt_ns.clamp(HIST_LOW_NS, HIST_HIGH_NS))
}

/// Where a recorder keeps its samples' bucket indices (see the module doc).
#[derive(Clone)]
enum Store {
    /// The first `min(count, INLINE)` samples inline; the rest in chunks, the newest of which is
    /// `tail` (0: none).
    Sparse { inline: [u16; INLINE], tail: u32 },
    /// Flat counts in HdrHistogram's layout, covering at least the largest sample's bucket.
    Dense(Box<[u32]>),
}

/// What a worker records for one pair: the key, the exact moments and the samples, all in two
/// adjacent cache lines but for chunks and flat counts.
#[derive(Clone)]
#[repr(C, align(64))]
pub struct PairRecorder {
    /// The key's hosts; its port, if any, is in [`IntervalStats`]'s `ports`.
    src: Addr,
    dst: Addr,
    m: Moments,
    store: Store,
}

// Two cache lines: the key, the moments and the inline samples or the counts' pointer.
const _: () = assert!(std::mem::size_of::<PairRecorder>() == 128);

/// Up to [`CHUNK`] sample indices of a sparse pair, and the chunk before them.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk {
    prev: u32,
    samples: [u16; CHUNK],
}

const _: () = assert!(std::mem::size_of::<Chunk>() == 64);

impl PairRecorder {
    fn new(key: PairKey) -> PairRecorder {
        PairRecorder {
            src: key.src,
            dst: key.dst,
            m: Moments::EMPTY,
            store: Store::Sparse {
                inline: [0; INLINE],
                tail: 0,
            },
        }
    }

    /// True when the recorder's hosts are the key's.
    #[inline]
    fn has_hosts(&self, key: &PairKey) -> bool {
        self.src == key.src && self.dst == key.dst
    }

    /// The exact moments of the pair's samples.
    pub fn moments(&self) -> &Moments {
        &self.m
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.m.count
    }

    /// True when the samples are flat counts rather than indices.
    pub fn is_dense(&self) -> bool {
        matches!(self.store, Store::Dense(_))
    }

    /// Where the sample goes when it can take the fast path: the dense pair's counts index to
    /// log, or the sparse pair's place for its index (stored here). `None` for a pair's first
    /// sample (srtt starts at it), an RTT below 512 ns or beyond the counts or the range (the
    /// slow path clamps and grows), a sample that could overflow a count, and a sparse pair's
    /// sample that needs a new chunk or goes flat.
    #[inline(always)]
    fn fast_place(&mut self, i: usize, chunks: &mut [Chunk]) -> Option<Place> {
        let n = self.m.count;
        match &mut self.store {
            // No count exceeds the samples, so below FAST_SAMPLES none can overflow.
            Store::Dense(counts) => (i < counts.len() && n < FAST_SAMPLES).then_some(Place::Log),
            Store::Sparse { inline, tail } => {
                // Index 0 (below 512 ns) is stored as the range's lowest's, by the slow path.
                if i.wrapping_sub(1) >= RTT_MAX_INDEX {
                    return None;
                }
                if n.wrapping_sub(1) < INLINE as u64 - 1 {
                    inline[n as usize] = i as u16;
                    return Some(Place::Stored);
                }
                let k = (n as usize).wrapping_sub(INLINE) % CHUNK;
                if n >= INLINE as u64 && n < SPARSE_MAX && k != 0 {
                    chunks[*tail as usize].samples[k] = i as u16;
                    return Some(Place::Stored);
                }
                None
            }
        }
    }

    /// The non-empty buckets of a dense pair's counts, as (index in HdrHistogram's layout, count).
    fn dense_buckets(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let (counts, r) = match &self.store {
            Store::Dense(c) if self.m.count > 0 => {
                let lo = RTT.index(self.m.min_ns).min(RTT_MAX_INDEX);
                let hi = rtt_index(self.m.max_ns);
                (&c[..], lo..hi + 1)
            }
            _ => (&[][..], 0..0),
        };
        let first = r.start;
        counts[r]
            .iter()
            .enumerate()
            .filter(|(_, &n)| n != 0)
            .map(move |(i, &n)| (first + i, n))
    }
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
    /// Frames whose TCP segment was inside a tunnel or under an MPLS label stack (counted in
    /// `tcp` too).
    pub encapsulated: u64,
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
    /// Samples reported in the `other` series because their pair was beyond `max_pairs` (set
    /// by the reporter's merge).
    pub overflow_samples: u64,
    /// With the server-port dimension on: samples reported under a host pair's `other` port,
    /// because the pair had more than `max_ports` ports (set by the reporter's merge).
    pub port_overflow_samples: u64,
}

impl Counters {
    /// Adds another worker's counters.
    pub fn add(&mut self, o: &Counters) {
        self.packets += o.packets;
        self.tcp += o.tcp;
        self.encapsulated += o.encapsulated;
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
        self.overflow_samples += o.overflow_samples;
        self.port_overflow_samples += o.port_overflow_samples;
    }

    /// Frames skipped for one reason.
    pub fn skipped(&self, why: Skip) -> u64 {
        self.skipped[why.index()]
    }
}

/// One dense sample's count increment, waiting in the log: the pair's slot and the RTT's counts
/// index.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    pair: u32,
    rtt: u32,
}

/// Dense samples whose count increments wait in the log before they are applied, pair by pair.
///
/// With thousands of busy pairs (a gateway), each pair's counts lie in pages of their own, and
/// an increment made at once costs a cache miss and often a TLB miss: prefetching does not hide
/// them. Instead the recorder takes the sample's exact moments at once and appends its
/// increment to the log, which is written in sequence. When the log reaches [`flush_at`] entries
/// (and before an interval is handed over) it is applied; with more than [`SORT_ABOVE_PAIRS`]
/// pairs it is first sorted by pair, in linear time, so that each pair's increments are applied
/// together and its counts are fetched once per flush instead of once per sample. At most 8,192
/// entries: 64 KiB of log and as much sorted, which stay in a core's cache.
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

/// Above this many pairs an interval's recorders (128 bytes each) outgrow a core's cache, and
/// a sample recorded at once waits on a cache miss for its recorder, one miss after another.
/// Such an interval keeps samples pending instead, and records them [`PENDING`] at a time with
/// each recorder prefetched a few samples ahead, so that the misses overlap. Below it, samples
/// are recorded at once: their recorders are in cache, and the detour would only add work.
const DEFER_ABOVE_PAIRS: usize = 8_192;
/// Samples kept pending at most: a few kilobytes, so that they stay in the core's first cache.
const PENDING: usize = 256;
/// How many samples ahead a recorder is prefetched: enough misses in flight to overlap them,
/// few enough that the lines are still cached when written.
const PREFETCH_AHEAD: usize = 8;

/// A sample waiting to be recorded (see [`DEFER_ABOVE_PAIRS`]).
#[derive(Debug, Clone, Copy)]
struct Pending {
    rtt_ns: u64,
    jitter_ns: Option<u64>,
    slot: u32,
}

/// Where a fast-path sample's bucket goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Into the log, to be counted in the pair's flat counts.
    Log,
    /// Already stored, inline or in the pair's newest chunk.
    Stored,
}

/// Where [`IntervalStats::record`] put a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// In the pair's own recorder, whose slot is given: a number below `max_pairs`, the same
    /// for the pair's later samples of this interval.
    Slot(u32),
    /// In the overflow recorder: the interval already holds `max_pairs` pairs.
    Overflow,
}

/// What a worker hands the reporter for one interval: its pairs and its counters.
///
/// Interval objects are recycled between worker and reporter, so their maps, arenas and counts
/// arrays keep their memory from one interval to the next. A worker calls
/// [`IntervalStats::settle`] before handing one over.
pub struct IntervalStats {
    /// Each pair's slot, found by the pair's hash and checked against the recorder's key: four
    /// bytes a pair, where a map holding the key too would take forty.
    index: HashTable<u32>,
    pairs: Recorders,
    /// The chunks of sparse pairs; chunk 0 is never used, so that 0 links to nothing.
    chunks: Vec<Chunk>,
    /// The first of the chunks freed when their pair's counts went flat (0: none), linked
    /// through `prev`.
    free_chunks: u32,
    /// Zeroed counts arrays of the dense pairs of earlier intervals, by their length.
    spare: Spare,
    /// Most pairs kept apart; the samples of any more go to `overflow`.
    max_pairs: usize,
    /// With the server-port dimension on, most ports a host pair keeps apart; `None`: off.
    max_ports: Option<usize>,
    /// Each pair's port, by slot (empty when the dimension is off).
    ports: Vec<ServicePort>,
    /// With the dimension on, per host pair: the slot of one of its recorders (which holds the
    /// pair's hosts) and the number of ports it keeps apart.
    hosts: HashTable<(u32, u32)>,
    /// The samples of pairs beyond `max_pairs`.
    overflow: PairRecorder,
    /// Samples not yet recorded, at most [`PENDING`] (see [`DEFER_ABOVE_PAIRS`]).
    pending: Vec<Pending>,
    /// Count increments not yet applied, at most [`LOG`].
    log: Vec<Counts>,
    /// For a flush: the log sorted by pair ([`LOG`] long), and each pair's place in it.
    sorted: Vec<Counts>,
    starts: Vec<u32>,
    /// The log's length that triggers a flush (see [`flush_at`]).
    flush_at: usize,
    /// The worker's counters for the interval.
    pub counters: Counters,
}

/// The slot number of the overflow recorder, which no pair has.
pub const OVERFLOW_SLOT: u32 = u32::MAX;

impl Default for IntervalStats {
    fn default() -> IntervalStats {
        IntervalStats::new(DEFAULT_MAX_PAIRS)
    }
}

impl IntervalStats {
    /// An empty interval that keeps at most `max_pairs` pairs apart (at least 1).
    pub fn new(max_pairs: usize) -> IntervalStats {
        IntervalStats {
            index: HashTable::new(),
            pairs: Recorders::default(),
            chunks: vec![Chunk {
                prev: 0,
                samples: [0; CHUNK],
            }],
            free_chunks: 0,
            spare: Spare::default(),
            max_pairs: max_pairs.clamp(1, OVERFLOW_SLOT as usize),
            max_ports: None,
            ports: Vec::new(),
            hosts: HashTable::new(),
            overflow: PairRecorder::new(PairKey::default()),
            pending: Vec::with_capacity(PENDING),
            log: Vec::with_capacity(LOG),
            sorted: vec![Counts::default(); LOG],
            starts: Vec::new(),
            flush_at: flush_at(0),
            counters: Counters::default(),
        }
    }

    /// Changes the bound on pairs, for an interval that is empty (cleared).
    pub fn set_max_pairs(&mut self, max_pairs: usize) {
        debug_assert!(self.pairs.is_empty());
        self.max_pairs = max_pairs.clamp(1, OVERFLOW_SLOT as usize);
    }

    /// Keeps keys per server port, at most `max_ports` ports a host pair (`None`: keys are
    /// host pairs only, and carry no port), for an interval that is empty (cleared).
    pub fn set_max_ports(&mut self, max_ports: Option<usize>) {
        debug_assert!(self.pairs.is_empty());
        self.max_ports = max_ports.map(|n| n.max(1));
    }

    /// Most ports a host pair keeps apart, when keys carry a server port.
    pub fn max_ports(&self) -> Option<usize> {
        self.max_ports
    }

    /// The slot of `key`, hashed to `hash`, if the interval has it.
    #[inline]
    fn find(&self, hash: u64, key: &PairKey) -> Option<u32> {
        let (pairs, ports) = (&self.pairs, &self.ports);
        self.index
            .find(hash, |&s| {
                pairs[s].has_hosts(key) && ports.get(s as usize).copied() == key.port
            })
            .copied()
    }

    /// True when the host pair of `key` keeps `max_ports` ports apart already.
    fn ports_full(&self, key: &PairKey) -> bool {
        let Some(max) = self.max_ports else {
            return false;
        };
        let pairs = &self.pairs;
        self.hosts
            .find(hash_pair(&PairKey::hosts(key.src, key.dst)), |&(s, _)| {
                pairs[s].has_hosts(key)
            })
            .is_some_and(|&(_, n)| n as usize >= max)
    }

    /// Counts a new port of the host pair of `key`, whose recorder is in `slot`.
    fn count_port(&mut self, key: &PairKey, slot: u32) {
        let pairs = &self.pairs;
        let hash = hash_pair(&PairKey::hosts(key.src, key.dst));
        match self.hosts.find_mut(hash, |&(s, _)| pairs[s].has_hosts(key)) {
            Some((_, n)) => *n += 1,
            None => {
                self.hosts.insert_unique(hash, (slot, 1), |&(s, _)| {
                    let r = &pairs[s];
                    hash_pair(&PairKey::hosts(r.src, r.dst))
                });
            }
        }
    }

    /// Records a sample for `key`, and says where it went, so that the caller can record the
    /// pair's next samples of this interval with [`IntervalStats::record_slot`] and skip the
    /// lookup. A new port of a host pair that keeps `max_ports` ports already goes to the
    /// pair's `other` port.
    #[inline(never)]
    pub fn record(&mut self, mut key: PairKey, rtt_ns: u64, jitter_ns: Option<u64>) -> Recorded {
        let mut hash = hash_pair(&key);
        let mut found = self.find(hash, &key);
        if found.is_none()
            && matches!(key.port, Some(ServicePort::Port(_)))
            && self.ports_full(&key)
        {
            key.port = Some(ServicePort::Other);
            hash = hash_pair(&key);
            found = self.find(hash, &key);
        }
        let slot = match found {
            Some(slot) => slot,
            None if self.pairs.len() >= self.max_pairs => {
                self.record_slot(OVERFLOW_SLOT, rtt_ns, jitter_ns);
                return Recorded::Overflow;
            }
            None => {
                let (pairs, ports) = (&self.pairs, &self.ports);
                let i = pairs.len() as u32;
                self.index.insert_unique(hash, i, |&s| {
                    let r = &pairs[s];
                    hash_pair(&PairKey {
                        src: r.src,
                        dst: r.dst,
                        port: ports.get(s as usize).copied(),
                    })
                });
                self.pairs.push(PairRecorder::new(key));
                if let Some(port) = key.port {
                    self.ports.push(port);
                    if port != ServicePort::Other {
                        self.count_port(&key, i);
                    }
                }
                self.flush_at = flush_at(self.pairs.len());
                // Room for a flush's sort, grown here, where allocating is expected, rather
                // than in a flush on the hot path (`starts` is empty between flushes).
                self.starts.reserve(self.pairs.len() + 1);
                i
            }
        };
        self.record_slot(slot, rtt_ns, jitter_ns);
        Recorded::Slot(slot)
    }

    /// Records a sample for the pair in `slot` (a number [`IntervalStats::record`] returned in
    /// this interval, or [`OVERFLOW_SLOT`]). False (nothing recorded) when the interval has no
    /// such slot.
    #[inline]
    pub fn record_slot(&mut self, slot: u32, rtt_ns: u64, jitter_ns: Option<u64>) -> bool {
        if self.pairs.len() > DEFER_ABOVE_PAIRS && (slot as usize) < self.pairs.len() {
            if self.pending.len() >= PENDING {
                self.record_pending();
            }
            self.pending.push(Pending {
                rtt_ns,
                jitter_ns,
                slot,
            });
            return true;
        }
        self.record_now(slot, rtt_ns, jitter_ns)
    }

    /// Records the pending samples, in the order they came, each pair's recorder prefetched
    /// [`PREFETCH_AHEAD`] samples before it is written.
    #[inline(never)]
    fn record_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending.iter().take(PREFETCH_AHEAD) {
            self.pairs.prefetch(p.slot);
        }
        for (i, p) in pending.iter().enumerate() {
            if let Some(next) = pending.get(i + PREFETCH_AHEAD) {
                self.pairs.prefetch(next.slot);
            }
            self.record_now(p.slot, p.rtt_ns, p.jitter_ns);
        }
        self.pending = pending;
        self.pending.clear();
    }

    /// [`IntervalStats::record_slot`], at once.
    #[inline(always)]
    fn record_now(&mut self, slot: u32, rtt_ns: u64, jitter_ns: Option<u64>) -> bool {
        let Some(p) = self.pairs.get_mut(slot) else {
            if slot != OVERFLOW_SLOT {
                return false;
            }
            self.record_slowly(slot, rtt_ns, jitter_ns);
            return true;
        };
        // Unclamped: values below the range count at index 0 (as the range's lowest, when
        // converted), values beyond it fall past the counts (the slow path clamps them).
        let i = RTT.index(rtt_ns);
        let Some(place) = p.fast_place(i, &mut self.chunks) else {
            self.record_slowly(slot, rtt_ns, jitter_ns);
            return true;
        };
        // The fast path's RTT is within the counts' range, below 2^63 ns: a non-negative i64,
        // which converts to f64 in one instruction (a u64 takes six). Not the first sample, so
        // srtt smooths.
        p.m.add(rtt_ns as i64 as f64, rtt_ns, jitter_ns);
        if place == Place::Log {
            if self.log.len() >= self.flush_at {
                self.flush();
            }
            self.log.push(Counts {
                pair: slot,
                rtt: i as u32,
            });
        }
        true
    }

    /// [`IntervalStats::record_slot`] for a sparse pair's sample, a dense pair's sample beyond
    /// its counts (which grow by whole buckets, as HdrHistogram's do, up to the range's end,
    /// where they clamp), and past [`FAST_SAMPLES`] (where counts saturate, as HdrHistogram's
    /// do).
    #[inline(never)]
    fn record_slowly(&mut self, slot: u32, rtt_ns: u64, jitter_ns: Option<u64>) {
        let i = rtt_index(rtt_ns);
        let p = if slot == OVERFLOW_SLOT {
            &mut self.overflow
        } else {
            &mut self.pairs[slot]
        };
        let n = p.m.count;
        if n >= SPARSE_MAX && !p.is_dense() {
            let counts = self.spare.take(rtt_index(p.m.max_ns));
            densify(p, &mut self.chunks, &mut self.free_chunks, counts);
        }
        match &mut p.store {
            Store::Sparse { inline, tail } => {
                let n = n as usize;
                if n < INLINE {
                    inline[n] = i as u16;
                } else {
                    let k = (n - INLINE) % CHUNK;
                    if k == 0 {
                        *tail = new_chunk(&mut self.chunks, &mut self.free_chunks, *tail);
                    }
                    self.chunks[*tail as usize].samples[k] = i as u16;
                }
            }
            Store::Dense(counts) => {
                if i >= counts.len() {
                    grow(counts, i);
                }
                let c = &mut counts[i];
                *c = c.saturating_add(1);
            }
        }
        p.m.record(rtt_ns, jitter_ns);
    }

    /// Applies the log's count increments, pair by pair.
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
            // Only a dense pair's samples are logged, and counts never shrink in an interval.
            if let Store::Dense(c) = &mut self.pairs[d.pair].store {
                c[d.rtt as usize] += 1;
            }
        }
        self.log.clear();
    }

    /// Applies every count increment in the log. Call before handing the interval over: until
    /// then, the counts may lag the moments by a few thousand samples.
    pub fn settle(&mut self) {
        if !self.pending.is_empty() {
            self.record_pending();
        }
        if !self.log.is_empty() {
            self.flush();
        }
    }

    /// True when no count increment waits in the log.
    fn settled(&self) -> bool {
        self.pending.is_empty() && self.log.is_empty()
    }

    /// Number of pairs kept apart (the overflow recorder not included).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when no pair has samples.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.overflow.m.count == 0
    }

    /// Every pair with samples. The interval must be settled.
    pub fn pairs(&self) -> impl Iterator<Item = PairSamples<'_>> {
        debug_assert!(self.settled(), "IntervalStats::settle first");
        (0..self.pairs.len() as u32).map(move |slot| self.pair(slot))
    }

    /// The pair in `slot`. The interval must be settled.
    pub fn pair(&self, slot: u32) -> PairSamples<'_> {
        debug_assert!(self.settled(), "IntervalStats::settle first");
        PairSamples {
            r: &self.pairs[slot],
            port: self.ports.get(slot as usize).copied(),
            s: self,
        }
    }

    /// The samples of pairs beyond `max_pairs`, if any came.
    pub fn overflow(&self) -> Option<PairSamples<'_>> {
        (self.overflow.m.count > 0).then_some(PairSamples {
            r: &self.overflow,
            port: None,
            s: self,
        })
    }

    /// The heap memory the interval holds, in bytes (capacity, not use), for bounds and tests.
    pub fn heap_bytes(&self) -> usize {
        let dense = |r: &PairRecorder| match &r.store {
            Store::Dense(c) => c.len() * 4,
            Store::Sparse { .. } => 0,
        };
        // hashbrown: one control byte per bucket, buckets a power of two at up to 7/8 load.
        let index_buckets = if self.index.capacity() == 0 {
            0
        } else {
            (self.index.capacity() * 8 / 7).next_power_of_two()
        };
        let hosts_buckets = if self.hosts.capacity() == 0 {
            0
        } else {
            (self.hosts.capacity() * 8 / 7).next_power_of_two()
        };
        index_buckets * (std::mem::size_of::<u32>() + 1)
            + hosts_buckets * (std::mem::size_of::<(u32, u32)>() + 1)
            + self.ports.capacity() * std::mem::size_of::<ServicePort>()
            + self.pairs.capacity() * std::mem::size_of::<PairRecorder>()
            + self.pairs.segments.capacity() * std::mem::size_of::<Vec<PairRecorder>>()
            + self.pairs.iter().map(dense).sum::<usize>()
            + dense(&self.overflow)
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.spare.heap_bytes()
            + (self.log.capacity() + self.sorted.capacity()) * std::mem::size_of::<Counts>()
            + self.pending.capacity() * std::mem::size_of::<Pending>()
            + self.starts.capacity() * 4
    }

    /// Empties the interval, keeping its allocations for the next one.
    pub fn clear(&mut self) {
        // Pending samples and logged increments belong to pairs being dropped.
        self.pending.clear();
        self.log.clear();
        self.flush_at = flush_at(0);
        self.index.clear();
        self.hosts.clear();
        self.ports.clear();
        for segment in &mut self.pairs.segments {
            for p in segment.drain(..) {
                if let Some(c) = zeroed_counts(p) {
                    self.spare.push(c);
                }
            }
        }
        self.pairs.len = 0;
        let overflow = std::mem::replace(&mut self.overflow, PairRecorder::new(PairKey::default()));
        if let Some(c) = zeroed_counts(overflow) {
            self.spare.push(c);
        }
        self.chunks.truncate(1);
        self.free_chunks = 0;
        self.counters = Counters::default();
    }
}

/// log2 of the recorders in a [`Recorders`] segment: 4,096 of 128 bytes, 512 KiB.
const SEGMENT_BITS: u32 = 12;
const SEGMENT: usize = 1 << SEGMENT_BITS;

/// An interval's pair recorders, by slot, in segments of [`SEGMENT`] that never move once
/// allocated: a new pair never copies the others (a growing array would copy every recorder it
/// holds each time it grew, into freshly faulted pages, and at 200,000 pairs that copying and
/// faulting cost more than recording the samples). Only the first segment grows (by doubling,
/// up to [`SEGMENT`]), so a few pairs take a few recorders' memory; past it, at most one
/// segment's tail is unused.
#[derive(Default)]
struct Recorders {
    /// Segments of [`SEGMENT`] recorders, all full but the last in use; the ones past it are
    /// empty, kept from an earlier interval.
    segments: Vec<Vec<PairRecorder>>,
    /// Recorders in all segments.
    len: usize,
}

impl Recorders {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The recorder in `slot`, if there is one.
    #[inline(always)]
    fn get_mut(&mut self, slot: u32) -> Option<&mut PairRecorder> {
        self.segments
            .get_mut((slot >> SEGMENT_BITS) as usize)?
            .get_mut(slot as usize & (SEGMENT - 1))
    }

    /// Adds a recorder in the next slot ([`Recorders::len`] before the call).
    fn push(&mut self, r: PairRecorder) {
        let k = self.len >> SEGMENT_BITS;
        if k == self.segments.len() {
            // Kept from an earlier interval, or new: the first grows as it fills, the others
            // are allocated whole (their pages are touched only as they fill).
            let capacity = if k == 0 { 0 } else { SEGMENT };
            self.segments.push(Vec::with_capacity(capacity));
        }
        self.segments[k].push(r);
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &PairRecorder> {
        self.segments.iter().flatten()
    }

    /// Starts loading the recorder in `slot` (both its lines) into the cache, if there is one.
    #[inline(always)]
    fn prefetch(&self, slot: u32) {
        if let Some(segment) = self.segments.get((slot >> SEGMENT_BITS) as usize) {
            let p: *const u8 = segment
                .as_ptr()
                .wrapping_add(slot as usize & (SEGMENT - 1))
                .cast();
            prefetch(p);
            prefetch(p.wrapping_add(64));
        }
    }

    /// Recorders' room allocated, used or not.
    fn capacity(&self) -> usize {
        self.segments.iter().map(Vec::capacity).sum()
    }
}

impl std::ops::Index<u32> for Recorders {
    type Output = PairRecorder;

    #[inline(always)]
    fn index(&self, slot: u32) -> &PairRecorder {
        &self.segments[(slot >> SEGMENT_BITS) as usize][slot as usize & (SEGMENT - 1)]
    }
}

impl std::ops::IndexMut<u32> for Recorders {
    #[inline(always)]
    fn index_mut(&mut self, slot: u32) -> &mut PairRecorder {
        &mut self.segments[(slot >> SEGMENT_BITS) as usize][slot as usize & (SEGMENT - 1)]
    }
}

/// Zeroed counts arrays kept for reuse, by length in whole buckets, so that a pair whose samples
/// go flat gets one that already covers its largest sample: in a steady state, recycled
/// intervals then allocate nothing.
#[derive(Default)]
struct Spare {
    by_buckets: Vec<Vec<Box<[u32]>>>,
}

impl Spare {
    /// Length class of a counts array: its whole buckets.
    fn class(len: usize) -> usize {
        len >> RTT.covering(0).trailing_zeros()
    }

    fn push(&mut self, c: Box<[u32]>) {
        let k = Spare::class(c.len());
        if self.by_buckets.len() <= k {
            self.by_buckets.resize_with(k + 1, Vec::new);
        }
        self.by_buckets[k].push(c);
    }

    /// Zeroed counts that cover index `i`: the shortest kept one that does, else the longest
    /// kept one grown, else new ones.
    fn take(&mut self, i: usize) -> Box<[u32]> {
        let need = Spare::class(RTT.covering(i).max(RTT_INITIAL_LEN));
        let n = self.by_buckets.len();
        let found = (need.min(n)..n)
            .find(|&k| !self.by_buckets[k].is_empty())
            .or_else(|| {
                (0..need.min(n))
                    .rev()
                    .find(|&k| !self.by_buckets[k].is_empty())
            });
        let mut c = match found {
            Some(k) => self.by_buckets[k].pop().unwrap_or_default(),
            None => vec![0; RTT_INITIAL_LEN].into_boxed_slice(),
        };
        if i >= c.len() {
            grow(&mut c, i);
        }
        c
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_buckets.iter().map(Vec::len).sum()
    }

    fn heap_bytes(&self) -> usize {
        self.by_buckets
            .iter()
            .map(|v| {
                v.capacity() * std::mem::size_of::<Box<[u32]>>()
                    + v.iter().map(|c| c.len() * 4).sum::<usize>()
            })
            .sum()
    }
}

/// Grows `counts` to cover index `i`, in whole buckets as HdrHistogram does.
fn grow(counts: &mut Box<[u32]>, i: usize) {
    let len = RTT.covering(i).min(RTT_MAX_INDEX + 1);
    let mut v = std::mem::take(counts).into_vec();
    v.reserve_exact(len - v.len());
    v.resize(len, 0);
    *counts = v.into_boxed_slice();
}

/// A recorder's counts, zeroed for reuse, if it has any.
fn zeroed_counts(p: PairRecorder) -> Option<Box<[u32]>> {
    let lo_hi = (p.m.count > 0).then(|| (RTT.index(p.m.min_ns), rtt_index(p.m.max_ns)));
    match p.store {
        Store::Dense(mut c) => {
            if let Some((lo, hi)) = lo_hi {
                c[lo.min(hi)..=hi].fill(0);
            }
            Some(c)
        }
        Store::Sparse { .. } => None,
    }
}

/// A chunk linked after `prev`, from the free list or the arena's end.
fn new_chunk(chunks: &mut Vec<Chunk>, free: &mut u32, prev: u32) -> u32 {
    let c = if *free != 0 {
        let c = *free;
        *free = chunks[c as usize].prev;
        c
    } else {
        chunks.push(Chunk {
            prev: 0,
            samples: [0; CHUNK],
        });
        chunks.len() as u32 - 1
    };
    chunks[c as usize].prev = prev;
    c
}

/// Moves a sparse pair's samples into `counts` (zeroed) and frees its chunks.
fn densify(p: &mut PairRecorder, chunks: &mut [Chunk], free: &mut u32, mut counts: Box<[u32]>) {
    let hi = rtt_index(p.m.max_ns);
    if hi >= counts.len() {
        grow(&mut counts, hi);
    }
    {
        let view = Sparse {
            r: &*p,
            chunks: &*chunks,
        };
        view.for_each(|i| counts[i] += 1);
    }
    if let Store::Sparse { tail, .. } = p.store {
        // The chunks go to the free list, oldest last.
        let mut c = tail;
        while c != 0 {
            let prev = chunks[c as usize].prev;
            chunks[c as usize].prev = *free;
            *free = c;
            c = prev;
        }
    }
    p.store = Store::Dense(counts);
}

/// A sparse recorder's sample indices, with the chunks they continue in.
struct Sparse<'a> {
    r: &'a PairRecorder,
    chunks: &'a [Chunk],
}

impl Sparse<'_> {
    /// Calls `f` with every sample's bucket index: inline ones in order, then the chunks' from
    /// the newest chunk back.
    fn for_each(&self, mut f: impl FnMut(usize)) {
        let Store::Sparse { inline, tail } = &self.r.store else {
            return;
        };
        let n = self.r.m.count as usize;
        for &i in &inline[..n.min(INLINE)] {
            f(usize::from(i));
        }
        if n <= INLINE {
            return;
        }
        // The newest chunk holds the remainder; every older one is full.
        let mut used = (n - INLINE - 1) % CHUNK + 1;
        let mut c = *tail;
        while c != 0 {
            let chunk = &self.chunks[c as usize];
            for &i in &chunk.samples[..used] {
                f(usize::from(i));
            }
            used = CHUNK;
            c = chunk.prev;
        }
    }
}

/// One pair of a settled interval, as the reporter reads it.
#[derive(Clone, Copy)]
pub struct PairSamples<'a> {
    r: &'a PairRecorder,
    port: Option<ServicePort>,
    s: &'a IntervalStats,
}

impl<'a> PairSamples<'a> {
    /// The pair (meaningless for the overflow recorder).
    pub fn key(&self) -> PairKey {
        PairKey {
            src: self.r.src,
            dst: self.r.dst,
            port: self.port,
        }
    }

    /// The exact moments of its samples.
    pub fn moments(&self) -> &'a Moments {
        &self.r.m
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.r.m.count
    }

    /// True when its samples are flat counts (many samples) rather than one index each.
    pub fn is_dense(&self) -> bool {
        self.r.is_dense()
    }

    /// Calls `f` with each non-empty bucket's index (in HdrHistogram's layout, see [`RTT`]) and
    /// count: once a sample for sparse pairs (in no particular order), once a bucket for dense
    /// ones (in order).
    pub fn for_each_bucket(&self, mut f: impl FnMut(usize, u32)) {
        if self.r.is_dense() {
            for (i, n) in self.r.dense_buckets() {
                f(i, n);
            }
        } else {
            Sparse {
                r: self.r,
                chunks: &self.s.chunks,
            }
            .for_each(|i| f(i, 1));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hdrhistogram::Histogram;
    use std::collections::HashMap;

    fn key(a: u8, b: u8) -> PairKey {
        PairKey::hosts(Addr::v4([10, 0, 0, a]), Addr::v4([10, 0, 0, b]))
    }

    /// A deterministic stream of pseudo-random numbers (splitmix64), for the recorder's and the
    /// merge's tests.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Log-uniform over [2^lo, 2^hi).
        pub(crate) fn log_uniform(&mut self, lo: u32, hi: u32) -> u64 {
            let e = lo + (self.next() % u64::from(hi - lo)) as u32;
            (1u64 << e) | (self.next() & ((1u64 << e) - 1))
        }
    }

    /// Values around every power of two and every bucket edge from 0 to past the top, plus the
    /// clamping bounds and the extremes.
    fn edge_values() -> Vec<u64> {
        let mut v = vec![0, 1, 511, 512, 999, 1_000, 1_001, 1_023, 1_024, 2_000_000];
        v.extend([HIST_HIGH_NS - 1, HIST_HIGH_NS, HIST_HIGH_NS + 1, 1 << 62]);
        for e in 0..62 {
            let p = 1u64 << e;
            v.extend([p - 1, p, p + 1, p + p / 2, p * 2 - 1]);
        }
        v
    }

    #[test]
    fn layout_is_hdrhistograms() {
        let mut h =
            Histogram::<u32>::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, RTT_SIGFIG).unwrap();
        h.auto(true);
        let mut rng = Rng(3);
        let mut values = edge_values();
        values.extend((0..20_000).map(|_| rng.log_uniform(0, 40)));
        for v in values {
            let i = RTT.index(v);
            assert_eq!(RTT.value_for(i), h.lowest_equivalent(v), "{v}");
            if v <= HIST_HIGH_NS {
                // The index is the one HdrHistogram counts `v` at.
                let mut one = Histogram::<u32>::new_from(&h);
                one.record(v).unwrap();
                let at = one.iter_all().position(|x| x.count_at_value() == 1);
                assert_eq!(at, Some(i), "{v}");
            }
        }
        let initial = Histogram::<u32>::new_with_bounds(HIST_LOW_NS, HIST_INITIAL_HIGH_NS, 3)
            .unwrap()
            .distinct_values();
        assert_eq!(RTT_INITIAL_LEN, initial);
        let full = Histogram::<u32>::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3).unwrap();
        assert!(RTT_MAX_INDEX < full.distinct_values());
    }

    /// The buckets a pair's samples count in once the reporter records them (clamped to the
    /// histograms' range), sorted, with their counts.
    fn buckets(p: PairSamples<'_>) -> Vec<(usize, u32)> {
        let mut m = std::collections::BTreeMap::new();
        p.for_each_bucket(|i, n| *m.entry(rtt_index(RTT.value_for(i))).or_insert(0) += n);
        m.into_iter().collect()
    }

    /// The buckets recording `values` one by one would fill.
    fn expected(values: &[u64]) -> Vec<(usize, u32)> {
        let mut m = std::collections::BTreeMap::new();
        for &v in values {
            *m.entry(rtt_index(v)).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }

    #[test]
    fn samples_move_from_inline_to_chunks_to_flat_counts_and_keep_every_bucket() {
        let mut rng = Rng(9);
        for n in [
            1,
            INLINE - 1,
            INLINE,
            INLINE + 1,
            INLINE + CHUNK,
            INLINE + CHUNK + 1,
            SPARSE_MAX as usize - 1,
            SPARSE_MAX as usize,
            SPARSE_MAX as usize + 1,
            5_000,
        ] {
            let mut s = IntervalStats::default();
            let values: Vec<u64> = (0..n).map(|_| rng.log_uniform(8, 40)).collect();
            let mut moments = Moments::EMPTY;
            for (k, &v) in values.iter().enumerate() {
                let j = (k % 3 != 0).then_some(v / 7);
                s.record(key(1, 2), v, j);
                moments.record(v, j);
            }
            s.settle();
            let p = s.pairs().next().unwrap();
            assert_eq!(p.is_dense(), n as u64 > SPARSE_MAX, "{n} samples");
            assert_eq!(buckets(p), expected(&values), "{n} samples");
            assert_eq!(*p.moments(), moments, "{n} samples");
        }
    }

    #[test]
    fn chunks_are_shared_out_and_reused_after_a_pair_goes_flat() {
        let mut s = IntervalStats::default();
        let mut want: HashMap<PairKey, Vec<u64>> = HashMap::new();
        let mut rng = Rng(4);
        // Interleaved pairs, so that their chunks interleave in the arena; pair 1 goes flat
        // first, and the others then take its chunks.
        for round in 0..3 {
            for (b, n) in [(1u8, 700usize), (2, 100), (3, 40)] {
                for _ in 0..n {
                    let v = rng.log_uniform(10, 30);
                    s.record(key(round, b), v, None);
                    s.record(key(9, b), v, None);
                    want.entry(key(9, b)).or_default().push(v);
                    want.entry(key(round, b)).or_default().push(v);
                }
            }
        }
        s.settle();
        for p in s.pairs() {
            assert_eq!(buckets(p), expected(&want[&p.key()]), "{:?}", p.key());
        }
        let before = s.chunks.len();
        s.clear();
        assert_eq!(s.chunks.len(), 1, "cleared");
        assert!(s.chunks.capacity() >= before, "the arena keeps its memory");
    }

    #[test]
    fn flat_counts_grow_clamp_and_are_zeroed_for_reuse() {
        let mut s = IntervalStats::default();
        let mut values: Vec<u64> = (0..SPARSE_MAX + 10).map(|k| 1_000_000 + k).collect();
        values.extend([30_000_000, 500_000_000_000, u64::MAX, 0, 3]);
        for &v in &values {
            s.record(key(1, 2), v, None);
        }
        s.settle();
        let p = s.pairs().next().unwrap();
        assert!(p.is_dense());
        assert_eq!(buckets(p), expected(&values));
        assert_eq!(p.moments().max_ns, u64::MAX);
        s.clear();
        assert_eq!(s.spare.len(), 1);
        assert!(
            s.spare
                .by_buckets
                .iter()
                .flatten()
                .flat_map(|c| c.iter())
                .all(|&n| n == 0),
            "cleared counts are zero"
        );
        // Reused: a second round keeps the right buckets.
        let values: Vec<u64> = (0..3_000).map(|k| 10_000 + k * 1_000).collect();
        for &v in &values {
            s.record(key(3, 4), v, None);
        }
        s.settle();
        assert_eq!(s.spare.len(), 0);
        assert_eq!(buckets(s.pairs().next().unwrap()), expected(&values));
    }

    #[test]
    fn logged_counts_reach_their_own_pair_when_the_log_is_sorted() {
        // More dense pairs than are applied unsorted, and several logs' worth of samples, so
        // that the log is sorted by pair and flushed mid-stream as well as when settled.
        let keys: Vec<PairKey> = (0..300)
            .map(|i| key((i / 20) as u8 + 1, (i % 20) as u8 + 100))
            .collect();
        let mut rng = Rng(17);
        let mut s = IntervalStats::default();
        let mut slots = vec![None; keys.len()];
        let mut want: HashMap<PairKey, Vec<u64>> = HashMap::new();
        for _ in 0..400_000 {
            let i = (rng.next() % keys.len() as u64) as usize;
            let v = rng.log_uniform(10, 30);
            match slots[i] {
                Some(slot) => assert!(s.record_slot(slot, v, None)),
                None => match s.record(keys[i], v, None) {
                    Recorded::Slot(slot) => slots[i] = Some(slot),
                    Recorded::Overflow => unreachable!(),
                },
            }
            want.entry(keys[i]).or_default().push(v);
        }
        assert!(s.pairs.len() > SORT_ABOVE_PAIRS);
        assert!(s.pairs.iter().all(|p| p.is_dense()));
        s.settle();
        for p in s.pairs() {
            assert_eq!(buckets(p), expected(&want[&p.key()]), "{:?}", p.key());
        }
    }

    #[test]
    fn pairs_beyond_the_bound_go_to_the_overflow_recorder() {
        let mut s = IntervalStats::new(10);
        for a in 0..30u8 {
            let r = s.record(key(a, 1), 1_000_000 + u64::from(a), None);
            if a < 10 {
                assert_eq!(r, Recorded::Slot(u32::from(a)));
            } else {
                assert_eq!(r, Recorded::Overflow);
            }
        }
        // A known pair still gets its own slot; overflow samples can be sent to the slot.
        assert_eq!(s.record(key(3, 1), 5, None), Recorded::Slot(3));
        assert!(s.record_slot(OVERFLOW_SLOT, 7, None));
        assert!(!s.record_slot(10, 7, None), "no such slot");
        s.settle();
        assert_eq!(s.len(), 10);
        let o = s.overflow().unwrap();
        assert_eq!(o.count(), 21);
        let mut values: Vec<u64> = (10..30u64).map(|a| 1_000_000 + a).collect();
        values.push(7);
        assert_eq!(buckets(o), expected(&values));
        s.clear();
        assert!(s.overflow().is_none() && s.is_empty());
    }

    #[test]
    fn pending_samples_of_many_pairs_are_recorded_exactly_and_in_order() {
        // Past DEFER_ABOVE_PAIRS pairs samples wait in the pending queue; each pair must end
        // with what recording its own samples at once, in order, gives (srtt depends on it).
        let pairs = DEFER_ABOVE_PAIRS as u32 * 2;
        let mut s = IntervalStats::default();
        let mut rng = Rng(9);
        let mut want: HashMap<PairKey, (Moments, Vec<u64>)> = HashMap::new();
        let key_of = |n: u32| {
            let [_, a, b, c] = n.to_be_bytes();
            PairKey::hosts(Addr::v4([10, a, b, c]), Addr::v4([172, 16, 0, 1]))
        };
        let mut slots = HashMap::new();
        for round in 0..40_000u32 {
            // Busy pairs (flat counts, past SPARSE_MAX) and many quiet ones, interleaved.
            let n = if round % 4 == 0 {
                (rng.next() % 8) as u32
            } else {
                (rng.next() % u64::from(pairs)) as u32
            };
            for _ in 0..1 + rng.next() % 40 {
                let k = key_of(n);
                let rtt = rng.log_uniform(10, 30);
                let jitter = (!rng.next().is_multiple_of(3)).then(|| rng.next() % 1_000_000);
                let e = want.entry(k).or_insert((Moments::EMPTY, Vec::new()));
                e.0.record(rtt, jitter);
                e.1.push(rtt);
                match slots.get(&k) {
                    Some(&slot) => assert!(s.record_slot(slot, rtt, jitter)),
                    None => match s.record(k, rtt, jitter) {
                        Recorded::Slot(slot) => {
                            slots.insert(k, slot);
                        }
                        Recorded::Overflow => panic!("no bound reached"),
                    },
                }
            }
        }
        assert!(s.len() > DEFER_ABOVE_PAIRS * 3 / 2, "{} pairs", s.len());
        assert!(s.pairs().any(|p| p.is_dense()));
        s.settle();
        assert_eq!(s.len(), want.len());
        for p in s.pairs() {
            let (m, values) = &want[&p.key()];
            assert_eq!(p.moments(), m);
            assert_eq!(buckets(p), expected(values));
        }
    }

    #[test]
    fn ports_beyond_the_cap_go_to_their_pairs_other_port() {
        use ServicePort::{Other, Port};
        let k = |a: u8, port| PairKey {
            port: Some(port),
            ..key(a, 1)
        };
        let mut s = IntervalStats::new(100);
        s.set_max_ports(Some(2));
        assert_eq!(s.record(k(1, Port(443)), 1_000, None), Recorded::Slot(0));
        assert_eq!(s.record(k(1, Port(5432)), 2_000, None), Recorded::Slot(1));
        // A third and a fourth port share the pair's `other`; a known port keeps its slot.
        assert_eq!(s.record(k(1, Port(80)), 3_000, None), Recorded::Slot(2));
        assert_eq!(s.record(k(1, Port(81)), 4_000, None), Recorded::Slot(2));
        assert_eq!(s.record(k(1, Port(443)), 5_000, None), Recorded::Slot(0));
        // Another host pair has its own ports.
        assert_eq!(s.record(k(2, Port(80)), 6_000, None), Recorded::Slot(3));
        s.settle();
        let got: Vec<(PairKey, u64)> = s.pairs().map(|p| (p.key(), p.count())).collect();
        assert_eq!(
            got,
            vec![
                (k(1, Port(443)), 2),
                (k(1, Port(5432)), 1),
                (k(1, Other), 2),
                (k(2, Port(80)), 1)
            ]
        );
        // Ports are counted per interval.
        s.clear();
        s.set_max_ports(Some(2));
        assert_eq!(s.record(k(1, Port(80)), 3_000, None), Recorded::Slot(0));
        // Without the dimension, keys carry no port and none is kept.
        let mut s = IntervalStats::new(100);
        assert_eq!(s.record(key(1, 1), 1_000, None), Recorded::Slot(0));
        s.settle();
        assert_eq!(s.pair(0).key().port, None);
        assert!(s.ports.is_empty());
    }

    #[test]
    fn memory_follows_samples_at_two_hundred_thousand_pairs() {
        // 200,000 pairs of 3 samples each, and 100 of 10,000: what a gateway interval holds.
        let mut s = IntervalStats::default();
        let mut rng = Rng(1);
        for n in 0..200_000u32 {
            let [_, a, b, c] = n.to_be_bytes();
            let k = PairKey::hosts(
                Addr::v4([10, a, b, c]),
                Addr::v4([172, 16, 0, (n % 7) as u8]),
            );
            for _ in 0..3 {
                s.record(k, rng.log_uniform(18, 26), None);
            }
        }
        for b in 0..100u8 {
            for _ in 0..10_000 {
                s.record(key(b, 200), rng.log_uniform(18, 26), None);
            }
        }
        s.settle();
        let bytes = s.heap_bytes();
        assert_eq!(s.len(), 200_100);
        // 128 bytes of recorder (up to a quarter more before the array grows) and 5 to 10 of
        // index a pair, and 16-40 KiB for a busy pair.
        assert!(
            bytes < 200_000 * 170 + 100 * 40 * 1024,
            "{bytes} bytes for 200,100 pairs"
        );
        // Recycled, the interval keeps its memory and takes no more for the same load.
        s.clear();
        let kept = s.heap_bytes();
        assert!(kept >= bytes / 2);
    }
}
