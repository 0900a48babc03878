//! go-metro mode: run the instances of a YAML file and send DogStatsD gauges until stopped.
//!
//! This is what agent packages start as `go-metro -cfg=…`. It reads the configuration
//! ([`crate::config`]), sets up logging as go-metro does ([`crate::logging`]), resolves the
//! whitelist and the names its tags carry ([`crate::dns`]), and runs every instance at once: a
//! live interface through [`crate::live::run`] on its own thread, a capture file
//! (`interface: file`) through the offline engine's [`Follow`]. Each instance has its own
//! DogStatsD [`StatsdReporter`], as each go-metro sniffer had its own client.
//!
//! Lifecycle, as go-metro's:
//! - until the configuration is read, the log goes to the `-log` file at warning level; then to
//!   `-log` or, with `log_to_file: false`, to standard output;
//! - a missing configuration file makes metro wait 5 s and exit 0, so that supervisord does not
//!   mark the service as flapping (metro also logs why);
//! - an instance whose interface does not exist is skipped; with none left metro exits 1, and
//!   an instance that cannot capture (interface down, no CAP_NET_RAW) stops metro with exit
//!   status 1; a signal (SIGINT, SIGTERM, SIGQUIT, SIGHUP) stops it with 0.
//!
//! Where metro differs (README's table says why): the last interval is sent before exiting; an
//! interface that disappears is waited for and captured again; when every instance reads a
//! file, metro exits 0 once the files are read and reported.
//!
//! What this module does not do: capture (that is [`crate::live`] and [`crate::capture`]), or
//! format metrics (that is [`crate::report::statsd`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, tick, Receiver, Sender};
use nix::sys::signal::Signal;
use tracing::{debug, error, info, warn};

use crate::capture::file::FileStats;
use crate::capture::filter::Framing;
use crate::capture::filter::Net;
use crate::capture::{expr, iface};
use crate::cli::{exit, Cli};
use crate::config::{self, msg, Config, ConfigError, Instance, Source};
use crate::decode::Addr;
use crate::dns;
use crate::flow::Ttl;
use crate::live::{self, IntervalReport, KernelStats, LiveConfig, LiveError, Pairs};
use crate::logging::{Logger, CRITICAL};
use crate::offline::{Follow, FollowEnd};
use crate::privilege::{self, Keep};
use crate::report::merge::Plan;
use crate::report::prometheus::{Endpoint, Exposition};
use crate::report::statsd::{Names, QueueSink, ReporterConfig, StatsdReporter, QUEUE_DATAGRAMS};
use crate::signals;
use crate::worker::WorkerConfig;

/// How long go-metro sleeps before exiting when it cannot read its configuration.
pub const MISSING_CONFIG_WAIT: Duration = Duration::from_secs(5);

/// How long metro waits at shutdown for live instances to hand over their last interval, and
/// then for the sender threads to put it on the wire.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Runs go-metro mode with the configuration at `cfg_path`; returns the exit status.
pub fn run(cli: &Cli, cfg_path: &Path) -> i32 {
    // Before any thread exists, so that every thread inherits the mask.
    let signal_set = match signals::block(signals::GO_METRO) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("metro: cannot block signals: {e}");
            return exit::FAILURE;
        }
    };
    let logger = Logger::install();
    // go-metro logs to its -log file, at warning level, until its configuration is read: a
    // start-up error lands where the agents' documentation tells users to look.
    if let Err(e) = logger.to_file(&cli.log) {
        eprintln!(
            "metro: cannot write the log file {}: {e}; logging to standard error instead (give -log a file metro may write)",
            cli.log.display()
        );
    }
    for a in &cli.ignored {
        warn!("argument {a:?} ignored: as go-metro's flag parsing, metro stops reading flags at the first argument that is not one");
    }
    if let Err(e) = check_filter(&cli.filter) {
        error!(target: CRITICAL, "{e}");
        return exit::FAILURE;
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
            return exit::FAILURE;
        }
    };
    logger.set_level(cfg.init.log_level);
    if !cfg.init.log_to_file {
        logger.to_stdout();
    }
    for w in &cfg.warnings {
        warn!("{}: {w}", cfg.path.display());
    }
    // With the log open and before any thread exists (they inherit what is left): a live
    // instance keeps CAP_NET_RAW, to capture its interface again if it is re-created.
    let live = cfg
        .instances
        .iter()
        .any(|i| matches!(i.source, Source::Interface(_)));
    let keep = if live { Keep::NetRaw } else { Keep::Nothing };
    let user = cli.user.as_deref().or(cfg.init.user.as_deref());
    if let Err(e) = privilege::lock_down(keep, user, cli.seccomp) {
        error!(target: CRITICAL, "{e}");
        return exit::FAILURE;
    }
    if let Some(u) = user {
        info!("running as user {u}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sig_rx = match signals::watch(signal_set, stop.clone(), false) {
        Ok(rx) => rx,
        Err(e) => {
            error!("cannot start the signal thread: {e}; metro will not stop cleanly on signals");
            bounded(1).1
        }
    };
    Daemon::new(cli, cfg, stop).run(&sig_rx)
}

/// go-metro's words for each stop signal.
fn log_signal(sig: Signal) {
    match sig {
        Signal::SIGHUP => warn!("hungup"),
        Signal::SIGINT => warn!("sig int caught, shutting down."),
        Signal::SIGTERM => warn!("force stop"),
        Signal::SIGQUIT => warn!("stop and core dump"),
        _ => {}
    }
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

/// Refuses `-f` expressions metro cannot evaluate, before anything starts: without libpcap,
/// every one but `tcp`; with it, those libpcap cannot compile (checked for Ethernet framing; a
/// raw-IP interface compiles it again for its own).
pub fn check_filter(expression: &str) -> Result<(), expr::ExprError> {
    if expr::is_default(expression) {
        return Ok(());
    }
    expr::compile(expression, Framing::Ethernet).map(|_| ())
}

/// Why an instance stops metro before anything runs (logged as CRITICAL, exit status 1).
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    /// A name in `ips` has no address: go-metro's libpcap cannot compile `host NAME` either.
    #[error("error setting BPF filter: cannot resolve {name:?} in `ips` ({why}; {} line {line}): write its address, or fix the name", path.display())]
    IpsName {
        name: String,
        why: String,
        path: std::path::PathBuf,
        line: u64,
    },
    /// Every whitelisted address is this host's own.
    #[error("Unable to start sniffer for interface: {iface:?} (please check your configuration and privileges): {} line {line}: whitelist a remote host in `ips` or `hosts`; a gateway can set `require_whitelist: false`", path.display())]
    LocalWhitelist {
        iface: String,
        path: std::path::PathBuf,
        line: u64,
    },
    /// The UDP socket to DogStatsD could not be made.
    #[error("Error instantiating stats Statter: {0}")]
    Statsd(std::io::Error),
}

/// One instance, ready to start: its whitelist resolved and its reporter built.
struct Prepared {
    inst: Instance,
    whitelist: Option<Vec<Net>>,
    reporter: StatsdReporter,
    /// The names the tags carry, filled in as look-ups answer.
    names: Names,
    /// Whitelisted addresses to look names up for (`ips` entries that are one address).
    unnamed: Vec<IpAddr>,
    /// Its series on the Prometheus endpoint, when there is one.
    exposition: Option<Exposition>,
}

/// How an instance ended, for the exit status.
enum Finished {
    /// Read to its end, or stopped.
    Ok,
    /// Ran, but broke off: metro goes on with the others and exits 1 at the end.
    Failed,
    /// Could not run: metro stops, as go-metro does when a sniffer is not running.
    CannotRun,
}

enum Done {
    /// A file was read to its end, or broke off, or could not be opened.
    File { idx: usize, end: FollowEnd },
    /// A live capture returned; `Err` when it could not start or had to stop.
    Live {
        iface: String,
        result: Result<(), LiveError>,
    },
}

/// A file instance being read, and where its intervals go.
struct FileRun {
    follow: Follow,
    reporter: StatsdReporter,
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
                return exit::FAILURE;
            }
        };
        let endpoint = match self.prometheus.map(Endpoint::serve).transpose() {
            Ok(e) => e,
            Err(e) => {
                error!(target: CRITICAL, "{e}");
                return exit::FAILURE;
            }
        };
        if let Some(e) = &endpoint {
            info!("serving Prometheus metrics on http://{}/metrics", e.addr());
        }
        let mut prepared = Vec::new();
        for inst in &self.cfg.instances {
            match self.prepare(inst, statsd, endpoint.as_ref()) {
                Ok(Some(p)) => prepared.push(p),
                // go-metro starts only the instances whose interface exists.
                Ok(None) => {}
                Err(e) => {
                    error!(target: CRITICAL, "{e}");
                    return exit::FAILURE;
                }
            }
        }
        if prepared.is_empty() {
            error!(
                target: CRITICAL,
                "No sniffers available, baling out (please check your configuration and privileges)."
            );
            return exit::FAILURE;
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
                Source::File(path) => match self.start_file(idx, &path, p, done_tx.clone()) {
                    Some(run) => {
                        files.insert(idx, run);
                    }
                    None => running -= 1,
                },
                Source::Interface(_) => self.start_live(idx, p, done_tx.clone()),
            }
        }
        drop(done_tx);

        let ticker = tick(self.cfg.init.report_interval);
        let mut failed = false;
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
                    match self.finish(d, &mut files) {
                        Finished::Ok => {}
                        Finished::Failed => failed = true,
                        // As go-metro, which exits 1 when a sniffer is not running.
                        Finished::CannotRun => {
                            failed = true;
                            self.shutdown(&mut files, &done_rx, running);
                            break;
                        }
                    }
                }
                recv(sig_rx) -> sig => {
                    if let Ok(sig) = sig {
                        log_signal(sig);
                    }
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
        if failed {
            exit::FAILURE
        } else {
            exit::OK
        }
    }

    /// Resolves an instance's whitelist and builds its reporter. `Ok(None)` skips an instance
    /// whose interface does not exist (logged); an error stops metro.
    fn prepare(
        &self,
        inst: &Instance,
        statsd: SocketAddr,
        endpoint: Option<&Endpoint>,
    ) -> Result<Option<Prepared>, PrepareError> {
        let init = &self.cfg.init;
        let local = match &inst.source {
            Source::File(_) => Vec::new(),
            Source::Interface(name) => match iface::lookup(name) {
                Ok(i) => {
                    info!("Will attempt sniffing off interface {name:?}");
                    i.addrs.into_iter().map(Addr::from).collect()
                }
                Err(e) => {
                    error!("Unable to instantiate sniffer for interface {name:?}: {e}");
                    return Ok(None);
                }
            },
        };
        let names: Names = Names::default();
        let mut nets: Vec<Net> = Vec::new();
        // go-metro's filter terms, for the log line and the messages.
        let mut terms: Vec<String> = Vec::new();
        let mut singles: Vec<IpAddr> = Vec::new();
        let host_names: Vec<String> = inst
            .ips
            .iter()
            .filter(|e| e.net.is_none())
            .map(|e| e.text.clone())
            .collect();
        let mut resolved = dns::lookup_hosts(&host_names).into_iter();
        for e in &inst.ips {
            match (e.net, e.single) {
                (Some(net), Some(ip)) => {
                    nets.push(net);
                    singles.push(ip);
                    terms.push(format!("host {ip}"));
                }
                (Some(net), None) => {
                    nets.push(net);
                    terms.push(format!("net {}", e.text));
                }
                // A name: go-metro's libpcap resolves `host NAME` in the filter, and the tags
                // carry the addresses (go-metro finds no name for a name).
                (None, _) => match resolved.next() {
                    Some((name, Ok(ips))) if !ips.is_empty() => {
                        for ip in ips {
                            info!("{name} resolving to: {ip}");
                            nets.push(Net::host(ip));
                        }
                        terms.push(format!("host {name}"));
                    }
                    Some((name, r)) => {
                        let why = r.err().map_or("no address".to_string(), |e| e.to_string());
                        return Err(PrepareError::IpsName {
                            name,
                            why,
                            path: self.cfg.path.clone(),
                            line: inst.line,
                        });
                    }
                    None => {}
                },
            }
        }
        for (host, r) in dns::lookup_hosts(&inst.hosts) {
            let ips = match r {
                Ok(ips) => ips,
                Err(e) => {
                    error!("Error resolving name for: {host} ({e})");
                    continue;
                }
            };
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
        // A range or a name always covers other hosts; single addresses may all be this host's.
        let all_local = inst.ips.iter().all(|e| e.single.is_some())
            && singles.iter().all(|ip| local.contains(&Addr::from(*ip)));
        if init.require_whitelist && all_local {
            error!("{} : [{}]", msg::LOCAL_WHITELIST, terms.join(" "));
            return Err(PrepareError::LocalWhitelist {
                iface: inst.interface.clone(),
                path: self.cfg.path.clone(),
                line: inst.line,
            });
        }
        let whitelist = if nets.is_empty() { None } else { Some(nets) };
        let filter = &self.filter;
        if terms.is_empty() {
            info!("Setting BPF filter: {filter} and not host 127.0.0.1");
        } else {
            info!(
                "Setting BPF filter: {filter} and not host 127.0.0.1 and ({})",
                terms.join(" or ")
            );
        }
        if !expr::is_default(filter) && matches!(inst.source, Source::File(_)) {
            warn!(
                "-f {filter:?} is applied to live interfaces only; the capture file for line {} is read whole (its whitelist still applies)",
                inst.line
            );
        }
        let sink = QueueSink::connect(statsd, QUEUE_DATAGRAMS).map_err(PrepareError::Statsd)?;
        let reporter = StatsdReporter::new(
            sink,
            ReporterConfig {
                iface: inst.interface.clone(),
                tags: inst.tags.clone(),
                soften: self.soften,
                extra_gauges: init.percentile_gauges,
                self_metrics: init.self_metrics,
            },
            names.clone(),
        );
        Ok(Some(Prepared {
            inst: inst.clone(),
            whitelist,
            reporter,
            names,
            unnamed: inst.ips.iter().filter_map(|e| e.single).collect(),
            exposition: endpoint.map(|e| e.exposition(&inst.interface, &inst.tags, init.max_pairs)),
        }))
    }

    fn worker_config(&self, whitelist: &Option<Vec<Net>>) -> WorkerConfig {
        let init = &self.cfg.init;
        WorkerConfig {
            max_flows: init.max_flows,
            max_pairs: init.max_pairs,
            max_ports: init.group_by_port.then_some(init.max_ports),
            ttl: Ttl {
                idle_ns: init.idle_ttl.as_nanos() as u64,
                closed_ns: init.exp_ttl.as_nanos() as u64,
            },
            whitelist: whitelist.clone(),
            ..WorkerConfig::default()
        }
    }

    fn start_file(
        &self,
        idx: usize,
        path: &Path,
        p: Prepared,
        done: Sender<Done>,
    ) -> Option<FileRun> {
        info!("starting capture on interface {:?}", p.inst.interface);
        let (unnamed, names) = (p.unnamed, p.names);
        let follow = Follow::start(
            path,
            idx,
            &self.worker_config(&p.whitelist),
            self.stop.clone(),
            // As go-metro, names first: a file is read faster than DNS answers.
            move || name_addresses(&unnamed, &names),
            move |end| {
                let _ = done.send(Done::File { idx, end });
            },
        );
        match follow {
            Ok(follow) => Some(FileRun {
                follow,
                reporter: p.reporter,
                exposition: p.exposition,
                packets: 0,
                samples: 0,
                max_pairs: self.cfg.init.max_pairs,
            }),
            Err(e) => {
                error!("cannot start a thread for instance {idx}: {e}");
                None
            }
        }
    }

    fn start_live(&self, idx: usize, p: Prepared, done: Sender<Done>) {
        let init = &self.cfg.init;
        let Source::Interface(iface) = &p.inst.source else {
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
            connections: None,
        };
        let stop = self.stop.clone();
        let mut reporter = p.reporter;
        let mut exposition = p.exposition;
        info!("starting capture on interface {iface:?}");
        name_addresses_in_background(p.unnamed, p.names);
        let spawned = thread::Builder::new()
            .name(format!("metro-live-{idx}"))
            .spawn(move || {
                let mut restarted = false;
                let result = loop {
                    let r = live::run(&cfg, &stop, &mut |r: &IntervalReport| {
                        send_report(&mut reporter, exposition.as_mut(), &cfg.interface, r)
                    });
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
                reporter.sink().flush_wait(SHUTDOWN_WAIT);
                let _ = done.send(Done::Live {
                    iface: cfg.interface.clone(),
                    result,
                });
            });
        if let Err(e) = spawned {
            error!("cannot start a thread for instance {idx}: {e}");
        }
    }

    /// Handles an instance that has finished.
    fn finish(&self, d: Done, files: &mut HashMap<usize, FileRun>) -> Finished {
        match d {
            Done::File { idx, end } => {
                let Some(mut run) = files.remove(&idx) else {
                    return Finished::Ok;
                };
                match end {
                    FollowEnd::Read { stats, error } => {
                        report_file(&mut run, Some(&stats), true);
                        run.reporter.sink().flush_wait(SHUTDOWN_WAIT);
                        info!("Done sniffing.");
                        log_totals(&run);
                        match error {
                            Some(e) => {
                                error!("{e}; the metrics sent cover the packets before it");
                                Finished::Failed
                            }
                            None => Finished::Ok,
                        }
                    }
                    FollowEnd::NotOpened(e) => {
                        error!(
                            "Unable to open pcap file {:?}: {e}",
                            run.follow.path().display()
                        );
                        error!(
                            target: CRITICAL,
                            "Unable to start sniffer for interface: \"file\" (please check your configuration and privileges)."
                        );
                        Finished::CannotRun
                    }
                }
            }
            Done::Live { iface, result } => match result {
                Ok(()) => Finished::Ok,
                Err(e) => {
                    error!(
                        target: CRITICAL,
                        "Unable to start sniffer for interface: {iface:?} (please check your configuration and privileges): {e}"
                    );
                    Finished::CannotRun
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
        run.follow.path().display(),
        run.packets,
        run.samples
    );
}

/// Sends a file instance's interval: what its worker gathered since the last report.
fn report_file(run: &mut FileRun, ended: Option<&FileStats>, last: bool) {
    let mut stats = run.follow.take_interval(ended);
    stats.settle();
    let plan = Plan::new([&stats], run.max_pairs);
    let counters = plan.counters;
    run.packets += counters.packets;
    run.samples += counters.samples - counters.filtered;
    let report = IntervalReport {
        iface: String::new(),
        pairs: Pairs::Merge(Box::new(plan)),
        counters,
        kernel: KernelStats::default(),
        last,
        flows: Vec::new(),
        whole_run: None,
    };
    send_report(&mut run.reporter, run.exposition.as_mut(), "file", &report);
}

/// Sends one interval's metrics; at debug level, says what it held (go-metro logs every
/// metric and every expired flow at info; metro one line an interval, at debug).
fn send_report(
    reporter: &mut StatsdReporter,
    exposition: Option<&mut Exposition>,
    iface: &str,
    r: &IntervalReport,
) {
    reporter.report(r);
    if let Some(x) = exposition {
        x.report(r);
    }
    let c = &r.counters;
    debug!(
        "reported {iface}{}: {} host pairs with {} RTT samples; {} packets, {} flows expired, {} evicted, {} tracked",
        if r.last { " (last interval)" } else { "" },
        r.pairs.len(),
        r.pairs.samples(),
        c.packets,
        c.table.expired,
        c.table.evicted,
        c.active_flows
    );
}

/// `statsd_ip` names no host metro can find.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {0:?}; give DogStatsD's IP address")]
pub struct StatsdAddrError(String);

/// DogStatsD's address: an IP (as go-metro requires) or, from metro, a host name.
fn resolve_statsd(host: &str, port: u16) -> Result<SocketAddr, StatsdAddrError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| StatsdAddrError(host.to_string()))
}

/// Names whitelisted addresses as go-metro does, in order: each name of Go's `LookupAddr` list
/// is logged, and the last one is kept for the tags; a failure is logged and the tag carries
/// the address.
fn name_addresses(ips: &[IpAddr], names: &Names) {
    for &ip in ips {
        if names.read().map(|n| n.contains_key(&ip)).unwrap_or(false) {
            continue;
        }
        match dns::lookup_addr(ip) {
            Ok(list) => {
                for name in &list {
                    info!("{name} resolving to: {ip}");
                }
                if let Some(last) = list.last() {
                    names
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(ip, last.clone());
                }
            }
            Err(e) => {
                error!("Problem looking up hostnames for: {ip}");
                debug!("{ip}: {e}");
            }
        }
    }
}

/// [`name_addresses`] on a thread of its own, so that capture does not wait for DNS; until a
/// name is found, tags carry the address.
fn name_addresses_in_background(ips: Vec<IpAddr>, names: Names) {
    if ips.is_empty() {
        return;
    }
    let spawned = thread::Builder::new()
        .name("metro-rdns".into())
        .spawn(move || name_addresses(&ips, &names));
    if let Err(e) = spawned {
        warn!("cannot start the name look-up thread: {e}; tags carry addresses");
    }
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
            check_filter("tcp port 80").unwrap_err().to_string(),
            "-f \"tcp port 80\": this metro was built without libpcap, so it cannot compile filter expressions other than `tcp`; drop -f (the instances' `ips`/`hosts` whitelist selects hosts), or build metro with `--features libpcap`"
        );
        #[cfg(feature = "libpcap")]
        {
            assert!(check_filter("tcp port 80").is_ok());
            let e = check_filter("tcp port eighty").unwrap_err().to_string();
            assert!(
                e.starts_with(
                    "-f \"tcp port eighty\": libpcap cannot compile this filter expression ("
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn names_of_addresses_fill_in_and_failures_leave_the_address() {
        let names = Names::default();
        // 127.0.0.1 is named in every /etc/hosts: the last name of its lines is kept.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let hosts = std::fs::read_to_string(dns::HOSTS_FILE).unwrap();
        let want = dns::hosts_names(&hosts, lo).pop();
        assert!(want.is_some(), "{hosts}");
        name_addresses(&[lo], &names);
        assert_eq!(names.read().unwrap().get(&lo).cloned(), want);
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
