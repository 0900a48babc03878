//! JSON lines: the interface for benchmark harnesses. Field names are stable.
//!
//! In every object `src` is the data sender and `dst` the acknowledging end, whose RTT it is.

use std::io::{self, Write};

use super::{ms, Counters, PairSummary};
use crate::decode::Skip;
use crate::worker::SampleRecord;

/// Writes one `{"type":"pair",…}` line.
pub fn write_pair(out: &mut impl Write, p: &PairSummary) -> io::Result<()> {
    writeln!(
        out,
        "{{\"type\":\"pair\",\"src\":\"{}\",\"dst\":\"{}\",\"samples\":{},\"min_ms\":{:.6},\"p50_ms\":{:.6},\"avg_ms\":{:.6},\"p95_ms\":{:.6},\"p99_ms\":{:.6},\"max_ms\":{:.6},\"jitter_ms\":{:.6}}}",
        p.src_name(),
        p.dst_name(),
        p.samples,
        ms(p.min_ns as f64),
        ms(p.p50_ns as f64),
        ms(p.avg_ns),
        ms(p.p95_ns as f64),
        ms(p.p99_ns as f64),
        ms(p.max_ns as f64),
        ms(p.jitter_ns),
    )
}

/// Writes the `{"type":"counters",…}` line.
pub fn write_counters(out: &mut impl Write, c: &Counters) -> io::Result<()> {
    write!(
        out,
        "{{\"type\":\"counters\",\"packets\":{},\"tcp\":{},\"samples\":{},\"filtered\":{},\"skipped\":{{",
        c.packets, c.tcp, c.samples, c.filtered
    )?;
    for (i, s) in Skip::ALL.iter().enumerate() {
        // The tunnel reasons only when counted, so that captures without tunnels keep their
        // fields.
        if !s.always_shown() && c.skipped(*s) == 0 {
            continue;
        }
        let sep = if i == 0 { "" } else { "," };
        write!(out, "{sep}\"{}\":{}", s.name(), c.skipped(*s))?;
    }
    write!(
        out,
        "}},\"flows\":{},\"evicted\":{},\"expired\":{},\"active_flows\":{},\"karn\":{},\"untracked\":{},\"ring_full\":{},\"pool_exhausted\":{}",
        c.table.created,
        c.table.evicted,
        c.table.expired,
        c.active_flows,
        c.rtt.karn,
        c.rtt.untracked,
        c.rtt.ring_full,
        c.rtt.pool_exhausted
    )?;
    if c.encapsulated > 0 {
        write!(out, ",\"encapsulated\":{}", c.encapsulated)?;
    }
    // Present only when the `max_pairs` bound folded pairs into the `other` series.
    if c.overflow_samples > 0 {
        write!(out, ",\"overflow_samples\":{}", c.overflow_samples)?;
    }
    writeln!(out, "}}")
}

/// Writes one `{"type":"sample",…}` line.
pub fn write_sample(out: &mut impl Write, s: &SampleRecord) -> io::Result<()> {
    writeln!(
        out,
        "{{\"type\":\"sample\",\"ts_ns\":{},\"src\":\"{}\",\"sport\":{},\"dst\":\"{}\",\"dport\":{},\"rtt_ns\":{},\"method\":\"{}\"}}",
        s.ts_ns,
        s.src,
        s.sport,
        s.dst,
        s.dport,
        s.rtt_ns,
        s.method.name()
    )
}
