//! Per-connection statistics for `--by flow`: one record per TCP connection, kept beside the
//! flow table only when asked for.
//!
//! The worker calls [`Connections::packet`] for every segment and [`Connections::sample`] for
//! every reported sample, both behind one flag test, so that the default mode pays nothing
//! else. A connection is keyed by its 5-tuple; a SYN (without ACK) on a 5-tuple that has already
//! carried data or a FIN/RST starts a new connection, and the old one is kept as finished.
//!
//! What is counted, per direction (the connection's initiator is the SYN's sender, or the first
//! packet's when the handshake was not seen):
//! - payload bytes, SYN and FIN excluded;
//! - retransmitted bytes: payload at or below the highest sequence number the same side sent
//!   before (a resend, or a segment that arrived out of order at the capture point);
//! - the handshake's two samples: SYN → SYN/ACK (the responder's RTT) and SYN/ACK → ACK (the
//!   initiator's).
//!
//! Offline, every connection is reported when the capture ends. Live, a connection is handed
//! over ([`Connections::take_finished`]) once the flow table would forget its flow: after
//! `closed_ns` of silence once a FIN or RST was seen, or `idle_ns` of silence otherwise, or when
//! its 5-tuple starts a new connection; the rest when the capture ends.
//!
//! RTT figures are over the samples of the halves metro reports (the local addresses and the
//! whitelist apply, as to the pair lines), with the pair lines' definitions: count, min, max,
//! mean and jitter exact, quantiles by HdrHistogram with 3 significant digits. Memory is bounded:
//! at most `max_conns` connections (the flow table's `max_flows`) are kept for the run, more are
//! counted in [`Connections::untracked`]; a connection keeps at most [`KEPT_RTTS`] samples for
//! its quantiles (its count, min, max, mean and jitter stay exact past that).

use hdrhistogram::Histogram;
use std::collections::HashMap;

use crate::decode::Addr;
use crate::flow::Ttl;
use crate::record::{ServicePort, HIST_HIGH_NS, HIST_LOW_NS, RTT_SIGFIG};
use crate::rtt::Method;

/// Samples a connection keeps for its quantiles.
pub const KEPT_RTTS: usize = 65_536;

/// One endpoint: address and port.
type End = (Addr, u16);

/// One TCP connection's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// The initiator (the SYN's sender, else the first packet's).
    pub client: End,
    /// The responder.
    pub server: End,
    /// Capture time of the first and last packet, ns.
    pub first_ns: u64,
    /// Capture time of the last packet, ns.
    pub last_ns: u64,
    /// Payload bytes sent by the client, then by the server.
    pub bytes: [u64; 2],
    /// Of those, bytes at or below what the same side had sent before.
    pub retrans_bytes: [u64; 2],
    /// SYN → SYN/ACK (the server's RTT) and SYN/ACK → ACK (the client's), when seen.
    pub handshake_ns: [Option<u64>; 2],
    /// Reported samples.
    pub samples: u64,
    sum_ns: u128,
    /// Smallest sample.
    pub min_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
    jitter_sum_ns: u128,
    jitter_n: u64,
    rtts: Vec<u64>,
    /// Highest sequence number sent by the client, then the server, once each has sent.
    high: [Option<u32>; 2],
    /// A FIN or RST was seen, or data: a new SYN then starts another connection.
    used: bool,
    /// A FIN or RST was seen.
    closed: bool,
    /// It was first seen on its SYN or SYN/ACK, so `server` accepted it.
    opened: bool,
}

/// A connection's RTT summary, with the pair lines' definitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnRtt {
    /// Smallest, exact.
    pub min_ns: u64,
    /// Quantiles 0.5, 0.95, 0.99 (HdrHistogram, 3 significant digits).
    pub p50_ns: u64,
    /// 95th percentile.
    pub p95_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Mean, exact.
    pub avg_ns: f64,
    /// Largest, exact.
    pub max_ns: u64,
    /// Mean absolute difference between consecutive samples of a half.
    pub jitter_ns: f64,
}

impl Connection {
    fn new(client: End, server: End, t: u64) -> Connection {
        Connection {
            client,
            server,
            first_ns: t,
            last_ns: t,
            bytes: [0; 2],
            retrans_bytes: [0; 2],
            handshake_ns: [None; 2],
            samples: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            jitter_sum_ns: 0,
            jitter_n: 0,
            rtts: Vec::new(),
            high: [None; 2],
            used: false,
            closed: false,
            opened: false,
        }
    }

    /// The RTT summary, if the connection has samples.
    pub fn rtt(&self) -> Option<ConnRtt> {
        if self.samples == 0 {
            return None;
        }
        let mut h = Histogram::<u32>::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, RTT_SIGFIG)
            .expect("constant histogram bounds are valid");
        for &v in &self.rtts {
            h.saturating_record(v.clamp(HIST_LOW_NS, HIST_HIGH_NS));
        }
        let q = |q: f64| {
            h.median_equivalent(h.value_at_quantile(q))
                .clamp(self.min_ns, self.max_ns)
        };
        Some(ConnRtt {
            min_ns: self.min_ns,
            p50_ns: q(0.5),
            p95_ns: q(0.95),
            p99_ns: q(0.99),
            avg_ns: self.sum_ns as f64 / self.samples as f64,
            max_ns: self.max_ns,
            jitter_ns: if self.jitter_n == 0 {
                0.0
            } else {
                self.jitter_sum_ns as f64 / self.jitter_n as f64
            },
        })
    }

    /// Its server port as the pair lines' port dimension has it: the port that accepted the
    /// connection, or, without its handshake, the smaller port (as [`crate::worker::server_port`]).
    pub fn server_port(&self) -> u16 {
        if self.opened {
            self.server.1
        } else {
            self.server.1.min(self.client.1)
        }
    }

    /// 0 when `sender` is the client, 1 when it is the server.
    fn dir(&self, sender: &End) -> usize {
        usize::from(*sender != self.client)
    }
}

/// What the worker knows of one segment, for [`Connections::packet`].
#[derive(Debug, Clone, Copy)]
pub struct ConnSegment {
    /// The sender.
    pub src: End,
    /// The receiver.
    pub dst: End,
    /// Capture time, ns.
    pub ts_ns: u64,
    /// Sequence number.
    pub seq: u32,
    /// Sequence space used (payload, plus one for SYN and for FIN).
    pub seq_len: u32,
    /// SYN set.
    pub syn: bool,
    /// ACK set.
    pub ack: bool,
    /// FIN set.
    pub fin: bool,
    /// RST set.
    pub rst: bool,
}

/// A worker's connections.
#[derive(Debug)]
pub struct Connections {
    live: HashMap<(End, End), Connection>,
    done: Vec<Connection>,
    max_conns: usize,
    /// When a quiet connection has ended: the flow table's expiry.
    ttl: Ttl,
    /// Connections not kept because `max_conns` were.
    pub untracked: u64,
}

/// The key both directions of a connection share.
fn key(a: End, b: End) -> (End, End) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl Connections {
    /// Keeps at most `max_conns` connections; a quiet one has ended after `ttl`.
    pub fn new(max_conns: usize, ttl: Ttl) -> Connections {
        Connections {
            live: HashMap::new(),
            done: Vec::new(),
            max_conns: max_conns.max(1),
            ttl,
            untracked: 0,
        }
    }

    /// When a quiet connection has ended.
    pub fn ttl(&self) -> Ttl {
        self.ttl
    }

    /// The bound on connections kept.
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// Counts one segment.
    pub fn packet(&mut self, s: &ConnSegment) {
        let k = key(s.src, s.dst);
        let new_syn = s.syn && !s.ack;
        if let Some(c) = self.live.get(&k) {
            if new_syn && c.used {
                let old = self.live.remove(&k).expect("just found");
                self.done.push(old);
            }
        }
        let held = self.live.len() + self.done.len();
        let c = match self.live.get_mut(&k) {
            Some(c) => c,
            None if held >= self.max_conns => {
                self.untracked += 1;
                return;
            }
            None => {
                // A SYN/ACK's sender is the responder; otherwise the sender opens.
                let (client, server) = if s.syn && s.ack {
                    (s.dst, s.src)
                } else {
                    (s.src, s.dst)
                };
                let c = (self.live.entry(k)).or_insert(Connection::new(client, server, s.ts_ns));
                c.opened = s.syn;
                c
            }
        };
        c.last_ns = c.last_ns.max(s.ts_ns);
        c.first_ns = c.first_ns.min(s.ts_ns);
        let d = c.dir(&s.src);
        let payload = s.seq_len - u32::from(s.syn) - u32::from(s.fin);
        if payload > 0 {
            // The payload starts after a SYN's own sequence number.
            let start = s.seq.wrapping_add(u32::from(s.syn));
            if let Some(high) = c.high[d] {
                let below = high.wrapping_sub(start);
                if (below as i32) > 0 {
                    c.retrans_bytes[d] += u64::from(below.min(payload));
                }
            }
            c.bytes[d] += u64::from(payload);
            c.used = true;
        }
        if s.fin || s.rst {
            c.used = true;
            c.closed = true;
        }
        if s.seq_len > 0 {
            let end = s.seq.wrapping_add(s.seq_len);
            c.high[d] = Some(match c.high[d] {
                Some(h) if (h.wrapping_sub(end) as i32) > 0 => h,
                _ => end,
            });
        }
    }

    /// Records a reported sample of the half whose data `sender` sent.
    pub fn sample(
        &mut self,
        sender: End,
        acker: End,
        rtt_ns: u64,
        jitter_ns: Option<u64>,
        method: Method,
    ) {
        let Some(c) = self.live.get_mut(&key(sender, acker)) else {
            return;
        };
        c.samples += 1;
        c.sum_ns += u128::from(rtt_ns);
        c.min_ns = c.min_ns.min(rtt_ns);
        c.max_ns = c.max_ns.max(rtt_ns);
        if let Some(j) = jitter_ns {
            c.jitter_sum_ns += u128::from(j);
            c.jitter_n += 1;
        }
        if c.rtts.len() < KEPT_RTTS {
            c.rtts.push(rtt_ns);
        }
        if method == Method::Syn {
            // The client's SYN acknowledged by the server is the server's RTT (index 0).
            let d = c.dir(&sender);
            c.handshake_ns[d].get_or_insert(rtt_ns);
        }
    }

    /// Takes the connections that have ended by `now_ns` (capture time): those whose 5-tuple
    /// started a new one, and those silent for longer than the TTL after a FIN or RST
    /// (`closed_ns`) or otherwise (`idle_ns`), as the flow table forgets flows. In the order of
    /// their first packet.
    pub fn take_finished(&mut self, now_ns: u64) -> Vec<Connection> {
        let mut all = std::mem::take(&mut self.done);
        let ttl = self.ttl;
        let quiet = |c: &Connection| {
            let silent = now_ns.saturating_sub(c.last_ns);
            silent > if c.closed { ttl.closed_ns } else { ttl.idle_ns }
        };
        let ended: Vec<(End, End)> = (self.live.iter())
            .filter(|(_, c)| quiet(c))
            .map(|(k, _)| *k)
            .collect();
        all.extend(ended.iter().filter_map(|k| self.live.remove(k)));
        all.sort_by_key(|c| (c.first_ns, c.client, c.server));
        all
    }

    /// Every connection, finished ones first, in the order of their first packet.
    pub fn into_connections(self) -> Vec<Connection> {
        let mut all = self.done;
        all.extend(self.live.into_values());
        all.sort_by_key(|c| (c.first_ns, c.client, c.server));
        all
    }
}

/// The bytes each sender resent to each acknowledger over their connections, for the pair lines
/// of `--by flow` (by server port too with `--by port`).
#[derive(Debug, Default)]
pub struct ResentBytes {
    by_key: HashMap<(Addr, Addr, Option<u16>), u64>,
    /// Per host pair, the bytes of the ports whose lines were written, for its `other` port.
    written: HashMap<(Addr, Addr), u64>,
}

impl ResentBytes {
    /// Sums `conns`, by server port when `by_port`.
    pub fn new<'a>(conns: impl IntoIterator<Item = &'a Connection>, by_port: bool) -> ResentBytes {
        let mut r = ResentBytes::default();
        for c in conns {
            let port = by_port.then(|| c.server_port());
            for (from, to, n) in [
                (c.client.0, c.server.0, c.retrans_bytes[0]),
                (c.server.0, c.client.0, c.retrans_bytes[1]),
            ] {
                *r.by_key.entry((from, to, None)).or_default() += n;
                if port.is_some() {
                    *r.by_key.entry((from, to, port)).or_default() += n;
                }
            }
        }
        r
    }

    /// The bytes for the line of `src` to `dst` at `port`, the lines of a host pair taken in
    /// the pair lines' order (its `other` port last: it gets what its other lines did not).
    pub fn line(&mut self, src: Addr, dst: Addr, port: Option<ServicePort>) -> u64 {
        let at = |p| self.by_key.get(&(src, dst, p)).copied().unwrap_or(0);
        match port {
            None => at(None),
            Some(ServicePort::Port(n)) => {
                let b = at(Some(n));
                *self.written.entry((src, dst)).or_default() += b;
                b
            }
            Some(ServicePort::Other) => {
                let done = self.written.get(&(src, dst)).copied().unwrap_or(0);
                at(None).saturating_sub(done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Ttl = Ttl {
        idle_ns: 100,
        closed_ns: 10,
    };

    fn end(host: u8, port: u16) -> End {
        (Addr::v4([10, 0, 0, host]), port)
    }

    fn seg(from_client: bool, t: u64, seq: u32, len: u32, flags: &str) -> ConnSegment {
        let (c, s) = (end(1, 40000), end(2, 80));
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        ConnSegment {
            src,
            dst,
            ts_ns: t,
            seq,
            seq_len: len,
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
        }
    }

    #[test]
    fn bytes_and_resent_bytes_are_counted_each_way() {
        let mut t = Connections::new(10, TTL);
        t.packet(&seg(true, 1, 99, 1, "S"));
        t.packet(&seg(false, 2, 499, 1, "SA"));
        t.packet(&seg(true, 3, 100, 0, "A"));
        t.packet(&seg(true, 4, 100, 1000, "A"));
        t.packet(&seg(true, 5, 1100, 500, "A"));
        // Resent: the first 1000 bytes again, then 200 of them and 300 new.
        t.packet(&seg(true, 6, 100, 1000, "A"));
        t.packet(&seg(true, 7, 1400, 500, "A"));
        t.packet(&seg(false, 8, 500, 300, "A"));
        t.packet(&seg(false, 9, 800, 1, "FA"));
        let c = t.into_connections();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].client, end(1, 40000));
        assert_eq!(c[0].bytes, [3000, 300]);
        assert_eq!(c[0].retrans_bytes, [1200, 0]);
        assert_eq!((c[0].first_ns, c[0].last_ns), (1, 9));
    }

    #[test]
    fn a_new_syn_after_data_starts_a_new_connection_and_the_bound_holds() {
        let mut t = Connections::new(2, TTL);
        t.packet(&seg(true, 1, 0, 1, "S"));
        t.packet(&seg(true, 2, 1, 10, "A"));
        t.packet(&seg(true, 3, 5000, 1, "S"));
        let other = ConnSegment {
            src: end(3, 1),
            ..seg(true, 4, 0, 1, "S")
        };
        t.packet(&other);
        assert_eq!(t.untracked, 1);
        let c = t.into_connections();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].first_ns, c[0].bytes[0]), (1, 10));
        assert_eq!((c[1].first_ns, c[1].bytes[0]), (3, 0));
    }

    #[test]
    fn samples_give_the_pair_lines_figures_and_the_handshake() {
        let mut t = Connections::new(10, TTL);
        t.packet(&seg(true, 1, 99, 1, "S"));
        let (c, s) = (end(1, 40000), end(2, 80));
        t.sample(c, s, 2_000_000, None, Method::Syn);
        t.sample(s, c, 50_000, None, Method::Syn);
        t.sample(c, s, 4_000_000, Some(2_000_000), Method::Seq);
        let got = t.into_connections();
        assert_eq!(got[0].handshake_ns, [Some(2_000_000), Some(50_000)]);
        let r = got[0].rtt().unwrap();
        assert_eq!((r.min_ns, r.max_ns, got[0].samples), (50_000, 4_000_000, 3));
        assert_eq!(r.avg_ns, 6_050_000.0 / 3.0);
        assert_eq!(r.jitter_ns, 2_000_000.0);
        // The median sample, as HdrHistogram (3 significant digits) gives it: the middle of the
        // 1,024 ns bucket that holds 2 ms, like the pair lines.
        assert_eq!(r.p50_ns, 2_000_384);
    }

    #[test]
    fn connections_are_finished_when_the_flow_table_would_forget_them() {
        let mut t = Connections::new(10, TTL);
        // Open, quiet since 5.
        t.packet(&seg(true, 1, 0, 1, "S"));
        t.packet(&seg(true, 5, 1, 10, "A"));
        // Closed at 20 on another 5-tuple.
        let other = |mut g: ConnSegment| {
            g.src.1 = 40001;
            g
        };
        t.packet(&other(seg(true, 2, 0, 1, "S")));
        t.packet(&other(seg(true, 20, 1, 1, "FA")));
        assert!(t.take_finished(30).is_empty());
        let closed = t.take_finished(31);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].client.1, closed[0].first_ns), (40001, 2));
        assert!(t.take_finished(105).is_empty());
        // A new SYN on the open one's 5-tuple finishes it at once.
        t.packet(&seg(true, 105, 9000, 1, "S"));
        let reused = t.take_finished(105);
        assert_eq!((reused.len(), reused[0].first_ns), (1, 1));
        assert!(t.take_finished(205).is_empty());
        let idle = t.take_finished(206);
        assert_eq!((idle.len(), idle[0].first_ns), (1, 105));
        assert!(t.into_connections().is_empty());
    }

    #[test]
    fn resent_bytes_go_to_their_server_ports_line_and_the_rest_to_other() {
        let mut t = Connections::new(10, TTL);
        // From port 40000 to 80 (opened), to 443 (opened), and 9000 ↔ 50000 without a
        // handshake (its port is the smaller one); each sends 100 bytes and resends `n` of them.
        for (i, (cport, sport, n, syn)) in [
            (40000, 80, 10, true),
            (40001, 443, 20, true),
            (50000, 9000, 30, false),
        ]
        .into_iter()
        .enumerate()
        {
            let s = |t: u64, seq: u32, len: u32, flags: &str| ConnSegment {
                src: end(1, cport),
                dst: end(2, sport),
                ..seg(true, t, seq, len, flags)
            };
            let t0 = i as u64 * 10;
            if syn {
                t.packet(&s(t0, 0, 1, "S"));
            }
            t.packet(&s(t0 + 1, 1, 100, "A"));
            t.packet(&s(t0 + 2, 1, n, "A"));
        }
        let conns = t.into_connections();
        let (a, b) = (end(1, 0).0, end(2, 0).0);
        let mut r = ResentBytes::new(&conns, true);
        assert_eq!(r.line(a, b, Some(ServicePort::Port(80))), 10);
        assert_eq!(r.line(a, b, Some(ServicePort::Port(9000))), 30);
        // 443 was folded into `other`.
        assert_eq!(r.line(a, b, Some(ServicePort::Other)), 20);
        assert_eq!(r.line(b, a, Some(ServicePort::Port(80))), 0);
        let mut r = ResentBytes::new(&conns, false);
        assert_eq!(r.line(a, b, None), 60);
    }
}
