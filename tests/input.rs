//! `--pcap` as people have captures: standard input, gzip and zstd files, and several files read
//! as one capture in time order. Every way must give the very output of the plain file (JSON
//! with every sample, 1 and 2 workers), and bad input a message that says what to do.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

mod support;
use support::{testdata, Scratch, METRO};

/// metro's output (stdout), exit status and stderr for `args`, with `stdin` piped in.
fn metro(args: &[&str], stdin: Option<&[u8]>) -> (String, i32, String) {
    let mut child = Command::new(METRO)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        // Written from a thread so that a large capture cannot fill both pipes at once.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(pcaps: &[&Path], workers: &str, stdin: Option<&[u8]>) -> String {
    let mut args = Vec::new();
    for p in pcaps {
        args.push("--pcap");
        args.push(p.to_str().unwrap());
    }
    args.extend(["--format", "json", "--samples", "--workers", workers]);
    let (out, code, err) = metro(&args, stdin);
    assert_eq!(code, 0, "{err}");
    out
}

/// The records of a classic pcap file: its 24-byte header and each record's bytes.
fn records(pcap: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let head = pcap[..24].to_vec();
    let mut out = Vec::new();
    let mut i = 24;
    while i < pcap.len() {
        let caplen = u32::from_le_bytes(pcap[i + 8..i + 12].try_into().unwrap()) as usize;
        out.push(pcap[i..i + 16 + caplen].to_vec());
        i += 16 + caplen;
    }
    (head, out)
}

#[test]
fn standard_input_gives_the_output_of_the_file() {
    let f = testdata("mix_small.pcap");
    let bytes = std::fs::read(&f).unwrap();
    for workers in ["1", "2"] {
        assert_eq!(
            json(&[Path::new("-")], workers, Some(&bytes)),
            json(&[&f], workers, None)
        );
    }
}

#[test]
fn gzip_and_zstd_captures_give_the_output_of_the_plain_file() {
    let dir = Scratch::new("input-compressed");
    for name in ["mix_small.pcap", "ns_pcapng.pcapng", "gre.pcap"] {
        let f = testdata(name);
        let bytes = std::fs::read(&f).unwrap();
        let gz = dir.join(format!("{name}.gz"));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        // Two zstd frames back to back, as `zstd a b > c` writes: both must be read.
        let zst = dir.join(format!("{name}.zst"));
        let half = bytes.len() / 2;
        let mut z = ruzstd::encoding::compress_to_vec(
            &bytes[..half],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        z.extend(ruzstd::encoding::compress_to_vec(
            &bytes[half..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        std::fs::write(&zst, z).unwrap();
        for workers in ["1", "2"] {
            let plain = json(&[&f], workers, None);
            assert_eq!(json(&[&gz], workers, None), plain, "{name}.gz");
            assert_eq!(json(&[&zst], workers, None), plain, "{name}.zst");
        }
        let gz_bytes = std::fs::read(&gz).unwrap();
        assert_eq!(
            json(&[Path::new("-")], "1", Some(&gz_bytes)),
            json(&[&f], "1", None),
            "{name}.gz on standard input"
        );
    }
}

#[test]
fn a_capture_split_into_files_gives_the_output_of_the_whole() {
    let dir = Scratch::new("input-split");
    let f = testdata("mix_small.pcap");
    let (head, recs) = records(&std::fs::read(&f).unwrap());
    // Rotated files (consecutive runs), and files whose frames interleave in time (every
    // other frame), which only a merge by timestamp puts back in order.
    let write = |name: &str, pick: &dyn Fn(usize) -> bool| {
        let mut b = head.clone();
        for (i, r) in recs.iter().enumerate() {
            if pick(i) {
                b.extend_from_slice(r);
            }
        }
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let third = recs.len() / 3;
    let r0 = write("rot-0.pcap", &|i| i < third);
    let r1 = write("rot-1.pcap", &|i| (third..2 * third).contains(&i));
    let r2 = write("rot-2.pcap", &|i| i >= 2 * third);
    for workers in ["1", "2"] {
        let whole = json(&[&f], workers, None);
        assert_eq!(json(&[&r0, &r1, &r2], workers, None), whole, "rotated");
        assert_eq!(
            json(&[&r2, &r0, &r1], workers, None),
            whole,
            "named out of order"
        );
        let glob = dir.join("rot-*.pcap");
        assert_eq!(json(&[&glob], workers, None), whole, "a glob");
    }
    // Interleaved in time: a capture without two frames at one time, so that the order is
    // the capture's whatever the order of ties.
    let f = testdata("bulk_delack.pcap");
    let (head, recs) = records(&std::fs::read(&f).unwrap());
    let write = |name: &str, rest: usize| {
        let mut b = head.clone();
        for r in recs.iter().skip(rest).step_by(2) {
            b.extend_from_slice(r);
        }
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let even = write("even.pcap", 0);
    let odd = write("odd.pcap", 1);
    for workers in ["1", "2"] {
        let whole = json(&[&f], workers, None);
        assert_eq!(json(&[&odd, &even], workers, None), whole, "interleaved");
    }
    // A file on its own reads only its frames: the split is real.
    assert_ne!(json(&[&even], "1", None), json(&[&f], "1", None));
}

#[test]
fn bad_input_says_what_to_do() {
    let dir = Scratch::new("input-bad");
    let not_capture = dir.join("text.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&[b'x'; 4096]).unwrap();
    std::fs::write(&not_capture, enc.finish().unwrap()).unwrap();
    let (_, code, err) = metro(&["--pcap", not_capture.to_str().unwrap()], None);
    assert_eq!(code, 2);
    assert!(
        err.contains("not a pcap or pcapng capture (unrecognised header after gzip decompression)"),
        "{err}"
    );
    // A gzip stream cut short: what was read is reported, and the damage named.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&std::fs::read(testdata("mix_small.pcap")).unwrap())
        .unwrap();
    let gz = enc.finish().unwrap();
    let cut = dir.join("cut.pcap.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let (out, code, err) = metro(&["--pcap", cut.to_str().unwrap(), "--format", "json"], None);
    assert_eq!(code, 2, "{err}");
    assert!(out.contains("\"type\":\"counters\""), "{out}");
    assert!(err.contains("gzip"), "{err}");
    let (_, code, err) = metro(
        &["--pcap", dir.join("nothing-*.pcap").to_str().unwrap()],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("no file matches"), "{err}");
    let (_, code, err) = metro(&["--pcap", "-", "--pcap", "-"], Some(b""));
    assert_eq!(code, 2);
    assert!(
        err.contains("standard input (`-`) can be read only once"),
        "{err}"
    );
    let (_, code, err) = metro(&["--pcap", "-"], Some(b""));
    assert_eq!(code, 2);
    assert!(err.contains("standard input is empty"), "{err}");
}
