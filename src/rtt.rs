//! The RTT estimator: segments in flight, ACK matching, Karn's rule, TCP timestamps.
//!
//! Each direction of a flow (a *half*) is measured on its own. Data sent by A and acknowledged
//! by B gives a sample of the RTT from the capture point to B and back. The rules:
//!
//! 1. **seq/ack.** An ACK that first covers new bytes (SYN and FIN count as one byte each) gives
//!    one sample, timed from the newest (most recently sent) segment with bytes in the newly
//!    covered range. An ACK landing inside a captured TSO super-frame covers that super-frame.
//!    Duplicate ACKs, window updates and ACKs at or below the highest seen give nothing, and so
//!    does an ACK for bytes never seen sent. Sequence numbers compare modulo 2^32 (RFC 9293 §3.4).
//! 2. **Karn's rule.** When the newest covered segment carries bytes sent more than once, there
//!    is no sample, unless the ACK's TSecr equals the TSval of exactly one transmission of those
//!    bytes (RFC 7323 §4.3 echoes the TSval of the segment that advanced the window): the sample
//!    is then timed from that transmission.
//! 3. **Handshake.** SYN → SYN/ACK and SYN/ACK → ACK are ordinary instances of rule 1, recorded
//!    with their own method so users can tell them apart. A half also remembers whether its
//!    first segment was the SYN or the SYN/ACK, so that the caller can tell the server
//!    ([`FlowRtt::server_side`]).
//!
//! State is bounded. A half keeps one segment inline in the flow entry, which is all that a
//! request/response flow needs. When a second segment is in flight, or a segment is resent, the
//! half borrows a ring of [`RING_SLOTS`] segments from the worker's [`SegPool`] and gives it back
//! as soon as everything in it is acknowledged. When the ring is full, or the pool is empty,
//! tracking pauses until the tracked bytes are acknowledged: samples are lost (and counted), never
//! made up. Times are capture timestamps in nanoseconds.
//!
//! This module knows nothing of addresses, histograms or output: it turns segments into samples.

use crate::decode::flags;
use crate::flow::Side;

/// Which rule produced a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The segment timed from carried SYN (the handshake).
    Syn,
    /// Plain seq/ack matching.
    Seq,
    /// Karn's ambiguity resolved by the TCP timestamp echo.
    Ts,
}

impl Method {
    /// The stable name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Method::Syn => "syn",
            Method::Seq => "seq",
            Method::Ts => "ts",
        }
    }
}

/// One RTT measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Time from the data segment to the ACK that covered it, in ns.
    pub rtt_ns: u64,
    /// The rule that produced it.
    pub method: Method,
    /// |this sample − the previous sample of the same half|, if there was one.
    pub jitter_ns: Option<u64>,
}

/// The TCP facts about one packet that the estimator needs, kept flat (no `Option`s): the
/// worker queues a few of them and fills them straight from the header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Packet {
    /// Sequence number.
    pub seq: u32,
    /// Sequence space used (payload + SYN + FIN).
    pub seq_len: u32,
    /// Acknowledgment number, meaningful when the ACK flag is set.
    pub ack: u32,
    /// TSval, meaningful when `has_ts`.
    pub tsval: u32,
    /// TSecr, meaningful when `has_ts`.
    pub tsecr: u32,
    /// The TCP flags byte, as on the wire (see [`crate::decode::flags`]).
    pub tcp_flags: u8,
    /// The timestamp option is present.
    pub has_ts: bool,
}

impl Packet {
    /// A packet from its parts: sequence number, sequence space used, the acknowledgment number
    /// if the ACK flag is set, the SYN and RST flags, and `(TSval, TSecr)` if present.
    pub fn new(
        seq: u32,
        seq_len: u32,
        ack: Option<u32>,
        syn: bool,
        rst: bool,
        ts: Option<(u32, u32)>,
    ) -> Packet {
        let (tsval, tsecr) = ts.unwrap_or((0, 0));
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        Packet {
            seq,
            seq_len,
            ack: ack.unwrap_or(0),
            tsval,
            tsecr,
            tcp_flags: bit(ack.is_some(), flags::ACK) | bit(syn, flags::SYN) | bit(rst, flags::RST),
            has_ts: ts.is_some(),
        }
    }

    /// The acknowledgment number, if the ACK flag is set.
    #[inline]
    pub fn ack(&self) -> Option<u32> {
        (self.tcp_flags & flags::ACK != 0).then_some(self.ack)
    }

    /// TSecr, if the timestamp option is present.
    #[inline]
    pub fn tsecr(&self) -> Option<u32> {
        self.has_ts.then_some(self.tsecr)
    }

    /// True when the SYN flag is set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.tcp_flags & flags::SYN != 0
    }

    /// True when the RST flag is set: an RST's payload is not data.
    #[inline]
    pub fn rst(&self) -> bool {
        self.tcp_flags & flags::RST != 0
    }

    /// True when neither SYN nor RST is set: the segment is past the handshake (a SYN flood's
    /// segments, and the resets that answer them, never are).
    #[inline]
    pub fn established(&self) -> bool {
        self.tcp_flags & (flags::SYN | flags::RST) == 0
    }

    /// True when the FIN or RST flag is set: the connection is closing.
    #[inline]
    pub fn closing(&self) -> bool {
        self.tcp_flags & (flags::FIN | flags::RST) != 0
    }
}

/// Why an ACK that advanced the window gave no sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSample {
    /// Karn's rule: the bytes were sent more than once and timestamps could not tell which copy.
    Karn,
    /// The covered bytes were not tracked (never seen, or tracking was paused).
    Untracked,
}

/// Counters the estimator keeps per worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RttStats {
    /// ACKs that advanced but gave no sample because of Karn's rule.
    pub karn: u64,
    /// ACKs that advanced over bytes that were not tracked.
    pub untracked: u64,
    /// Times a half needed a ring and the pool had none left.
    pub pool_exhausted: u64,
    /// Times a ring filled up and tracking paused.
    pub ring_full: u64,
}

#[inline]
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}
#[inline]
fn seq_le(a: u32, b: u32) -> bool {
    !seq_gt(a, b)
}
#[inline]
fn seq_ge(a: u32, b: u32) -> bool {
    !seq_lt(a, b)
}

/// Per-slot flags.
mod slot {
    /// The segment carried SYN: the TCP flag's own bit, so that a fresh slot takes it as is.
    pub const SYN: u8 = crate::decode::flags::SYN;
    /// Some of its bytes were sent again.
    pub const RETX: u8 = 0x01;
    /// A gap: bytes after it were seen before these were (reordering or capture loss).
    pub const HOLE: u8 = 0x04;
    /// `tsval` holds the segment's TSval.
    pub const TS: u8 = 0x08;
    /// A resend of its bytes could not be recorded, so timestamps cannot settle Karn.
    pub const NOCOPY: u8 = 0x10;
    /// (inline only) the inline slot is in use.
    pub const VALID: u8 = 0x80;
}

/// Per-half flags.
mod half {
    /// A segment from this sender was seen; `snd_max` is valid.
    pub const SND: u8 = 0x01;
    /// An ACK for this half was seen; `ack_max` is valid.
    pub const ACK: u8 = 0x02;
    /// Tracking is paused until the tracked bytes are acknowledged. Set only when a push
    /// fails, so only while something is tracked; cleared whenever nothing is left.
    pub const PAUSED: u8 = 0x04;
    /// `last_rtt` holds the previous sample.
    pub const LAST: u8 = 0x08;
    /// The first segment seen from this sender was a SYN without ACK: it opened the connection.
    pub const OPENED: u8 = 0x10;
    /// The first segment seen from this sender was a SYN/ACK: it accepted the connection.
    pub const ACCEPTED: u8 = 0x20;
}

/// One tracked transmission: when it was captured, where it ends, its TSval and flags.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    t: u64,
    end: u32,
    tsval: u32,
    flags: u8,
}

/// A resend of bytes already tracked: Karn's rule needs each copy's time and TSval.
#[derive(Debug, Clone, Copy, Default)]
struct Resend {
    start: u32,
    end: u32,
    t: u64,
    tsval: u32,
    /// The resent segment's slot flags: `tsval` holds its TSval under [`slot::TS`]. Kept
    /// whole rather than as a bool, so that the data path need not keep the packet's TS flag
    /// apart from the flags it computes anyway (a store on every data segment).
    flags: u8,
}

/// Segments a borrowed ring tracks per half: enough for the ~130 segments in flight that
/// go-metro's scp capture shows, with room to spare.
pub const RING_SLOTS: usize = 256;
/// Resends a ring remembers at once.
const RING_COPIES: usize = 8;

/// The segments in flight of one half, in sending order: slot `i` covers
/// `[end(i-1), end(i))`, slot 0 starts at `start`.
trait Track {
    fn start(&self) -> u32;
    fn set_start(&mut self, s: u32);
    fn len(&self) -> usize;
    fn get(&self, i: usize) -> Slot;
    fn set_flags(&mut self, i: usize, flags: u8);
    fn fill(&mut self, i: usize, t: u64, tsval: u32, flags: u8);
    /// Appends a slot; false when full.
    fn push(&mut self, s: Slot) -> bool;
    fn pop_front(&mut self, n: usize);
    fn copies(&self) -> &[Resend];
    /// Records a resend; false when there is no room.
    fn add_copy(&mut self, c: Resend) -> bool;
    /// Forgets resends wholly at or below `ack`.
    fn drop_copies_upto(&mut self, ack: u32);
    fn clear(&mut self);
}

/// The single slot kept in the flow entry.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Inline {
    t: u64,
    end: u32,
    tsval: u32,
    start: u32,
    flags: u8,
    /// The half's flags (see [`half`]), stored here to use the padding.
    half_flags: u8,
    /// The low half of the caller's cookie for this half (see [`FlowRtt::cookie`]), also in
    /// the padding.
    cookie: u16,
}

impl Track for Inline {
    fn start(&self) -> u32 {
        self.start
    }
    fn set_start(&mut self, s: u32) {
        self.start = s;
    }
    fn len(&self) -> usize {
        usize::from(self.flags & slot::VALID != 0)
    }
    fn get(&self, _i: usize) -> Slot {
        Slot {
            t: self.t,
            end: self.end,
            tsval: self.tsval,
            flags: self.flags & !slot::VALID,
        }
    }
    fn set_flags(&mut self, _i: usize, flags: u8) {
        self.flags = flags | slot::VALID;
    }
    fn fill(&mut self, _i: usize, t: u64, tsval: u32, flags: u8) {
        self.t = t;
        self.tsval = tsval;
        self.flags = flags | slot::VALID;
    }
    fn push(&mut self, s: Slot) -> bool {
        if self.flags & slot::VALID != 0 {
            return false;
        }
        self.t = s.t;
        self.end = s.end;
        self.tsval = s.tsval;
        self.flags = s.flags | slot::VALID;
        true
    }
    fn pop_front(&mut self, n: usize) {
        if n > 0 && self.flags & slot::VALID != 0 {
            self.start = self.end;
            self.flags = 0;
        }
    }
    fn copies(&self) -> &[Resend] {
        &[]
    }
    fn add_copy(&mut self, _c: Resend) -> bool {
        false
    }
    fn drop_copies_upto(&mut self, _ack: u32) {}
    fn clear(&mut self) {
        self.flags = 0;
    }
}

/// A ring of segments borrowed from the pool. Slots are kept as an array of 16-byte structs
/// (time, end, TSval: what an ACK scan reads together, four to a cache line), with their flags
/// packed apart.
pub struct SegRing {
    start: u32,
    head: u16,
    len: u16,
    ncopies: u8,
    slots: [Packed; RING_SLOTS],
    flags: [u8; RING_SLOTS],
    copies: [Resend; RING_COPIES],
}

/// A [`Slot`] without its flags.
#[derive(Debug, Clone, Copy, Default)]
struct Packed {
    t: u64,
    end: u32,
    tsval: u32,
}

impl SegRing {
    fn new() -> SegRing {
        SegRing {
            start: 0,
            head: 0,
            len: 0,
            ncopies: 0,
            slots: [Packed::default(); RING_SLOTS],
            flags: [0; RING_SLOTS],
            copies: [Resend::default(); RING_COPIES],
        }
    }

    #[inline]
    fn idx(&self, i: usize) -> usize {
        (self.head as usize + i) % RING_SLOTS
    }
}

impl Track for SegRing {
    fn start(&self) -> u32 {
        self.start
    }
    fn set_start(&mut self, s: u32) {
        self.start = s;
    }
    fn len(&self) -> usize {
        self.len as usize
    }
    fn get(&self, i: usize) -> Slot {
        let k = self.idx(i);
        let p = self.slots[k];
        Slot {
            t: p.t,
            end: p.end,
            tsval: p.tsval,
            flags: self.flags[k],
        }
    }
    fn set_flags(&mut self, i: usize, flags: u8) {
        let k = self.idx(i);
        self.flags[k] = flags;
    }
    fn fill(&mut self, i: usize, t: u64, tsval: u32, flags: u8) {
        let k = self.idx(i);
        self.slots[k].t = t;
        self.slots[k].tsval = tsval;
        self.flags[k] = flags;
    }
    fn push(&mut self, s: Slot) -> bool {
        if self.len as usize == RING_SLOTS {
            return false;
        }
        let k = self.idx(self.len as usize);
        self.slots[k] = Packed {
            t: s.t,
            end: s.end,
            tsval: s.tsval,
        };
        self.flags[k] = s.flags;
        self.len += 1;
        true
    }
    fn pop_front(&mut self, n: usize) {
        let n = n.min(self.len as usize);
        if n == 0 {
            return;
        }
        self.start = self.slots[self.idx(n - 1)].end;
        self.head = ((self.head as usize + n) % RING_SLOTS) as u16;
        self.len -= n as u16;
    }
    fn copies(&self) -> &[Resend] {
        &self.copies[..self.ncopies as usize]
    }
    fn add_copy(&mut self, c: Resend) -> bool {
        if self.ncopies as usize == RING_COPIES {
            return false;
        }
        self.copies[self.ncopies as usize] = c;
        self.ncopies += 1;
        true
    }
    fn drop_copies_upto(&mut self, ack: u32) {
        let mut k = 0;
        for i in 0..self.ncopies as usize {
            if seq_gt(self.copies[i].end, ack) {
                self.copies[k] = self.copies[i];
                k += 1;
            }
        }
        self.ncopies = k as u8;
    }
    fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
        self.ncopies = 0;
    }
}

/// The worker's pool of rings, shared by all its flows' halves.
///
/// Rings are allocated on first need, up to `max_rings`, and recycled through a free list, so
/// the steady state allocates nothing.
pub struct SegPool {
    rings: Vec<Box<SegRing>>,
    free: Vec<u32>,
    max_rings: usize,
    stats: RttStats,
}

impl SegPool {
    /// A pool that will hold at most `max_rings` rings (about 4.5 KB each), and never more
    /// than 65,535: a half keeps its ring's number + 1 in 16 bits.
    pub fn new(max_rings: usize) -> SegPool {
        SegPool {
            rings: Vec::new(),
            free: Vec::new(),
            max_rings: max_rings.min(usize::from(u16::MAX)),
            stats: RttStats::default(),
        }
    }

    /// The estimator's counters.
    pub fn stats(&self) -> RttStats {
        self.stats
    }

    /// Rings handed out right now.
    pub fn in_use(&self) -> usize {
        self.rings.len() - self.free.len()
    }

    fn acquire(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        if self.rings.len() < self.max_rings {
            self.rings.push(Box::new(SegRing::new()));
            return Some(self.rings.len() as u32 - 1);
        }
        self.stats.pool_exhausted += 1;
        None
    }

    fn release(&mut self, i: u32) {
        self.rings[i as usize].clear();
        self.free.push(i);
    }
}

/// The state of one direction's sender, kept in the flow entry.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Core {
    snd_max: u32,
    ack_max: u32,
    last_rtt: u32,
    /// Pool index + 1 of the borrowed ring; 0 when the half uses its inline slot.
    ring: u16,
    /// The high half of the caller's cookie (see [`FlowRtt::cookie`]).
    cookie_hi: u16,
}

/// A working copy of what the data path changes: `snd_max`, and the half's flags, which are
/// stored in the inline slot's padding to keep a half at 40 bytes.
#[derive(Debug, Clone, Copy)]
struct Work {
    snd_max: u32,
    flags: u8,
}

/// One direction of a flow.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Half {
    inline: Inline,
    core: Core,
}

/// The RTT state of one flow: its two halves, indexed by the side that sends the data.
/// Fits the 80 bytes a 128-byte flow entry leaves for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowRtt {
    halves: [Half; 2],
}

const _: () = assert!(std::mem::size_of::<FlowRtt>() <= 80);

impl FlowRtt {
    /// Feeds one packet sent by `side` at `t`. Returns the sample its ACK gives for the other
    /// side's half, if any.
    #[inline]
    pub fn on_packet(
        &mut self,
        pool: &mut SegPool,
        side: Side,
        p: &Packet,
        t: u64,
    ) -> Option<Sample> {
        // Both halves' addresses chosen at once, without a branch on the side.
        let [h0, h1] = &mut self.halves;
        let (sender, acked) = match side {
            Side::A => (h0, h1),
            Side::B => (h1, h0),
        };
        let sample = match p.ack() {
            Some(ack) => acked.on_ack(pool, ack, t, p.tsecr()),
            None => None,
        };
        // `&`, not `&&`: one branch, where the outcome follows the packet's kind, is one chance
        // to mispredict instead of two.
        if (p.seq_len > 0) & !p.rst() {
            sender.on_data(pool, p, t);
        }
        sample
    }

    /// The side that accepted the connection, its server, when the capture holds its
    /// handshake: the side whose first segment was the SYN/ACK, or the other side of the one
    /// whose first segment was the SYN. `None` when neither was seen.
    pub fn server_side(&self) -> Option<Side> {
        let role =
            |s: Side| self.halves[s.index()].inline.half_flags & (half::OPENED | half::ACCEPTED);
        match (role(Side::A), role(Side::B)) {
            (half::ACCEPTED, _) | (_, half::OPENED) => Some(Side::A),
            (_, half::ACCEPTED) | (half::OPENED, _) => Some(Side::B),
            _ => None,
        }
    }

    /// Gives back any rings the flow holds; call before forgetting the flow.
    pub fn release(&mut self, pool: &mut SegPool) {
        for h in &mut self.halves {
            if h.core.ring != 0 {
                pool.release(u32::from(h.core.ring) - 1);
                h.core.ring = 0;
            }
        }
    }

    /// A 32-bit value the caller may keep with the half whose data `side` sends (the worker
    /// caches how the half is reported here). Zero for a new flow.
    #[inline]
    pub fn cookie(&self, side: Side) -> u32 {
        let h = &self.halves[side.index()];
        u32::from(h.core.cookie_hi) << 16 | u32::from(h.inline.cookie)
    }

    /// Sets the caller's cookie for the half whose data `side` sends.
    #[inline]
    pub fn set_cookie(&mut self, side: Side, v: u32) {
        let h = &mut self.halves[side.index()];
        h.core.cookie_hi = (v >> 16) as u16;
        h.inline.cookie = v as u16;
    }

    /// Whether half `side` currently borrows a ring (for tests and statistics).
    pub fn has_ring(&self, side: Side) -> bool {
        self.halves[side.index()].core.ring != 0
    }
}

impl Half {
    #[inline]
    fn on_data(&mut self, pool: &mut SegPool, p: &Packet, t: u64) {
        let seq = p.seq;
        let end = seq.wrapping_add(p.seq_len);
        let flags = self.inline.half_flags;
        if flags & half::SND == 0 {
            // Who opened the connection is read from its first segment only: once per half,
            // never on the per-packet path.
            let role = match (p.syn(), p.ack().is_some()) {
                (true, false) => half::OPENED,
                (true, true) => half::ACCEPTED,
                (false, _) => 0,
            };
            self.inline.half_flags = flags | half::SND | role;
            self.core.snd_max = end;
            self.inline.clear();
            self.inline.set_start(seq);
            self.inline.push(fresh(p, t, end));
            return;
        }
        // A second segment in flight, or a resend of the one in flight, needs a ring.
        let mut ring = self.core.ring;
        if (ring == 0) & (self.inline.len() > 0) & (flags & half::PAUSED == 0) {
            ring = self.promote(pool);
            self.core.ring = ring;
        }
        // Read after the promotion, so that neither has to outlive that call (a store on
        // every data segment, for the few that promote).
        let mut c = Work {
            snd_max: self.core.snd_max,
            flags: self.inline.half_flags,
        };
        let resend = seq_lt(seq, c.snd_max);
        // Built after the promotion, so that none of it has to outlive that call.
        let fresh = fresh(p, t, end);
        if ring != 0 {
            let ring = &mut *pool.rings[usize::from(ring - 1)];
            data_on(&mut c, ring, &mut pool.stats, seq, end, resend, fresh);
        } else {
            data_on(
                &mut c,
                &mut self.inline,
                &mut pool.stats,
                seq,
                end,
                resend,
                fresh,
            );
        }
        self.core.snd_max = c.snd_max;
        self.inline.half_flags = c.flags;
    }

    /// Moves the inline slot into a ring from the pool; returns the ring handle, or 0.
    fn promote(&mut self, pool: &mut SegPool) -> u16 {
        let Some(i) = pool.acquire() else {
            return 0;
        };
        let ring = &mut *pool.rings[i as usize];
        ring.clear();
        ring.set_start(self.inline.start());
        if self.inline.len() > 0 {
            ring.push(self.inline.get(0));
        }
        self.inline.clear();
        // Pool indexes fit 16 bits (see SegPool::new).
        i as u16 + 1
    }

    /// Works on the half in place rather than on a [`Work`] copy: the fields it changes are
    /// stored as soon as they are known, so that fewer values stay live across the ACK matcher.
    #[inline(always)]
    fn on_ack(
        &mut self,
        pool: &mut SegPool,
        ack: u32,
        t: u64,
        tsecr: Option<u32>,
    ) -> Option<Sample> {
        let flags = self.inline.half_flags;
        let prev = self.core.ack_max;
        // Nothing sent yet, or nothing new acknowledged: one branch for both (see on_packet).
        let stale = (flags & half::ACK != 0) & seq_le(ack, prev);
        if (flags & half::SND == 0) | stale {
            return None;
        }
        let first = flags & half::ACK == 0;
        self.core.ack_max = ack;
        self.inline.half_flags = flags | half::ACK;
        let snd_max = self.core.snd_max;
        // Tracking pauses only while something is tracked, so it resumes when nothing is left.
        // Each branch finishes on its own: merged, the inline matcher's result went through the
        // memory the out-of-line ring matcher returns its result in.
        if self.core.ring != 0 {
            let idx = u32::from(self.core.ring) - 1;
            let ring = &mut *pool.rings[idx as usize];
            let r = ack_on(ring, snd_max, first, prev, ack, tsecr);
            if ring.len() == 0 {
                pool.release(idx);
                self.core.ring = 0;
                self.inline.clear();
                self.inline.set_start(ack);
                self.inline.half_flags &= !half::PAUSED;
            }
            self.finish(&mut pool.stats, r, t)
        } else {
            let r = ack_on(&mut self.inline, snd_max, first, prev, ack, tsecr);
            if self.inline.len() == 0 {
                self.inline.half_flags &= !half::PAUSED;
            }
            self.finish(&mut pool.stats, r, t)
        }
    }

    /// Turns the ACK matcher's result into a sample at `t`, or counts why there is none.
    #[inline(always)]
    fn finish(
        &mut self,
        stats: &mut RttStats,
        result: Result<(u64, Method), NoSample>,
        t: u64,
    ) -> Option<Sample> {
        match result {
            Ok((sent, method)) => {
                let rtt_ns = t.saturating_sub(sent);
                let clipped = rtt_ns.min(u64::from(u32::MAX)) as u32;
                let flags = self.inline.half_flags;
                let jitter_ns = (flags & half::LAST != 0)
                    .then(|| u64::from(clipped.abs_diff(self.core.last_rtt)));
                self.core.last_rtt = clipped;
                self.inline.half_flags = flags | half::LAST;
                Some(Sample {
                    rtt_ns,
                    method,
                    jitter_ns,
                })
            }
            Err(NoSample::Karn) => {
                stats.karn += 1;
                None
            }
            Err(NoSample::Untracked) => {
                stats.untracked += 1;
                None
            }
        }
    }
}

/// The slot for a fresh transmission of `p`, ending at `end`, captured at `t`.
#[inline]
fn fresh(p: &Packet, t: u64, end: u32) -> Slot {
    let ts = if p.has_ts { slot::TS } else { 0 };
    Slot {
        t,
        end,
        // Read only under the TS flag, so it need not be cleared without it.
        tsval: p.tsval,
        flags: (p.tcp_flags & slot::SYN) | ts,
    }
}

/// Rule bookkeeping for a data segment `[seq, end)` on a half tracked by `tr`.
#[inline]
fn data_on<T: Track>(
    c: &mut Work,
    tr: &mut T,
    stats: &mut RttStats,
    seq: u32,
    end: u32,
    resend: bool,
    fresh: Slot,
) {
    if !resend {
        append(c, tr, stats, seq, fresh);
        c.snd_max = end;
        return;
    }
    // Some bytes were seen before: [seq, old_end) is old, anything past snd_max is new.
    let old_end = if seq_gt(end, c.snd_max) {
        c.snd_max
    } else {
        end
    };
    let mut resent_tracked = false;
    let mut lo = tr.start();
    for i in 0..tr.len() {
        let s = tr.get(i);
        let overlaps = seq_lt(seq, s.end) && seq_gt(old_end, lo);
        if overlaps {
            if s.flags & slot::HOLE != 0 {
                // Bytes never seen before: a late (reordered) segment, not a resend.
                tr.fill(i, fresh.t, fresh.tsval, fresh.flags);
            } else {
                tr.set_flags(i, s.flags | slot::RETX);
                resent_tracked = true;
            }
        }
        lo = s.end;
        if seq_ge(lo, old_end) {
            break;
        }
    }
    if resent_tracked {
        let copy = Resend {
            start: seq,
            end: old_end,
            t: fresh.t,
            tsval: fresh.tsval,
            flags: fresh.flags,
        };
        if !tr.add_copy(copy) {
            let mut lo = tr.start();
            for i in 0..tr.len() {
                let s = tr.get(i);
                if seq_lt(seq, s.end) && seq_gt(old_end, lo) && s.flags & slot::HOLE == 0 {
                    tr.set_flags(i, s.flags | slot::NOCOPY);
                }
                lo = s.end;
            }
        }
    }
    if seq_gt(end, c.snd_max) {
        let s = c.snd_max;
        append(c, tr, stats, s, Slot { end, ..fresh });
        c.snd_max = end;
    }
}

/// Appends new bytes `[seq, slot.end)`; a gap before `seq` becomes a hole slot.
#[inline]
fn append<T: Track>(c: &mut Work, tr: &mut T, stats: &mut RttStats, seq: u32, s: Slot) {
    if c.flags & half::PAUSED != 0 {
        return;
    }
    if tr.len() == 0 {
        tr.set_start(seq);
    } else if seq_gt(seq, c.snd_max) {
        let hole = Slot {
            t: 0,
            end: seq,
            tsval: 0,
            flags: slot::HOLE,
        };
        if !tr.push(hole) {
            c.flags |= half::PAUSED;
            stats.ring_full += 1;
            return;
        }
    }
    if !tr.push(s) {
        c.flags |= half::PAUSED;
        stats.ring_full += 1;
    }
}

/// Matches an ACK advancing from `prev` to `ack` against the tracked segments.
/// Returns the send time to time from and the method.
#[inline]
fn ack_on<T: Track>(
    tr: &mut T,
    snd_max: u32,
    first: bool,
    prev: u32,
    ack: u32,
    tsecr: Option<u32>,
) -> Result<(u64, Method), NoSample> {
    if seq_gt(ack, snd_max) {
        // Acknowledges bytes this capture never saw sent.
        tr.clear();
        return Err(NoSample::Untracked);
    }
    let n = tr.len();
    if n == 0 || seq_le(ack, tr.start()) {
        return Err(NoSample::Untracked);
    }
    let last_end = tr.get(n - 1).end;
    if seq_gt(ack, last_end) {
        // The newest covered bytes were sent while tracking was paused.
        tr.clear();
        return Err(NoSample::Untracked);
    }
    let lo = if first || seq_lt(prev, tr.start()) {
        tr.start()
    } else {
        prev
    };
    // The newest covered original transmission.
    let mut newest: Option<(usize, Slot, u32)> = None;
    let mut full = 0;
    let mut hole = false;
    let mut s_start = tr.start();
    for i in 0..n {
        if seq_le(ack, s_start) {
            break;
        }
        let s = tr.get(i);
        if seq_gt(s.end, lo) {
            if s.flags & slot::HOLE != 0 {
                hole = true;
            } else if newest.is_none_or(|(_, b, _)| s.t >= b.t) {
                newest = Some((i, s, s_start));
            }
        }
        if seq_ge(ack, s.end) {
            full = i + 1;
        }
        s_start = s.end;
    }
    let result = judge(tr, newest, hole, lo, ack, tsecr);
    tr.pop_front(full);
    tr.drop_copies_upto(ack);
    if tr.len() == 0 {
        tr.set_start(ack);
    }
    result
}

/// Applies rules 1 and 2 to the covered range `[lo, ack)` once its newest original is known.
#[inline]
fn judge<T: Track>(
    tr: &T,
    newest: Option<(usize, Slot, u32)>,
    hole: bool,
    lo: u32,
    ack: u32,
    tsecr: Option<u32>,
) -> Result<(u64, Method), NoSample> {
    if hole {
        return Err(NoSample::Untracked);
    }
    let (_, orig, orig_start) = newest.ok_or(NoSample::Untracked)?;
    // A resend of covered bytes sent after the newest original makes it the newest segment.
    let newest_copy = tr
        .copies()
        .iter()
        .filter(|k| seq_lt(k.start, ack) && seq_gt(k.end, lo))
        .max_by_key(|k| k.t);
    let (range, resent) = match newest_copy {
        Some(k) if k.t > orig.t => ((k.start, k.end), true),
        _ => ((orig_start, orig.end), orig.flags & slot::RETX != 0),
    };
    if !resent {
        let method = if orig.flags & slot::SYN != 0 {
            Method::Syn
        } else {
            Method::Seq
        };
        return Ok((orig.t, method));
    }
    // Karn's rule: only a TSecr naming exactly one transmission of these bytes may settle it.
    let tsecr = tsecr.ok_or(NoSample::Karn)?;
    let (lo, hi) = range;
    let mut matched: Option<u64> = None;
    let mut matches = 0;
    let mut start = tr.start();
    for i in 0..tr.len() {
        let s = tr.get(i);
        if seq_lt(start, hi) && seq_gt(s.end, lo) && s.flags & slot::HOLE == 0 {
            if s.flags & slot::NOCOPY != 0 {
                return Err(NoSample::Karn);
            }
            if s.flags & slot::TS != 0 && s.tsval == tsecr {
                matches += 1;
                matched = Some(s.t);
            }
        }
        start = s.end;
    }
    for k in tr.copies() {
        if seq_lt(k.start, hi) && seq_gt(k.end, lo) && k.flags & slot::TS != 0 && k.tsval == tsecr {
            matches += 1;
            matched = Some(k.t);
        }
    }
    match (matches, matched) {
        (1, Some(t)) => Ok((t, Method::Ts)),
        _ => Err(NoSample::Karn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Side = Side::A; // client side
    const S: Side = Side::B; // server side

    struct Conv {
        f: FlowRtt,
        pool: SegPool,
    }

    impl Conv {
        fn new() -> Conv {
            Conv {
                f: FlowRtt::default(),
                pool: SegPool::new(4),
            }
        }
        fn data(&mut self, side: Side, seq: u32, len: u32, t: u64, ts: Option<(u32, u32)>) {
            let p = Packet::new(seq, len, None, false, false, ts);
            assert_eq!(self.f.on_packet(&mut self.pool, side, &p, t), None);
        }
        fn ack(&mut self, side: Side, ack: u32, t: u64, ts: Option<(u32, u32)>) -> Option<Sample> {
            let p = Packet::new(0, 0, Some(ack), false, false, ts);
            self.f.on_packet(&mut self.pool, side, &p, t)
        }
    }

    fn rtt(s: Option<Sample>) -> Option<(u64, Method)> {
        s.map(|s| (s.rtt_ns, s.method))
    }

    #[test]
    fn handshake_gives_syn_samples_for_both_halves() {
        let mut c = Conv::new();
        let syn = Packet::new(100, 1, None, true, false, None);
        assert_eq!(c.f.on_packet(&mut c.pool, C, &syn, 1_000), None);
        let synack = Packet::new(500, 1, Some(101), true, false, None);
        let s = c.f.on_packet(&mut c.pool, S, &synack, 21_000);
        assert_eq!(rtt(s), Some((20_000, Method::Syn)));
        let s = c.ack(C, 501, 21_500, None);
        assert_eq!(rtt(s), Some((500, Method::Syn)));
    }

    #[test]
    fn the_server_is_the_side_that_sent_the_synack_or_did_not_send_the_syn() {
        let syn = Packet::new(100, 1, None, true, false, None);
        let synack = Packet::new(500, 1, Some(101), true, false, None);
        let data = Packet::new(101, 10, Some(501), false, false, None);
        for (packets, want) in [
            (&[(C, syn), (S, synack), (C, data)][..], Some(S)),
            // The SYN alone, or the SYN/ACK alone, names the server.
            (&[(C, syn)][..], Some(S)),
            (&[(S, synack), (C, data)][..], Some(S)),
            (&[(S, syn)][..], Some(C)),
            // No handshake: unknown, whatever follows; a SYN after data does not count.
            (&[(C, data)][..], None),
            (&[(C, data), (C, syn)][..], None),
        ] {
            let mut c = Conv::new();
            for (side, p) in packets {
                c.f.on_packet(&mut c.pool, *side, p, 1_000);
            }
            assert_eq!(c.f.server_side(), want, "{packets:?}");
        }
    }

    #[test]
    fn delayed_ack_times_from_the_newest_covered_segment() {
        let mut c = Conv::new();
        c.data(C, 1000, 100, 10, None);
        c.data(C, 1100, 100, 20, None);
        c.data(C, 1200, 100, 30, None);
        assert_eq!(rtt(c.ack(S, 1200, 1_020, None)), Some((1_000, Method::Seq)));
        assert_eq!(c.ack(S, 1200, 1_030, None), None, "duplicate ACK");
        assert_eq!(c.ack(S, 1150, 1_040, None), None, "old ACK");
        assert_eq!(rtt(c.ack(S, 1300, 1_045, None)), Some((1_015, Method::Seq)));
        assert!(!c.f.has_ring(C), "ring returned once everything is acked");
        assert_eq!(c.pool.in_use(), 0);
    }

    #[test]
    fn partial_ack_inside_a_super_frame_times_from_it_twice() {
        let mut c = Conv::new();
        c.data(C, 0, 14480, 100, None);
        assert_eq!(rtt(c.ack(S, 2896, 900, None)), Some((800, Method::Seq)));
        assert_eq!(rtt(c.ack(S, 14480, 950, None)), Some((850, Method::Seq)));
    }

    #[test]
    fn sequence_wraparound() {
        let mut c = Conv::new();
        let base = u32::MAX - 50;
        c.data(C, base, 100, 0, None);
        c.data(C, base.wrapping_add(100), 100, 5, None);
        assert_eq!(
            rtt(c.ack(S, base.wrapping_add(100), 77, None)),
            Some((77, Method::Seq))
        );
        assert_eq!(
            rtt(c.ack(S, base.wrapping_add(200), 90, None)),
            Some((85, Method::Seq))
        );
    }

    #[test]
    fn karn_without_timestamps_gives_nothing() {
        let mut c = Conv::new();
        c.data(C, 0, 100, 0, None);
        c.data(C, 0, 100, 300, None);
        assert_eq!(c.ack(S, 100, 350, None), None);
        assert_eq!(c.pool.stats().karn, 1);
    }

    #[test]
    fn karn_resolved_by_tsecr_of_the_resend() {
        let mut c = Conv::new();
        c.data(C, 0, 100, 0, Some((10, 1)));
        c.data(C, 0, 100, 300, Some((40, 1)));
        assert_eq!(
            rtt(c.ack(S, 100, 350, Some((9, 40)))),
            Some((50, Method::Ts))
        );
    }

    #[test]
    fn spurious_resend_timed_from_the_original_by_tsecr() {
        let mut c = Conv::new();
        c.data(C, 0, 100, 0, Some((10, 1)));
        c.data(C, 0, 100, 300, Some((40, 1)));
        assert_eq!(
            rtt(c.ack(S, 100, 320, Some((9, 10)))),
            Some((320, Method::Ts))
        );
    }

    #[test]
    fn karn_with_equal_tsvals_is_ambiguous() {
        let mut c = Conv::new();
        c.data(C, 0, 100, 0, Some((10, 1)));
        c.data(C, 0, 100, 300, Some((10, 1)));
        assert_eq!(c.ack(S, 100, 350, Some((9, 10))), None);
    }

    #[test]
    fn hole_filled_cumulative_ack_is_timed_from_the_resend() {
        let mut c = Conv::new();
        for i in 0..5u32 {
            c.data(C, i * 100, 100, u64::from(i), Some((i, 0)));
        }
        // Segment 1 lost: dup acks at 100, then the resend, then the jump.
        assert!(c.ack(S, 100, 50, Some((0, 0))).is_some());
        assert_eq!(c.ack(S, 100, 51, Some((0, 0))), None);
        c.data(C, 100, 100, 60, Some((9, 0)));
        assert_eq!(
            rtt(c.ack(S, 500, 110, Some((0, 9)))),
            Some((50, Method::Ts))
        );
    }

    #[test]
    fn reordered_segment_is_new_data_not_a_resend() {
        let mut c = Conv::new();
        c.data(C, 0, 100, 0, None);
        c.data(C, 200, 100, 5, None);
        c.data(C, 100, 100, 8, None);
        assert_eq!(rtt(c.ack(S, 300, 100, None)), Some((92, Method::Seq)));
    }

    #[test]
    fn ack_beyond_anything_seen_gives_nothing() {
        let mut c = Conv::new();
        c.data(C, 0, 100, 0, None);
        assert_eq!(c.ack(S, 5000, 10, None), None);
        c.data(C, 5000, 100, 20, None);
        assert_eq!(rtt(c.ack(S, 5100, 30, None)), Some((10, Method::Seq)));
    }

    #[test]
    fn full_ring_pauses_and_never_misattributes() {
        let mut c = Conv::new();
        let n = RING_SLOTS as u32 + 10;
        for i in 0..n {
            c.data(C, i * 10, 10, u64::from(i), None);
        }
        assert_eq!(c.pool.stats().ring_full, 1);
        // The newest covered bytes were not tracked: no sample.
        assert_eq!(c.ack(S, n * 10, 10_000, None), None);
        c.data(C, n * 10, 10, 10_001, None);
        assert_eq!(
            rtt(c.ack(S, n * 10 + 10, 10_101, None)),
            Some((100, Method::Seq))
        );
    }

    #[test]
    fn jitter_is_difference_of_consecutive_samples() {
        let mut c = Conv::new();
        c.data(C, 0, 10, 0, None);
        assert_eq!(c.ack(S, 10, 100, None).unwrap().jitter_ns, None);
        c.data(C, 10, 10, 200, None);
        assert_eq!(c.ack(S, 20, 270, None).unwrap().jitter_ns, Some(30));
    }

    #[test]
    fn half_fits_in_forty_bytes() {
        assert_eq!(std::mem::size_of::<Half>(), 40);
    }
}
