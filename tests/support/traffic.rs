//! An endless, realistic TCP mix held in memory, for the hot-path benchmark and the no-allocation
//! test.
//!
//! One *cycle* is a fixed list of frames: many concurrent flows, some bulk (delayed ACKs, one ACK
//! per two segments), some request/response. Replaying the cycle again with every sequence and
//! acknowledgment number advanced by what the flow sent in one cycle, and every timestamp by the
//! cycle's length, continues each connection as if it never stopped. So the worker sees a steady
//! state — established flows, new data, new ACKs — without the benchmark generating packets or
//! allocating while it is timed. The same mix can be built over IPv6 ([`Mix::ipv6`]), each
//! host `a.b.c.d` becoming 2001:db8::a.b.c.d.

#![allow(dead_code)]

use metro::capture::Frame;

use super::tcp4::six;

/// Bytes of TCP header each frame has: the timestamp option included.
const TCP: usize = 32;
/// Bytes captured per frame: Ethernet + IPv4 + TCP (snap length).
const HDR: usize = 14 + 20 + TCP;
/// The same over IPv6.
const HDR6: usize = 14 + 40 + TCP;
/// Length of one cycle, ns.
pub const CYCLE_NS: u64 = 10_000_000;

struct Meta {
    off: usize,
    ts: u64,
    wire_len: u32,
    seq_step: u32,
    ack_step: u32,
}

/// The cycle's frames, in one arena.
pub struct Mix {
    bytes: Vec<u8>,
    meta: Vec<Meta>,
    cycle: u64,
    /// Bytes captured per frame.
    hdr: usize,
}

#[allow(clippy::too_many_arguments)]
fn frame(
    out: &mut Vec<u8>,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    payload: u16,
    v6: bool,
) -> u32 {
    if v6 {
        let len = TCP as u16 + payload;
        out.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd]);
        out.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 6, 64]);
        out.extend_from_slice(&six(src));
        out.extend_from_slice(&six(dst));
        tcp(out, sport, dport, seq, ack);
        return u32::from(len) + 14 + 40;
    }
    let total = 20 + TCP as u16 + payload;
    out.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    out.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    tcp(out, sport, dport, seq, ack);
    u32::from(total) + 14
}

/// The TCP header, with the timestamp option.
fn tcp(out: &mut Vec<u8>, sport: u16, dport: u16, seq: u32, ack: u32) {
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ack.to_be_bytes());
    out.extend_from_slice(&[0x80, 0x10, 0x01, 0xf5, 0, 0, 0, 0]);
    out.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
}

impl Mix {
    /// A cycle with `flows` concurrent connections between `clients` client hosts and
    /// `servers` server hosts; every fourth connection is bulk.
    pub fn new(flows: u32, clients: u32, servers: u32) -> Mix {
        Mix::with_bulk(flows, clients, servers, 4)
    }

    /// The same, with every `bulk_every`-th connection bulk, or none when it is 0. Each bulk
    /// half has four segments in flight and so borrows one of the worker's segment rings: a
    /// mix of tens of thousands of flows without bulk ones stays within the ring pool, and
    /// every ACK in it gives a sample.
    pub fn with_bulk(flows: u32, clients: u32, servers: u32, bulk_every: u32) -> Mix {
        Mix::build(flows, clients, servers, bulk_every, false)
    }

    /// [`Mix::with_bulk`] over IPv6.
    pub fn ipv6(flows: u32, clients: u32, servers: u32, bulk_every: u32) -> Mix {
        Mix::build(flows, clients, servers, bulk_every, true)
    }

    fn build(flows: u32, clients: u32, servers: u32, bulk_every: u32, v6: bool) -> Mix {
        struct Ev {
            ts: u64,
            c2s: bool,
            flow: u32,
            seq: u32,
            ack: u32,
            len: u16,
            seq_step: u32,
            ack_step: u32,
        }
        let mut evs = Vec::new();
        for f in 0..flows {
            let start = u64::from(f) * 7_919 % (CYCLE_NS / 2);
            let rtt = 200_000 + u64::from(f % 50) * 60_000;
            let (cs, ss) = (f.wrapping_mul(2_654_435_761), f.wrapping_mul(40_503));
            if bulk_every != 0 && f % bulk_every == 0 {
                // Bulk: 4 segments of 1448 bytes, one ACK per two.
                let b = 4 * 1448;
                for i in 0..4u32 {
                    evs.push(Ev {
                        ts: start + u64::from(i) * 20_000,
                        c2s: true,
                        flow: f,
                        seq: cs + i * 1448,
                        ack: ss,
                        len: 1448,
                        seq_step: b,
                        ack_step: 0,
                    });
                }
                for i in 0..2u32 {
                    evs.push(Ev {
                        ts: start + rtt + u64::from(i) * 40_000 + 20_000,
                        c2s: false,
                        flow: f,
                        seq: ss,
                        ack: cs + (i + 1) * 2 * 1448,
                        len: 0,
                        seq_step: 0,
                        ack_step: b,
                    });
                }
            } else {
                // Request/response: 100 bytes up, 200 down, then the client's ACK.
                evs.push(Ev {
                    ts: start,
                    c2s: true,
                    flow: f,
                    seq: cs,
                    ack: ss,
                    len: 100,
                    seq_step: 100,
                    ack_step: 200,
                });
                evs.push(Ev {
                    ts: start + rtt,
                    c2s: false,
                    flow: f,
                    seq: ss,
                    ack: cs + 100,
                    len: 200,
                    seq_step: 200,
                    ack_step: 100,
                });
                evs.push(Ev {
                    ts: start + rtt + 30_000,
                    c2s: true,
                    flow: f,
                    seq: cs + 100,
                    ack: ss + 200,
                    len: 0,
                    seq_step: 100,
                    ack_step: 200,
                });
            }
        }
        evs.sort_by_key(|e| (e.ts, e.flow));
        let hdr = if v6 { HDR6 } else { HDR };
        let mut bytes = Vec::with_capacity(evs.len() * hdr);
        let mut meta = Vec::with_capacity(evs.len());
        for e in &evs {
            let host = e.flow % clients;
            let client = [10, (host >> 16) as u8, (host >> 8) as u8, host as u8];
            let server = [192, 168, (e.flow % servers) as u8, 10];
            let cport = 10_000 + (e.flow / clients) as u16;
            let off = bytes.len();
            let wire_len = if e.c2s {
                frame(
                    &mut bytes, client, server, cport, 443, e.seq, e.ack, e.len, v6,
                )
            } else {
                frame(
                    &mut bytes, server, client, 443, cport, e.seq, e.ack, e.len, v6,
                )
            };
            meta.push(Meta {
                off,
                ts: e.ts,
                wire_len,
                seq_step: e.seq_step,
                ack_step: e.ack_step,
            });
        }
        Mix {
            bytes,
            meta,
            cycle: 0,
            hdr,
        }
    }

    /// Frames per cycle.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Feeds the next cycle to `f`, continuing every connection.
    #[inline]
    pub fn cycle(&mut self, mut f: impl FnMut(&Frame<'_>)) {
        let k = self.cycle;
        self.cycle += 1;
        let base = 1_700_000_000_000_000_000 + k * CYCLE_NS;
        let (hdr, seq) = (self.hdr, self.hdr - TCP + 4);
        for m in &self.meta {
            let fr = &mut self.bytes[m.off..m.off + hdr];
            if k > 0 {
                let bump = |b: &mut [u8], step: u32| {
                    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).wrapping_add(step);
                    b.copy_from_slice(&v.to_be_bytes());
                };
                bump(&mut fr[seq..seq + 4], m.seq_step);
                bump(&mut fr[seq + 4..seq + 8], m.ack_step);
            }
            f(&Frame {
                ts_ns: base + m.ts,
                data: &self.bytes[m.off..m.off + hdr],
                wire_len: m.wire_len,
            });
        }
    }
}
