//! The command line.
//!
//! Offline: `metro --pcap FILE [--local ADDR]… [--workers N] [--format table|json] [--samples]`.

use std::path::PathBuf;

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
    /// The capture could not be read to its end; what was read is still reported.
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

Exit status:
  0  the capture was read and reported
  1  bad command line
  2  the capture could not be opened, or broke off or was damaged part-way (the statistics
     of what was read are still printed)

Examples:
  metro --pcap testdata/bulk_delack.pcap
  metro --pcap trace.pcapng --local 10.0.0.5 --format json --samples";

/// metro: passive TCP round-trip-time sniffer.
#[derive(Debug, Parser)]
#[command(name = "metro", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Read packets from this pcap or pcapng file.
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,

    /// An address of the capturing host (repeatable): halves acknowledged by it are not reported.
    #[arg(long = "local", value_name = "ADDR")]
    pub local: Vec<std::net::IpAddr>,

    /// Worker threads; frames are dispatched by a symmetric flow hash.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Also print every sample as a JSON line (implies --format json for the summary).
    #[arg(long)]
    pub samples: bool,
}
