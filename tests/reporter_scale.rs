//! The live reporter at gateway scale: an interval of 200,100 host pairs from two workers is
//! written as JSON lines and sent to a real DogStatsD receiver (a UDP socket) one pair at a
//! time, and scraped by Prometheus over a real TCP connection. The heap (every thread's,
//! counted by the allocator) stays within a bound that holding the interval's summaries or its
//! text would break, every line and every gauge arrives, in order, and the DogStatsD queue never
//! drops.

mod support;

use std::io::{self, BufWriter, Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use metro::config::DEFAULT_MAX_PAIRS;
use metro::record::IntervalStats;
use metro::report::interval::{IntervalReport, KernelStats, Pairs};
use metro::report::merge::Plan;
use metro::report::prometheus::Endpoint;
use metro::report::statsd::{
    Names, QueueSink, ReporterConfig, StatsdReporter, MAX_DATAGRAM, QUEUE_DATAGRAMS,
};
use metro::report::{json, Merged};
use support::counting_alloc;
use support::intervals::{self, BUSY, FEW};

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

/// The tests measure the process's heap: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Heap the reporter may use above the interval's own while it writes 200,000 pairs: its
/// buffers and one pair's histogram. Holding the summaries takes 200,100 × 112 bytes (22 MB).
const WRITE_BOUND: usize = 1 << 20;

fn report<'a>(plan: Plan<'a>) -> IntervalReport<'a> {
    IntervalReport {
        iface: "eth0".into(),
        counters: plan.counters,
        pairs: Pairs::Merge(Box::new(plan)),
        kernel: KernelStats::default(),
        last: false,
        flows: Vec::new(),
        whole_run: None,
    }
}

/// A host pair's place in the output's order.
type Order = (Ipv4Addr, Ipv4Addr);

fn ip_after(line: &str, key: &str) -> Ipv4Addr {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    let end = line[at..]
        .find(|c: char| c != '.' && !c.is_ascii_digit())
        .map_or(line.len(), |e| at + e);
    line[at..end]
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// An output that checks JSON lines as they come and keeps none of them.
struct JsonCheck {
    line: [u8; 512],
    len: usize,
    pairs: u64,
    samples: u64,
    last: Option<Order>,
    counters: u64,
    kernel: u64,
}

impl JsonCheck {
    fn new() -> JsonCheck {
        JsonCheck {
            line: [0; 512],
            len: 0,
            pairs: 0,
            samples: 0,
            last: None,
            counters: 0,
            kernel: 0,
        }
    }

    fn check(&mut self) {
        let line = std::str::from_utf8(&self.line[..self.len]).expect("UTF-8");
        if line.starts_with("{\"type\":\"pair\"") {
            let key = (ip_after(line, "\"src\":\""), ip_after(line, "\"dst\":\""));
            assert!(
                self.last.is_none_or(|l| l < key),
                "pair {key:?} after {:?}",
                self.last
            );
            self.last = Some(key);
            let at = line.find("\"samples\":").expect("samples") + 10;
            let n: u64 = line[at..]
                .split(',')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a sample count");
            self.pairs += 1;
            self.samples += n;
        } else if line.starts_with("{\"type\":\"counters\"") {
            self.counters += 1;
        } else if line.starts_with("{\"type\":\"kernel\"") {
            self.kernel += 1;
        } else {
            panic!("unexpected line {line}");
        }
    }
}

impl Write for JsonCheck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.check();
                self.len = 0;
            } else {
                self.line[self.len] = b;
                self.len += 1;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn json_lines_of_200k_pairs_are_written_one_pair_at_a_time() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (workers, samples) = intervals::gateway(7);
    let plan = Plan::new(&workers, DEFAULT_MAX_PAIRS);
    assert_eq!(plan.len(), 2 * (FEW + BUSY) as usize);
    let rep = report(plan);

    let mut check = JsonCheck::new();
    let base = counting_alloc::reset_peak();
    let plan = Plan::new(&workers, DEFAULT_MAX_PAIRS);
    let merge = counting_alloc::peak_bytes() - base;
    drop(plan);
    println!(
        "the merge of {} worker pairs: {merge} bytes",
        rep.pairs.len()
    );
    // The keys of the workers' pairs, in order: 60 bytes a pair.
    assert!(merge <= 64 * rep.pairs.len(), "{merge}");

    let base = counting_alloc::reset_peak();
    {
        let mut out = BufWriter::new(&mut check);
        json::write_interval(&mut out, &rep, None).unwrap();
        out.flush().unwrap();
    }
    let extra = counting_alloc::peak_bytes() - base;
    assert_eq!(check.pairs, 2 * u64::from(FEW + BUSY));
    assert_eq!(check.samples, samples);
    assert_eq!((check.counters, check.kernel), (1, 1));
    println!(
        "JSON lines of {} pairs: at most {extra} bytes of heap above the interval's",
        check.pairs
    );
    assert!(extra < WRITE_BOUND, "{extra} bytes");

    // The measure sees an interval held whole: the summaries collected take far more.
    let refs: Vec<&IntervalStats> = workers.iter().collect();
    let base = counting_alloc::reset_peak();
    let merged = Merged::new(&refs, DEFAULT_MAX_PAIRS);
    let held = counting_alloc::peak_bytes() - base;
    assert_eq!(merged.summaries().len(), check.pairs as usize);
    assert!(held >= std::mem::size_of_val(merged.summaries()), "{held}");
    assert!(held > 10 * WRITE_BOUND, "{held}");
}

/// What a DogStatsD receiver saw: gauges, their pairs in order, and any line out of place.
#[derive(Debug, Default)]
struct Received {
    gauges: u64,
    pairs: u64,
    datagrams: u64,
    largest: usize,
    misplaced: Vec<String>,
}

/// Reads datagrams until `lines` lines have come or nothing comes for 3 s, checking that each
/// pair's three gauges come in go-metro's order and the pairs in the output's order.
fn receive(sock: UdpSocket, lines: u64) -> Received {
    const ORDER: [&str; 3] = [
        "system.net.tcp.rtt.avg:",
        "system.net.tcp.rtt.jitter:",
        "system.net.tcp.rtt:",
    ];
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut r = Received::default();
    let mut last: Option<Order> = None;
    while r.gauges < lines {
        let Ok(n) = sock.recv(&mut buf) else { break };
        r.datagrams += 1;
        r.largest = r.largest.max(n);
        for line in std::str::from_utf8(&buf[..n]).expect("UTF-8").split('\n') {
            let want = ORDER[(r.gauges % 3) as usize];
            let key = (ip_after(line, "src:"), ip_after(line, "dst:"));
            let in_place = line.starts_with(want)
                && line.ends_with(",iface:eth0")
                && if r.gauges % 3 == 0 {
                    last.is_none_or(|l| l < key)
                } else {
                    last == Some(key)
                };
            if !in_place && r.misplaced.len() < 5 {
                r.misplaced.push(line.to_string());
            }
            if r.gauges % 3 == 0 {
                last = Some(key);
                r.pairs += 1;
            }
            r.gauges += 1;
        }
    }
    r
}

#[test]
fn dogstatsd_gets_every_gauge_of_200k_pairs_in_order_through_a_bounded_queue() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (workers, _) = intervals::gateway(7);
    let rep = report(Plan::new(&workers, DEFAULT_MAX_PAIRS));
    let pairs = rep.pairs.len() as u64;
    let gauges = 3 * pairs;

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sock.local_addr().unwrap();
    // Room for a few thousand datagrams, so that a receiver thread the scheduler puts aside
    // for a moment loses nothing (as root past `rmem_max`).
    let room = 64usize << 20;
    if nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &room).is_err() {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &room).unwrap();
    }
    let receiver = thread::spawn(move || receive(sock, gauges));

    let sink = QueueSink::connect(to, QUEUE_DATAGRAMS).unwrap();
    let mut reporter = StatsdReporter::new(
        sink.clone(),
        ReporterConfig {
            iface: "eth0".into(),
            tags: Vec::new(),
            soften: false,
            extra_gauges: false,
            self_metrics: false,
        },
        Names::default(),
    );
    let base = counting_alloc::reset_peak();
    let start = Instant::now();
    reporter.report(&rep);
    let reported = start.elapsed();
    assert!(sink.flush_wait(Duration::from_secs(10)));
    let extra = counting_alloc::peak_bytes() - base;
    let got = receiver.join().unwrap();

    let st = sink.stats();
    println!(
        "{pairs} pairs: {gauges} gauges in {} datagrams (largest {} bytes), reported in {reported:?}, \
         at most {extra} bytes of heap above the interval's",
        got.datagrams, got.largest
    );
    assert_eq!(st.queued.load(Ordering::Relaxed), gauges);
    assert_eq!(st.sent.load(Ordering::Relaxed), gauges, "{st:?}");
    assert_eq!(st.lost(), 0, "{st:?}");
    assert_eq!(got.misplaced, Vec::<String>::new());
    assert_eq!((got.gauges, got.pairs), (gauges, pairs), "{got:?}");
    assert!(got.largest <= MAX_DATAGRAM);
    // Full datagrams: far fewer than one a pair.
    assert!(got.datagrams < pairs / 4, "{got:?}");
    // The queue's datagrams and the reporter's buffers; the interval's text is 15 MB.
    let bound = QUEUE_DATAGRAMS * MAX_DATAGRAM + WRITE_BOUND;
    assert!(extra < bound, "{extra} bytes, bound {bound}");
}

#[test]
fn a_prometheus_scrape_of_200k_pairs_is_streamed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (workers, _) = intervals::gateway(7);
    let rep = report(Plan::new(&workers, DEFAULT_MAX_PAIRS));
    let pairs = rep.pairs.len() as u64;
    let endpoint = Endpoint::serve("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut exposition = endpoint.exposition("eth0", &[], DEFAULT_MAX_PAIRS);
    // The exposition's snapshot holds every pair: bounded by max_pairs, not streamed.
    exposition.report(&rep);

    let base = counting_alloc::reset_peak();
    let mut c = TcpStream::connect(endpoint.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let (mut bytes, mut counts, mut line, mut tail) = (0usize, 0u64, 0usize, [0u8; 6]);
    let mut head = [0u8; 24];
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                if head.starts_with(b"metro_rtt_seconds_count{") {
                    counts += 1;
                }
                (head, line) = ([0; 24], 0);
            } else {
                if line < head.len() {
                    head[line] = b;
                }
                line += 1;
            }
            tail.rotate_left(1);
            tail[5] = b;
        }
        bytes += n;
    }
    let extra = counting_alloc::peak_bytes() - base;
    println!("a scrape of {pairs} pairs: {bytes} bytes, at most {extra} bytes of heap above");
    assert_eq!(&tail, b"# EOF\n");
    assert_eq!(counts, pairs);
    // The text is 166 MB; the endpoint buffers 64 KiB of it, and the labels of one series.
    assert!(bytes > 100 << 20, "{bytes}");
    assert!(extra < WRITE_BOUND, "{extra} bytes");
}
