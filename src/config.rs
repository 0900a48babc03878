//! go-metro's YAML configuration, plus metro's additions, validated once into plain structs.
//!
//! Agent packages start go-metro as `go-metro -cfg=/etc/<agent>/conf.d/go-metro.yaml`, so metro
//! reads the same file with the same meaning: `init_config` holds the process-wide settings and
//! `instances` (go-metro's older releases said `config`) lists the interfaces to sniff. The file is
//! read with `serde-saphyr`, whose YAML 1.1 booleans (`yes`, `on`, `n`…) match go-metro's
//! `yaml.v2`, and whose locations let every message name the file, the key and the line.
//!
//! Validation happens here, once: the rest of metro receives a [`Config`] whose values are all in
//! range, and never sees YAML. The checks go-metro makes are kept with go-metro's own words (see
//! [`msg`]); the bugs it has are not (both `exp_ttl` and `expired_ttl` are read; `error` and
//! `critical` log levels mean what they say).
//!
//! What this module does not do: name resolution of `hosts` and `ips` (that needs the network and
//! a timeout, and happens when metro starts the instance), or checking that whitelisted addresses
//! are local (that needs the interface's addresses).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::capture::filter::Net;

/// Where go-metro looks for its configuration when `-cfg` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/dd-agent/checks.d/go-metro.yaml";

/// The largest snap length libpcap takes (`MAXIMUM_SNAPLEN`); go-metro's libpcap cuts a larger
/// one to it.
pub const MAX_SNAPLEN: u32 = 262_144;

/// The `interface` value that means "read the `pcap` file instead".
pub const FILE_INTERFACE: &str = "file";

/// go-metro's messages, word for word, for the cases where metro refuses a config as it does.
pub mod msg {
    /// No `instances` (go-metro's `config.go`).
    pub const NO_INSTANCES: &str = "No sniffing interfaces specified.";
    /// An instance without `interface`.
    pub const EMPTY_IFACE: &str = "Error parsing configuration - empty iface field.";
    /// `interface: file` without `pcap`.
    pub const EMPTY_PCAP: &str =
        "Error parsing configuration - empty pcap field for file interface.";
    /// Neither `ips` nor `hosts` (go-metro's `metro.go`).
    pub const NO_WHITELIST: &str = "Whitelists must be enabled for go-metro to run (you may whitelist by IP or hostname in config file).";
    /// Every whitelisted address is one of the host's own (go-metro's `sniff.go`).
    pub const LOCAL_WHITELIST: &str = "Whitelist cannot contain just local addresses! Bailing out";
    /// An unknown `log_level` (go-metro's `metro.go`), with `{}` for the level.
    pub const UNKNOWN_LEVEL: &str =
        "Configured log level \"{}\" unknown - defaulting to WARNING level.";
}

/// The bounds of metro's own numeric settings, written once here: the file's values are checked
/// against them in this module, the command line's by clap, and the engines rely on them.
pub mod limits {
    use std::ops::RangeInclusive;

    /// Bytes per ring block: at least a page; at most 256 MiB, far more than a ring needs. A
    /// block must also be a whole number of pages ([`ring_block_size`]).
    pub const RING_BLOCK_SIZE: RangeInclusive<i64> = 4096..=1 << 28;
    /// Blocks per ring: two, so the kernel fills one while a worker reads the other.
    pub const RING_BLOCKS: RangeInclusive<i64> = 2..=65_536;
    /// Milliseconds before the kernel hands over a block that is not full.
    pub const RING_BLOCK_TIMEOUT_MS: RangeInclusive<i64> = 1..=60_000;
    /// Workers per live capture.
    pub const WORKERS: RangeInclusive<i64> = 1..=1024;
    /// Flows one worker tracks at once: a table as small as a test needs, and at most 10^8
    /// (13 GB of IPv4 entries per worker), beyond any machine metro runs on.
    pub const MAX_FLOWS: RangeInclusive<i64> = 16..=100_000_000;
    /// Host pairs reported apart: a worker names a pair's slot in 24 bits.
    pub const MAX_PAIRS: RangeInclusive<i64> = 1..=16_000_000;
    /// Server ports of one host pair reported apart: at least one, at most every port.
    pub const MAX_PORTS: RangeInclusive<i64> = 1..=65_536;

    /// `A to B`, for messages.
    pub fn text(r: &RangeInclusive<i64>) -> String {
        format!("{} to {}", r.start(), r.end())
    }

    /// The size of a memory page.
    pub fn page_size() -> i64 {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096)
    }

    /// Checks a ring block size: within [`RING_BLOCK_SIZE`], and a whole number of pages, as the
    /// kernel maps a ring block by block and refuses (`EINVAL`) a block that is not page-aligned.
    pub fn ring_block_size(n: i64) -> Result<u32, String> {
        let page = page_size();
        if n % page != 0 {
            return Err(format!(
                "{n} is not a multiple of the page size ({page} bytes)"
            ));
        }
        if !RING_BLOCK_SIZE.contains(&n) {
            return Err(format!("{n} is outside {} bytes", text(&RING_BLOCK_SIZE)));
        }
        Ok(n as u32)
    }
}

/// Sizes of each live worker's TPACKET_V3 ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks per ring.
    pub block_count: u32,
    /// How long the kernel waits before handing over a block that is not full.
    pub block_timeout: Duration,
}

impl RingConfig {
    /// Checks the sizes against [`limits`]: for a ring configured in code (the flags and the
    /// file are checked against the same limits as they are read, key by key).
    pub fn check(&self) -> Result<(), String> {
        limits::ring_block_size(i64::from(self.block_size))
            .map_err(|e| format!("ring block size: {e}"))?;
        if !limits::RING_BLOCKS.contains(&i64::from(self.block_count)) {
            return Err(format!(
                "ring block count {} is outside {}: use at least 2, so the kernel can fill one \
                 block while a worker reads another",
                self.block_count,
                limits::text(&limits::RING_BLOCKS)
            ));
        }
        let ms = i64::try_from(self.block_timeout.as_millis()).unwrap_or(i64::MAX);
        if !limits::RING_BLOCK_TIMEOUT_MS.contains(&ms) {
            return Err(format!(
                "ring block timeout {ms} ms is outside {} ms",
                limits::text(&limits::RING_BLOCK_TIMEOUT_MS)
            ));
        }
        Ok(())
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            // 1 MiB holds about 6,000 small frames with their ring headers, so at high rates a
            // block changes hands rarely; it is also a size the kernel allocates easily (order 8).
            block_size: 1 << 20,
            // 16 MiB per worker rides out ~100 ms of a stalled worker at 1 M small packets/s.
            block_count: 16,
            // Only delays delivery, never timestamps (they come from the ring): 10 ms keeps a
            // quiet ring's packets flowing and is short against a report interval.
            block_timeout: Duration::from_millis(10),
        }
    }
}

/// A duty cycle: capture for `on` out of every `every` (go-metro's `sample_duration` and
/// `sample_interval`, in metro's reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DutyCycle {
    /// Capture time per period.
    pub on: Duration,
    /// The period.
    pub every: Duration,
}

/// A flow with no packets for this long is forgotten: go-metro's default `idle_ttl`.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(300);
/// A flow that has closed (FIN or RST) is forgotten after this long: go-metro's default
/// `exp_ttl`, long enough for the last ACKs of a closing flow.
pub const DEFAULT_EXP_TTL: Duration = Duration::from_secs(60);

/// Flows a worker tracks at once (`max_flows`, `--max-flows`): 256 Ki flows × 128 B, the table's
/// slack included, is at most 32 MiB per worker, grown on demand, and IPv6 flows' addresses
/// (about 30 B a host, each host once); a busy gateway sees tens of thousands of concurrent
/// connections.
pub const DEFAULT_MAX_FLOWS: usize = 256 * 1024;

/// Host pairs reported apart in an interval (`max_pairs`, `--max-pairs`): bounds a worker's
/// recorders and the report's lines whatever the traffic (a scan or spoofed sources make a new
/// pair per packet), high enough that the real peers of a host or a gateway fit under it.
pub const DEFAULT_MAX_PAIRS: usize = 250_000;

/// Server ports a host pair keeps apart, with the port dimension on (`max_ports`,
/// `--max-ports`): a host's services (HTTPS, a database, a cache, …) are a handful, while a
/// scanner or a peer-to-peer host would make one series per port it touches.
pub const DEFAULT_MAX_PORTS: usize = 32;

/// How much metro logs. go-metro's names are accepted, case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// What metro does: start-up, interfaces, filter, whitelist resolution.
    Info,
    /// Things that went wrong but did not stop metro.
    Warn,
    /// Failures.
    Error,
    /// Only failures that stop metro.
    Critical,
}

impl LogLevel {
    /// go-metro's level names: trace, debug, info, warn/warning, error/err, critical/crit.
    pub fn from_name(name: &str) -> Option<LogLevel> {
        let n = name.trim().to_ascii_lowercase();
        Some(match n.as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" | "err" => LogLevel::Error,
            "critical" | "crit" => LogLevel::Critical,
            _ => return None,
        })
    }

    /// The name seelog (go-metro's logger) prints for the level.
    pub fn label(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        }
    }
}

/// `init_config`: settings shared by every instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InitConfig {
    /// Bytes captured per frame. Default 512, the value in every go-metro example: enough for
    /// the largest Ethernet + IPv6 + TCP header with options.
    pub snaplen: u32,
    /// A flow with no packets for this long is forgotten ([`DEFAULT_IDLE_TTL`]).
    pub idle_ttl: Duration,
    /// A flow that has closed (FIN or RST) is forgotten after this long ([`DEFAULT_EXP_TTL`]).
    pub exp_ttl: Duration,
    /// Where DogStatsD listens. Default 127.0.0.1, the agent's.
    pub statsd_ip: String,
    /// DogStatsD's port. Default 8125, the agent's.
    pub statsd_port: u16,
    /// Log to the `-log` file (with rotation) instead of standard error. Default false: go-metro
    /// logs to standard error when the key is absent.
    pub log_to_file: bool,
    /// Least severe level logged. Default warn, which is what go-metro ends up with when the key
    /// is absent or unknown.
    pub log_level: LogLevel,
    /// metro: how often gauges are sent. Default 30 s, go-metro's fixed period.
    pub report_interval: Duration,
    /// metro: workers per live instance; `None` means one per CPU.
    pub workers: Option<usize>,
    /// metro: most flows a worker tracks at once ([`DEFAULT_MAX_FLOWS`]).
    pub max_flows: usize,
    /// metro: most host pairs reported apart per interval ([`DEFAULT_MAX_PAIRS`]); the samples of
    /// any more go to the `other` series.
    pub max_pairs: usize,
    /// metro: `group_by: [src, dst, port]` keeps series per server port too (a `port:` tag);
    /// default `[src, dst]`, go-metro's series.
    pub group_by_port: bool,
    /// metro: with `group_by_port`, most server ports of a host pair reported apart per
    /// interval ([`DEFAULT_MAX_PORTS`]); the samples of the others go to its port `other`.
    pub max_ports: usize,
    /// metro: also send `.min`, `.max`, `.95percentile`, `.99percentile` and `.count`. Default
    /// off, as go-metro sends only three gauges.
    pub percentile_gauges: bool,
    /// metro: also send metro's own health (`metro.packets`, `metro.kernel.drops`, …). Default
    /// off: for Datadog users every series is a billable custom metric, and go-metro sent none.
    pub self_metrics: bool,
    /// metro: refuse an empty or only-local whitelist, as go-metro does. Default true; a gateway,
    /// which forwards other hosts' traffic, sets it to false.
    pub require_whitelist: bool,
    /// metro: the user to run as once set up (`--user` overrides it); `None` stays as started.
    pub user: Option<String>,
    /// metro: each live worker's TPACKET_V3 ring (`ring_block_size` bytes, `ring_blocks`,
    /// `ring_block_timeout` ms). Defaults in [`RingConfig::default`].
    pub ring: RingConfig,
    /// metro: serve `/metrics` to Prometheus on this address (`prometheus_listen: ADDR:PORT`).
    /// Default none: go-metro had no such endpoint.
    pub prometheus_listen: Option<std::net::SocketAddr>,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            snaplen: 512,
            idle_ttl: DEFAULT_IDLE_TTL,
            exp_ttl: DEFAULT_EXP_TTL,
            statsd_ip: "127.0.0.1".into(),
            statsd_port: 8125,
            log_to_file: false,
            log_level: LogLevel::Warn,
            report_interval: Duration::from_secs(30),
            workers: None,
            max_flows: DEFAULT_MAX_FLOWS,
            max_pairs: DEFAULT_MAX_PAIRS,
            group_by_port: false,
            max_ports: DEFAULT_MAX_PORTS,
            percentile_gauges: false,
            self_metrics: false,
            require_whitelist: true,
            user: None,
            ring: RingConfig::default(),
            prometheus_listen: None,
        }
    }
}

/// Where an instance's packets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A live interface.
    Interface(String),
    /// A capture file (`interface: file`).
    File(PathBuf),
}

/// One whitelisted `ips` entry: an address, a CIDR range or a host name, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhitelistEntry {
    /// As written in the file.
    pub text: String,
    /// The range it covers; `None` for a host name, resolved when the instance starts.
    pub net: Option<Net>,
    /// The single address it names, when it is not a wider range: such entries are
    /// reverse-resolved for tag names.
    pub single: Option<std::net::IpAddr>,
}

/// One `instances` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Where the packets come from.
    pub source: Source,
    /// The `interface` value as written: the `iface:` tag (`file` for files, as go-metro).
    pub interface: String,
    /// User tags, sent as written.
    pub tags: Vec<String>,
    /// Whitelisted addresses and ranges.
    pub ips: Vec<WhitelistEntry>,
    /// Whitelisted host names, resolved at start.
    pub hosts: Vec<String>,
    /// Capture only part of the time.
    pub duty: Option<DutyCycle>,
    /// Line of the entry in the file, for messages.
    pub line: u64,
}

/// The whole file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `init_config`.
    pub init: InitConfig,
    /// `instances`, at least one.
    pub instances: Vec<Instance>,
    /// Things worth telling the user that do not stop metro (unknown keys, odd values), to be
    /// logged once logging is set up.
    pub warnings: Vec<String>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. go-metro then waits 5 s and exits 0; so does metro.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid YAML, or a value is wrong.
    #[error("{}{}: {key}: {msg}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<u64>,
        /// The key, as a path: `instances[1].ips[0]`.
        key: String,
        /// What is wrong, and what to do.
        msg: String,
    },
}

impl ConfigError {
    fn at(path: &Path, line: Option<u64>, key: impl Into<String>, msg: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_owned(),
            line: line.filter(|&l| l > 0),
            key: key.into(),
            msg: msg.into(),
        }
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

// ---------------------------------------------------------------------------------------------
// The file as written. Every value is optional and spanned, so that a check can name its line.

type S<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
struct RawFile {
    init_config: Option<RawInit>,
    instances: S<Option<Vec<Spanned<Option<RawInstance>>>>>,
    /// go-metro before it followed the agent's `instances` convention.
    config: S<Option<Vec<Spanned<Option<RawInstance>>>>>,
}

#[derive(Deserialize, Default)]
struct RawInit {
    snaplen: S<GoInt>,
    idle_ttl: S<GoInt>,
    exp_ttl: S<GoInt>,
    expired_ttl: S<GoInt>,
    statsd_ip: S<Option<GoStr>>,
    statsd_port: S<GoInt>,
    log_to_file: S<bool>,
    log_level: S<Option<GoStr>>,
    report_interval: S<f64>,
    workers: S<i64>,
    max_flows: S<i64>,
    max_pairs: S<i64>,
    group_by: S<Option<Vec<Spanned<Option<GoStr>>>>>,
    max_ports: S<i64>,
    percentile_gauges: S<bool>,
    self_metrics: S<bool>,
    require_whitelist: S<bool>,
    user: S<Option<String>>,
    ring_block_size: S<i64>,
    ring_blocks: S<i64>,
    ring_block_timeout: S<i64>,
    prometheus_listen: S<Option<String>>,
}

#[derive(Deserialize, Default)]
struct RawInstance {
    interface: S<Option<GoStr>>,
    pcap: S<Option<GoStr>>,
    tags: Option<Vec<Spanned<Option<GoStr>>>>,
    ips: Option<Vec<Spanned<Option<GoStr>>>>,
    hosts: Option<Vec<Spanned<Option<GoStr>>>>,
    sample: S<bool>,
    sample_duration: S<GoInt>,
    sample_interval: S<GoInt>,
}

/// A whole number as go-metro's `yaml.v2` decodes one into a Go `int`: a float is truncated
/// toward zero (`512.0` and `512.9` are both 512), anything else that is not a number is an
/// error. `float` keeps the value as written, so that metro can say what it assumed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct GoInt {
    value: i64,
    float: Option<f64>,
}

impl<'de> Deserialize<'de> for GoInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct GoIntVisitor;
        impl Visitor<'_> for GoIntVisitor {
            type Value = GoInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoInt, E> {
                Ok(GoInt {
                    value: v,
                    float: None,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoInt, E> {
                i64::try_from(v)
                    .map(|value| GoInt { value, float: None })
                    .map_err(|_| E::custom("expected a whole number below 2^63"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoInt, E> {
                // yaml.v2: `resolved <= math.MaxInt64 && !out.OverflowInt(int64(resolved))`.
                if v.is_finite() && v.abs() < 9.2e18 {
                    Ok(GoInt {
                        value: v.trunc() as i64,
                        float: Some(v),
                    })
                } else {
                    Err(E::custom("expected a whole number"))
                }
            }
        }
        d.deserialize_any(GoIntVisitor)
    }
}

/// A string as `yaml.v2` decodes one into a Go `string`: any scalar, as written (`tags: [1]`
/// is the tag `1`).
#[derive(Debug, Clone, PartialEq)]
struct GoStr(String);

impl<'de> Deserialize<'de> for GoStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct GoStrVisitor;
        impl Visitor<'_> for GoStrVisitor {
            type Value = GoStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoStr, E> {
                Ok(GoStr(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoStr, E> {
                Ok(GoStr(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoStr, E> {
                Ok(GoStr(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoStr, E> {
                Ok(GoStr(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<GoStr, E> {
                Ok(GoStr(v.to_string()))
            }
        }
        d.deserialize_any(GoStrVisitor)
    }
}

const TOP_KEYS: &[&str] = &["init_config", "instances", "config"];
const INIT_KEYS: &[&str] = &[
    "snaplen",
    "idle_ttl",
    "exp_ttl",
    "expired_ttl",
    "statsd_ip",
    "statsd_port",
    "log_to_file",
    "log_level",
    "report_interval",
    "workers",
    "max_flows",
    "max_pairs",
    "group_by",
    "max_ports",
    "percentile_gauges",
    "self_metrics",
    "require_whitelist",
    "user",
    "ring_block_size",
    "ring_blocks",
    "ring_block_timeout",
    "prometheus_listen",
];
const INSTANCE_KEYS: &[&str] = &[
    "interface",
    "pcap",
    "tags",
    "ips",
    "hosts",
    "sample",
    "sample_duration",
    "sample_interval",
];

/// The keys of a mapping, with their lines; values are skipped. Used to warn about keys metro
/// does not know (go-metro ignores them silently, so metro must not refuse them).
struct Keys(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = m.next_key::<Spanned<String>>()? {
                    m.next_value::<IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
        }
        d.deserialize_any(KeysVisitor)
    }
}

#[derive(Deserialize, Default)]
struct KeyTree {
    init_config: Option<Keys>,
    instances: Option<Vec<Option<Keys>>>,
    config: Option<Vec<Option<Keys>>>,
}

fn unknown_keys(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |keys: &Keys, known: &[&str], parent: &str| {
        for k in &keys.0 {
            if !known.contains(&k.value.as_str()) {
                out.push(format!(
                    "line {}: {parent}{}: unknown key, ignored (known keys: {})",
                    k.referenced.line(),
                    k.value,
                    known.join(", ")
                ));
            }
        }
    };
    if let Ok(top) = serde_saphyr::from_str::<Keys>(text) {
        check(&top, TOP_KEYS, "");
    }
    if let Ok(tree) = serde_saphyr::from_str::<KeyTree>(text) {
        if let Some(k) = &tree.init_config {
            check(k, INIT_KEYS, "init_config.");
        }
        for (name, list) in [("instances", &tree.instances), ("config", &tree.config)] {
            for (i, k) in list.iter().flatten().enumerate() {
                if let Some(k) = k {
                    check(k, INSTANCE_KEYS, &format!("{name}[{i}]."));
                }
            }
        }
    }
    out
}

/// Parses and validates the text of a configuration file; `path` is used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    // yaml.v2 lets a repeated key overwrite the earlier one; so does metro.
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
    };
    let raw: RawFile = match serde_saphyr::from_str_with_options::<Option<RawFile>>(text, options) {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => return Err(yaml_error(path, text, &e)),
    };
    let mut warnings = unknown_keys(text);
    let init = init_config(path, raw.init_config.unwrap_or_default(), &mut warnings)?;

    let (list_key, list) = match (raw.instances, raw.config) {
        (Some(a), Some(b)) => {
            warnings.push(format!(
                "line {}: config: go-metro's older list is ignored, as go-metro ignores it, because `instances` (line {}) is present; remove one of them",
                b.referenced.line(),
                a.referenced.line()
            ));
            ("instances", Some(a))
        }
        (Some(a), None) => ("instances", Some(a)),
        (None, Some(b)) => ("config", Some(b)),
        (None, None) => ("instances", None),
    };
    let (list_line, items) = match list {
        Some(l) => (Some(l.referenced.line()), l.value.unwrap_or_default()),
        // `instances:` with nothing after it reads as absent; find its line by hand.
        None => (
            text.lines()
                .position(|l| l.starts_with(&format!("{list_key}:")))
                .map(|i| i as u64 + 1),
            Vec::new(),
        ),
    };
    if items.is_empty() {
        return Err(ConfigError::at(
            path,
            list_line,
            list_key,
            format!(
                "{} Add an `instances:` list with at least one entry such as `- interface: eth0`.",
                msg::NO_INSTANCES
            ),
        ));
    }
    let mut instances = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("{list_key}[{i}]");
        let line = item.referenced.line();
        let raw = item.value.unwrap_or_default();
        instances.push(instance(path, &key, line, raw, &init, &mut warnings)?);
    }
    Ok(Config {
        path: path.to_owned(),
        init,
        instances,
        warnings,
    })
}

fn line_of<T>(s: &Spanned<T>) -> Option<u64> {
    Some(s.referenced.line())
}

fn non_negative(path: &Path, key: &str, v: &Spanned<i64>) -> Result<u64, ConfigError> {
    u64::try_from(v.value).map_err(|_| {
        ConfigError::at(
            path,
            line_of(v),
            key,
            format!("{} is negative; give a number of at least 0", v.value),
        )
    })
}

/// A metro setting that must lie in `range`; the error names the range and the unit.
fn ranged(
    path: &Path,
    key: &str,
    v: &Spanned<i64>,
    range: std::ops::RangeInclusive<i64>,
    unit: &str,
) -> Result<i64, ConfigError> {
    if v.value < 0 {
        non_negative(path, key, v)?;
    }
    if range.contains(&v.value) {
        Ok(v.value)
    } else {
        Err(ConfigError::at(
            path,
            line_of(v),
            key,
            format!("{} is outside {} {unit}", v.value, limits::text(&range)),
        ))
    }
}

/// The value of a go-metro integer key, warning when it was written as a float (go-metro's
/// `yaml.v2` truncates it, and so does metro).
fn go_int(key: &str, v: &Spanned<GoInt>, warnings: &mut Vec<String>) -> i64 {
    if let Some(f) = v.value.float {
        warnings.push(format!(
            "line {}: {key}: {f} is not a whole number; read as {}, as go-metro reads it",
            v.referenced.line(),
            v.value.value
        ));
    }
    v.value.value
}

/// A go-metro duration in seconds, where 0 means the default; a negative one, which go-metro
/// accepts and misuses, is replaced by the default with a warning.
fn go_secs(
    key: &str,
    v: &Spanned<GoInt>,
    default: Duration,
    warnings: &mut Vec<String>,
) -> Duration {
    match go_int(key, v, warnings) {
        0 => default,
        n if n < 0 => {
            warnings.push(format!(
                "line {}: {key}: {n} is negative; using the default, {} s",
                v.referenced.line(),
                default.as_secs()
            ));
            default
        }
        n => Duration::from_secs(n as u64),
    }
}

fn go_str(v: &S<Option<GoStr>>) -> Option<&str> {
    v.as_ref()
        .and_then(|s| s.value.as_ref())
        .map(|s| s.0.trim())
}

fn init_config(
    path: &Path,
    raw: RawInit,
    warnings: &mut Vec<String>,
) -> Result<InitConfig, ConfigError> {
    let mut c = InitConfig::default();
    // One of metro's numeric keys, checked against its range in `limits`.
    let within = |key: &str, v: &S<i64>, range, unit: &str| {
        v.as_ref()
            .map(|v| ranged(path, &format!("init_config.{key}"), v, range, unit))
            .transpose()
    };
    if let Some(v) = &raw.snaplen {
        let n = go_int("init_config.snaplen", v, warnings);
        let line = v.referenced.line();
        // libpcap, under go-metro, takes 0 or less as "the most", and cuts anything larger
        // to its most; metro needs only the headers, so 0 keeps the default.
        if n < 0 {
            warnings.push(format!(
                "line {line}: init_config.snaplen: {n} is negative; using the default, {} bytes",
                c.snaplen
            ));
        } else if n > MAX_SNAPLEN as i64 {
            warnings.push(format!(
                "line {line}: init_config.snaplen: {n} is more than libpcap's most, {MAX_SNAPLEN}; using {MAX_SNAPLEN}"
            ));
            c.snaplen = MAX_SNAPLEN;
        } else if n > 0 {
            if n < 104 {
                warnings.push(format!(
                    "line {line}: init_config.snaplen: {n} is below 104 bytes, so long TCP headers will be cut and their segments skipped"
                ));
            }
            c.snaplen = n as u32;
        }
    }
    if let Some(v) = &raw.idle_ttl {
        c.idle_ttl = go_secs("init_config.idle_ttl", v, c.idle_ttl, warnings);
    }
    // go-metro documents `exp_ttl` but its code reads `expired_ttl`: metro reads both, and
    // when they disagree takes `expired_ttl`, the value go-metro ran with.
    let exp = match (&raw.exp_ttl, &raw.expired_ttl) {
        (Some(a), Some(b)) => {
            if a.value.value != b.value.value {
                warnings.push(format!(
                    "line {}: init_config.expired_ttl: {} disagrees with exp_ttl {} (line {}); they are the same setting: using expired_ttl, the one go-metro reads",
                    b.referenced.line(),
                    b.value.value,
                    a.value.value,
                    a.referenced.line()
                ));
            }
            Some(("init_config.expired_ttl", b))
        }
        (Some(a), None) => Some(("init_config.exp_ttl", a)),
        (None, Some(b)) => Some(("init_config.expired_ttl", b)),
        (None, None) => None,
    };
    if let Some((key, v)) = exp {
        c.exp_ttl = go_secs(key, v, c.exp_ttl, warnings);
    }
    if let Some(ip) = go_str(&raw.statsd_ip) {
        if !ip.is_empty() {
            c.statsd_ip = ip.to_string();
        }
    }
    if let Some(v) = &raw.statsd_port {
        let n = go_int("init_config.statsd_port", v, warnings);
        c.statsd_port = match u16::try_from(n) {
            Ok(0) => {
                warnings.push(format!(
                    "line {}: init_config.statsd_port: 0 is no port; using the default, {}",
                    v.referenced.line(),
                    c.statsd_port
                ));
                c.statsd_port
            }
            Ok(p) => p,
            Err(_) => {
                return Err(ConfigError::at(
                    path,
                    line_of(v),
                    "init_config.statsd_port",
                    format!("{n} is not a UDP port (1 to 65535)"),
                ))
            }
        };
    }
    if let Some(v) = &raw.log_to_file {
        c.log_to_file = v.value;
    }
    if let Some(Spanned {
        value: Some(GoStr(name)),
        referenced,
        ..
    }) = &raw.log_level
    {
        match LogLevel::from_name(name) {
            Some(l) => c.log_level = l,
            None => warnings.push(format!(
                "line {}: init_config.log_level: {}",
                referenced.line(),
                msg::UNKNOWN_LEVEL.replace("{}", name)
            )),
        }
    }
    if let Some(v) = &raw.report_interval {
        if !(v.value.is_finite() && v.value >= 0.001 && v.value <= 86_400.0) {
            return Err(ConfigError::at(
                path,
                line_of(v),
                "init_config.report_interval",
                format!(
                    "{} is not a number of seconds between 0.001 and 86400",
                    v.value
                ),
            ));
        }
        c.report_interval = Duration::from_secs_f64(v.value);
    }
    // 0 asks for one worker per CPU.
    let workers = 0..=*limits::WORKERS.end();
    if let Some(n) = within("workers", &raw.workers, workers, "workers (0: one per CPU)")? {
        c.workers = (n > 0).then_some(n as usize);
    }
    if let Some(n) = within(
        "max_flows",
        &raw.max_flows,
        limits::MAX_FLOWS,
        "flows per worker",
    )? {
        c.max_flows = n as usize;
    }
    if let Some(n) = within("max_pairs", &raw.max_pairs, limits::MAX_PAIRS, "host pairs")? {
        c.max_pairs = n as usize;
    }
    if let Some(Spanned {
        value: Some(dims),
        referenced,
        ..
    }) = &raw.group_by
    {
        c.group_by_port = group_by(path, referenced.line(), dims)?;
    }
    if let Some(n) = within(
        "max_ports",
        &raw.max_ports,
        limits::MAX_PORTS,
        "ports per host pair",
    )? {
        c.max_ports = n as usize;
    }
    if let Some(v) = &raw.ring_block_size {
        let key = "init_config.ring_block_size";
        c.ring.block_size = limits::ring_block_size(v.value)
            .map_err(|e| ConfigError::at(path, line_of(v), key, e))?;
    }
    if let Some(n) = within(
        "ring_blocks",
        &raw.ring_blocks,
        limits::RING_BLOCKS,
        "blocks per ring",
    )? {
        c.ring.block_count = n as u32;
    }
    let timeout = &raw.ring_block_timeout;
    if let Some(ms) = within(
        "ring_block_timeout",
        timeout,
        limits::RING_BLOCK_TIMEOUT_MS,
        "ms",
    )? {
        c.ring.block_timeout = Duration::from_millis(ms as u64);
    }
    if let Some(v) = &raw.percentile_gauges {
        c.percentile_gauges = v.value;
    }
    if let Some(v) = &raw.self_metrics {
        c.self_metrics = v.value;
    }
    if let Some(v) = &raw.require_whitelist {
        c.require_whitelist = v.value;
    }
    if let Some(Spanned {
        value: Some(name), ..
    }) = &raw.user
    {
        c.user = Some(name.clone()).filter(|n| !n.is_empty());
    }
    if let Some(Spanned {
        value: Some(a),
        referenced,
        ..
    }) = &raw.prometheus_listen
    {
        c.prometheus_listen = Some(a.trim().parse().map_err(|_| {
            ConfigError::at(
                path,
                Some(referenced.line()),
                "init_config.prometheus_listen",
                format!("'{a}' is not ADDR:PORT (e.g. 127.0.0.1:9100 or [::]:9100)"),
            )
        })?);
    }
    Ok(c)
}

/// Reads `group_by`: `[src, dst]` or `[src, dst, port]`, in any order. True when it holds `port`.
fn group_by(path: &Path, line: u64, dims: &[Spanned<Option<GoStr>>]) -> Result<bool, ConfigError> {
    const KEY: &str = "init_config.group_by";
    const ALLOWED: &str = "give [src, dst] (per host pair, the default) or [src, dst, port] (per \
                           host pair and server port)";
    let mut seen: Vec<&str> = Vec::new();
    for d in dims {
        let word = d.value.as_ref().map_or("", |w| w.0.trim());
        let at = Some(d.referenced.line());
        match ["src", "dst", "port"].into_iter().find(|&k| k == word) {
            Some(k) if seen.contains(&k) => {
                return Err(ConfigError::at(
                    path,
                    at,
                    KEY,
                    format!("'{k}' is given twice; {ALLOWED}"),
                ))
            }
            Some(k) => seen.push(k),
            None => {
                return Err(ConfigError::at(
                    path,
                    at,
                    KEY,
                    format!("'{word}' is not a dimension metro groups by; {ALLOWED}"),
                ))
            }
        }
    }
    if !(seen.contains(&"src") && seen.contains(&"dst")) {
        return Err(ConfigError::at(
            path,
            Some(line),
            KEY,
            format!("series are always per src and dst; {ALLOWED}"),
        ));
    }
    Ok(seen.contains(&"port"))
}

fn instance(
    path: &Path,
    key: &str,
    line: u64,
    raw: RawInstance,
    init: &InitConfig,
    warnings: &mut Vec<String>,
) -> Result<Instance, ConfigError> {
    let interface = go_str(&raw.interface).unwrap_or("");
    if interface.is_empty() {
        let l = raw.interface.as_ref().map(|s| s.referenced.line());
        return Err(ConfigError::at(
            path,
            l.or(Some(line)),
            format!("{key}.interface"),
            format!(
                "{} Name the interface to sniff (for example `interface: eth0`), or `file` to read `pcap`.",
                msg::EMPTY_IFACE
            ),
        ));
    }
    let source = if interface == FILE_INTERFACE {
        let pcap = go_str(&raw.pcap).unwrap_or("");
        if pcap.is_empty() {
            return Err(ConfigError::at(
                path,
                raw.pcap
                    .as_ref()
                    .map(|s| s.referenced.line())
                    .or(raw.interface.as_ref().map(|s| s.referenced.line())),
                format!("{key}.pcap"),
                format!(
                    "{} Give the capture file to read, `pcap: /path/to/file.pcap`.",
                    msg::EMPTY_PCAP
                ),
            ));
        }
        Source::File(PathBuf::from(pcap))
    } else {
        Source::Interface(interface.to_string())
    };
    let duty = duty_cycle(key, &raw, warnings);

    let mut ips = Vec::new();
    for (j, s) in raw.ips.unwrap_or_default().into_iter().enumerate() {
        let text = s.value.as_ref().map_or("", |t| t.0.trim()).to_string();
        let entry = match text.parse::<Net>() {
            Ok(net) => {
                let single = match text.split_once('/') {
                    None => text.parse().ok(),
                    Some((a, len)) => {
                        let ip: std::net::IpAddr = a.trim().parse().ok().unwrap_or(
                            // Already validated by Net::from_str.
                            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                        );
                        let full = if ip.is_ipv4() { "32" } else { "128" };
                        (len.trim() == full).then_some(ip)
                    }
                };
                WhitelistEntry {
                    text,
                    net: Some(net),
                    single,
                }
            }
            // go-metro puts `host NAME` in its libpcap filter, which resolves the name: so
            // does metro, when it starts the instance.
            Err(_) if is_host_name(&text) => WhitelistEntry {
                text,
                net: None,
                single: None,
            },
            Err(e) => {
                let e = if text.is_empty() {
                    "an empty entry (go-metro's filter `host ` does not compile either)".to_string()
                } else {
                    e
                };
                return Err(ConfigError::at(
                    path,
                    line_of(&s),
                    format!("{key}.ips[{j}]"),
                    format!("{e}; write an address (192.0.2.7, 2001:db8::7), a range (10.0.0.0/8) or a host name"),
                ));
            }
        };
        ips.push(entry);
    }
    let mut hosts = Vec::new();
    for (j, s) in raw.hosts.unwrap_or_default().into_iter().enumerate() {
        let h = s.value.as_ref().map_or("", |t| t.0.trim());
        if h.is_empty() {
            // go-metro looks the empty name up, logs the failure and goes on.
            warnings.push(format!(
                "line {}: {key}.hosts[{j}]: empty host name, skipped (remove the entry or name a host)",
                s.referenced.line()
            ));
            continue;
        }
        hosts.push(h.to_string());
    }
    let mut tags = Vec::new();
    for (j, s) in raw.tags.unwrap_or_default().into_iter().enumerate() {
        match s.value {
            Some(GoStr(t)) if !t.is_empty() => tags.push(t),
            _ => warnings.push(format!(
                "line {}: {key}.tags[{j}]: empty tag, not sent (go-metro sent it as an empty tag)",
                s.referenced.line()
            )),
        }
    }
    if init.require_whitelist && ips.is_empty() && hosts.is_empty() {
        return Err(ConfigError::at(
            path,
            Some(line),
            format!("{key}.ips"),
            format!(
                "{} To report every host instead (a gateway), set `require_whitelist: false` in init_config.",
                msg::NO_WHITELIST
            ),
        ));
    }
    Ok(Instance {
        source,
        interface: interface.to_string(),
        tags,
        ips,
        hosts,
        duty,
        line,
    })
}

/// `sample`, `sample_duration` and `sample_interval` as a duty cycle: capture
/// `sample_duration` s out of every `sample_interval` s. Settings that are no duty cycle in
/// that reading are read as go-metro reads them, with a warning: a duration as long as the
/// interval or longer means "capture `sample_duration` s, then pause `sample_interval` s"
/// (go-metro's loop), and a duration of 0 or none, with which go-metro never captures a
/// packet, turns sampling off.
fn duty_cycle(key: &str, raw: &RawInstance, warnings: &mut Vec<String>) -> Option<DutyCycle> {
    let sample = raw.sample.as_ref().filter(|s| s.value)?;
    let mut get = |v: &S<GoInt>, name: &str| -> u64 {
        let Some(v) = v else { return 0 };
        let n = go_int(&format!("{key}.{name}"), v, warnings);
        u64::try_from(n).unwrap_or(0)
    };
    let on = get(&raw.sample_duration, "sample_duration");
    let every = get(&raw.sample_interval, "sample_interval");
    let line = raw
        .sample_duration
        .as_ref()
        .map_or(sample.referenced.line(), |s| s.referenced.line());
    if on == 0 {
        warnings.push(format!(
            "line {line}: {key}.sample_duration: `sample: true` with no positive sample_duration captures nothing under go-metro; metro captures all the time (sampling off). Give sample_duration and sample_interval in seconds, or drop `sample`"
        ));
        return None;
    }
    if every == 0 {
        warnings.push(format!(
            "line {line}: {key}.sample_interval: no positive sample_interval, so no pause: capturing all the time (sampling off), as go-metro does"
        ));
        return None;
    }
    if on >= every {
        let period = on + every;
        warnings.push(format!(
            "line {line}: {key}.sample_duration: capturing {on} s out of every {every} s is no duty cycle; read as go-metro reads it: capture {on} s, then pause {every} s (every {period} s). To say that in metro's reading, set sample_interval: {period}"
        ));
        return Some(DutyCycle {
            on: Duration::from_secs(on),
            every: Duration::from_secs(period),
        });
    }
    Some(DutyCycle {
        on: Duration::from_secs(on),
        every: Duration::from_secs(every),
    })
}

/// A name that libpcap's `host NAME` would look up: letters, digits, `-`, `_` and dots.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.parse::<std::net::IpAddr>().is_err()
        && !s.contains('/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Turns a YAML or type error into a message with the file, the key path and the line.
fn yaml_error(path: &Path, text: &str, e: &serde_saphyr::Error) -> ConfigError {
    let line = e.location().map(|l| l.line()).filter(|&l| l > 0);
    let key = line
        .map(|l| key_path_at(text, l as usize))
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "(document)".into());
    // The rendered error carries a snippet; its first line is the message, after a location
    // prefix that the caller already shows.
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("invalid YAML").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") => rest,
        _ => first,
    };
    // serde's "invalid type: string \"soon\", expected a whole number": the expectation says it.
    let first = match first.split_once(", expected ") {
        Some((found, _)) if found.starts_with("invalid type") => &first[found.len() + 2..],
        _ => first,
    };
    let what = match first {
        "invalid i64" | "invalid u64" => "expected a whole number",
        "invalid f64" => "expected a number",
        "invalid boolean" => "expected a boolean (true/false, yes/no, on/off)",
        other => other,
    };
    ConfigError::at(path, line, key, what.to_string())
}

/// The dotted key path of the value on 1-based `line`, found by walking up through the lines
/// that are less indented: `instances[1].ips[0]`. A best effort for block-style YAML, which is
/// what go-metro's files are; flow style yields the nearest block key.
///
/// Only for errors that stop the parse: a value that parses carries its own line
/// ([`Spanned`]), but serde-saphyr's error gives a location and no key path, and no
/// [`Spanned`] exists yet for the value that failed.
pub(crate) fn key_path_at(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || line > lines.len() {
        return String::new();
    }
    let content = |l: &str| -> Option<(usize, String)> {
        let stripped = strip_comment(l);
        let t = stripped.trim_end();
        let body = t.trim_start();
        if body.is_empty() || body.starts_with("---") {
            return None;
        }
        Some((t.len() - body.len(), body.to_string()))
    };
    // Each element: (indent, piece), collected bottom-up.
    let mut parts: Vec<String> = Vec::new();
    let mut limit = usize::MAX;
    let mut i = line - 1;
    loop {
        if let Some((ind, body)) = content(lines[i]) {
            let first = i == line - 1;
            if first || ind < limit {
                let (item_ind, rest) = if let Some(r) = body.strip_prefix("- ") {
                    (ind, Some(r.trim_start().to_string()))
                } else if body == "-" {
                    (ind, Some(String::new()))
                } else {
                    (usize::MAX, None)
                };
                if let Some(rest) = rest {
                    // A list item: its key (if any) sits at ind + 2, and it has an index.
                    if let Some(k) = mapping_key(&rest) {
                        if first || ind + 2 < limit {
                            parts.push(k);
                        }
                    }
                    let idx = sibling_index(&lines, i, item_ind, &content);
                    parts.push(format!("[{idx}]"));
                    limit = item_ind;
                } else if let Some(k) = mapping_key(&body) {
                    parts.push(k);
                    limit = ind;
                } else if first {
                    limit = ind + 1;
                }
                if limit == 0 {
                    break;
                }
            }
        }
        if i == 0 {
            break;
        }
        i -= 1;
    }
    let mut out = String::new();
    for p in parts.iter().rev() {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        out.push_str(p);
    }
    out
}

fn strip_comment(l: &str) -> &str {
    let b = l.as_bytes();
    let mut quote = None;
    for (i, &c) in b.iter().enumerate() {
        match (quote, c) {
            (None, b'\'' | b'"') => quote = Some(c),
            (Some(q), _) if q == c => quote = None,
            (None, b'#') if i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t' => return &l[..i],
            _ => {}
        }
    }
    l
}

fn mapping_key(body: &str) -> Option<String> {
    let (k, rest) = body.split_once(':')?;
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let k = k.trim().trim_matches(|c| c == '"' || c == '\'');
    let flow = k.starts_with('{') || k.starts_with('[');
    (!k.is_empty() && !flow && !k.contains(' ')).then(|| k.to_string())
}

fn sibling_index(
    lines: &[&str],
    at: usize,
    indent: usize,
    content: &dyn Fn(&str) -> Option<(usize, String)>,
) -> usize {
    let mut n = 0;
    let mut i = at;
    while i > 0 {
        i -= 1;
        if let Some((ind, body)) = content(lines[i]) {
            if ind < indent || (ind == indent && !body.starts_with('-')) {
                break;
            }
            if ind == indent && (body.starts_with("- ") || body == "-") {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("/etc/go-metro.yaml"), text)
    }

    fn err(text: &str) -> String {
        match p(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const FULL: &str = "\
init_config:
    snaplen: 1024
    idle_ttl: 120
    exp_ttl: 30
    statsd_ip: 10.1.2.3
    statsd_port: 9125
    log_to_file: yes
    log_level: error
    report_interval: 10
    workers: 3
    max_flows: 4096
    max_pairs: 5000
    percentile_gauges: on
    require_whitelist: true
    ring_block_size: 2097152
    ring_blocks: 8
    ring_block_timeout: 20

instances:
  - interface: eth0
    tags:
      - env:prod
      - team:net
    ips:
      - 192.168.0.1
      - 10.0.0.0/8
      - 2001:db8::1/128
    hosts:
      - somehost.example
  - interface: file
    pcap: /tmp/x.pcap
    ips: [162.243.251.92]
    sample: true
    sample_duration: 5
    sample_interval: 60
";

    #[test]
    fn every_key_is_read() {
        let c = p(FULL).unwrap();
        let i = &c.init;
        assert_eq!(i.snaplen, 1024);
        assert_eq!(i.idle_ttl, Duration::from_secs(120));
        assert_eq!(i.exp_ttl, Duration::from_secs(30));
        assert_eq!(i.statsd_ip, "10.1.2.3");
        assert_eq!(i.statsd_port, 9125);
        assert!(i.log_to_file);
        assert_eq!(i.log_level, LogLevel::Error);
        assert_eq!(i.report_interval, Duration::from_secs(10));
        assert_eq!(i.workers, Some(3));
        assert_eq!(i.max_flows, 4096);
        assert_eq!(i.max_pairs, 5000);
        assert!(i.percentile_gauges);
        assert!(i.require_whitelist);
        assert_eq!(
            i.ring,
            RingConfig {
                block_size: 2 << 20,
                block_count: 8,
                block_timeout: Duration::from_millis(20),
            }
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        assert_eq!(c.instances.len(), 2);
        let a = &c.instances[0];
        assert_eq!(a.source, Source::Interface("eth0".into()));
        assert_eq!(a.interface, "eth0");
        assert_eq!(a.tags, vec!["env:prod", "team:net"]);
        let texts: Vec<_> = a.ips.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, vec!["192.168.0.1", "10.0.0.0/8", "2001:db8::1/128"]);
        assert_eq!(a.ips[0].single, Some("192.168.0.1".parse().unwrap()));
        assert_eq!(a.ips[1].single, None);
        assert_eq!(a.ips[2].single, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(a.ips[1].net, Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(a.hosts, vec!["somehost.example"]);
        assert_eq!(a.duty, None);
        assert_eq!(a.line, 20);

        let b = &c.instances[1];
        assert_eq!(b.source, Source::File("/tmp/x.pcap".into()));
        assert_eq!(b.interface, "file");
        assert_eq!(
            b.duty,
            Some(DutyCycle {
                on: Duration::from_secs(5),
                every: Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn absent_keys_take_go_metro_defaults() {
        let c = p("instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n").unwrap();
        assert_eq!(c.init, InitConfig::default());
        assert_eq!(c.init.snaplen, 512);
        assert_eq!(c.init.idle_ttl, Duration::from_secs(300));
        assert_eq!(c.init.exp_ttl, Duration::from_secs(60));
        assert_eq!(c.init.statsd_ip, "127.0.0.1");
        assert_eq!(c.init.statsd_port, 8125);
        assert!(!c.init.log_to_file);
        assert_eq!(c.init.log_level, LogLevel::Warn);
        assert_eq!(c.init.report_interval, Duration::from_secs(30));
        assert!(!c.init.percentile_gauges);
        assert!(c.init.require_whitelist);
        assert_eq!(c.instances[0].tags, Vec::<String>::new());
    }

    #[test]
    fn empty_init_config_as_in_agent_examples_is_accepted() {
        let c =
            p("init_config:\n\ninstances:\n  - interface: eth0\n    hosts: [a.example]\n").unwrap();
        assert_eq!(c.init, InitConfig::default());
    }

    #[test]
    fn both_ttl_spellings_set_the_same_value() {
        let base = "instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n";
        let a = p(&format!("init_config:\n  exp_ttl: 17\n{base}")).unwrap();
        let b = p(&format!("init_config:\n  expired_ttl: 17\n{base}")).unwrap();
        let c = p(&format!(
            "init_config:\n  exp_ttl: 17\n  expired_ttl: 17\n{base}"
        ))
        .unwrap();
        for x in [a, b, c] {
            assert_eq!(x.init.exp_ttl, Duration::from_secs(17));
        }
        // go-metro reads only `expired_ttl`: when they disagree, that is the one it ran with.
        let c = p(&format!(
            "init_config:\n  exp_ttl: 17\n  expired_ttl: 18\n{base}"
        ))
        .unwrap();
        assert_eq!(c.init.exp_ttl, Duration::from_secs(18));
        assert_eq!(
            c.warnings,
            ["line 3: init_config.expired_ttl: 18 disagrees with exp_ttl 17 (line 2); they are the same setting: using expired_ttl, the one go-metro reads"]
        );
    }

    #[test]
    fn yaml_1_1_booleans_parse_as_yaml_v2() {
        let base = "instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n";
        for (word, want) in [
            ("yes", true),
            ("Yes", true),
            ("YES", true),
            ("on", true),
            ("On", true),
            ("ON", true),
            ("y", true),
            ("Y", true),
            ("true", true),
            ("True", true),
            ("no", false),
            ("No", false),
            ("NO", false),
            ("off", false),
            ("Off", false),
            ("OFF", false),
            ("n", false),
            ("N", false),
            ("false", false),
            ("FALSE", false),
        ] {
            let c = p(&format!(
                "init_config:\n  log_to_file: {word}\n  percentile_gauges: {word}\n{base}"
            ))
            .unwrap();
            assert_eq!(c.init.log_to_file, want, "{word}");
            assert_eq!(c.init.percentile_gauges, want, "{word}");
        }
    }

    #[test]
    fn log_levels_take_go_metro_names_and_keep_error_and_critical() {
        for (name, want) in [
            ("trace", LogLevel::Trace),
            ("debug", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("INFO", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("warning", LogLevel::Warn),
            ("error", LogLevel::Error),
            ("err", LogLevel::Error),
            ("critical", LogLevel::Critical),
            ("crit", LogLevel::Critical),
        ] {
            assert_eq!(LogLevel::from_name(name), Some(want), "{name}");
        }
        let c = p("init_config:\n  log_level: chatty\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n").unwrap();
        assert_eq!(c.init.log_level, LogLevel::Warn);
        assert_eq!(
            c.warnings,
            vec![
                "line 2: init_config.log_level: Configured log level \"chatty\" unknown - defaulting to WARNING level."
            ]
        );
    }

    #[test]
    fn no_instances_is_go_metros_error() {
        assert_eq!(
            err("init_config:\n  snaplen: 512\n"),
            "/etc/go-metro.yaml: instances: No sniffing interfaces specified. Add an `instances:` list with at least one entry such as `- interface: eth0`."
        );
        assert_eq!(
            err("init_config:\ninstances:\n"),
            "/etc/go-metro.yaml:2: instances: No sniffing interfaces specified. Add an `instances:` list with at least one entry such as `- interface: eth0`."
        );
        assert!(err("").contains(msg::NO_INSTANCES));
    }

    #[test]
    fn empty_interface_is_go_metros_error() {
        let e = err("instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n  - tags: [a:b]\n    ips: [192.0.2.1]\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:4: instances[1].interface: Error parsing configuration - empty iface field. Name the interface to sniff (for example `interface: eth0`), or `file` to read `pcap`."
        );
        let e = err("instances:\n  - interface: ''\n    ips: [192.0.2.1]\n");
        assert!(
            e.starts_with("/etc/go-metro.yaml:2: instances[0].interface: "),
            "{e}"
        );
        assert!(e.contains(msg::EMPTY_IFACE));
    }

    #[test]
    fn file_without_pcap_is_go_metros_error() {
        let e = err("instances:\n  - interface: file\n    ips: [192.0.2.1]\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:2: instances[0].pcap: Error parsing configuration - empty pcap field for file interface. Give the capture file to read, `pcap: /path/to/file.pcap`."
        );
    }

    #[test]
    fn empty_whitelist_is_go_metros_error_unless_lifted() {
        let e = err("instances:\n  - interface: eth0\n    tags: [a:b]\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:2: instances[0].ips: Whitelists must be enabled for go-metro to run (you may whitelist by IP or hostname in config file). To report every host instead (a gateway), set `require_whitelist: false` in init_config."
        );
        let c =
            p("init_config:\n  require_whitelist: no\ninstances:\n  - interface: eth0\n").unwrap();
        assert!(c.instances[0].ips.is_empty() && c.instances[0].hosts.is_empty());
        assert!(!c.init.require_whitelist);
    }

    #[test]
    fn group_by_takes_src_dst_and_port_and_says_what_it_allows() {
        let inst = "instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n";
        let c = p(inst).unwrap();
        assert!(!c.init.group_by_port, "per host pair by default");
        assert_eq!(c.init.max_ports, 32);
        for dims in ["[src, dst]", "[dst, src]", "\n    - src\n    - dst"] {
            let c = p(&format!("init_config:\n  group_by: {dims}\n{inst}")).unwrap();
            assert!(!c.init.group_by_port, "{dims}");
        }
        let c = p(&format!(
            "init_config:\n  group_by: [src, dst, port]\n  max_ports: 4\n{inst}"
        ))
        .unwrap();
        assert!(c.init.group_by_port);
        assert_eq!(c.init.max_ports, 4);
        let allowed = "give [src, dst] (per host pair, the default) or [src, dst, port] (per host pair and server port)";
        for (dims, line, what) in [
            (
                "[src, dst, service]",
                2,
                "'service' is not a dimension metro groups by",
            ),
            ("[src, dst, port, port]", 2, "'port' is given twice"),
            ("[src, port]", 2, "series are always per src and dst"),
            (
                "\n    - src\n    - dst\n    - sport",
                5,
                "'sport' is not a dimension metro groups by",
            ),
        ] {
            assert_eq!(
                err(&format!("init_config:\n  group_by: {dims}\n{inst}")),
                format!("/etc/go-metro.yaml:{line}: init_config.group_by: {what}; {allowed}"),
                "{dims}"
            );
        }
        assert_eq!(
            err(&format!("init_config:\n  max_ports: 0\n{inst}")),
            "/etc/go-metro.yaml:2: init_config.max_ports: 0 is outside 1 to 65536 ports per host pair"
        );
    }

    #[test]
    fn bad_values_name_file_key_and_line() {
        let e = err("init_config:\n  snaplen: 512\n  idle_ttl: soon\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:3: init_config.idle_ttl: expected a whole number"
        );
        let e = err(
            "instances:\n  - interface: eth0\n    ips:\n      - 192.0.2.1\n      - 300.1.1.1\n",
        );
        assert_eq!(
            e,
            "/etc/go-metro.yaml:5: instances[0].ips[1]: '300.1.1.1' is not an IP address or CIDR range; write an address (192.0.2.7, 2001:db8::7), a range (10.0.0.0/8) or a host name"
        );
        let e = err("init_config:\n  statsd_port: 70000\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:2: init_config.statsd_port: 70000 is not a UDP port (1 to 65535)"
        );
        let e = err(
            "init_config:\n  workers: -5\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n",
        );
        assert_eq!(
            e,
            "/etc/go-metro.yaml:2: init_config.workers: -5 is negative; give a number of at least 0"
        );
        let e = err("instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    tags:\n      - a:b\n      - {x: y}\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:6: instances[0].tags[1]: expected a string"
        );
        let e = err("init_config:\n  log_to_file: maybe\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:2: init_config.log_to_file: expected a boolean (true/false, yes/no, on/off)"
        );
        let e = err("instances:\n  - interface: eth0\n   ips: [bad\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:3: instances[0].ips: while parsing a block collection, did not find expected '-' indicator"
        );
        let c = p("init_config:\n  snaplen: 600\n  snaplen: 700\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n").unwrap();
        assert_eq!(
            c.init.snaplen, 700,
            "a repeated key overwrites, as in yaml.v2"
        );
    }

    /// The duty cycle of `sample: yes` with these two keys, and the warnings.
    fn duty(extra: &str) -> (Option<DutyCycle>, Vec<String>) {
        let c = p(&format!(
            "instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    sample: yes\n{extra}"
        ))
        .unwrap();
        (c.instances[0].duty, c.warnings)
    }

    fn secs(on: u64, every: u64) -> Option<DutyCycle> {
        Some(DutyCycle {
            on: Duration::from_secs(on),
            every: Duration::from_secs(every),
        })
    }

    #[test]
    fn sample_settings_that_are_no_duty_cycle_are_read_as_go_metro_runs_them() {
        let (d, w) = duty("    sample_duration: 5\n    sample_interval: 60\n");
        assert_eq!((d, w.len()), (secs(5, 60), 0));
        // Equal or inverted: go-metro captures sample_duration s, then pauses sample_interval s.
        let (d, w) = duty("    sample_duration: 10\n    sample_interval: 10\n");
        assert_eq!(d, secs(10, 20));
        assert_eq!(
            w,
            ["line 5: instances[0].sample_duration: capturing 10 s out of every 10 s is no duty cycle; read as go-metro reads it: capture 10 s, then pause 10 s (every 20 s). To say that in metro's reading, set sample_interval: 20"]
        );
        let (d, w) = duty("    sample_duration: 30\n    sample_interval: 10\n");
        assert_eq!((d, w.len()), (secs(30, 40), 1));
        // None at all: go-metro never captures; metro captures all the time, and says so.
        let (d, w) = duty("");
        assert_eq!(d, None);
        assert_eq!(
            w,
            ["line 4: instances[0].sample_duration: `sample: true` with no positive sample_duration captures nothing under go-metro; metro captures all the time (sampling off). Give sample_duration and sample_interval in seconds, or drop `sample`"]
        );
        let (d, w) = duty("    sample_duration: 5\n");
        assert_eq!((d, w.len()), (None, 1));
        assert!(
            w[0].contains("no positive sample_interval, so no pause"),
            "{w:?}"
        );
        let (d, w) = duty("    sample_duration: -5\n    sample_interval: 60\n");
        assert_eq!((d, w.len()), (None, 1));
        let c = p("instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    sample: no\n    sample_duration: 0\n").unwrap();
        assert_eq!((c.instances[0].duty, c.warnings.len()), (None, 0));
    }

    #[test]
    fn where_go_metro_runs_metro_runs_and_says_what_it_assumed() {
        let base = "instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n";
        // yaml.v2 truncates a float into a Go int.
        let c = p(&format!("init_config:\n  snaplen: 512.0\n  idle_ttl: 120.9\n  expired_ttl: 30.0\n  statsd_port: 9125.0\n{base}")).unwrap();
        assert_eq!(c.init.snaplen, 512);
        assert_eq!(c.init.idle_ttl, Duration::from_secs(120));
        assert_eq!(c.init.exp_ttl, Duration::from_secs(30));
        assert_eq!(c.init.statsd_port, 9125);
        assert_eq!(
            c.warnings[..2],
            [
                "line 2: init_config.snaplen: 512 is not a whole number; read as 512, as go-metro reads it",
                "line 3: init_config.idle_ttl: 120.9 is not a whole number; read as 120, as go-metro reads it"
            ]
        );
        assert_eq!(c.warnings.len(), 4);
        // Negative durations and snap lengths, port 0: the defaults, said.
        let c = p(&format!(
            "init_config:\n  snaplen: -1\n  idle_ttl: -5\n  exp_ttl: -1\n  statsd_port: 0\n{base}"
        ))
        .unwrap();
        assert_eq!(c.init.idle_ttl, Duration::from_secs(300));
        assert_eq!(c.init.exp_ttl, Duration::from_secs(60));
        assert_eq!(c.init.snaplen, 512);
        assert_eq!(c.init.statsd_port, 8125);
        assert_eq!(
            c.warnings,
            [
                "line 2: init_config.snaplen: -1 is negative; using the default, 512 bytes",
                "line 3: init_config.idle_ttl: -5 is negative; using the default, 300 s",
                "line 4: init_config.exp_ttl: -1 is negative; using the default, 60 s",
                "line 5: init_config.statsd_port: 0 is no port; using the default, 8125"
            ]
        );
        let c = p(&format!("init_config:\n  snaplen: 1000000\n{base}")).unwrap();
        assert_eq!(c.init.snaplen, MAX_SNAPLEN);
        assert_eq!(c.warnings.len(), 1);
        // Null tags, null and non-string entries: as yaml.v2 reads them.
        let c = p("instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    tags:\n").unwrap();
        assert!(c.instances[0].tags.is_empty() && c.warnings.is_empty());
        let c = p("instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    tags:\n      -\n      - 7\n      - on\n      - env:prod\n").unwrap();
        assert_eq!(c.instances[0].tags, ["7", "true", "env:prod"]);
        assert_eq!(
            c.warnings,
            ["line 5: instances[0].tags[0]: empty tag, not sent (go-metro sent it as an empty tag)"]
        );
        // An empty host entry: go-metro fails to resolve it and goes on.
        let c = p(
            "instances:\n  - interface: eth0\n    hosts:\n      - ''\n      -\n      - a.example\n",
        )
        .unwrap();
        assert_eq!(c.instances[0].hosts, ["a.example"]);
        assert_eq!(c.warnings.len(), 2);
        assert!(
            c.warnings[0].starts_with("line 4: instances[0].hosts[0]: empty host name, skipped")
        );
        // `instances` and the older `config`: go-metro reads `instances` only.
        let c = p("config:\n  - interface: eth1\n    ips: [192.0.2.2]\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n").unwrap();
        assert_eq!(c.instances.len(), 1);
        assert_eq!(c.instances[0].interface, "eth0");
        assert_eq!(
            c.warnings,
            ["line 2: config: go-metro's older list is ignored, as go-metro ignores it, because `instances` (line 5) is present; remove one of them"]
        );
        // A host name in `ips`: kept for resolving at start, as go-metro's libpcap resolves it.
        let c =
            p("instances:\n  - interface: eth0\n    ips: [db-1.example, 10.0.0.0/8]\n").unwrap();
        assert_eq!(c.instances[0].ips[0].text, "db-1.example");
        assert_eq!(
            (c.instances[0].ips[0].net, c.instances[0].ips[0].single),
            (None, None)
        );
        assert!(c.instances[0].ips[1].net.is_some());
        // What go-metro refuses stays refused, and no message leaks Rust's types.
        for (yaml, want) in [
            ("instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    tags: [{a: b}]\n", ":4: instances[0].tags"),
            ("instances:\n  - interface: eth0\n    ips: ['']\n", ":3: instances[0].ips[0]: an empty entry"),
            ("init_config:\n  snaplen: '512'\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n", ":2: init_config.snaplen: expected a whole number"),
            ("init_config:\n  statsd_port: -1\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n", ":2: init_config.statsd_port: -1 is not a UDP port"),
        ] {
            let e = err(yaml);
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("Option") && !e.contains("i64") && !e.contains("GoStr"), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_warned_about_not_refused() {
        let c = p("init_config:\n  snaplen: 512\n  exp_tl: 3\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    colour: red\nextra: 1\n").unwrap();
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("line 8: extra: unknown key, ignored"));
        assert!(c.warnings[1].starts_with("line 3: init_config.exp_tl: unknown key, ignored"));
        assert!(c.warnings[2].starts_with("line 7: instances[0].colour: unknown key, ignored"));
    }

    #[test]
    fn go_metros_older_config_list_is_read_alone() {
        let c = p("config:\n  - interface: eth1\n    ips: [192.0.2.1]\n").unwrap();
        assert_eq!(c.instances[0].interface, "eth1");
    }

    #[test]
    fn key_paths_follow_indentation_and_list_items() {
        let t = "init_config:\n  a: 1\ninstances:\n  - interface: x\n    ips:\n      - 1\n      - 2\n  - interface: y # c\n    tags: [q]\n";
        assert_eq!(key_path_at(t, 2), "init_config.a");
        assert_eq!(key_path_at(t, 4), "instances[0].interface");
        assert_eq!(key_path_at(t, 7), "instances[0].ips[1]");
        assert_eq!(key_path_at(t, 8), "instances[1].interface");
        assert_eq!(key_path_at(t, 9), "instances[1].tags");
    }
}
