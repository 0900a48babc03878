//! IPv6 addresses as small numbers, so that an IPv6 flow's key is as small as an IPv4 one's.
//!
//! An IPv6 connection's two addresses take 32 bytes, which would make its flow entry 16 bytes
//! larger than an IPv4 flow's. A busy gateway sees many flows per host, so each worker keeps
//! every address of its live IPv6 flows here once, under a 32-bit host id, and a flow's key holds
//! the two ids ([`PackedKey::v6`](super::key::PackedKey::v6)). A host is counted by the flows that
//! hold it and forgotten with the last of them, so that there are never more hosts than twice the
//! flows, and its id is then reused.
//!
//! A host costs its address and count in a dense vector (20 bytes) and a 4-byte id and a control
//! byte in a `hashbrown` table looked up by the address's hash: 25 to 50 bytes, as the vector
//! and the table double. Free ids are chained through the vector, in their hosts' counts.

use hashbrown::HashTable;

use super::key::hash_words;
use crate::decode::Addr;

/// One address and the number of flows that hold it; for a free id, the next free id.
#[derive(Clone, Copy)]
struct Host {
    addr: [u8; 16],
    flows: u32,
}

/// No free id.
const NONE: u32 = u32::MAX;

/// The addresses of a worker's IPv6 flows, each under a host id.
pub struct HostIds {
    /// The ids, found by their address's hash.
    ids: HashTable<u32>,
    /// Hosts by id, free ones included.
    hosts: Vec<Host>,
    /// The first free id, whose host's count is the next one's; [`NONE`] for none.
    free: u32,
}

impl Default for HostIds {
    fn default() -> HostIds {
        HostIds {
            ids: HashTable::new(),
            hosts: Vec::new(),
            free: NONE,
        }
    }
}

/// The hash of an address: [`hash_words`] of its halves.
#[inline]
fn hash(addr: &[u8; 16]) -> u64 {
    let a = u128::from_ne_bytes(*addr);
    hash_words(a as u64, (a >> 64) as u64)
}

impl HostIds {
    /// No hosts.
    pub fn new() -> HostIds {
        HostIds::default()
    }

    /// The id of `addr`, which is added, held by no flow, if it is not known. An address added
    /// this way must be held ([`HostIds::hold`]) before any host is let go, or it is never
    /// forgotten; the flow table holds a new flow's hosts before it evicts anything.
    #[inline]
    pub fn intern(&mut self, addr: &Addr) -> u32 {
        let h = hash(&addr.0);
        let hosts = &self.hosts;
        if let Some(&id) = self.ids.find(h, |&id| hosts[id as usize].addr == addr.0) {
            return id;
        }
        self.add(addr.0, h)
    }

    #[inline(never)]
    fn add(&mut self, addr: [u8; 16], h: u64) -> u32 {
        let host = Host { addr, flows: 0 };
        let id = if self.free == NONE {
            self.hosts.push(host);
            (self.hosts.len() - 1) as u32
        } else {
            let id = self.free;
            self.free = self.hosts[id as usize].flows;
            self.hosts[id as usize] = host;
            id
        };
        let hosts = &self.hosts;
        self.ids
            .insert_unique(h, id, |&id| hash(&hosts[id as usize].addr));
        id
    }

    /// A flow holds host `id`.
    #[inline]
    pub fn hold(&mut self, id: u32) {
        self.hosts[id as usize].flows += 1;
    }

    /// A flow that held host `id` is gone; the host is forgotten with its last flow.
    #[inline]
    pub fn let_go(&mut self, id: u32) {
        let host = &mut self.hosts[id as usize];
        debug_assert!(host.flows > 0, "host {id} let go more often than held");
        host.flows = host.flows.saturating_sub(1);
        if host.flows == 0 {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: u32) {
        let addr = self.hosts[id as usize].addr;
        if let Ok(e) = self.ids.find_entry(hash(&addr), |&i| i == id) {
            e.remove();
            self.hosts[id as usize].flows = self.free;
            self.free = id;
        }
    }

    /// True when host `id` has address `addr`.
    #[inline]
    pub fn is(&self, id: u32, addr: &Addr) -> bool {
        self.hosts
            .get(id as usize)
            .map(|h| u128::from_ne_bytes(h.addr))
            == Some(u128::from_ne_bytes(addr.0))
    }

    /// The address of host `id`.
    pub fn addr(&self, id: u32) -> Addr {
        Addr(self.hosts[id as usize].addr)
    }

    /// Hosts known.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no host is known.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes held for the hosts: the table's and the vector's allocations.
    pub fn bytes(&self) -> usize {
        self.ids.allocation_size() + self.hosts.capacity() * std::mem::size_of::<Host>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> Addr {
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[12..].copy_from_slice(&n.to_be_bytes());
        Addr(a)
    }

    #[test]
    fn an_address_keeps_its_id_while_a_flow_holds_it() {
        let mut h = HostIds::new();
        let a = h.intern(&addr(1));
        let b = h.intern(&addr(2));
        assert_ne!(a, b);
        h.hold(a);
        h.hold(a);
        h.hold(b);
        assert_eq!((h.intern(&addr(1)), h.intern(&addr(2))), (a, b));
        assert_eq!((h.addr(a), h.addr(b)), (addr(1), addr(2)));
        h.let_go(a);
        assert_eq!(h.intern(&addr(1)), a, "one flow still holds it");
        h.let_go(a);
        h.let_go(b);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn a_forgotten_hosts_id_goes_to_the_next_new_address() {
        let mut h = HostIds::new();
        let a = h.intern(&addr(1));
        h.hold(a);
        h.let_go(a);
        let c = h.intern(&addr(3));
        assert_eq!(c, a);
        assert_eq!(h.addr(c), addr(3));
        assert_eq!(h.len(), 1);
        h.hold(c);
        let d = h.intern(&addr(1));
        assert_ne!(d, c, "the old address is a new host");
    }

    #[test]
    fn hosts_come_and_go_by_the_hundred_thousand_in_bounded_memory() {
        let mut h = HostIds::new();
        for round in 0..3u32 {
            let ids: Vec<u32> = (0..200_000)
                .map(|i| {
                    let id = h.intern(&addr(round * 1_000_000 + i));
                    h.hold(id);
                    id
                })
                .collect();
            assert_eq!(h.len(), 200_000);
            for (i, &id) in ids.iter().enumerate() {
                assert_eq!(h.addr(id), addr(round * 1_000_000 + i as u32));
                h.let_go(id);
            }
            assert!(h.is_empty());
        }
        // The ids are reused: the vector never grew past the most hosts at once.
        assert!(h.hosts.len() <= 200_000, "{} ids", h.hosts.len());
        // 262,144 ids of 20 bytes (26 a host), and a table of 4-byte ids and control bytes that
        // its tombstones made double once (13 a host).
        let per_host = h.bytes() as f64 / 200_000.0;
        assert!(per_host < 45.0, "{per_host} bytes a host");
    }
}
