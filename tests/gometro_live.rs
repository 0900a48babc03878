//! go-metro mode, live: the built `metro` binary with a go-metro YAML file whose instance
//! captures an interface, real kernel TCP traffic through the project's delay line, and a real UDP
//! socket as DogStatsD, all inside network namespaces made here (`me2<PID>-…`).
//!
//! Topology: `cli (eth0 10.86.0.1) -- mid (delay line) -- srv (eth0 10.86.0.2)`. metro and the
//! DogStatsD socket run in `cli`; the DogStatsD traffic stays on `cli`'s loopback.
//!
//! These tests need root. Without it they print `SKIPPED (needs root): …` and pass, unless
//! `METRO_REQUIRE_ROOT_TESTS=1`; see `support`.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use support::statsd::{Receiver, Report};
use support::*;

const CLI: &str = "10.86.0.1";
const SRV: &str = "10.86.0.2";
const PORT: u16 = 7001;
/// Bytes each way per exchange.
const MSG: usize = 64;

/// Three namespaces, a delay line of `rtt` between the ends, and a request/response server.
struct Bed {
    cli: Netns,
    line: DelayLine,
    _mid: Netns,
    _srv: Netns,
}

impl Bed {
    fn new(rtt: Duration) -> Bed {
        let cli = Netns::with_prefix("me2", "c");
        let mid = Netns::with_prefix("me2", "m");
        let srv = Netns::with_prefix("me2", "s");
        wire_three(&cli, &mid, &srv, CLI, SRV);
        let line = DelayLine::start(&mid, "c0", "s0", rtt);
        let (ready_tx, ready_rx) = mpsc::channel();
        srv.spawn(move || {
            let l = TcpListener::bind((SRV, PORT)).unwrap();
            let _ = ready_tx.send(());
            for c in l.incoming() {
                let Ok(mut c) = c else { break };
                c.set_nodelay(true).unwrap();
                thread::spawn(move || {
                    // Its time to answer is part of every RTT measured: real-time if it may.
                    realtime_or_say("test server", RT_SERVER);
                    let mut b = [0u8; MSG];
                    while c.read_exact(&mut b).is_ok() && c.write_all(&b).is_ok() {}
                });
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Bed {
            cli,
            line,
            _mid: mid,
            _srv: srv,
        }
    }

    /// A DogStatsD socket on `cli`'s loopback.
    fn statsd(&self) -> Receiver {
        statsd_in(&self.cli)
    }

    /// Packets through `cli`'s eth0 so far, both ways (what a capture there can see).
    fn link_packets(&self) -> u64 {
        ["rx_packets", "tx_packets"]
            .iter()
            .map(|c| {
                self.cli
                    .exec(&["cat", &format!("/sys/class/net/eth0/statistics/{c}")])
                    .trim()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    }
}

/// A DogStatsD socket on the loopback of `ns`, where metro runs.
fn statsd_in(ns: &Netns) -> Receiver {
    let s = ns
        .spawn(|| UdpSocket::bind("127.0.0.1:0").unwrap())
        .join()
        .unwrap();
    Receiver::on(s)
}

/// Request/response traffic from `cli` over `conns` connections until dropped, with the
/// kernel's srtt of the first connection read every 50 ms.
struct Traffic {
    stop: Arc<AtomicBool>,
    srtt: Arc<Mutex<Vec<(Instant, f64)>>>,
    thread: Option<JoinHandle<u64>>,
}

impl Traffic {
    fn start(bed: &Bed, conns: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let srtt = Arc::new(Mutex::new(Vec::new()));
        let (st, sr) = (stop.clone(), srtt.clone());
        let thread = bed.cli.spawn(move || {
            let to = format!("{SRV}:{PORT}").parse().unwrap();
            let mut cs: Vec<TcpStream> = (0..conns)
                .map(|_| {
                    let c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
                    c.set_nodelay(true).unwrap();
                    c
                })
                .collect();
            let mut exchanges = 0u64;
            let mut next_read = Instant::now();
            let mut b = [0u8; MSG];
            while !st.load(Ordering::Relaxed) {
                for c in &mut cs {
                    c.write_all(&[exchanges as u8; MSG]).unwrap();
                }
                for c in &mut cs {
                    c.read_exact(&mut b).unwrap();
                }
                exchanges += 1;
                if Instant::now() >= next_read {
                    let us = tcp_info(cs[0].as_raw_fd()).tcpi_rtt;
                    sr.lock()
                        .unwrap()
                        .push((Instant::now(), f64::from(us) / 1000.0));
                    next_read += Duration::from_millis(50);
                }
            }
            exchanges
        });
        Traffic {
            stop,
            srtt,
            thread: Some(thread),
        }
    }

    /// The median of the kernel's srtt (ms) read between `from` and `to`.
    fn kernel_srtt(&self, from: Instant, to: Instant) -> Option<f64> {
        let v: Vec<f64> = self
            .srtt
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, ms)| *ms)
            .collect();
        median(v)
    }

    /// Stops the traffic; returns the exchanges made on each connection.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// A go-metro YAML file in a scratch directory, removed when dropped.
struct CfgFile(PathBuf);

impl CfgFile {
    fn new(name: &str, text: &str) -> CfgFile {
        let d = std::env::temp_dir().join(format!("metro-me2-{}-{name}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let p = d.join("go-metro.yaml");
        fs::write(&p, text).unwrap();
        CfgFile(p)
    }

    /// `-cfg` and a `-log` beside it (go-metro mode logs there until its configuration is read).
    fn args(&self) -> [String; 2] {
        [
            format!("-cfg={}", self.0.display()),
            format!("-log={}", self.0.with_extension("log").display()),
        ]
    }
}

impl Drop for CfgFile {
    fn drop(&mut self) {
        if let Some(d) = self.0.parent() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Waits until `rx` holds `n` reports; panics with what metro said if they do not come.
fn wait_reports(rx: &Receiver, metro: &Metro, n: usize, timeout: Duration) -> Vec<Report> {
    let end = Instant::now() + timeout;
    loop {
        let r = rx.reports();
        if r.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < end,
            "{} of {n} reports within {timeout:?}; metro said:\n{}",
            r.len(),
            metro.stderr_now()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

const TAGS: [&str; 2] = ["env:e2e", "solo"];

/// Checks one report's gauges: go-metro's three, in go-metro's order and with its tags, for the
/// one whitelisted pair (the client's data acknowledged by the server); metro's own counters with
/// the instance's tags. With `extra`, the percentile gauges follow go-metro's three. Returns the
/// `system.net.tcp.rtt` gauge (ms), if the report has the pair.
fn check_report(r: &Report, i: usize, extra: bool) -> Option<f64> {
    let pair_tags: Vec<String> = [format!("src:{CLI}"), format!("dst:{SRV}")]
        .into_iter()
        .chain(TAGS.iter().map(|t| t.to_string()))
        .chain(["iface:eth0".to_string()])
        .collect();
    let rtt: Vec<_> = r
        .metrics
        .iter()
        .filter(|m| m.name.starts_with("system.net.tcp.rtt"))
        .collect();
    let names: Vec<&str> = rtt.iter().map(|m| m.name.as_str()).collect();
    let value = if rtt.is_empty() {
        None
    } else {
        let mut want = vec![
            "system.net.tcp.rtt.avg",
            "system.net.tcp.rtt.jitter",
            "system.net.tcp.rtt",
        ];
        if extra {
            want.extend([
                "system.net.tcp.rtt.min",
                "system.net.tcp.rtt.max",
                "system.net.tcp.rtt.95percentile",
                "system.net.tcp.rtt.99percentile",
                "system.net.tcp.rtt.count",
            ]);
        }
        assert_eq!(
            names, want,
            "report {i}: one pair, go-metro's gauges in go-metro's order"
        );
        for m in &rtt {
            assert_eq!(m.kind, "g", "report {i}: {m:?}");
            assert_eq!(m.tags, pair_tags, "report {i}: tags and their order");
        }
        Some(rtt[2].value)
    };
    let own_tags: Vec<String> = TAGS
        .iter()
        .map(|t| t.to_string())
        .chain(["iface:eth0".to_string()])
        .collect();
    for m in r.metrics.iter().filter(|m| m.name.starts_with("metro.")) {
        let tags = if m.name == "metro.skipped" {
            &m.tags[1..]
        } else {
            &m.tags[..]
        };
        assert_eq!(tags, &own_tags[..], "report {i}: {m:?}");
    }
    assert_eq!(r.one("metro.kernel.drops"), 0.0, "report {i}");
    assert_eq!(r.one("metro.statsd.errors"), 0.0, "report {i}");
    value
}

/// The same, live (issue 4): a go-metro config with a live instance on the client's interface,
/// a 1 s report interval and the server whitelisted. A report arrives every second with go-metro's
/// gauges for the one whitelisted pair; `system.net.tcp.rtt` is never more than 0.1 ms below the
/// injected 20 ms, and over the run the median of `system.net.tcp.rtt.avg` is within
/// max(2 %, 0.3 ms) of the median of the kernel's srtt read during the same intervals; SIGTERM
/// sends the interval under way before metro exits 0.
///
/// The kernel's srtt is a moving mean (it weights its last ~8 samples), so it is compared with
/// metro's mean, not its median: when the delay line's threads wake late (this machine is small
/// and shared), the RTTs skew high, which moves a mean by a millisecond where the median does not
/// move. A miss of that one bound is measured again (twice at most), as in `live.rs`. Everything
/// else must hold on every run.
#[test]
fn live_instance_sends_go_metros_gauges_every_interval_and_flushes_on_sigterm() {
    const NAME: &str = "live_instance_sends_go_metros_gauges_every_interval_and_flushes_on_sigterm";
    if !root_or_skip(NAME) {
        return;
    }
    let _g = heavy();
    let bed = Bed::new(Duration::from_millis(20));
    let mut missed = Vec::new();
    for attempt in 1..=3 {
        missed = live_run(&bed, attempt);
        if missed.is_empty() {
            break;
        }
        eprintln!("attempt {attempt} missed:\n{}", missed.join("\n"));
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
    mark_ran(NAME);
}

/// One run of the test above; returns the intervals whose median missed the kernel's srtt.
fn live_run(bed: &Bed, attempt: u32) -> Vec<String> {
    const RTT_MS: f64 = 20.0;
    let _ = bed.line.lateness();
    let mut traffic = Traffic::start(bed, 1);
    // Let the kernel's srtt settle on the path before comparing with it.
    thread::sleep(Duration::from_millis(500));
    let rx = bed.statsd();
    let cfg = CfgFile::new(
        "e2e",
        &format!(
            "init_config:\n  statsd_ip: 127.0.0.1\n  statsd_port: {}\n  log_level: info\n  self_metrics: yes\n  report_interval: 1\n  workers: 2\ninstances:\n  - interface: eth0\n    tags: [{}]\n    ips: [{SRV}]\n",
            rx.port,
            TAGS.join(", ")
        ),
    );
    let metro = Metro::start_daemon(&bed.cli, &cfg.args().each_ref().map(String::as_str));
    let started = Instant::now();
    const PERIODIC: usize = 4;
    wait_reports(&rx, &metro, PERIODIC, Duration::from_secs(8));
    // Half-way through the next interval.
    thread::sleep(Duration::from_millis(450));
    let signalled = Instant::now();
    let out = metro.stop_with(Signal::SIGTERM);
    let stopped = signalled.elapsed();
    let exchanges = traffic.stop();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("| WARN | ") && out.stderr.contains("force stop"));
    assert!(stopped < Duration::from_secs(3), "SIGTERM took {stopped:?}");
    assert!(
        out.stderr.contains(&format!(
            "Setting BPF filter: tcp and not host 127.0.0.1 and (host {SRV})"
        )),
        "{}",
        out.stderr
    );
    // The last report may still be on its way through the sender thread when metro exits.
    thread::sleep(Duration::from_millis(100));
    let all = rx.reports();
    let (periodic, last): (Vec<&Report>, Vec<&Report>) = all.iter().partition(|r| r.at < signalled);
    eprintln!(
        "{exchanges} exchanges; {} reports before SIGTERM, {} after",
        periodic.len(),
        last.len()
    );
    assert_eq!(periodic.len(), PERIODIC, "one report a second");
    assert_eq!(last.len(), 1, "SIGTERM sends the interval under way, once");

    let mut at = started;
    let mut missed = Vec::new();
    let (mut avgs, mut kernels) = (Vec::new(), Vec::new());
    for (i, r) in periodic.iter().chain(&last).enumerate() {
        let last = i == PERIODIC;
        let gap = r.at.duration_since(at);
        at = r.at;
        let rtt = check_report(r, i, false)
            .unwrap_or_else(|| panic!("report {i} has no gauges for {CLI} -> {SRV}: {r:#?}"));
        let packets = r.one("metro.packets");
        let since = if last { signalled } else { r.at }
            - Duration::from_millis(if last { 450 } else { 1000 });
        let kernel = traffic
            .kernel_srtt(since, r.at)
            .expect("the kernel's srtt was read during the interval");
        let avg = r.one("system.net.tcp.rtt.avg");
        let bound = (kernel * 0.02).max(0.3);
        eprintln!(
            "attempt {attempt}, report {i}: after {gap:?}, {packets} packets, rtt {rtt:.3} ms (avg {avg:.3}, jitter {:.3}), kernel srtt {kernel:.3} ms, avg - srtt {:+.3} (bound {bound:.3})",
            r.one("system.net.tcp.rtt.jitter"),
            avg - kernel
        );
        if !last {
            // The first interval starts a little after metro says it is capturing.
            assert!(
                gap >= Duration::from_millis(800) && gap <= Duration::from_millis(1300),
                "report {i} came {gap:?} after the one before"
            );
        }
        assert!(
            packets >= if last { 20.0 } else { 60.0 },
            "report {i}: {packets} packets"
        );
        assert!(
            rtt >= RTT_MS - 0.1,
            "report {i}: rtt {rtt:.3} ms is below the injected {RTT_MS} ms"
        );
        avgs.push(avg);
        kernels.push(kernel);
    }
    // The mean gauge against the kernel's view over the same run: each interval's srtt is already
    // a median of readings, and the median over intervals keeps one delay-line stall (which moves
    // the kernel's EWMA for a while, and one interval's mean) from deciding the outcome.
    let (avg, kernel) = (
        median(avgs).expect("reports were checked"),
        median(kernels).expect("reports were checked"),
    );
    let bound = (kernel * 0.02).max(0.3);
    eprintln!("attempt {attempt}: median avg gauge {avg:.3} ms, median kernel srtt {kernel:.3} ms (bound {bound:.3})");
    eprintln!("attempt {attempt}: delay line: {}", bed.line.lateness());
    if (avg - kernel).abs() > bound {
        missed.push(format!(
            "median avg gauge {avg:.3} ms vs the kernel's median srtt {kernel:.3} ms: off by more than {bound:.3} ms"
        ));
    }
    missed
}

/// Duty cycle (`sample: true`, `sample_duration: 1`, `sample_interval: 3`) under steady
/// request/response traffic, reported every second: the packets of each 3 s period are all in its
/// first report, the next two carry (almost) none — at most what the kernel had queued in a
/// ring block when capture paused — and over the run metro sees the fraction of the link's
/// packets that its capture time is of its lifetime. Each capture phase still gives RTT samples
/// near the path's 20 ms, and none spans a pause.
#[test]
fn duty_cycle_captures_only_during_its_on_phases() {
    const NAME: &str = "duty_cycle_captures_only_during_its_on_phases";
    if !root_or_skip(NAME) {
        return;
    }
    let _g = heavy();
    let bed = Bed::new(Duration::from_millis(20));
    let mut traffic = Traffic::start(&bed, 4);
    thread::sleep(Duration::from_millis(300));
    let rx = bed.statsd();
    let cfg = CfgFile::new(
        "duty",
        &format!(
            "init_config:\n  statsd_ip: 127.0.0.1\n  statsd_port: {}\n  log_level: info\n  self_metrics: yes\n  report_interval: 1\n  percentile_gauges: true\ninstances:\n  - interface: eth0\n    tags: [{}]\n    ips: [{SRV}]\n    sample: yes\n    sample_duration: 1\n    sample_interval: 3\n",
            rx.port,
            TAGS.join(", ")
        ),
    );
    let metro = Metro::start_daemon(&bed.cli, &cfg.args().each_ref().map(String::as_str));
    let link0 = bed.link_packets();
    let t0 = Instant::now();
    // Three periods' worth: on, off, off, on, off, off, on; then stop, paused.
    const PERIODIC: usize = 7;
    wait_reports(&rx, &metro, PERIODIC, Duration::from_secs(12));
    let out = metro.stop_with(Signal::SIGTERM);
    let lifetime = t0.elapsed().as_secs_f64();
    let link = (bed.link_packets() - link0) as f64;
    let exchanges = traffic.stop();
    eprintln!("delay line: {}", bed.line.lateness());
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("duty cycle on eth0: capturing 1s out of every 3s"),
        "{}",
        out.stderr
    );
    thread::sleep(Duration::from_millis(100));
    let reports = rx.reports();
    assert_eq!(reports.len(), PERIODIC + 1, "7 intervals and the last");
    let packets: Vec<f64> = reports.iter().map(|r| r.one("metro.packets")).collect();
    let total: f64 = packets.iter().sum();
    let ratio = total / link;
    let expected = 1.0 / lifetime * 3.0;
    eprintln!(
        "{exchanges} exchanges per connection; packets per interval {packets:?}; metro saw {total} of the link's {link} packets ({ratio:.3}; capture time 3 s of {lifetime:.2} s: {expected:.3})"
    );
    let on = [0usize, 3, 6];
    let on_mean = on.iter().map(|&i| packets[i]).sum::<f64>() / on.len() as f64;
    assert!(on_mean > 100.0, "{packets:?}");
    for (i, (r, p)) in reports.iter().zip(&packets).enumerate() {
        let rtt = check_report(r, i, true);
        if on.contains(&i) {
            assert!(*p > on_mean * 0.7, "interval {i} captured: {packets:?}");
            let rtt = rtt.unwrap_or_else(|| panic!("interval {i} captured but gave no RTT"));
            let max = r.one("system.net.tcp.rtt.max");
            eprintln!(
                "interval {i}: rtt {rtt:.3} ms, max {max:.3} ms, {} samples",
                r.one("system.net.tcp.rtt.count")
            );
            assert!((19.9..25.0).contains(&rtt), "interval {i}: rtt {rtt} ms");
            // A sample timed across a pause would be at least its 2 s.
            assert!(
                max < 1000.0,
                "interval {i}: a {max} ms sample spans a pause"
            );
        } else {
            // Only what sat in a ring block not yet handed over when capture paused.
            assert!(
                *p <= (on_mean * 0.05).max(10.0),
                "interval {i} is paused: {packets:?}"
            );
        }
    }
    assert!(
        (ratio / expected - 1.0).abs() < 0.25,
        "metro saw {ratio:.3} of the link's packets; its capture time is {expected:.3} of its run"
    );
    mark_ran(NAME);
}

/// Exchanges `n` messages of `MSG` bytes with the echo server at `to`, from `ns`.
fn exchanges(ns: &Netns, to: SocketAddr, n: usize) {
    ns.spawn(move || {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        c.set_nodelay(true).unwrap();
        let mut b = [0u8; MSG];
        for _ in 0..n {
            c.write_all(&b).unwrap();
            c.read_exact(&mut b).unwrap();
        }
    })
    .join()
    .expect("client");
}

/// A daemon outlives its interface: when an instance's interface disappears (a container's veth
/// or a VPN's tun re-created), metro logs it, waits, and captures the new interface of the same
/// name; the whitelisted pair's gauges come back, and metro still stops cleanly on SIGTERM. (The
/// ad-hoc `--interface` mode ends instead, with status 2: `live.rs` tests that.)
#[test]
fn a_recreated_interface_is_captured_again() {
    const NAME: &str = "a_recreated_interface_is_captured_again";
    if !root_or_skip(NAME) {
        return;
    }
    let _g = heavy();
    let (a, b) = wired_pair();
    let address = |a: &Netns, b: &Netns| {
        a.ip(&["addr", "add", "10.83.0.1/24", "dev", "eth0"]);
        b.ip(&["addr", "add", "10.83.0.2/24", "dev", "eth0"]);
    };
    address(&a, &b);
    echo_server(&b, vec![SocketAddr::from(([0, 0, 0, 0], PORT))])
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    let rx = statsd_in(&a);
    let cfg = CfgFile::new(
        "recreated",
        &format!(
            "init_config:\n  statsd_ip: 127.0.0.1\n  statsd_port: {}\n  log_level: info\n  self_metrics: yes\n  report_interval: 1\n  workers: 1\ninstances:\n  - interface: eth0\n    ips: [10.83.0.2]\n",
            rx.port
        ),
    );
    let mut metro = Metro::start_daemon(&a, &cfg.args().each_ref().map(String::as_str));
    let server = SocketAddr::from(([10, 83, 0, 2], PORT));
    let has_rtt = |m: &[support::statsd::Metric]| m.iter().any(|m| m.name == "system.net.tcp.rtt");

    exchanges(&a, server, 20);
    assert!(
        has_rtt(&rx.wait_for(has_rtt, Duration::from_secs(5))),
        "no gauge before the interface went: {}",
        metro.stderr_now()
    );

    a.ip(&["link", "del", "eth0"]);
    metro.wait_stderr(
        "interface \"eth0\" disappeared: waiting for it to come back",
        Duration::from_secs(5),
    );
    thread::sleep(Duration::from_millis(600));
    wire_eth0(&a, &b);
    address(&a, &b);
    metro.wait_stderr(
        "interface \"eth0\" is back: capture restarts",
        Duration::from_secs(5),
    );
    // Traffic only once the new sockets are capturing: the second "capturing on" of the run.
    metro.wait_stderr_times("capturing on eth0", 2, Duration::from_secs(5));
    let before = rx.metrics().len();
    exchanges(&a, server, 20);
    let after = rx.wait_for(
        |m| has_rtt(&m[before.min(m.len())..]),
        Duration::from_secs(5),
    );
    assert!(
        has_rtt(&after[before..]),
        "no gauge after the interface came back: {}",
        metro.stderr_now()
    );
    let out = metro.stop_with(Signal::SIGTERM);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    mark_ran(NAME);
}
