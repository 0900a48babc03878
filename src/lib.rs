//! metro: a passive TCP round-trip-time sniffer.
//!
//! A packet travels through the modules in this order:
//!
//! - [`capture`]: where frames come from — a pcap/pcapng file, or a TPACKET_V3 ring. A frame is a
//!   borrowed byte slice with a capture timestamp; nothing is copied.
//! - [`decode`]: bytes → a borrowed view of one TCP segment (addresses, ports, seq, ack, flags,
//!   timestamps), or a counted reason to skip the frame.
//! - [`flow`]: the per-worker flow table, keyed by the normalised 5-tuple so both directions of a
//!   connection share one entry.
//! - [`rtt`]: the estimator — segments in flight, ACK matching, Karn's rule, TCP timestamps.
//! - [`worker`]: one thread's pipeline: frames in, samples handed to the recorder.
//! - [`record`]: the worker's per-pair recorder, whose memory follows the samples; [`conn`]: its
//!   per-connection counterpart for `--by flow`, kept only when asked for.
//! - [`report`]: merging the workers' finished intervals into per-pair statistics, and printing
//!   them.
//!
//! [`privilege`] drops what metro does not need once it is set up: capabilities, the user,
//! system calls.
//!
//! [`offline`] drives the pipeline over a capture file, and [`live`] over TPACKET_V3 rings fanned
//! out to pinned workers, with a reporter thread that merges their intervals. [`daemon`] is go-metro mode: it reads
//! go-metro's YAML ([`config`]), logs in go-metro's format ([`logging`]), names hosts as go-metro
//! does ([`dns`]), runs every instance (a [`live`] capture or a file) and sends DogStatsD gauges
//! ([`report::statsd`]) until stopped ([`signals`], shared with live mode).

pub mod capture;
pub mod cli;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod decode;
pub mod dns;
pub mod flow;
pub mod live;
pub mod logging;
pub mod offline;
pub mod privilege;
pub mod record;
pub mod report;
pub mod rtt;
pub mod signals;
pub mod worker;
