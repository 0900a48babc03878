//! go-metro mode end to end: the built `metro` binary, a go-metro YAML file, and a real UDP
//! socket in the test standing in for DogStatsD.
//!
//! Every datagram is parsed strictly by the DogStatsD format; the gauges' values are checked
//! against the pair statistics that `metro --pcap FILE --format json` prints for the same file.
//! Captures come from `testdata/go-metro` (go-metro's own test captures).

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod support;

use support::{go_metro_capture, root, statsd, Scratch, METRO};

use statsd::{Metric, Receiver};

/// One `{"type":"pair",…}` line of offline mode.
#[derive(Debug)]
struct Pair {
    src: String,
    dst: String,
    samples: u64,
    p50: f64,
    avg: f64,
    jitter: f64,
    min: f64,
    max: f64,
    p95: f64,
    p99: f64,
}

fn offline_pairs(pcap: &Path) -> (Vec<Pair>, u64) {
    let out = Command::new(METRO)
        .args(["--pcap", pcap.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pairs = Vec::new();
    let mut packets = 0;
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let f = |k: &str| v[k].as_f64().unwrap();
        match v["type"].as_str().unwrap() {
            "pair" => pairs.push(Pair {
                src: v["src"].as_str().unwrap().into(),
                dst: v["dst"].as_str().unwrap().into(),
                samples: v["samples"].as_u64().unwrap(),
                p50: f("p50_ms"),
                avg: f("avg_ms"),
                jitter: f("jitter_ms"),
                min: f("min_ms"),
                max: f("max_ms"),
                p95: f("p95_ms"),
                p99: f("p99_ms"),
            }),
            "counters" => packets = v["packets"].as_u64().unwrap(),
            _ => {}
        }
    }
    (pairs, packets)
}

/// The JSON prints 6 decimals; the wire carries the full value.
fn assert_ms(wire: f64, json: f64, what: &str) {
    assert!(
        (wire - json).abs() <= 0.000_000_5 + 1e-12,
        "{what}: wire {wire} vs offline {json}"
    );
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

/// A go-metro file with metro's own health series on (`self_metrics`), which the tests read
/// as the end of an interval, and `instances` as given.
fn config(port: u16, init_extra: &str, instances: &str) -> String {
    format!(
        "init_config:\n  statsd_ip: 127.0.0.1\n  statsd_port: {port}\n  log_level: info\n  self_metrics: yes\n{init_extra}instances:\n{instances}"
    )
}

/// `args`, with a `-log` of this test process's own unless one is given: go-metro mode logs
/// to it until its configuration is read, and the default is the system's.
fn with_log(args: &[&str]) -> Vec<String> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if !args
        .iter()
        .any(|a| a.starts_with("-log") || a.starts_with("--log"))
    {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("metro-gm-{}-{n}.log", std::process::id()));
        v.push(format!("-log={}", log.display()));
    }
    v
}

fn run_metro(args: &[&str]) -> Output {
    Command::new(METRO).args(with_log(args)).output().unwrap()
}

fn spawn_metro(args: &[&str]) -> Child {
    Command::new(METRO)
        .args(with_log(args))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let end = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "metro did not exit within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes go-metro's scp capture into the FIFO a running metro reads as a file instance, lets it
/// run, stops it with SIGTERM, and checks that it exited 0 with every packet and sample counted.
/// Returns its log.
fn feed_scp_then_stop(child: Child, fifo: &Path, pcap: &Path) -> String {
    let mut w = fs::OpenOptions::new().write(true).open(fifo).unwrap();
    w.write_all(&fs::read(pcap).unwrap()).unwrap();
    w.flush().unwrap();
    thread::sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(10));
    drop(w);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        log.contains(&format!(
            "{}: 657 packets, 167 RTT samples reported",
            fifo.display()
        )),
        "every packet is still counted: {log}"
    );
    log
}

const RTT_METRICS: [&str; 3] = [
    "system.net.tcp.rtt.avg",
    "system.net.tcp.rtt.jitter",
    "system.net.tcp.rtt",
];

/// Checks the three gauges of every offline pair against the wire, in go-metro's order and
/// with go-metro's tags.
fn check_pairs(metrics: &[Metric], pairs: &[Pair], user_tags: &[&str], iface: &str) {
    let rtt: Vec<&Metric> = metrics
        .iter()
        .filter(|m| m.name.starts_with("system.net.tcp.rtt"))
        .collect();
    assert_eq!(rtt.len(), 3 * pairs.len(), "{rtt:#?}");
    for (i, p) in pairs.iter().enumerate() {
        let mut tags = vec![format!("src:{}", p.src), format!("dst:{}", p.dst)];
        tags.extend(user_tags.iter().map(|t| t.to_string()));
        tags.push(format!("iface:{iface}"));
        let group: Vec<&&Metric> = rtt.iter().filter(|m| m.tags[..2] == tags[..2]).collect();
        assert_eq!(group.len(), 3, "pair {i}: {group:#?}");
        for (m, name) in group.iter().zip(RTT_METRICS) {
            assert_eq!(m.name, name);
            assert_eq!(m.kind, "g", "{name} is a gauge");
            assert_eq!(m.tags, tags, "{name}: tags and their order");
        }
        assert_ms(group[0].value, p.avg, "rtt.avg");
        assert_ms(group[1].value, p.jitter, "rtt.jitter");
        assert_ms(group[2].value, p.p50, "rtt (median)");
    }
}

fn value(metrics: &[Metric], name: &str) -> f64 {
    let m: Vec<&Metric> = metrics.iter().filter(|m| m.name == name).collect();
    assert_eq!(m.len(), 1, "{name}: {m:#?}");
    m[0].value
}

#[test]
fn file_instance_sends_go_metros_gauges_equal_to_offline_statistics() {
    let pcap = go_metro_capture("test_scp.pcap");
    let (pairs, packets) = offline_pairs(&pcap);
    assert_eq!(pairs.len(), 2, "the scp capture has two measured halves");
    assert_eq!(pairs[0].samples, 145);
    let rx = Receiver::start();
    let dir = Scratch::new("file");
    let cfg = dir.file(
        "go-metro.yaml",
        &config(
            rx.port,
            "  require_whitelist: false\n",
            &format!(
                "  - interface: file\n    pcap: {}\n    tags:\n      - foo:bar\n      - solo\n",
                pcap.display()
            ),
        ),
    );
    let out = run_metro(&[&format!("-cfg={}", cfg.display())]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let m = rx.wait_for(
        |m| m.iter().any(|m| m.name == "metro.statsd.errors"),
        Duration::from_secs(2),
    );
    check_pairs(&m, &pairs, &["foo:bar", "solo"], "file");
    assert_eq!(value(&m, "metro.packets"), packets as f64);
    assert_eq!(value(&m, "metro.packets"), 657.0);
    assert_eq!(value(&m, "metro.flows"), 1.0);
    assert_eq!(value(&m, "metro.statsd.errors"), 0.0);
    let self_tags = ["foo:bar".to_string(), "solo".into(), "iface:file".into()];
    for s in m.iter().filter(|m| m.name.starts_with("metro.")) {
        let t = if s.name == "metro.skipped" {
            &s.tags[1..]
        } else {
            &s.tags[..]
        };
        assert_eq!(t, &self_tags[..], "{s:?}");
    }
    let kinds: Vec<(&str, &str)> = m
        .iter()
        .filter(|m| m.name.starts_with("metro.") && m.name != "metro.skipped")
        .map(|m| (m.name.as_str(), m.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("metro.packets", "c"),
            ("metro.kernel.drops", "c"),
            ("metro.flows", "g"),
            ("metro.evictions", "c"),
            ("metro.statsd.errors", "c"),
        ]
    );
    let reasons: Vec<&str> = m
        .iter()
        .filter(|m| m.name == "metro.skipped")
        .map(|m| m.tags[0].as_str())
        .collect();
    assert_eq!(
        reasons,
        vec![
            "reason:not_tcp",
            "reason:truncated",
            "reason:malformed",
            "reason:fragment",
            "reason:unknown_link"
        ]
    );
    // With log_to_file off, go-metro logs to standard output (seelog's console).
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{out:?}");
    assert!(log.contains("| INFO | "), "{log}");
    assert!(log.contains("reading in packets"), "{log}");
    assert!(
        log.contains(&format!(
            "{}: 657 packets, 167 RTT samples reported",
            pcap.display()
        )),
        "{log}"
    );
}

#[test]
fn whitelist_keeps_only_halves_acknowledged_by_listed_hosts() {
    let pcap = go_metro_capture("test_scp.pcap");
    let (pairs, _) = offline_pairs(&pcap);
    let rx = Receiver::start();
    let dir = Scratch::new("whitelist");
    let cfg = dir.file(
        "go-metro.yaml",
        &config(
            rx.port,
            "  percentile_gauges: yes\n",
            &format!(
                "  - interface: file\n    pcap: {}\n    ips: [162.243.251.0/24]\n",
                pcap.display()
            ),
        ),
    );
    let out = run_metro(&["-cfg", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let m = rx.wait_for(
        |m| m.iter().any(|m| m.name == "metro.statsd.errors"),
        Duration::from_secs(2),
    );
    let server: Vec<&Pair> = pairs.iter().filter(|p| p.dst == "162.243.251.92").collect();
    assert_eq!(server.len(), 1);
    let p = server[0];
    let tags = vec![
        "src:10.42.31.222".to_string(),
        "dst:162.243.251.92".into(),
        "iface:file".into(),
    ];
    let rtt: Vec<&Metric> = m
        .iter()
        .filter(|m| m.name.starts_with("system.net.tcp.rtt"))
        .collect();
    let names: Vec<&str> = rtt.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "system.net.tcp.rtt.avg",
            "system.net.tcp.rtt.jitter",
            "system.net.tcp.rtt",
            "system.net.tcp.rtt.min",
            "system.net.tcp.rtt.max",
            "system.net.tcp.rtt.95percentile",
            "system.net.tcp.rtt.99percentile",
            "system.net.tcp.rtt.count",
        ]
    );
    assert!(rtt.iter().all(|m| m.tags == tags && m.kind == "g"));
    for (m, want) in rtt
        .iter()
        .zip([p.avg, p.jitter, p.p50, p.min, p.max, p.p95, p.p99])
    {
        assert_ms(m.value, want, &m.name);
    }
    assert_eq!(rtt[7].value, 145.0);
}

#[test]
fn several_instances_run_together_each_with_its_tags() {
    let scp = go_metro_capture("test_scp.pcap");
    let http = go_metro_capture("test_tcp.pcap");
    let (scp_pairs, _) = offline_pairs(&scp);
    let (http_pairs, _) = offline_pairs(&http);
    let rx = Receiver::start();
    let dir = Scratch::new("several");
    let cfg = dir.file(
        "go-metro.yaml",
        &config(
            rx.port,
            "  require_whitelist: off\n",
            &format!(
                "  - interface: file\n    pcap: {}\n    tags: [which:scp]\n  - interface: file\n    pcap: {}\n    tags: [which:http]\n",
                scp.display(),
                http.display()
            ),
        ),
    );
    let out = run_metro(&[&format!("--cfg={}", cfg.display())]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let m = rx.wait_for(
        |m| m.iter().filter(|m| m.name == "metro.statsd.errors").count() == 2,
        Duration::from_secs(2),
    );
    let of = |which: &str| -> Vec<Metric> {
        m.iter()
            .filter(|x| x.tags.contains(&format!("which:{which}")))
            .cloned()
            .collect()
    };
    check_pairs(&of("scp"), &scp_pairs, &["which:scp"], "file");
    check_pairs(&of("http"), &http_pairs, &["which:http"], "file");
}

/// Feeds the scp capture through a FIFO that stays open, so the instance is still running when
/// the signal comes; the last (and only) interval must still arrive, whole.
fn signal_flushes(sig: Signal, name: &str) {
    let pcap = go_metro_capture("test_scp.pcap");
    let (pairs, _) = offline_pairs(&pcap);
    let rx = Receiver::start();
    let dir = Scratch::new(name);
    let fifo = dir.0.join("capture.fifo");
    mkfifo(&fifo);
    let cfg = dir.file(
        "go-metro.yaml",
        &config(
            rx.port,
            "  report_interval: 3600\n  require_whitelist: false\n",
            &format!("  - interface: file\n    pcap: {}\n", fifo.display()),
        ),
    );
    let child = spawn_metro(&["-cfg", cfg.to_str().unwrap()]);
    // Opening blocks until metro opens the other end.
    let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    w.write_all(&fs::read(&pcap).unwrap()).unwrap();
    w.flush().unwrap();
    thread::sleep(Duration::from_millis(700));
    assert!(
        rx.metrics().is_empty(),
        "nothing is sent before the interval ends"
    );
    let start = Instant::now();
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{sig}: {out:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "{sig}: slow stop");
    drop(w);
    let m = rx.wait_for(
        |m| m.iter().any(|m| m.name == "metro.statsd.errors"),
        Duration::from_secs(2),
    );
    check_pairs(&m, &pairs, &[], "file");
    assert_eq!(value(&m, "metro.packets"), 657.0);
    let log = String::from_utf8_lossy(&out.stdout);
    let said = match sig {
        Signal::SIGHUP => "hungup",
        Signal::SIGINT => "sig int caught, shutting down.",
        Signal::SIGTERM => "force stop",
        _ => "stop and core dump",
    };
    assert!(log.contains("| WARN | ") && log.contains(said), "{log}");
}

#[test]
fn sigterm_flushes_the_last_interval() {
    signal_flushes(Signal::SIGTERM, "sigterm");
}

#[test]
fn sigint_sighup_and_sigquit_flush_too() {
    signal_flushes(Signal::SIGINT, "sigint");
    signal_flushes(Signal::SIGHUP, "sighup");
    signal_flushes(Signal::SIGQUIT, "sigquit");
}

#[test]
fn receiver_down_capture_goes_on_and_errors_are_counted() {
    let pcap = go_metro_capture("test_scp.pcap");
    // A port with nobody on it.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = Scratch::new("down");
    let fifo = dir.0.join("capture.fifo");
    mkfifo(&fifo);
    let cfg = dir.file(
        "go-metro.yaml",
        &config(
            port,
            "  report_interval: 0.1\n  require_whitelist: false\n",
            &format!("  - interface: file\n    pcap: {}\n", fifo.display()),
        ),
    );
    let child = spawn_metro(&["-cfg", cfg.to_str().unwrap()]);
    let log = feed_scp_then_stop(child, &fifo, &pcap);
    let line = log
        .lines()
        .find(|l| l.contains("statsd (file): "))
        .unwrap_or_else(|| panic!("no statsd summary: {log}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // …, sent, datagrams, not sent
    let lost = nums[nums.len() - 1];
    assert!(lost > 0, "refused sends are counted: {line}");
}

#[test]
fn firewalled_receiver_drops_are_counted_and_capture_goes_on() {
    // It builds a network namespace with an nftables drop rule.
    const NAME: &str = "firewalled_receiver_drops_are_counted_and_capture_goes_on";
    if !root::root_or_skip(NAME) {
        return;
    }
    let pcap = go_metro_capture("test_scp.pcap");
    let ns = format!("mgm{}", std::process::id());
    let sh = |cmd: &str| {
        let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
        assert!(o.status.success(), "{cmd}: {o:?}");
    };
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    sh(&format!("ip netns add {ns}"));
    let _guard = Ns(ns.clone());
    sh(&format!("ip -n {ns} link set lo up"));
    sh(&format!(
        "ip netns exec {ns} nft -f - <<'EOF'\ntable inet mgm {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    udp dport 8125 counter drop\n  }}\n}}\nEOF"
    ));
    let dir = Scratch::new("firewall");
    let fifo = dir.0.join("capture.fifo");
    mkfifo(&fifo);
    let cfg = dir.file(
        "go-metro.yaml",
        &config(
            8125,
            "  report_interval: 0.1\n  require_whitelist: false\n",
            &format!("  - interface: file\n    pcap: {}\n", fifo.display()),
        ),
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, METRO])
        .args(with_log(&["-cfg", cfg.to_str().unwrap()]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `ip netns exec` execs metro, so the child's pid is metro's.
    let log = feed_scp_then_stop(child, &fifo, &pcap);
    let line = log.lines().find(|l| l.contains("statsd (file): ")).unwrap();
    // A drop in the output hook fails the send itself (EPERM): nothing leaves, all is counted.
    assert!(line.contains(": 0 metrics sent in 0 datagrams"), "{line}");
    assert!(!line.contains(", 0 not sent"), "{line}");
    root::mark_ran(NAME);
}

#[test]
fn missing_config_waits_5_s_then_exits_0_and_says_why_in_the_log_file() {
    let dir = Scratch::new("missing");
    let log = dir.0.join("log/go-metro.log");
    let start = Instant::now();
    let out = run_metro(&[
        "-cfg=/nonexistent/metro/go-metro.yaml",
        &format!("-log={}", log.display()),
    ]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(took >= Duration::from_millis(4900), "waited only {took:?}");
    assert!(took < Duration::from_secs(8), "waited {took:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("| ERROR | ")
            && text.contains("cannot read configuration file /nonexistent/metro/go-metro.yaml")
            && text.contains("exiting in 5 s"),
        "{text}"
    );
}

/// go-metro's refusals, word for word, with the file, key and line metro adds: in the `-log`
/// file, where go-metro writes them (its logger writes to the file until the configuration is
/// read), with exit status 1.
#[test]
fn go_metros_config_errors_exit_1_into_the_log_file_with_its_explanation() {
    let dir = Scratch::new("errors");
    let cases = [
        (
            "init_config:\n  snaplen: 512\n",
            "instances: No sniffing interfaces specified.",
        ),
        (
            "instances:\n  - tags: [a:b]\n    ips: [192.0.2.1]\n",
            ":2: instances[0].interface: Error parsing configuration - empty iface field.",
        ),
        (
            "instances:\n  - interface: file\n    ips: [192.0.2.1]\n",
            ":2: instances[0].pcap: Error parsing configuration - empty pcap field for file interface.",
        ),
        (
            "instances:\n  - interface: lo\n",
            ":2: instances[0].ips: Whitelists must be enabled for go-metro to run (you may whitelist by IP or hostname in config file).",
        ),
        (
            "instances:\n  - interface: lo\n    ips: [127.0.0.1]\n",
            "Whitelist cannot contain just local addresses! Bailing out : [host 127.0.0.1]",
        ),
        (
            "init_config:\n  idle_ttl: [1]\ninstances:\n  - interface: lo\n    ips: [192.0.2.1]\n",
            ":2: init_config.idle_ttl: ",
        ),
        (
            "instances:\n  - interface: lo\n    ips: [no-such-host.invalid]\n",
            "error setting BPF filter: cannot resolve \"no-such-host.invalid\" in `ips`",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let cfg = dir.file(&format!("c{i}.yaml"), yaml);
        let log = dir.0.join(format!("c{i}.log"));
        let out = run_metro(&["-cfg", cfg.to_str().unwrap(), "-log", log.to_str().unwrap()]);
        // A configuration that parses switches the log to standard output (log_to_file is off)
        // before the instances are prepared.
        let after_parsing =
            want.starts_with("Whitelist cannot") || want.starts_with("error setting");
        let text = if after_parsing {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            fs::read_to_string(&log).unwrap_or_default()
        };
        assert_eq!(out.status.code(), Some(1), "case {i}: {text} {out:?}");
        assert!(text.contains("| CRITICAL | "), "case {i}: {text}");
        assert!(text.contains(want), "case {i}: want {want:?} in {text}");
        if !after_parsing {
            assert!(
                text.contains(&format!(
                    "Error parsing configuration file: {}",
                    cfg.display()
                )),
                "case {i}: {text}"
            );
        }
    }
}

/// With `log_to_file: false`, what comes after the configuration goes to standard output, as
/// go-metro's console logger writes.
#[test]
fn without_log_to_file_the_log_goes_to_standard_output() {
    let dir = Scratch::new("stdout");
    let log = dir.0.join("go-metro.log");
    let cfg = dir.file(
        "go-metro.yaml",
        "init_config:\n  log_level: info\n  exp_tl: 1\ninstances:\n  - interface: file\n    pcap: /nonexistent/x.pcap\n    ips: [192.0.2.1]\n",
    );
    let out = run_metro(&["-cfg", cfg.to_str().unwrap(), "-log", log.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.contains("| WARN | ") && stdout.contains("init_config.exp_tl: unknown key"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| CRITICAL | ")
            && stdout.contains("Unable to start sniffer for interface: \"file\""),
        "{stdout}"
    );
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(
        fs::read_to_string(&log).unwrap_or_default(),
        "",
        "nothing before the configuration was read"
    );
}

/// Go's `flag` package exits 2 on a flag it does not know, ignores what follows the first
/// argument that is not a flag, and keeps the last of a repeated flag.
#[test]
fn command_line_errors_exit_2_stray_arguments_are_ignored_and_help_exits_0() {
    let out = run_metro(&["-cgf=/x.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unexpected argument '--cgf'"), "{err}");
    assert!(
        err.contains("metro's flags are -cfg, -log, -f, -st"),
        "{err}"
    );
    let dir = Scratch::new("flags");
    let log = dir.0.join("go-metro.log");
    let out = run_metro(&[
        "-f",
        "tcp port 22",
        "-cfg=/nonexistent.yaml",
        "-log",
        log.to_str().unwrap(),
    ]);
    #[cfg(not(feature = "libpcap"))]
    {
        assert_eq!(out.status.code(), Some(1));
        let text = fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("| CRITICAL | ")
                && text.contains("cannot compile filter expressions other than `tcp`")
                && text.contains("build metro with `--features libpcap`"),
            "{text}"
        );
    }
    #[cfg(feature = "libpcap")]
    assert_eq!(
        out.status.code(),
        Some(0),
        "a missing file after a good filter: {out:?}"
    );
    // The last -cfg wins; a stray argument ends the flags (-st is not read) and is logged.
    let bad = dir.file("bad.yaml", "instances:\n");
    let out = run_metro(&[
        "-cfg",
        bad.to_str().unwrap(),
        "-cfg=/nonexistent.yaml",
        "-log",
        log.to_str().unwrap(),
        "stray",
        "-st",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the last -cfg is the missing one: {out:?}"
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("argument \"stray\" ignored") && text.contains("argument \"-st\" ignored"),
        "{text}"
    );
    let out = run_metro(&["-help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for w in [
        "--cfg <PATH>",
        "--log <PATH>",
        "--f <EXPR>",
        "--st[=<BOOL>]",
        "--pcap <FILE>",
        "system.net.tcp.rtt.jitter",
        "/etc/dd-agent/checks.d/go-metro.yaml",
        "/var/log/datadog/go-metro.log",
    ] {
        assert!(help.contains(w), "help lacks {w:?}:\n{help}");
    }
}

#[test]
fn log_to_file_writes_go_metros_log_file() {
    let pcap = go_metro_capture("test_scp.pcap");
    let rx = Receiver::start();
    let dir = Scratch::new("logfile");
    let log = dir.0.join("logs/go-metro.log");
    let cfg = dir.file(
        "go-metro.yaml",
        &config(
            rx.port,
            "  log_to_file: yes\n",
            &format!(
                "  - interface: file\n    pcap: {}\n    ips: [162.243.251.92]\n",
                pcap.display()
            ),
        ),
    );
    let out = run_metro(&["-cfg", cfg.to_str().unwrap(), "-log", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains(" | INFO | (daemon.rs:"), "{text}");
    assert!(
        text.contains("Setting BPF filter: tcp and not host 127.0.0.1 and (host 162.243.251.92)"),
        "{text}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("| INFO |"));
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// A live instance that cannot capture (no CAP_NET_RAW: dropped from the bounding set when
/// root) is logged with go-metro's words and metro's way out, and metro exits 1, as go-metro. The gauges of a
/// live instance that can capture are checked in `gometro_live.rs`, in network namespaces.
#[test]
fn live_instance_without_cap_net_raw_says_how_to_grant_it() {
    let rx = Receiver::start();
    let dir = Scratch::new("live");
    let cfg = dir.file(
        "go-metro.yaml",
        &config(
            rx.port,
            "  report_interval: 0.5\n",
            "  - interface: lo\n    tags: [live:yes]\n    ips: [192.0.2.1]\n",
        ),
    );
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--inh-caps=-all", "--bounding-set=-net_raw", "--", METRO]);
        c
    } else {
        Command::new(METRO)
    };
    let child = cmd
        .args(["-cfg", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(10));
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("Unable to start sniffer for interface: \"lo\" (please check your configuration and privileges): capturing needs CAP_NET_RAW: run as root or `setcap cap_net_raw+ep "),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
