//! Per-service series (`--by port`, `group_by: [src, dst, port]`) end to end, on
//! `testdata/ports.pcap`: one client and one server on four ports with exactly known RTTs
//! (`scripts/synth.py` writes the capture and, in its `.expected.json`, each port's samples,
//! extremes and sum). Each port's line must carry exactly those; past `--max-ports` the
//! pair's other ports must fold into its `other` port, counted; in go-metro mode the gauges
//! must carry a `port:` tag after go-metro's tags, checked on a real UDP socket.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod support;
use support::{statsd, testdata, Scratch, METRO};

/// The expected (src, dst, port) aggregates: (src, dst, port, samples, min_ns, max_ns, sum_ns).
fn expected_ports() -> Vec<(String, String, String, u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(testdata("ports.expected.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap();
            (
                p["src"].as_str().unwrap().to_string(),
                p["dst"].as_str().unwrap().to_string(),
                n("port").to_string(),
                n("samples"),
                n("min_ns"),
                n("max_ns"),
                n("sum_ns"),
            )
        })
        .collect()
}

/// metro's JSON lines for the capture, with `args`.
fn run(args: &[&str]) -> Vec<Value> {
    let pcap = testdata("ports.pcap");
    let out = Command::new(METRO)
        .args(["--pcap", pcap.to_str().unwrap(), "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A pair line as (src, dst, port, samples, min_ms, max_ms, avg_ms).
fn pair_lines(lines: &[Value]) -> Vec<(String, String, String, u64, f64, f64, f64)> {
    lines
        .iter()
        .filter(|v| v["type"] == "pair")
        .map(|v| {
            let port = match &v["port"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => panic!("port is {other:?} in {v}"),
            };
            (
                v["src"].as_str().unwrap().to_string(),
                v["dst"].as_str().unwrap().to_string(),
                port,
                v["samples"].as_u64().unwrap(),
                v["min_ms"].as_f64().unwrap(),
                v["max_ms"].as_f64().unwrap(),
                v["avg_ms"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// What metro prints for a series of these aggregates.
fn printed(
    (src, dst, port, n, min, max, sum): (String, String, String, u64, u64, u64, u64),
) -> (String, String, String, u64, f64, f64, f64) {
    let ms = |v: f64| format!("{:.6}", v / 1e6).parse::<f64>().unwrap();
    (
        src,
        dst,
        port,
        n,
        ms(min as f64),
        ms(max as f64),
        ms(sum as f64 / n as f64),
    )
}

#[test]
fn each_server_port_has_its_own_exact_series() {
    let want: Vec<_> = expected_ports().into_iter().map(printed).collect();
    // Ports in numeric order within a host pair; 50000 is the server's (the SYN went there)
    // although the client's 40000 is smaller, and 8080's flow has no handshake.
    let ports: Vec<&str> = want.iter().map(|w| w.2.as_str()).collect();
    assert_eq!(
        ports,
        ["443", "5432", "8080", "50000", "443", "5432", "8080", "50000"]
    );
    for workers in ["1", "2"] {
        let lines = run(&["--by", "port", "--workers", workers]);
        assert_eq!(pair_lines(&lines), want, "{workers} workers");
        let c = lines.iter().find(|v| v["type"] == "counters").unwrap();
        assert_eq!(c["samples"], 34);
        assert!(c.get("port_overflow_samples").is_none(), "{c}");
    }
    // Without --by port the same capture has one line per host pair, and no port field.
    let lines = run(&[]);
    let pairs: Vec<&Value> = lines.iter().filter(|v| v["type"] == "pair").collect();
    assert_eq!(pairs.len(), 2);
    assert!(pairs.iter().all(|p| p.get("port").is_none()));
}

#[test]
fn ports_past_the_cap_fold_into_the_pairs_other_port_counted() {
    let all = expected_ports();
    for workers in ["1", "2"] {
        let lines = run(&["--by", "port", "--max-ports", "2", "--workers", workers]);
        let mut want = Vec::new();
        for hosts in all.chunks(4) {
            // 443 and 5432 are the busiest (6 and 5 samples a half); 8080 and 50000 fold.
            want.push(printed(hosts[0].clone()));
            want.push(printed(hosts[1].clone()));
            let (a, b) = (&hosts[2], &hosts[3]);
            want.push(printed((
                a.0.clone(),
                a.1.clone(),
                "other".into(),
                a.3 + b.3,
                a.4.min(b.4),
                a.5.max(b.5),
                a.6 + b.6,
            )));
        }
        assert_eq!(pair_lines(&lines), want, "{workers} workers");
        let c = lines.iter().find(|v| v["type"] == "counters").unwrap();
        assert_eq!(c["port_overflow_samples"], 12, "{c}");
        assert!(c.get("overflow_samples").is_none(), "{c}");
    }
    // The table has a port column, and says how many samples went to `other` ports.
    let out = Command::new(METRO)
        .args(["--pcap", testdata("ports.pcap").to_str().unwrap()])
        .args(["--by", "port", "--max-ports", "2"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("src              dst               port   samples"),
        "{table}"
    );
    assert!(
        rows[1].starts_with("192.0.2.10       198.51.100.20      443         6"),
        "{table}"
    );
    assert!(
        rows[3].starts_with("192.0.2.10       198.51.100.20    other         6"),
        "{table}"
    );
    assert!(
        table.contains("port other: 12 samples of ports beyond max_ports"),
        "{table}"
    );
}

#[test]
fn go_metro_gauges_carry_a_port_tag_after_go_metros_tags() {
    let rx = statsd::Receiver::start();
    let dir = Scratch::new("byport");
    let cfg = dir.file(
        "go-metro.yaml",
        &format!(
            "init_config:\n  statsd_ip: 127.0.0.1\n  statsd_port: {}\n  self_metrics: yes\n  require_whitelist: false\n  group_by: [src, dst, port]\n  max_ports: 2\ninstances:\n  - interface: file\n    pcap: {}\n    tags: [env:test]\n",
            rx.port,
            testdata("ports.pcap").display()
        ),
    );
    let out = Command::new(METRO)
        .arg(format!("-cfg={}", cfg.display()))
        .arg(format!("-log={}", dir.path("metro.log").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let m = rx.wait_for(
        |m| m.iter().any(|m| m.name == "metro.statsd.errors"),
        Duration::from_secs(5),
    );
    let medians: Vec<(Vec<String>, f64)> = m
        .iter()
        .filter(|m| m.name == "system.net.tcp.rtt")
        .map(|m| (m.tags.clone(), m.value))
        .collect();
    let tags = |src: &str, dst: &str, port: &str| -> Vec<String> {
        vec![
            format!("src:{src}"),
            format!("dst:{dst}"),
            "env:test".into(),
            "iface:file".into(),
            format!("port:{port}"),
        ]
    };
    let (c, s) = ("192.0.2.10", "198.51.100.20");
    let got: Vec<Vec<String>> = medians.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(
        got,
        vec![
            tags(c, s, "443"),
            tags(c, s, "5432"),
            tags(c, s, "other"),
            tags(s, c, "443"),
            tags(s, c, "5432"),
            tags(s, c, "other"),
        ]
    );
    // The server stack's RTT per port is exact (41 us on 443, 42 us on 5432).
    assert_eq!(medians[3].1, 0.041);
    assert_eq!(medians[4].1, 0.042);
    let overflow: Vec<f64> = m
        .iter()
        .filter(|m| m.name == "metro.ports.overflow")
        .map(|m| m.value)
        .collect();
    assert_eq!(overflow, vec![12.0]);
}
