//! The flow table at scale: its memory at a million flows, and eviction under a SYN flood.

use metro::capture::LinkType;
use metro::decode::Addr;
use metro::flow::{FlowKey, FlowTable, Key4, TableKey, Ttl};
use metro::rtt::{FlowRtt, Method};
use metro::worker::{Worker, WorkerConfig};

mod support;

use support::tcp4;

use tcp4::{Frames, Seg, ACK, SYN};

const TTL: Ttl = Ttl {
    idle_ns: 300_000_000_000,
    closed_ns: 60_000_000_000,
};

/// Fills a table bounded at `n` flows with `n` flows; returns its bytes per flow.
fn bytes_per_flow<K: TableKey>(n: usize, key: impl Fn(u32) -> K) -> f64 {
    let mut t = FlowTable::<K, FlowRtt>::new(n, TTL);
    for i in 0..n as u32 {
        let k = key(i);
        assert!(
            t.upsert(&k, k.hash64(), u32::MAX, 1, |_| {}).1,
            "flow {i} is new"
        );
    }
    assert_eq!(t.len(), n);
    assert_eq!(t.stats().evicted, 0);
    for i in (0..n as u32).step_by(997) {
        let k = key(i);
        assert!(
            !t.upsert(&k, k.hash64(), u32::MAX, 2, |_| {}).1,
            "flow {i} is found"
        );
    }
    t.bytes() as f64 / n as f64
}

#[test]
fn a_million_ipv4_flows_take_128_bytes_each_with_the_tables_slack() {
    let b = bytes_per_flow(1_000_000, |i| {
        Key4::new(0x0a00_0000 + i, 40_000, 0xc0a8_0001, 443).0
    });
    // A 112-byte entry in a slab of exactly max_flows, and two 8-byte index slots.
    assert_eq!(b, 128.0);
}

#[test]
fn a_million_ipv6_flows_take_144_bytes_each_with_the_tables_slack() {
    let b = bytes_per_flow(1_000_000, |i| {
        // 2001:db8::i to 2001:db8::1
        let mut src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut dst = src;
        src[12..].copy_from_slice(&i.to_be_bytes());
        dst[15] = 1;
        FlowKey::new(Addr(src), 40_000, Addr(dst), 443).0
    });
    // The 36-byte key makes the entry 128 bytes.
    assert_eq!(b, 144.0);
}

const CLIENT: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 2];
const CPORT: u16 = 40_000;
const SPORT: u16 = 22;

/// A segment of the established flow, from the client when `c2s`.
fn seg(c2s: bool, seq: u32, ack: u32, flags: u8, payload: u16) -> Seg {
    let (src, sport, dst, dport) = if c2s {
        (CLIENT, CPORT, SERVER, SPORT)
    } else {
        (SERVER, SPORT, CLIENT, CPORT)
    };
    Seg {
        src,
        sport,
        dst,
        dport,
        seq,
        ack,
        flags,
        payload,
    }
}

#[test]
fn a_syn_flood_evicts_its_own_half_open_flows_not_an_established_one() {
    const MAX_FLOWS: usize = 1_000;
    // Between two packets of the established flow come three times as many SYNs as the table
    // holds, so that it is always the least recently seen flow: recency alone would evict it.
    const FLOOD: u32 = 3_000;
    const EXCHANGES: u32 = 20;
    let mut f = Frames::default();
    let mut t = 1_700_000_000_000_000_000u64;
    let mut syns = 0u32;
    let mut flood = |f: &mut Frames, t: &mut u64| {
        for _ in 0..FLOOD {
            let k = syns;
            syns += 1;
            let src = [10, 100 + (k >> 16) as u8, (k >> 8) as u8, k as u8];
            f.add(
                *t,
                &Seg {
                    src,
                    sport: 1024,
                    dst: SERVER,
                    dport: 80,
                    seq: k,
                    ack: 0,
                    flags: SYN,
                    payload: 0,
                },
            );
            *t += 1_000;
        }
    };
    // (sender, acknowledger, rtt, method) of every sample the flow must give.
    let mut want = Vec::new();
    let (mut cseq, mut sseq) = (1_000u32, 9_000u32);
    f.add(t, &seg(true, cseq, 0, SYN, 0));
    f.add(t + 40_000, &seg(false, sseq, cseq + 1, SYN | ACK, 0));
    f.add(t + 41_000, &seg(true, cseq + 1, sseq + 1, ACK, 0));
    want.push((CLIENT, SERVER, 40_000, Method::Syn));
    want.push((SERVER, CLIENT, 1_000, Method::Syn));
    (cseq, sseq) = (cseq + 1, sseq + 1);
    t += 50_000;
    for _ in 0..EXCHANGES {
        flood(&mut f, &mut t);
        let sent = t;
        f.add(t, &seg(true, cseq, sseq, ACK, 100));
        cseq += 100;
        flood(&mut f, &mut t);
        let answered = t;
        f.add(t, &seg(false, sseq, cseq, ACK, 200));
        sseq += 200;
        want.push((CLIENT, SERVER, answered - sent, Method::Seq));
        flood(&mut f, &mut t);
        f.add(t, &seg(true, cseq, sseq, ACK, 0));
        want.push((SERVER, CLIENT, t - answered, Method::Seq));
        t += 1_000;
    }
    let cfg = WorkerConfig {
        max_flows: MAX_FLOWS,
        keep_samples: true,
        ..WorkerConfig::default()
    };
    let mut w = Worker::new(0, &cfg);
    f.each(|fr| w.handle(LinkType::Ethernet, fr));
    let got: Vec<_> = w
        .drain_samples()
        .map(|s| {
            let ip = |a: Addr| match a.ip() {
                std::net::IpAddr::V4(v) => v.octets(),
                v6 => panic!("an IPv6 sample from IPv4 traffic: {v6}"),
            };
            (ip(s.src), ip(s.dst), s.rtt_ns, s.method)
        })
        .collect();
    assert_eq!(got.len(), 2 + 2 * EXCHANGES as usize);
    assert_eq!(got, want, "the established flow keeps every sample");
    let c = w.take_interval(Default::default()).counters;
    let flows = 1 + u64::from(3 * FLOOD * EXCHANGES);
    assert_eq!(c.table.created, flows, "{c:?}");
    assert_eq!(c.table.expired, 0, "{c:?}");
    assert_eq!(c.table.evicted, flows - MAX_FLOWS as u64, "{c:?}");
    assert_eq!(c.active_flows, MAX_FLOWS as u64, "{c:?}");
}
