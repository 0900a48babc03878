//! JSON lines: the interface for benchmark harnesses. Field names are stable.
//!
//! In every object `src` is the data sender and `dst` the acknowledging end, whose RTT it is.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::interval::IntervalReport;
use super::line::Line;
use super::{ms, Counters, PairSummary};
use crate::conn::Connection;
use crate::decode::Skip;
use crate::worker::SampleRecord;

/// Writes one `{"type":"pair",…}` line.
pub fn write_pair(out: &mut impl Write, p: &PairSummary) -> io::Result<()> {
    pair_line(p, None).finish(out)
}

/// Writes one `{"type":"pair",…}` line with the bytes `src` resent to `dst` (`--by flow`).
pub fn write_pair_retrans(out: &mut impl Write, p: &PairSummary, retrans: u64) -> io::Result<()> {
    pair_line(p, Some(retrans)).finish(out)
}

fn pair_line(p: &PairSummary, retrans: Option<u64>) -> Line {
    let mut l = Line::new();
    l.push_str("{\"type\":\"pair\",\"src\":\"");
    l.push_host(&p.src, p.other);
    l.push_str("\",\"dst\":\"");
    l.push_host(&p.dst, p.other);
    l.push_str("\"");
    // Only with the server-port dimension on.
    if let Some(port) = p.port {
        l.push_str(",\"port\":");
        l.push_port(port, "\"other\"");
    }
    l.push_str(",\"samples\":");
    l.push_u64(p.samples);
    l.push_str(",\"min_ms\":");
    l.push_ms(p.min_ns, 6);
    l.push_str(",\"p50_ms\":");
    l.push_ms(p.p50_ns, 6);
    let _ = write!(l, ",\"avg_ms\":{:.6}", ms(p.avg_ns));
    l.push_str(",\"p95_ms\":");
    l.push_ms(p.p95_ns, 6);
    l.push_str(",\"p99_ms\":");
    l.push_ms(p.p99_ns, 6);
    l.push_str(",\"max_ms\":");
    l.push_ms(p.max_ns, 6);
    let _ = write!(l, ",\"jitter_ms\":{:.6}", ms(p.jitter_ns));
    if let Some(r) = retrans {
        l.push_str(",\"retrans_bytes\":");
        l.push_u64(r);
    }
    l.push_str("}\n");
    l
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
    // Present only when some host pair had more than `max_ports` ports.
    if c.port_overflow_samples > 0 {
        write!(
            out,
            ",\"port_overflow_samples\":{}",
            c.port_overflow_samples
        )?;
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

/// Writes one `{"type":"connection",…}` line (`--by flow`): the connection's 5-tuple (`client`
/// opened it), its first and last packet, its RTT summary (`null` without samples), payload and
/// retransmitted bytes each way, and the handshake's two samples (`null` when not seen).
pub fn write_connection(out: &mut impl Write, c: &Connection) -> io::Result<()> {
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.6}"));
    let r = c.rtt();
    let f = |g: fn(&crate::conn::ConnRtt) -> f64| opt(r.as_ref().map(g));
    writeln!(
        out,
        "{{\"type\":\"connection\",\"client\":\"{}\",\"cport\":{},\"server\":\"{}\",\"sport\":{},\"first_ns\":{},\"last_ns\":{},\"samples\":{},\"min_ms\":{},\"p50_ms\":{},\"avg_ms\":{},\"p95_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"jitter_ms\":{},\"bytes_c2s\":{},\"bytes_s2c\":{},\"retrans_bytes_c2s\":{},\"retrans_bytes_s2c\":{},\"syn_ms\":{},\"synack_ms\":{}}}",
        c.client.0,
        c.client.1,
        c.server.0,
        c.server.1,
        c.first_ns,
        c.last_ns,
        c.samples,
        f(|r| ms(r.min_ns as f64)),
        f(|r| ms(r.p50_ns as f64)),
        f(|r| ms(r.avg_ns)),
        f(|r| ms(r.p95_ns as f64)),
        f(|r| ms(r.p99_ns as f64)),
        f(|r| ms(r.max_ns as f64)),
        f(|r| ms(r.jitter_ns)),
        c.bytes[0],
        c.bytes[1],
        c.retrans_bytes[0],
        c.retrans_bytes[1],
        opt(c.handshake_ns[0].map(|v| ms(v as f64))),
        opt(c.handshake_ns[1].map(|v| ms(v as f64))),
    )
}

/// Writes the `{"type":"connections","untracked":N}` line: connections `--by flow` could not
/// keep apart.
pub fn write_untracked(out: &mut impl Write, untracked: u64) -> io::Result<()> {
    writeln!(
        out,
        "{{\"type\":\"connections\",\"untracked\":{untracked}}}"
    )
}

/// Writes a live interval's `{"type":"connections","untracked":N,"dropped":M}` line (`--by
/// flow`): connections not kept apart because `max_flows` were, and ended connections that found
/// the output queue full, in the interval.
pub fn write_connections_lost(
    out: &mut impl Write,
    untracked: u64,
    dropped: u64,
) -> io::Result<()> {
    writeln!(
        out,
        "{{\"type\":\"connections\",\"untracked\":{untracked},\"dropped\":{dropped}}}"
    )
}

/// Writes a live interval: a `{"type":"pair",…}` line per pair, summarised as it is written,
/// then its counters and its kernel line (see [`write_kernel`]).
pub fn write_interval(
    out: &mut impl Write,
    rep: &IntervalReport,
    samples_dropped: Option<u64>,
) -> io::Result<()> {
    rep.pairs.for_each(|p| write_pair(out, p))?;
    write_counters(out, &rep.counters)?;
    write_kernel(out, rep, samples_dropped)
}

/// Writes a live interval's `{"type":"kernel",…}` line; `samples_dropped` (with `--samples`)
/// counts the interval's samples that found the queue full.
pub fn write_kernel(
    out: &mut impl Write,
    rep: &IntervalReport,
    samples_dropped: Option<u64>,
) -> io::Result<()> {
    let k = &rep.kernel;
    write!(
        out,
        "{{\"type\":\"kernel\",\"iface\":\"{}\",\"received\":{},\"dropped\":{},\"freezes\":{},\"last\":{}",
        rep.iface, k.received, k.dropped, k.freezes, rep.last
    )?;
    if let Some(n) = samples_dropped {
        write!(out, ",\"samples_dropped\":{n}")?;
    }
    writeln!(out, "}}")
}

/// Writes one `{"type":"flow",…}` line per flow each worker holds (`--dump-flows`).
pub fn write_flows(out: &mut impl Write, rep: &IntervalReport) -> io::Result<()> {
    for (w, keys) in rep.flows.iter().enumerate() {
        for f in keys {
            writeln!(
                out,
                "{{\"type\":\"flow\",\"worker\":{w},\"a\":\"{}\",\"aport\":{},\"b\":\"{}\",\"bport\":{}}}",
                f.a, f.a_port, f.b, f.b_port
            )?;
        }
    }
    Ok(())
}
