//! The Prometheus endpoint, scraped by a real Prometheus server (Debian's `prometheus`): metro
//! in go-metro mode with `prometheus_listen` beside DogStatsD, capturing real kernel TCP through
//! the project's delay line, inside network namespaces made here (`mpm<PID>-…`).
//!
//! Topology: `cli (eth0 10.87.0.1) -- mid (delay line, 10 ms) -- srv (eth0 10.87.0.2)`. metro,
//! the DogStatsD socket and Prometheus run in `cli`, and talk over its loopback only.
//!
//! The truth is what metro itself sends to DogStatsD for the same intervals (with
//! `percentile_gauges`): Prometheus's query API must return the pair's series with metro's
//! labels and exactly those values, and the RTT must be the delay line's.
//!
//! This test needs root. Without it it prints `SKIPPED (needs root): …` and passes, unless
//! `METRO_REQUIRE_ROOT_TESTS=1`; see `support`.

mod support;
use support::Scratch;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use support::statsd::{Receiver, Report};
use support::*;

const CLI: &str = "10.87.0.1";
const SRV: &str = "10.87.0.2";
const PORT: u16 = 7002;
const MSG: usize = 64;
const RTT_MS: u64 = 10;
/// About 4 s of traffic across the delay line: four report intervals.
const EXCHANGES: u32 = 400;

/// A Prometheus server in a namespace, killed when dropped.
struct PromServer {
    child: Child,
    port: u16,
    ns: String,
}

impl PromServer {
    /// Starts Prometheus in `ns`, scraping `target` every second, and waits until it is ready.
    fn start(ns: &Netns, dir: &std::path::Path, target: &str) -> PromServer {
        let port = free_port(ns);
        let cfg = dir.join("prometheus.yml");
        fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: metro\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        let p = PromServer {
            child,
            port,
            ns: ns.name.clone(),
        };
        let t0 = Instant::now();
        // Go answers in the request's HTTP version.
        while !get(&p.ns, p.port, "/-/ready").starts_with("HTTP/1.0 200") {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "prometheus not ready: {}",
                fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// The result of an instant query: `data.result`.
    fn query(&self, q: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", encode(q));
        let answer = get(&self.ns, self.port, &path);
        let body = answer.split_once("\r\n\r\n").map_or("", |b| b.1);
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{q}: {e}: {answer}"));
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of the one series `q` returns.
    fn one(&self, q: &str) -> f64 {
        let r = self.query(q);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on the loopback of `ns`.
fn free_port(ns: &Netns) -> u16 {
    ns.spawn(|| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
    .join()
    .unwrap()
}

/// `GET path` on `127.0.0.1:port` in namespace `ns`: the whole answer, or "" if none.
fn get(ns: &str, port: u16, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    thread::spawn(move || {
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(req.as_bytes());
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    })
    .join()
    .unwrap()
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Milliseconds as sent to DogStatsD, in whole nanoseconds.
fn ms_to_ns(ms: f64) -> u64 {
    (ms * 1e6).round() as u64
}

/// Seconds as Prometheus returns them, in whole nanoseconds.
fn s_to_ns(s: f64) -> u64 {
    (s * 1e9).round() as u64
}

/// Real Prometheus scrapes metro (go-metro mode, `prometheus_listen`, beside DogStatsD) every
/// second while 400 request/response exchanges cross a 10 ms delay line; then the query API
/// returns the pair's series with metro's labels (src, dst, the instance's tags, iface) and
/// exactly the values metro sent to DogStatsD: the histogram's count is the sum of the
/// intervals' `.count` gauges, its sum the sum of their mean × count, every scraped quantile,
/// min, max and jitter is one of an interval's gauges, and the packet and kernel counters are
/// the sums of metro's own counts. The median is the delay line's 10 ms.
#[test]
fn prometheus_scrapes_the_pairs_rtt_and_metros_counters_exactly() {
    const NAME: &str = "prometheus_scrapes_the_pairs_rtt_and_metros_counters_exactly";
    if !root_or_skip(NAME) {
        return;
    }
    let _g = heavy();
    let cli = Netns::with_prefix("mpm", "c");
    let mid = Netns::with_prefix("mpm", "m");
    let srv = Netns::with_prefix("mpm", "s");
    wire_three(&cli, &mid, &srv, CLI, SRV);
    let _line = DelayLine::start(&mid, "c0", "s0", Duration::from_millis(RTT_MS));
    let (ready_tx, ready_rx) = mpsc::channel();
    srv.spawn(move || {
        let l = TcpListener::bind((SRV, PORT)).unwrap();
        let _ = ready_tx.send(());
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            c.set_nodelay(true).unwrap();
            thread::spawn(move || {
                realtime_or_say("test server", RT_SERVER);
                let mut b = [0u8; MSG];
                while c.read_exact(&mut b).is_ok() && c.write_all(&b).is_ok() {}
            });
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    let scratch = Scratch::new("prometheus");
    let statsd = Receiver::on(
        cli.spawn(|| UdpSocket::bind("127.0.0.1:0").unwrap())
            .join()
            .unwrap(),
    );
    let metrics_port = free_port(&cli);
    let cfg = scratch.0.join("go-metro.yaml");
    fs::write(
        &cfg,
        format!(
            "init_config:\n  statsd_ip: 127.0.0.1\n  statsd_port: {}\n  log_level: info\n  report_interval: 1\n  workers: 2\n  percentile_gauges: true\n  self_metrics: true\n  prometheus_listen: 127.0.0.1:{metrics_port}\ninstances:\n  - interface: eth0\n    tags: [env:e2e, solo]\n    ips: [{SRV}]\n",
            statsd.port
        ),
    )
    .unwrap();
    let mut metro = Metro::start_daemon(&cli, &[&format!("-cfg={}", cfg.display())]);
    metro.wait_stderr("serving Prometheus metrics on", Duration::from_secs(5));
    let prom = PromServer::start(&cli, &scratch.0, &format!("127.0.0.1:{metrics_port}"));
    // The traffic starts once Prometheus scrapes metro, so that every interval of it is seen.
    let t0 = Instant::now();
    while prom.query("up{job=\"metro\"} == 1").is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "Prometheus never scraped metro"
        );
        thread::sleep(Duration::from_millis(100));
    }

    cli.spawn(move || {
        let to = format!("{SRV}:{PORT}").parse().unwrap();
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        c.set_nodelay(true).unwrap();
        let mut b = [0u8; MSG];
        for i in 0..EXCHANGES {
            c.write_all(&[i as u8; MSG]).unwrap();
            c.read_exact(&mut b).unwrap();
        }
    })
    .join()
    .unwrap();
    // The connection's last packets are in the interval under way: wait for two more reports.
    thread::sleep(Duration::from_millis(2500));

    let labels = format!(
        "src=\"{CLI}\",dst=\"{SRV}\",env=\"e2e\",tag=\"solo\",iface=\"eth0\",job=\"metro\""
    );
    let with_pair = |r: &Report, name: &str| -> Option<f64> {
        r.all(name)
            .into_iter()
            .find(|m| m.tags.contains(&format!("dst:{SRV}")))
            .map(|m| m.value)
    };
    // Totals from DogStatsD, to compare once Prometheus has scraped past the traffic.
    let truth = |reports: &[Report]| -> (u64, f64, f64, f64) {
        let mut count = 0u64;
        let mut sum_s = 0.0;
        let (mut packets, mut drops) = (0.0, 0.0);
        for r in reports {
            if let Some(n) = with_pair(r, "system.net.tcp.rtt.count") {
                count += n as u64;
                sum_s += with_pair(r, "system.net.tcp.rtt.avg").unwrap() / 1e3 * n;
            }
            packets += r.one("metro.packets");
            drops += r.one("metro.kernel.drops");
        }
        (count, sum_s, packets, drops)
    };
    let count_q = format!("metro_rtt_seconds_count{{{labels}}}");
    let t0 = Instant::now();
    let (count, sum_s, packets, drops) = loop {
        let t = truth(&statsd.reports());
        let got = prom.query(&count_q);
        let seen = got
            .first()
            .map(|v| v["value"][1].as_str().unwrap().parse::<f64>().unwrap() as u64);
        if seen == Some(t.0) && t.0 > 0 {
            break t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "Prometheus's {count_q} is {seen:?}, DogStatsD's total {}: {got:?}\nmetro: {}",
            t.0,
            metro.stderr_now()
        );
        thread::sleep(Duration::from_millis(250));
    };
    let reports = statsd.reports();
    eprintln!(
        "{} reports, {count} samples, {packets} packets; Prometheus agrees on the count",
        reports.len()
    );
    assert!(
        count >= u64::from(EXCHANGES),
        "{count} samples for {EXCHANGES} exchanges"
    );

    // The series and its labels, as Prometheus stored them.
    let series = prom.query(&count_q);
    let m = &series[0]["metric"];
    for (k, v) in [
        ("src", CLI),
        ("dst", SRV),
        ("env", "e2e"),
        ("tag", "solo"),
        ("iface", "eth0"),
        ("job", "metro"),
    ] {
        assert_eq!(m[k], v, "label {k}: {m}");
    }
    assert_eq!(m["instance"], format!("127.0.0.1:{metrics_port}"));
    let sum = prom.one(&format!("metro_rtt_seconds_sum{{{labels}}}"));
    assert!(
        (sum - sum_s).abs() <= 1e-9 * sum_s,
        "sum {sum} s, DogStatsD's {sum_s} s"
    );
    let inf = prom.one(&format!("metro_rtt_seconds_bucket{{{labels},le=\"+Inf\"}}"));
    assert_eq!(inf as u64, count);
    assert_eq!(
        prom.one(r#"metro_packets_total{env="e2e",tag="solo",iface="eth0"}"#),
        packets
    );
    assert_eq!(
        prom.one(r#"metro_kernel_drops_total{env="e2e",tag="solo",iface="eth0"}"#),
        drops
    );

    // Every scraped value of the last-interval gauges is one of the intervals' gauges, exactly.
    for (prom_name, statsd_name) in [
        (
            "metro_rtt_quantile_seconds{QUANTILE=\"0.5\"}",
            "system.net.tcp.rtt",
        ),
        (
            "metro_rtt_quantile_seconds{QUANTILE=\"0.95\"}",
            "system.net.tcp.rtt.95percentile",
        ),
        (
            "metro_rtt_quantile_seconds{QUANTILE=\"0.99\"}",
            "system.net.tcp.rtt.99percentile",
        ),
        ("metro_rtt_min_seconds{}", "system.net.tcp.rtt.min"),
        ("metro_rtt_max_seconds{}", "system.net.tcp.rtt.max"),
        ("metro_rtt_jitter_seconds{}", "system.net.tcp.rtt.jitter"),
    ] {
        let (name, extra) = prom_name.split_once('{').unwrap();
        let extra = extra.trim_end_matches('}').replace("QUANTILE", "quantile");
        let sel = if extra.is_empty() {
            format!("{name}{{{labels}}}[2m]")
        } else {
            format!("{name}{{{labels},{extra}}}[2m]")
        };
        let r = prom.query(&sel);
        assert_eq!(
            r.len(),
            1,
            "{sel}: {r:?}; Prometheus said: {}",
            fs::read_to_string(scratch.0.join("prometheus.log")).unwrap_or_default()
        );
        let scraped: Vec<u64> = r[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| s_to_ns(v[1].as_str().unwrap().parse().unwrap()))
            .collect();
        let sent: Vec<u64> = reports
            .iter()
            .filter_map(|r| with_pair(r, statsd_name))
            .map(ms_to_ns)
            .collect();
        assert!(!scraped.is_empty(), "{sel}");
        for v in &scraped {
            // Jitter is a mean and not a whole number of ns: within 1 ns.
            assert!(
                sent.iter().any(|s| s.abs_diff(*v) <= 1),
                "{sel}: scraped {v} ns, which no interval sent to DogStatsD ({sent:?})"
            );
        }
        if statsd_name == "system.net.tcp.rtt" {
            for v in &scraped {
                let ms = *v as f64 / 1e6;
                assert!(
                    ms >= RTT_MS as f64 - 0.1 && ms <= RTT_MS as f64 + 2.0,
                    "median {ms} ms across a {RTT_MS} ms delay line"
                );
            }
        }
    }
    let out = metro.stop_with(Signal::SIGTERM);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    drop(prom);
    mark_ran(NAME);
}
