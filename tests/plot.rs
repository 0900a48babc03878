//! `--plot`: the page is read back and checked against generated captures whose samples are
//! known exactly (`testdata/*.expected.json`). Every dot must be where its sample belongs on the
//! panel's own axes (read from the tick labels drawn on the page), one dot per sample, in its
//! method's colour; the CDF's p50 mark must sit at the pair's median. Bad cases: a capture
//! without samples gives a page that says so, an unwritable path fails before anything is read,
//! and a PNG is a whole PNG of the page's size.

use std::collections::HashMap;

use serde_json::Value;

use metro::report::plot::{page_size, PAGE_WIDTH};

mod support;
use support::{metro, testdata, Scratch};

/// One SVG element: its tag, attributes and (for `<text>`) its text.
#[derive(Debug)]
struct Elem {
    tag: String,
    attrs: HashMap<String, String>,
    text: String,
}

impl Elem {
    fn num(&self, name: &str) -> f64 {
        self.attrs[name].parse().unwrap()
    }
}

/// The elements of an SVG as plotters writes it (one tag a line; a text's content on its own
/// line), with `&amp;`-style escapes left alone (no test text needs them).
fn parse_svg(svg: &str) -> Vec<Elem> {
    let mut out: Vec<Elem> = Vec::new();
    let mut in_text = false;
    for line in svg.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix('<') {
            if rest.starts_with('/') {
                in_text = false;
                continue;
            }
            let tag: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            let mut attrs = HashMap::new();
            let mut s = &rest[tag.len()..];
            while let Some(eq) = s.find("=\"") {
                let name = s[..eq].trim().to_string();
                let after = &s[eq + 2..];
                let end = after.find('"').unwrap();
                attrs.insert(name, after[..end].to_string());
                s = &after[end + 1..];
            }
            in_text = tag == "text";
            out.push(Elem {
                tag,
                attrs,
                text: String::new(),
            });
        } else if in_text {
            let e = out.last_mut().unwrap();
            e.text.push_str(l);
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn holds(&self, x: f64, y: f64) -> bool {
        x >= self.x && x < self.x + self.w && y >= self.y && y < self.y + self.h
    }
}

/// How far a mark may lie from where its value maps: plotters rounds every coordinate, the tick
/// labels' (from which the axes are read) and the marks' alike, to whole pixels.
const PX: f64 = 1.5;

/// A linear map value → pixel, fitted through the lowest and highest tick label.
#[derive(Debug, Clone, Copy)]
struct Axis {
    offset: f64,
    scale: f64,
}

impl Axis {
    fn fit(ticks: &[(f64, f64)]) -> Axis {
        assert!(ticks.len() >= 2, "an axis needs two labels: {ticks:?}");
        let lo = ticks.iter().min_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
        let hi = ticks.iter().max_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
        let scale = (hi.1 - lo.1) / (hi.0 - lo.0);
        Axis {
            offset: lo.1 - lo.0 * scale,
            scale,
        }
    }

    fn px(&self, v: f64) -> f64 {
        self.offset + v * self.scale
    }
}

/// One panel: its plotting area, axes (from its tick labels) and caption.
#[derive(Debug)]
struct Panel {
    area: Rect,
    x: Axis,
    y: Axis,
    caption: String,
}

fn panels(elems: &[Elem]) -> Vec<Panel> {
    let texts: Vec<&Elem> = elems.iter().filter(|e| e.tag == "text").collect();
    elems
        .iter()
        .filter(|e| e.tag == "rect" && e.attrs.get("fill").map(String::as_str) == Some("#FAFAFA"))
        .map(|e| {
            let area = Rect {
                x: e.num("x"),
                y: e.num("y"),
                w: e.num("width"),
                h: e.num("height"),
            };
            let value = |t: &Elem| t.text.parse::<f64>().ok();
            // x labels: centred under the area; y labels: right-aligned left of it.
            let xs: Vec<(f64, f64)> = texts
                .iter()
                .filter(|t| t.attrs["text-anchor"] == "middle")
                .filter(|t| {
                    let (x, y) = (t.num("x"), t.num("y"));
                    y > area.y + area.h
                        && y < area.y + area.h + 20.0
                        && x >= area.x - 1.0
                        && x <= area.x + area.w + 1.0
                })
                .filter_map(|t| Some((value(t)?, t.num("x"))))
                .collect();
            let ys: Vec<(f64, f64)> = texts
                .iter()
                .filter(|t| t.attrs["text-anchor"] == "end")
                .filter(|t| {
                    let (x, y) = (t.num("x"), t.num("y"));
                    x < area.x
                        && x > area.x - 40.0
                        && y >= area.y - 1.0
                        && y <= area.y + area.h + 1.0
                })
                .filter_map(|t| Some((value(t)?, t.num("y"))))
                .collect();
            let caption = texts
                .iter()
                .filter(|t| {
                    let y = t.num("y");
                    y < area.y
                        && y > area.y - 40.0
                        && t.num("x") > area.x
                        && t.num("x") < area.x + area.w
                })
                .map(|t| t.text.clone())
                .next_back()
                .unwrap_or_default();
            Panel {
                area,
                x: Axis::fit(&xs),
                y: Axis::fit(&ys),
                caption,
            }
        })
        .collect()
}

struct Sample {
    ts_ns: u64,
    rtt_ns: u64,
    method: String,
}

/// The expected samples of a generated capture, per "src → dst".
fn expected(capture: &str) -> HashMap<String, Vec<Sample>> {
    let name = capture.rsplit_once('.').unwrap().0;
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(testdata(&format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    let mut by_pair: HashMap<String, Vec<Sample>> = HashMap::new();
    for s in v["samples"].as_array().unwrap() {
        let key = format!(
            "{} → {}",
            s["src"].as_str().unwrap(),
            s["dst"].as_str().unwrap()
        );
        by_pair.entry(key).or_default().push(Sample {
            ts_ns: s["ts_ns"].as_u64().unwrap(),
            rtt_ns: s["rtt_ns"].as_u64().unwrap(),
            method: s["method"].as_str().unwrap().to_string(),
        });
    }
    by_pair
}

fn method_of_fill(fill: &str) -> &'static str {
    match fill {
        "#1F77B4" => "seq",
        "#2CA02C" => "syn",
        "#D62728" => "ts",
        other => panic!("a dot of unknown colour {other}"),
    }
}

/// Plots `capture` with `extra` flags and checks every panel against the known samples; returns
/// how many pairs were drawn.
fn check_capture(capture: &str, extra: &[&str]) -> usize {
    let dir = Scratch::new(&format!("plot-{capture}{}", extra.join("")));
    let out = dir.join("page.svg");
    let pcap = testdata(capture);
    let mut args = vec![
        "--pcap",
        pcap.to_str().unwrap(),
        "--plot",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = metro(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.trim_end().ends_with("</svg>"), "a whole SVG");
    let elems = parse_svg(&svg);
    let all = panels(&elems);
    let (scatters, cdfs): (Vec<&Panel>, Vec<&Panel>) =
        all.iter().partition(|p| p.area.x < PAGE_WIDTH as f64 / 2.0);
    assert_eq!(scatters.len(), cdfs.len());
    let want = expected(capture);

    // The pairs shown are the busiest: their counts are the highest counts of the capture.
    let mut counts: Vec<usize> = want.values().map(Vec::len).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let names: Vec<String> = scatters
        .iter()
        .map(|p| p.caption.split(" · ").next().unwrap().to_string())
        .collect();
    let mut shown: Vec<usize> = names.iter().map(|n| want[n].len()).collect();
    shown.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(shown, counts[..scatters.len()].to_vec());

    // Time 0 is the first sample shown.
    let t0 = names
        .iter()
        .flat_map(|n| want[n].iter().map(|s| s.ts_ns))
        .min()
        .unwrap();
    let circles: Vec<&Elem> = elems.iter().filter(|e| e.tag == "circle").collect();
    for ((panel, cdf), name) in scatters.iter().zip(&cdfs).zip(&names) {
        let samples = &want[name];
        assert!(
            panel
                .caption
                .contains(&format!("{} samples", samples.len())),
            "{}",
            panel.caption
        );
        let dots: Vec<(f64, f64, &str)> = circles
            .iter()
            .filter(|c| matches!(c.attrs["r"].as_str(), "2" | "3"))
            .filter(|c| panel.area.holds(c.num("cx"), c.num("cy")))
            .map(|c| (c.num("cx"), c.num("cy"), method_of_fill(&c.attrs["fill"])))
            .collect();
        let at: Vec<(f64, f64, &str)> = samples
            .iter()
            .map(|s| {
                (
                    panel.x.px((s.ts_ns - t0) as f64 / 1e9),
                    panel.y.px(s.rtt_ns as f64 / 1e6),
                    s.method.as_str(),
                )
            })
            .collect();
        // As many dots of each method as samples; and, as samples close in time and RTT share
        // pixels, every sample has a dot of its method where it belongs and every dot a sample.
        for m in ["seq", "syn", "ts"] {
            let n = |v: &[(f64, f64, &str)]| v.iter().filter(|d| d.2 == m).count();
            assert_eq!(n(&dots), n(&at), "{name}: one {m} dot per {m} sample");
        }
        let near = |a: &(f64, f64, &str), b: &(f64, f64, &str)| {
            a.2 == b.2 && (a.0 - b.0).abs() <= PX && (a.1 - b.1).abs() <= PX
        };
        for s in &at {
            assert!(
                dots.iter().any(|d| near(d, s)),
                "{name}: no dot for the sample at {s:?}; dots: {dots:?}"
            );
        }
        for d in &dots {
            assert!(
                at.iter().any(|s| near(d, s)),
                "{name}: a dot at {d:?} with no sample; samples: {at:?}"
            );
        }

        // The p50 mark: at the median (nearest rank) and at 0.5 on the fraction axis.
        let mut rtts: Vec<u64> = samples.iter().map(|s| s.rtt_ns).collect();
        rtts.sort_unstable();
        let median = rtts[rtts.len().div_ceil(2) - 1] as f64 / 1e6;
        let p50: Vec<&&Elem> = circles
            .iter()
            .filter(|c| c.attrs["r"] == "5" && c.attrs["stroke"] == "#141414")
            .filter(|c| cdf.area.holds(c.num("cx"), c.num("cy")))
            .collect();
        assert_eq!(p50.len(), 1, "{name}: one p50 mark");
        let (cx, cy) = (p50[0].num("cx"), p50[0].num("cy"));
        // The histogram's median is within 0.1 % of the exact one; a pixel is coarser than that
        // unless the panel is very wide in RTT.
        let slack = PX + cdf.x.scale * median * 0.001;
        assert!(
            (cx - cdf.x.px(median)).abs() <= slack,
            "{name}: p50 mark at x {cx}, median {median} ms is at {}",
            cdf.x.px(median)
        );
        assert!(
            (cy - cdf.y.px(0.5)).abs() <= PX,
            "{name}: p50 mark at y {cy}"
        );
    }
    scatters.len()
}

#[test]
fn every_sample_is_one_dot_where_it_belongs_and_p50_sits_at_the_median() {
    // Resent bytes timed by the timestamp echo ("ts") and handshakes, eight pairs.
    assert_eq!(check_capture("loss_ts.pcap", &[]), 8);
    // Many pairs: the eight busiest are shown, and with two workers the same.
    assert_eq!(check_capture("mix_small.pcap", &[]), 8);
    assert_eq!(check_capture("mix_small.pcap", &["--workers", "2"]), 8);
    assert_eq!(check_capture("bulk_delack.pcap", &["--plot-pairs", "1"]), 1);
}

#[test]
fn named_pairs_are_shown_in_order_and_one_without_samples_says_so() {
    let dir = Scratch::new("plot-named");
    let out = dir.join("named.svg");
    let r = metro(&[
        "--pcap",
        testdata("loss_ts.pcap").to_str().unwrap(),
        "--plot",
        out.to_str().unwrap(),
        "--plot-pair",
        "198.51.100.20,203.0.113.51",
        "--plot-pair",
        "192.0.2.1,192.0.2.2",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    let elems = parse_svg(&svg);
    let p = panels(&elems);
    assert_eq!(p.len(), 2, "one pair drawn: a scatter and a CDF");
    assert!(p[0]
        .caption
        .starts_with("198.51.100.20 → 203.0.113.51 · 5 samples"));
    let texts: Vec<&str> = elems
        .iter()
        .filter(|e| e.tag == "text")
        .map(|e| e.text.as_str())
        .collect();
    assert!(texts.contains(&"192.0.2.1 → 192.0.2.2"), "{texts:?}");
    assert!(texts.contains(&"no samples"), "{texts:?}");
    assert!(svg
        .lines()
        .next()
        .unwrap()
        .contains(&format!("height=\"{}\"", page_size(2).1)));
}

#[test]
fn a_capture_without_samples_gives_a_page_that_says_so() {
    let dir = Scratch::new("plot-empty");
    // Every sample of this capture is acknowledged by an address given as local.
    let out = dir.join("local.svg");
    let r = metro(&[
        "--pcap",
        testdata("handshake.pcap").to_str().unwrap(),
        "--local",
        "192.0.2.10",
        "--local",
        "198.51.100.20",
        "--plot",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.trim_end().ends_with("</svg>"));
    let (w, h) = page_size(0);
    assert!(svg
        .lines()
        .next()
        .unwrap()
        .contains(&format!("width=\"{w}\" height=\"{h}\"")));
    let elems = parse_svg(&svg);
    let texts: Vec<&str> = elems
        .iter()
        .filter(|e| e.tag == "text")
        .map(|e| e.text.as_str())
        .collect();
    assert!(texts.contains(&"No RTT samples to plot."), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("0 samples in 0 host pairs")),
        "{texts:?}"
    );
    assert!(panels(&elems).is_empty());

    // A capture with no packets at all: a pcap header and nothing else.
    let empty = dir.join("empty.pcap");
    let mut header = Vec::new();
    header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&empty, header).unwrap();
    let out = dir.join("empty.svg");
    let r = metro(&[
        "--pcap",
        empty.to_str().unwrap(),
        "--plot",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains("The capture holds no TCP segment (0 packets read)."));
}

#[test]
fn an_unwritable_plot_path_fails_before_anything_is_read() {
    let dir = Scratch::new("plot-unwritable");
    let bad = dir.join("no-such-dir").join("page.svg");
    // The capture does not exist either: the plot's path is checked first.
    let r = metro(&[
        "--pcap",
        dir.join("missing.pcap").to_str().unwrap(),
        "--plot",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stdout.is_empty(), "nothing was read or printed");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.starts_with(&format!(
            "metro: cannot write the plot to {}: ",
            bad.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("give --plot a file in a directory that exists"),
        "{err}"
    );

    let r = metro(&[
        "--pcap",
        testdata("handshake.pcap").to_str().unwrap(),
        "--plot",
        dir.join("page.jpg").to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stdout.is_empty());
    assert!(String::from_utf8_lossy(&r.stderr).contains("must end in .svg or .png"));
    assert!(!dir.join("page.jpg").exists());

    // A capture that cannot be opened leaves no empty page behind.
    let page = dir.join("page.svg");
    let r = metro(&[
        "--pcap",
        dir.join("missing.pcap").to_str().unwrap(),
        "--plot",
        page.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(!page.exists());
}

#[test]
fn a_png_is_a_whole_png_of_the_pages_size() {
    let dir = Scratch::new("plot-png");
    let out = dir.join("page.png");
    let r = metro(&[
        "--pcap",
        testdata("loss_ts.pcap").to_str().unwrap(),
        "--plot",
        out.to_str().unwrap(),
        "--plot-pairs",
        "3",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let file = std::fs::File::open(&out).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), page_size(3));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = &buf[..info.buffer_size()];
    // White paper, dark text, and the three methods' colours somewhere on it.
    let has = |rgb: [u8; 3]| px.chunks(3).any(|p| p == rgb);
    assert!(has([255, 255, 255]));
    assert!(
        px.chunks(3).any(|p| p.iter().all(|&c| c < 80)),
        "text is drawn"
    );
    assert!(has([214, 39, 40]), "a ts dot");
    assert!(has([44, 160, 44]), "a syn dot");
}
