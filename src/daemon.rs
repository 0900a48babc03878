//! go-metro mode: run the instances of a YAML file and send DogStatsD gauges until stopped.
//!
//! This is what agent packages start as `go-metro -cfg=…`. It reads the configuration
//! ([`crate::config`]), sets up logging as the file asks ([`crate::logging`]), resolves the
//! whitelisted `hosts` (and, in the background, names for whitelisted `ips`), and runs every
//! instance at once: a live interface through [`crate::live::run`] on its own thread, a capture
//! file (`interface: file`) through a [`Worker`] on its own thread. Each instance has its own
//! DogStatsD [`Reporter`], as each go-metro sniffer had its own client.
//!
//! Lifecycle, and where metro differs from go-metro:
//! - SIGINT, SIGTERM, SIGQUIT and SIGHUP stop metro; it sends the last interval first (go-metro
//!   lost it). The signals are blocked in every thread and taken by one thread with `sigwait`,
//!   so no signal handler (and no `unsafe`) is needed.
//! - When every instance reads a file, metro exits 0 once the files are read and reported.
//! - An instance whose interface disappears sends its last interval, waits for an interface of
//!   that name to be back and up, and captures it again.
//! - A missing configuration file makes metro wait 5 s and exit 0, as go-metro does so that
//!   supervisord does not mark the service as flapping; metro also logs why.
//!
//! What this module does not do: capture (that is [`crate::live`] and [`crate::capture`]), or
//! format metrics (that is [`crate::report::statsd`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, tick, Receiver, Sender};
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

use crate::capture::file::{FileError, FileSource, FileStats};
use crate::capture::filter::Framing;
use crate::capture::{expr, iface};
use crate::cli::{exit, Cli};
use crate::config::{self, msg, Config, ConfigError, Instance, Source};
use crate::decode::{Addr, Skip};
use crate::flow::Ttl;
use crate::live::{self, IntervalReport, KernelStats, LiveConfig, LiveError};
use crate::logging::{Logger, CRITICAL};
use crate::report::prometheus::{Endpoint, Exposition};
use crate::report::statsd::{Names, QueueSink, Reporter, ReporterConfig, QUEUE_METRICS};
use crate::report::Merged;
use crate::worker::{Net, Worker, WorkerConfig};

/// How long go-metro sleeps before exiting when it cannot read its configuration.
pub const MISSING_CONFIG_WAIT: Duration = Duration::from_secs(5);

/// How long one name lookup may take before metro goes on without it.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long metro waits at shutdown for live instances to hand over their last interval, and
/// then for the sender threads to put it on the wire.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Runs go-metro mode with the configuration at `cfg_path`; returns the exit status.
pub fn run(cli: &Cli, cfg_path: &Path) -> i32 {
    // Before any thread exists, so that every thread inherits the mask and only `sigwait` sees
    // the signals.
    let signals = shutdown_signals();
    if let Err(e) = signals.thread_block() {
        eprintln!("metro: cannot block signals: {e}");
        return exit::USAGE;
    }
    let logger = Logger::install();
    if let Err(e) = check_filter(&cli.filter) {
        error!(target: CRITICAL, "{e}");
        return exit::USAGE;
    }
    let cfg = match config::load(cfg_path) {
        Ok(c) => c,
        Err(e @ ConfigError::Read { .. }) => {
            error!(
                "{e}; exiting in {} s (as go-metro does, so that supervisord does not count a quick exit as a failure). Write the file, or point -cfg at it.",
                MISSING_CONFIG_WAIT.as_secs()
            );
            thread::sleep(MISSING_CONFIG_WAIT);
            return exit::OK;
        }
        Err(e) => {
            error!(target: CRITICAL, "Error parsing configuration file: {e}");
            return exit::USAGE;
        }
    };
    logger.set_level(cfg.init.log_level);
    if cfg.init.log_to_file {
        if let Err(e) = logger.to_file(&cli.log) {
            warn!(
                "cannot write the log file {}: {e}; logging to standard error instead (give a writable -log)",
                cli.log.display()
            );
        }
    }
    for w in &cfg.warnings {
        warn!("{}: {w}", cfg.path.display());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sig_rx = spawn_signal_thread(signals, stop.clone());
    Daemon::new(cli, cfg, stop).run(&sig_rx)
}

/// The signals that stop metro, as they stop go-metro.
pub fn shutdown_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGQUIT,
        Signal::SIGHUP,
    ] {
        s.add(sig);
    }
    s
}

/// How often a daemon looks for an interface that disappeared.
const IFACE_RETRY: Duration = Duration::from_millis(250);

/// Waits until an interface called `name` exists and is up; false if `stop` came first.
fn wait_for_interface(name: &str, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        if iface::lookup(name).is_ok_and(|i| i.up) {
            return true;
        }
        thread::sleep(IFACE_RETRY);
    }
}

fn spawn_signal_thread(signals: SigSet, stop: Arc<AtomicBool>) -> Receiver<Signal> {
    let (tx, rx) = bounded(4);
    let spawned = thread::Builder::new()
        .name("metro-signals".into())
        .spawn(move || {
            while let Ok(sig) = signals.wait() {
                // go-metro's words for each signal.
                match sig {
                    Signal::SIGHUP => warn!("hungup"),
                    Signal::SIGINT => warn!("sig int caught, shutting down."),
                    Signal::SIGTERM => warn!("force stop"),
                    Signal::SIGQUIT => warn!("stop and core dump"),
                    _ => {}
                }
                stop.store(true, Ordering::SeqCst);
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        error!("cannot start the signal thread: {e}; metro will not stop cleanly on signals");
    }
    rx
}

/// Refuses `-f` expressions metro cannot evaluate, before anything starts: without libpcap,
/// every one but `tcp`; with it, those libpcap cannot compile (checked for Ethernet framing; a
/// raw-IP interface compiles it again for its own).
pub fn check_filter(expression: &str) -> Result<(), String> {
    if expr::is_default(expression) {
        return Ok(());
    }
    expr::compile(expression, Framing::Ethernet)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One instance, ready to start: its whitelist resolved and its reporter built.
struct Prepared {
    inst: Instance,
    whitelist: Option<Vec<Net>>,
    reporter: Reporter,
    /// Its series on the Prometheus endpoint, when there is one.
    exposition: Option<Exposition>,
}

impl Prepared {
    /// Sends an interval to DogStatsD and, with an endpoint, to Prometheus.
    fn report(&mut self, r: &IntervalReport) {
        self.reporter.report(r);
        if let Some(x) = &mut self.exposition {
            x.report(r);
        }
    }
}

enum Done {
    /// A file was read to its end, or broke off (`error`), or could not be opened.
    File {
        idx: usize,
        stats: FileStats,
        error: Option<FileError>,
        opened: bool,
    },
    /// A live capture returned; `Err` when it could not start or had to stop.
    Live {
        idx: usize,
        result: Result<(), String>,
    },
}

/// A file instance being read: its worker, shared with the reading thread.
struct FileRun {
    path: std::path::PathBuf,
    worker: Arc<Mutex<Worker>>,
    reporter: Reporter,
    /// Its series on the Prometheus endpoint, when there is one.
    exposition: Option<Exposition>,
    /// Frames and reported samples so far, for the closing log line.
    packets: u64,
    samples: u64,
    /// The bound on pairs reported apart.
    max_pairs: usize,
}

struct Daemon {
    cfg: Config,
    soften: bool,
    /// `-f`: go-metro's filter expression, `tcp` by default.
    filter: String,
    /// Where to serve Prometheus: `--prometheus`, or else `prometheus_listen`.
    prometheus: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
}

impl Daemon {
    fn new(cli: &Cli, cfg: Config, stop: Arc<AtomicBool>) -> Daemon {
        Daemon {
            prometheus: cli.prometheus.or(cfg.init.prometheus_listen),
            cfg,
            soften: cli.st,
            filter: cli.filter.trim().to_string(),
            stop,
        }
    }

    fn run(self, sig_rx: &Receiver<Signal>) -> i32 {
        let init = &self.cfg.init;
        let statsd = match resolve_statsd(&init.statsd_ip, init.statsd_port) {
            Ok(a) => a,
            Err(e) => {
                error!(target: CRITICAL, "{}: init_config.statsd_ip: {e}", self.cfg.path.display());
                return exit::USAGE;
            }
        };
        let endpoint = match self.prometheus.map(Endpoint::serve).transpose() {
            Ok(e) => e,
            Err(e) => {
                error!(target: CRITICAL, "{e}");
                return exit::USAGE;
            }
        };
        if let Some(e) = &endpoint {
            info!("serving Prometheus metrics on http://{}/metrics", e.addr());
        }
        let mut prepared = Vec::new();
        let mut failed = 0usize;
        for inst in &self.cfg.instances {
            match self.prepare(inst, statsd, endpoint.as_ref()) {
                Ok(Some(p)) => prepared.push(p),
                Ok(None) => failed += 1,
                Err(code) => return code,
            }
        }
        if prepared.is_empty() {
            error!(
                target: CRITICAL,
                "No sniffers available, baling out (please check your configuration and privileges)."
            );
            return exit::INPUT;
        }

        let sinks: Vec<(String, QueueSink)> = prepared
            .iter()
            .map(|p| (p.inst.interface.clone(), p.reporter.sink().clone()))
            .collect();
        let (done_tx, done_rx) = bounded::<Done>(prepared.len());
        let mut files: HashMap<usize, FileRun> = HashMap::new();
        let mut running = 0usize;
        for (idx, p) in prepared.into_iter().enumerate() {
            running += 1;
            match p.inst.source.clone() {
                Source::File(path) => {
                    let run = self.start_file(idx, &path, p, done_tx.clone());
                    files.insert(idx, run);
                }
                Source::Interface(_) => self.start_live(idx, p, done_tx.clone()),
            }
        }
        drop(done_tx);

        let ticker = tick(self.cfg.init.report_interval);
        let mut capture_failed = failed > 0;
        while running > 0 {
            select! {
                recv(ticker) -> _ => {
                    for run in files.values_mut() {
                        report_file(run, None, false);
                    }
                }
                recv(done_rx) -> d => {
                    let Ok(d) = d else { break };
                    running -= 1;
                    capture_failed |= self.finish(d, &mut files);
                }
                recv(sig_rx) -> _ => {
                    self.shutdown(&mut files, &done_rx, running);
                    break;
                }
            }
        }
        for (iface, sink) in &sinks {
            let st = sink.stats();
            info!(
                "statsd ({iface}): {} metrics sent in {} datagrams, {} not sent (queue full or send failed)",
                st.sent.load(Ordering::Relaxed),
                st.datagrams.load(Ordering::Relaxed),
                st.lost()
            );
        }
        if capture_failed {
            exit::INPUT
        } else {
            exit::OK
        }
    }

    /// Resolves an instance's whitelist and builds its reporter. `Ok(None)` skips an instance
    /// that cannot run (logged); `Err` stops metro with that status.
    fn prepare(
        &self,
        inst: &Instance,
        statsd: SocketAddr,
        endpoint: Option<&Endpoint>,
    ) -> Result<Option<Prepared>, i32> {
        let init = &self.cfg.init;
        let local = match &inst.source {
            Source::File(_) => Vec::new(),
            Source::Interface(name) => match interface_addresses(name) {
                Some(a) => {
                    info!("Will attempt sniffing off interface {name:?}");
                    a
                }
                None => {
                    error!(
                        "Unable to instantiate sniffer for interface {name:?}: no such interface (interfaces here: {})",
                        interface_names().join(", ")
                    );
                    return Ok(None);
                }
            },
        };
        let names: Names = Names::default();
        let mut nets: Vec<Net> = inst.ips.iter().map(|e| e.net).collect();
        // go-metro's filter terms, for the log line and the messages.
        let mut terms: Vec<String> = inst
            .ips
            .iter()
            .map(|e| match e.single {
                Some(ip) => format!("host {ip}"),
                None => format!("net {}", e.text),
            })
            .collect();
        let mut singles: Vec<IpAddr> = inst.ips.iter().filter_map(|e| e.single).collect();
        for (host, ips) in resolve_hosts(&inst.hosts) {
            for ip in ips {
                info!("{host} resolving to: {ip}");
                nets.push(Net::host(ip));
                singles.push(ip);
                terms.push(format!("host {ip}"));
                names
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ip, host.clone());
            }
        }
        // A range always covers other hosts; single addresses may all be this host's own.
        let all_local = inst.ips.iter().all(|e| e.single.is_some())
            && singles.iter().all(|ip| local.contains(&Addr::from(*ip)));
        if init.require_whitelist && all_local {
            error!(
                target: CRITICAL,
                "{} : [{}] ({} line {}: whitelist a remote host in `ips` or `hosts`; a gateway can set `require_whitelist: false`)",
                msg::LOCAL_WHITELIST,
                terms.join(" "),
                self.cfg.path.display(),
                inst.line
            );
            return Err(exit::USAGE);
        }
        let whitelist = if nets.is_empty() { None } else { Some(nets) };
        let filter = &self.filter;
        if terms.is_empty() {
            info!("Setting BPF filter: {filter}");
        } else {
            info!("Setting BPF filter: {filter} and ({})", terms.join(" or "));
        }
        if !expr::is_default(filter) && matches!(inst.source, Source::File(_)) {
            warn!(
                "-f {filter:?} is applied to live interfaces only; the capture file for line {} is read whole (its whitelist still applies)",
                inst.line
            );
        }
        resolve_names_in_background(
            inst.ips.iter().filter_map(|e| e.single).collect(),
            names.clone(),
        );
        let sink = match QueueSink::connect(statsd, QUEUE_METRICS) {
            Ok(s) => s,
            Err(e) => {
                error!(target: CRITICAL, "Error instantiating stats Statter: {e}");
                return Err(exit::USAGE);
            }
        };
        let reporter = Reporter::new(
            sink,
            ReporterConfig {
                iface: inst.interface.clone(),
                tags: inst.tags.clone(),
                soften: self.soften,
                extra_gauges: init.percentile_gauges,
            },
            names,
        );
        Ok(Some(Prepared {
            inst: inst.clone(),
            whitelist,
            reporter,
            exposition: endpoint.map(|e| e.exposition(&inst.interface, &inst.tags, init.max_pairs)),
        }))
    }

    fn worker_config(&self, whitelist: &Option<Vec<Net>>) -> WorkerConfig {
        let init = &self.cfg.init;
        WorkerConfig {
            max_flows: init.max_flows,
            max_pairs: init.max_pairs,
            ttl: Ttl {
                idle_ns: init.idle_ttl.as_nanos() as u64,
                closed_ns: init.exp_ttl.as_nanos() as u64,
            },
            whitelist: whitelist.clone(),
            ..WorkerConfig::default()
        }
    }

    fn start_file(&self, idx: usize, path: &Path, p: Prepared, done: Sender<Done>) -> FileRun {
        let worker = Arc::new(Mutex::new(Worker::new(
            idx,
            &self.worker_config(&p.whitelist),
        )));
        let w = worker.clone();
        let stop = self.stop.clone();
        let path = path.to_owned();
        let p2 = path.clone();
        info!("starting capture on interface {:?}", p.inst.interface);
        let spawned = thread::Builder::new()
            .name(format!("metro-file-{idx}"))
            .spawn(move || read_file(idx, &p2, &w, &stop, &done));
        if let Err(e) = spawned {
            error!("cannot start a thread for instance {idx}: {e}");
        }
        FileRun {
            path,
            worker,
            reporter: p.reporter,
            exposition: p.exposition,
            packets: 0,
            samples: 0,
            max_pairs: self.cfg.init.max_pairs,
        }
    }

    fn start_live(&self, idx: usize, p: Prepared, done: Sender<Done>) {
        let init = &self.cfg.init;
        let Source::Interface(iface) = p.inst.source.clone() else {
            return;
        };
        let cfg = LiveConfig {
            interface: iface.clone(),
            workers: init.workers,
            ring: init.ring,
            snaplen: init.snaplen,
            // go-metro: SetPromisc(false).
            promiscuous: false,
            whitelist: p.whitelist.clone(),
            expression: (!expr::is_default(&self.filter)).then(|| self.filter.clone()),
            worker: self.worker_config(&p.whitelist),
            interval: init.report_interval,
            duration: None,
            duty: p.inst.duty,
            dump_flows: false,
            plot: None,
            samples: None,
        };
        let stop = self.stop.clone();
        let mut p = p;
        info!("starting capture on interface {iface:?}");
        let spawned = thread::Builder::new()
            .name(format!("metro-live-{idx}"))
            .spawn(move || {
                let mut restarted = false;
                let result = loop {
                    let r = live::run(&cfg, &stop, &mut |r: &IntervalReport| p.report(r));
                    // A daemon outlives its interface: a container's veth or a VPN's tun that is
                    // re-created gets captured again, rather than ending in a restart loop.
                    let vanished = match &r {
                        Err(LiveError::InterfaceGone(_)) => true,
                        // Gone again between the wait and the opening of the sockets.
                        Err(LiveError::InterfaceDown(_) | LiveError::Interface(_)) => restarted,
                        _ => false,
                    };
                    if !vanished {
                        break r;
                    }
                    warn!(
                        "interface {:?} disappeared: waiting for it to come back",
                        cfg.interface
                    );
                    if !wait_for_interface(&cfg.interface, &stop) {
                        break Ok(());
                    }
                    info!("interface {:?} is back: capture restarts", cfg.interface);
                    restarted = true;
                };
                p.reporter.sink().flush_wait(SHUTDOWN_WAIT);
                let _ = done.send(Done::Live {
                    idx,
                    result: result.map_err(|e| e.to_string()),
                });
            });
        if let Err(e) = spawned {
            error!("cannot start a thread for instance {idx}: {e}");
        }
    }

    /// Handles an instance that has finished; returns true if it failed.
    fn finish(&self, d: Done, files: &mut HashMap<usize, FileRun>) -> bool {
        match d {
            Done::File {
                idx,
                stats,
                error,
                opened,
            } => {
                let Some(mut run) = files.remove(&idx) else {
                    return false;
                };
                if opened {
                    report_file(&mut run, Some(stats), true);
                    run.reporter.sink().flush_wait(SHUTDOWN_WAIT);
                    info!("Done sniffing.");
                    log_totals(&run);
                }
                match error {
                    Some(e) if opened => {
                        error!("{e}; the metrics sent cover the packets before it");
                        true
                    }
                    Some(e) => {
                        error!("Unable to open pcap file: {e}");
                        true
                    }
                    None => false,
                }
            }
            Done::Live { idx, result } => match result {
                Ok(()) => false,
                Err(e) => {
                    let iface = &self.cfg.instances[idx].interface;
                    error!(
                        "Unable to start sniffer for interface: {iface:?} (please check your configuration and privileges): {e}"
                    );
                    true
                }
            },
        }
    }

    /// Stops every instance and sends what each gathered since its last report.
    fn shutdown(
        &self,
        files: &mut HashMap<usize, FileRun>,
        done_rx: &Receiver<Done>,
        running: usize,
    ) {
        self.stop.store(true, Ordering::SeqCst);
        // A file instance may be blocked in a read (a FIFO, a slow disk): its interval is taken
        // here rather than waited for.
        let mut left = running - files.len();
        for (_, mut run) in files.drain() {
            report_file(&mut run, None, true);
            run.reporter.sink().flush_wait(SHUTDOWN_WAIT);
            log_totals(&run);
        }
        // Live instances report their last interval themselves as they stop.
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while left > 0 {
            match done_rx.recv_deadline(deadline) {
                Ok(Done::Live { .. }) => left -= 1,
                Ok(Done::File { .. }) => {}
                Err(_) => {
                    warn!(
                        "{left} instance(s) did not stop within {} s",
                        SHUTDOWN_WAIT.as_secs()
                    );
                    break;
                }
            }
        }
        info!("Done reporting.");
    }
}

fn log_totals(run: &FileRun) {
    info!(
        "{}: {} packets, {} RTT samples reported",
        run.path.display(),
        run.packets,
        run.samples
    );
}

/// Reads a capture file into the shared worker, frame by frame, until its end or a stop.
fn read_file(
    idx: usize,
    path: &Path,
    worker: &Mutex<Worker>,
    stop: &AtomicBool,
    done: &Sender<Done>,
) {
    let mut src = match FileSource::open(path) {
        Ok(s) => s,
        Err(e) => {
            let _ = done.send(Done::File {
                idx,
                stats: FileStats::default(),
                error: Some(e),
                opened: false,
            });
            return;
        }
    };
    info!("reading in packets");
    let r = src.for_each(|link, frame| {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        worker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle(link, frame);
    });
    let _ = done.send(Done::File {
        idx,
        stats: src.stats(),
        error: r.err(),
        opened: true,
    });
}

/// Sends a file instance's interval: what its worker gathered since the last report.
fn report_file(run: &mut FileRun, file: Option<FileStats>, last: bool) {
    let stats = run
        .worker
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take_interval(Default::default());
    let merged = Merged::from_owned(vec![stats], run.max_pairs);
    let mut counters = merged.counters;
    if let Some(f) = file {
        // As offline mode counts them: frames the reader could not hand to the worker.
        counters.packets += f.unknown_link + f.untimed;
        counters.skipped[Skip::UnknownLink.index()] += f.unknown_link;
        counters.skipped[Skip::Malformed.index()] += f.untimed;
    }
    run.packets += counters.packets;
    run.samples += counters.samples - counters.filtered;
    let report = IntervalReport {
        iface: String::new(),
        pairs: merged.into_summaries(),
        counters,
        kernel: KernelStats::default(),
        last,
        flows: Vec::new(),
        whole_run: None,
    };
    run.reporter.report(&report);
    if let Some(x) = &mut run.exposition {
        x.report(&report);
    }
}

/// DogStatsD's address: an IP (as go-metro requires) or, from metro, a host name.
fn resolve_statsd(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {host:?}; give DogStatsD's IP address"))
}

/// The addresses of interface `name`, or `None` when there is no such interface.
pub fn interface_addresses(name: &str) -> Option<Vec<Addr>> {
    let exists = Path::new("/sys/class/net").join(name).exists();
    let mut out = Vec::new();
    let mut seen = exists;
    if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
        for i in ifs.filter(|i| i.interface_name == name) {
            seen = true;
            out.extend(i.address.as_ref().and_then(iface::ip_of).map(Addr::from));
        }
    }
    seen.then_some(out)
}

/// The host's interface names, for messages.
pub fn interface_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Resolves `hosts` in parallel, each with [`DNS_TIMEOUT`]; failures are logged and skipped.
pub fn resolve_hosts(hosts: &[String]) -> Vec<(String, Vec<IpAddr>)> {
    let pending: Vec<(String, Receiver<std::io::Result<Vec<IpAddr>>>)> = hosts
        .iter()
        .map(|h| {
            let (tx, rx) = bounded(1);
            let host = h.clone();
            let _ = thread::Builder::new()
                .name("metro-dns".into())
                .spawn(move || {
                    let _ = tx.send(dns_lookup::lookup_host(&host));
                });
            (h.clone(), rx)
        })
        .collect();
    let deadline = Instant::now() + DNS_TIMEOUT;
    let mut out = Vec::new();
    for (host, rx) in pending {
        match rx.recv_deadline(deadline) {
            Ok(Ok(mut ips)) => {
                let mut seen = Vec::new();
                ips.retain(|ip| {
                    let new = !seen.contains(ip);
                    seen.push(*ip);
                    new
                });
                out.push((host, ips));
            }
            Ok(Err(e)) => error!("Error resolving name for: {host} ({e})"),
            Err(_) => error!(
                "Error resolving name for: {host} (no answer within {} s)",
                DNS_TIMEOUT.as_secs()
            ),
        }
    }
    out
}

/// Looks up names for whitelisted addresses on a background thread, each with
/// [`DNS_TIMEOUT`], and adds those found to `names`; until then tags carry the address.
pub fn resolve_names_in_background(
    ips: Vec<IpAddr>,
    names: Names,
) -> Option<thread::JoinHandle<()>> {
    if ips.is_empty() {
        return None;
    }
    thread::Builder::new()
        .name("metro-rdns".into())
        .spawn(move || {
            for ip in ips {
                if names.read().map(|n| n.contains_key(&ip)).unwrap_or(false) {
                    continue;
                }
                let (tx, rx) = bounded(1);
                let _ = thread::Builder::new()
                    .name("metro-dns".into())
                    .spawn(move || {
                        let _ = tx.send(dns_lookup::lookup_addr(&ip));
                    });
                match rx.recv_timeout(DNS_TIMEOUT) {
                    Ok(Ok(name)) if name.parse::<IpAddr>().is_err() => {
                        let name = name.trim_end_matches('.').to_string();
                        info!("{name} resolving to: {ip}");
                        names
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(ip, name);
                    }
                    _ => warn!("Problem looking up hostnames for: {ip}"),
                }
            }
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_other_than_tcp_need_libpcap_and_must_compile() {
        assert!(check_filter("tcp").is_ok());
        assert!(check_filter(" tcp ").is_ok());
        #[cfg(not(feature = "libpcap"))]
        assert_eq!(
            check_filter("tcp port 80").unwrap_err(),
            "-f \"tcp port 80\": this metro was built without libpcap, so it cannot compile filter expressions other than `tcp`; drop -f (the instances' `ips`/`hosts` whitelist selects hosts), or build metro with `--features libpcap`"
        );
        #[cfg(feature = "libpcap")]
        {
            assert_eq!(check_filter("tcp port 80"), Ok(()));
            let e = check_filter("tcp port eighty").unwrap_err();
            assert!(
                e.starts_with(
                    "-f \"tcp port eighty\": libpcap cannot compile this filter expression ("
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn loopback_exists_and_has_its_address() {
        let a = interface_addresses("lo").expect("every Linux host has lo");
        assert!(a.contains(&Addr::v4([127, 0, 0, 1])), "{a:?}");
        assert_eq!(interface_addresses("metro-no-such-if0"), None);
        assert!(interface_names().contains(&"lo".to_string()));
    }

    #[test]
    fn hosts_resolve_from_etc_hosts_and_failures_are_skipped() {
        let r = resolve_hosts(&["localhost".into(), "metro-no-such-host.invalid".into()]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "localhost");
        assert!(r[0].1.contains(&"127.0.0.1".parse().unwrap()), "{r:?}");
    }

    #[test]
    fn reverse_names_fill_in_the_background() {
        let names = Names::default();
        let h =
            resolve_names_in_background(vec!["127.0.0.1".parse().unwrap()], names.clone()).unwrap();
        h.join().unwrap();
        let got = names
            .read()
            .unwrap()
            .get(&"127.0.0.1".parse().unwrap())
            .cloned();
        assert_eq!(got.as_deref(), Some("localhost"));
    }

    #[test]
    fn statsd_address_takes_an_ip_or_a_name() {
        assert_eq!(
            resolve_statsd("127.0.0.1", 8125).unwrap(),
            "127.0.0.1:8125".parse().unwrap()
        );
        assert_eq!(
            resolve_statsd("::1", 9).unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert!(resolve_statsd("metro-no-such-host.invalid", 8125).is_err());
    }
}
