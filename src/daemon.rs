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
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, tick, Receiver, Sender};
use nix::sys::signal::Signal;
use tracing::{debug, error, info, warn};

use crate::capture::file::FileStats;
use crate::capture::filter::Net;
use crate::capture::{expr, iface};
use crate::cli::{exit, Cli};
use crate::config::{self, msg, Config, ConfigError, Instance, Source};
use crate::decode::Addr;
use crate::dns;
use crate::flow::Ttl;
use crate::live::{self, LiveConfig, LiveError};
use crate::logging::{Logger, CRITICAL};
use crate::offline::{Follow, FollowEnd};
use crate::privilege::{self, Keep};
use crate::report::interval::IntervalReport;
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
    if let Err(e) = expr::check(&cli.filter) {
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
        let statsd = match dns::statsd_addr(&init.statsd_ip, init.statsd_port) {
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
                    if let Some(words) = sig.ok().and_then(signals::go_metro_words) {
                        warn!("{words}");
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
        let whitelist = dns::resolve_whitelist(&inst.ips, &inst.hosts, &names).map_err(|e| {
            PrepareError::IpsName {
                name: e.name,
                why: e.why,
                path: self.cfg.path.clone(),
                line: inst.line,
            }
        })?;
        let dns::Whitelist {
            nets,
            terms,
            singles,
        } = whitelist;
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
            move || dns::name_addresses(&unnamed, &names),
            move |end| {
                let _ = done.send(Done::File { idx, end });
            },
        );
        match follow {
            Ok(follow) => Some(FileRun {
                follow,
                reporter: p.reporter,
                exposition: p.exposition,
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
        dns::name_addresses_in_background(p.unnamed, p.names);
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
                    if !iface::wait_until_up(&cfg.interface, &stop) {
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
    let (packets, samples) = run.follow.totals();
    info!(
        "{}: {packets} packets, {samples} RTT samples reported",
        run.follow.path().display(),
    );
}

/// Sends a file instance's interval: what its worker gathered since the last report.
fn report_file(run: &mut FileRun, ended: Option<&FileStats>, last: bool) {
    let FileRun {
        follow,
        reporter,
        exposition,
    } = run;
    follow.report(ended, last, |report| {
        send_report(reporter, exposition.as_mut(), "file", report)
    });
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
