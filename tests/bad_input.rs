//! Bad input never panics and never hangs: tcpdump's test corpus (many of its captures are made
//! to crash dissectors), deterministic mutations of our own captures, and the command line's
//! handling of files that are not captures or break off part-way.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::testdata;

use metro::capture::file::FileSource;
use metro::offline;
use metro::worker::WorkerConfig;

fn corpus_dir() -> PathBuf {
    let p = testdata("tcpdump");
    assert!(
        p.is_dir(),
        "{} is missing: the repository carries tcpdump's test captures there",
        p.display()
    );
    p
}

/// Runs `f` on its own thread; fails the test if it panics or takes longer than `limit`.
fn bounded<T: Send + 'static>(
    what: String,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            h.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {limit:?} (a hang)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

#[test]
fn every_tcpdump_corpus_capture_reads_without_panic_or_hang() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(
        files.len() == 409,
        "expected the 409 corpus captures, found {}",
        files.len()
    );
    let (mut read, mut refused, mut broken, mut packets) = (0, 0, 0, 0u64);
    for f in files {
        let name = f.display().to_string();
        for workers in [1usize, 2] {
            let f = f.clone();
            let r = bounded(name.clone(), Duration::from_secs(20), move || {
                offline::run(
                    &f,
                    workers,
                    &WorkerConfig {
                        keep_samples: true,
                        ..Default::default()
                    },
                )
                .map(|o| (o.plan().counters.packets, o.error.is_some()))
            });
            if workers == 2 {
                continue;
            }
            match r {
                Ok((n, false)) => {
                    read += 1;
                    packets += n;
                }
                Ok((n, true)) => {
                    broken += 1;
                    packets += n;
                }
                Err(_) => refused += 1,
            }
        }
    }
    println!(
        "corpus: {read} read whole, {broken} broken part-way, {refused} refused, {packets} packets"
    );
    assert!(
        read > 300,
        "most corpus files are valid captures: {read} read"
    );
    assert!(packets > 5_000, "{packets} packets");
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutated_captures_never_panic() {
    let dir = testdata("");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    let mut runs = 0;
    for name in [
        "tso.pcap",
        "ipv6_ext.pcap",
        "ns_pcapng.pcapng",
        "sll2.pcap",
        "qinq.pcap",
        "snaplen.pcap",
        "null_loopback.pcap",
        "loss_ts.pcap",
        "vxlan.pcap",
        "gre.pcap",
        "mpls.pcap",
        "tunnel_bad.pcap",
    ] {
        let orig = std::fs::read(dir.join(name)).unwrap();
        for _ in 0..150 {
            let mut b = orig.clone();
            match rng.next() % 4 {
                // Flip a few bytes anywhere.
                0 | 1 => {
                    for _ in 0..1 + rng.next() % 8 {
                        let i = (rng.next() as usize) % b.len();
                        b[i] ^= 1 << (rng.next() % 8);
                    }
                }
                // Cut the file short.
                2 => b.truncate((rng.next() as usize) % b.len()),
                // Overwrite a run with 0xff (huge lengths, bad versions).
                _ => {
                    let i = (rng.next() as usize) % b.len();
                    let n = (1 + rng.next() % 16) as usize;
                    for x in b.iter_mut().skip(i).take(n) {
                        *x = 0xff;
                    }
                }
            }
            let what = format!("{name} mutation #{runs}");
            bounded(what, Duration::from_secs(10), move || {
                let mut w = metro::worker::Worker::new(0, &WorkerConfig::default());
                if let Ok(mut src) =
                    FileSource::from_reader(Path::new("mutated"), std::io::Cursor::new(b))
                {
                    let _ = src.for_each(|link, f| w.handle(link, f));
                }
                w.take_interval(Default::default()).counters.packets
            });
            runs += 1;
        }
    }
    println!("{runs} mutated captures in {:?}", start.elapsed());
}

fn metro(args: &[&str]) -> (i32, String, String) {
    let out = support::metro(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_file_that_is_not_a_capture_is_refused_with_status_2() {
    let (code, _, err) = metro(&["--pcap", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a pcap or pcapng capture"), "{err}");
}

#[test]
fn a_missing_file_is_refused_with_status_2() {
    let (code, _, err) = metro(&["--pcap", "/nonexistent/trace.pcap"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/trace.pcap"), "{err}");
}

#[test]
fn a_capture_cut_mid_record_reports_what_was_read_and_exits_2() {
    let src = testdata("bulk_delack.pcap");
    let mut b = std::fs::read(src).unwrap();
    b.truncate(b.len() - 7);
    let tmp = std::env::temp_dir().join(format!("metro-cut-{}.pcap", std::process::id()));
    std::fs::write(&tmp, b).unwrap();
    let (code, out, err) = metro(&["--pcap", tmp.to_str().unwrap(), "--format", "json"]);
    std::fs::remove_file(&tmp).ok();
    assert_eq!(code, 2);
    assert!(err.contains("ends in the middle of a record"), "{err}");
    let counters = out
        .lines()
        .find(|l| l.contains("\"type\":\"counters\""))
        .expect("counters still printed");
    assert!(counters.contains("\"packets\":"), "{counters}");
    assert!(
        out.contains("\"type\":\"pair\""),
        "pairs of what was read are printed: {out}"
    );
}

#[test]
fn unknown_flag_is_a_command_line_error() {
    let (code, _, err) = metro(&["--pcap", "x", "--frobnicate"]);
    assert_eq!(
        code, 2,
        "a command line that cannot be parsed exits 2, as clap and Go's flag do"
    );
    assert!(err.contains("--frobnicate"), "{err}");
}
