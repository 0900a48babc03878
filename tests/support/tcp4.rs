//! TCP over IPv4 frames built one at a time, for tests and benchmarks whose traffic no capture
//! holds (a SYN flood, millions of short flows), and the same segments over IPv6 ([`push6`]).
//!
//! A frame is its headers only (Ethernet, IP, TCP without options): the payload's length is in
//! the IP header, as in a frame cut by the snap length, which is all metro reads of it.

#![allow(dead_code)]

use metro::capture::Frame;

/// TCP flags.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Bytes of one frame's headers.
pub const HDR: usize = 14 + 20 + 20;

/// One segment, from `src:sport` to `dst:dport`.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    pub src: [u8; 4],
    pub sport: u16,
    pub dst: [u8; 4],
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: u16,
}

/// The Ethernet addresses every frame here carries, before its EtherType.
const MACS: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

/// Appends the segment's headers to `out`; returns its length on the wire.
pub fn push(out: &mut Vec<u8>, s: &Seg) -> u32 {
    let total = 20 + 20 + s.payload;
    out.extend_from_slice(&MACS);
    out.extend_from_slice(&[0x08, 0x00]);
    let [hi, lo] = total.to_be_bytes();
    out.extend_from_slice(&[0x45, 0, hi, lo, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    out.extend_from_slice(&s.src);
    out.extend_from_slice(&s.dst);
    push_tcp(out, s);
    u32::from(total) + 14
}

/// The IPv6 address that stands for the IPv4 address `a`: 2001:db8::a.b.c.d.
pub fn six(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    x[12..].copy_from_slice(&a);
    x
}

/// Appends the segment's headers to `out` as IPv6, its addresses given as `src` and `dst`;
/// returns its length on the wire.
pub fn push6(out: &mut Vec<u8>, s: &Seg, src: [u8; 16], dst: [u8; 16]) -> u32 {
    let payload = 20 + s.payload;
    out.extend_from_slice(&MACS);
    out.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[6, 64]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    push_tcp(out, s);
    u32::from(payload) + 14 + 40
}

/// The TCP header, without options.
fn push_tcp(out: &mut Vec<u8>, s: &Seg) {
    out.extend_from_slice(&s.sport.to_be_bytes());
    out.extend_from_slice(&s.dport.to_be_bytes());
    out.extend_from_slice(&s.seq.to_be_bytes());
    out.extend_from_slice(&s.ack.to_be_bytes());
    out.extend_from_slice(&[0x50, s.flags, 0xff, 0xff, 0, 0, 0, 0]);
}

/// Many frames in one buffer, fed to a worker in order.
#[derive(Default)]
pub struct Frames {
    bytes: Vec<u8>,
    meta: Vec<(u64, u32)>,
}

impl Frames {
    /// Appends `s`, captured at `ts_ns`.
    pub fn add(&mut self, ts_ns: u64, s: &Seg) {
        let wire = push(&mut self.bytes, s);
        self.meta.push((ts_ns, wire));
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Forgets every frame, keeping the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.meta.clear();
    }

    /// Feeds every frame to `f`, in order.
    #[inline]
    pub fn each(&self, mut f: impl FnMut(&Frame<'_>)) {
        for (i, &(ts_ns, wire_len)) in self.meta.iter().enumerate() {
            f(&Frame {
                ts_ns,
                data: &self.bytes[i * HDR..(i + 1) * HDR],
                wire_len,
            });
        }
    }
}
