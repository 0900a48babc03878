//! The `metro` binary: parse the command line, pick the mode, run, map errors to exit codes.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, Select, TryRecvError};

use metro::cli::{exit, Cli, Format, Mode};
use metro::conn::{Connection, ResentBytes};
use metro::daemon;
use metro::decode::Addr;
use metro::live::{self, ConnStream, IntervalReport, LiveConfig, SampleStream, Stream};
use metro::offline;
use metro::privilege::{self, Keep, PrivilegeError};
use metro::record::PairKey;
use metro::report::plot::{PairChoice, PlotInput, PlotTarget, PointLimits, DEFAULT_PAIRS};
use metro::report::prometheus::Endpoint;
use metro::report::{json, table, Counters, PairSummary};
use metro::signals;
use metro::worker::{SampleRecord, WorkerConfig};

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; real errors explain themselves.
            let _ = e.print();
            if e.kind() == clap::error::ErrorKind::UnknownArgument {
                eprintln!("{}", metro::cli::flags_hint());
            }
            let code = if e.use_stderr() {
                exit::FLAGS
            } else {
                exit::OK
            };
            return ExitCode::from(code as u8);
        }
    };
    let code = match cli.mode() {
        Mode::Offline(pcap) => offline_main(&cli, &pcap),
        Mode::Live(iface) => live_main(&cli, &iface),
        Mode::Config(cfg) => daemon::run(&cli, &cfg),
    };
    ExitCode::from(code as u8)
}

/// Offline mode: read a capture, print its statistics.
fn offline_main(cli: &Cli, pcap: &[PathBuf]) -> i32 {
    match run(cli, pcap) {
        Ok(code) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("metro: cannot write output: {e}");
            exit::INPUT
        }
    }
}

fn run(cli: &Cli, pcap: &[PathBuf]) -> io::Result<i32> {
    let cfg = WorkerConfig {
        local: cli.local.iter().map(|ip| Addr::from(*ip)).collect(),
        keep_samples: cli.samples,
        by_flow: cli.by_flow(),
        max_ports: cli.max_ports(),
        max_pairs: cli.max_pairs as usize,
        max_flows: cli.max_flows as usize,
        ..WorkerConfig::default()
    };
    let plot = match open_plot(cli) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if let Err(e) = privilege::lock_down(Keep::Nothing, cli.user.as_deref(), cli.seccomp) {
        return Ok(refused(&e));
    }
    let limits = plot.as_ref().map(|_| point_limits(cli));
    let workers = cli.workers.unwrap_or(1) as usize;
    let outcome = match offline::run_plotted(pcap, workers, &cfg, limits) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("metro: {e}");
            if let Some(p) = plot {
                p.discard();
            }
            return Ok(exit::INPUT);
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let plan = outcome.plan();
    let counters = &plan.counters;
    if cli.samples || cli.format == Format::Json || cli.by_flow() {
        for s in &outcome.samples {
            json::write_sample(&mut out, s)?;
        }
        for c in &outcome.connections {
            json::write_connection(&mut out, c)?;
        }
        if outcome.untracked_connections > 0 {
            json::write_untracked(&mut out, outcome.untracked_connections)?;
        }
        if cli.by_flow() {
            let mut resent = ResentBytes::new(&outcome.connections, cli.max_ports().is_some());
            plan.for_each(|p| {
                let n = if p.other {
                    0
                } else {
                    resent.line(p.src, p.dst, p.port)
                };
                json::write_pair_retrans(&mut out, p, n)
            })?;
        } else {
            plan.for_each(|p| json::write_pair(&mut out, p))?;
        }
        json::write_counters(&mut out, counters)?;
    } else {
        table::write_plan(&mut out, &plan, counters)?;
    }
    out.flush()?;
    if let (Some(target), Some(points)) = (plot, &outcome.points) {
        let first = &pcap[0];
        let mut source = first
            .file_name()
            .unwrap_or(first.as_os_str())
            .to_string_lossy()
            .into_owned();
        if pcap.len() > 1 {
            source += &format!(" and {} more", pcap.len() - 1);
        }
        let pairs = outcome.merged().into_summaries();
        let code = write_plot(cli, target, &source, &pairs, counters, points);
        if code != exit::OK {
            return Ok(code);
        }
    }
    if let Some(e) = outcome.error {
        eprintln!("metro: {e}; the statistics above cover the packets before it");
        return Ok(exit::INPUT);
    }
    Ok(exit::OK)
}

/// Opens `--plot`'s file, if any, before anything is read; on failure, says why and returns the
/// exit status.
fn open_plot(cli: &Cli) -> Result<Option<PlotTarget>, i32> {
    let Some(path) = &cli.plot else {
        return Ok(None);
    };
    if cli.max_ports().is_some() {
        eprintln!("metro: --plot draws host pairs, not ports: drop --by port, or run metro twice");
        return Err(exit::USAGE);
    }
    PlotTarget::open(path).map(Some).map_err(|e| {
        eprintln!("metro: {e}");
        exit::USAGE
    })
}

fn plot_choice(cli: &Cli) -> PairChoice {
    if cli.plot_pair.is_empty() {
        PairChoice::Busiest(cli.plot_pairs.map_or(DEFAULT_PAIRS, usize::from))
    } else {
        PairChoice::Named(
            cli.plot_pair
                .iter()
                .map(|(s, d)| PairKey::hosts(Addr::from(*s), Addr::from(*d)))
                .collect(),
        )
    }
}

fn point_limits(cli: &Cli) -> PointLimits {
    PointLimits {
        only: match plot_choice(cli) {
            PairChoice::Named(keys) => Some(keys),
            PairChoice::Busiest(_) => None,
        },
        ..PointLimits::default()
    }
}

/// Draws and writes the page; returns the exit status.
fn write_plot(
    cli: &Cli,
    target: PlotTarget,
    source: &str,
    pairs: &[PairSummary],
    counters: &Counters,
    points: &metro::report::plot::PlotPoints,
) -> i32 {
    let choice = plot_choice(cli);
    let input = PlotInput {
        source,
        pairs,
        counters,
        points,
        choice: &choice,
    };
    match target.write(&input) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("metro: {e}");
            exit::INPUT
        }
    }
}

/// Live mode: capture on an interface, print statistics; map errors to exit codes.
fn live_main(cli: &Cli, iface: &str) -> i32 {
    match run_live(cli, iface) {
        Ok(code) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("metro: cannot write output: {e}");
            exit::INPUT
        }
    }
}

/// Ad-hoc live capture: report every interval and at the end, stop on SIGINT or SIGTERM.
fn run_live(cli: &Cli, name: &str) -> io::Result<i32> {
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
    let mut cfg = LiveConfig::new(name);
    cfg.workers = cli.workers.map(usize::from);
    cfg.interval = cli.interval;
    cfg.duration = cli.duration;
    cfg.dump_flows = cli.dump_flows;
    cfg.ring.block_size = cli.ring_block_size;
    cfg.ring.block_count = cli.ring_blocks;
    cfg.ring.block_timeout = Duration::from_millis(cli.ring_block_timeout);
    cfg.expression = Some(cli.filter.clone());
    cfg.worker.local = cli.local.iter().map(|ip| Addr::from(*ip)).collect();
    cfg.worker.max_pairs = cli.max_pairs as usize;
    cfg.worker.max_ports = cli.max_ports();
    cfg.worker.max_flows = cli.max_flows as usize;
    let mut plot = match open_plot(cli) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    cfg.plot = plot.as_ref().map(|_| point_limits(cli));
    // With the plot's file open and before any thread exists (they inherit what is left).
    if let Err(e) = privilege::lock_down(Keep::NetRaw, cli.user.as_deref(), cli.seccomp) {
        return Ok(refused(&e));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watched = signals::block(signals::LIVE)
        .map_err(io::Error::from)
        .and_then(|set| signals::watch(set, Arc::clone(&stop), true));
    if let Err(e) = watched {
        eprintln!("metro: cannot set up signal handling: {e}");
        return Ok(exit::INPUT);
    }
    let endpoint = match cli.prometheus.map(Endpoint::serve).transpose() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("metro: {e}");
            return Ok(exit::USAGE);
        }
    };
    let mut exposition = endpoint
        .as_ref()
        .map(|e| e.exposition(name, &[], cfg.worker.max_pairs));

    let printer = cli.samples.then(|| {
        let (stream, rx) = SampleStream::bounded(SAMPLE_QUEUE);
        cfg.samples = Some(stream.clone());
        SamplePrinter::start(stream, rx)
    });
    let conns = cli.by_flow().then(|| {
        cfg.worker.by_flow = true;
        let (conns, rx) = Stream::bounded(CONN_QUEUE);
        let stream = ConnStream {
            conns,
            untracked: Arc::new(AtomicU64::new(0)),
        };
        cfg.connections = Some(stream.clone());
        (stream, rx)
    });
    let format = if cli.samples || cli.by_flow() {
        Format::Json
    } else {
        cli.format
    };

    let mut write_error: Option<io::Error> = None;
    let mut plot_code = exit::OK;
    let result = live::run(&cfg, &stop, &mut |rep| {
        if let Some(x) = &mut exposition {
            x.report(rep);
        }
        if write_error.is_none() {
            // The interval's samples were queued before it was handed over: print them first.
            let _order = printer.as_ref().map(SamplePrinter::hold);
            let dropped = printer.as_ref().map(SamplePrinter::take_dropped);
            let printed = match &printer {
                Some(p) => p.drain(),
                None => Ok(()),
            };
            // The connections that ended were handed over before the interval, too.
            let printed = printed.and_then(|()| match &conns {
                Some((stream, rx)) => print_connections(stream, rx),
                None => Ok(()),
            });
            if let Err(e) = printed.and_then(|()| print_report(format, rep, dropped)) {
                write_error = Some(e);
                stop.store(true, Ordering::Release);
            }
        }
        let whole = rep.whole_run.as_ref();
        if let Some((whole, target)) = whole.and_then(|w| plot.take().map(|t| (w, t))) {
            plot_code = write_plot(
                cli,
                target,
                name,
                &whole.pairs,
                &whole.counters,
                &whole.points,
            );
        }
    });
    if let Some(target) = plot {
        // The capture never started: no page.
        target.discard();
    }
    cfg.samples = None;
    cfg.connections = None;
    if let Some(p) = printer {
        if let Err(e) = p.finish() {
            write_error.get_or_insert(e);
        }
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    if plot_code != exit::OK {
        return Ok(plot_code);
    }
    match result {
        Ok(()) => Ok(exit::OK),
        Err(e) => {
            eprintln!("metro: {e}");
            Ok(if e.is_config() {
                exit::USAGE
            } else {
                exit::INPUT
            })
        }
    }
}

/// Says why privileges could not be dropped ([`privilege::lock_down`]) and returns the exit
/// status: a usage error when the command line is at fault, an input error otherwise.
fn refused(e: &PrivilegeError) -> i32 {
    eprintln!("metro: {e}");
    if e.is_config() {
        exit::USAGE
    } else {
        exit::INPUT
    }
}

/// Ended connections queued between the live workers and the interval's report (`--by flow`):
/// a busy interval's worth (a connection is a few hundred bytes beside its kept samples).
const CONN_QUEUE: usize = 65_536;

/// Prints the connections queued now, then, when some were lost in the interval, how many.
fn print_connections(stream: &ConnStream, rx: &Receiver<Connection>) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    while let Ok(c) = rx.try_recv() {
        json::write_connection(&mut out, &c)?;
    }
    let untracked = stream.untracked.swap(0, Ordering::Relaxed);
    let dropped = stream.conns.dropped.swap(0, Ordering::Relaxed);
    if untracked > 0 || dropped > 0 {
        json::write_connections_lost(&mut out, untracked, dropped)?;
    }
    out.flush()
}

/// Samples queued between the live workers and the printer: at 100,000 samples a second, the
/// printer may fall 0.6 s behind before samples are dropped (64 bytes each, 4 MiB).
const SAMPLE_QUEUE: usize = 65_536;

/// `--samples`, live: a thread that prints the workers' samples as they come, and the order
/// between them and the interval reports.
struct SamplePrinter {
    rx: Receiver<SampleRecord>,
    dropped: Arc<AtomicU64>,
    /// Held while samples are taken from the queue and written, and by a report while it drains
    /// the queue and is written, so that a sample queued before a report is printed before it.
    order: Arc<Mutex<()>>,
    /// Set while a report waits for `order`. A mutex is not fair: the printer, taking it again
    /// at once, could keep a report waiting for as long as samples come. It leaves it to the report.
    report_waiting: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl SamplePrinter {
    fn start(stream: SampleStream, rx: Receiver<SampleRecord>) -> SamplePrinter {
        let order = Arc::new(Mutex::new(()));
        let report_waiting = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (rx2, order2, waiting2, done2) = (
            rx.clone(),
            Arc::clone(&order),
            Arc::clone(&report_waiting),
            Arc::clone(&done),
        );
        let thread = std::thread::spawn(move || -> io::Result<()> {
            // Waits for a sample without taking it: samples are taken only with `order` held.
            let mut ready = Select::new();
            ready.recv(&rx2);
            while !done2.load(Ordering::Acquire) {
                if ready.ready_timeout(Duration::from_millis(50)).is_err() {
                    continue;
                }
                if waiting2.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let _g = order2.lock().unwrap_or_else(|e| e.into_inner());
                let stdout = io::stdout();
                let mut out = BufWriter::new(stdout.lock());
                loop {
                    match rx2.try_recv() {
                        Ok(s) => json::write_sample(&mut out, &s)?,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return out.flush(),
                    }
                }
                out.flush()?;
            }
            Ok(())
        });
        SamplePrinter {
            rx,
            dropped: stream.dropped,
            order,
            report_waiting,
            done,
            thread,
        }
    }

    /// Keeps the printer from printing until the guard is dropped.
    fn hold(&self) -> MutexGuard<'_, ()> {
        self.report_waiting.store(true, Ordering::Release);
        let g = self.order.lock().unwrap_or_else(|e| e.into_inner());
        self.report_waiting.store(false, Ordering::Release);
        g
    }

    /// Samples dropped since the last call.
    fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Prints the samples queued now (with the order held).
    fn drain(&self) -> io::Result<()> {
        print_queued(&self.rx)
    }

    /// Stops the thread once the queue is empty.
    fn finish(self) -> io::Result<()> {
        self.done.store(true, Ordering::Release);
        let r = self.thread.join().unwrap_or(Ok(()));
        print_queued(&self.rx).and(r)
    }
}

/// Prints the samples queued in `rx` now.
fn print_queued(rx: &Receiver<SampleRecord>) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    while let Ok(s) = rx.try_recv() {
        json::write_sample(&mut out, &s)?;
    }
    out.flush()
}

fn print_report(format: Format, rep: &IntervalReport, dropped: Option<u64>) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let k = &rep.kernel;
    match format {
        Format::Json => {
            json::write_interval(&mut out, rep, dropped)?;
        }
        Format::Table => {
            let what = if rep.last { "last report" } else { "interval" };
            writeln!(out, "== {}: {what}", rep.iface)?;
            table::write_pairs(&mut out, &rep.pairs, &rep.counters)?;
            writeln!(
                out,
                "kernel: received {}  dropped {}  freezes {}",
                k.received, k.dropped, k.freezes
            )?;
            writeln!(out)?;
        }
    }
    json::write_flows(&mut out, rep)?;
    out.flush()
}
