//! The human table: one row per (sender, acknowledger) pair, then the counters.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::interval::Pairs;
use super::line::Line;
use super::merge::Plan;
use super::{ms, Counters, PairSummary};
use crate::decode::Skip;

/// Writes the pair table and the counters, from collected summaries.
/// The rows carry a port column when the summaries carry a port.
pub fn write(out: &mut impl Write, pairs: &[PairSummary], c: &Counters) -> io::Result<()> {
    let w = width(pairs.iter().map(|p| (p.src_name(), p.dst_name())));
    let by_port = pairs.first().is_some_and(|p| p.port.is_some());
    header(out, w, by_port)?;
    for p in pairs {
        row(out, w, p)?;
    }
    footer(out, pairs.is_empty(), c)
}

/// Writes the pair table and the counters, summarising each pair as its row is written.
pub fn write_plan(out: &mut impl Write, plan: &Plan<'_>, c: &Counters) -> io::Result<()> {
    let w = width(plan.names());
    header(out, w, plan.by_port())?;
    plan.for_each(|p| row(out, w, p))?;
    footer(out, plan.is_empty(), c)
}

/// Writes an interval's pair table and the counters, summarising merged pairs as their rows are
/// written.
pub fn write_pairs(out: &mut impl Write, pairs: &Pairs<'_>, c: &Counters) -> io::Result<()> {
    match pairs {
        Pairs::Merge(plan) => write_plan(out, plan, c),
        Pairs::Made(pairs) => write(out, pairs, c),
    }
}

/// The address columns' width: the longest name, at least 15.
fn width(names: impl Iterator<Item = (String, String)>) -> usize {
    names
        .map(|(s, d)| s.len().max(d.len()))
        .max()
        .unwrap_or(0)
        .max(15)
}

/// Width of the port column: `65535` and `other`.
const PORT_WIDTH: usize = 5;

fn header(out: &mut impl Write, w: usize, by_port: bool) -> io::Result<()> {
    write!(out, "{:<w$}  {:<w$}  ", "src", "dst")?;
    if by_port {
        write!(out, "{:>PORT_WIDTH$}  ", "port")?;
    }
    writeln!(
        out,
        "{:>8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
        "samples", "min", "p50", "avg", "p95", "p99", "max", "jitter"
    )
}

fn row(out: &mut impl Write, w: usize, p: &PairSummary) -> io::Result<()> {
    let mut l = Line::new();
    l.push_left(w, |l| l.push_host(&p.src, p.other));
    l.push_str("  ");
    l.push_left(w, |l| l.push_host(&p.dst, p.other));
    l.push_str("  ");
    if let Some(port) = p.port {
        l.push_right(PORT_WIDTH, |l| l.push_port(port, "other"));
        l.push_str("  ");
    }
    l.push_right(8, |l| l.push_u64(p.samples));
    for (i, ns) in [p.min_ns, p.p50_ns, 0, p.p95_ns, p.p99_ns, p.max_ns]
        .into_iter()
        .enumerate()
    {
        l.push_str("  ");
        if i == 2 {
            l.push_right(9, |l| {
                let _ = write!(l, "{:.3}", ms(p.avg_ns));
            });
        } else {
            l.push_right(9, |l| l.push_ms(ns, 3));
        }
    }
    l.push_str("  ");
    l.push_right(9, |l| {
        let _ = write!(l, "{:.3}", ms(p.jitter_ns));
    });
    l.push(b"\n");
    l.finish(out)
}

fn footer(out: &mut impl Write, empty: bool, c: &Counters) -> io::Result<()> {
    if empty {
        writeln!(out, "(no RTT samples)")?;
    }
    writeln!(
        out,
        "(all times in ms; src sent the data, dst acknowledged it: the RTT is dst's)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "packets {}  tcp {}  samples {}  not reported {}",
        c.packets, c.tcp, c.samples, c.filtered
    )?;
    let skipped: Vec<String> = Skip::ALL
        .iter()
        .filter(|s| s.always_shown() || c.skipped(**s) > 0)
        .map(|s| format!("{} {}", s.name(), c.skipped(*s)))
        .collect();
    writeln!(out, "skipped: {}", skipped.join(", "))?;
    writeln!(
        out,
        "flows {}  evicted {}  expired {}  no sample: karn {}, untracked {}",
        c.table.created, c.table.evicted, c.table.expired, c.rtt.karn, c.rtt.untracked
    )?;
    if c.encapsulated > 0 {
        writeln!(
            out,
            "encapsulated: {} TCP segments inside tunnels or MPLS",
            c.encapsulated
        )?;
    }
    if c.overflow_samples > 0 {
        writeln!(
            out,
            "other: {} samples of pairs beyond max_pairs",
            c.overflow_samples
        )?;
    }
    if c.port_overflow_samples > 0 {
        writeln!(
            out,
            "port other: {} samples of ports beyond max_ports",
            c.port_overflow_samples
        )?;
    }
    Ok(())
}
