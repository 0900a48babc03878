//! The per-worker flow table.
//!
//! One worker owns one table, so there is no lock anywhere in it. It is two arrays:
//! - a dense *slab* of entries (the caller's per-flow value, the last-seen time, the key and two
//!   state bits), one per live flow, with no empty slots: an evicted entry's place is taken by
//!   the flow that evicts it, an expired one's by the last entry;
//! - a compact *index*, open addressing with linear probing and backward-shift deletion (no
//!   tombstones) over 8-byte slots, each a 32-bit tag (the key's hash) and the entry's number in
//!   the slab. The index runs at most half full, so a probe rarely leaves its cache line, and a
//!   slot's home is computed from its tag, so that growth, and the backward shift of a deletion,
//!   never read the slab. An entry keeps its tag too, so that its slot is found without hashing
//!   its key again when it is evicted or moved.
//!
//! Only the index has slack, and its slots are small: at `max_flows` flows a table takes
//! `max_flows` × (entry + 2 × 8) bytes, 128 a flow for a worker's 112-byte entry. A lookup is
//! two dependent loads (index slot, then entry); [`FlowTable::locate`] and
//! [`FlowTable::prefetch_entry`] let a caller start each of them early.
//!
//! Bounds, because a sniffer on a busy gateway sees hostile traffic too:
//! - at most `max_flows` entries; when full, a new flow evicts one of a few sampled entries (an
//!   approximate LRU): a closing one (FIN or RST seen) first, then a half-open one (no segment
//!   without SYN or RST seen), an established one last, so that short flows that are done make
//!   room before those still running and a SYN flood evicts its own flows; evictions are counted;
//! - the slab grows by doubling up to exactly `max_flows` entries, and the index doubles (once a
//!   quarter full, to keep probes short) up to exactly `2 × max_flows` slots, so memory follows
//!   the flows actually seen; growth allocates, but only when the flow count doubles, never per
//!   packet;
//! - flows expire after `idle_ttl` of silence, or `exp_ttl` after a FIN or RST, measured on packet
//!   timestamps so a file replays exactly as live traffic would.
//!
//! The table knows nothing about what the value or the key means: callers pass a [`Keeper`]
//! (a closure will do) that is told when a flow is let in, dropped, or restarted, to release
//! whatever its value or key holds. Nor does it know the key's layout, only how to compare it
//! ([`TableKey`]): a worker keeps both families' flows under one 16-byte key, which compares in
//! two instructions ([`PackedKey`]).

use super::key::PackedKey;
use super::prefetch::prefetch;

/// What the table tells its owner about the flows it holds, so that the owner can release what
/// their keys and values hold. Any `FnMut(&mut V)` is a keeper that releases values only.
pub trait Keeper<K, V> {
    /// A new flow's `key` is let in. Called before the table evicts to make room for it.
    fn admit(&mut self, key: &K);
    /// The flow of `key` is dropped (evicted or expired), and `value` with it.
    fn drop_flow(&mut self, key: &K, value: &mut V);
    /// The flow of a key was found expired and starts afresh under the same key: `value`, its
    /// old state, is dropped.
    fn restart(&mut self, value: &mut V);
}

impl<K, V, F: FnMut(&mut V)> Keeper<K, V> for F {
    #[inline]
    fn admit(&mut self, _key: &K) {}

    #[inline]
    fn drop_flow(&mut self, _key: &K, value: &mut V) {
        self(value)
    }

    #[inline]
    fn restart(&mut self, value: &mut V) {
        self(value)
    }
}

/// What the table needs of a key.
pub trait TableKey: Copy + Default {
    /// Equality, in as few wide compares as the layout allows.
    fn same(&self, other: &Self) -> bool;
    /// The 64-bit hash that callers pass with the key: the table keeps its low 32 bits as the
    /// flow's tag (see [`tag_of`]), and never hashes a stored key again.
    fn hash64(&self) -> u64;
}

impl TableKey for PackedKey {
    #[inline]
    fn same(&self, y: &PackedKey) -> bool {
        self == y
    }

    #[inline]
    fn hash64(&self) -> u64 {
        PackedKey::hash64(self)
    }
}

/// An entry's state bits, the two low bits of its [`Entry::meta`] word; the other bits are its
/// tag's, whose two low bits are always set (see [`tag_of`]).
mod state {
    /// A FIN or RST was seen: the flow expires after `exp_ttl` instead of `idle_ttl`.
    pub const CLOSING: u32 = 0x01;
    /// A segment with neither SYN nor RST was seen: the handshake is over, and eviction takes
    /// half-open flows first.
    pub const ESTABLISHED: u32 = 0x02;
    /// Both bits: what a new entry's word leaves clear, and what the tag's always has set.
    pub const BITS: u32 = CLOSING | ESTABLISHED;
}

/// How long flows live without traffic, in nanoseconds of packet time.
#[derive(Debug, Clone, Copy)]
pub struct Ttl {
    /// Silence after which an open flow is forgotten.
    pub idle_ns: u64,
    /// Silence after which a flow that saw FIN or RST is forgotten.
    pub closed_ns: u64,
}

/// One flow: the caller's value, the last-seen time, the normalised key, and its tag and state
/// bits in one word. The value comes first, so that its alignment leaves no hole: with an 80-byte
/// value, 112 bytes under an IPv4 key and 128 under an IPv6 one.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Entry<K, V> {
    /// The caller's per-flow state.
    pub value: V,
    last_seen: u64,
    key: K,
    /// The flow's tag, its two low bits replaced by the [`state`] bits: an eviction finds the
    /// entry's index slot from it without hashing the key again.
    meta: u32,
}

const _: () = assert!(std::mem::size_of::<Entry<PackedKey, [u64; 10]>>() == 112);
const _: () = assert!(std::mem::size_of::<IndexSlot>() == 8);

impl<K, V> Entry<K, V> {
    /// The flow's normalised key.
    #[inline]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Capture time of the flow's last packet, in ns.
    #[inline]
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    /// Notes what a packet of the flow says about its state: `closing` (FIN or RST) makes it
    /// expire after `exp_ttl`; `established` (neither SYN nor RST) marks the handshake as over.
    /// Both stick until the flow is dropped. Without a branch: one is taken on every packet.
    #[inline]
    pub fn note(&mut self, closing: bool, established: bool) {
        self.meta |=
            (u32::from(closing) * state::CLOSING) | (u32::from(established) * state::ESTABLISHED);
    }

    /// True once the flow has seen a segment past the handshake.
    #[inline]
    pub fn established(&self) -> bool {
        self.meta & state::ESTABLISHED != 0
    }

    /// How much the flow is worth keeping when one must be evicted: a closing flow (FIN or RST
    /// seen) least, as it is done; then a half-open one, which a SYN flood makes by the million;
    /// an established one most.
    fn worth(&self) -> u32 {
        if self.meta & state::CLOSING != 0 {
            0
        } else if self.established() {
            2
        } else {
            1
        }
    }

    /// The silence after which the flow expires.
    #[inline]
    fn limit(&self, ttl: &Ttl) -> u64 {
        if self.meta & state::CLOSING != 0 {
            ttl.closed_ns
        } else {
            ttl.idle_ns
        }
    }

    #[inline]
    fn expired(&self, now: u64, ttl: &Ttl) -> bool {
        now.saturating_sub(self.last_seen) > self.limit(ttl)
    }

    /// The flow's tag, as its index slot has it.
    #[inline]
    fn tag(&self) -> u32 {
        self.meta | state::BITS
    }
}

/// One index slot: a flow's tag and its entry's number in the slab. A tag is never 0, so 0 means
/// free.
#[repr(C, align(8))]
#[derive(Clone, Copy, Default)]
struct IndexSlot {
    tag: u32,
    idx: u32,
}

/// Counters the table keeps about itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Flows created.
    pub created: u64,
    /// Flows dropped because the table was full.
    pub evicted: u64,
    /// Flows dropped because their TTL ran out.
    pub expired: u64,
}

/// How many entries an eviction compares (an approximate LRU, as Redis does it).
const EVICTION_SAMPLES: usize = 8;
/// The index's first size, in slots.
const INITIAL_SLOTS: usize = 1024;
/// The slab's first size, in entries.
const INITIAL_ENTRIES: usize = 128;
/// The index doubles when more than 1/`GROW_AT_LOAD` of its slots would be taken: at a quarter a
/// lookup probes 1.17 slots on average (Knuth's `(1 + 1/(1 − α))/2`), nearly always within one
/// cache line. Growth stops at twice `max_flows` slots, half full at the bound; an index slot is
/// 8 bytes, so that slack costs 16 bytes a flow.
const GROW_AT_LOAD: usize = 4;
/// The most flows a table holds: a slot keeps its entry's number in 32 bits, and the index
/// (twice as many slots) is addressed by a 32 × 32-bit product.
const MAX_FLOWS: usize = (u32::MAX / 2) as usize;

/// A bounded flow table owned by one worker.
pub struct FlowTable<K, V> {
    index: Vec<IndexSlot>,
    /// The live flows, densely: `entries.len()` is the number of flows.
    entries: Vec<Entry<K, V>>,
    max_flows: usize,
    max_slots: usize,
    ttl: Ttl,
    stats: TableStats,
    evict_cursor: u32,
    /// Where the next two evictions start sampling, as 32-bit numbers that [`home`] maps onto
    /// the slab: each is drawn two evictions ahead, so that the entries it reaches are loaded
    /// and its first entry's index slot too by the time it is used (see [`FlowTable::evict`]).
    evict_at: [u32; 2],
    /// The last eviction read more than the first entry it sampled: the next ones load all their
    /// samples ahead.
    evict_wide: bool,
}

/// The tag of `hash`: its low 32 bits with the two lowest set, so never 0, and an entry can keep
/// its state bits in their place. The home slot comes from the tag's high bits (see [`home`]),
/// and its low bits tell apart most keys that share a home.
#[inline]
fn tag_of(hash: u64) -> u32 {
    hash as u32 | state::BITS
}

/// The home slot of `tag` in an index of `n` slots: `tag × n / 2³²` (Lemire's multiply-shift),
/// which maps evenly onto any `n`, so the index can be sized to exactly what `max_flows` needs.
#[inline(always)]
fn home(tag: u32, n: usize) -> usize {
    ((u64::from(tag) * n as u64) >> 32) as usize
}

/// The slot after `i` in an index of `n` slots.
#[inline(always)]
fn next(i: usize, n: usize) -> usize {
    if i + 1 == n {
        0
    } else {
        i + 1
    }
}

impl<K: TableKey, V: Default + Copy> FlowTable<K, V> {
    /// A table holding at most `max_flows` flows (at least 1, at most 2³¹ − 1), with the given TTLs.
    pub fn new(max_flows: usize, ttl: Ttl) -> FlowTable<K, V> {
        let max_flows = max_flows.clamp(1, MAX_FLOWS);
        let max_slots = max_flows * 2;
        FlowTable {
            index: vec![IndexSlot::default(); INITIAL_SLOTS.min(max_slots)],
            entries: Vec::with_capacity(INITIAL_ENTRIES.min(max_flows)),
            max_flows,
            max_slots,
            ttl,
            stats: TableStats::default(),
            evict_cursor: 0,
            evict_at: [0, 0x9e37_79b9],
            evict_wide: false,
        }
    }

    /// Number of live flows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no flow is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counters: flows created, evicted, expired.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Bytes the table holds for its flows: the slab's and the index's allocations.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry<K, V>>()
            + self.index.capacity() * std::mem::size_of::<IndexSlot>()
    }

    /// Every live flow, in slab order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<K, V>> {
        self.entries.iter()
    }

    /// The flow at `idx` in the slab (a guess from [`FlowTable::prefetch_entry`]), if any.
    #[inline]
    pub fn entry(&self, idx: u32) -> Option<&Entry<K, V>> {
        self.entries.get(idx as usize)
    }

    /// Every live flow's value, to change in place.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|e| &mut e.value)
    }

    /// Starts loading the index slot where `hash`'s probe starts, and returns its number, for a
    /// caller that passes it to [`FlowTable::prefetch_entry`] a few packets later, once the slot
    /// is in cache.
    #[inline]
    pub fn locate(&self, hash: u64) -> u32 {
        let i = home(tag_of(hash), self.index.len());
        prefetch((&self.index[i] as *const IndexSlot).cast());
        i as u32
    }

    /// Finds, from the slot numbered `start` that [`FlowTable::locate`] gave, the entry that
    /// `hash`'s probe reaches first (the flow's, unless two keys share the tag), starts loading
    /// it, and returns its number: the second of a lookup's two loads, started early. The number
    /// is a guess for [`FlowTable::upsert`], which checks it against the key; it is `u32::MAX`
    /// for a flow not in the table, and may be stale (the index grown, the entry moved) by the
    /// time it is used, which costs a probe, never a wrong answer.
    #[inline]
    pub fn prefetch_entry(&self, start: u32, hash: u64) -> u32 {
        let tag = tag_of(hash);
        let n = self.index.len();
        let mut i = start as usize;
        loop {
            let Some(&s) = self.index.get(i) else {
                return u32::MAX;
            };
            if s.tag == 0 {
                return u32::MAX;
            }
            if s.tag == tag {
                if let Some(e) = self.entries.get(s.idx as usize) {
                    let p: *const u8 = (e as *const Entry<K, V>).cast();
                    prefetch(p);
                    prefetch(p.wrapping_add(64));
                    prefetch(p.wrapping_add(std::mem::size_of::<Entry<K, V>>() - 1));
                }
                return s.idx;
            }
            i = next(i, n);
        }
    }

    /// Finds the flow for `key` (with `hash = key.hash64()`), creating it if needed, and marks
    /// it seen at `now`. `guess` is where it may be (see [`FlowTable::prefetch_entry`]; any value
    /// will do, `u32::MAX` for none). A flow found expired is dropped and started afresh. Returns the entry
    /// and whether it is new. `keeper` is told of the new flow, and of every flow dropped on the
    /// way.
    ///
    /// `keeper` is taken by value (a closure over a reference is one register), and given by
    /// value to the out-of-line insertion: a reference to it would have the caller store it in
    /// memory on every call, for the few calls that drop a flow.
    #[inline(always)]
    pub fn upsert(
        &mut self,
        key: &K,
        hash: u64,
        guess: u32,
        now: u64,
        mut keeper: impl Keeper<K, V>,
    ) -> (&mut Entry<K, V>, bool) {
        // The guess is checked against the key: a key is in the table at most once.
        let hit = matches!(self.entries.get(guess as usize), Some(e) if e.key.same(key));
        let idx = if hit {
            guess as usize
        } else {
            match self.find(key, hash) {
                Some(idx) => idx,
                None => return self.insert(key, hash, now, keeper),
            }
        };
        let ttl = self.ttl;
        let e = &mut self.entries[idx];
        // `expired`, from the last-seen time stored below: `seen - e.last_seen` equals
        // `now.saturating_sub(e.last_seen)`, so the one `max` serves both the check and the store.
        let seen = e.last_seen.max(now);
        let fresh = seen - e.last_seen > e.limit(&ttl);
        if fresh {
            keeper.restart(&mut e.value);
            e.value = V::default();
            e.meta &= !state::BITS;
            self.stats.expired += 1;
            self.stats.created += 1;
        }
        e.last_seen = seen;
        (e, fresh)
    }

    /// The entry of `key` (hashed to `hash`), by a probe of the index. Out of line: most
    /// packets' flows are where the guess says.
    #[inline(never)]
    fn find(&self, key: &K, hash: u64) -> Option<usize> {
        let tag = tag_of(hash);
        let n = self.index.len();
        let mut i = home(tag, n);
        loop {
            let s = self.index[i];
            if s.tag == 0 {
                return None;
            }
            if s.tag == tag && self.entries[s.idx as usize].key.same(key) {
                return Some(s.idx as usize);
            }
            i = next(i, n);
        }
    }

    /// The rest of [`FlowTable::upsert`] for a flow not found: makes room, then inserts.
    /// Out of line: most packets find their flow.
    #[inline(never)]
    fn insert(
        &mut self,
        key: &K,
        hash: u64,
        now: u64,
        mut keeper: impl Keeper<K, V>,
    ) -> (&mut Entry<K, V>, bool) {
        // Before the eviction, which may let go of what the new key holds too.
        keeper.admit(key);
        let entry = Entry {
            value: V::default(),
            last_seen: now,
            key: *key,
            meta: tag_of(hash) & !state::BITS,
        };
        let idx = if self.len() >= self.max_flows {
            // The new flow takes the victim's place in the slab, so that no other entry moves
            // (a move would cost a second index probe, and make stale the guesses of the flows
            // in progress).
            let idx = self.evict(hash, &mut keeper);
            self.entries[idx] = entry;
            idx
        } else {
            if (self.len() + 1) * GROW_AT_LOAD > self.index.len()
                && self.index.len() < self.max_slots
            {
                self.grow_index();
            }
            let idx = self.entries.len();
            if idx == self.entries.capacity() {
                // Doubling, but never past `max_flows`: at the bound the slab has no slack.
                let want = (idx * 2).clamp(INITIAL_ENTRIES, self.max_flows);
                self.entries.reserve_exact(want - idx);
            }
            self.entries.push(entry);
            idx
        };
        self.place(tag_of(hash), idx as u32);
        self.stats.created += 1;
        (&mut self.entries[idx], true)
    }

    /// Puts (`tag`, `idx`) in the first free slot of `tag`'s probe.
    fn place(&mut self, tag: u32, idx: u32) {
        let n = self.index.len();
        let mut i = home(tag, n);
        while self.index[i].tag != 0 {
            i = next(i, n);
        }
        self.index[i] = IndexSlot { tag, idx };
    }

    /// The index slot that points at entry `idx`.
    fn slot_of(&self, idx: usize) -> usize {
        let tag = self.entries[idx].tag();
        let n = self.index.len();
        let mut i = home(tag, n);
        while self.index[i].idx as usize != idx || self.index[i].tag != tag {
            i = next(i, n);
        }
        i
    }

    /// Drops every flow whose TTL has run out at `now`.
    pub fn expire(&mut self, now: u64, keeper: &mut impl Keeper<K, V>) {
        let ttl = self.ttl;
        let mut i = 0;
        while i < self.entries.len() {
            let e = &mut self.entries[i];
            if e.expired(now, &ttl) {
                keeper.drop_flow(&e.key, &mut e.value);
                self.remove(i);
                self.stats.expired += 1;
                // remove moved the last entry into i: look at it again.
            } else {
                i += 1;
            }
        }
    }

    /// Drops every flow, releasing its value (used at shutdown).
    pub fn clear(&mut self, keeper: &mut impl Keeper<K, V>) {
        for e in &mut self.entries {
            keeper.drop_flow(&e.key, &mut e.value);
        }
        self.entries.clear();
        self.index.fill(IndexSlot::default());
    }

    /// Evicts one flow: of [`EVICTION_SAMPLES`] entries in a row from a point that moves and is
    /// mixed with the hashes of new flows (so that an attacker cannot aim it), the first closing
    /// one, or else the least recently seen of those least worth keeping (half-open, then
    /// established).
    ///
    /// An eviction's entries and its victim's index slot are cold: read on the spot they would be
    /// two dependent misses a new flow waits for. So the point is drawn two evictions ahead (from
    /// this flow's hash) and its first entry loaded then; one eviction ahead, that entry (a
    /// closing one is the victim) has its index slot loaded. Any point is as good as any other,
    /// so one that the slab's changes in between have made stale costs a miss, never a wrong
    /// choice.
    ///
    /// The victim's place in the slab is left to the caller: this chooses the victim, tells the
    /// keeper, takes it out of the index, counts it, and returns its place, which the caller must
    /// fill. The table must not be empty.
    fn evict(&mut self, hash: u64, keeper: &mut impl Keeper<K, V>) -> usize {
        let n = self.entries.len();
        let (victim, read) = self.choose(home(self.evict_at[0], n), n);
        self.evict_wide = read > 1;
        self.evict_at = [self.evict_at[1], (hash >> 32) as u32 ^ self.evict_cursor];
        self.evict_cursor = self.evict_cursor.wrapping_add(0x9e37_79b9);
        let e = &mut self.entries[victim];
        keeper.drop_flow(&e.key, &mut e.value);
        self.unlink(victim);
        self.stats.evicted += 1;
        // The next eviction comes once the victim's place is filled or the slab refilled: with
        // `n` entries again.
        self.prefetch_eviction(n);
        victim
    }

    /// The victim of an eviction that samples from entry `pos` of `n`, and how many entries it
    /// read: of [`EVICTION_SAMPLES`] entries in a row, the first closing one, or else the least
    /// recently seen of those least worth keeping.
    #[inline]
    fn choose(&self, mut pos: usize, n: usize) -> (usize, usize) {
        let mut victim = pos;
        let mut best = (u32::MAX, u64::MAX);
        let mut read = 0;
        while read < EVICTION_SAMPLES.min(n) {
            let e = &self.entries[pos];
            read += 1;
            let rank = (e.worth(), e.last_seen);
            if rank < best {
                best = rank;
                victim = pos;
            }
            if rank.0 == 0 {
                // A closing flow is done: the first one sampled goes, without reading the rest
                // (with many short flows most entries are closing, and each read is a miss).
                break;
            }
            pos = next(pos, n);
        }
        (victim, read)
    }

    /// Starts loading what the next two evictions will read (see [`FlowTable::evict`]), in a
    /// slab of `n` entries: the index slot of the next one's victim as it stands, from entries
    /// loaded since the last eviction, and the entries of the one after. While evictions find a
    /// closing flow first, as under churn, that is one entry each; once one had to read further,
    /// as under a SYN flood, whose flows are all half-open, it is all the sampled entries.
    #[inline]
    fn prefetch_eviction(&self, n: usize) {
        let size = std::mem::size_of::<Entry<K, V>>();
        let first = home(self.evict_at[0], n);
        if first < self.entries.len() {
            let victim = if self.evict_wide {
                self.choose(first, self.entries.len()).0
            } else {
                first
            };
            let i = home(self.entries[victim].tag(), self.index.len());
            prefetch((&self.index[i] as *const IndexSlot).cast());
        }
        if let Some(e) = self.entries.get(home(self.evict_at[1], n)) {
            let p: *const u8 = (e as *const Entry<K, V>).cast();
            let bytes = if self.evict_wide {
                EVICTION_SAMPLES * size
            } else {
                size
            };
            // Every 64 bytes, and the last byte, which a stride that starts mid-line can miss.
            let mut off = 0;
            while off < bytes {
                prefetch(p.wrapping_add(off));
                off += 64;
            }
            prefetch(p.wrapping_add(bytes - 1));
        }
    }

    /// Removes entry `idx`: its index slot, and its place in the slab, filled by the last entry.
    fn remove(&mut self, idx: usize) {
        self.unlink(idx);
        self.remove_entry(idx);
    }

    /// Takes entry `idx` out of the index, with backward-shift deletion, which keeps every probe
    /// chain unbroken. The entry stays in the slab, found by no lookup.
    fn unlink(&mut self, idx: usize) {
        let mut i = self.slot_of(idx);
        let n = self.index.len();
        let mut j = i;
        loop {
            j = next(j, n);
            let s = self.index[j];
            if s.tag == 0 {
                break;
            }
            let h = home(s.tag, n);
            // Slot j may move back to i only if its home is not in the cyclic range (i, j].
            let stays = if i <= j {
                i < h && h <= j
            } else {
                i < h || h <= j
            };
            if !stays {
                self.index[i] = s;
                i = j;
            }
        }
        self.index[i] = IndexSlot::default();
    }

    /// Removes entry `idx`, already unlinked, from the slab: the last entry takes its place.
    fn remove_entry(&mut self, idx: usize) {
        let last = self.entries.len() - 1;
        if idx != last {
            let moved = self.slot_of(last);
            self.index[moved].idx = idx as u32;
            self.entries.swap(idx, last);
        }
        self.entries.pop();
    }

    /// Doubles the index, up to `max_slots`; the slab is not read.
    fn grow_index(&mut self) {
        let n = (self.index.len() * 2).min(self.max_slots);
        let old = std::mem::replace(&mut self.index, vec![IndexSlot::default(); n]);
        for s in old.into_iter().filter(|s| s.tag != 0) {
            self.place(s.tag, s.idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Ttl = Ttl {
        idle_ns: 10_000,
        closed_ns: 1_000,
    };

    fn key(n: u32) -> PackedKey {
        PackedKey::new(n, 1000, 0x0a00_0001, 80).0
    }

    fn up(t: &mut FlowTable<PackedKey, u64>, k: &PackedKey, now: u64) -> bool {
        t.upsert(k, k.hash64(), u32::MAX, now, |_: &mut u64| {}).1
    }

    #[test]
    fn finds_what_it_inserted_across_growth() {
        let mut t = FlowTable::<PackedKey, u64>::new(100_000, TTL);
        for n in 0..5000 {
            assert!(up(&mut t, &key(n), 1));
            t.upsert(&key(n), key(n).hash64(), u32::MAX, 1, |_: &mut u64| {})
                .0
                .value = u64::from(n);
        }
        for n in 0..5000 {
            let (e, new) = t.upsert(&key(n), key(n).hash64(), u32::MAX, 2, |_: &mut u64| {});
            assert!(!new);
            assert_eq!(e.value, u64::from(n));
        }
        assert_eq!(t.len(), 5000);
    }

    #[test]
    fn any_guess_finds_the_flow_and_only_it() {
        let mut t = FlowTable::<PackedKey, u64>::new(1000, TTL);
        for n in 0..300 {
            t.upsert(&key(n), key(n).hash64(), u32::MAX, 1, |_: &mut u64| {})
                .0
                .value = u64::from(n);
        }
        for n in 0..300 {
            let k = key(n);
            let right = t.prefetch_entry(t.locate(k.hash64()), k.hash64());
            for guess in [right, 0, 299, (n * 7) % 300, 300, u32::MAX] {
                let (e, new) = t.upsert(&k, k.hash64(), guess, 2, |_: &mut u64| {});
                assert!(!new && e.value == u64::from(n), "flow {n}, guess {guess}");
            }
        }
        let k = key(5000);
        assert_eq!(t.prefetch_entry(t.locate(k.hash64()), k.hash64()), u32::MAX);
        assert!(
            up(&mut t, &k, 3),
            "a flow not in the table is new whatever the guess"
        );
    }

    #[test]
    fn grows_at_a_quarter_full_and_stops_at_exactly_what_the_bound_needs() {
        // 1,000 flows: a slab of 1,000 entries and an index of 2,000 slots at the bound.
        let mut t = FlowTable::<PackedKey, u64>::new(1000, TTL);
        assert_eq!((t.index.len(), t.entries.capacity()), (INITIAL_SLOTS, 128));
        for n in 0..256 {
            up(&mut t, &key(n), 1);
        }
        assert_eq!(
            (t.index.len(), t.entries.capacity()),
            (1024, 256),
            "256 flows are a quarter of 1,024 slots"
        );
        up(&mut t, &key(256), 1);
        assert_eq!(
            (t.index.len(), t.entries.capacity()),
            (2000, 512),
            "the 257th flow grows the index to the bound's size, and the slab"
        );
        for n in 257..1000 {
            up(&mut t, &key(n), 1);
        }
        assert_eq!(
            (t.index.len(), t.entries.capacity()),
            (2000, 1000),
            "no growth past the bound"
        );
        assert_eq!(t.len(), 1000);
        assert!(
            (0..1000).all(|n| !up(&mut t, &key(n), 2)),
            "every flow is found"
        );
        assert_eq!(t.stats().evicted, 0);
        assert_eq!(
            t.bytes(),
            1000 * (std::mem::size_of::<Entry<PackedKey, u64>>() + 16)
        );
    }

    #[test]
    fn full_table_evicts_the_least_recently_seen_and_counts_it() {
        let mut t = FlowTable::<PackedKey, u64>::new(8, TTL);
        for n in 0..8 {
            up(&mut t, &key(n), 100 + u64::from(n));
        }
        let mut released = 0;
        t.upsert(&key(99), key(99).hash64(), u32::MAX, 200, |_: &mut u64| {
            released += 1
        });
        assert_eq!(t.len(), 8);
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(released, 1);
        assert!(
            up(&mut t, &key(0), 201),
            "flow 0 was the oldest and must be gone"
        );
    }

    #[test]
    fn an_evicting_flow_takes_its_victims_place_and_moves_no_other() {
        let mut t = FlowTable::<PackedKey, u64>::new(64, TTL);
        for n in 0..64 {
            up(&mut t, &key(n), 100 + u64::from(n));
        }
        for n in 64..200 {
            let before: Vec<PackedKey> = t.iter().map(|e| *e.key()).collect();
            up(&mut t, &key(n), 100 + u64::from(n));
            let after: Vec<PackedKey> = t.iter().map(|e| *e.key()).collect();
            let changed: Vec<usize> = (0..64).filter(|&i| before[i] != after[i]).collect();
            assert_eq!(changed.len(), 1, "flow {n}");
            assert_eq!(after[changed[0]], key(n), "flow {n}");
        }
        assert_eq!(t.stats().evicted, 136);
        let live: Vec<PackedKey> = t.iter().map(|e| *e.key()).collect();
        assert!(
            live.iter().all(|k| !up(&mut t, k, 300)),
            "every flow is found"
        );
    }

    #[test]
    fn eviction_takes_closing_then_half_open_flows_before_older_established_ones() {
        let mut t = FlowTable::<PackedKey, u64>::new(8, TTL);
        for n in 0..8 {
            let established = n == 0 || n == 5 || n == 6;
            let k = key(n);
            let (e, _) = t.upsert(
                &k,
                k.hash64(),
                u32::MAX,
                100 + u64::from(n),
                |_: &mut u64| {},
            );
            e.note(n == 6, established);
        }
        up(&mut t, &key(99), 200);
        up(&mut t, &key(98), 201);
        assert_eq!(t.stats().evicted, 2);
        assert!(
            !up(&mut t, &key(0), 202),
            "the oldest flow is established and stays"
        );
        assert!(up(&mut t, &key(6), 203), "the closing flow went first");
        assert!(up(&mut t, &key(1), 204), "then the oldest half-open one");
    }

    #[test]
    fn index_and_slab_stay_consistent_through_evictions_and_expiries() {
        let mut t = FlowTable::<PackedKey, u64>::new(300, TTL);
        let mut live = std::collections::BTreeMap::new();
        for n in 0..5000u32 {
            let now = u64::from(n) * 7;
            let (e, new) = t.upsert(&key(n), key(n).hash64(), u32::MAX, now, |v: &mut u64| {
                assert!(live.remove(v).is_some(), "released flow {v} was live");
            });
            assert!(new);
            e.value = u64::from(n);
            live.insert(u64::from(n), ());
            if n % 1000 == 999 {
                t.expire(now, &mut |v: &mut u64| {
                    assert!(live.remove(v).is_some(), "expired flow {v} was live");
                });
            }
            assert_eq!(t.len(), live.len());
        }
        for &v in live.keys() {
            let k = key(v as u32);
            let (e, new) = t.upsert(&k, k.hash64(), u32::MAX, 35_000, |_: &mut u64| {});
            assert!(!new, "flow {v} is found");
            assert_eq!(e.value, v);
        }
        let s = t.stats();
        assert_eq!(s.created, 5000);
        assert_eq!(s.created - s.evicted - s.expired, t.len() as u64);
    }

    #[test]
    fn idle_and_closed_flows_expire_on_packet_time() {
        let mut t = FlowTable::<PackedKey, u64>::new(64, TTL);
        up(&mut t, &key(1), 0);
        up(&mut t, &key(2), 0);
        t.upsert(&key(2), key(2).hash64(), u32::MAX, 0, |_: &mut u64| {})
            .0
            .note(true, false);
        t.expire(1_001, &mut |_: &mut u64| {});
        assert_eq!(t.len(), 1, "the closed flow expires after exp_ttl");
        t.expire(10_000, &mut |_: &mut u64| {});
        assert_eq!(t.len(), 1, "idle_ttl is not yet over");
        t.expire(10_001, &mut |_: &mut u64| {});
        assert!(t.is_empty());
        assert_eq!(t.stats().expired, 2);
    }

    #[test]
    fn expired_flow_found_on_lookup_starts_afresh() {
        let mut t = FlowTable::<PackedKey, u64>::new(64, TTL);
        t.upsert(&key(1), key(1).hash64(), u32::MAX, 0, |_: &mut u64| {})
            .0
            .value = 7;
        let (e, new) = t.upsert(&key(1), key(1).hash64(), u32::MAX, 20_000, |_: &mut u64| {});
        assert!(new);
        assert_eq!(e.value, 0);
    }

    #[test]
    fn an_entry_keeps_its_tag_whatever_its_state() {
        let mut t = FlowTable::<PackedKey, u64>::new(64, TTL);
        for (n, (closing, established)) in
            [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .enumerate()
        {
            let k = key(n as u32);
            let tag = tag_of(k.hash64());
            let (e, _) = t.upsert(&k, k.hash64(), u32::MAX, 0, |_: &mut u64| {});
            e.note(closing, established);
            assert_eq!(e.tag(), tag, "flow {n}");
            assert_eq!(e.established(), established, "flow {n}");
            assert_eq!(e.limit(&TTL) == TTL.closed_ns, closing, "flow {n}");
            // Found expired, the flow starts afresh: its state goes, its tag stays.
            let (e, new) = t.upsert(&k, k.hash64(), u32::MAX, 50_000, |_: &mut u64| {});
            assert!(new);
            assert_eq!((e.tag(), e.established()), (tag, false), "flow {n}");
            assert_eq!(e.limit(&TTL), TTL.idle_ns, "flow {n}");
        }
    }

    #[test]
    fn deletion_keeps_probe_chains_intact() {
        let mut t = FlowTable::<PackedKey, u64>::new(512, TTL);
        for n in 0..400 {
            up(&mut t, &key(n), u64::from(n % 2) * 50_000);
        }
        // Every even flow is idle since 0; odd ones were seen at 50_000.
        t.expire(55_000, &mut |_: &mut u64| {});
        assert_eq!(t.len(), 200);
        for n in (1..400).step_by(2) {
            assert!(!up(&mut t, &key(n), 55_000), "flow {n} lost by deletion");
        }
    }
}
