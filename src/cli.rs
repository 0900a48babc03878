//! The command line.
//!
//! Offline: `metro --pcap FILE [--local ADDR]… [--workers N] [--format table|json] [--samples]`.
//! Live: `metro --interface IF [--duration SECS] [--interval SECS] [--workers N] [--format …]`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Output format for people or programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table, one row per (sender, acknowledger) pair, then the counters.
    Table,
    /// JSON lines: one "pair" object per pair and one "counters" object.
    Json,
}

/// Exit statuses, documented in `--help`.
pub mod exit {
    /// Everything read and reported.
    pub const OK: i32 = 0;
    /// Bad command line or configuration.
    pub const USAGE: i32 = 1;
    /// The capture could not be read to its end, or live capture could not run; what was read is
    /// still reported.
    pub const INPUT: i32 = 2;
}

const AFTER_HELP: &str = "\
RTT samples:
  Each direction of a TCP flow is measured on its own: data sent by A and acknowledged by B
  gives a sample of the RTT from the capture point to B and back. In the output, src is the
  data sender and dst the acknowledging end, whose RTT it is. An ACK that first covers new
  data gives one sample, timed from the newest segment it covers (method \"seq\"); the
  handshake gives \"syn\" samples; resent bytes give none (Karn's rule) unless the TCP
  timestamp echo names the copy that was acknowledged (\"ts\").

Live capture:
  --interface captures until SIGINT or SIGTERM (or --duration), printing the statistics of
  each --interval and of the rest at the end, then the kernel's counters. It needs
  CAP_NET_RAW. The interface's own addresses count as --local.

Exit status:
  0  the capture was read and reported
  1  bad command line or settings
  2  the capture could not be opened, or broke off or was damaged part-way (the statistics
     of what was read are still printed); live: the interface is missing, down or vanished,
     or CAP_NET_RAW is missing

Examples:
  metro --pcap testdata/bulk_delack.pcap
  metro --pcap trace.pcapng --local 10.0.0.5 --format json --samples
  metro --interface eth0 --interval 5 --duration 60";

/// metro: passive TCP round-trip-time sniffer.
#[derive(Debug, Parser)]
#[command(name = "metro", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Read packets from this pcap or pcapng file.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "interface",
        conflicts_with = "interface"
    )]
    pub pcap: Option<PathBuf>,

    /// Capture live on this interface (needs CAP_NET_RAW).
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,

    /// Live: stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS", requires = "interface", value_parser = parse_secs)]
    pub duration: Option<Duration>,

    /// Live: print the statistics of every interval of this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub interval: Duration,

    /// Diagnostic, live: at exit, print the flows each worker holds as JSON lines
    /// {"type":"flow","worker":W,"a":…,"aport":…,"b":…,"bport":…}.
    #[arg(long, requires = "interface")]
    pub dump_flows: bool,

    /// An address of the capturing host (repeatable): halves acknowledged by it are not reported.
    #[arg(long = "local", value_name = "ADDR")]
    pub local: Vec<std::net::IpAddr>,

    /// Worker threads; frames are dispatched by a symmetric flow hash [default: 1 for a file;
    /// live, one per CPU the process may run on].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Also print every sample as a JSON line (implies --format json for the summary).
    #[arg(long, conflicts_with = "interface")]
    pub samples: bool,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}
