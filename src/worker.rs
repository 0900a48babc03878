//! One worker: frames in, samples recorded.
//!
//! A worker owns a flow table, a pool of segment rings and the current interval's per-pair
//! histograms. Nothing in it is shared, so the hot path takes no lock; it allocates only when
//! the table grows or a new host pair appears, never per packet. The same code runs on frames
//! borrowed from a capture file and on frames borrowed from a TPACKET_V3 ring: [`Worker::handle`]
//! takes one frame, whatever owns it.
//!
//! Which halves are reported is decided here, at sample time: a half whose acknowledging end is
//! a local address is left out (its "RTT" is the local stack's ACK delay), and with a whitelist
//! only halves acknowledged by a whitelisted host are kept.

use crate::capture::filter::Net;
use crate::capture::{Frame, LinkType};
use crate::config::{DEFAULT_EXP_TTL, DEFAULT_IDLE_TTL, DEFAULT_MAX_FLOWS, DEFAULT_MAX_PAIRS};
use crate::conn::{ConnSegment, Connection, Connections};
use crate::decode::{self, flags, Addr};
use crate::flow::{FlowKey, FlowTable, HostIds, Keeper, PackedKey, Side, TableStats, Ttl};
use crate::record::{IntervalStats, PairKey, Recorded, ServicePort, OVERFLOW_SLOT};
use crate::rtt::{FlowRtt, Method, Packet, RttStats, Sample, SegPool};

/// How a worker is set up; the same for every worker of a capture.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Most flows a worker tracks at once (IPv4 and IPv6 together).
    pub max_flows: usize,
    /// Most segment rings a worker lends to halves with several segments in flight.
    pub max_rings: usize,
    /// Most host pairs a worker keeps apart in an interval; the samples of any more go to the
    /// `other` series.
    pub max_pairs: usize,
    /// Flow expiry.
    pub ttl: Ttl,
    /// Addresses of this host: halves acknowledged by them are not reported.
    pub local: Vec<Addr>,
    /// When set, only halves acknowledged by one of these are reported.
    pub whitelist: Option<Vec<Net>>,
    /// Keep every reported sample for `--samples` output.
    pub keep_samples: bool,
    /// Keep per-connection statistics (`--by flow`).
    pub by_flow: bool,
    /// Report per server port too (`--by port`, `group_by: [src, dst, port]`), keeping at most
    /// this many ports of a host pair apart in an interval; `None`: per host pair only.
    pub max_ports: Option<usize>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            max_flows: DEFAULT_MAX_FLOWS,
            // 4096 rings × 4.5 KB: at most 18 MiB, for that many bulk halves at once.
            max_rings: 4096,
            max_pairs: DEFAULT_MAX_PAIRS,
            ttl: Ttl {
                idle_ns: DEFAULT_IDLE_TTL.as_nanos() as u64,
                closed_ns: DEFAULT_EXP_TTL.as_nanos() as u64,
            },
            local: Vec::new(),
            whitelist: None,
            keep_samples: false,
            by_flow: false,
            max_ports: None,
        }
    }
}

/// One reported RTT sample, for `--samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRecord {
    /// Capture time of the ACK, ns.
    pub ts_ns: u64,
    /// The data sender.
    pub src: Addr,
    /// The data sender's port.
    pub sport: u16,
    /// The acknowledging end.
    pub dst: Addr,
    /// The acknowledging end's port.
    pub dport: u16,
    /// The sample, ns.
    pub rtt_ns: u64,
    /// The rule that produced it.
    pub method: Method,
}

/// Packet-time interval between expiry sweeps of the flow table.
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

/// Segments decoded ahead of being matched against the flow table. The worker starts loading
/// each new segment's table slot when it is decoded, and matches it `LOOKAHEAD` segments later,
/// so the cache misses of a large table overlap instead of stalling one after another.
const LOOKAHEAD: usize = 8;
/// The queue's slots: room for a new segment beside the `LOOKAHEAD` waiting ones, rounded up to a
/// power of two.
const QUEUE: usize = 2 * LOOKAHEAD;
const _: () = assert!(LOOKAHEAD.is_power_of_two());

/// What a half's cookie (see [`FlowRtt::cookie`]) holds: the epoch it was decided in (high 8
/// bits; see [`Engine::new_epoch`]), and then how the half is reported (low 24 bits): its pair's
/// slot in the interval's statistics + 1, [`cookie::OVERFLOW`] or [`cookie::FILTERED`]. A cookie
/// from another epoch, or with a slot of 0 (the slot did not fit), is undecided: the pair is
/// looked up.
mod cookie {
    /// The low bits.
    pub const SLOT: u32 = 0xff_ffff;
    /// The epoch's unit.
    pub const EPOCH: u32 = SLOT + 1;
    /// The half is not reported (its acknowledging end is local, or not whitelisted).
    pub const FILTERED: u32 = SLOT;
    /// The half's pair is beyond `max_pairs`: its samples go to the `other` series.
    pub const OVERFLOW: u32 = SLOT - 1;
}

/// Slots of each of [`PairCookies`]' two caches: a power of two.
const PAIR_COOKIES: usize = 4096;

/// The cookies that host pairs got in the current epoch, direct-mapped by the pair (and the
/// server port, with per-port keys): a new flow between two hosts that already had one this
/// interval, as a client's next short connection to the same server has, takes its halves'
/// cookies from here instead of looking its pair up in the interval's statistics, which costs
/// several times more. What a cookie says depends only on the hosts and the port within an
/// epoch: the filters look at the acknowledging address, a pair keeps its slot for the interval,
/// and a pair that went to the `other` series (`max_pairs` or `max_ports` reached) stays there,
/// as neither bound frees a place before the interval ends. IPv4 pairs are kept in 16 bytes a
/// slot (64 KiB), IPv6 pairs in 40 (160 KiB).
struct PairCookies {
    v4: CookieCache<u64>,
    v6: CookieCache<[u128; 2]>,
}

impl PairCookies {
    fn new() -> PairCookies {
        PairCookies {
            v4: CookieCache::new(),
            v6: CookieCache::new(),
        }
    }

    /// Forgets every pair, when the epochs wrap and old cookies would look current again.
    fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }
}

/// A host pair as a [`CookieCache`] keys it: the sender's address, then the acknowledger's.
trait Hosts: Copy + Default + PartialEq {
    /// The pair in one word, whose bits a multiply then mixes.
    fn word(&self) -> u64;
}

/// [`PackedKey::hosts`]: both IPv4 addresses in one word.
impl Hosts for u64 {
    #[inline]
    fn word(&self) -> u64 {
        *self
    }
}

/// Two IPv6 addresses, as 128-bit words.
impl Hosts for [u128; 2] {
    #[inline]
    fn word(&self) -> u64 {
        let fold = |a: u128| (a as u64) ^ ((a >> 64) as u64).rotate_left(29);
        fold(self[0]).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ fold(self[1])
    }
}

/// One family's cache of [`PairCookies`].
struct CookieCache<H> {
    slots: Box<[CachedCookie<H>]>,
}

#[derive(Clone, Copy, Default)]
struct CachedCookie<H> {
    hosts: H,
    /// The server port + 1 with per-port keys; 0 without.
    port: u32,
    /// The cookie, with its epoch; 0 for none.
    cookie: u32,
}

impl<H: Hosts> CookieCache<H> {
    fn new() -> CookieCache<H> {
        CookieCache {
            slots: vec![CachedCookie::default(); PAIR_COOKIES].into_boxed_slice(),
        }
    }

    /// The slot of a pair: the high bits of a multiplicative hash.
    #[inline]
    fn slot(hosts: &H, port: u32) -> usize {
        let h = (hosts.word() ^ u64::from(port)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - PAIR_COOKIES.trailing_zeros())) as usize
    }

    /// The cookie the pair got in `epoch`, if this cache still has it; else 0 (undecided).
    #[inline]
    fn get(&self, hosts: H, port: u32, epoch: u32) -> u32 {
        let c = self.slots[Self::slot(&hosts, port)];
        let current = c.cookie.wrapping_sub(epoch + 1) < cookie::SLOT;
        if c.hosts == hosts && c.port == port && current {
            c.cookie
        } else {
            0
        }
    }

    /// Remembers the pair's cookie, in place of whichever pair had the slot.
    #[inline]
    fn put(&mut self, hosts: H, port: u32, cookie: u32) {
        self.slots[Self::slot(&hosts, port)] = CachedCookie {
            hosts,
            port,
            cookie,
        };
    }

    fn clear(&mut self) {
        self.slots.fill(CachedCookie::default());
    }
}

/// A decoded segment waiting for its turn: the owned, parsed form of [`decode::Segment`].
/// Aligned to a cache line, which makes it 128 bytes: a slot's address is then a shift of its
/// index rather than a multiply, and it is computed twice a packet.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Parsed {
    /// The flow's key when `v6` is false (both addresses IPv4).
    key4: PackedKey,
    /// The flow's key when `v6` is true; the table's key is made from it when the segment is
    /// applied, with its addresses' host ids.
    key6: FlowKey,
    v6: bool,
    hash: u64,
    /// Where the flow is in its table: from decoding, the index slot its probe starts at
    /// ([`FlowTable::locate`]); from `LOOKAHEAD / 2` frames later, its entry's number, a guess
    /// ([`FlowTable::prefetch_entry`]).
    at: u32,
    /// The side of the flow's key that sent the segment.
    side: Side,
    ts_ns: u64,
    packet: Packet,
}

impl Parsed {
    /// The endpoint on `side` of the segment's flow key and then the other, each as (address,
    /// port).
    fn ends(&self, side: Side) -> ((Addr, u16), (Addr, u16)) {
        if self.v6 {
            self.key6.ends(side)
        } else {
            self.key4.ends(side)
        }
    }
}

/// One worker's pipeline state: the segments decoded ahead, and the engine that applies them.
pub struct Worker {
    id: usize,
    engine: Engine,
    /// A ring of [`QUEUE`] slots, of which the `pending_len` before `pending_next` wait.
    pending: [Parsed; QUEUE],
    /// Where the next decoded segment goes.
    pending_next: usize,
    /// Segments waiting, at most `LOOKAHEAD` between frames.
    pending_len: usize,
}

/// Everything a segment is applied to. Kept apart from the queue so that a queued segment can
/// be applied where it lies, without copying it out first.
struct Engine {
    /// The flows of both families.
    table: FlowTable<PackedKey, FlowRtt>,
    /// What the flows hold beyond their entries.
    held: Held,
    local: Vec<Addr>,
    whitelist: Option<Vec<Net>>,
    keep_samples: bool,
    stats: IntervalStats,
    /// The bound every interval of this worker keeps.
    max_pairs: usize,
    /// The ports every interval keeps per host pair, when keys carry the server port.
    max_ports: Option<usize>,
    samples: Vec<SampleRecord>,
    /// Per-connection statistics, with `--by flow` only.
    conns: Option<Box<Connections>>,
    next_sweep_ns: u64,
    /// The current epoch, in the cookie's high bits: never 0, so that a new flow's zeroed
    /// cookies are undecided.
    epoch: u32,
    /// Cookies of recent host pairs, for the first samples of new flows.
    pair_cookies: PairCookies,
    table_seen: TableStats,
    rtt_seen: RttStats,
}

impl Worker {
    /// A worker numbered `id`.
    pub fn new(id: usize, cfg: &WorkerConfig) -> Worker {
        Worker {
            id,
            engine: Engine {
                table: FlowTable::new(cfg.max_flows, cfg.ttl),
                held: Held {
                    pool: SegPool::new(cfg.max_rings),
                    hosts: HostIds::new(),
                },
                local: cfg.local.clone(),
                whitelist: cfg.whitelist.clone(),
                keep_samples: cfg.keep_samples,
                stats: {
                    let mut s = IntervalStats::new(cfg.max_pairs);
                    s.set_max_ports(cfg.max_ports);
                    s
                },
                max_pairs: cfg.max_pairs,
                max_ports: cfg.max_ports,
                samples: Vec::new(),
                conns: cfg
                    .by_flow
                    .then(|| Box::new(Connections::new(cfg.max_flows, cfg.ttl))),
                next_sweep_ns: 0,
                epoch: cookie::EPOCH,
                pair_cookies: PairCookies::new(),
                table_seen: TableStats::default(),
                rtt_seen: RttStats::default(),
            },
            pending: [Parsed::default(); QUEUE],
            pending_next: 0,
            pending_len: 0,
        }
    }

    /// The worker's number.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Processes one frame. Its effects may be applied a few frames later (see `LOOKAHEAD`);
    /// everything that reads results ([`Worker::take_interval`], [`Worker::drain_samples`],
    /// [`Worker::flow_keys`]) first applies what is pending.
    #[inline]
    pub fn handle(&mut self, link: LinkType, frame: &Frame<'_>) {
        let c = &mut self.engine.stats.counters;
        c.packets += 1;
        let seg =
            match decode::decode_counting(link, frame.data, frame.wire_len, &mut c.encapsulated) {
                Ok(s) => s,
                Err(why) => {
                    c.skipped[why.index()] += 1;
                    return;
                }
            };
        // The new segment goes to a free slot, so that the oldest is applied after it is
        // decoded: nothing of the frame has to be kept across the apply step, which ends the
        // function. Masked, so that the compiler sees it in range (the position always is).
        let i = self.pending_next & (QUEUE - 1);
        let p = &mut self.pending[i];
        // The flow's index slot starts loading now.
        let side = match seg.v4() {
            Some((src, dst)) => {
                let (k, side) = PackedKey::new(src, seg.src_port(), dst, seg.dst_port());
                p.key4 = k;
                p.v6 = false;
                p.hash = k.hash64();
                p.at = self.engine.table.locate(p.hash);
                side
            }
            None => {
                let (k, side) = FlowKey::new(seg.src(), seg.src_port(), seg.dst(), seg.dst_port());
                p.key6 = k;
                p.v6 = true;
                p.hash = k.hash64();
                p.at = self.engine.table.locate(p.hash);
                side
            }
        };
        self.pending_next = (i + 1) % QUEUE;
        p.side = side;
        p.ts_ns = frame.ts_ns;
        let (tsval, tsecr, has_ts) = seg.timestamp_fields();
        p.packet = Packet {
            seq: seg.seq(),
            seq_len: seg.seq_len(),
            ack: seg.ack(),
            tsval,
            tsecr,
            tcp_flags: seg.flags(),
            has_ts,
        };
        // The segment decoded `LOOKAHEAD / 2` frames ago has its index slot in cache by now: the
        // entry that slot points at starts loading, so that a lookup's two loads both overlap.
        let q = &mut self.pending[(i + QUEUE - LOOKAHEAD / 2) % QUEUE];
        q.at = self.engine.table.prefetch_entry(q.at, q.hash);
        if self.pending_len == LOOKAHEAD {
            // The oldest waiting segment, decoded `LOOKAHEAD` frames ago.
            let p = &self.pending[(i + QUEUE - LOOKAHEAD) % QUEUE];
            if self.engine.conns.is_none() {
                self.engine.apply::<false>(p);
            } else {
                self.engine.apply_by_flow(p);
            }
        } else {
            self.pending_len += 1;
        }
    }

    /// Replaces the local addresses (the interface's changed): halves they acknowledge are not
    /// reported from the next segment on.
    pub fn set_local(&mut self, local: Vec<Addr>) {
        self.flush();
        self.engine.local = local;
        self.engine.new_epoch();
    }

    /// Applies every pending segment.
    pub fn flush(&mut self) {
        while self.pending_len > 0 {
            let i = (self.pending_next + QUEUE - self.pending_len) % QUEUE;
            if self.engine.conns.is_none() {
                self.engine.apply::<false>(&self.pending[i]);
            } else {
                self.engine.apply_by_flow(&self.pending[i]);
            }
            self.pending_len -= 1;
        }
    }

    /// Hands over the interval's statistics and starts a new interval in `fresh` (a cleared
    /// [`IntervalStats`], ideally one handed back by the reporter so its memory is reused).
    pub fn take_interval(&mut self, fresh: IntervalStats) -> IntervalStats {
        self.flush();
        self.engine.take_interval(fresh)
    }

    /// Takes the samples kept since the last call (empty unless `keep_samples`).
    pub fn drain_samples(&mut self) -> std::vec::Drain<'_, SampleRecord> {
        self.flush();
        self.engine.samples.drain(..)
    }

    /// The connections seen so far, with `--by flow` (empty otherwise); the worker keeps no more.
    pub fn take_connections(&mut self) -> Vec<Connection> {
        self.flush();
        let kept = (self.engine.conns.as_ref()).map(|c| (c.max_conns(), c.ttl()));
        match (self.engine.conns.take(), kept) {
            (Some(c), Some((max, ttl))) => {
                self.engine.conns = Some(Box::new(Connections::new(max, ttl)));
                c.into_connections()
            }
            _ => Vec::new(),
        }
    }

    /// The connections that have ended by `now_ns` (capture time), with `--by flow` (empty
    /// otherwise): see [`Connections::take_finished`]. The worker keeps the others.
    pub fn take_finished_connections(&mut self, now_ns: u64) -> Vec<Connection> {
        self.flush();
        match &mut self.engine.conns {
            Some(c) => c.take_finished(now_ns),
            None => Vec::new(),
        }
    }

    /// Connections not kept because the bound was reached, with `--by flow`.
    pub fn untracked_connections(&self) -> u64 {
        self.engine.conns.as_ref().map_or(0, |c| c.untracked)
    }

    /// The IPv6 addresses that the worker's flows hold now, each once (see [`HostIds`]).
    pub fn ipv6_hosts(&mut self) -> usize {
        self.flush();
        self.engine.held.hosts.len()
    }

    /// The keys of the flows the worker tracks now.
    pub fn flow_keys(&mut self) -> impl Iterator<Item = FlowKey> + '_ {
        self.flush();
        let e = &self.engine;
        e.table.iter().map(|f| match f.key().v6_ends() {
            Some(((a, a_port), (b, b_port))) => {
                let hosts = &e.held.hosts;
                FlowKey::new(hosts.addr(a), a_port, hosts.addr(b), b_port).0
            }
            None => f.key().full(),
        })
    }
}

impl Engine {
    /// [`Engine::apply`] with per-connection statistics, out of line so that the default path
    /// is laid out as if they did not exist.
    #[cold]
    #[inline(never)]
    fn apply_by_flow(&mut self, p: &Parsed) {
        self.apply::<true>(p);
    }

    /// Applies one segment; `BY_FLOW` when per-connection statistics are kept, so that the
    /// default build of this function has no trace of them.
    #[inline]
    fn apply<const BY_FLOW: bool>(&mut self, p: &Parsed) {
        let now = p.ts_ns;
        if now >= self.next_sweep_ns {
            self.sweep(now);
        }
        let held = &mut self.held;
        let (hash, at) = (p.hash, p.at);
        let (closing, established) = (p.packet.closing(), p.packet.established());
        let flow = if p.v6 {
            flow_in6(
                &mut self.table,
                &p.key6,
                (hash, at),
                now,
                (closing, established),
                held,
            )
        } else {
            flow_in(
                &mut self.table,
                &p.key4,
                (hash, at),
                now,
                (closing, established),
                Release(held),
            )
        };
        let side = p.side;
        if BY_FLOW {
            if let Some(conns) = &mut self.conns {
                conn_packet(conns, p, side);
            }
        }
        let Some(sample) = flow.on_packet(&mut self.held.pool, side, &p.packet, now) else {
            return;
        };
        // The segment's sender acknowledged; the data came from the other side.
        let data_side = side.other();
        // Kept first, and decided apart from the cookie, so that nothing of the sample has to
        // outlive the recording below, which would spill and reload it on every packet. Here and
        // below the cold calls take the sample's fields, not a reference: one would make every
        // sample be written to the stack for them, also when no cold call is made.
        if self.keep_samples {
            keep_sample(
                &mut self.samples,
                &self.local,
                &self.whitelist,
                p,
                data_side,
                sample.rtt_ns,
                sample.method,
            );
        }
        if BY_FLOW {
            if let Some(conns) = &mut self.conns {
                conn_sample(conns, &self.local, &self.whitelist, p, data_side, &sample);
            }
        }
        let c = &mut self.stats.counters;
        c.samples += 1;
        // The half's cookie says how it is reported in this interval, once that is decided.
        let cookie = flow.cookie(data_side);
        let known = cookie.wrapping_sub(self.epoch + 1) < cookie::SLOT
            && record_as(&mut self.stats, cookie, sample.rtt_ns, sample.jitter_ns);
        if !known {
            let cookie = self.epoch
                | record_first(
                    &mut self.stats,
                    &mut self.pair_cookies,
                    self.epoch,
                    &self.local,
                    &self.whitelist,
                    p,
                    flow,
                    data_side,
                    sample.rtt_ns,
                    sample.jitter_ns,
                );
            flow.set_cookie(data_side, cookie);
        }
    }

    /// Starts a new epoch: every cookie is stale from now on. Once in 255 epochs the numbers
    /// wrap, and every cookie is cleared so that none from long ago looks current.
    fn new_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(cookie::EPOCH);
        if self.epoch == 0 {
            for v in self.table.values_mut() {
                v.set_cookie(Side::A, 0);
                v.set_cookie(Side::B, 0);
            }
            self.pair_cookies.clear();
            self.epoch = cookie::EPOCH;
        }
    }

    fn sweep(&mut self, now: u64) {
        self.table.expire(now, &mut Release(&mut self.held));
        self.next_sweep_ns = now.saturating_add(SWEEP_EVERY_NS);
    }

    /// Hands over the interval's statistics and starts a new interval in `fresh` (a cleared
    /// [`IntervalStats`], ideally one handed back by the reporter so its memory is reused).
    fn take_interval(&mut self, mut fresh: IntervalStats) -> IntervalStats {
        fresh.clear();
        fresh.set_max_pairs(self.max_pairs);
        fresh.set_max_ports(self.max_ports);
        self.stats.settle();
        let mut done = std::mem::replace(&mut self.stats, fresh);
        // Every packet is TCP or skipped for one reason: counted once, not on every packet.
        let c = &mut done.counters;
        c.tcp = c.packets - c.skipped.iter().sum::<u64>();
        // The cookies name slots of the interval handed over.
        self.new_epoch();
        let t = self.table.stats();
        let r = self.held.pool.stats();
        c.table = TableStats {
            created: t.created - self.table_seen.created,
            evicted: t.evicted - self.table_seen.evicted,
            expired: t.expired - self.table_seen.expired,
        };
        c.rtt = RttStats {
            karn: r.karn - self.rtt_seen.karn,
            untracked: r.untracked - self.rtt_seen.untracked,
            pool_exhausted: r.pool_exhausted - self.rtt_seen.pool_exhausted,
            ring_full: r.ring_full - self.rtt_seen.ring_full,
        };
        c.active_flows = self.table.len() as u64;
        self.table_seen = t;
        self.rtt_seen = r;
        done
    }
}

/// Finds or creates the flow `key` (hashed to `hash`, perhaps at entry `guess`) in `table`, marks
/// it seen at `now`, and closing and established as `(closing, established)` say.
#[inline(always)]
fn flow_in<'t>(
    table: &'t mut FlowTable<PackedKey, FlowRtt>,
    key: &PackedKey,
    (hash, guess): (u64, u32),
    now: u64,
    (closing, established): (bool, bool),
    release: Release<'_>,
) -> &'t mut FlowRtt {
    let (e, _) = table.upsert(key, hash, guess, now, release);
    e.note(closing, established);
    &mut e.value
}

/// [`flow_in`] for an IPv6 flow, whose table key names its [`FlowKey`]'s addresses by host id (a
/// new address gets one here; the table has the flow hold it, see [`Release`]). The flow at
/// `guess`, which the lookahead found by the hash, is most often this one: when its ports and its
/// hosts' addresses are the segment's, its key is taken without looking the addresses up. Out of
/// line, so that the IPv4 path does not carry it.
#[inline(never)]
fn flow_in6<'t>(
    table: &'t mut FlowTable<PackedKey, FlowRtt>,
    k: &FlowKey,
    (hash, guess): (u64, u32),
    now: u64,
    seen: (bool, bool),
    held: &mut Held,
) -> &'t mut FlowRtt {
    let hosts = &mut held.hosts;
    let known = table.entry(guess).map(|e| *e.key()).filter(|key| {
        key.v6_ends().is_some_and(|((a, a_port), (b, b_port))| {
            (a_port, b_port) == (k.a_port, k.b_port) && hosts.is(a, &k.a) && hosts.is(b, &k.b)
        })
    });
    let key = known.unwrap_or_else(|| {
        PackedKey::v6(hosts.intern(&k.a), k.a_port, hosts.intern(&k.b), k.b_port)
    });
    flow_in(table, &key, (hash, guess), now, seen, Release(held))
}

/// What the flows hold beyond their entries: the rings their halves borrow, and the addresses of
/// the IPv6 ones.
struct Held {
    pool: SegPool,
    hosts: HostIds,
}

/// What a dropped flow leaves behind: its halves' borrowed rings go back to the pool, and an
/// IPv6 flow lets go of its hosts, which a new one holds. One reference, so that it costs the
/// hot path one register.
struct Release<'a>(&'a mut Held);

impl Keeper<PackedKey, FlowRtt> for Release<'_> {
    #[inline]
    fn admit(&mut self, key: &PackedKey) {
        if let Some(((a, _), (b, _))) = key.v6_ends() {
            self.0.hosts.hold(a);
            self.0.hosts.hold(b);
        }
    }

    #[inline]
    fn drop_flow(&mut self, key: &PackedKey, value: &mut FlowRtt) {
        value.release(&mut self.0.pool);
        if let Some(((a, _), (b, _))) = key.v6_ends() {
            self.0.hosts.let_go(a);
            self.0.hosts.let_go(b);
        }
    }

    #[inline]
    fn restart(&mut self, value: &mut FlowRtt) {
        value.release(&mut self.0.pool);
    }
}

/// True when samples of the half whose acknowledging end is `acker` are reported: it is not a
/// local address, and whitelisted if there is a whitelist.
#[inline]
fn reported(local: &[Addr], whitelist: &Option<Vec<Net>>, acker: &Addr) -> bool {
    !local.contains(acker)
        && whitelist
            .as_ref()
            .is_none_or(|w| w.iter().any(|n| n.contains(&acker.0)))
}

/// Counts a segment for `--by flow`.
#[cold]
#[inline(never)]
fn conn_packet(conns: &mut Connections, p: &Parsed, side: Side) {
    let (src, dst) = p.ends(side);
    let f = p.packet.tcp_flags;
    conns.packet(&ConnSegment {
        src,
        dst,
        ts_ns: p.ts_ns,
        seq: p.packet.seq,
        seq_len: p.packet.seq_len,
        syn: f & flags::SYN != 0,
        ack: f & flags::ACK != 0,
        fin: f & flags::FIN != 0,
        rst: f & flags::RST != 0,
    });
}

/// Records a sample for `--by flow`, if its half is reported.
#[cold]
#[inline(never)]
fn conn_sample(
    conns: &mut Connections,
    local: &[Addr],
    whitelist: &Option<Vec<Net>>,
    p: &Parsed,
    data_side: Side,
    sample: &Sample,
) {
    let (sender, acker) = p.ends(data_side);
    if reported(local, whitelist, &acker.0) {
        conns.sample(
            sender,
            acker,
            sample.rtt_ns,
            sample.jitter_ns,
            sample.method,
        );
    }
}

/// Keeps a sample for `--samples`, if its half is reported.
#[cold]
#[inline(never)]
fn keep_sample(
    samples: &mut Vec<SampleRecord>,
    local: &[Addr],
    whitelist: &Option<Vec<Net>>,
    p: &Parsed,
    data_side: Side,
    rtt_ns: u64,
    method: Method,
) {
    let ((sender, sender_port), (acker, acker_port)) = p.ends(data_side);
    if reported(local, whitelist, &acker) {
        samples.push(SampleRecord {
            ts_ns: p.ts_ns,
            src: sender,
            sport: sender_port,
            dst: acker,
            dport: acker_port,
            rtt_ns,
            method,
        });
    }
}

/// The server port of a flow whose endpoints' ports are `ports` (by side): the port of the side
/// that accepted the connection (the SYN's destination), or, when the capture holds neither SYN
/// nor SYN/ACK, the smaller port (servers listen on well-known and registered ports; clients
/// take ephemeral ones, 32768–60999 on Linux, 49152–65535 elsewhere).
pub fn server_port(server_side: Option<Side>, ports: [u16; 2]) -> u16 {
    match server_side {
        Some(side) => ports[side.index()],
        None => ports[0].min(ports[1]),
    }
}

/// Decides how a half is reported in this interval, and records its sample (the first of the
/// interval, or one whose pair's slot did not fit the cookie). Returns the cookie's low bits.
/// The pair's slot stands for the interval, so the server port (constant for a flow) is read
/// here only, never per packet. A pair decided in this epoch takes its decision from `cache`,
/// which is the common case under flow churn; the rest, out of line, looks the pair up.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn record_first(
    stats: &mut IntervalStats,
    cache: &mut PairCookies,
    epoch: u32,
    local: &[Addr],
    whitelist: &Option<Vec<Net>>,
    p: &Parsed,
    flow: &FlowRtt,
    data_side: Side,
    rtt_ns: u64,
    jitter_ns: Option<u64>,
) -> u32 {
    let port = match stats.max_ports() {
        Some(_) => {
            let ((_, sender_port), (_, acker_port)) = p.ends(data_side);
            let mut ports = [0; 2];
            ports[data_side.index()] = sender_port;
            ports[data_side.other().index()] = acker_port;
            Some(server_port(flow.server_side(), ports))
        }
        None => None,
    };
    let tag = port.map_or(0, |p| u32::from(p) + 1);
    let low = if p.v6 {
        cache.v6.get(hosts6(p, data_side), tag, epoch)
    } else {
        cache.v4.get(p.key4.hosts(data_side), tag, epoch)
    } & cookie::SLOT;
    if low != 0 {
        // A cookie of this epoch names a slot the interval has.
        record_as(stats, low, rtt_ns, jitter_ns);
        return low;
    }
    let low = look_up(
        stats, local, whitelist, p, data_side, port, rtt_ns, jitter_ns,
    );
    if low != 0 {
        if p.v6 {
            cache.v6.put(hosts6(p, data_side), tag, epoch | low);
        } else {
            cache.v4.put(p.key4.hosts(data_side), tag, epoch | low);
        }
    }
    low
}

/// Records a sample as `cookie` (one of this epoch) says: counted as filtered, or recorded in
/// the `other` series or the pair's slot. False when the interval has no such slot.
#[inline(always)]
fn record_as(stats: &mut IntervalStats, cookie: u32, rtt_ns: u64, jitter_ns: Option<u64>) -> bool {
    match cookie & cookie::SLOT {
        cookie::FILTERED => {
            stats.counters.filtered += 1;
            true
        }
        cookie::OVERFLOW => stats.record_slot(OVERFLOW_SLOT, rtt_ns, jitter_ns),
        slot => stats.record_slot(slot - 1, rtt_ns, jitter_ns),
    }
}

/// The addresses of an IPv6 segment's half whose data `data_side` sends: the sender's, then the
/// acknowledger's, as [`PairCookies`] keys them.
#[inline]
fn hosts6(p: &Parsed, data_side: Side) -> [u128; 2] {
    let ((sender, _), (acker, _)) = p.key6.ends(data_side);
    [u128::from_ne_bytes(sender.0), u128::from_ne_bytes(acker.0)]
}

/// [`record_first`] for a pair the cache does not have: applies the filters, finds or adds the
/// pair's recorder, and records the sample there. Returns the cookie's low bits.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn look_up(
    stats: &mut IntervalStats,
    local: &[Addr],
    whitelist: &Option<Vec<Net>>,
    p: &Parsed,
    data_side: Side,
    port: Option<u16>,
    rtt_ns: u64,
    jitter_ns: Option<u64>,
) -> u32 {
    let ((sender, _), (acker, _)) = p.ends(data_side);
    if !reported(local, whitelist, &acker) {
        stats.counters.filtered += 1;
        return cookie::FILTERED;
    }
    let pair = PairKey {
        src: sender,
        dst: acker,
        port: port.map(ServicePort::Port),
    };
    match stats.record(pair, rtt_ns, jitter_ns) {
        // 0 (a slot too large for the cookie) leaves it undecided: the next sample looks again.
        Recorded::Slot(slot) if slot + 1 < cookie::OVERFLOW => slot + 1,
        Recorded::Slot(_) => 0,
        Recorded::Overflow => cookie::OVERFLOW,
    }
}
