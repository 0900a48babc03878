//! A flow remembers how each of its halves is reported (its pair's slot, or "filtered") for the
//! current interval only, and a worker remembers it for recent host pairs of each family, so
//! that a new flow between hosts already seen takes it from there. These tests change what the answer must
//! be — new local addresses, a new interval, the interval counter wrapping, the bounds on pairs
//! and ports — and check that no stale answer is used.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use metro::capture::{Frame, LinkType};
use metro::decode::Addr;
use metro::record::{IntervalStats, PairKey, ServicePort};
use metro::worker::{Worker, WorkerConfig};

mod support;

use support::tcp4::{self, six, Frames, Seg, ACK, FIN, SYN};
use support::traffic;

const SERVERS: u32 = 4;

/// The mix's server addresses (see `traffic::Mix`).
fn servers() -> Vec<Addr> {
    (0..SERVERS)
        .map(|s| Addr::from(IpAddr::V4(Ipv4Addr::new(192, 168, s as u8, 10))))
        .collect()
}

fn is_server(a: &Addr) -> bool {
    servers().contains(a)
}

/// Samples per pair kind in one interval: (acknowledged by a server, by a client), summed over
/// the recorders, with the recorders' moments checked against the counters.
fn split(s: &IntervalStats) -> (u64, u64) {
    let (mut to_server, mut to_client) = (0, 0);
    for p in s.pairs() {
        if is_server(&p.key().dst) {
            to_server += p.count();
        } else {
            to_client += p.count();
        }
    }
    assert_eq!(
        to_server + to_client + s.counters.filtered,
        s.counters.samples,
        "{:?}",
        s.counters
    );
    (to_server, to_client)
}

#[test]
fn new_local_addresses_take_effect_within_the_interval() {
    let mut mix = traffic::Mix::new(200, 20, SERVERS);
    let mut w = Worker::new(0, &WorkerConfig::default());
    // Warm up: every flow established, every half's reporting decided.
    mix.cycle(|f| w.handle(LinkType::Ethernet, f));
    let first = w.take_interval(IntervalStats::default());
    let (a, b) = split(&first);
    assert!(a > 0 && b > 0, "{:?}", first.counters);

    // The servers become local: their halves are not reported from the next segment on.
    w.set_local(servers());
    mix.cycle(|f| w.handle(LinkType::Ethernet, f));
    let s = w.take_interval(IntervalStats::default());
    let (to_server, to_client) = split(&s);
    assert_eq!(to_server, 0);
    assert_eq!(s.counters.filtered, a);
    assert_eq!(to_client, b);

    // Within one interval: a cycle with the servers local, then one without.
    mix.cycle(|f| w.handle(LinkType::Ethernet, f));
    w.set_local(Vec::new());
    mix.cycle(|f| w.handle(LinkType::Ethernet, f));
    let s = w.take_interval(IntervalStats::default());
    let (to_server, to_client) = split(&s);
    assert_eq!(s.counters.filtered, a);
    assert_eq!(to_server, a);
    assert_eq!(to_client, 2 * b);
}

/// Samples per pair.
fn per_pair(s: &IntervalStats) -> BTreeMap<(Addr, Addr), u64> {
    s.pairs()
        .map(|p| ((p.key().src, p.key().dst), p.count()))
        .collect()
}

/// The client host number of a mix frame (its 10.x.y.z address's last byte).
fn client_host(data: &[u8]) -> u8 {
    let (src, dst) = (&data[26..30], &data[30..34]);
    if src[0] == 10 {
        src[3]
    } else {
        dst[3]
    }
}

#[test]
fn every_interval_starts_with_fresh_slots_even_after_the_counter_wraps() {
    // The interval counter has 8 bits. For each number of empty intervals around one full turn
    // of it (one of them brings it back to the number the flows' cookies were set in), the flows
    // stay in the table, and the next interval's samples must each go to their own pair. That
    // interval sees the pairs in another order (odd client hosts first), so a stale cookie would
    // name another pair's slot.
    for turn in [u8::MAX - 2, u8::MAX - 1, u8::MAX] {
        let mut mix = traffic::Mix::new(200, 20, SERVERS);
        let mut w = Worker::new(0, &WorkerConfig::default());
        mix.cycle(|f| w.handle(LinkType::Ethernet, f));
        let first = w.take_interval(IntervalStats::default());
        let mut spare = IntervalStats::default();
        for _ in 0..turn {
            spare = w.take_interval(spare);
        }
        assert_eq!(spare.counters.samples, 0);
        let mut later = Vec::new();
        mix.cycle(|f| {
            if client_host(f.data) % 2 == 1 {
                w.handle(LinkType::Ethernet, f);
            } else {
                later.push((f.ts_ns, f.data.to_vec(), f.wire_len));
            }
        });
        for (ts_ns, data, wire_len) in &later {
            let f = Frame {
                ts_ns: *ts_ns,
                data,
                wire_len: *wire_len,
            };
            w.handle(LinkType::Ethernet, &f);
        }
        let s = w.take_interval(spare);
        assert_eq!(split(&s), split(&first), "after {turn} empty intervals");
        assert_eq!(
            per_pair(&s),
            per_pair(&first),
            "after {turn} empty intervals"
        );
        assert_eq!(s.counters.filtered, 0);
    }
}

/// How long a server takes to acknowledge in the short connections below, and a client.
const TO_SERVER_NS: u64 = 1_000_000;
const TO_CLIENT_NS: u64 = 50_000;

/// Client host `c`'s address.
fn client(c: u16) -> [u8; 4] {
    let [hi, lo] = c.to_be_bytes();
    [10, 1, hi, lo]
}

/// Server host `s`'s address.
fn server(s: u8) -> [u8; 4] {
    [192, 168, s, 10]
}

/// A short connection from client `c`, port `port`, to server `s`, port `sport`, starting at
/// `*t`, each segment given to `emit` with its time: SYN, SYN/ACK, ACK, a request, its response,
/// the client's ACK with FIN, and the server's FIN/ACK. Its samples: three of the client's
/// segments acknowledged by the server (SYN, request, FIN), each after `TO_SERVER_NS`, and two
/// of the server's acknowledged by the client (SYN/ACK, response), each after `TO_CLIENT_NS`.
fn short_flow(
    emit: &mut impl FnMut(u64, &Seg),
    t: &mut u64,
    (c, port): (u16, u16),
    (s, sport): (u8, u16),
) {
    let (cs, ss) = (u32::from(port) * 7_919, u32::from(c) * 104_729);
    let seg = |c2s: bool, seq: u32, ack: u32, flags: u8, payload: u16| {
        let (src, sp, dst, dp) = if c2s {
            (client(c), port, server(s), sport)
        } else {
            (server(s), sport, client(c), port)
        };
        Seg {
            src,
            sport: sp,
            dst,
            dport: dp,
            seq,
            ack,
            flags,
            payload,
        }
    };
    let steps = [
        (0, seg(true, cs, 0, SYN, 0)),
        (TO_SERVER_NS, seg(false, ss, cs + 1, SYN | ACK, 0)),
        (TO_CLIENT_NS, seg(true, cs + 1, ss + 1, ACK, 0)),
        (10_000, seg(true, cs + 1, ss + 1, ACK, 100)),
        (TO_SERVER_NS, seg(false, ss + 1, cs + 101, ACK, 200)),
        (TO_CLIENT_NS, seg(true, cs + 101, ss + 201, ACK | FIN, 0)),
        (TO_SERVER_NS, seg(false, ss + 201, cs + 102, ACK | FIN, 0)),
    ];
    for (gap, sg) in steps {
        *t += gap;
        emit(*t, &sg);
    }
    *t += 10_000;
}

/// `s` as an Ethernet frame of IPv6 and TCP headers, its addresses mapped by [`six`]: the
/// captured bytes (headers only, as a short snap length keeps) and the length on the wire.
fn frame6(s: &Seg) -> (Vec<u8>, u32) {
    let mut out = Vec::new();
    let wire = tcp4::push6(&mut out, s, six(s.src), six(s.dst));
    (out, wire)
}

/// Samples, min and max per reporting key of an interval, the `other` series as `None`.
fn per_key(s: &IntervalStats) -> BTreeMap<Option<PairKey>, (u64, u64, u64)> {
    let mut m: BTreeMap<_, _> = s
        .pairs()
        .map(|p| {
            let x = p.moments();
            (Some(p.key()), (x.count, x.min_ns, x.max_ns))
        })
        .collect();
    if let Some(o) = s.overflow() {
        let x = o.moments();
        m.insert(None, (x.count, x.min_ns, x.max_ns));
    }
    m
}

/// The reporting key of a pair of the test's hosts, in IPv6 (as [`six`] maps them) when `v6`.
fn key(v6: bool, src: [u8; 4], dst: [u8; 4], port: Option<ServicePort>) -> Option<PairKey> {
    let addr = |a: [u8; 4]| {
        if v6 {
            Addr::from(IpAddr::V6(six(a).into()))
        } else {
            Addr::from(IpAddr::V4(a.into()))
        }
    };
    Some(PairKey {
        src: addr(src),
        dst: addr(dst),
        port,
    })
}

/// Checks client `c`'s two pairs with server 0 under `port` (in IPv6 when `v6`): what it sent,
/// acknowledged by the server, counts the samples of `to_server` connections; what the server
/// sent, of `to_client`.
#[track_caller]
fn assert_pairs(
    m: &BTreeMap<Option<PairKey>, (u64, u64, u64)>,
    (v6, c): (bool, u16),
    port: Option<ServicePort>,
    (to_server, to_client): (u64, u64),
) {
    let what = format!("client {c}, port {port:?}");
    let sent = m.get(&key(v6, client(c), server(0), port)).copied();
    assert_eq!(
        sent,
        Some((3 * to_server, TO_SERVER_NS, TO_SERVER_NS)),
        "{what}"
    );
    let got = m.get(&key(v6, server(0), client(c), port)).copied();
    assert_eq!(
        got,
        Some((2 * to_client, TO_CLIENT_NS, TO_CLIENT_NS)),
        "{what}"
    );
}

/// Feeds one short connection from each client in `clients` to server 0, port 443, with a
/// fresh client port per `round`; in IPv6 when `v6`.
fn round_of_flows(
    w: &mut Worker,
    t: &mut u64,
    v6: bool,
    clients: impl Iterator<Item = u16>,
    round: u16,
) {
    let (mut f, mut f6) = (Frames::default(), Vec::new());
    for c in clients {
        let ends = ((c, 20_000 + round), (0, 443));
        if v6 {
            short_flow(&mut |t, s| f6.push((t, frame6(s))), t, ends.0, ends.1);
        } else {
            short_flow(&mut |t, s| f.add(t, s), t, ends.0, ends.1);
        }
    }
    f.each(|fr| w.handle(LinkType::Ethernet, fr));
    for (ts_ns, (data, wire_len)) in &f6 {
        let fr = Frame {
            ts_ns: *ts_ns,
            data,
            wire_len: *wire_len,
        };
        w.handle(LinkType::Ethernet, &fr);
    }
}

#[test]
fn short_flows_of_many_pairs_each_reach_their_own_pair() {
    // 6,000 clients: more pairs than the worker's cache of recent pairs has slots, so pairs
    // share slots and push each other out. Each client opens one connection a round; the
    // second interval meets the clients in the other order, so that every pair's slot number
    // changes and a cookie kept from the first interval would name another pair's. In each
    // family, which the worker caches apart.
    const CLIENTS: u16 = 6_000;
    for v6 in [false, true] {
        let mut w = Worker::new(0, &WorkerConfig::default());
        let mut t = 1_000_000_000;
        round_of_flows(&mut w, &mut t, v6, 0..CLIENTS, 0);
        let first = w.take_interval(IntervalStats::default());
        for round in 1..3 {
            round_of_flows(&mut w, &mut t, v6, (0..CLIENTS).rev(), round);
        }
        let second = w.take_interval(IntervalStats::default());
        for (s, flows) in [(&first, 1), (&second, 2)] {
            let m = per_key(s);
            assert_eq!(m.len(), 2 * usize::from(CLIENTS), "{:?}", s.counters);
            for c in 0..CLIENTS {
                assert_pairs(&m, (v6, c), None, (flows, flows));
            }
            assert_eq!(s.counters.samples, 5 * flows * u64::from(CLIENTS));
        }
    }
}

#[test]
fn new_flows_of_pairs_past_max_pairs_stay_in_other() {
    // Three pairs kept apart. Connections run one after another, so the first three pairs to
    // get a sample are client 0's two and client 1's to the server; every later connection of
    // any client must go where its pair went first.
    let mut w = Worker::new(
        0,
        &WorkerConfig {
            max_pairs: 3,
            ..WorkerConfig::default()
        },
    );
    let mut t = 1_000_000_000;
    for round in 0..5 {
        round_of_flows(&mut w, &mut t, false, 0..4, round);
    }
    let s = w.take_interval(IntervalStats::default());
    let want: BTreeMap<_, _> = [
        (
            key(false, client(0), server(0), None),
            (15, TO_SERVER_NS, TO_SERVER_NS),
        ),
        (
            key(false, server(0), client(0), None),
            (10, TO_CLIENT_NS, TO_CLIENT_NS),
        ),
        (
            key(false, client(1), server(0), None),
            (15, TO_SERVER_NS, TO_SERVER_NS),
        ),
        (None, (100 - 40, TO_CLIENT_NS, TO_SERVER_NS)),
    ]
    .into_iter()
    .collect();
    assert_eq!(per_key(&s), want, "{:?}", s.counters);
}

#[test]
fn new_flows_of_a_filtered_pair_follow_the_local_addresses() {
    // The server is local: what the clients send it is acknowledged by this host, and not
    // reported. Midway through the interval it stops being local.
    let mut w = Worker::new(
        0,
        &WorkerConfig {
            local: vec![Addr::from(IpAddr::V4(server(0).into()))],
            ..WorkerConfig::default()
        },
    );
    let mut t = 1_000_000_000;
    for round in 0..3 {
        round_of_flows(&mut w, &mut t, false, 0..10, round);
    }
    w.set_local(Vec::new());
    for round in 3..5 {
        round_of_flows(&mut w, &mut t, false, 0..10, round);
    }
    let s = w.take_interval(IntervalStats::default());
    assert_eq!(s.counters.filtered, 3 * 3 * 10);
    let m = per_key(&s);
    for c in 0..10 {
        // Reported from the server: its samples of the 2 connections after it stopped being
        // local; to the clients: those of all 5.
        assert_pairs(&m, (false, c), None, (2, 5));
    }
    assert_eq!(m.len(), 20);
}

#[test]
fn new_flows_to_a_port_past_max_ports_go_to_the_pairs_other_port() {
    // One port kept apart per host pair: each client's first connection is to port 443, so 443
    // keeps its own series, and its connections to port 80, before and after more to 443, go to
    // the pair's `other` port.
    let mut w = Worker::new(
        0,
        &WorkerConfig {
            max_ports: Some(1),
            ..WorkerConfig::default()
        },
    );
    let mut t = 1_000_000_000;
    let mut f = Frames::default();
    for (round, sport) in [443, 80, 443, 80, 80].into_iter().enumerate() {
        for c in 0..10 {
            short_flow(
                &mut |t, s| f.add(t, s),
                &mut t,
                (c, 30_000 + round as u16),
                (0, sport),
            );
        }
    }
    f.each(|fr| w.handle(LinkType::Ethernet, fr));
    let s = w.take_interval(IntervalStats::default());
    let m = per_key(&s);
    let (https, other) = (Some(ServicePort::Port(443)), Some(ServicePort::Other));
    for c in 0..10 {
        assert_pairs(&m, (false, c), https, (2, 2));
        assert_pairs(&m, (false, c), other, (3, 3));
    }
    assert_eq!(m.len(), 40);
}
