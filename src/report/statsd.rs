//! DogStatsD output: go-metro's gauges, on the wire exactly as go-metro sends them.
//!
//! Every report interval, for each (src, dst) pair with samples, [`StatsdReporter::report`] sends
//! `system.net.tcp.rtt.avg`, `system.net.tcp.rtt.jitter` and `system.net.tcp.rtt` (go-metro's
//! order), in milliseconds, tagged `src:NAME_OR_IP`, `dst:NAME_OR_IP`, the instance's tags as
//! written, then `iface:IF` — go-metro's tags in go-metro's order. `rtt` is the interval's median
//! and `rtt.avg` its mean (or, with `-st`, the smoothed RTT); go-metro sent the last sample and a
//! running mean instead. Optional gauges (`.min`, `.max`, `.95percentile`, `.99percentile`,
//! `.count`: the names Datadog gives its own histogram aggregates) and, when asked for
//! (`self_metrics`), metro's own counters under `metro.` follow: for Datadog users every series
//! is a billable custom metric, so by default only go-metro's gauges leave.
//!
//! Metrics are formatted by `cadence` and handed to [`QueueSink`], which packs them, in the
//! reporter's thread, into datagrams of at most [`MAX_DATAGRAM`] bytes (datadog-go's size) as they
//! come, and queues each full datagram to one sender thread per instance, which sends it on a
//! connected UDP socket (so that a receiver that is down shows up as `ECONNREFUSED` and is
//! counted). An interval of 200,000 pairs thus goes out as it is summarised, one datagram at a
//! time, never built in one buffer. The queue is bounded ([`QUEUE_DATAGRAMS`]): while a report
//! is sent, the reporter waits for room in it, but never longer than [`SEND_WAIT`] in all over
//! one report; past that, a datagram that finds the queue full is dropped and its metrics
//! counted. The workers never wait on any of it. The counts go out as `metro.statsd.errors`, and
//! are logged.
//!
//! What this module does not do: aggregate samples (that is [`super::merge`]), or decide which
//! pairs are reported (the worker's whitelist does).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use cadence::{Counted, Gauged, MetricSink, StatsdClient};
use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender, TrySendError};

use super::interval::IntervalReport;
use super::{ms, PairSummary};
use crate::decode::{Addr, Skip};
use crate::record::ServicePort;

/// Largest datagram the sink builds: datadog-go's default for UDP, which stays under a
/// 1500-byte MTU with IPv6 and UDP headers.
pub const MAX_DATAGRAM: usize = 1432;

/// Datagrams queued for the sender thread before the reporter waits (1.4 MiB, about 15,000
/// gauges).
pub const QUEUE_DATAGRAMS: usize = 1024;

/// Longest the reporter waits for room in the queue, in all, over one report. The sender empties
/// a full queue in a few milliseconds, and 200,000 pairs' gauges (about 35,000 datagrams) in a
/// fraction of a second; a sender stuck on its socket costs each report at most this.
pub const SEND_WAIT: Duration = Duration::from_secs(2);

/// Names for addresses: whitelisted hosts by the name they were configured with, and
/// whitelisted addresses by their reverse DNS name, filled in the background.
pub type Names = Arc<RwLock<HashMap<IpAddr, String>>>;

/// Counts shared by a [`QueueSink`], its sender thread and the reporter.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Metrics handed to the sink.
    pub queued: AtomicU64,
    /// Metrics dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Metrics in datagrams that could not be sent.
    pub send_failed: AtomicU64,
    /// Metrics in datagrams that were sent.
    pub sent: AtomicU64,
    /// Datagrams sent.
    pub datagrams: AtomicU64,
}

impl SinkStats {
    /// Metrics that did not leave metro, for whatever reason.
    pub fn lost(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) + self.send_failed.load(Ordering::Relaxed)
    }
}

enum Msg {
    /// Lines joined by newlines, and how many.
    Datagram(String, u64),
    Flush(Sender<()>),
}

/// The datagram being filled, and how long a full queue may still be waited for.
#[derive(Default)]
struct Open {
    buf: String,
    lines: u64,
    /// What is left of the time the queue may be waited for when full; `None`: not at all.
    wait: Option<Duration>,
}

/// A `cadence` sink that packs metrics into datagrams, with a bounded queue and its own sender
/// thread.
#[derive(Clone)]
pub struct QueueSink {
    tx: Sender<Msg>,
    stats: Arc<SinkStats>,
    open: Arc<Mutex<Open>>,
}

impl QueueSink {
    /// A sink sending to `to` from a UDP socket connected to it, queueing at most `capacity`
    /// datagrams.
    ///
    /// Fails only when no socket can be made; a receiver that is absent is not an error here.
    pub fn connect(to: SocketAddr, capacity: usize) -> io::Result<QueueSink> {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("constant address")
        } else {
            "[::]:0".parse().expect("constant address")
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(to)?;
        // A send only blocks when the socket buffer is full; never let that stall the sender.
        socket.set_write_timeout(Some(Duration::from_millis(100)))?;
        let (tx, rx) = bounded(capacity.max(1));
        let stats = Arc::new(SinkStats::default());
        let s = stats.clone();
        thread::Builder::new()
            .name("metro-statsd".into())
            .spawn(move || sender(socket, rx, &s))?;
        Ok(QueueSink::on(tx, stats))
    }

    fn on(tx: Sender<Msg>, stats: Arc<SinkStats>) -> QueueSink {
        QueueSink {
            tx,
            stats,
            open: Arc::new(Mutex::new(Open {
                buf: String::with_capacity(MAX_DATAGRAM),
                ..Open::default()
            })),
        }
    }

    /// The sink's counts.
    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, waits for room in a full queue at most `budget` in all; `None`: drops at
    /// once.
    pub fn allow_wait(&self, budget: Option<Duration>) {
        self.open().wait = budget;
    }

    /// Queues the datagram being filled, without waiting for it to be sent.
    pub fn flush(&self) {
        let mut open = self.open();
        let _ = self.hand_over(&mut open);
    }

    /// Queues the datagram being filled; when the queue is full, waits for room within what is
    /// left of the time allowed, then drops the datagram and counts its metrics.
    fn hand_over(&self, open: &mut Open) -> io::Result<()> {
        if open.lines == 0 {
            return Ok(());
        }
        let lines = open.lines;
        let buf = std::mem::replace(&mut open.buf, String::with_capacity(MAX_DATAGRAM));
        open.lines = 0;
        let msg = Msg::Datagram(buf, lines);
        let gone = match open.wait {
            Some(left) => {
                let start = Instant::now();
                let sent = self.tx.send_timeout(msg, left);
                open.wait = Some(left.saturating_sub(start.elapsed()));
                match sent {
                    Ok(()) => return Ok(()),
                    Err(SendTimeoutError::Timeout(_)) => false,
                    Err(SendTimeoutError::Disconnected(_)) => true,
                }
            }
            None => match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => false,
                Err(TrySendError::Disconnected(_)) => true,
            },
        };
        self.stats.dropped.fetch_add(lines, Ordering::Relaxed);
        Err(if gone {
            io::Error::new(io::ErrorKind::BrokenPipe, "statsd sender gone")
        } else {
            io::Error::new(io::ErrorKind::WouldBlock, "statsd queue full")
        })
    }

    /// Waits until everything queued so far has been sent (or failed), at most `timeout`.
    /// Returns false on timeout.
    pub fn flush_wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        {
            let mut open = self.open();
            let wait = open.wait.replace(timeout);
            let _ = self.hand_over(&mut open);
            open.wait = wait;
        }
        let (ack_tx, ack_rx) = bounded(1);
        if self.tx.send_deadline(Msg::Flush(ack_tx), deadline).is_err() {
            return false;
        }
        ack_rx.recv_deadline(deadline).is_ok()
    }
}

impl MetricSink for QueueSink {
    fn emit(&self, metric: &str) -> io::Result<usize> {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open();
        let mut handed = Ok(());
        if !open.buf.is_empty() && open.buf.len() + 1 + metric.len() > MAX_DATAGRAM {
            // The metrics dropped, if any, are the full datagram's, not this one.
            handed = self.hand_over(&mut open);
        }
        if !open.buf.is_empty() {
            open.buf.push('\n');
        }
        open.buf.push_str(metric);
        open.lines += 1;
        handed.map(|()| metric.len())
    }
}

/// The sender thread: sends the queued datagrams in order.
fn sender(socket: UdpSocket, rx: Receiver<Msg>, stats: &SinkStats) {
    for msg in rx {
        match msg {
            Msg::Datagram(buf, lines) => match socket.send(buf.as_bytes()) {
                Ok(_) => {
                    stats.sent.fetch_add(lines, Ordering::Relaxed);
                    stats.datagrams.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.send_failed.fetch_add(lines, Ordering::Relaxed);
                }
            },
            Msg::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

/// What one instance's reporter needs to know.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// The `iface:` tag value (`file` for files, as go-metro).
    pub iface: String,
    /// The instance's tags, sent as written, between `dst:` and `iface:`.
    pub tags: Vec<String>,
    /// `-st`: send the smoothed RTT as `rtt.avg`.
    pub soften: bool,
    /// Also send `.min`, `.max`, `.95percentile`, `.99percentile`, `.count`.
    pub extra_gauges: bool,
    /// Also send metro's own health (`metro.packets`, `metro.statsd.errors`, …) every interval.
    pub self_metrics: bool,
}

/// Sends one instance's intervals.
pub struct StatsdReporter {
    client: StatsdClient,
    sink: QueueSink,
    cfg: ReporterConfig,
    names: Names,
    lost_seen: u64,
}

impl StatsdReporter {
    /// A reporter sending through `sink`, naming addresses from `names`.
    pub fn new(sink: QueueSink, cfg: ReporterConfig, names: Names) -> StatsdReporter {
        // The sink counts its own failures, so the client need not report them again.
        let client = StatsdClient::builder("", sink.clone())
            .with_error_handler(|_| {})
            .build();
        StatsdReporter {
            client,
            sink,
            cfg,
            names,
            lost_seen: 0,
        }
    }

    /// The sink, for flushing and its counts.
    pub fn sink(&self) -> &QueueSink {
        &self.sink
    }

    fn name(names: &HashMap<IpAddr, String>, a: &Addr) -> String {
        let ip = a.ip();
        names.get(&ip).cloned().unwrap_or_else(|| ip.to_string())
    }

    /// Sends one interval: the gauges of every pair, summarised and sent one at a time, then
    /// metro's own counters. Waits for room in the sink's queue at most [`SEND_WAIT`] in all.
    pub fn report(&mut self, r: &IntervalReport) {
        let names = self
            .names
            .read()
            .map(|n| n.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        self.sink.allow_wait(Some(SEND_WAIT));
        let sent: Result<(), Infallible> = r.pairs.for_each(|p| {
            self.pair(&names, p);
            Ok(())
        });
        let Ok(()) = sent;
        if self.cfg.self_metrics {
            self.counters(r);
        }
        self.sink.flush();
        self.sink.allow_wait(None);
    }

    /// Sends the gauges of one pair.
    fn pair(&self, names: &HashMap<IpAddr, String>, p: &PairSummary) {
        if p.samples == 0 {
            return;
        }
        let (src, dst) = if p.other {
            ("src:other".to_string(), "dst:other".to_string())
        } else {
            (
                format!("src:{}", Self::name(names, &p.src)),
                format!("dst:{}", Self::name(names, &p.dst)),
            )
        };
        // After go-metro's tags, and only with the server-port dimension on.
        let port = p.port.map(|port| match port {
            ServicePort::Port(n) => format!("port:{n}"),
            ServicePort::Other => "port:other".to_string(),
        });
        for (metric, value) in self.pair_values(p) {
            self.gauge_then(metric, value, &[&src, &dst], port.as_deref());
        }
    }

    /// The gauges of one pair, in the order they are sent.
    fn pair_values(&self, p: &PairSummary) -> impl Iterator<Item = (&'static str, f64)> {
        let avg = if self.cfg.soften { p.srtt_ns } else { p.avg_ns };
        let extra = if self.cfg.extra_gauges { 5 } else { 0 };
        [
            ("system.net.tcp.rtt.avg", ms(avg)),
            ("system.net.tcp.rtt.jitter", ms(p.jitter_ns)),
            ("system.net.tcp.rtt", ms(p.p50_ns as f64)),
        ]
        .into_iter()
        .chain(
            [
                ("system.net.tcp.rtt.min", ms(p.min_ns as f64)),
                ("system.net.tcp.rtt.max", ms(p.max_ns as f64)),
                ("system.net.tcp.rtt.95percentile", ms(p.p95_ns as f64)),
                ("system.net.tcp.rtt.99percentile", ms(p.p99_ns as f64)),
                ("system.net.tcp.rtt.count", p.samples as f64),
            ]
            .into_iter()
            .take(extra),
        )
    }

    fn gauge(&self, metric: &str, value: f64, first: &[&str]) {
        self.gauge_then(metric, value, first, None);
    }

    /// A gauge tagged `first`, the instance's tags, `iface:`, then `last` if given.
    fn gauge_then(&self, metric: &str, value: f64, first: &[&str], last: Option<&str>) {
        let mut b = self.client.gauge_with_tags(metric, value);
        for t in first {
            b = b.with_tag_value(t);
        }
        for t in &self.cfg.tags {
            b = b.with_tag_value(t);
        }
        b = b.with_tag("iface", &self.cfg.iface);
        if let Some(t) = last {
            b = b.with_tag_value(t);
        }
        b.send();
    }

    fn count(&self, metric: &str, value: u64, first: &[&str]) {
        let mut b = self.client.count_with_tags(metric, value as i64);
        for t in first {
            b = b.with_tag_value(t);
        }
        for t in &self.cfg.tags {
            b = b.with_tag_value(t);
        }
        b.with_tag("iface", &self.cfg.iface).send();
    }

    fn counters(&mut self, r: &IntervalReport) {
        let c = &r.counters;
        self.count("metro.packets", c.packets, &[]);
        self.count("metro.kernel.drops", r.kernel.dropped, &[]);
        self.gauge("metro.flows", c.active_flows as f64, &[]);
        self.count("metro.evictions", c.table.evicted, &[]);
        // Only when the bound was reached: most hosts never reach it, and a series that is
        // always 0 would still be a custom metric to pay for.
        if c.overflow_samples > 0 {
            self.count("metro.pairs.overflow", c.overflow_samples, &[]);
        }
        if c.port_overflow_samples > 0 {
            self.count("metro.ports.overflow", c.port_overflow_samples, &[]);
        }
        if c.encapsulated > 0 {
            self.count("metro.encapsulated", c.encapsulated, &[]);
        }
        for s in Skip::ALL {
            if !s.always_shown() && c.skipped(s) == 0 {
                continue;
            }
            let tag = format!("reason:{}", s.name());
            self.count("metro.skipped", c.skipped(s), &[&tag]);
        }
        let lost = self.sink.stats().lost();
        self.count(
            "metro.statsd.errors",
            lost.saturating_sub(self.lost_seen),
            &[],
        );
        self.lost_seen = lost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::interval::{KernelStats, Pairs};
    use crate::report::Counters;

    fn receiver() -> (UdpSocket, SocketAddr) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let a = s.local_addr().unwrap();
        (s, a)
    }

    fn datagrams(s: &UdpSocket) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while let Ok(n) = s.recv(&mut buf) {
            out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        out
    }

    fn pair() -> PairSummary {
        PairSummary {
            src: Addr::v4([10, 42, 31, 222]),
            dst: Addr::v4([162, 243, 251, 92]),
            other: false,
            port: None,
            samples: 4,
            min_ns: 10_000_000,
            p50_ns: 20_000_000,
            avg_ns: 25_500_000.0,
            p95_ns: 40_000_000,
            p99_ns: 40_000_000,
            max_ns: 40_000_000,
            jitter_ns: 1_250_000.0,
            srtt_ns: 17_000_000.0,
        }
    }

    fn report(pairs: Vec<PairSummary>) -> IntervalReport<'static> {
        let mut counters = Counters {
            packets: 100,
            active_flows: 3,
            ..Counters::default()
        };
        counters.skipped[Skip::ALL[0].index()] = 7;
        counters.table.evicted = 2;
        IntervalReport {
            iface: "eth0".into(),
            pairs: Pairs::Made(pairs),
            counters,
            kernel: KernelStats {
                received: 100,
                dropped: 5,
                freezes: 0,
            },
            last: false,
            flows: Vec::new(),
            whole_run: None,
        }
    }

    #[test]
    fn gauges_carry_go_metros_names_tags_and_order() {
        let (rx, addr) = receiver();
        let sink = QueueSink::connect(addr, 1024).unwrap();
        let names: Names = Default::default();
        names
            .write()
            .unwrap()
            .insert("162.243.251.92".parse().unwrap(), "server.example".into());
        let mut r = StatsdReporter::new(
            sink.clone(),
            ReporterConfig {
                iface: "eth0".into(),
                tags: vec!["env:prod".into(), "solo".into()],
                soften: false,
                extra_gauges: false,
                self_metrics: true,
            },
            names,
        );
        r.report(&report(vec![pair()]));
        assert!(sink.flush_wait(Duration::from_secs(2)));
        let lines: Vec<String> = datagrams(&rx)
            .iter()
            .flat_map(|d| d.split('\n').map(str::to_string).collect::<Vec<_>>())
            .collect();
        let t = "src:10.42.31.222,dst:server.example,env:prod,solo,iface:eth0";
        let s = "env:prod,solo,iface:eth0";
        let skipped: Vec<String> = Skip::ALL
            .iter()
            .filter(|k| k.always_shown())
            .enumerate()
            .map(|(i, k)| {
                format!(
                    "metro.skipped:{}|c|#reason:{},{s}",
                    if i == 0 { 7 } else { 0 },
                    k.name()
                )
            })
            .collect();
        let mut want = vec![
            format!("system.net.tcp.rtt.avg:25.5|g|#{t}"),
            format!("system.net.tcp.rtt.jitter:1.25|g|#{t}"),
            format!("system.net.tcp.rtt:20|g|#{t}"),
            format!("metro.packets:100|c|#{s}"),
            format!("metro.kernel.drops:5|c|#{s}"),
            format!("metro.flows:3|g|#{s}"),
            format!("metro.evictions:2|c|#{s}"),
        ];
        want.extend(skipped);
        want.push(format!("metro.statsd.errors:0|c|#{s}"));
        assert_eq!(lines, want);
    }

    #[test]
    fn st_sends_the_smoothed_rtt_and_extra_gauges_follow() {
        let (rx, addr) = receiver();
        let sink = QueueSink::connect(addr, 1024).unwrap();
        let mut r = StatsdReporter::new(
            sink.clone(),
            ReporterConfig {
                iface: "file".into(),
                tags: vec![],
                soften: true,
                extra_gauges: true,
                self_metrics: false,
            },
            Names::default(),
        );
        r.report(&report(vec![pair()]));
        assert!(sink.flush_wait(Duration::from_secs(2)));
        let all = datagrams(&rx).join("\n");
        // Without self_metrics, go-metro's series only: no `metro.` line follows.
        let lines: Vec<&str> = all.split('\n').collect();
        let t = "src:10.42.31.222,dst:162.243.251.92,iface:file";
        assert_eq!(
            lines,
            vec![
                format!("system.net.tcp.rtt.avg:17|g|#{t}"),
                format!("system.net.tcp.rtt.jitter:1.25|g|#{t}"),
                format!("system.net.tcp.rtt:20|g|#{t}"),
                format!("system.net.tcp.rtt.min:10|g|#{t}"),
                format!("system.net.tcp.rtt.max:40|g|#{t}"),
                format!("system.net.tcp.rtt.95percentile:40|g|#{t}"),
                format!("system.net.tcp.rtt.99percentile:40|g|#{t}"),
                format!("system.net.tcp.rtt.count:4|g|#{t}"),
            ]
        );
    }

    #[test]
    fn datagrams_pack_lines_up_to_the_size_limit() {
        let (rx, addr) = receiver();
        let sink = QueueSink::connect(addr, 4096).unwrap();
        let line = "x".repeat(100);
        for _ in 0..100 {
            sink.emit(&line).unwrap();
        }
        assert!(sink.flush_wait(Duration::from_secs(2)));
        let d = datagrams(&rx);
        let total: usize = d.iter().map(|d| d.split('\n').count()).sum();
        assert_eq!(total, 100);
        assert!(d.iter().all(|d| d.len() <= MAX_DATAGRAM));
        // 14 lines of 100 bytes and 13 newlines fill 1413 bytes; a 15th would pass 1432.
        let per: Vec<usize> = d.iter().map(|d| d.split('\n').count()).collect();
        assert_eq!(per, vec![14, 14, 14, 14, 14, 14, 14, 2]);
        assert_eq!(sink.stats().sent.load(Ordering::Relaxed), 100);
        assert_eq!(sink.stats().lost(), 0);
    }

    #[test]
    fn a_receiver_that_is_down_is_counted_not_waited_for() {
        // Bind and drop a socket to find a port with nobody on it.
        let addr = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let sink = QueueSink::connect(addr, 1024).unwrap();
        let start = Instant::now();
        for _ in 0..20 {
            sink.emit("a:1|g").unwrap();
            assert!(sink.flush_wait(Duration::from_secs(2)));
        }
        assert!(start.elapsed() < Duration::from_secs(2));
        let st = sink.stats();
        // On loopback the error arrives before the next send, so sends alternate: the one
        // after each refused datagram reports ECONNREFUSED and clears it.
        assert_eq!(st.send_failed.load(Ordering::Relaxed), 10, "{st:?}");
        assert_eq!(st.sent.load(Ordering::Relaxed), 10, "{st:?}");
    }

    #[test]
    fn a_full_queue_is_waited_for_only_as_long_as_allowed_then_drops_and_counts() {
        // A queue of one datagram that nobody empties; a 100-byte line, 14 to a datagram.
        let (tx, rx) = bounded(1);
        let sink = QueueSink::on(tx, Arc::new(SinkStats::default()));
        let line = "x".repeat(100);
        for _ in 0..14 {
            assert!(sink.emit(&line).is_ok());
        }
        // The 15th hands the first datagram over: queued.
        assert!(sink.emit(&line).is_ok());
        for _ in 0..13 {
            assert!(sink.emit(&line).is_ok());
        }
        // Without a wait allowed, the second datagram finds the queue full and is dropped at once.
        let start = Instant::now();
        assert!(sink.emit(&line).is_err());
        assert!(start.elapsed() < Duration::from_millis(50));
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 14);
        // With one, the reporter waits for room as long as allowed, and no longer.
        sink.allow_wait(Some(Duration::from_millis(100)));
        for _ in 0..13 {
            assert!(sink.emit(&line).is_ok());
        }
        let start = Instant::now();
        assert!(sink.emit(&line).is_err());
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(80), "{waited:?}");
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 28);
        // The time allowed is used up: no more waiting.
        for _ in 0..13 {
            assert!(sink.emit(&line).is_ok());
        }
        let start = Instant::now();
        assert!(sink.emit(&line).is_err());
        assert!(start.elapsed() < Duration::from_millis(50));
        assert_eq!(sink.stats().lost(), 42);
        assert_eq!(
            sink.stats().queued.load(Ordering::Relaxed),
            15 + 14 + 14 + 14
        );
        drop(rx);
    }
}
