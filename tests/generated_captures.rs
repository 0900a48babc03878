//! Generated captures with exactly known RTTs (`scripts/synth.py` writes them into `testdata/`,
//! each with an `.expected.json` of the samples its construction implies). Every sample must
//! match to the nanosecond, with the same method; pair counts, extremes and sums must match;
//! frames cut too short, non-first fragments and bad or nested tunnels must be counted as
//! skipped, and segments found inside tunnels counted as encapsulated.

use std::path::PathBuf;

use serde_json::Value;

use metro::decode::Skip;
use metro::offline;
use metro::worker::{SampleRecord, WorkerConfig};

mod support;

fn expected_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(support::testdata(""))
        .expect("testdata/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 20,
        "expected the generated scenarios in testdata/, found {}",
        v.len()
    );
    v
}

fn sample_line(s: &SampleRecord) -> String {
    format!(
        "{} {}:{} -> {}:{} {} {}",
        s.ts_ns,
        s.src,
        s.sport,
        s.dst,
        s.dport,
        s.rtt_ns,
        s.method.name()
    )
}

fn expected_line(v: &Value) -> String {
    format!(
        "{} {}:{} -> {}:{} {} {}",
        v["ts_ns"].as_u64().unwrap(),
        v["src"].as_str().unwrap(),
        v["sport"].as_u64().unwrap(),
        v["dst"].as_str().unwrap(),
        v["dport"].as_u64().unwrap(),
        v["rtt_ns"].as_u64().unwrap(),
        v["method"].as_str().unwrap()
    )
}

fn check(workers: usize) {
    let mut failures = Vec::new();
    for exp_path in expected_files() {
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(&exp_path).unwrap()).unwrap();
        let capture = support::testdata("").join(exp["capture"].as_str().unwrap());
        let cfg = WorkerConfig {
            keep_samples: true,
            ..WorkerConfig::default()
        };
        let out = offline::run(&capture, workers, &cfg).expect("capture opens");
        assert!(
            out.error.is_none(),
            "{}: {:?}",
            capture.display(),
            out.error
        );
        let name = exp_path.file_name().unwrap().to_string_lossy().into_owned();

        let mut got: Vec<String> = out.samples.iter().map(sample_line).collect();
        let mut want: Vec<String> = exp["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(expected_line)
            .collect();
        if workers > 1 {
            got.sort();
            want.sort();
        }
        if got != want {
            let first = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            failures.push(format!(
                "{name}: {} samples, expected {}; first difference at #{first}:\n  got  {:?}\n  want {:?}",
                got.len(),
                want.len(),
                got.get(first),
                want.get(first)
            ));
            continue;
        }
        let merged = out.merged();
        let c = &merged.counters;
        assert_eq!(
            c.packets,
            exp["packets"].as_u64().unwrap(),
            "{name}: packets"
        );
        let trunc = exp
            .get("skipped_truncated")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let frag = exp
            .get("skipped_fragment")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        assert_eq!(
            c.skipped(Skip::Truncated),
            trunc,
            "{name}: truncated frames"
        );
        assert_eq!(c.skipped(Skip::Fragment), frag, "{name}: fragments");
        let count = |key: &str| exp.get(key).and_then(Value::as_u64).unwrap_or(0);
        assert_eq!(
            c.skipped(Skip::BadTunnel),
            count("skipped_tunnel_bad"),
            "{name}: bad tunnels"
        );
        assert_eq!(
            c.skipped(Skip::NestedTunnel),
            count("skipped_tunnel_nested"),
            "{name}: nested tunnels"
        );
        assert_eq!(
            c.encapsulated,
            count("encapsulated"),
            "{name}: encapsulated segments"
        );
        let pairs = merged.summaries();
        for p in exp["pairs"].as_array().unwrap() {
            let s = pairs
                .iter()
                .find(|s| {
                    s.src.to_string() == p["src"].as_str().unwrap()
                        && s.dst.to_string() == p["dst"].as_str().unwrap()
                })
                .unwrap_or_else(|| panic!("{name}: no pair {p}"));
            assert_eq!(s.samples, p["samples"].as_u64().unwrap(), "{name}: {p}");
            assert_eq!(s.min_ns, p["min_ns"].as_u64().unwrap(), "{name}: {p}");
            assert_eq!(s.max_ns, p["max_ns"].as_u64().unwrap(), "{name}: {p}");
            let avg = p["sum_ns"].as_u64().unwrap() as f64 / s.samples as f64;
            assert!(
                (s.avg_ns - avg).abs() < 1e-6 * avg,
                "{name}: avg {} vs {avg}",
                s.avg_ns
            );
            // Percentiles come from an HdrHistogram with 3 significant digits.
            assert!(
                s.min_ns <= s.p50_ns && s.p50_ns <= s.p99_ns && s.p99_ns <= s.max_ns,
                "{name}: {s:?}"
            );
        }
        assert_eq!(
            pairs.len(),
            exp["pairs"].as_array().unwrap().len(),
            "{name}: pair count"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_generated_capture_gives_exactly_its_samples() {
    check(1);
}

#[test]
fn four_workers_give_the_same_samples_as_one() {
    check(4);
}

#[test]
fn a_full_flow_table_evicts_and_counts_instead_of_growing() {
    let capture = support::testdata("").join("mix_small.pcap");
    let cfg = WorkerConfig {
        max_flows: 16,
        ..WorkerConfig::default()
    };
    let full = offline::run(&capture, 1, &WorkerConfig::default()).unwrap();
    let out = offline::run(&capture, 1, &cfg).unwrap();
    let (m, fm) = (out.merged(), full.merged());
    let (c, f) = (&m.counters, &fm.counters);
    assert_eq!(f.table.evicted, 0);
    assert!(c.table.evicted > 0, "{c:?}");
    assert!(c.active_flows <= 16, "{c:?}");
    assert_eq!(
        c.table.created - c.table.evicted - c.table.expired,
        c.active_flows
    );
    assert!(
        c.samples < f.samples,
        "evicted flows lose their state: {} vs {}",
        c.samples,
        f.samples
    );
}

#[test]
fn flows_expire_on_packet_time() {
    use metro::flow::Ttl;
    let capture = support::testdata("").join("reqresp_ts.pcap");
    let cfg = WorkerConfig {
        ttl: Ttl {
            idle_ns: 1_000,
            closed_ns: 1_000,
        },
        ..WorkerConfig::default()
    };
    let out = offline::run(&capture, 1, &cfg).unwrap();
    let merged = out.merged();
    let c = &merged.counters;
    assert!(c.table.expired > 0, "{c:?}");
    assert!(
        c.table.created > 1,
        "an expired flow's next packet starts a new one: {c:?}"
    );
}
