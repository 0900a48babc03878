//! Drawing the page: a header, then one row per pair (RTT against time, and the CDF).
//!
//! Every coordinate on the page follows from the axis ranges drawn on it, so the SVG can be
//! read back (the tests do): sample dots are the page's only circles of radius 2 or 3, the
//! percentile marks its only circles of radius 5 outside the header, and each panel's plotting
//! area is filled with [`PANEL_FILL`].

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, RGBColor};

use super::{chosen, PlotInput};
use crate::record::PairKey;
use crate::report::PairSummary;
use crate::rtt::Method;

use super::points::{Point, Series};

/// The page's width, in pixels (SVG user units and PNG pixels alike).
pub const PAGE_WIDTH: u32 = 1400;
/// The header: title, totals, legend.
const HEADER_HEIGHT: u32 = 120;
/// One pair's row.
const ROW_HEIGHT: u32 = 320;
/// The body of a page with nothing to plot.
const EMPTY_HEIGHT: u32 = 160;
/// The RTT-against-time panel's share of a row's width.
const SCATTER_SHARE: f64 = 0.66;

/// The fill of every panel's plotting area.
pub const PANEL_FILL: RGBColor = RGBColor(250, 250, 250);
const GRID_LIGHT: RGBColor = RGBColor(236, 236, 236);
const GRID_BOLD: RGBColor = RGBColor(214, 214, 214);
const TEXT: RGBColor = RGBColor(34, 34, 34);
const MUTED: RGBColor = RGBColor(100, 100, 100);
const CURVE: RGBColor = RGBColor(60, 60, 60);

/// Drawn in this order, so that the rarer kinds lie on top.
const METHODS: [(Method, RGBColor, u32, &str); 3] = [
    (
        Method::Seq,
        RGBColor(31, 119, 180),
        2,
        "seq: an ACK of new data",
    ),
    (Method::Syn, RGBColor(44, 160, 44), 3, "syn: the handshake"),
    (
        Method::Ts,
        RGBColor(214, 39, 40),
        3,
        "ts: resent data, timed by the TCP timestamp echo",
    ),
];

/// The CDF's marks: the quantile, its name and colour.
const MARKS: [(f64, &str, RGBColor); 3] = [
    (0.50, "p50", RGBColor(20, 20, 20)),
    (0.95, "p95", RGBColor(148, 103, 189)),
    (0.99, "p99", RGBColor(227, 119, 14)),
];
const MARK_RADIUS: u32 = 5;

/// DejaVu Sans, cut to Latin-1 and a few symbols (see `assets/fonts/LICENSE`).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse (the tests draw pages with it).
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// The page's size for `rows` pairs.
pub fn page_size(rows: usize) -> (u32, u32) {
    let body = if rows == 0 {
        EMPTY_HEIGHT
    } else {
        ROW_HEIGHT * rows as u32
    };
    (PAGE_WIDTH, HEADER_HEIGHT + body)
}

/// The page as SVG.
pub fn svg(input: &PlotInput<'_>) -> Result<String, String> {
    register_fonts();
    let rows = chosen(input.pairs, input.choice);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, page_size(rows.len())).into_drawing_area();
        draw(&root, input, &rows)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// The page as PNG.
pub fn png(input: &PlotInput<'_>) -> Result<Vec<u8>, String> {
    register_fonts();
    let rows = chosen(input.pairs, input.choice);
    let (w, h) = page_size(rows.len());
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root, input, &rows)?;
        root.present().map_err(err)?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .and_then(|mut wr| wr.write_image_data(&rgb))
        .map_err(err)?;
    Ok(out)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&TEXT)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    input: &PlotInput<'_>,
    rows: &[(PairKey, Option<&PairSummary>)],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let (header, body) = root.split_vertically(HEADER_HEIGHT);
    // Time 0 is the first sample shown, so that every row shares one time axis.
    let series: Vec<Option<&Series>> = rows.iter().map(|(k, _)| input.points.series(k)).collect();
    let first = series
        .iter()
        .flatten()
        .filter_map(|s| s.points().first())
        .map(|p| p.ts_ns)
        .min();
    let last = series
        .iter()
        .flatten()
        .filter_map(|s| s.points().last())
        .map(|p| p.ts_ns)
        .max();
    draw_header(&header, input, rows.len(), first)?;
    if rows.is_empty() {
        let c = input.counters;
        let why = if c.tcp == 0 {
            format!(
                "The capture holds no TCP segment ({} packets read).",
                c.packets
            )
        } else {
            format!(
                "No ACK covered data whose sending was captured ({} packets, {} TCP), or every \
                 pair was left out as local or not whitelisted.",
                c.packets, c.tcp
            )
        };
        body.draw_text("No RTT samples to plot.", &font(24), (40, 30))
            .map_err(err)?;
        body.draw_text(&why, &font(16).color(&MUTED), (40, 72))
            .map_err(err)?;
        return Ok(());
    }
    let span_s = match (first, last) {
        (Some(f), Some(l)) => (l - f) as f64 / 1e9,
        _ => 0.0,
    };
    let x_max = nice_max(span_s * 1.02).max(0.001);
    let t0 = first.unwrap_or(0);
    let areas = body.split_evenly((rows.len(), 1));
    for ((row, (key, summary)), series) in areas.iter().zip(rows).zip(&series) {
        draw_row(row, input, key, *summary, *series, t0, x_max)?;
    }
    Ok(())
}

fn draw_header<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    input: &PlotInput<'_>,
    rows: usize,
    first: Option<u64>,
) -> Result<(), String> {
    let c = input.counters;
    area.draw_text(
        &format!("TCP round-trip times in {}", input.source),
        &font(26),
        (24, 16),
    )
    .map_err(err)?;
    let shown = match input.choice {
        super::PairChoice::Busiest(_) if rows == 1 => "the busiest pair shown".to_string(),
        super::PairChoice::Busiest(_) => format!("the {rows} busiest pairs shown"),
        super::PairChoice::Named(_) => "the pairs named by --plot-pair shown".to_string(),
    };
    let mut totals = format!(
        "{} samples in {} host pairs · {} packets, {} TCP · {}",
        input.pairs.iter().map(|p| p.samples).sum::<u64>(),
        input.pairs.len(),
        c.packets,
        c.tcp,
        shown
    );
    if let Some(t) = first.and_then(utc) {
        totals.push_str(&format!(" · time 0 s = {t}"));
    }
    area.draw_text(&totals, &font(16).color(&MUTED), (24, 54))
        .map_err(err)?;
    // The legend: what the dots' colours and the CDF marks mean.
    let y = 92;
    let mut x = 30;
    for (_, color, _, label) in METHODS {
        area.draw(&Circle::new((x, y), 5, color.filled()))
            .map_err(err)?;
        let style = font(15).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw_text(label, &style, (x + 10, y)).map_err(err)?;
        x += 24 + text_width(area, label, 15);
    }
    x += 20;
    for (_, name, color) in MARKS {
        area.draw(&Circle::new((x, y), 5, color.stroke_width(2)))
            .map_err(err)?;
        let style = font(15).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw_text(name, &style, (x + 10, y)).map_err(err)?;
        x += 24 + text_width(area, name, 15);
    }
    Ok(())
}

fn text_width<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, s: &str, size: u32) -> i32 {
    area.estimate_text_size(s, &font(size))
        .map(|(w, _)| w as i32)
        .unwrap_or(8 * s.len() as i32)
}

#[allow(clippy::too_many_arguments)]
fn draw_row<DB: DrawingBackend>(
    row: &DrawingArea<DB, Shift>,
    input: &PlotInput<'_>,
    key: &PairKey,
    summary: Option<&PairSummary>,
    series: Option<&Series>,
    t0: u64,
    x_max: f64,
) -> Result<(), String> {
    let (left, right) = row.split_horizontally((PAGE_WIDTH as f64 * SCATTER_SHARE) as u32);
    let name = format!("{} → {}", key.src, key.dst);
    let (Some(summary), Some(series)) = (summary, series) else {
        let why = match summary {
            None => "no samples".to_string(),
            Some(s) => format!(
                "{} samples; their dots were not kept: more than {} pairs had samples before \
                 this one (name it with --plot-pair)",
                s.samples,
                input.points.limits().pairs
            ),
        };
        left.draw_text(&name, &font(18), (80, 20)).map_err(err)?;
        left.draw_text(&why, &font(15).color(&MUTED), (80, 50))
            .map_err(err)?;
        return Ok(());
    };
    let ms = |ns: u64| ns as f64 / 1e6;
    let y_max = nice_max(ms(summary.max_ns) * 1.05).max(0.001);
    let mut caption = format!("{name} · {} samples", summary.samples);
    if series.stride() > 1 {
        caption.push_str(&format!(
            " · 1 in {} shown, thinned evenly",
            series.stride()
        ));
    }

    let mut chart = ChartBuilder::on(&left)
        .caption(&caption, font(18))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart.plotting_area().fill(&PANEL_FILL).map_err(err)?;
    let x_fmt = |v: &f64| tick(*v, x_max);
    let y_fmt = |v: &f64| tick(*v, y_max);
    chart
        .configure_mesh()
        .x_labels(12)
        .y_labels(6)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_desc("capture time (s)")
        .y_desc("RTT (ms)")
        .label_style(font(14))
        .axis_desc_style(font(15))
        .max_light_lines(1)
        .light_line_style(GRID_LIGHT)
        .bold_line_style(GRID_BOLD)
        .draw()
        .map_err(err)?;
    let at = |p: &Point| ((p.ts_ns - t0) as f64 / 1e9, ms(p.rtt_ns));
    for (method, color, radius, _) in METHODS {
        let style = if method == Method::Seq {
            color.mix(0.75).filled()
        } else {
            color.filled()
        };
        chart
            .draw_series(
                series
                    .points()
                    .iter()
                    .filter(|p| p.method == method)
                    .map(|p| Circle::new(at(p), radius, style)),
            )
            .map_err(err)?;
    }

    let p = |ns| fmt_ms(ms(ns));
    let caption = format!(
        "p50 {} · p95 {} · p99 {} ms",
        p(summary.p50_ns),
        p(summary.p95_ns),
        p(summary.p99_ns)
    );
    let mut cdf = ChartBuilder::on(&right)
        .caption(&caption, font(16))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..y_max, 0f64..1f64)
        .map_err(err)?;
    cdf.plotting_area().fill(&PANEL_FILL).map_err(err)?;
    let q_fmt = |v: &f64| tick(*v, 1.0);
    cdf.configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&y_fmt)
        .y_label_formatter(&q_fmt)
        .x_desc("RTT (ms)")
        .y_desc("fraction of samples")
        .label_style(font(14))
        .axis_desc_style(font(15))
        .max_light_lines(1)
        .light_line_style(GRID_LIGHT)
        .bold_line_style(GRID_BOLD)
        .draw()
        .map_err(err)?;
    let mut rtts: Vec<f64> = series.points().iter().map(|p| ms(p.rtt_ns)).collect();
    rtts.sort_by(f64::total_cmp);
    let n = rtts.len() as f64;
    let steps = rtts
        .iter()
        .enumerate()
        .flat_map(|(i, &r)| [(r, i as f64 / n), (r, (i + 1) as f64 / n)]);
    cdf.draw_series(LineSeries::new(steps, CURVE.stroke_width(2)))
        .map_err(err)?;
    for ((q, _, color), ns) in MARKS
        .iter()
        .zip([summary.p50_ns, summary.p95_ns, summary.p99_ns])
    {
        let x = ms(ns);
        cdf.draw_series(LineSeries::new([(x, 0.0), (x, *q)], color.mix(0.6)))
            .map_err(err)?;
        cdf.draw_series([Circle::new((x, *q), MARK_RADIUS, color.stroke_width(2))])
            .map_err(err)?;
    }
    Ok(())
}

/// A round number a little above `v`, for an axis end: 1, 2 or 5 times a power of ten, or a
/// multiple of a tenth of that, so that the last tick lands near the end.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 0.0;
    }
    let pow = 10f64.powf(v.log10().floor());
    let step = pow / 10.0;
    (v / step).ceil() * step
}

/// A tick label: as few decimals as the axis's scale needs.
fn tick(v: f64, max: f64) -> String {
    let decimals = if max >= 20.0 {
        0
    } else if max >= 2.0 {
        1
    } else if max >= 0.2 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Milliseconds with three significant digits or more.
fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A capture time in UTC, to the microsecond.
fn utc(ts_ns: u64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp(
        (ts_ns / 1_000_000_000) as i64,
        (ts_ns % 1_000_000_000) as u32,
    )?;
    Some(t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Addr;
    use crate::report::plot::{PairChoice, PlotPoints, PointLimits};
    use crate::report::Counters;
    use crate::worker::SampleRecord;

    #[test]
    fn a_thinned_pair_says_so_and_shows_only_the_kept_dots() {
        let key = PairKey::hosts(Addr::v4([10, 0, 0, 1]), Addr::v4([10, 0, 0, 2]));
        let mut points = PlotPoints::new(PointLimits {
            per_pair: 10,
            ..PointLimits::default()
        });
        for i in 0..100u64 {
            points.add(&SampleRecord {
                ts_ns: 1_000_000_000 + i * 10_000_000,
                src: key.src,
                sport: 1000,
                dst: key.dst,
                dport: 80,
                rtt_ns: 5_000_000 + i * 10_000,
                method: Method::Seq,
            });
        }
        let summary = PairSummary {
            src: key.src,
            dst: key.dst,
            other: false,
            port: None,
            samples: 100,
            min_ns: 5_000_000,
            p50_ns: 5_490_000,
            avg_ns: 5_495_000.0,
            p95_ns: 5_940_000,
            p99_ns: 5_980_000,
            max_ns: 5_990_000,
            jitter_ns: 10_000.0,
            srtt_ns: 5_900_000.0,
        };
        let counters = Counters::default();
        let pairs = [summary];
        let input = PlotInput {
            source: "synthetic",
            pairs: &pairs,
            counters: &counters,
            points: &points,
            choice: &PairChoice::Busiest(8),
        };
        let svg = svg(&input).unwrap();
        assert!(
            svg.contains("10.0.0.1 → 10.0.0.2 · 100 samples · 1 in 16 shown, thinned evenly"),
            "{svg}"
        );
        let dots = svg
            .lines()
            .filter(|l| l.starts_with("<circle") && l.contains(" r=\"2\""))
            .count();
        assert_eq!(dots, 7, "samples 0, 16, …, 96");
    }

    #[test]
    fn axis_ends_are_round_and_not_below_the_data() {
        assert_eq!(nice_max(0.0), 0.0);
        for (v, want) in [(1.0, 1.0), (1.02, 1.1), (37.3, 38.0), (0.0123, 0.013)] {
            let got = nice_max(v);
            assert!((got - want).abs() < 1e-9, "{v}: {got}");
            assert!(got >= v);
        }
    }

    #[test]
    fn tick_labels_drop_useless_decimals() {
        assert_eq!(tick(10.0, 40.0), "10");
        assert_eq!(tick(0.5, 1.0), "0.5");
        assert_eq!(tick(0.25, 1.0), "0.25");
        assert_eq!(tick(0.0, 0.05), "0");
        assert_eq!(tick(0.012, 0.05), "0.012");
    }
}
