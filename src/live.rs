//! Live capture: TPACKET_V3 rings fanned out to pinned workers, and a reporter.
//!
//! [`run`] opens one AF_PACKET socket and ring per worker on one interface, all in one
//! `PACKET_FANOUT_HASH` group, so the kernel itself sends both directions of every flow to the
//! same worker and the workers share nothing. Each worker thread is pinned to a CPU of the
//! process's affinity mask and loops poll → walk the ready blocks → hand them back, feeding every
//! frame, in place, to the same [`Worker`] the offline mode uses. Per packet there is no copy, no
//! lock, no system call and no allocation.
//!
//! The calling thread is the reporter. Every interval it hands each worker a recycled, empty
//! [`IntervalStats`] over a channel; the worker swaps it in at its next loop turn and sends the
//! full one back, so no worker ever stops or waits for the reporter. The reporter merges them,
//! adds the kernel's counters, and calls `on_interval`. At shutdown (the stop flag, or the
//! duration's end) workers keep draining their rings for two block timeouts, so every packet the
//! kernel queued before the stop is in the last report.
//!
//! The reporter also watches the interface: when it goes down, capture waits (the kernel re-arms
//! the sockets when it comes back up) and both events are logged; when it disappears, the run
//! ends with a last report and [`LiveError::InterfaceGone`]. A duty cycle pauses capture by
//! swapping in a filter that keeps nothing, so a paused capture costs the kernel one instruction
//! per packet and the workers nothing.
//!
//! What this does not do: read capture files ([`crate::offline`]), print ([`crate::report`]),
//! or watch more than one interface (call [`run`] once per interface, on its own thread).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use tracing::{debug, error, info, warn};

use crate::capture::expr::{self, ExprError};
use crate::capture::filter::{self, FilterError, Insn, Net};
use crate::capture::iface::{self, IfaceError, Status};
use crate::capture::ring::{self, PacketSocket, Ring, RingError, RingSize, Wake};
use crate::capture::LinkType;
use crate::config::{DutyCycle, RingConfig};
use crate::conn::Connection;
use crate::decode::Addr;
use crate::flow::FlowKey;
use crate::record::IntervalStats;
pub use crate::report::interval::{IntervalReport, KernelStats, Pairs, WholeRun};
use crate::report::merge::Plan;
use crate::report::plot::{PlotPoints, PointLimits};
use crate::report::Counters;
use crate::worker::{SampleRecord, Worker, WorkerConfig};

/// Everything one live capture (one interface, one fanout group) needs.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The interface to capture on.
    pub interface: String,
    /// Worker count; `None` means one per CPU in the process's affinity mask.
    pub workers: Option<usize>,
    /// Ring sizes.
    pub ring: RingConfig,
    /// Bytes captured per frame.
    pub snaplen: u32,
    /// Put the interface in promiscuous mode.
    pub promiscuous: bool,
    /// Hosts whose RTT is wanted (also compiled into the kernel filter); `None` for all.
    pub whitelist: Option<Vec<Net>>,
    /// A libpcap filter expression (`-f`) that frames must pass as well as metro's own filter;
    /// `None` for metro's filter alone. Needs the `libpcap` feature.
    pub expression: Option<String>,
    /// Flow table and reporting settings; `local` is filled from the interface.
    pub worker: WorkerConfig,
    /// Report interval.
    pub interval: Duration,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Capture only part of the time.
    pub duty: Option<DutyCycle>,
    /// Put each worker's flow keys in the last report ([`IntervalReport::flows`]), a diagnostic
    /// of how the kernel spread the flows.
    pub dump_flows: bool,
    /// Keep samples for a plot of the whole run, within these limits, and put the whole run's
    /// statistics in the last report ([`IntervalReport::whole_run`]).
    pub plot: Option<PointLimits>,
    /// Stream every reported sample here while capturing (`--samples`).
    pub samples: Option<SampleStream>,
    /// Hand every connection here once it has ended (`--by flow`, with `worker.by_flow`): at
    /// the end of each interval, before the interval, and the rest when the capture ends.
    pub connections: Option<ConnStream>,
}

/// Where live workers hand what they stream (every reported sample with `--samples`, every
/// ended connection with `--by flow`): a bounded queue that a worker never waits on. An item that
/// finds it full is dropped and counted in `dropped`.
#[derive(Debug)]
pub struct Stream<T> {
    /// The queue's sending side, shared by the workers.
    pub tx: Sender<T>,
    /// Items dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
}

/// The reported samples, with `--samples`.
pub type SampleStream = Stream<SampleRecord>;

/// The ended connections, with `--by flow`; beside them, the connections the workers did not
/// keep because `max_flows` were ([`ConnStream::untracked`]).
#[derive(Debug, Clone)]
pub struct ConnStream {
    /// The connections.
    pub conns: Stream<Connection>,
    /// Connections not kept, added by each worker at each interval's end.
    pub untracked: Arc<AtomicU64>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Stream {
            tx: self.tx.clone(),
            dropped: Arc::clone(&self.dropped),
        }
    }
}

impl<T> Stream<T> {
    /// A queue of `capacity` items, and its receiving side.
    pub fn bounded(capacity: usize) -> (Stream<T>, Receiver<T>) {
        let (tx, rx) = bounded(capacity);
        (
            Stream {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    fn send(&self, item: T) {
        if self.tx.try_send(item).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Default snap length: Ethernet with a VLAN tag (18), IPv6 with a fragment header (48) and a
/// TCP header with full options (60) fit in 126 bytes; 256 leaves room for more extension headers.
pub const DEFAULT_SNAPLEN: u32 = 256;

impl LiveConfig {
    /// A capture of `interface` with every other setting at its default.
    pub fn new(interface: impl Into<String>) -> LiveConfig {
        LiveConfig {
            interface: interface.into(),
            workers: None,
            ring: RingConfig::default(),
            snaplen: DEFAULT_SNAPLEN,
            promiscuous: false,
            whitelist: None,
            expression: None,
            worker: WorkerConfig::default(),
            // Ad hoc live mode's default (`--interval`): a quick look at a link. go-metro mode
            // reports every `report_interval` instead (30 s, go-metro's).
            interval: Duration::from_secs(10),
            duration: None,
            duty: None,
            dump_flows: false,
            plot: None,
            samples: None,
            connections: None,
        }
    }
}

/// Why live capture could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The kernel filter could not be built from the whitelist.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The `-f` expression could not be compiled.
    #[error(transparent)]
    Expression(#[from] ExprError),
    /// The interface does not exist or could not be looked up.
    #[error(transparent)]
    Interface(#[from] IfaceError),
    /// The interface's link layer is one metro cannot decode.
    #[error("cannot capture on {name}: its link type (ARPHRD {hatype}) is not Ethernet or raw IP")]
    LinkType {
        /// The interface.
        name: String,
        /// Its `ARPHRD_*` type.
        hatype: u16,
    },
    /// The interface is down, so the sockets cannot join a fanout group.
    #[error("cannot capture on {0}: the interface is down (bring it up: ip link set {0} up)")]
    InterfaceDown(String),
    /// A socket or ring could not be set up.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The interface disappeared while capturing; the last report was still made.
    #[error(
        "interface {0} disappeared while capturing; the last report covers the packets before"
    )]
    InterfaceGone(String),
    /// A worker thread failed.
    #[error("a capture worker failed: {0}")]
    Worker(String),
}

impl LiveError {
    /// True when the error is in the configuration or command line (exit status 1), false when
    /// the capture itself could not run (exit status 2).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            LiveError::Config(_) | LiveError::Filter(_) | LiveError::Expression(_)
        )
    }
}

/// How long an idle worker sleeps in `poll` before looking at its channel and the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Longest the reporter sleeps between looks at the stop flag, the clock and the interface.
const TICK: Duration = Duration::from_millis(50);
/// How often the reporter checks that the interface is still there and up.
const IFACE_CHECK: Duration = Duration::from_millis(250);
/// Address updates a worker's queue holds; the reporter sends one at most every `IFACE_CHECK`.
const LOCAL_UPDATES: usize = 4;

/// Blocks a worker walks before it looks at its channel again.
const BLOCKS_PER_TURN: usize = 8;
/// Longest the reporter waits for a worker's interval: a worker answers within one `POLL` plus
/// one turn, so this only expires if a worker is gone.
const SWAP_WAIT: Duration = Duration::from_secs(5);

fn validate(cfg: &LiveConfig) -> Result<(), LiveError> {
    cfg.ring.check().map_err(LiveError::Config)?;
    if cfg.snaplen < 64 {
        return Err(LiveError::Config(format!(
            "snap length {} is too short for TCP headers: use at least 64 bytes",
            cfg.snaplen
        )));
    }
    if cfg.interval.is_zero() {
        return Err(LiveError::Config(
            "the report interval must be longer than zero".into(),
        ));
    }
    if cfg.workers == Some(0) {
        return Err(LiveError::Config("at least one worker is needed".into()));
    }
    if let Some(d) = cfg.duty {
        if d.every.is_zero() || d.on.is_zero() || d.on > d.every {
            return Err(LiveError::Config(format!(
                "duty cycle: capture time {:?} must be above zero and at most the period {:?}",
                d.on, d.every
            )));
        }
    }
    Ok(())
}

/// The local addresses workers use: the configured ones, plus the interface's own.
fn local_with(configured: &[Addr], iface: &[IpAddr]) -> Vec<Addr> {
    let mut local = configured.to_vec();
    for a in iface.iter().map(|ip| Addr::from(*ip)) {
        if !local.contains(&a) {
            local.push(a);
        }
    }
    local
}

/// What the reporter holds for one worker.
struct WorkerLane {
    fresh: Sender<IntervalStats>,
    full: Receiver<IntervalStats>,
    local: Sender<Vec<Addr>>,
}

/// What a worker thread holds besides its ring.
struct Control<'a> {
    fresh: Receiver<IntervalStats>,
    full: Sender<IntervalStats>,
    /// New local addresses, when the interface's change.
    local: Receiver<Vec<Addr>>,
    quit: &'a AtomicBool,
    failed: &'a Mutex<Option<String>>,
    grace: Duration,
    dump_flows: bool,
    /// The samples kept for a plot, when one is asked for.
    points: Option<PlotPoints>,
    /// Where samples are streamed, with `--samples`.
    stream: Option<SampleStream>,
    /// Where ended connections go, with `--by flow`.
    conns: Option<ConnStream>,
    /// Connections not kept, as counted at the last hand-over.
    untracked: u64,
}

/// Captures until `stop` is set or the duration ends, calling `on_interval` after every
/// interval and once more at shutdown.
pub fn run(
    cfg: &LiveConfig,
    stop: &Arc<AtomicBool>,
    on_interval: &mut dyn FnMut(&IntervalReport),
) -> Result<(), LiveError> {
    validate(cfg)?;
    let itf = iface::lookup(&cfg.interface)?;
    let (link, framing) = itf.framing().ok_or_else(|| LiveError::LinkType {
        name: itf.name.clone(),
        hatype: itf.hatype,
    })?;
    if !itf.up {
        return Err(LiveError::InterfaceDown(itf.name.clone()));
    }
    // Read the affinity mask before any thread is pinned: a pinned thread's mask is one CPU.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let n = cfg.workers.unwrap_or(cores.len()).max(1);

    let hosts: Option<Vec<(IpAddr, u8)>> = cfg
        .whitelist
        .as_ref()
        .map(|w| w.iter().map(Net::ip_prefix).collect());
    let mut capture = filter::compile(framing, hosts.as_deref(), cfg.snaplen)?;
    if let Some(e) = cfg.expression.as_deref().filter(|e| !expr::is_default(e)) {
        capture = filter::and(&capture, &expr::compile(e, framing)?, cfg.snaplen)?;
    }
    let hold = filter::drop_all();
    let size = RingSize {
        block_size: cfg.ring.block_size,
        blocks: cfg.ring.block_count,
        block_timeout: cfg.ring.block_timeout,
    };
    let rings = ring::open_group(itf.index, n, size, cfg.promiscuous, &hold)?;
    let socks: Vec<Arc<PacketSocket>> = rings.iter().map(|r| Arc::clone(r.socket())).collect();
    set_filter(&socks, &capture)?;
    for s in &socks {
        // Nothing passed the hold filter, but start every counter from zero all the same.
        let _ = s.take_stats();
    }

    let mut wcfg = cfg.worker.clone();
    wcfg.local = local_with(&cfg.worker.local, &itf.addrs);
    // Live, samples are kept only for a plot or a stream, and drained every turn: into bounded
    // points, and into the stream's bounded queue.
    wcfg.keep_samples = cfg.plot.is_some() || cfg.samples.is_some();
    if cfg.whitelist.is_some() {
        wcfg.whitelist = cfg.whitelist.clone();
    }
    if let Some(d) = cfg.duty {
        info!(
            "duty cycle on {}: capturing {:?} out of every {:?}",
            itf.name, d.on, d.every
        );
    }
    info!(
        "capturing on {} with {} worker{} ({} blocks of {} KiB per ring; local addresses: {})",
        itf.name,
        n,
        if n == 1 { "" } else { "s" },
        size.blocks,
        size.block_size / 1024,
        itf.addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let quit = AtomicBool::new(false);
    let failed = Mutex::new(None);
    let grace = cfg.ring.block_timeout * 2 + Duration::from_millis(20);
    thread::scope(|scope| {
        let mut lanes = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for (id, ring) in rings.into_iter().enumerate() {
            let (fresh_tx, fresh_rx) = bounded(1);
            let (full_tx, full_rx) = bounded(1);
            let (local_tx, local_rx) = bounded(LOCAL_UPDATES);
            lanes.push(WorkerLane {
                fresh: fresh_tx,
                full: full_rx,
                local: local_tx,
            });
            let ctl = Control {
                fresh: fresh_rx,
                full: full_tx,
                local: local_rx,
                quit: &quit,
                failed: &failed,
                grace,
                dump_flows: cfg.dump_flows,
                points: cfg.plot.clone().map(PlotPoints::new),
                stream: cfg.samples.clone(),
                conns: cfg.connections.clone(),
                untracked: 0,
            };
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let wcfg = &wcfg;
            let h = thread::Builder::new()
                .name(format!("metro-w{id}"))
                .spawn_scoped(scope, move || {
                    if let Some(c) = core {
                        if !core_affinity::set_for_current(c) {
                            warn!("worker {id}: could not pin to CPU {}", c.id);
                        }
                    }
                    work(Worker::new(id, wcfg), ring, link, ctl)
                })
                .map_err(|e| LiveError::Worker(format!("cannot start a worker thread: {e}")));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    quit.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }

        let mut iface_addrs = itf.addrs.clone();
        iface_addrs.sort();
        iface_addrs.dedup();
        let mut rep = Reporter {
            cfg,
            itf_index: itf.index,
            iface_addrs,
            socks: &socks,
            lanes,
            spares: Vec::new(),
            whole: cfg.plot.as_ref().map(|_| Counters::default()),
        };
        let outcome = rep.watch(stop, &failed, &capture, &hold, on_interval);

        quit.store(true, Ordering::Release);
        let mut last = Vec::new();
        let mut flows = Vec::new();
        let mut worker_error = None;
        let mut points = cfg.plot.clone().map(PlotPoints::new);
        for (id, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok((stats, keys, kept)) => {
                    if let Some(whole) = &mut rep.whole {
                        whole.add(&stats.counters);
                    }
                    if let (Some(all), Some(k)) = (&mut points, kept) {
                        all.merge(k);
                    }
                    last.push(stats);
                    flows.push(keys);
                }
                Err(_) => {
                    worker_error = Some(LiveError::Worker(format!("worker {id} panicked")));
                    flows.push(Vec::new());
                }
            }
        }
        for s in &mut last {
            s.settle();
        }
        let plan = Plan::new(&last, cfg.worker.max_pairs);
        on_interval(&IntervalReport {
            iface: cfg.interface.clone(),
            counters: plan.counters,
            pairs: Pairs::Merge(Box::new(plan)),
            kernel: kernel_stats(&socks),
            last: true,
            flows: if cfg.dump_flows { flows } else { Vec::new() },
            whole_run: rep.whole.take().zip(points).map(|(counters, points)| {
                Box::new(WholeRun {
                    pairs: points.summaries(),
                    counters,
                    points,
                })
            }),
        });
        match (
            outcome,
            worker_error,
            failed.lock().ok().and_then(|mut f| f.take()),
        ) {
            (Err(e), _, _) => Err(e),
            (_, Some(e), _) => Err(e),
            (_, _, Some(msg)) => Err(LiveError::Worker(msg)),
            _ => Ok(()),
        }
    })
}

fn set_filter(socks: &[Arc<PacketSocket>], prog: &[Insn]) -> Result<(), RingError> {
    for s in socks {
        s.attach_filter(prog)?;
    }
    Ok(())
}

fn kernel_stats(socks: &[Arc<PacketSocket>]) -> KernelStats {
    let mut k = KernelStats::default();
    for s in socks {
        match s.take_stats() {
            Ok(st) => {
                k.received += st.packets;
                k.dropped += st.drops;
                k.freezes += st.freezes;
            }
            Err(e) => warn!("cannot read the kernel's packet counters: {e}"),
        }
    }
    k
}

impl Control<'_> {
    /// Hands the samples the worker kept to the plot's points and the stream.
    fn hand_over(&mut self, w: &mut Worker) {
        if self.points.is_none() && self.stream.is_none() {
            return;
        }
        for s in w.drain_samples() {
            if let Some(points) = &mut self.points {
                points.add(&s);
            }
            if let Some(stream) = &self.stream {
                stream.send(s);
            }
        }
    }
}

impl Control<'_> {
    /// Hands the connections that have ended over to the stream (all of them at the capture's
    /// end), with the count of those not kept.
    fn hand_over_connections(&mut self, w: &mut Worker, all: bool) {
        let Some(stream) = &self.conns else {
            return;
        };
        let ended = if all {
            w.take_connections()
        } else {
            w.take_finished_connections(now_ns())
        };
        for c in ended {
            stream.conns.send(c);
        }
        let untracked = w.untracked_connections();
        (stream.untracked).fetch_add(untracked - self.untracked, Ordering::Relaxed);
        self.untracked = untracked;
    }
}

/// The wall clock in ns since the epoch, as the ring's frames are stamped.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One worker thread: walk the ring, feed the worker, answer the reporter.
///
/// Returns the last interval's statistics, for `--dump-flows` the keys of the flows held, and
/// for a plot the samples kept.
fn work(
    mut w: Worker,
    mut ring: Ring,
    link: LinkType,
    mut ctl: Control<'_>,
) -> (IntervalStats, Vec<FlowKey>, Option<PlotPoints>) {
    // The ring is set up: from here a worker only waits, reads and hands intervals over.
    if let Err(e) = crate::privilege::confine_worker() {
        let msg = format!("worker {}: {e}", w.id());
        error!("{msg}");
        if let Ok(mut f) = ctl.failed.lock() {
            f.get_or_insert(msg);
        }
        return (w.take_interval(IntervalStats::default()), Vec::new(), None);
    }
    let mut quit_at: Option<Instant> = None;
    let mut last_error = None;
    loop {
        // Address updates first: frames that arrived after one was sent are then judged with
        // the new addresses, even when they woke this worker from its wait.
        if let Ok(local) = ctl.local.try_recv() {
            w.set_local(local);
        }
        let mut walked = 0;
        while walked < BLOCKS_PER_TURN {
            let Some(block) = ring.next_block() else {
                break;
            };
            // The worker decodes each frame and starts loading its flow-table slot a few
            // frames before it matches it (see `worker`), so the misses overlap.
            for frame in block.frames() {
                w.handle(link, &frame);
            }
            walked += 1;
        }
        // At most one turn's samples wait in the worker; the points stay within their limits, and
        // the stream's queue is bounded. They are handed over before the interval that holds them.
        ctl.hand_over(&mut w);
        if let Ok(fresh) = ctl.fresh.try_recv() {
            ctl.hand_over_connections(&mut w, false);
            // The reporter waits for this reply; it only hangs up when it is gone itself.
            let _ = ctl.full.send(w.take_interval(fresh));
        }
        if quit_at.is_none() && ctl.quit.load(Ordering::Acquire) {
            // Blocks still filling are handed over within one block timeout: keep walking until
            // then, so the last report has every packet queued before the stop.
            quit_at = Some(Instant::now() + ctl.grace);
        }
        let now = Instant::now();
        if quit_at.is_some_and(|t| now >= t) {
            break;
        }
        if walked == 0 {
            let wait = quit_at.map_or(POLL, |t| t.saturating_duration_since(now).min(POLL));
            match ring.socket().wait(wait) {
                Ok(Wake::Ready) => {}
                // ENETDOWN: the interface went down; the reporter watches and logs the link.
                Ok(Wake::Error(nix::errno::Errno::ENETDOWN)) => {}
                Ok(Wake::Error(e)) => {
                    if last_error != Some(e) {
                        warn!("worker {}: socket error: {}", w.id(), e.desc());
                        last_error = Some(e);
                    }
                }
                Err(e) => {
                    let msg = format!("worker {}: waiting for packets failed: {e}", w.id());
                    error!("{msg}");
                    if let Ok(mut f) = ctl.failed.lock() {
                        f.get_or_insert(msg);
                    }
                    break;
                }
            }
        }
    }
    let flows = if ctl.dump_flows {
        w.flow_keys().collect()
    } else {
        Vec::new()
    };
    ctl.hand_over(&mut w);
    ctl.hand_over_connections(&mut w, true);
    (w.take_interval(IntervalStats::default()), flows, ctl.points)
}

/// Where a duty cycle is `since` its start: whether capture is on, and when (since the start) it
/// next switches. Every period starts with its capture time.
fn duty_phase(d: DutyCycle, since: Duration) -> (bool, Duration) {
    let every = d.every.as_nanos().max(1);
    let period = since.as_nanos() / every;
    let phase = since.as_nanos() % every;
    let on = phase < d.on.as_nanos();
    let switch = period * every + if on { d.on.as_nanos() } else { every };
    (on, Duration::from_nanos(switch as u64))
}

/// The calling thread's side: clock, interface watch, duty cycle and interval reports.
struct Reporter<'a> {
    cfg: &'a LiveConfig,
    itf_index: u32,
    /// The interface's addresses as last read, sorted.
    iface_addrs: Vec<IpAddr>,
    socks: &'a [Arc<PacketSocket>],
    lanes: Vec<WorkerLane>,
    spares: Vec<IntervalStats>,
    /// With a plot: the counters of every interval so far.
    whole: Option<Counters>,
}

impl Reporter<'_> {
    /// Runs until the stop flag, the duration's end, a failed worker or a vanished interface.
    fn watch(
        &mut self,
        stop: &AtomicBool,
        failed: &Mutex<Option<String>>,
        capture: &[Insn],
        hold: &[Insn],
        on_interval: &mut dyn FnMut(&IntervalReport),
    ) -> Result<(), LiveError> {
        let name = &self.cfg.interface;
        let start = Instant::now();
        let end = self.cfg.duration.map(|d| start + d);
        let mut next_report = start + self.cfg.interval;
        let mut next_check = start + IFACE_CHECK;
        let mut link_up = true;
        let mut capturing = true;
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Acquire) || end.is_some_and(|e| now >= e) {
                return Ok(());
            }
            if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                return Ok(());
            }
            if now >= next_check {
                next_check = now + IFACE_CHECK;
                let (status, addrs) = iface::status(name, self.itf_index);
                if let Some(addrs) = addrs {
                    self.update_local(addrs);
                }
                match status {
                    Status::Up if !link_up => {
                        info!("interface {name} is up again: capture resumed");
                        link_up = true;
                    }
                    Status::Down if link_up => {
                        warn!(
                            "interface {name} went down: nothing is captured until it is up again"
                        );
                        link_up = false;
                    }
                    Status::Gone => {
                        error!("interface {name} disappeared");
                        return Err(LiveError::InterfaceGone(name.clone()));
                    }
                    _ => {}
                }
            }
            // A pause takes effect before the report due now and a resume after it, so that an
            // interval ending where a capture phase ends holds that phase and nothing of the next.
            let duty = self
                .cfg
                .duty
                .map(|d| duty_phase(d, now.duration_since(start)));
            let next_switch = duty.map(|(_, switch)| start + switch);
            if let Some((false, _)) = duty {
                self.switch(&mut capturing, false, capture, hold)?;
            }
            if now >= next_report {
                self.report(on_interval)?;
                while next_report <= Instant::now() {
                    next_report += self.cfg.interval;
                }
            }
            if let Some((true, _)) = duty {
                self.switch(&mut capturing, true, capture, hold)?;
            }
            // Wake for every switch of the duty cycle too, so its phases are as long as asked.
            let mut until = next_report.min(next_check);
            for t in [end, next_switch].into_iter().flatten() {
                until = until.min(t);
            }
            thread::sleep(until.saturating_duration_since(Instant::now()).min(TICK));
        }
    }

    /// Hands the workers the interface's addresses when they have changed (DHCP, SLAAC's
    /// temporary IPv6 addresses, an operator's `ip addr add`), so that halves acknowledged by a
    /// new local address are left out as from the start.
    fn update_local(&mut self, mut addrs: Vec<IpAddr>) {
        addrs.sort();
        addrs.dedup();
        if addrs == self.iface_addrs {
            return;
        }
        info!(
            "addresses of {} changed: local addresses now {}",
            self.cfg.interface,
            addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let local = local_with(&self.cfg.worker.local, &addrs);
        for (id, lane) in self.lanes.iter().enumerate() {
            if lane.local.try_send(local.clone()).is_err() {
                // Workers read their queue at every loop turn; a full one means a worker stalled.
                warn!("worker {id} has not taken the previous address update yet");
            }
        }
        self.iface_addrs = addrs;
    }

    /// Pauses or resumes a duty cycle's capture by swapping the sockets' filters.
    fn switch(
        &self,
        capturing: &mut bool,
        on: bool,
        capture: &[Insn],
        hold: &[Insn],
    ) -> Result<(), LiveError> {
        if *capturing != on {
            set_filter(self.socks, if on { capture } else { hold })?;
            *capturing = on;
            debug!(
                "duty cycle: capture {} on {}",
                if on { "resumed" } else { "paused" },
                self.cfg.interface
            );
        }
        Ok(())
    }

    /// Swaps every worker's interval out without stopping it, merges them, and hands the merge
    /// to `on_interval`, which summarises the pairs as it writes them.
    fn report(&mut self, on_interval: &mut dyn FnMut(&IntervalReport)) -> Result<(), LiveError> {
        let full = self.collect()?;
        let started = Instant::now();
        let plan = Plan::new(&full, self.cfg.worker.max_pairs);
        let merged = started.elapsed();
        let report = IntervalReport {
            iface: self.cfg.interface.clone(),
            counters: plan.counters,
            pairs: Pairs::Merge(Box::new(plan)),
            kernel: kernel_stats(self.socks),
            last: false,
            flows: Vec::new(),
            whole_run: None,
        };
        on_interval(&report);
        debug!(
            pairs = report.pairs.len(),
            worker_pairs = full.iter().map(IntervalStats::len).sum::<usize>(),
            merge_us = merged.as_micros() as u64,
            took_us = started.elapsed().as_micros() as u64,
            "interval merged and reported"
        );
        drop(report);
        // Handed back to the workers at the next swap, with their memory.
        self.spares.extend(full);
        Ok(())
    }

    /// Swaps every worker's interval out without stopping it.
    fn collect(&mut self) -> Result<Vec<IntervalStats>, LiveError> {
        for lane in &self.lanes {
            let fresh = self.spares.pop().unwrap_or_default();
            lane.fresh
                .send(fresh)
                .map_err(|_| LiveError::Worker("a worker stopped unexpectedly".into()))?;
        }
        let mut full = Vec::with_capacity(self.lanes.len());
        for (id, lane) in self.lanes.iter().enumerate() {
            match lane.full.recv_timeout(SWAP_WAIT) {
                Ok(stats) => {
                    if let Some(whole) = &mut self.whole {
                        whole.add(&stats.counters);
                    }
                    full.push(stats)
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(LiveError::Worker(format!(
                        "worker {id} did not answer within {SWAP_WAIT:?}"
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LiveError::Worker(format!(
                        "worker {id} stopped unexpectedly"
                    )))
                }
            }
        }
        Ok(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ring_sizes_are_configuration_errors() {
        let mut cfg = LiveConfig::new("lo");
        cfg.ring.block_size = 1000;
        let e = validate(&cfg).unwrap_err();
        assert!(e.is_config());
        assert!(e.to_string().contains("multiple of the page size"), "{e}");
        let mut cfg = LiveConfig::new("lo");
        cfg.ring.block_count = 1;
        assert!(validate(&cfg).unwrap_err().is_config());
        assert!(validate(&LiveConfig::new("lo")).is_ok());
    }

    #[test]
    fn duty_cycle_starts_on_and_switches_at_the_phase_edges() {
        let d = DutyCycle {
            on: Duration::from_secs(1),
            every: Duration::from_secs(3),
        };
        let s = Duration::from_millis;
        assert_eq!(duty_phase(d, s(0)), (true, s(1000)));
        assert_eq!(duty_phase(d, s(999)), (true, s(1000)));
        assert_eq!(duty_phase(d, s(1000)), (false, s(3000)));
        assert_eq!(duty_phase(d, s(2999)), (false, s(3000)));
        assert_eq!(duty_phase(d, s(3000)), (true, s(4000)));
        assert_eq!(duty_phase(d, s(7500)), (false, s(9000)));
    }

    #[test]
    fn unknown_interface_is_reported_before_any_socket_is_opened() {
        let stop = Arc::new(AtomicBool::new(false));
        let e = run(&LiveConfig::new("metro-nope0"), &stop, &mut |_| {}).unwrap_err();
        assert!(!e.is_config());
        assert!(
            e.to_string()
                .starts_with("cannot open interface metro-nope0: no such device"),
            "{e}"
        );
    }
}
