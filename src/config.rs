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

use crate::live::{DutyCycle, RingConfig};
use crate::worker::Net;

/// Where go-metro looks for its configuration when `-cfg` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/dd-agent/checks.d/go-metro.yaml";

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
    /// A flow with no packets for this long is forgotten. Default 300 s, go-metro's example.
    pub idle_ttl: Duration,
    /// A flow that has closed (FIN or RST) is forgotten after this long. Default 60 s.
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
    /// metro: most flows a worker tracks at once (see [`crate::worker::WorkerConfig`]).
    pub max_flows: usize,
    /// metro: most host pairs reported apart per interval (see [`crate::worker::WorkerConfig`]);
    /// the samples of any more go to the `other` series.
    pub max_pairs: usize,
    /// metro: also send `.min`, `.max`, `.95percentile`, `.99percentile` and `.count`. Default
    /// off, as go-metro sends only three gauges.
    pub percentile_gauges: bool,
    /// metro: refuse an empty or only-local whitelist, as go-metro does. Default true; a gateway,
    /// which forwards other hosts' traffic, sets it to false.
    pub require_whitelist: bool,
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
            idle_ttl: Duration::from_secs(300),
            exp_ttl: Duration::from_secs(60),
            statsd_ip: "127.0.0.1".into(),
            statsd_port: 8125,
            log_to_file: false,
            log_level: LogLevel::Warn,
            report_interval: Duration::from_secs(30),
            workers: None,
            max_flows: crate::worker::WorkerConfig::default().max_flows,
            max_pairs: crate::worker::WorkerConfig::default().max_pairs,
            percentile_gauges: false,
            require_whitelist: true,
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

/// One whitelisted `ips` entry: an address or a CIDR range, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhitelistEntry {
    /// As written in the file.
    pub text: String,
    /// The range it covers.
    pub net: Net,
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
    snaplen: S<i64>,
    idle_ttl: S<i64>,
    exp_ttl: S<i64>,
    expired_ttl: S<i64>,
    statsd_ip: S<Option<String>>,
    statsd_port: S<i64>,
    log_to_file: S<bool>,
    log_level: S<Option<String>>,
    report_interval: S<f64>,
    workers: S<i64>,
    max_flows: S<i64>,
    max_pairs: S<i64>,
    percentile_gauges: S<bool>,
    require_whitelist: S<bool>,
    ring_block_size: S<i64>,
    ring_blocks: S<i64>,
    ring_block_timeout: S<i64>,
    prometheus_listen: S<Option<String>>,
}

#[derive(Deserialize, Default)]
struct RawInstance {
    interface: S<Option<String>>,
    pcap: S<Option<String>>,
    tags: Option<Vec<String>>,
    ips: Option<Vec<Spanned<String>>>,
    hosts: Option<Vec<Spanned<String>>>,
    sample: S<bool>,
    sample_duration: S<i64>,
    sample_interval: S<i64>,
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
    "percentile_gauges",
    "require_whitelist",
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
        struct V;
        impl<'de> Visitor<'de> for V {
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
        d.deserialize_any(V)
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
            return Err(ConfigError::at(
                path,
                Some(b.referenced.line()),
                "config",
                format!(
                    "both `instances` (line {}) and go-metro's older `config` list are present; keep only `instances`",
                    a.referenced.line()
                ),
            ))
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
        instances.push(instance(path, &key, line, raw, &init)?);
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

fn init_config(
    path: &Path,
    raw: RawInit,
    warnings: &mut Vec<String>,
) -> Result<InitConfig, ConfigError> {
    let mut c = InitConfig::default();
    if let Some(v) = &raw.snaplen {
        let n = non_negative(path, "init_config.snaplen", v)?;
        // 0 means "the default", as it does for libpcap under go-metro.
        if n > 0 {
            if n > 262_144 {
                return Err(ConfigError::at(
                    path,
                    line_of(v),
                    "init_config.snaplen",
                    format!("{n} is larger than the largest snap length, 262144"),
                ));
            }
            if n < 104 {
                warnings.push(format!(
                    "line {}: init_config.snaplen: {n} is below 104 bytes, so long TCP headers will be cut and their segments skipped",
                    v.referenced.line()
                ));
            }
            c.snaplen = n as u32;
        }
    }
    if let Some(v) = &raw.idle_ttl {
        let n = non_negative(path, "init_config.idle_ttl", v)?;
        if n > 0 {
            c.idle_ttl = Duration::from_secs(n);
        }
    }
    // go-metro documents `exp_ttl` but its code reads `expired_ttl`: metro reads both.
    let exp = match (&raw.exp_ttl, &raw.expired_ttl) {
        (Some(a), Some(b)) if a.value != b.value => {
            return Err(ConfigError::at(
                path,
                line_of(b),
                "init_config.expired_ttl",
                format!(
                    "{} disagrees with exp_ttl {} (line {}); they are the same setting, keep one",
                    b.value,
                    a.value,
                    a.referenced.line()
                ),
            ))
        }
        (Some(a), _) => Some(("init_config.exp_ttl", a)),
        (None, Some(b)) => Some(("init_config.expired_ttl", b)),
        (None, None) => None,
    };
    if let Some((key, v)) = exp {
        let n = non_negative(path, key, v)?;
        if n > 0 {
            c.exp_ttl = Duration::from_secs(n);
        }
    }
    if let Some(Spanned {
        value: Some(ip), ..
    }) = &raw.statsd_ip
    {
        if !ip.trim().is_empty() {
            c.statsd_ip = ip.trim().to_string();
        }
    }
    if let Some(v) = &raw.statsd_port {
        c.statsd_port = match u16::try_from(v.value) {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(ConfigError::at(
                    path,
                    line_of(v),
                    "init_config.statsd_port",
                    format!("{} is not a UDP port (1 to 65535)", v.value),
                ))
            }
        };
    }
    if let Some(v) = &raw.log_to_file {
        c.log_to_file = v.value;
    }
    if let Some(Spanned {
        value: Some(name),
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
    if let Some(v) = &raw.workers {
        let n = non_negative(path, "init_config.workers", v)?;
        c.workers = match n {
            0 => None,
            1..=1024 => Some(n as usize),
            _ => {
                return Err(ConfigError::at(
                    path,
                    line_of(v),
                    "init_config.workers",
                    format!("{n} workers is more than 1024; give 0 for one per CPU"),
                ))
            }
        };
    }
    if let Some(v) = &raw.max_flows {
        let n = non_negative(path, "init_config.max_flows", v)?;
        if !(1024..=1 << 26).contains(&n) {
            return Err(ConfigError::at(
                path,
                line_of(v),
                "init_config.max_flows",
                format!("{n} is outside 1024 to 67108864 flows per worker"),
            ));
        }
        c.max_flows = n as usize;
    }
    if let Some(v) = &raw.max_pairs {
        let n = non_negative(path, "init_config.max_pairs", v)?;
        if !(1..=crate::cli::MAX_PAIRS_LIMIT as u64).contains(&n) {
            return Err(ConfigError::at(
                path,
                line_of(v),
                "init_config.max_pairs",
                format!(
                    "{n} is outside 1 to {} host pairs",
                    crate::cli::MAX_PAIRS_LIMIT
                ),
            ));
        }
        c.max_pairs = n as usize;
    }
    if let Some(v) = &raw.ring_block_size {
        let n = non_negative(path, "init_config.ring_block_size", v)?;
        if !(4096..=1 << 28).contains(&n) || n % 4096 != 0 {
            return Err(ConfigError::at(
                path,
                line_of(v),
                "init_config.ring_block_size",
                format!("{n} is not a multiple of 4096 bytes between 4096 and 268435456"),
            ));
        }
        c.ring.block_size = n as u32;
    }
    if let Some(v) = &raw.ring_blocks {
        let n = non_negative(path, "init_config.ring_blocks", v)?;
        if !(2..=65_536).contains(&n) {
            return Err(ConfigError::at(
                path,
                line_of(v),
                "init_config.ring_blocks",
                format!("{n} is outside 2 to 65536 blocks per ring"),
            ));
        }
        c.ring.block_count = n as u32;
    }
    if let Some(v) = &raw.ring_block_timeout {
        let n = non_negative(path, "init_config.ring_block_timeout", v)?;
        if !(1..=60_000).contains(&n) {
            return Err(ConfigError::at(
                path,
                line_of(v),
                "init_config.ring_block_timeout",
                format!("{n} is outside 1 to 60000 ms"),
            ));
        }
        c.ring.block_timeout = Duration::from_millis(n);
    }
    if let Some(v) = &raw.percentile_gauges {
        c.percentile_gauges = v.value;
    }
    if let Some(v) = &raw.require_whitelist {
        c.require_whitelist = v.value;
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

fn instance(
    path: &Path,
    key: &str,
    line: u64,
    raw: RawInstance,
    init: &InitConfig,
) -> Result<Instance, ConfigError> {
    let interface = raw
        .interface
        .as_ref()
        .and_then(|s| s.value.as_deref())
        .map(str::trim)
        .unwrap_or("");
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
        let pcap = raw
            .pcap
            .as_ref()
            .and_then(|s| s.value.as_deref())
            .map(str::trim)
            .unwrap_or("");
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

    let mut ips = Vec::new();
    for (j, s) in raw.ips.unwrap_or_default().into_iter().enumerate() {
        let text = s.value.trim().to_string();
        let net: Net = text.parse().map_err(|e: String| {
            ConfigError::at(
                path,
                line_of(&s),
                format!("{key}.ips[{j}]"),
                format!("{e}; write an address (192.0.2.7, 2001:db8::7) or a range (10.0.0.0/8)"),
            )
        })?;
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
        ips.push(WhitelistEntry { text, net, single });
    }
    let mut hosts = Vec::new();
    for (j, s) in raw.hosts.unwrap_or_default().into_iter().enumerate() {
        let h = s.value.trim();
        if h.is_empty() {
            return Err(ConfigError::at(
                path,
                line_of(&s),
                format!("{key}.hosts[{j}]"),
                "empty host name; remove the entry or name a host",
            ));
        }
        hosts.push(h.to_string());
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

    let duty = if raw.sample.as_ref().is_some_and(|s| s.value) {
        let get = |v: &S<i64>, name: &str| -> Result<u64, ConfigError> {
            match v {
                Some(s) if s.value > 0 => Ok(s.value as u64),
                Some(s) => Err(ConfigError::at(
                    path,
                    line_of(s),
                    format!("{key}.{name}"),
                    format!("{} is not a positive number of seconds", s.value),
                )),
                None => Err(ConfigError::at(
                    path,
                    raw.sample.as_ref().map(|s| s.referenced.line()),
                    format!("{key}.{name}"),
                    format!("`sample: true` needs `{name}` (seconds)"),
                )),
            }
        };
        let on = get(&raw.sample_duration, "sample_duration")?;
        let every = get(&raw.sample_interval, "sample_interval")?;
        if on >= every {
            return Err(ConfigError::at(
                path,
                raw.sample_duration.as_ref().and_then(line_of),
                format!("{key}.sample_duration"),
                format!(
                    "capturing {on} s out of every {every} s is not a duty cycle; make sample_duration shorter than sample_interval, or drop `sample`"
                ),
            ));
        }
        Some(DutyCycle {
            on: Duration::from_secs(on),
            every: Duration::from_secs(every),
        })
    } else {
        None
    };

    Ok(Instance {
        source,
        interface: interface.to_string(),
        tags: raw.tags.unwrap_or_default(),
        ips,
        hosts,
        duty,
        line,
    })
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
        assert_eq!(a.ips[1].net, "10.0.0.0/8".parse().unwrap());
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
        let e = err(&format!(
            "init_config:\n  exp_ttl: 17\n  expired_ttl: 18\n{base}"
        ));
        assert_eq!(
            e,
            "/etc/go-metro.yaml:3: init_config.expired_ttl: 18 disagrees with exp_ttl 17 (line 2); they are the same setting, keep one"
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
            "/etc/go-metro.yaml:5: instances[0].ips[1]: '300.1.1.1' is not an IP address or CIDR range; write an address (192.0.2.7, 2001:db8::7) or a range (10.0.0.0/8)"
        );
        let e = err("init_config:\n  statsd_port: 70000\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:2: init_config.statsd_port: 70000 is not a UDP port (1 to 65535)"
        );
        let e = err(
            "init_config:\n  idle_ttl: -5\ninstances:\n  - interface: eth0\n    ips: [192.0.2.1]\n",
        );
        assert_eq!(
            e,
            "/etc/go-metro.yaml:2: init_config.idle_ttl: -5 is negative; give a number of at least 0"
        );
        let e = err("instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    tags:\n      - a:b\n      - {x: y}\n");
        assert_eq!(
            e,
            "/etc/go-metro.yaml:6: instances[0].tags[1]: expected string scalar"
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

    #[test]
    fn sample_needs_a_real_duty_cycle() {
        let base = "instances:\n  - interface: eth0\n    ips: [192.0.2.1]\n    sample: yes\n";
        let e = err(base);
        assert_eq!(
            e,
            "/etc/go-metro.yaml:4: instances[0].sample_duration: `sample: true` needs `sample_duration` (seconds)"
        );
        let e = err(&format!(
            "{base}    sample_duration: 10\n    sample_interval: 10\n"
        ));
        assert!(e.starts_with("/etc/go-metro.yaml:5: instances[0].sample_duration: capturing 10 s out of every 10 s"), "{e}");
        let c = p(&format!("{base}    sample: no\n").replace("    sample: yes\n", "")).unwrap();
        assert_eq!(c.instances[0].duty, None);
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
    fn go_metros_older_config_list_is_read_too() {
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
