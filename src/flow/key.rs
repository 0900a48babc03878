//! The normalised 5-tuple.
//!
//! Both directions of a connection must find the same flow entry, so the key orders its two
//! endpoints: the lower (address, port) pair is always `a`. [`FlowKey::new`] also says which side
//! the packet came from, so the caller can pick the right half of the flow's state. The hash is
//! symmetric by construction (it hashes the normalised key), which is also what lets offline mode
//! dispatch frames to workers the way `PACKET_FANOUT_HASH` does live.

use crate::decode::Addr;

/// A TCP connection's endpoints, ordered so that both directions give the same key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
#[repr(C)]
pub struct FlowKey {
    /// The lower endpoint's address.
    pub a: Addr,
    /// The higher endpoint's address.
    pub b: Addr,
    /// The lower endpoint's port.
    pub a_port: u16,
    /// The higher endpoint's port.
    pub b_port: u16,
}

/// Which endpoint of a [`FlowKey`] (or [`PackedKey`]) sent a packet. One byte whose only values
/// are 0 and 1, so that indexing a two-element array by [`Side::index`] needs no bounds check.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(u8)]
pub enum Side {
    /// The packet came from endpoint `a`.
    #[default]
    A = 0,
    /// The packet came from endpoint `b`.
    B = 1,
}

impl Side {
    /// The other endpoint.
    #[inline]
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// 0 for `a`, 1 for `b`: the index of this side's element in a per-side array.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

impl FlowKey {
    /// The endpoint on `side` and then the other, each as (address, port).
    #[inline]
    pub fn ends(&self, side: Side) -> ((Addr, u16), (Addr, u16)) {
        (self.endpoint(side), self.endpoint(side.other()))
    }

    /// Normalises a packet's (source, destination) into a key, and says which side sent it.
    #[inline]
    pub fn new(src: Addr, sport: u16, dst: Addr, dport: u16) -> (FlowKey, Side) {
        // Any total order will do, as long as both directions agree; whole 128-bit words compare
        // in two instructions where a byte-wise comparison loops. Which way a packet goes is a
        // coin toss to the branch predictor, so the swap is done with masks, not a branch.
        let (s, d) = (u128::from_ne_bytes(src.0), u128::from_ne_bytes(dst.0));
        let swap = (s, sport) > (d, dport);
        let m = 0u128.wrapping_sub(u128::from(swap));
        let x = (s ^ d) & m;
        let pm = 0u16.wrapping_sub(u16::from(swap));
        let px = (sport ^ dport) & pm;
        let key = FlowKey {
            a: Addr((s ^ x).to_ne_bytes()),
            b: Addr((d ^ x).to_ne_bytes()),
            a_port: sport ^ px,
            b_port: dport ^ px,
        };
        (key, if swap { Side::B } else { Side::A })
    }

    /// The (address, port) of one side.
    #[inline]
    pub fn endpoint(&self, side: Side) -> (Addr, u16) {
        match side {
            Side::A => (self.a, self.a_port),
            Side::B => (self.b, self.b_port),
        }
    }

    /// A fast 64-bit hash of the key; equal for both directions because the key is normalised.
    ///
    /// Two folded multiplies (a 64×64→128-bit product whose halves are XORed, as in wyhash and
    /// aHash) mix every input bit into the whole word: the table takes its slot from the low
    /// bits and its tag from the high ones.
    #[inline]
    pub fn hash64(&self) -> u64 {
        let a = u128::from_ne_bytes(self.a.0);
        let b = u128::from_ne_bytes(self.b.0);
        let x = (a as u64) ^ ((a >> 64) as u64).rotate_left(23);
        let y = (b as u64) ^ ((b >> 64) as u64).rotate_left(41);
        let ports = (u64::from(self.a_port) << 16) | u64::from(self.b_port);
        let h = fold(x ^ 0x243f_6a88_85a3_08d3, y ^ 0x1319_8a2e_0370_7344);
        fold(h ^ ports, 0x9e37_79b9_7f4a_7c15)
    }
}

/// A connection's endpoints as the flow table keeps them, in sixteen bytes against [`FlowKey`]'s
/// thirty-six, so that an entry is 112 bytes in either family. Each endpoint is one word:
/// - IPv4: `address << 16 | port`, ordered so that both directions give the same key (the lower
///   endpoint is `a`). It orders in one compare, hashes in two multiplies, compares in two. (Its
///   order is numeric, so its sides may be the other way round from a [`FlowKey`]'s.)
/// - IPv6: `1 << 63 | host id << 16 | port`, where the host id names the address in the
///   worker's [`HostIds`](super::hosts::HostIds), and the sides are those of the connection's
///   [`FlowKey`]. The top bit keeps the two families' keys apart: an IPv4 word is 48 bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct PackedKey {
    a: u64,
    b: u64,
}

impl PackedKey {
    /// Normalises an IPv4 packet's (source, destination) into a key, and says which side sent
    /// it. Addresses are as read from the wire, big-endian.
    #[inline]
    pub fn new(src: u32, sport: u16, dst: u32, dport: u16) -> (PackedKey, Side) {
        let s = u64::from(src) << 16 | u64::from(sport);
        let d = u64::from(dst) << 16 | u64::from(dport);
        // min and max compile to conditional moves: no branch on the packet's direction.
        let key = PackedKey {
            a: s.min(d),
            b: s.max(d),
        };
        (key, if s > d { Side::B } else { Side::A })
    }

    /// The endpoint on `side` and then the other, each as (address, port), of an IPv4 key.
    #[inline]
    pub fn ends(&self, side: Side) -> ((Addr, u16), (Addr, u16)) {
        let end = |e: u64| (Addr::v4(((e >> 16) as u32).to_be_bytes()), e as u16);
        let (a, b) = (end(self.a), end(self.b));
        match side {
            Side::A => (a, b),
            Side::B => (b, a),
        }
    }

    /// The addresses of an IPv4 key's endpoint on `side` (high 32 bits) and of the other (low 32
    /// bits), ports left out: one word that names the host pair in that direction.
    #[inline]
    pub fn hosts(&self, side: Side) -> u64 {
        let (s, o) = match side {
            Side::A => (self.a, self.b),
            Side::B => (self.b, self.a),
        };
        (s >> 16) << 32 | (o >> 16)
    }

    /// The same connection's [`FlowKey`], of an IPv4 key.
    pub fn full(&self) -> FlowKey {
        let ((a, a_port), (b, b_port)) = self.ends(Side::A);
        FlowKey::new(a, a_port, b, b_port).0
    }

    /// The key of an IPv6 connection whose [`FlowKey`] has endpoints `a` and `b`, with their
    /// addresses' host ids.
    #[inline]
    pub fn v6(a_id: u32, a_port: u16, b_id: u32, b_port: u16) -> PackedKey {
        let end = |id: u32, port: u16| V6 | u64::from(id) << 16 | u64::from(port);
        PackedKey {
            a: end(a_id, a_port),
            b: end(b_id, b_port),
        }
    }

    /// The host ids and ports of an IPv6 key's endpoints `a` and `b`; `None` for an IPv4 key.
    #[inline]
    pub fn v6_ends(&self) -> Option<((u32, u16), (u32, u16))> {
        let end = |e: u64| ((e >> 16) as u32, e as u16);
        (self.a & V6 != 0).then(|| (end(self.a), end(self.b)))
    }

    /// A fast 64-bit hash of an IPv4 key, equal for both directions (see [`FlowKey::hash64`]).
    /// An IPv6 flow is looked up with its [`FlowKey`]'s hash, which needs no host ids.
    #[inline]
    pub fn hash64(&self) -> u64 {
        hash_words(self.a, self.b)
    }
}

/// A fast 64-bit hash of two words: two folded multiplies, which mix every input bit into the
/// whole word. [`PackedKey`]'s, and the host table's of an IPv6 address's halves.
#[inline]
pub(super) fn hash_words(a: u64, b: u64) -> u64 {
    let h = fold(a ^ 0x243f_6a88_85a3_08d3, b ^ 0x1319_8a2e_0370_7344);
    fold(h, 0x9e37_79b9_7f4a_7c15)
}

/// The top bit of an IPv6 key's words.
const V6: u64 = 1 << 63;

/// A folded multiply: the 128-bit product's halves XORed (as in wyhash and aHash).
#[inline(always)]
fn fold(x: u64, y: u64) -> u64 {
    let p = u128::from(x) * u128::from(y);
    (p as u64) ^ ((p >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_give_one_key_and_opposite_sides() {
        let x = Addr::v4([10, 0, 0, 1]);
        let y = Addr::v4([10, 0, 0, 2]);
        let (k1, s1) = FlowKey::new(x, 40000, y, 80);
        let (k2, s2) = FlowKey::new(y, 80, x, 40000);
        assert_eq!(k1, k2);
        assert_eq!(k1.hash64(), k2.hash64());
        assert_eq!(s1, s2.other());
        assert_eq!(k1.endpoint(s1), (x, 40000));
    }

    #[test]
    fn ipv4_keys_are_symmetric_and_name_their_sender() {
        let ends = [
            ([10, 0, 0, 1], 40000),
            ([10, 0, 0, 2], 80),
            ([10, 0, 0, 1], 80),
            ([192, 168, 7, 9], 65535),
            ([0, 0, 0, 0], 0),
            ([255, 255, 255, 255], 1),
        ];
        for &(x, xp) in &ends {
            for &(y, yp) in &ends {
                let (full, _) = FlowKey::new(Addr::v4(x), xp, Addr::v4(y), yp);
                let (k, s) = PackedKey::new(u32::from_be_bytes(x), xp, u32::from_be_bytes(y), yp);
                let (back, t) =
                    PackedKey::new(u32::from_be_bytes(y), yp, u32::from_be_bytes(x), xp);
                let what = format!("{x:?}:{xp} -> {y:?}:{yp}");
                assert_eq!(k.full(), full, "{what}");
                assert_eq!(k.ends(s), ((Addr::v4(x), xp), (Addr::v4(y), yp)), "{what}");
                let hosts =
                    u64::from(u32::from_be_bytes(x)) << 32 | u64::from(u32::from_be_bytes(y));
                assert_eq!(k.hosts(s), hosts, "{what}");
                assert_eq!(k, back, "{what}");
                assert_eq!(k.hash64(), back.hash64(), "{what}");
                if (x, xp) != (y, yp) {
                    assert_eq!(s, t.other(), "{what}");
                }
            }
        }
    }

    #[test]
    fn same_address_different_ports_orders_by_port() {
        let x = Addr::v4([127, 0, 0, 1]);
        let (k, s) = FlowKey::new(x, 9000, x, 80);
        assert_eq!((k.a_port, k.b_port), (80, 9000));
        assert_eq!(s, Side::B);
    }
}
