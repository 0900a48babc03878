//! The per-worker flow table.
//!
//! One worker owns one table, so there is no lock anywhere in it. It is an open-addressing hash
//! table with linear probing and backward-shift deletion (no tombstones), over entries of a fixed
//! 128 bytes: the key, a tag word (30 hash bits and 2 state bits), the last-seen time and the
//! caller's per-flow value.
//!
//! Bounds, because a sniffer on a busy gateway sees hostile traffic too:
//! - at most `max_flows` entries; when full, a new flow evicts the least recently seen of a few
//!   sampled entries (an approximate LRU), and the eviction is counted;
//! - the table grows by doubling (once an eighth full, to keep probes short) up to the size
//!   `max_flows` needs at 50 % load, so memory follows the flows actually seen; growth
//!   allocates, but only when the flow count doubles, never per packet;
//! - flows expire after `idle_ttl` of silence, or `exp_ttl` after a FIN or RST, measured on packet
//!   timestamps so a file replays exactly as live traffic would.
//!
//! The table knows nothing about what the value means: callers pass a closure that releases
//! whatever a value holds when its flow is dropped. Nor does it know the key's layout, only how
//! to compare and hash it ([`TableKey`]): a worker keeps IPv4 flows under a 16-byte key, which
//! orders, hashes and compares in a few instructions, and IPv6 flows under the full one.

use super::key::{FlowKey, Key4};

/// What the table needs of a key.
pub trait TableKey: Copy + Default {
    /// Equality, in as few wide compares as the layout allows.
    fn same(&self, other: &Self) -> bool;
    /// The key's 64-bit hash: the slot comes from its low bits, the tag from its high ones.
    fn hash64(&self) -> u64;
}

impl TableKey for FlowKey {
    /// Three wide compares (the derived `==` compares the arrays byte-wise).
    #[inline]
    fn same(&self, y: &FlowKey) -> bool {
        u128::from_ne_bytes(self.a.0) == u128::from_ne_bytes(y.a.0)
            && u128::from_ne_bytes(self.b.0) == u128::from_ne_bytes(y.b.0)
            && (self.a_port, self.b_port) == (y.a_port, y.b_port)
    }

    #[inline]
    fn hash64(&self) -> u64 {
        FlowKey::hash64(self)
    }
}

impl TableKey for Key4 {
    #[inline]
    fn same(&self, y: &Key4) -> bool {
        self == y
    }

    #[inline]
    fn hash64(&self) -> u64 {
        Key4::hash64(self)
    }
}

/// The bits of an entry's tag word: two state bits, then 30 bits of the key's hash.
mod tag {
    /// The slot holds a flow.
    pub const OCCUPIED: u32 = 0x01;
    /// A FIN or RST was seen: the flow expires after `exp_ttl` instead of `idle_ttl`.
    pub const CLOSING: u32 = 0x02;
    /// The state bits; the rest is the hash.
    pub const STATE: u32 = OCCUPIED | CLOSING;
}

/// How long flows live without traffic, in nanoseconds of packet time.
#[derive(Debug, Clone, Copy)]
pub struct Ttl {
    /// Silence after which an open flow is forgotten.
    pub idle_ns: u64,
    /// Silence after which a flow that saw FIN or RST is forgotten.
    pub closed_ns: u64,
}

/// One flow: the normalised key, bookkeeping, and the caller's value. Kept to 128 bytes, aligned
/// to exactly two cache lines, when `V` is at most 80 bytes.
#[repr(C, align(64))]
#[derive(Clone, Copy, Default)]
pub struct Entry<K, V> {
    key: K,
    /// State bits and hash bits (see [`tag`]): one compare rejects most slots that are not the
    /// flow's, and zero means free.
    tag: u32,
    last_seen: u64,
    /// The caller's per-flow state.
    pub value: V,
}

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

    /// Marks the flow as closing (FIN or RST seen), so it expires after `exp_ttl`.
    #[inline]
    pub fn set_closing(&mut self) {
        self.tag |= tag::CLOSING;
    }

    #[inline]
    fn occupied(&self) -> bool {
        self.tag & tag::OCCUPIED != 0
    }

    /// The silence after which the flow expires.
    #[inline]
    fn limit(&self, ttl: &Ttl) -> u64 {
        if self.tag & tag::CLOSING != 0 {
            ttl.closed_ns
        } else {
            ttl.idle_ns
        }
    }

    #[inline]
    fn expired(&self, now: u64, ttl: &Ttl) -> bool {
        now.saturating_sub(self.last_seen) > self.limit(ttl)
    }
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

/// How many occupied entries an eviction compares (an approximate LRU, as Redis does it).
const EVICTION_SAMPLES: usize = 8;
/// The table's first size, in slots.
const INITIAL_SLOTS: usize = 1024;
/// The table doubles when more than 1/`GROW_AT_LOAD` of its slots would be taken. At an eighth
/// a lookup probes 1.07 slots on average, against 1.5 at half load (Knuth's `(1 + 1/(1 − α))/2`),
/// and each extra probe is a branch the CPU mispredicts: on the benchmark mix this is worth about
/// 5 % of the time a packet takes. Growth stops at the size `max_flows` needs at half load, so the
/// memory bound is unchanged; an empty slot costs cache only when a probe ends on it.
const GROW_AT_LOAD: usize = 8;

/// A bounded flow table owned by one worker.
pub struct FlowTable<K, V> {
    slots: Vec<Entry<K, V>>,
    mask: usize,
    len: usize,
    max_flows: usize,
    max_slots: usize,
    ttl: Ttl,
    stats: TableStats,
    evict_cursor: usize,
}

/// The tag of an occupied, open entry for `hash`: its top 30 bits (the slot index comes from the
/// low bits), and the occupied bit.
#[inline]
fn tag_of(hash: u64) -> u32 {
    ((hash >> 32) as u32 & !tag::STATE) | tag::OCCUPIED
}

impl<K: TableKey, V: Default + Copy> FlowTable<K, V> {
    /// A table holding at most `max_flows` flows (at least 1), with the given TTLs.
    pub fn new(max_flows: usize, ttl: Ttl) -> FlowTable<K, V> {
        let max_flows = max_flows.max(1);
        let max_slots = (max_flows * 2).next_power_of_two();
        let n = INITIAL_SLOTS.min(max_slots);
        FlowTable {
            slots: vec![Entry::default(); n],
            mask: n - 1,
            len: 0,
            max_flows,
            max_slots,
            ttl,
            stats: TableStats::default(),
            evict_cursor: 0,
        }
    }

    /// Number of live flows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no flow is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counters: flows created, evicted, expired.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Every live flow, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<K, V>> {
        self.slots.iter().filter(|e| e.occupied())
    }

    /// Every live flow's value, to change in place.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots
            .iter_mut()
            .filter(|e| e.occupied())
            .map(|e| &mut e.value)
    }

    /// Where the slot `hash`'s probe begins lives (two cache lines from there), for a caller
    /// that prefetches it so that a later [`FlowTable::upsert`] finds it in cache.
    #[inline]
    pub fn slot_addr(&self, hash: u64) -> *const u8 {
        (&self.slots[hash as usize & self.mask] as *const Entry<K, V>).cast()
    }

    /// Finds the flow for `key` (with `hash = key.hash64()`), creating it if needed, and marks
    /// it seen at `now`. A flow found expired is dropped and started afresh. Returns the entry
    /// and whether it is new. `release` is called on the value of every flow dropped on the way.
    ///
    /// `release` is taken by value (a closure over a reference is one register), and given by
    /// value to the out-of-line insertion: a reference to it would have the caller store it in
    /// memory on every call, for the few calls that drop a flow.
    #[inline]
    pub fn upsert(
        &mut self,
        key: &K,
        hash: u64,
        now: u64,
        release: impl FnMut(&mut V),
    ) -> (&mut Entry<K, V>, bool) {
        self.find_or_insert(key, hash, now, None::<&mut Self>, release)
    }

    /// [`FlowTable::upsert`] for a table that shares its `max_flows` with `other` (of the same
    /// bound): a new flow evicts one of this table's once they hold `max_flows` together, or, when
    /// `other` holds all of them (and this one none), one of `other`'s. `other` is looked at only
    /// for a new flow, so that a packet of a known one does not pay for it.
    #[inline]
    pub fn upsert_sharing<O: TableKey>(
        &mut self,
        key: &K,
        hash: u64,
        now: u64,
        other: &mut FlowTable<O, V>,
        release: impl FnMut(&mut V),
    ) -> (&mut Entry<K, V>, bool) {
        self.find_or_insert(key, hash, now, Some(other), release)
    }

    /// [`FlowTable::upsert`], with the table that shares the bound if there is one.
    #[inline(always)]
    fn find_or_insert<O: TableKey>(
        &mut self,
        key: &K,
        hash: u64,
        now: u64,
        other: Option<&mut FlowTable<O, V>>,
        mut release: impl FnMut(&mut V),
    ) -> (&mut Entry<K, V>, bool) {
        let tag = tag_of(hash);
        let mut i = hash as usize & self.mask;
        loop {
            let e = &self.slots[i];
            if !e.occupied() {
                break;
            }
            if e.tag & !tag::CLOSING == tag && e.key.same(key) {
                let ttl = self.ttl;
                let e = &mut self.slots[i];
                // `expired`, from the last-seen time stored below: `seen - e.last_seen` is
                // `now.saturating_sub(e.last_seen)`, and comes with it (3 instructions fewer).
                let seen = e.last_seen.max(now);
                let fresh = seen - e.last_seen > e.limit(&ttl);
                if fresh {
                    release(&mut e.value);
                    e.value = V::default();
                    e.tag = tag;
                    self.stats.expired += 1;
                    self.stats.created += 1;
                }
                e.last_seen = seen;
                return (e, fresh);
            }
            i = (i + 1) & self.mask;
        }
        self.insert(key, hash, now, other, release)
    }

    /// The rest of [`FlowTable::find_or_insert`] for a flow not found: makes room, then inserts.
    /// Out of line: most packets find their flow.
    #[inline(never)]
    fn insert<O: TableKey>(
        &mut self,
        key: &K,
        hash: u64,
        now: u64,
        other: Option<&mut FlowTable<O, V>>,
        mut release: impl FnMut(&mut V),
    ) -> (&mut Entry<K, V>, bool) {
        let tag = tag_of(hash);
        // The flows the other table holds, once it has given one up if it holds them all (then
        // this one is empty); `hash`, the new flow's, seeds the choice.
        let others = match other {
            Some(o) => {
                if o.len >= self.max_flows {
                    o.evict_one(hash, &mut release);
                }
                o.len
            }
            None => 0,
        };
        if self.len > 0 && self.len + others >= self.max_flows {
            self.evict_one(hash, &mut release);
        } else if (self.len + 1) * GROW_AT_LOAD > self.slots.len()
            && self.slots.len() < self.max_slots
        {
            self.grow();
        }
        let mut i = hash as usize & self.mask;
        while self.slots[i].occupied() {
            i = (i + 1) & self.mask;
        }
        self.len += 1;
        self.stats.created += 1;
        let e = &mut self.slots[i];
        *e = Entry {
            key: *key,
            tag,
            last_seen: now,
            value: V::default(),
        };
        (e, true)
    }

    /// Drops every flow whose TTL has run out at `now`.
    pub fn expire(&mut self, now: u64, release: &mut impl FnMut(&mut V)) {
        let ttl = self.ttl;
        let mut i = 0;
        while i < self.slots.len() {
            let e = &mut self.slots[i];
            if e.occupied() && e.expired(now, &ttl) {
                release(&mut e.value);
                self.remove_at(i);
                self.stats.expired += 1;
                // remove_at may have shifted another entry into slot i: look at it again.
            } else {
                i += 1;
            }
        }
    }

    /// Drops every flow, releasing its value (used at shutdown).
    pub fn clear(&mut self, release: &mut impl FnMut(&mut V)) {
        for e in self.slots.iter_mut().filter(|e| e.occupied()) {
            release(&mut e.value);
            *e = Entry::default();
        }
        self.len = 0;
    }

    fn evict_one(&mut self, hash: u64, release: &mut impl FnMut(&mut V)) {
        // Sample occupied slots from a moving cursor (mixed with the new flow's hash so an
        // attacker cannot predict it), and evict the least recently seen of them.
        let n = self.slots.len();
        let mut pos = (self.evict_cursor ^ (hash as usize >> 7)) & self.mask;
        let mut victim = usize::MAX;
        let mut oldest = u64::MAX;
        let mut seen = 0;
        let mut scanned = 0;
        while seen < EVICTION_SAMPLES && scanned < n {
            let e = &self.slots[pos];
            if e.occupied() {
                seen += 1;
                if e.last_seen < oldest {
                    oldest = e.last_seen;
                    victim = pos;
                }
            }
            pos = (pos + 1) & self.mask;
            scanned += 1;
        }
        self.evict_cursor = pos.wrapping_add(n / 3 + 1);
        if victim != usize::MAX {
            release(&mut self.slots[victim].value);
            self.remove_at(victim);
            self.stats.evicted += 1;
        }
    }

    /// Removes slot `i` with backward-shift deletion, keeping every probe chain unbroken.
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask;
        loop {
            let mut j = i;
            loop {
                j = (j + 1) & mask;
                if !self.slots[j].occupied() {
                    self.slots[i] = Entry::default();
                    self.len -= 1;
                    return;
                }
                let home = self.slots[j].key.hash64() as usize & mask;
                // Entry j may move back to i only if its home is not in the cyclic range (i, j].
                let stays = if i <= j {
                    i < home && home <= j
                } else {
                    i < home || home <= j
                };
                if !stays {
                    self.slots[i] = self.slots[j];
                    i = j;
                    break;
                }
            }
        }
    }

    fn grow(&mut self) {
        let new_len = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![Entry::default(); new_len]);
        self.mask = new_len - 1;
        for e in old.into_iter().filter(|e| e.occupied()) {
            let mut i = e.key.hash64() as usize & self.mask;
            while self.slots[i].occupied() {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Addr;

    const TTL: Ttl = Ttl {
        idle_ns: 10_000,
        closed_ns: 1_000,
    };

    fn key(n: u32) -> FlowKey {
        let b = n.to_be_bytes();
        FlowKey::new(Addr::v4(b), 1000, Addr::v4([10, 0, 0, 1]), 80).0
    }

    fn up(t: &mut FlowTable<FlowKey, u64>, k: &FlowKey, now: u64) -> bool {
        t.upsert(k, k.hash64(), now, |_| {}).1
    }

    #[test]
    fn entry_is_128_bytes_with_an_80_byte_value() {
        assert_eq!(std::mem::size_of::<Entry<FlowKey, [u64; 10]>>(), 128);
        assert_eq!(std::mem::size_of::<Entry<Key4, [u64; 10]>>(), 128);
    }

    #[test]
    fn finds_what_it_inserted_across_growth() {
        let mut t = FlowTable::<FlowKey, u64>::new(100_000, TTL);
        for n in 0..5000 {
            assert!(up(&mut t, &key(n), 1));
            t.upsert(&key(n), key(n).hash64(), 1, |_| {}).0.value = u64::from(n);
        }
        for n in 0..5000 {
            let (e, new) = t.upsert(&key(n), key(n).hash64(), 2, |_| {});
            assert!(!new);
            assert_eq!(e.value, u64::from(n));
        }
        assert_eq!(t.len(), 5000);
    }

    #[test]
    fn grows_at_an_eighth_full_and_stops_at_the_cap() {
        // 1,000 flows at half load need 2,048 slots: the cap.
        let mut t = FlowTable::<FlowKey, u64>::new(1000, TTL);
        assert_eq!(t.slots.len(), INITIAL_SLOTS);
        for n in 0..128 {
            up(&mut t, &key(n), 1);
        }
        assert_eq!(
            t.slots.len(),
            1024,
            "128 flows are an eighth of 1,024 slots"
        );
        up(&mut t, &key(128), 1);
        assert_eq!(t.slots.len(), 2048, "the 129th flow doubles the table");
        for n in 129..1000 {
            up(&mut t, &key(n), 1);
        }
        assert_eq!(t.slots.len(), 2048, "no growth past the cap");
        assert_eq!(t.len(), 1000);
        assert!(
            (0..1000).all(|n| !up(&mut t, &key(n), 2)),
            "every flow is found"
        );
        assert_eq!(t.stats().evicted, 0);
    }

    #[test]
    fn full_table_evicts_the_least_recently_seen_and_counts_it() {
        let mut t = FlowTable::<FlowKey, u64>::new(8, TTL);
        for n in 0..8 {
            up(&mut t, &key(n), 100 + u64::from(n));
        }
        let mut released = 0;
        t.upsert(&key(99), key(99).hash64(), 200, |_| released += 1);
        assert_eq!(t.len(), 8);
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(released, 1);
        assert!(
            up(&mut t, &key(0), 201),
            "flow 0 was the oldest and must be gone"
        );
    }

    #[test]
    fn idle_and_closed_flows_expire_on_packet_time() {
        let mut t = FlowTable::<FlowKey, u64>::new(64, TTL);
        up(&mut t, &key(1), 0);
        up(&mut t, &key(2), 0);
        t.upsert(&key(2), key(2).hash64(), 0, |_| {})
            .0
            .set_closing();
        t.expire(1_001, &mut |_| {});
        assert_eq!(t.len(), 1, "the closed flow expires after exp_ttl");
        t.expire(10_000, &mut |_| {});
        assert_eq!(t.len(), 1, "idle_ttl is not yet over");
        t.expire(10_001, &mut |_| {});
        assert!(t.is_empty());
        assert_eq!(t.stats().expired, 2);
    }

    #[test]
    fn expired_flow_found_on_lookup_starts_afresh() {
        let mut t = FlowTable::<FlowKey, u64>::new(64, TTL);
        t.upsert(&key(1), key(1).hash64(), 0, |_| {}).0.value = 7;
        let (e, new) = t.upsert(&key(1), key(1).hash64(), 20_000, |_| {});
        assert!(new);
        assert_eq!(e.value, 0);
    }

    #[test]
    fn deletion_keeps_probe_chains_intact() {
        let mut t = FlowTable::<FlowKey, u64>::new(512, TTL);
        for n in 0..400 {
            up(&mut t, &key(n), u64::from(n % 2) * 50_000);
        }
        // Every even flow is idle since 0; odd ones were seen at 50_000.
        t.expire(55_000, &mut |_| {});
        assert_eq!(t.len(), 200);
        for n in (1..400).step_by(2) {
            assert!(!up(&mut t, &key(n), 55_000), "flow {n} lost by deletion");
        }
    }
}
