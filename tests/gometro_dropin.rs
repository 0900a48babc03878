//! Swapping go-metro for metro under an agent's supervisor: what a packager meets must be what
//! go-metro did (as read from go-metro's source), case by case.
//!
//! - Only go-metro's three gauges leave unless `self_metrics` asks for metro's own series.
//! - Configurations go-metro runs, metro runs, saying what it assumed.
//! - The log names the time zone as go-metro's does; `debug` says more than `info`.
//! - Real-world configurations (`testdata/go-metro-configs/`) load unchanged, and run live.
//! - Root: `src:`/`dst:` tags carry the names go-metro finds (the last alias of an `/etc/hosts`
//!   line, a DNS answer with its trailing dot), with `/etc/hosts` and `/etc/resolv.conf`
//!   replaced in a private mount namespace and a DNS server made here; a host name in `ips` is
//!   resolved and tags carry its address; exit statuses as go-metro's for a missing or down
//!   interface; `interface: any` captures every interface.

mod support;
use support::testdata;
use support::Scratch;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use support::statsd::{Metric, Receiver};
use support::*;

const RTT_METRICS: [&str; 3] = [
    "system.net.tcp.rtt.avg",
    "system.net.tcp.rtt.jitter",
    "system.net.tcp.rtt",
];

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let end = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("metro did not exit within {timeout:?}: {out:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child, Duration::from_secs(30))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The metrics that have arrived once `n` lines have, or after `timeout`.
fn metrics_after(rx: &Receiver, n: usize, timeout: Duration) -> Vec<Metric> {
    let end = Instant::now() + timeout;
    loop {
        let m = rx.metrics();
        if m.len() >= n || Instant::now() > end {
            return m;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn only_go_metros_gauges_leave_unless_self_metrics_is_on() {
    let dir = Scratch::new("selfmetrics");
    let pcap = testdata("go-metro/test_scp.pcap");
    for (extra, want_self) in [("", false), ("  self_metrics: yes\n", true)] {
        let rx = Receiver::start();
        let cfg = dir.file(
            "go-metro.yaml",
            &format!(
                "init_config:\n  statsd_port: {}\n{extra}instances:\n  - interface: file\n    pcap: {}\n    ips: [162.243.251.92, 10.42.31.222]\n",
                rx.port,
                pcap.display()
            ),
        );
        let out = run(Command::new(METRO).args([
            &format!("-cfg={}", cfg.display()),
            &format!("-log={}", dir.path("log").display()),
        ]));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        // Two measured halves: 3 gauges each, then (asked for) metro's own 10 series.
        let m = metrics_after(&rx, if want_self { 16 } else { 6 }, Duration::from_secs(3));
        thread::sleep(Duration::from_millis(200));
        let m = if m.len() < rx.metrics().len() {
            rx.metrics()
        } else {
            m
        };
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        let gauges: Vec<&&str> = names.iter().filter(|n| RTT_METRICS.contains(n)).collect();
        assert_eq!(gauges.len(), 6, "{names:?}");
        let own = names.iter().filter(|n| n.starts_with("metro.")).count();
        if want_self {
            assert_eq!(own, 10, "{names:?}");
        } else {
            assert_eq!(
                names.len(),
                6,
                "only go-metro's series by default: {names:?}"
            );
        }
    }
}

/// Every reading go-metro makes of a sloppy file, in one file: metro runs it, sends the gauges,
/// and says what it assumed for each.
#[test]
fn a_file_go_metro_runs_metro_runs_and_says_what_it_assumed() {
    let dir = Scratch::new("lenient");
    let pcap = testdata("go-metro/test_scp.pcap");
    let rx = Receiver::start();
    let cfg = dir.file(
        "go-metro.yaml",
        &format!(
            "init_config:\n  snaplen: 512.0\n  idle_ttl: -5\n  exp_ttl: 60\n  expired_ttl: 30.0\n  statsd_ip: 127.0.0.1\n  statsd_port: {}\n  log_level: warn\nconfig:\n  - interface: eth9\n    ips: [192.0.2.1]\ninstances:\n  - interface: file\n    pcap: {}\n    tags:\n      -\n      - env:test\n    ips: [162.243.251.92]\n    hosts: ['']\n    sample: yes\n",
            rx.port,
            pcap.display()
        ),
    );
    let out = run(Command::new(METRO).args([
        &format!("-cfg={}", cfg.display()),
        &format!("-log={}", dir.path("log").display()),
    ]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let log = stdout(&out);
    for said in [
        "init_config.snaplen: 512 is not a whole number; read as 512",
        "init_config.idle_ttl: -5 is negative; using the default, 300 s",
        "init_config.expired_ttl: 30 disagrees with exp_ttl 60 (line 4); they are the same setting: using expired_ttl",
        "config: go-metro's older list is ignored",
        "instances[0].tags[0]: empty tag, not sent",
        "instances[0].hosts[0]: empty host name, skipped",
        "instances[0].sample_duration: `sample: true` with no positive sample_duration captures nothing under go-metro; metro captures all the time",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(said))
            .unwrap_or_else(|| panic!("{said:?} not in {log}"));
        assert!(line.contains(" | WARN | "), "{line}");
    }
    let m = metrics_after(&rx, 3, Duration::from_secs(3));
    assert_eq!(m.len(), 3, "{m:#?}");
    for g in &m {
        assert_eq!(
            g.tags,
            [
                "src:10.42.31.222",
                "dst:162.243.251.92",
                "env:test",
                "iface:file"
            ]
        );
    }
}

/// The zone as go-metro's seelog prints it: the abbreviation (`CET`), which `date +%Z` gives
/// for the same `TZ`; and `debug` logs each report where `info` does not.
#[test]
fn the_log_names_the_zone_and_debug_says_more_than_info() {
    let dir = Scratch::new("zone");
    let pcap = testdata("go-metro/test_scp.pcap");
    let rx = Receiver::start();
    let mut lines = Vec::new();
    for level in ["debug", "info"] {
        let cfg = dir.file(
            "go-metro.yaml",
            &format!(
                "init_config:\n  statsd_port: {}\n  log_level: {level}\ninstances:\n  - interface: file\n    pcap: {}\n    ips: [162.243.251.92]\n",
                rx.port,
                pcap.display()
            ),
        );
        let out = run(Command::new(METRO).env("TZ", "Europe/Paris").args([
            &format!("-cfg={}", cfg.display()),
            &format!("-log={}", dir.path("log").display()),
        ]));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        lines.push(stdout(&out));
    }
    let date = run(Command::new("date").env("TZ", "Europe/Paris").arg("+%Z"));
    let zone = stdout(&date).trim().to_string();
    assert!(zone == "CET" || zone == "CEST", "{zone}");
    for log in &lines {
        for l in log.lines() {
            // 2026-12-02 23:40:00 CET | INFO | (daemon.rs:NNN) |  …
            assert_eq!(&l[19..19 + zone.len() + 4], format!(" {zone} | "), "{l}");
        }
    }
    let reported = |log: &str| {
        log.lines()
            .filter(|l| l.contains(" | DEBUG | ") && l.contains("reported file"))
            .count()
    };
    assert!(lines[0].lines().count() > lines[1].lines().count());
    assert_eq!(reported(&lines[0]), 1, "{}", lines[0]);
    assert!(
        lines[0].contains("1 host pairs with 145 RTT samples"),
        "{}",
        lines[0]
    );
    assert_eq!(reported(&lines[1]), 0, "{}", lines[1]);
}

fn real_world_configs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(testdata("go-metro-configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .collect();
    v.sort();
    assert_eq!(v.len(), 6, "{v:?}");
    v
}

#[test]
fn real_world_configs_load_unchanged_without_a_warning() {
    for path in real_world_configs() {
        let c = metro::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            c.warnings.is_empty(),
            "{}: {:?}",
            path.display(),
            c.warnings
        );
        assert!(c.init.log_to_file, "{}", path.display());
        assert_eq!(c.init.log_level, metro::config::LogLevel::Info);
        assert_eq!(c.init.statsd_port, 8125);
        assert_eq!(c.instances.len(), 1, "{}", path.display());
        let i = &c.instances[0];
        assert_eq!(i.interface, "eth0");
        assert_eq!(i.ips[0].text, "192.168.0.1");
        assert_eq!(i.hosts, ["somehost.somedomain.to"]);
    }
}

/// Each real-world file, unchanged, live in a namespace whose `eth0` exists: metro starts
/// capturing (the sample host does not resolve there, which is logged as go-metro logs it) and
/// stops with exit status 0 on SIGTERM.
#[test]
fn real_world_configs_run_live_to_a_clean_stop() {
    const NAME: &str = "real_world_configs_run_live_to_a_clean_stop";
    if !root_or_skip(NAME) {
        return;
    }
    let (a, b) = wired_pair();
    a.ip(&["addr", "add", "10.89.0.1/24", "dev", "eth0"]);
    b.ip(&["addr", "add", "10.89.0.2/24", "dev", "eth0"]);
    let dir = Scratch::new("realworld");
    for (i, cfg) in real_world_configs().iter().enumerate() {
        let log = dir.path(&format!("{i}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &a.name, METRO])
            .args([
                &format!("-cfg={}", cfg.display()),
                &format!("-log={}", log.display()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(15);
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("capturing on eth0")
        {
            assert!(
                Instant::now() < end,
                "{}: {}",
                cfg.display(),
                fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let out = wait_with_timeout(child, Duration::from_secs(10));
        let text = fs::read_to_string(&log).unwrap();
        assert_eq!(out.status.code(), Some(0), "{}: {text}", cfg.display());
        assert!(
            text.contains("| INFO | ")
                && text.contains("Will attempt sniffing off interface \"eth0\""),
            "{text}"
        );
        assert!(
            text.contains("| WARN | ") && text.contains("force stop"),
            "{text}"
        );
        assert!(!text.contains("CRITICAL"), "{text}");
    }
    mark_ran(NAME);
}

// ---------------------------------------------------------------------------------------------
// Names: a private mount namespace with our /etc/hosts and /etc/resolv.conf, in a network
// namespace where a DNS server made here answers on 127.0.0.1:53.

/// A DNS answer to `query`: NXDOMAIN when `names` is empty, else one PTR record per name.
fn dns_answer(query: &[u8], names: &[&str]) -> Vec<u8> {
    // The question ends at the root label after offset 12, then type and class.
    let mut end = 12;
    while query[end] != 0 {
        end += 1 + query[end] as usize;
    }
    end += 5;
    let mut m = query[..end].to_vec();
    m[2] = 0x81;
    m[3] = if names.is_empty() { 0x83 } else { 0x80 };
    m[6..8].copy_from_slice(&(names.len() as u16).to_be_bytes());
    m[8..12].fill(0);
    for n in names {
        m.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 60]);
        let mut rd = Vec::new();
        for l in n.split('.').filter(|l| !l.is_empty()) {
            rd.push(l.len() as u8);
            rd.extend_from_slice(l.as_bytes());
        }
        rd.push(0);
        m.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        m.extend_from_slice(&rd);
    }
    m
}

/// The query name, dotted: `92.251.243.162.in-addr.arpa`.
fn query_name(q: &[u8]) -> String {
    let mut at = 12;
    let mut labels = Vec::new();
    while at < q.len() && q[at] != 0 {
        let n = q[at] as usize;
        labels.push(String::from_utf8_lossy(&q[at + 1..at + 1 + n]).into_owned());
        at += 1 + n;
    }
    labels.join(".")
}

/// Serves PTR answers from `zone` on 127.0.0.1:53 of `ns`, until the test ends.
fn dns_server(ns: &Netns, zone: Vec<(&'static str, Vec<&'static str>)>) {
    let sock = ns
        .spawn(|| UdpSocket::bind("127.0.0.1:53").unwrap())
        .join()
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = query_name(&buf[..n]);
            let names = zone
                .iter()
                .find(|(k, _)| *k == q)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let _ = sock.send_to(&dns_answer(&buf[..n], &names), from);
        }
    });
}

/// Runs metro in `ns` with `hosts` as /etc/hosts and a resolv.conf naming 127.0.0.1, each
/// bind-mounted in a private mount namespace.
fn metro_with_names(ns: &Netns, dir: &Scratch, hosts: &str, args: &[String]) -> Output {
    let h = dir.file("hosts", hosts);
    let r = dir.file(
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    );
    let script = format!(
        "mount --bind {} /etc/hosts && mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
        h.display(),
        r.display()
    );
    run(Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            METRO,
        ])
        .args(args))
}

fn statsd_in(ns: &Netns) -> Receiver {
    let s = ns
        .spawn(|| UdpSocket::bind("127.0.0.1:0").unwrap())
        .join()
        .unwrap();
    Receiver::on(s)
}

fn tags_of(m: &[Metric]) -> Vec<Vec<String>> {
    let mut t: Vec<Vec<String>> = m.iter().map(|m| m.tags.clone()).collect();
    t.dedup();
    t
}

#[test]
fn tags_carry_the_names_go_metro_finds() {
    const NAME: &str = "tags_carry_the_names_go_metro_finds";
    if !root_or_skip(NAME) {
        return;
    }
    let ns = Netns::with_prefix("dm", "n");
    dns_server(
        &ns,
        vec![(
            "92.251.243.162.in-addr.arpa",
            vec!["first.example.test", "srv.example.test"],
        )],
    );
    let dir = Scratch::new("names");
    let pcap = testdata("go-metro/test_scp.pcap");
    let go = |hosts: &str, ips: &str| -> (Vec<Vec<String>>, String) {
        let rx = statsd_in(&ns);
        let cfg = dir.file(
            "go-metro.yaml",
            &format!(
                "init_config:\n  statsd_port: {}\n  log_level: info\ninstances:\n  - interface: file\n    pcap: {}\n    ips: {ips}\n",
                rx.port,
                pcap.display()
            ),
        );
        let out = metro_with_names(
            &ns,
            &dir,
            hosts,
            &[
                format!("-cfg={}", cfg.display()),
                format!("-log={}", dir.path("log").display()),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let m = metrics_after(&rx, 6, Duration::from_secs(3));
        (tags_of(&m), stdout(&out))
    };
    let both = "[162.243.251.92, 10.42.31.222]";

    // /etc/hosts: every name of the address's lines, the last one kept; a dotted name gets
    // Go's trailing dot.
    let (tags, log) = go(
        "127.0.0.1 localhost\n162.243.251.92 scp-srv scp-srv-alias\n10.42.31.222 client.example.test\n",
        both,
    );
    assert_eq!(
        tags,
        [
            [
                "src:client.example.test.",
                "dst:scp-srv-alias",
                "iface:file"
            ],
            [
                "src:scp-srv-alias",
                "dst:client.example.test.",
                "iface:file"
            ]
        ]
    );
    assert!(
        log.contains("| INFO | ") && log.contains("scp-srv resolving to: 162.243.251.92"),
        "{log}"
    );
    assert!(
        log.contains("scp-srv-alias resolving to: 162.243.251.92"),
        "{log}"
    );

    // DNS: the answers as sent, trailing dot kept, the last PTR kept; no name, the address,
    // with go-metro's ERROR.
    let (tags, log) = go("127.0.0.1 localhost\n", both);
    assert_eq!(
        tags,
        [
            ["src:10.42.31.222", "dst:srv.example.test.", "iface:file"],
            ["src:srv.example.test.", "dst:10.42.31.222", "iface:file"]
        ]
    );
    let line = log
        .lines()
        .find(|l| l.contains("Problem looking up hostnames for: 10.42.31.222"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(" | ERROR | "), "{line}");

    // A host name in `ips`: resolved (as libpcap resolves `host NAME`), the tags carry the address.
    let (tags, log) = go(
        "127.0.0.1 localhost\n162.243.251.92 scp-server.test\n",
        "[scp-server.test]",
    );
    assert_eq!(
        tags,
        [["src:10.42.31.222", "dst:162.243.251.92", "iface:file"]]
    );
    assert!(
        log.contains("scp-server.test resolving to: 162.243.251.92"),
        "{log}"
    );
    mark_ran(NAME);
}

// ---------------------------------------------------------------------------------------------
// Exit statuses and `interface: any`, live.

fn live_cfg(dir: &Scratch, port: u16, instances: &str) -> Vec<String> {
    let cfg = dir.file(
        "go-metro.yaml",
        &format!("init_config:\n  statsd_port: {port}\n  log_level: info\n  report_interval: 0.5\ninstances:\n{instances}"),
    );
    vec![
        format!("-cfg={}", cfg.display()),
        format!("-log={}", dir.path("log").display()),
    ]
}

#[test]
fn exit_statuses_follow_go_metro() {
    const NAME: &str = "exit_statuses_follow_go_metro";
    if !root_or_skip(NAME) {
        return;
    }
    let ns = Netns::with_prefix("dm", "x");
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ns.ip(&["link", "set", "up0", "up"]);
    ns.ip(&["link", "set", "up1", "up"]);
    ns.ip(&[
        "link", "add", "down0", "type", "veth", "peer", "name", "down1",
    ]);
    let dir = Scratch::new("exits");
    let metro = |args: &[String]| -> Child {
        Command::new("ip")
            .args(["netns", "exec", &ns.name, METRO])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let inst = |iface: &str| format!("  - interface: {iface}\n    ips: [192.0.2.1]\n");

    // No interface to capture: go-metro's "No sniffers available", 1.
    let out = wait_with_timeout(
        metro(&live_cfg(&dir, 9, &inst("nosuch0"))),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains("| CRITICAL | ") && stdout(&out).contains("No sniffers available"),
        "{out:?}"
    );

    // An interface that is down: the sniffer cannot start, 1.
    let out = wait_with_timeout(
        metro(&live_cfg(&dir, 9, &inst("down0"))),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains("Unable to start sniffer for interface: \"down0\""),
        "{out:?}"
    );

    // One instance's interface is missing: go-metro runs the other, and SIGTERM gives 0.
    let both = format!("{}{}", inst("nosuch0"), inst("up0"));
    let child = metro(&live_cfg(&dir, 9, &both));
    thread::sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("capturing on up0"), "{out:?}");
    mark_ran(NAME);
}

#[test]
fn interface_any_captures_every_interface() {
    const NAME: &str = "interface_any_captures_every_interface";
    if !root_or_skip(NAME) {
        return;
    }
    let (a, _b) = echo_pair(88, &[7002]);
    let rx = statsd_in(&a);
    let dir = Scratch::new("any");
    let args = live_cfg(
        &dir,
        rx.port,
        "  - interface: any\n    tags: [t:any]\n    ips: [10.88.0.2]\n",
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &a.name, METRO])
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(800));
    let talk = a.spawn(|| {
        let mut c = TcpStream::connect("10.88.0.2:7002").unwrap();
        c.set_nodelay(true).unwrap();
        let mut buf = [0u8; 32];
        for _ in 0..50 {
            c.write_all(&[7u8; 32]).unwrap();
            c.read_exact(&mut buf).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
    });
    talk.join().unwrap();
    thread::sleep(Duration::from_millis(1200));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let m = rx.metrics();
    let rtt: Vec<&Metric> = m
        .iter()
        .filter(|m| m.name == "system.net.tcp.rtt")
        .collect();
    assert!(!rtt.is_empty(), "{m:#?} {}", stdout(&out));
    for g in &rtt {
        assert_eq!(
            g.tags,
            ["src:10.88.0.1", "dst:10.88.0.2", "t:any", "iface:any"]
        );
        assert!(g.value > 0.0 && g.value < 50.0, "{g:?}");
    }
    assert!(
        stdout(&out).contains("capturing on any"),
        "{}",
        stdout(&out)
    );
    mark_ran(NAME);
}
