//! The command line.
//!
//! metro runs in one of three modes, chosen by the flags:
//!
//! - offline: `metro --pcap FILE [--local ADDR]… [--workers N] [--format table|json] [--samples]
//!   [--plot OUT.svg|OUT.png]` reads a capture and prints per-pair statistics (and plots them);
//! - ad hoc, live: `metro --interface IF [--duration SECS] [--interval SECS] [--workers N]
//!   [--format …]` captures and prints the same statistics every interval and at the end;
//! - go-metro (the default): `metro [-cfg PATH] [-log PATH] [-f EXPR] [-st]` reads go-metro's YAML
//!   and sends DogStatsD gauges until it is stopped, exactly as agent packages run go-metro.
//!
//! go-metro parses its flags with Go's `flag` package, which spells long flags with one dash
//! (`-cfg=/etc/x.yaml`, `-cfg /etc/x.yaml`) as well as two. [`normalize`] rewrites such arguments
//! to clap's double-dash form before clap sees them, using clap's own list of flags, so every flag
//! takes both styles and an unknown one is still reported by clap, with a suggestion.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser, ValueEnum};

pub use crate::config::DEFAULT_CONFIG_FILE;
use crate::config::{limits, RingConfig, DEFAULT_MAX_FLOWS, DEFAULT_MAX_PAIRS, DEFAULT_MAX_PORTS};
use crate::privilege::Seccomp;

/// Where go-metro writes its log when `-log` is not given (and `log_to_file` is on).
pub const DEFAULT_LOG_FILE: &str = "/var/log/datadog/go-metro.log";

/// go-metro's default capture filter. It is the only expression metro evaluates without libpcap:
/// metro decodes TCP only, so `tcp` is what it does anyway.
pub const DEFAULT_FILTER: &str = crate::capture::expr::DEFAULT;

/// Output format for people or programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table, one row per (sender, acknowledger) pair, then the counters.
    Table,
    /// JSON lines: one "pair" object per pair and one "counters" object.
    Json,
}

/// What one output line stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// One line per (sender, acknowledger) host pair.
    Pair,
    /// One line per (sender, acknowledger, server port): the port the connection's SYN went to,
    /// or the smaller port when the capture holds no handshake.
    Port,
    /// Also one JSON line per TCP connection, before the pairs (implies --format json).
    Flow,
}

/// Exit statuses, documented in `--help`.
pub mod exit {
    /// Everything read and reported; or stopped by a signal after flushing.
    pub const OK: i32 = 0;
    /// Offline and live modes: a bad configuration (a flag's value, a plot file).
    pub const USAGE: i32 = 1;
    /// Offline and live modes: the capture could not be opened or read to its end, or live
    /// capture could not run; what was read is still reported.
    pub const INPUT: i32 = 2;
    /// go-metro mode: any failure, as go-metro exits 1 for every one (configuration,
    /// interface, privileges, DogStatsD).
    pub const FAILURE: i32 = 1;
    /// A command line that cannot be parsed, in every mode: 2, as Go's `flag` package (so
    /// go-metro) and clap exit.
    pub const FLAGS: i32 = 2;
}

const AFTER_HELP: &str = "\
Modes:
  With --pcap, metro reads a capture file and prints per-pair statistics (offline mode).
  With --interface, it captures live until SIGINT or SIGTERM (or --duration), printing the
  statistics of each --interval and of the rest at the end, then the kernel's counters; it
  needs CAP_NET_RAW, and the interface's own addresses count as --local.
  Otherwise it runs as go-metro does: it reads the YAML file named by -cfg, sniffs every
  instance listed there, and every report interval (30 s) sends DogStatsD gauges
  system.net.tcp.rtt (median), system.net.tcp.rtt.avg (mean, or the smoothed RTT with -st) and
  system.net.tcp.rtt.jitter, in milliseconds, tagged src, dst, the instance's tags, iface.
  SIGINT, SIGTERM, SIGQUIT and SIGHUP stop it after sending the last interval. A missing
  config file makes it wait 5 s and exit 0, as go-metro does for supervisord.

go-metro's flags:
  Flags may be written with one dash or two, with the value after '=' or as the next
  argument, as Go programs accept: -cfg=/etc/x.yaml, -cfg /etc/x.yaml, --cfg=/etc/x.yaml.
  -st takes no value, or =true / =false (also 1, 0, t, f). Unlike go-metro, metro honours it;
  its default stays off so that rtt.avg keeps the meaning it had under go-metro (a mean).

RTT samples:
  Each direction of a TCP flow is measured on its own: data sent by A and acknowledged by B
  gives a sample of the RTT from the capture point to B and back. In the output, src is the
  data sender and dst the acknowledging end, whose RTT it is. An ACK that first covers new
  data gives one sample, timed from the newest segment it covers (method \"seq\"); the
  handshake gives \"syn\" samples; resent bytes give none (Karn's rule) unless the TCP
  timestamp echo names the copy that was acknowledged (\"ts\").

Plots:
  --plot OUT.svg (or OUT.png) draws one page: for the 8 busiest pairs (--plot-pairs N), or the
  pairs named by --plot-pair SRC,DST, RTT against capture time (dots coloured seq, syn, ts) and
  the RTT distribution (a CDF with p50, p95 and p99); live, of the whole run, when it ends. At
  most 100,000 dots per pair are kept, thinned evenly (the page says so).

Privileges:
  Before it captures, a live metro drops every capability but CAP_NET_RAW (offline: all of
  them, before opening the file), sets no-new-privileges and, with --user NAME, runs as that
  user. A seccomp filter then
  allows only the system calls metro makes; any other kills it with SIGSYS (status 159).
  --seccomp log logs such calls instead (see the kernel's log), --seccomp off turns it off.

Exit status:
  0  the capture was read and reported, or metro was stopped by a signal and flushed
  1  go-metro mode: any failure, as go-metro (a bad configuration, whose message names the
     file, key and line; no interface to capture; an interface down; no CAP_NET_RAW);
     offline and live: a bad configuration, or a --plot file that cannot be written
     (found before anything is read)
  2  a command line that cannot be parsed (as Go's flag package exits); offline and live:
     a capture could not be opened, or broke off or was damaged part-way (offline: the
     statistics of what was read are still printed); live: the interface is missing, down
     or vanished, or CAP_NET_RAW is missing

Examples:
  metro -cfg=/etc/datadog-agent/conf.d/go-metro.yaml
  metro --pcap testdata/bulk_delack.pcap
  metro --pcap trace.pcapng --local 10.0.0.5 --format json --samples
  metro --pcap trace.pcapng --plot rtt.svg --plot-pair 10.0.0.5,192.0.2.7
  metro --interface eth0 --interval 5 --duration 60";

/// metro: passive TCP round-trip-time sniffer, and a drop-in go-metro.
#[derive(Debug, Parser)]
#[command(name = "metro", version, about, after_help = AFTER_HELP, args_override_self = true)]
pub struct Cli {
    /// go-metro mode: arguments after the first one that is not a flag, ignored as Go's `flag`
    /// package ignores them (go-metro reads none).
    #[arg(skip)]
    pub ignored: Vec<String>,

    /// go-metro: the YAML configuration file (instances, statsd, logging).
    #[arg(long = "cfg", value_name = "PATH", default_value = DEFAULT_CONFIG_FILE)]
    pub cfg: PathBuf,

    /// go-metro: the log file, used when the config sets `log_to_file: true` (rotated at
    /// 100 KB, 5 files kept).
    #[arg(long = "log", value_name = "PATH", default_value = DEFAULT_LOG_FILE)]
    pub log: PathBuf,

    /// go-metro: the capture filter. `tcp` needs nothing; other expressions need metro built
    /// with the `libpcap` feature, and then narrow what live capture keeps (metro's own filter,
    /// TCP and the whitelisted hosts, still applies).
    #[arg(long = "f", value_name = "EXPR", default_value = DEFAULT_FILTER)]
    pub filter: String,

    /// go-metro: send the smoothed RTT (the kernel's 1/8 EWMA) as system.net.tcp.rtt.avg instead
    /// of the mean.
    #[arg(
        long = "st",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool,
        action = ArgAction::Set,
    )]
    pub st: bool,

    /// Offline mode: read packets from this pcap or pcapng file and print statistics. `-` reads
    /// standard input; gzip and zstd captures are decompressed; a glob, or the flag repeated,
    /// reads several files as one capture in time order (rotated `tcpdump -C`/`-G` files).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "interface",
        group = "input",
        action = ArgAction::Append
    )]
    pub pcap: Vec<PathBuf>,

    /// Live mode: capture on this interface and print statistics (needs CAP_NET_RAW).
    #[arg(long, value_name = "IF", group = "input")]
    pub interface: Option<String>,

    /// Live: stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS", requires = "interface", value_parser = parse_secs)]
    pub duration: Option<Duration>,

    /// Live: print the statistics of every interval of this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub interval: Duration,

    // The ring's defaults are RingConfig's, shown by clap; `requires` ignores a default, so
    // only a ring flag that is given needs --interface.
    /// Live: bytes per ring block (a multiple of the page size).
    #[arg(long, value_name = "BYTES", requires = "interface", default_value_t = RingConfig::default().block_size, value_parser = parse_ring_block_size)]
    pub ring_block_size: u32,

    /// Live: blocks per worker's ring.
    #[arg(long, value_name = "N", requires = "interface", default_value_t = RingConfig::default().block_count, value_parser = clap::value_parser!(u32).range(limits::RING_BLOCKS))]
    pub ring_blocks: u32,

    /// Live: milliseconds the kernel waits before handing over a block that is not full; it
    /// delays delivery only, never timestamps.
    #[arg(long, value_name = "MS", requires = "interface", default_value_t = RingConfig::default().block_timeout.as_millis() as u64, value_parser = clap::value_parser!(u64).range(*limits::RING_BLOCK_TIMEOUT_MS.start() as u64..=*limits::RING_BLOCK_TIMEOUT_MS.end() as u64))]
    pub ring_block_timeout: u64,

    /// Diagnostic, live: at exit, print the flows each worker holds as JSON lines
    /// {"type":"flow","worker":W,"a":…,"aport":…,"b":…,"bport":…}.
    #[arg(long, requires = "interface")]
    pub dump_flows: bool,

    /// An address of the capturing host (repeatable): halves acknowledged by it are not reported.
    #[arg(long = "local", value_name = "ADDR")]
    pub local: Vec<std::net::IpAddr>,

    /// Worker threads; frames are dispatched by a symmetric flow hash [default: 1 for a file;
    /// live, one per CPU the process may run on].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(limits::WORKERS))]
    pub workers: Option<u16>,

    /// Most host pairs reported apart in an interval (per worker, and after merging); the
    /// samples of pairs beyond it are reported together as the pair `other`, counted as
    /// overflow_samples. Bounds memory on a gateway.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PAIRS as u32, value_parser = clap::value_parser!(u32).range(limits::MAX_PAIRS))]
    pub max_pairs: u32,

    /// Most flows a worker tracks at once; past it a new flow evicts an old one (counted), so
    /// memory is bounded whatever the traffic (128 bytes a flow, and an IPv6 flow's addresses
    /// once per host).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FLOWS as u32, value_parser = clap::value_parser!(u32).range(limits::MAX_FLOWS))]
    pub max_flows: u32,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Also print every sample as a JSON line (implies --format json for the summary); live, as
    /// they are captured, each interval's before its summary, through a bounded queue whose
    /// overflow is counted (samples_dropped in the kernel line).
    #[arg(long)]
    pub samples: bool,

    /// What a line stands for; several may be given (`--by port,flow`). `pair`: a (sender,
    /// acknowledger) host pair. `port`: a host pair and the connections' server port (the SYN's
    /// destination port; without a handshake in the capture, the smaller port), a `port` field
    /// and column, at most --max-ports ports a pair. `flow` also writes one JSON line per TCP
    /// connection (5-tuple, first and last packet, RTT summary, bytes and retransmitted bytes
    /// each way, handshake RTTs): offline all of them, with the retransmitted bytes of each pair
    /// in its line; live each connection at the first report after it ended (silent for 60 s
    /// after a FIN or RST, 300 s otherwise: the flow table's TTLs) and the rest at the end; implies
    /// --format json.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pair")]
    pub by: Vec<By>,

    /// With --by port: most server ports of one host pair reported apart in an interval (per
    /// worker, and after merging); the samples of its other ports are reported together as its
    /// port `other`, counted as port_overflow_samples.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PORTS as u32, value_parser = clap::value_parser!(u32).range(limits::MAX_PORTS))]
    pub max_ports: u32,

    /// Live and go-metro mode: serve the RTTs and metro's counters to Prometheus at
    /// http://ADDR:PORT/metrics (OpenMetrics text), beside the other outputs; go-metro mode also
    /// takes init_config's `prometheus_listen`, which this overrides.
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "pcap")]
    pub prometheus: Option<std::net::SocketAddr>,

    /// Draw RTT plots of the capture (live: of the whole run, at the end) into this file, SVG or
    /// PNG by its ending: per pair, RTT against time and the RTT distribution.
    #[arg(long, value_name = "OUT", requires = "input")]
    pub plot: Option<PathBuf>,

    /// Plot this many of the busiest pairs [default: 8].
    #[arg(long, value_name = "N", requires = "plot", conflicts_with = "plot_pair",
          value_parser = clap::value_parser!(u16).range(1..=100))]
    pub plot_pairs: Option<u16>,

    /// Plot this pair (data sender, acknowledging end) instead of the busiest (repeatable).
    #[arg(long, value_name = "SRC,DST", requires = "plot", value_parser = parse_pair)]
    pub plot_pair: Vec<(std::net::IpAddr, std::net::IpAddr)>,

    /// Once set up, run as this user, its group and supplementary groups, keeping only
    /// CAP_NET_RAW (as `tcpdump -Z`); needs root. go-metro mode: overrides `user:` in
    /// init_config.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// What a system call outside metro's seccomp filter does: kill the process (SIGSYS, status
    /// 159), or log it in the kernel's log and go on; `off` installs no filter (for debugging).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Seccomp::Kill)]
    pub seccomp: Seccomp,
}

/// `SRC,DST`: two addresses.
fn parse_pair(s: &str) -> Result<(std::net::IpAddr, std::net::IpAddr), String> {
    let bad = || format!("'{s}' is not SRC,DST (two addresses, e.g. 10.0.0.1,10.0.0.2)");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

/// A ring block size, checked against [`limits::ring_block_size`].
fn parse_ring_block_size(s: &str) -> Result<u32, String> {
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    limits::ring_block_size(n)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// What to run, chosen from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Read capture files (one or several, as one) and print statistics.
    Offline(Vec<PathBuf>),
    /// Capture on an interface and print statistics.
    Live(String),
    /// go-metro: run the instances of a YAML file and send DogStatsD gauges.
    Config(PathBuf),
}

impl Cli {
    /// Parses `args` (the program name first), accepting Go-style single-dash long flags.
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let (args, ignored) = normalize(args.into_iter().map(Into::into).collect());
        let mut cli = Cli::try_parse_from(args)?;
        cli.ignored = ignored
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Ok(cli)
    }

    /// True with `--by flow`.
    pub fn by_flow(&self) -> bool {
        self.by.contains(&By::Flow)
    }

    /// With `--by port`: most ports a host pair keeps apart; `None` without.
    pub fn max_ports(&self) -> Option<usize> {
        self.by
            .contains(&By::Port)
            .then_some(self.max_ports as usize)
    }

    /// The mode the flags select.
    pub fn mode(&self) -> Mode {
        match (self.pcap.as_slice(), &self.interface) {
            ([_, ..], _) => Mode::Offline(self.pcap.clone()),
            ([], Some(i)) => Mode::Live(i.clone()),
            ([], None) => Mode::Config(self.cfg.clone()),
        }
    }
}

/// A line to print after clap's "unexpected argument" error: every flag metro knows, since clap
/// only suggests one when the spelling is close.
pub fn flags_hint() -> String {
    let names: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("-{l}")))
        .collect();
    format!(
        "metro's flags are {} (one dash or two); see `metro --help`",
        names.join(", ")
    )
}

/// Go's `strconv.ParseBool`, which `flag` uses for `-st=VALUE`.
fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("'{s}' is not a boolean (true, false, 1, 0, t, f)")),
    }
}

/// Rewrites Go-style single-dash long flags (`-cfg=x`, `-cfg x`, `-st`) to `--cfg=x`, `--cfg x`,
/// `--st`. The program name and values of flags that take one pass unchanged. Single-letter
/// arguments that are not long flags (`-h`, `-V`) are left to clap, and so are unknown names,
/// which clap then reports with a suggestion.
///
/// In go-metro mode (no `--pcap` or `--interface` before it), the first argument that is not a
/// flag, or `--`, ends the flags as in Go's `flag` package: it and what follows are returned
/// apart, to be ignored as go-metro ignores them. In metro's own modes they go to clap, which
/// refuses them.
pub fn normalize(args: Vec<OsString>) -> (Vec<OsString>, Vec<OsString>) {
    let cmd = Cli::command();
    // Long names, and whether each takes a value as the next argument.
    let longs: Vec<(String, bool)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let takes_next = a.get_action().takes_values()
                && !a.is_require_equals_set()
                && a.get_num_args().is_none_or(|n| n.min_values() > 0);
            a.get_long().map(|l| (l.to_string(), takes_next))
        })
        .chain([("help".to_string(), false), ("version".to_string(), false)])
        .collect();
    let find = |name: &str| longs.iter().find(|(l, _)| l == name);

    let mut out = Vec::with_capacity(args.len());
    let mut ignored = Vec::new();
    let mut metro_mode = false;
    let mut it = args.into_iter();
    if let Some(prog) = it.next() {
        out.push(prog);
    }
    while let Some(arg) = it.next() {
        let s = arg.to_str().unwrap_or("");
        let positional = s == "-" || !s.starts_with('-');
        if !metro_mode && (positional || s == "--") {
            // Go's flag package consumes `--` and stops; a positional argument stays.
            if s != "--" {
                ignored.push(arg);
            }
            ignored.extend(it);
            break;
        }
        if s == "--" {
            out.push(arg);
            out.extend(it);
            break;
        }
        let (dashes, body) = if let Some(b) = s.strip_prefix("--") {
            (2, b)
        } else if let Some(b) = s.strip_prefix('-').filter(|_| !positional) {
            (1, b)
        } else {
            out.push(arg);
            continue;
        };
        let (name, has_value) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        let known = find(name);
        metro_mode |= matches!(name, "pcap" | "interface");
        let rewrite = dashes == 1 && !name.is_empty() && (known.is_some() || name.len() > 1);
        let long = if rewrite {
            format!("-{s}")
        } else {
            s.to_string()
        };
        match known {
            // Join the value with '=' so that clap takes it even when it starts with '-'.
            Some((_, true)) if !has_value => match it.next() {
                Some(v) => {
                    let mut joined = OsString::from(format!("{long}="));
                    joined.push(v);
                    out.push(joined);
                }
                None => out.push(OsString::from(long)),
            },
            _ => out.push(OsString::from(long)),
        }
    }
    (out, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut v = vec!["metro"];
        v.extend_from_slice(args);
        Cli::parse_args(v).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn defaults_are_go_metros() {
        let c = parse(&[]);
        assert_eq!(c.ring_blocks, RingConfig::default().block_count);
        assert_eq!(c.cfg, PathBuf::from("/etc/dd-agent/checks.d/go-metro.yaml"));
        assert_eq!(c.log, PathBuf::from("/var/log/datadog/go-metro.log"));
        assert_eq!(c.filter, "tcp");
        assert!(!c.st);
        assert_eq!(
            c.mode(),
            Mode::Config("/etc/dd-agent/checks.d/go-metro.yaml".into())
        );
    }

    #[test]
    fn go_style_and_double_dash_flags_mean_the_same() {
        for args in [
            &["-cfg=/a.yaml", "-log=/b.log", "-f=tcp", "-st"][..],
            &["-cfg", "/a.yaml", "-log", "/b.log", "-f", "tcp", "-st=true"][..],
            &["--cfg=/a.yaml", "--log=/b.log", "--f=tcp", "--st"][..],
            &[
                "--cfg", "/a.yaml", "--log", "/b.log", "--f", "tcp", "--st=1",
            ][..],
            &["-cfg", "/a.yaml", "--log=/b.log", "-f", "tcp", "-st=T"][..],
        ] {
            let c = parse(args);
            assert_eq!(c.cfg, PathBuf::from("/a.yaml"), "{args:?}");
            assert_eq!(c.log, PathBuf::from("/b.log"), "{args:?}");
            assert_eq!(c.filter, "tcp", "{args:?}");
            assert!(c.st, "{args:?}");
        }
    }

    #[test]
    fn live_ring_sizes_take_both_styles_and_need_an_interface() {
        let c = parse(&[
            "--interface",
            "eth0",
            "-ring-block-size=2097152",
            "--ring-blocks",
            "8",
            "-ring-block-timeout",
            "20",
        ]);
        assert_eq!(
            (c.ring_block_size, c.ring_blocks, c.ring_block_timeout),
            (2 << 20, 8, 20)
        );
        assert!(Cli::parse_args(["metro", "--ring-blocks", "8"]).is_err());
        assert!(Cli::parse_args(["metro", "--interface", "eth0", "--ring-blocks", "1"]).is_err());
    }

    #[test]
    fn st_takes_go_booleans_only_after_equals() {
        for (v, want) in [("false", false), ("0", false), ("F", false), ("true", true)] {
            assert_eq!(parse(&[&format!("-st={v}")]).st, want, "{v}");
        }
        assert!(Cli::parse_args(["metro", "-st=maybe"]).is_err());
        // As in Go, a bool flag does not take the next argument as its value: `false` is the
        // first argument that is not a flag, so it and the rest are ignored.
        let c = parse(&["-st", "false", "-cfg=/x.yaml"]);
        assert!(c.st);
        assert_eq!(c.ignored, vec!["false", "-cfg=/x.yaml"]);
    }

    #[test]
    fn filter_values_that_look_like_flags_pass_through() {
        let c = parse(&["-f", "tcp and not port 22", "-cfg", "-weird.yaml"]);
        assert_eq!(c.filter, "tcp and not port 22");
        assert_eq!(c.cfg, PathBuf::from("-weird.yaml"));
    }

    #[test]
    fn offline_flags_still_work_in_both_styles() {
        let c = parse(&[
            "--pcap",
            "x.pcap",
            "-workers=2",
            "-format",
            "json",
            "-samples",
        ]);
        assert_eq!(c.mode(), Mode::Offline(vec!["x.pcap".into()]));
        assert_eq!(c.workers, Some(2));
        assert_eq!(c.format, Format::Json);
        assert!(c.samples);
        let c = parse(&["-pcap=y.pcap", "--local", "10.0.0.1"]);
        assert_eq!(c.mode(), Mode::Offline(vec!["y.pcap".into()]));
        assert_eq!(
            c.local,
            vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn plot_flags_need_a_capture_and_take_pairs() {
        let c = parse(&[
            "--pcap",
            "x.pcap",
            "-plot",
            "a.svg",
            "--plot-pair",
            "10.0.0.1,2001:db8::2",
            "--plot-pair=10.0.0.3, 10.0.0.4",
        ]);
        assert_eq!(c.plot, Some(PathBuf::from("a.svg")));
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            c.plot_pair,
            vec![
                (ip("10.0.0.1"), ip("2001:db8::2")),
                (ip("10.0.0.3"), ip("10.0.0.4"))
            ]
        );
        assert_eq!(
            parse(&[
                "--interface",
                "eth0",
                "--plot",
                "b.png",
                "--plot-pairs",
                "3"
            ])
            .plot_pairs,
            Some(3)
        );
        assert!(Cli::parse_args(["metro", "--plot", "a.svg"]).is_err());
        assert!(Cli::parse_args(["metro", "--pcap", "x", "--plot-pairs", "3"]).is_err());
        assert!(Cli::parse_args([
            "metro",
            "--pcap",
            "x",
            "--plot",
            "a.svg",
            "--plot-pair",
            "10.0.0.1"
        ])
        .is_err());
        assert!(Cli::parse_args([
            "metro",
            "--pcap",
            "x",
            "--plot",
            "a.svg",
            "--plot-pairs",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn unknown_flags_are_errors_with_a_hint() {
        let e = Cli::parse_args(["metro", "-cgf=/x"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(e.to_string().contains("'--cgf'"), "{e}");
        assert_eq!(
            flags_hint(),
            "metro's flags are -cfg, -log, -f, -st, -pcap, -interface, -duration, -interval, -ring-block-size, -ring-blocks, -ring-block-timeout, -dump-flows, -local, -workers, -max-pairs, -max-flows, -format, -samples, -by, -max-ports, -prometheus, -plot, -plot-pairs, -plot-pair, -user, -seccomp (one dash or two); see `metro --help`"
        );
        let e = Cli::parse_args(["metro", "-stt"]).unwrap_err();
        assert!(
            e.to_string().contains("a similar argument exists: '--st'"),
            "{e}"
        );
        // In metro's own modes a stray argument is an error; in go-metro mode it ends the
        // flags, as in Go, and it and the rest are ignored.
        let e = Cli::parse_args(["metro", "--pcap", "x", "stray"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        let c = parse(&["-cfg=/a.yaml", "stray", "-log=/b.log"]);
        assert_eq!(c.cfg, PathBuf::from("/a.yaml"));
        assert_eq!(
            c.log,
            PathBuf::from(DEFAULT_LOG_FILE),
            "not read after the stray one"
        );
        assert_eq!(c.ignored, vec!["stray", "-log=/b.log"]);
    }

    #[test]
    fn by_takes_a_list_and_port_brings_its_cap() {
        let c = parse(&["--pcap", "x"]);
        assert_eq!(c.by, vec![By::Pair]);
        assert!(!c.by_flow());
        assert_eq!(c.max_ports(), None);
        let c = parse(&["--pcap", "x", "--by", "port"]);
        assert_eq!(c.max_ports(), Some(DEFAULT_MAX_PORTS));
        let c = parse(&["--pcap", "x", "-by=flow,port", "--max-ports", "3"]);
        assert!(c.by_flow());
        assert_eq!(c.max_ports(), Some(3));
        // Without --by port the cap has nothing to bound.
        assert_eq!(
            parse(&["--pcap", "x", "--max-ports", "3"]).max_ports(),
            None
        );
        assert!(Cli::parse_args(["metro", "--pcap", "x", "--by", "service"]).is_err());
        assert!(Cli::parse_args(["metro", "--pcap", "x", "--max-ports", "0"]).is_err());
    }

    #[test]
    fn help_is_reachable_go_style() {
        for h in ["-h", "-help", "--help"] {
            let e = Cli::parse_args(["metro", h]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{h}");
        }
    }

    #[test]
    fn normalize_leaves_values_alone_and_ends_go_flags_at_the_terminator() {
        let strings = |v: Vec<OsString>| -> Vec<String> {
            v.into_iter().map(|s| s.into_string().unwrap()).collect()
        };
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let (n, ignored) = normalize(args(&["metro", "-cfg", "-x", "--", "-log"]));
        assert_eq!(strings(n), vec!["metro", "--cfg=-x"]);
        assert_eq!(strings(ignored), vec!["-log"]);
        let (n, ignored) = normalize(args(&["metro", "--pcap", "a", "--", "-log"]));
        assert_eq!(strings(n), vec!["metro", "--pcap=a", "--", "-log"]);
        assert!(ignored.is_empty());
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value_as_in_go() {
        let c = parse(&["-cfg=/a.yaml", "-cfg", "/b.yaml", "-log=/x", "--log=/y"]);
        assert_eq!(c.cfg, PathBuf::from("/b.yaml"));
        assert_eq!(c.log, PathBuf::from("/y"));
    }
}
