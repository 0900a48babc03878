//! The flow table at scale: its memory at a million flows, and eviction under a SYN flood.

use metro::capture::LinkType;
use metro::decode::Addr;
use metro::flow::{FlowTable, PackedKey, TableKey, Ttl};
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
            t.upsert(&k, k.hash64(), u32::MAX, 1, |_: &mut FlowRtt| {})
                .1,
            "flow {i} is new"
        );
    }
    assert_eq!(t.len(), n);
    assert_eq!(t.stats().evicted, 0);
    for i in (0..n as u32).step_by(997) {
        let k = key(i);
        assert!(
            !t.upsert(&k, k.hash64(), u32::MAX, 2, |_: &mut FlowRtt| {})
                .1,
            "flow {i} is found"
        );
    }
    t.bytes() as f64 / n as f64
}

#[test]
fn a_million_ipv4_flows_take_128_bytes_each_with_the_tables_slack() {
    let b = bytes_per_flow(1_000_000, |i| {
        PackedKey::new(0x0a00_0000 + i, 40_000, 0xc0a8_0001, 443).0
    });
    // A 112-byte entry in a slab of exactly max_flows, and two 8-byte index slots.
    assert_eq!(b, 128.0);
}

#[test]
fn a_million_ipv6_flows_take_128_bytes_each_with_the_tables_slack() {
    // An IPv6 flow's key names its addresses by host id: 100,000 clients, each with 10 flows
    // to one server.
    let b = bytes_per_flow(1_000_000, |i| {
        PackedKey::v6(i / 10, 40_000 + (i % 10) as u16, 100_000, 443)
    });
    // The same 112-byte entry as IPv4's, and two 8-byte index slots.
    assert_eq!(b, 128.0);
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

/// 2001:db8:`net`::`n`.
fn v6(net: u16, n: u32) -> [u8; 16] {
    let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a[4..6].copy_from_slice(&net.to_be_bytes());
    a[12..].copy_from_slice(&n.to_be_bytes());
    a
}

/// Feeds `w` a SYN from `src`:`sport` to `dst`:443 over IPv6 at `t`, and moves `t` on.
fn syn6(w: &mut Worker, t: &mut u64, src: [u8; 16], dst: [u8; 16], sport: u16) {
    let s = Seg {
        src: [0; 4],
        sport,
        dst: [0; 4],
        dport: 443,
        seq: 1,
        ack: 0,
        flags: SYN,
        payload: 0,
    };
    let mut data = Vec::new();
    let wire_len = tcp4::push6(&mut data, &s, src, dst);
    w.handle(
        LinkType::Ethernet,
        &metro::capture::Frame {
            ts_ns: *t,
            data: &data,
            wire_len,
        },
    );
    *t += 1_000;
}

/// The distinct IPv6 addresses of the worker's flows, and how many flows are IPv6.
fn v6_hosts_of_flows(w: &mut Worker) -> (usize, usize) {
    let mut hosts = std::collections::HashSet::new();
    let mut flows = 0;
    for k in w.flow_keys() {
        if k.a.ip().is_ipv6() {
            flows += 1;
            hosts.insert(k.a);
            hosts.insert(k.b);
        }
    }
    (hosts.len(), flows)
}

#[test]
fn ipv6_flows_hold_their_hosts_and_let_them_go_with_the_last_flow() {
    const MAX_FLOWS: usize = 10_000;
    let cfg = WorkerConfig {
        max_flows: MAX_FLOWS,
        ..WorkerConfig::default()
    };
    let mut w = Worker::new(0, &cfg);
    let mut t = 1_700_000_000_000_000_000u64;
    let server = v6(2, 1);
    let feed = syn6;
    // A SYN flood from 50,000 sources, 3 SYNs each, through a bound of 10,000 flows: every flow
    // holds its own client and the one server.
    for k in 0..50_000u32 {
        for port in 0..3 {
            feed(&mut w, &mut t, v6(1, k), server, 1_024 + port);
        }
    }
    let (hosts, flows) = v6_hosts_of_flows(&mut w);
    assert_eq!(flows, MAX_FLOWS);
    assert_eq!(
        w.ipv6_hosts(),
        hosts,
        "each address of a live flow once, no other"
    );
    assert!(hosts > 3_000, "{hosts} hosts");
    // Every key names its addresses right: the server, and a client of the flood.
    for k in w.flow_keys() {
        let (a, b) = (k.a.0, k.b.0);
        assert!(a == server || b == server, "{k:?}");
        let client = if a == server { b } else { a };
        assert_eq!(client[..12], v6(1, 0)[..12], "{k:?}");
        assert!(u32::from_be_bytes(client[12..].try_into().unwrap()) < 50_000);
    }
    // IPv4 flows take the table's places from the IPv6 ones, which let go of their hosts.
    for k in 0..30_000u32 {
        let s = Seg {
            src: [10, 1, (k >> 8) as u8, k as u8],
            sport: 1_024 + (k >> 16) as u16,
            dst: SERVER,
            dport: 80,
            seq: 1,
            ack: 0,
            flags: SYN,
            payload: 0,
        };
        let mut f = Frames::default();
        f.add(t, &s);
        f.each(|fr| w.handle(LinkType::Ethernet, fr));
        t += 1_000;
    }
    let (hosts, flows) = v6_hosts_of_flows(&mut w);
    assert!(flows < MAX_FLOWS / 10, "{flows} IPv6 flows left");
    assert_eq!(w.ipv6_hosts(), hosts);
    let c = w.take_interval(Default::default()).counters;
    assert_eq!(c.active_flows, MAX_FLOWS as u64, "{c:?}");
    assert_eq!(
        c.table.evicted,
        150_000 + 30_000 - MAX_FLOWS as u64,
        "{c:?}"
    );
    // An hour later every flow has expired, and no host is left.
    t += 3_600_000_000_000;
    feed(&mut w, &mut t, v6(3, 1), v6(3, 2), 2_000);
    assert_eq!(v6_hosts_of_flows(&mut w), (2, 1));
    assert_eq!(w.ipv6_hosts(), 2);
}

#[test]
fn a_new_flow_keeps_the_hosts_of_the_flow_it_evicts() {
    // One flow at a time: each new flow between the same two hosts evicts the last one, which
    // was all that held them.
    let cfg = WorkerConfig {
        max_flows: 1,
        ..WorkerConfig::default()
    };
    let mut w = Worker::new(0, &cfg);
    let mut t = 1_700_000_000_000_000_000u64;
    let (a, b, server) = (v6(1, 1), v6(1, 2), v6(2, 1));
    for port in 0..3 {
        syn6(&mut w, &mut t, a, server, 1_024 + port);
    }
    assert_eq!(v6_hosts_of_flows(&mut w), (2, 1));
    assert_eq!(w.ipv6_hosts(), 2);
    // The key's ends, in either order.
    let ends = |w: &mut Worker| {
        let k = w.flow_keys().next().unwrap();
        let mut e = [(k.a.0, k.a_port), (k.b.0, k.b_port)];
        e.sort();
        e
    };
    let mut want = [(a, 1_026), (server, 443)];
    want.sort();
    assert_eq!(ends(&mut w), want);
    syn6(&mut w, &mut t, b, server, 1_024);
    assert_eq!(w.ipv6_hosts(), 2);
    let mut want = [(b, 1_024), (server, 443)];
    want.sort();
    assert_eq!(ends(&mut w), want);
    let c = w.take_interval(Default::default()).counters;
    assert_eq!((c.table.created, c.table.evicted), (4, 3), "{c:?}");
}
