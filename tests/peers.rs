//! go-metro's own captures, checked against the peer tools that define the truth for them.
//!
//! - `test_scp.pcap`: towards the server, tshark and tcptrace find 145 samples; metro must find
//!   at least as many, and where tshark and metro both time the same ACK they must agree to
//!   ±1 µs. tshark and tcptrace run for real (CI installs them).
//! - `test_tcp.pcap`: the three samples towards the web server that tshark finds, exactly.
//! - tcpdump's `geneve.pcap` (an SSH session inside Geneve): the 22 samples of tshark's
//!   `tcp.analysis.ack_rtt`, each at the same ACK and equal to ±1 µs.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use metro::offline;
use metro::worker::{SampleRecord, WorkerConfig};

mod support;
use support::go_metro_capture;

fn samples(path: &Path) -> Vec<SampleRecord> {
    let cfg = WorkerConfig {
        keep_samples: true,
        ..WorkerConfig::default()
    };
    let out = offline::run(path, 1, &cfg).expect("fixture opens");
    assert!(out.error.is_none(), "{:?}", out.error);
    out.samples
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {cmd} ({e}): install it with `apt-get install -y {cmd}` (.ci/run does)")
    });
    assert!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// "1454455868.759660000" → ns, exactly (no floating point).
fn epoch_ns(s: &str) -> u64 {
    let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<9}");
    sec.parse::<u64>().unwrap() * 1_000_000_000 + frac[..9].parse::<u64>().unwrap()
}

const SCP_SERVER: &str = "162.243.251.92";

#[test]
fn scp_capture_matches_tshark_and_tcptrace_towards_the_server() {
    let path = go_metro_capture("test_scp.pcap");
    let ours: Vec<_> = samples(&path)
        .into_iter()
        .filter(|s| s.dst.to_string() == SCP_SERVER)
        .collect();

    let tshark = tool(
        "tshark",
        &[
            "-r",
            path.to_str().unwrap(),
            "-Y",
            &format!("tcp.analysis.ack_rtt && ip.src=={SCP_SERVER}"),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.analysis.ack_rtt",
        ],
    );
    let theirs: Vec<(u64, u64)> = tshark
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            (epoch_ns(f.next().unwrap()), epoch_ns(f.next().unwrap()))
        })
        .collect();
    assert_eq!(
        theirs.len(),
        145,
        "tshark's sample count for this capture is known"
    );

    let tcptrace = tool("tcptrace", &["-lr", path.to_str().unwrap()]);
    let line = tcptrace
        .lines()
        .find(|l| l.contains("RTT samples:"))
        .expect("tcptrace -lr prints RTT samples");
    let a2b: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(a2b, 145, "tcptrace's sample count towards the server");

    assert!(
        ours.len() >= 145,
        "metro found {} samples towards the server, peers find 145",
        ours.len()
    );
    // ACKs are matched by capture time; several ACKs can share one timestamp, so those are
    // paired in capture order.
    let mut by_ack: HashMap<u64, Vec<u64>> = HashMap::new();
    for s in &ours {
        by_ack.entry(s.ts_ns).or_default().push(s.rtt_ns);
    }
    let mut used: HashMap<u64, usize> = HashMap::new();
    let mut common = 0;
    for (ack_ts, rtt) in &theirs {
        let k = used.entry(*ack_ts).or_default();
        if let Some(ours) = by_ack.get(ack_ts).and_then(|v| v.get(*k)) {
            *k += 1;
            common += 1;
            assert!(
                ours.abs_diff(*rtt) <= 1_000,
                "ACK at {ack_ts}: metro {ours} ns, tshark {rtt} ns"
            );
        }
    }
    assert_eq!(common, 145, "metro times every ACK that tshark times");
}

#[test]
fn http_capture_gives_the_three_samples_tshark_finds() {
    let got: Vec<u64> = samples(&go_metro_capture("test_tcp.pcap"))
        .into_iter()
        .filter(|s| s.dst.to_string() == "107.6.106.82")
        .map(|s| s.rtt_ns)
        .collect();
    assert_eq!(got, vec![74_599_000, 72_322_000, 74_253_000]);
}

#[test]
fn geneve_capture_gives_the_samples_tshark_finds_inside_the_tunnel() {
    let path = support::testdata("tcpdump/geneve.pcap");
    let out = tool(
        "tshark",
        &[
            "-r",
            path.to_str().unwrap(),
            "-Y",
            "tcp.analysis.ack_rtt",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.analysis.ack_rtt",
        ],
    );
    let want: Vec<(u64, u64)> = out
        .lines()
        .map(|l| {
            let (t, rtt) = l.split_once('\t').unwrap();
            (epoch_ns(t), epoch_ns(rtt))
        })
        .collect();
    assert_eq!(want.len(), 22, "tshark's samples: {out}");
    let got: Vec<(u64, u64)> = samples(&path).iter().map(|s| (s.ts_ns, s.rtt_ns)).collect();
    assert_eq!(got.len(), want.len(), "metro {got:?}\ntshark {want:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "the same ACK");
        assert!(g.1.abs_diff(w.1) <= 1_000, "metro {g:?} tshark {w:?}");
    }
}
