//! The Prometheus endpoint: `/metrics` in the OpenMetrics text format, written by the
//! `prometheus-client` crate from the reporter's merged intervals.
//!
//! Each capture (an ad-hoc `--interface`, or one go-metro instance) gets an [`Exposition`]: at
//! every report interval the reporter hands it the interval ([`IntervalReport`], already merged
//! and bounded by `max_pairs`), and it folds the interval into its running totals and publishes
//! an immutable [`Snapshot`] behind an `Arc`, swapped in under a lock held for a pointer store.
//! The endpoint's thread renders a scrape from the snapshots it holds at that moment, so a slow
//! or hostile client costs the reporter nothing and the workers never see it.
//!
//! What is exposed, per (src, dst) host pair, labelled `src`, `dst`, `iface` and the instance's
//! tags (`env:prod` becomes `env="prod"`):
//! - `metro_rtt_seconds`, a histogram of every sample since metro started: `_count` and `_sum`
//!   (the +Inf bucket only: the quantiles below are what dashboards read), so that
//!   `rate(_sum)/rate(_count)` is the mean RTT over any window;
//! - `metro_rtt_quantile_seconds{quantile="0.5|0.95|0.99"}`, `metro_rtt_min_seconds`,
//!   `metro_rtt_max_seconds` and `metro_rtt_jitter_seconds`, gauges of the last interval with
//!   samples for the pair (a pair without samples in the last interval has none, so its gauges
//!   go stale in Prometheus rather than repeating old values);
//! - metro's own counters since it started, per capture: packets, TCP packets, samples, skipped
//!   frames by reason, flows created, evicted and expired, the ACKs that gave no sample, the
//!   samples folded into `other`, and the kernel's received, dropped and freeze counts; the
//!   flows held as a gauge.
//!
//! Memory is bounded: the running totals keep at most `max_pairs` pairs per capture (the pairs
//! seen longest ago are forgotten first), as the intervals themselves are bounded.
//!
//! The HTTP side is deliberately small: one thread, one connection at a time, `GET /metrics`
//! only, a request of at most [`MAX_REQUEST`] bytes read within [`IO_TIMEOUT`], the answer
//! written as it is encoded (never held whole) within that time and what its length takes at
//! [`MIN_READ_RATE`], and the connection closed after.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::interval::{IntervalReport, KernelStats};
use super::PairSummary;
use crate::decode::Skip;
use crate::record::{Counters, ServicePort};

/// Largest request (request line and headers) read before answering 431.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request, or to read an answer of a few megabytes.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The rate in bytes a second at which a client must read a long answer: each byte written
/// extends the answer's deadline by 1/`MIN_READ_RATE` s beyond [`IO_TIMEOUT`]. The answer for
/// 200,000 pairs (166 MB) thus has about 15 s, which a scraper on a loaded host needs, while a
/// client that stops reading is cut off about 5 s after its socket's buffers fill.
pub const MIN_READ_RATE: u64 = 16 << 20;

/// The content type of OpenMetrics text, as Prometheus asks for it.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one series: (name, value), in order.
type Labels = Vec<(String, String)>;

/// One pair's series in a snapshot.
#[derive(Debug, Clone)]
struct PairSeries {
    labels: Labels,
    /// Samples since metro started.
    count: u64,
    /// Their sum, in seconds.
    sum_s: f64,
    /// The last interval's summary, when the pair had samples in it.
    last: Option<PairSummary>,
}

/// What one capture publishes: everything a scrape shows of it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The capture's own labels (`iface` and the instance's tags).
    labels: Labels,
    pairs: Vec<PairSeries>,
    counters: Counters,
    kernel: KernelStats,
}

/// Running totals of one pair.
#[derive(Debug, Clone, Copy)]
struct Totals {
    count: u64,
    sum_ns: f64,
    /// The interval it last had samples in.
    seen: u64,
}

/// Key of a pair's totals: its names as printed (`other` for the overflow series), and its
/// server port's with the port dimension on.
type PairName = (String, String, Option<String>);

/// A summary's key in the totals.
fn pair_name(p: &PairSummary) -> PairName {
    let port = p.port.map(|port| match port {
        ServicePort::Port(n) => n.to_string(),
        ServicePort::Other => "other".to_string(),
    });
    (p.src_name(), p.dst_name(), port)
}

/// One capture's side: folds its intervals into totals and publishes snapshots.
#[derive(Debug)]
pub struct Exposition {
    slot: usize,
    shared: Arc<Shared>,
    labels: Labels,
    max_pairs: usize,
    interval: u64,
    totals: HashMap<PairName, Totals>,
    counters: Counters,
    kernel: KernelStats,
}

/// The endpoint's state shared with the expositions: the latest snapshot of each capture.
#[derive(Debug, Default)]
struct Shared {
    snapshots: Mutex<Vec<Arc<Snapshot>>>,
}

/// A running endpoint; dropping it leaves the thread serving until the process ends.
#[derive(Debug)]
pub struct Endpoint {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve Prometheus metrics on {addr}: {source}; give a free ADDR:PORT (e.g. 127.0.0.1:9100) that this user may bind")]
pub struct EndpointError {
    addr: SocketAddr,
    source: io::Error,
}

impl Endpoint {
    /// Binds `addr` and starts serving `/metrics` on a thread of its own.
    pub fn serve(addr: SocketAddr) -> Result<Endpoint, EndpointError> {
        let listener = TcpListener::bind(addr).map_err(|source| EndpointError { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| EndpointError { addr, source })?;
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
        thread::Builder::new()
            .name("metro-prometheus".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(c) = conn {
                        // A client that misbehaves only loses its own answer.
                        let _ = answer(c, &s);
                    }
                }
            })
            .map_err(|source| EndpointError { addr, source })?;
        Ok(Endpoint {
            shared,
            addr: bound,
            stop,
        })
    }

    /// The address it listens on (the port the kernel chose, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new capture's exposition, labelled `iface` and with `tags` (go-metro's `key:value`
    /// strings), keeping at most `max_pairs` pairs' totals.
    pub fn exposition(&self, iface: &str, tags: &[String], max_pairs: usize) -> Exposition {
        let mut labels: Labels = Vec::new();
        for t in tags {
            let (k, v) = t.split_once(':').unwrap_or(("tag", t.as_str()));
            let k = label_name(k);
            if k != "src"
                && k != "dst"
                && k != "iface"
                && k != "port"
                && !labels.iter().any(|(n, _)| *n == k)
            {
                labels.push((k, v.to_string()));
            }
        }
        labels.push(("iface".into(), iface.to_string()));
        let mut snaps = self
            .shared
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        snaps.push(Arc::new(Snapshot {
            labels: labels.clone(),
            ..Snapshot::default()
        }));
        Exposition {
            slot: snaps.len() - 1,
            shared: Arc::clone(&self.shared),
            labels,
            max_pairs: max_pairs.max(1),
            interval: 0,
            totals: HashMap::new(),
            counters: Counters::default(),
            kernel: KernelStats::default(),
        }
    }

    /// The text a scrape gets now.
    pub fn render(&self) -> String {
        render(&self.shared)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// A Prometheus label name from a tag's key: `[a-zA-Z_][a-zA-Z0-9_]*`, other characters as `_`.
fn label_name(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

impl Exposition {
    /// Folds one interval into the totals and publishes the new snapshot.
    pub fn report(&mut self, r: &IntervalReport) {
        self.interval += 1;
        // The interval's summaries with samples, kept for its gauges: at most `max_pairs` and
        // `other`, as the interval is bounded.
        let mut last: HashMap<PairName, PairSummary> = HashMap::with_capacity(r.pairs.len());
        let folded: Result<(), Infallible> = r.pairs.for_each(|p| {
            if p.samples == 0 {
                return Ok(());
            }
            let name = pair_name(p);
            let t = self.totals.entry(name.clone()).or_insert(Totals {
                count: 0,
                sum_ns: 0.0,
                seen: 0,
            });
            t.count += p.samples;
            t.sum_ns += p.avg_ns * p.samples as f64;
            t.seen = self.interval;
            last.insert(name, p.clone());
            Ok(())
        });
        let Ok(()) = folded;
        if self.totals.len() > self.max_pairs {
            // Forget the pairs seen longest ago; the last interval's fit, as it is bounded too.
            let mut seen: Vec<u64> = self.totals.values().map(|t| t.seen).collect();
            let cut = seen.len() - self.max_pairs;
            let (_, &mut oldest_kept, _) = seen.select_nth_unstable(cut);
            self.totals.retain(|_, t| t.seen >= oldest_kept);
        }
        self.counters.add(&r.counters);
        // `active_flows` is a level, not a count.
        self.counters.active_flows = r.counters.active_flows;
        self.kernel.received += r.kernel.received;
        self.kernel.dropped += r.kernel.dropped;
        self.kernel.freezes += r.kernel.freezes;

        let mut pairs: Vec<PairSeries> = self
            .totals
            .iter()
            .map(|(name, t)| PairSeries {
                labels: {
                    let (src, dst, port) = name;
                    let mut l = vec![
                        ("src".to_string(), src.clone()),
                        ("dst".into(), dst.clone()),
                    ];
                    l.extend(self.labels.iter().cloned());
                    // Only with the server-port dimension on.
                    if let Some(port) = port {
                        l.push(("port".into(), port.clone()));
                    }
                    l
                },
                count: t.count,
                sum_s: t.sum_ns / 1e9,
                last: last.remove(name),
            })
            .collect();
        pairs.sort_by(|a, b| a.labels.cmp(&b.labels));
        let snap = Arc::new(Snapshot {
            labels: self.labels.clone(),
            pairs,
            counters: self.counters,
            kernel: self.kernel,
        });
        let mut snaps = self
            .shared
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        snaps[self.slot] = snap;
    }
}

/// The snapshots of a scrape, as `prometheus-client` encodes them.
#[derive(Debug)]
struct Scrape(Vec<Arc<Snapshot>>);

/// Seconds from nanoseconds.
fn secs(ns: f64) -> f64 {
    ns / 1e9
}

/// A pair's last-interval value, read from its summary.
type PairValue = fn(&PairSummary) -> f64;

/// A capture's counter, read from its counters and kernel counts.
type CaptureValue = fn(&Counters, &KernelStats) -> u64;

/// metro's own counters: name, help, value.
const SELF_COUNTERS: [(&str, &str, CaptureValue); 12] = [
    ("metro_packets", "Frames seen.", |c, _| c.packets),
    ("metro_tcp_packets", "TCP segments decoded.", |c, _| c.tcp),
    (
        "metro_samples",
        "RTT samples taken (including those of hosts not reported).",
        |c, _| c.samples,
    ),
    ("metro_flows_created", "Flows tracked.", |c, _| {
        c.table.created
    }),
    (
        "metro_flows_evicted",
        "Flows evicted because the flow table was full.",
        |c, _| c.table.evicted,
    ),
    (
        "metro_flows_expired",
        "Flows expired after idle_ttl or exp_ttl.",
        |c, _| c.table.expired,
    ),
    (
        "metro_acks_karn",
        "ACKs of resent bytes that gave no sample (Karn's rule).",
        |c, _| c.rtt.karn,
    ),
    (
        "metro_acks_untracked",
        "ACKs whose newest covered bytes were not seen.",
        |c, _| c.rtt.untracked,
    ),
    (
        "metro_pairs_overflow_samples",
        "Samples reported in the `other` pair because max_pairs was reached.",
        |c, _| c.overflow_samples,
    ),
    (
        "metro_kernel_received",
        "Packets the kernel handed to the rings, drops included.",
        |_, k| k.received,
    ),
    (
        "metro_kernel_drops",
        "Packets the kernel dropped because a ring was full.",
        |_, k| k.dropped,
    ),
    (
        "metro_kernel_freezes",
        "Times a ring's queue froze.",
        |_, k| k.freezes,
    ),
];

/// The last interval's gauges of a pair: name, help, value.
const PAIR_GAUGES: [(&str, &str, PairValue); 3] = [
    (
        "metro_rtt_min_seconds",
        "Smallest RTT sample of the pair's last interval with samples.",
        |p| secs(p.min_ns as f64),
    ),
    (
        "metro_rtt_max_seconds",
        "Largest RTT sample of the pair's last interval with samples.",
        |p| secs(p.max_ns as f64),
    ),
    (
        "metro_rtt_jitter_seconds",
        "Mean absolute difference between consecutive samples of a flow, last interval.",
        |p| secs(p.jitter_ns),
    ),
];

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let pairs = || self.0.iter().flat_map(|s| s.pairs.iter());
        {
            let mut m = enc.encode_descriptor(
                "metro_rtt_seconds",
                "RTT samples since metro started, per (data sender, acknowledging end) pair.",
                None,
                MetricType::Histogram,
            )?;
            for p in pairs() {
                m.encode_family(&p.labels)?.encode_histogram::<Labels>(
                    p.sum_s,
                    p.count,
                    &[(f64::INFINITY, p.count)],
                    None,
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "metro_rtt_quantile_seconds",
                "RTT quantiles (HdrHistogram, 3 significant digits) of the pair's last interval with samples.",
                None,
                MetricType::Gauge,
            )?;
            for p in pairs() {
                let Some(last) = &p.last else { continue };
                for (q, v) in [
                    ("0.5", last.p50_ns),
                    ("0.95", last.p95_ns),
                    ("0.99", last.p99_ns),
                ] {
                    let mut l = p.labels.clone();
                    l.push(("quantile".into(), q.into()));
                    ConstGauge::new(secs(v as f64)).encode(m.encode_family(&l)?)?;
                }
            }
        }
        for (name, help, value) in PAIR_GAUGES {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in pairs() {
                if let Some(last) = &p.last {
                    ConstGauge::new(value(last)).encode(m.encode_family(&p.labels)?)?;
                }
            }
        }
        for (name, help, value) in SELF_COUNTERS {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &self.0 {
                ConstCounter::new(value(&s.counters, &s.kernel))
                    .encode(m.encode_family(&s.labels)?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "metro_skipped",
                "Frames not decoded, by reason.",
                None,
                MetricType::Counter,
            )?;
            for s in &self.0 {
                for r in Skip::ALL {
                    let mut l = s.labels.clone();
                    l.push(("reason".into(), r.name().into()));
                    ConstCounter::new(s.counters.skipped(r)).encode(m.encode_family(&l)?)?;
                }
            }
        }
        // Only once some host pair had more ports than `max_ports`, as its DogStatsD twin.
        if self.0.iter().any(|s| s.counters.port_overflow_samples > 0) {
            let mut m = enc.encode_descriptor(
                "metro_ports_overflow_samples",
                "Samples reported under a pair's `other` port because max_ports was reached.",
                None,
                MetricType::Counter,
            )?;
            for s in &self.0 {
                ConstCounter::new(s.counters.port_overflow_samples)
                    .encode(m.encode_family(&s.labels)?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "metro_flows",
            "Flows tracked at the end of the last interval.",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.0 {
            ConstGauge::new(s.counters.active_flows as i64).encode(m.encode_family(&s.labels)?)?;
        }
        Ok(())
    }
}

/// The OpenMetrics text of every capture's latest snapshot.
fn render(shared: &Shared) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail, and the collector only fails through its writer.
    if encode(shared, &mut out).is_err() {
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    out
}

/// Writes the OpenMetrics text of every capture's latest snapshot to `out`, as it is encoded.
fn encode(shared: &Shared, out: &mut impl fmt::Write) -> fmt::Result {
    let snaps = shared
        .snapshots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(snaps)));
    prometheus_client::encoding::text::encode(out, &registry)
}

/// Bytes of a scrape buffered before they are written to the client.
const SCRAPE_BUFFER: usize = 64 * 1024;

/// A client connection that refuses writes past a deadline, so that a whole answer, however many
/// writes it takes, is written within [`IO_TIMEOUT`] and the time its length takes at
/// [`MIN_READ_RATE`].
struct Until<'a> {
    c: &'a TcpStream,
    start: Instant,
    written: u64,
}

/// The time by which an answer begun at `start` must have been written, once `written` bytes of
/// it have been.
fn answer_deadline(start: Instant, written: u64) -> Instant {
    start + IO_TIMEOUT + Duration::from_secs_f64(written as f64 / MIN_READ_RATE as f64)
}

impl Write for Until<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let deadline = answer_deadline(self.start, self.written);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took too long to read the answer",
            ));
        }
        self.c.set_write_timeout(Some(left))?;
        let n = self.c.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.c.flush()
    }
}

/// The encoder's text, written to the client through a buffer as it comes, keeping the first
/// write error.
struct Streamed<W: Write> {
    out: W,
    error: Option<io::Error>,
}

impl<W: Write> fmt::Write for Streamed<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.out.write_all(s.as_bytes()).map_err(|e| {
            self.error.get_or_insert(e);
            fmt::Error
        })
    }
}

/// Answers a scrape: the text is written as it is encoded, never held whole (200,000 pairs make
/// 166 MB of it), so the answer has no `Content-Length` and ends with the connection (and
/// with OpenMetrics' `# EOF`, by which a client tells a whole answer from a cut one).
fn scrape(c: &TcpStream, shared: &Shared) -> io::Result<()> {
    let until = Until {
        c,
        start: Instant::now(),
        written: 0,
    };
    let mut out = Streamed {
        out: BufWriter::with_capacity(SCRAPE_BUFFER, until),
        error: None,
    };
    write!(
        out.out,
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nConnection: close\r\n\r\n"
    )?;
    if encode(shared, &mut out).is_err() {
        return Err(out.error.unwrap_or_else(|| {
            io::Error::other("the metrics could not be encoded; the answer is cut short")
        }));
    }
    out.out.flush()
}

/// Reads one request from `c` and answers it.
fn answer(mut c: TcpStream, shared: &Shared) -> io::Result<()> {
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let end = loop {
        if let Some(i) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i);
        }
        if len == buf.len() {
            break None;
        }
        let n = c.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    };
    let Some(end) = end else {
        return respond(
            &mut c,
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n",
        );
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => scrape(&c, shared),
        ("GET", _) => respond(
            &mut c,
            "404 Not Found",
            "text/plain",
            "metro serves /metrics only\n",
        ),
        _ => respond(
            &mut c,
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics only\n",
        ),
    }
}

fn respond(c: &mut TcpStream, status: &str, ctype: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(body.as_bytes())?;
    c.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Addr;
    use crate::report::interval::Pairs;

    fn pair(a: u8, b: u8, samples: u64, avg_ns: f64, p50_ns: u64) -> PairSummary {
        PairSummary {
            src: Addr::v4([10, 0, 0, a]),
            dst: Addr::v4([10, 0, 0, b]),
            other: false,
            port: None,
            samples,
            min_ns: 1_000_000,
            p50_ns,
            avg_ns,
            p95_ns: p50_ns + 1_000,
            p99_ns: p50_ns + 2_000,
            max_ns: 30_000_000,
            jitter_ns: 250_000.0,
            srtt_ns: avg_ns,
        }
    }

    fn interval(pairs: Vec<PairSummary>, packets: u64, dropped: u64) -> IntervalReport<'static> {
        IntervalReport {
            iface: "eth0".into(),
            pairs: Pairs::Made(pairs),
            counters: Counters {
                packets,
                active_flows: packets / 10,
                ..Counters::default()
            },
            kernel: KernelStats {
                received: packets,
                dropped,
                freezes: 0,
            },
            last: false,
            flows: Vec::new(),
            whole_run: None,
        }
    }

    /// The lines of `text` that start with `prefix`.
    fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn series_per_port_carry_a_port_label_and_the_overflow_counter() {
        let e = Endpoint::serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut x = e.exposition("eth0", &[], 10);
        let mut r = interval(
            [Some(ServicePort::Port(443)), Some(ServicePort::Other)]
                .into_iter()
                .map(|port| PairSummary {
                    port,
                    ..pair(1, 2, 3, 5_000_000.0, 5_000_000)
                })
                .collect(),
            10,
            0,
        );
        r.counters.port_overflow_samples = 3;
        x.report(&r);
        let t = e.render();
        assert_eq!(
            lines(&t, "metro_rtt_seconds_count{"),
            [
                r#"metro_rtt_seconds_count{src="10.0.0.1",dst="10.0.0.2",iface="eth0",port="443"} 3"#,
                r#"metro_rtt_seconds_count{src="10.0.0.1",dst="10.0.0.2",iface="eth0",port="other"} 3"#,
            ]
        );
        assert_eq!(
            lines(&t, "metro_ports_overflow_samples_total"),
            [r#"metro_ports_overflow_samples_total{iface="eth0"} 3"#]
        );
    }

    #[test]
    fn totals_add_up_over_intervals_and_gauges_are_the_last_intervals() {
        let e = Endpoint::serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut x = e.exposition(
            "eth0",
            &["env:prod".into(), "9x-y:z".into(), "bare".into()],
            10,
        );
        x.report(&interval(
            vec![pair(1, 2, 4, 20_000_000.0, 19_000_000)],
            100,
            1,
        ));
        x.report(&interval(
            vec![
                pair(1, 2, 6, 10_000_000.0, 9_000_000),
                pair(3, 4, 1, 5_000_000.0, 5_000_000),
            ],
            50,
            2,
        ));
        x.report(&interval(vec![pair(3, 4, 1, 7_000_000.0, 7_000_000)], 7, 0));
        let t = e.render();
        let l = r#"src="10.0.0.1",dst="10.0.0.2",env="prod",_9x_y="z",tag="bare",iface="eth0""#;
        assert_eq!(
            lines(&t, "metro_rtt_seconds_count{src=\"10.0.0.1\""),
            [format!("metro_rtt_seconds_count{{{l}}} 10").as_str()]
        );
        // 4 × 20 ms + 6 × 10 ms.
        assert_eq!(
            lines(&t, "metro_rtt_seconds_sum{src=\"10.0.0.1\""),
            [format!("metro_rtt_seconds_sum{{{l}}} 0.14").as_str()]
        );
        assert!(
            t.contains(&format!("metro_rtt_seconds_bucket{{le=\"+Inf\",{l}}} 10\n")),
            "{t}"
        );
        // Pair 1→2 had no samples in the last interval: no gauges; 3→4 has the last one's.
        assert!(
            lines(&t, "metro_rtt_quantile_seconds{src=\"10.0.0.1\"").is_empty(),
            "{t}"
        );
        assert_eq!(
            lines(&t, "metro_rtt_quantile_seconds{src=\"10.0.0.3\""),
            [
                r#"metro_rtt_quantile_seconds{src="10.0.0.3",dst="10.0.0.4",env="prod",_9x_y="z",tag="bare",iface="eth0",quantile="0.5"} 0.007"#,
                r#"metro_rtt_quantile_seconds{src="10.0.0.3",dst="10.0.0.4",env="prod",_9x_y="z",tag="bare",iface="eth0",quantile="0.95"} 0.007001"#,
                r#"metro_rtt_quantile_seconds{src="10.0.0.3",dst="10.0.0.4",env="prod",_9x_y="z",tag="bare",iface="eth0",quantile="0.99"} 0.007002"#,
            ]
        );
        assert_eq!(lines(&t, "metro_rtt_jitter_seconds{").len(), 1);
        let own = r#"{env="prod",_9x_y="z",tag="bare",iface="eth0"}"#;
        assert!(
            t.contains(&format!("metro_packets_total{own} 157\n")),
            "{t}"
        );
        assert!(
            t.contains(&format!("metro_kernel_drops_total{own} 3\n")),
            "{t}"
        );
        assert!(t.contains(&format!("metro_flows{own} 0\n")), "{t}");
        assert!(t.contains("# TYPE metro_rtt_seconds histogram\n"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn totals_keep_at_most_max_pairs_the_most_recent_first() {
        let e = Endpoint::serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut x = e.exposition("eth0", &[], 2);
        for i in 0..5u8 {
            x.report(&interval(vec![pair(i, 100, 1, 1e6, 1_000_000)], 1, 0));
        }
        let t = e.render();
        let counts = lines(&t, "metro_rtt_seconds_count{");
        assert_eq!(counts.len(), 2, "{t}");
        assert!(
            counts[0].contains("10.0.0.3") && counts[1].contains("10.0.0.4"),
            "{t}"
        );
    }

    /// Sends `req` to the endpoint and returns the whole answer.
    fn ask(e: &Endpoint, req: &[u8]) -> String {
        let mut c = TcpStream::connect(e.addr()).unwrap();
        c.write_all(req).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    #[test]
    fn the_endpoint_serves_get_metrics_only_and_bounds_requests() {
        let e = Endpoint::serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut x = e.exposition("veth0", &[], 10);
        x.report(&interval(vec![pair(1, 2, 3, 2e6, 2_000_000)], 9, 0));
        let ok = ask(&e, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        // Streamed: no length, the answer ends with the connection and with `# EOF`.
        let body = ok.split_once("\r\n\r\n").unwrap().1;
        assert!(!ok.contains("Content-Length"), "{ok}");
        assert!(ok.contains("Connection: close\r\n"), "{ok}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(
            body.contains(
                "metro_rtt_seconds_count{src=\"10.0.0.1\",dst=\"10.0.0.2\",iface=\"veth0\"} 3\n"
            ),
            "{body}"
        );
        assert!(ask(&e, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(ask(&e, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST + 100, b'a');
        assert!(ask(&e, &big).starts_with("HTTP/1.1 431 "));
        // A client that says nothing and hangs up costs nothing; the next is still served.
        drop(TcpStream::connect(e.addr()).unwrap());
        assert!(ask(&e, b"GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn a_long_answer_has_time_for_its_length_at_the_minimum_rate() {
        let t = Instant::now();
        assert_eq!(answer_deadline(t, 0), t + IO_TIMEOUT);
        // 166 MB, the answer for 200,000 pairs: about 15 s in all.
        let long = answer_deadline(t, 166_000_000) - t;
        assert!(
            long > Duration::from_millis(14_800) && long < Duration::from_millis(14_900),
            "{long:?}"
        );
    }

    #[test]
    fn a_busy_address_is_an_error_that_says_what_to_do() {
        let e = Endpoint::serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = Endpoint::serve(e.addr()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot serve Prometheus metrics on {}: ",
                e.addr()
            )),
            "{err}"
        );
        assert!(err.contains("give a free ADDR:PORT"), "{err}");
    }
}
