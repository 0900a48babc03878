//! A flow remembers how each of its halves is reported (its pair's slot, or "filtered") for the
//! current interval only. These tests change what the answer must be — new local addresses, a
//! new interval, the interval counter wrapping — and check that no stale answer is used.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use metro::capture::{Frame, LinkType};
use metro::decode::Addr;
use metro::record::IntervalStats;
use metro::worker::{Worker, WorkerConfig};

mod support;

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
