//! `--by flow` on generated captures: one line per TCP connection with exact bytes,
//! retransmitted bytes, sample counts and handshake RTTs, as `scripts/synth.py` builds the
//! captures (and as tshark counts them: `tcp.len` per direction, and the segments it flags
//! `tcp.analysis.retransmission` or `out_of_order`); the pair lines then carry `retrans_bytes`;
//! 1 and 4 workers agree.

use serde_json::Value;

mod support;
use support::{metro, testdata};

/// `metro --pcap testdata/NAME --by flow [--workers N]`, as JSON values.
fn run(name: &str, workers: &str) -> Vec<Value> {
    let path = testdata(name);
    let out = metro(&[
        "--pcap",
        path.to_str().unwrap(),
        "--by",
        "flow",
        "--workers",
        workers,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (client, cport, server, sport, bytes c→s, s→c, resent c→s, s→c, samples, syn ms, synack ms)
type Conn = (
    &'static str,
    u64,
    &'static str,
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    Option<f64>,
    Option<f64>,
);

fn check(name: &str, want: &[Conn], pairs: &[(&str, &str, u64)]) {
    for workers in ["1", "4"] {
        let lines = run(name, workers);
        let conns: Vec<&Value> = lines.iter().filter(|v| v["type"] == "connection").collect();
        let got: Vec<Conn> = conns
            .iter()
            .zip(want)
            .map(|(c, w)| {
                (
                    w.0,
                    c["cport"].as_u64().unwrap(),
                    w.2,
                    c["sport"].as_u64().unwrap(),
                    c["bytes_c2s"].as_u64().unwrap(),
                    c["bytes_s2c"].as_u64().unwrap(),
                    c["retrans_bytes_c2s"].as_u64().unwrap(),
                    c["retrans_bytes_s2c"].as_u64().unwrap(),
                    c["samples"].as_u64().unwrap(),
                    c["syn_ms"].as_f64(),
                    c["synack_ms"].as_f64(),
                )
            })
            .collect();
        assert_eq!(
            conns.len(),
            want.len(),
            "{name}, {workers} workers: {conns:#?}"
        );
        assert_eq!(got, want, "{name}, {workers} workers");
        for (c, w) in conns.iter().zip(want) {
            assert_eq!(
                (c["client"].as_str(), c["server"].as_str()),
                (Some(w.0), Some(w.2))
            );
        }
        // Every reported sample is in one connection and one pair.
        let in_conns: u64 = conns.iter().map(|c| c["samples"].as_u64().unwrap()).sum();
        let in_pairs: u64 = lines
            .iter()
            .filter(|v| v["type"] == "pair")
            .map(|v| v["samples"].as_u64().unwrap())
            .sum();
        assert_eq!(in_conns, in_pairs, "{name}");
        for &(src, dst, resent) in pairs {
            let p = lines
                .iter()
                .find(|v| v["type"] == "pair" && v["src"] == src && v["dst"] == dst)
                .unwrap_or_else(|| panic!("{name}: no pair {src} → {dst}"));
            assert_eq!(p["retrans_bytes"], resent, "{name}: {p}");
        }
    }
}

/// Three HTTPS connections to one server, each with one resent segment (1448, 896 and 1448
/// bytes), and one to a database whose SYN was resent (so the SYN gives no sample, Karn).
#[test]
fn loss_ts_connections_count_their_bytes_resends_and_handshakes() {
    check(
        "loss_ts.pcap",
        &[
            (
                "203.0.113.50",
                41001,
                "198.51.100.20",
                443,
                211,
                21720,
                0,
                1448,
                11,
                Some(0.053),
                Some(31.337),
            ),
            (
                "203.0.113.51",
                41002,
                "198.51.100.20",
                443,
                528,
                4688,
                0,
                896,
                9,
                Some(0.053),
                Some(31.337),
            ),
            (
                "198.51.100.20",
                40001,
                "203.0.113.5",
                5432,
                97,
                311,
                0,
                0,
                6,
                None,
                Some(0.029),
            ),
            (
                "198.51.100.77",
                41003,
                "198.51.100.20",
                443,
                99,
                14480,
                0,
                1448,
                8,
                Some(0.053),
                Some(0.213),
            ),
        ],
        &[
            ("198.51.100.20", "203.0.113.50", 1448),
            ("198.51.100.20", "203.0.113.51", 896),
            ("198.51.100.20", "198.51.100.77", 1448),
            ("203.0.113.5", "198.51.100.20", 0),
        ],
    );
}

/// Two segments delivered late are bytes below the highest sent: counted as resent-or-late.
#[test]
fn reorder_counts_late_segments_as_resent_bytes() {
    check(
        "reorder.pcap",
        &[(
            "192.0.2.10",
            50500,
            "198.51.100.20",
            8080,
            120,
            23168,
            0,
            2896,
            17,
            Some(19.001),
            Some(3.217),
        )],
        &[],
    );
}

/// Without `--by flow` nothing changes: no connection lines, no `retrans_bytes`.
#[test]
fn pair_lines_are_unchanged_without_by_flow() {
    let path = testdata("loss_ts.pcap");
    let out = metro(&["--pcap", path.to_str().unwrap(), "--format", "json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("\"connection\"") && !text.contains("retrans_bytes"),
        "{text}"
    );
}
