//! Running the pipeline over a capture file.
//!
//! With one worker (the default) the file is read on the calling thread and every frame goes
//! straight from the reader's buffer into [`Worker::handle`]: no copy, no thread. With `N`
//! workers the reader dispatches frames by the same symmetric flow hash that live capture's
//! `PACKET_FANOUT_HASH` stands in for, so both directions of a flow meet in one worker; frames
//! travel in recycled batches over bounded channels, so the reader never runs ahead unbounded.
//!
//! Several captures are read as one, in capture-time order ([`Captures`]).
//!
//! A read error (a file cut short, a damaged record) stops the read but not the report: the
//! statistics gathered up to that point are returned with the error.
//!
//! [`Follow`] reads a file on a thread of its own into one worker whose intervals another thread
//! takes whenever it reports: go-metro mode's file instances, which report every interval while
//! the file is read, and at a stop even while the reader waits on a FIFO.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::capture::file::{FileError, FileSource, FileStats};
use crate::capture::input::{Captures, InputError};
use crate::capture::{Frame, LinkType};
use crate::conn::Connection;
use crate::decode::{self, Skip};
use crate::flow::FlowKey;
use crate::record::{Counters, IntervalStats};
use crate::report::interval::{IntervalReport, KernelStats, Pairs};
use crate::report::merge::Plan;
use crate::report::plot::{PlotPoints, PointLimits};
use crate::report::Merged;
use crate::worker::{SampleRecord, Worker, WorkerConfig};

/// What an offline run produced.
pub struct Outcome {
    /// Each worker's statistics, settled.
    pub intervals: Vec<IntervalStats>,
    /// The bound on pairs reported apart.
    pub max_pairs: usize,
    /// Every reported sample, in capture order of the ACK (only with `keep_samples`).
    pub samples: Vec<SampleRecord>,
    /// Set when the file could not be read to its end; the statistics cover what was read.
    pub error: Option<FileError>,
    /// The samples a plot draws (only with [`run_plotted`]'s limits).
    pub points: Option<PlotPoints>,
    /// Every connection, by its first packet (only with `by_flow`).
    pub connections: Vec<Connection>,
    /// Connections not kept because the bound was reached (only with `by_flow`).
    pub untracked_connections: u64,
}

/// What a run keeps of its samples: all of them (`keep_samples`), a plot's thinned points, or
/// both.
struct Kept {
    all: Option<Vec<SampleRecord>>,
    points: Option<PlotPoints>,
}

impl Kept {
    fn new(all: bool, plot: &Option<PointLimits>) -> Kept {
        Kept {
            all: all.then(Vec::new),
            points: plot.clone().map(PlotPoints::new),
        }
    }

    fn take(&mut self, samples: impl Iterator<Item = SampleRecord>) {
        for s in samples {
            if let Some(p) = &mut self.points {
                p.add(&s);
            }
            if let Some(all) = &mut self.all {
                all.push(s);
            }
        }
    }

    fn merge(&mut self, other: Kept) {
        if let (Some(a), Some(b)) = (&mut self.all, other.all) {
            a.extend(b);
        }
        if let (Some(a), Some(b)) = (&mut self.points, other.points) {
            a.merge(b);
        }
    }
}

/// Reads `path` with `workers` workers configured by `cfg`.
///
/// Fails only when the file cannot be opened as a capture at all.
pub fn run(path: &Path, workers: usize, cfg: &WorkerConfig) -> Result<Outcome, InputError> {
    run_plotted(&[path.to_owned()], workers, cfg, None)
}

/// Reads the captures `paths` name as one (see [`Captures`]), also keeping the samples a plot
/// draws, within `plot`'s limits.
pub fn run_plotted(
    paths: &[PathBuf],
    workers: usize,
    cfg: &WorkerConfig,
    plot: Option<PointLimits>,
) -> Result<Outcome, InputError> {
    let all = cfg.keep_samples;
    let cfg = &WorkerConfig {
        keep_samples: all || plot.is_some(),
        ..cfg.clone()
    };
    let mut src = Captures::open(paths)?;
    if workers <= 1 {
        let mut w = Worker::new(0, cfg);
        let mut kept = Kept::new(all, &plot);
        let r = src.for_each(|link, frame| {
            w.handle(link, frame);
            if cfg.keep_samples {
                kept.take(w.drain_samples());
            }
        });
        let mut stats = w.take_interval(Default::default());
        add_file_counts(&mut stats.counters, &src.stats());
        return Ok(Outcome {
            intervals: vec![stats],
            max_pairs: cfg.max_pairs,
            samples: kept.all.unwrap_or_default(),
            error: r.err(),
            points: kept.points,
            untracked_connections: w.untracked_connections(),
            connections: w.take_connections(),
        });
    }
    Ok(run_parallel(src, workers, cfg, Kept::new(all, &plot)))
}

impl Outcome {
    /// The workers' pairs, merged and ordered, to summarise one by one as they are written.
    pub fn plan(&self) -> Plan<'_> {
        Plan::new(&self.intervals, self.max_pairs)
    }

    /// The workers' statistics, merged, with every summary collected.
    pub fn merged(&self) -> Merged {
        let refs: Vec<&IntervalStats> = self.intervals.iter().collect();
        Merged::new(&refs, self.max_pairs)
    }
}

/// Counts the frames the reader could not hand to a worker, as the worker counts its skips.
fn add_file_counts(c: &mut Counters, f: &FileStats) {
    c.packets += f.unknown_link + f.untimed;
    c.skipped[Skip::UnknownLink.index()] += f.unknown_link;
    c.skipped[Skip::Malformed.index()] += f.untimed;
}

/// How a followed file's read ended.
pub enum FollowEnd {
    /// The file could not be opened as a capture.
    NotOpened(FileError),
    /// Read to its end, or to a stop; `error` when it broke off. `stats` are the reader's.
    Read {
        stats: FileStats,
        error: Option<FileError>,
    },
}

/// A capture file being read on its own thread into one worker (see the module's doc).
pub struct Follow {
    path: PathBuf,
    worker: Arc<Mutex<Worker>>,
    /// The bound on pairs reported apart.
    max_pairs: usize,
    /// Frames and reported samples in the reports so far.
    packets: u64,
    samples: u64,
}

impl Follow {
    /// Starts reading `path` into a worker configured by `cfg`, after `first` has run on the
    /// reading thread; stops early when `stop` is set, and hands the end to `done`.
    pub fn start(
        path: &Path,
        id: usize,
        cfg: &WorkerConfig,
        stop: Arc<AtomicBool>,
        first: impl FnOnce() + Send + 'static,
        done: impl FnOnce(FollowEnd) + Send + 'static,
    ) -> std::io::Result<Follow> {
        let worker = Arc::new(Mutex::new(Worker::new(id, cfg)));
        let w = Arc::clone(&worker);
        let p = path.to_owned();
        thread::Builder::new()
            .name(format!("metro-file-{id}"))
            .spawn(move || {
                first();
                let mut src = match FileSource::open(&p) {
                    Ok(s) => s,
                    Err(e) => return done(FollowEnd::NotOpened(e)),
                };
                tracing::info!("reading in packets");
                let r = src.for_each(|link, frame| {
                    if !stop.load(Ordering::Relaxed) {
                        lock(&w).handle(link, frame);
                    }
                });
                done(FollowEnd::Read {
                    stats: src.stats(),
                    error: r.err(),
                })
            })?;
        Ok(Follow {
            path: path.to_owned(),
            worker,
            max_pairs: cfg.max_pairs,
            packets: 0,
            samples: 0,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands `send` what the worker gathered since the last call, as an interval's report
    /// (`last` for the final one); once the read has ended, with the reader's own counts
    /// (`ended`), as [`run`] counts them. The report borrows the interval, so it is lent to
    /// `send` rather than returned.
    pub fn report(
        &mut self,
        ended: Option<&FileStats>,
        last: bool,
        send: impl FnOnce(&IntervalReport),
    ) {
        let mut stats = lock(&self.worker).take_interval(Default::default());
        if let Some(f) = ended {
            add_file_counts(&mut stats.counters, f);
        }
        stats.settle();
        let plan = Plan::new([&stats], self.max_pairs);
        let counters = plan.counters;
        self.packets += counters.packets;
        self.samples += counters.samples - counters.filtered;
        send(&IntervalReport {
            iface: String::new(),
            pairs: Pairs::Merge(Box::new(plan)),
            counters,
            kernel: KernelStats::default(),
            last,
            flows: Vec::new(),
            whole_run: None,
        });
    }

    /// Frames read and samples reported in the reports so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.packets, self.samples)
    }
}

/// The worker, also when a reader panicked while holding it (its counts are still whole).
fn lock(w: &Mutex<Worker>) -> std::sync::MutexGuard<'_, Worker> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Frames per batch handed to a worker thread.
const BATCH_FRAMES: usize = 512;
/// Batches in flight per worker before the reader waits.
const BATCHES_IN_FLIGHT: usize = 4;

/// Frames copied out of the reader's buffer for one worker.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: Vec<(LinkType, u64, u32, u32, u32)>,
}

impl Batch {
    fn push(&mut self, link: LinkType, f: &Frame<'_>) {
        let off = self.bytes.len() as u32;
        self.bytes.extend_from_slice(f.data);
        self.frames
            .push((link, f.ts_ns, off, f.data.len() as u32, f.wire_len));
    }

    fn for_each(&self, mut g: impl FnMut(LinkType, &Frame<'_>)) {
        for &(link, ts_ns, off, len, wire_len) in &self.frames {
            let data = &self.bytes[off as usize..(off + len) as usize];
            g(
                link,
                &Frame {
                    ts_ns,
                    data,
                    wire_len,
                },
            );
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }
}

/// The reading thread's end of one worker's batch queue: full batches out, empty ones back.
struct BatchLane {
    full: Sender<Batch>,
    empty: Receiver<Batch>,
    batch: Batch,
}

impl BatchLane {
    fn flush(&mut self) {
        let next = self.empty.try_recv().unwrap_or_default();
        let done = std::mem::replace(&mut self.batch, next);
        // A worker only hangs up by panicking, and then join() reports it.
        let _ = self.full.send(done);
    }
}

fn run_parallel(mut src: Captures, n: usize, cfg: &WorkerConfig, mut kept: Kept) -> Outcome {
    let mut lanes = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for id in 0..n {
        let (full_tx, full_rx) = bounded::<Batch>(BATCHES_IN_FLIGHT);
        let (empty_tx, empty_rx) = bounded::<Batch>(BATCHES_IN_FLIGHT + 2);
        let cfg = cfg.clone();
        let mut worker_kept = Kept::new(
            kept.all.is_some(),
            &kept.points.as_ref().map(|p| p.limits().clone()),
        );
        handles.push(
            thread::Builder::new()
                .name(format!("metro-worker-{id}"))
                .spawn(move || {
                    let mut w = Worker::new(id, &cfg);
                    for mut batch in full_rx {
                        batch.for_each(|link, f| w.handle(link, f));
                        worker_kept.take(w.drain_samples());
                        batch.clear();
                        let _ = empty_tx.try_send(batch);
                    }
                    let conns = (w.untracked_connections(), w.take_connections());
                    (w.take_interval(Default::default()), worker_kept, conns)
                })
                .expect("spawning a worker thread"),
        );
        lanes.push(BatchLane {
            full: full_tx,
            empty: empty_rx,
            batch: Batch::default(),
        });
    }
    let r = src.for_each(|link, frame| {
        let lane = match decode::decode(link, frame.data, frame.wire_len) {
            Ok(seg) => {
                let (key, _) = FlowKey::new(seg.src(), seg.src_port(), seg.dst(), seg.dst_port());
                (key.hash64() % n as u64) as usize
            }
            // The worker decodes it again and counts why it was skipped.
            Err(_) => 0,
        };
        let l = &mut lanes[lane];
        l.batch.push(link, frame);
        if l.batch.frames.len() >= BATCH_FRAMES {
            l.flush();
        }
    });
    for l in &mut lanes {
        if !l.batch.frames.is_empty() {
            l.flush();
        }
    }
    drop(lanes);
    let mut intervals = Vec::with_capacity(handles.len());
    let (mut connections, mut untracked_connections) = (Vec::new(), 0);
    for h in handles {
        let (mut stats, k, (untracked, conns)) = h.join().expect("a worker thread panicked");
        connections.extend(conns);
        untracked_connections += untracked;
        if intervals.is_empty() {
            add_file_counts(&mut stats.counters, &src.stats());
        }
        intervals.push(stats);
        kept.merge(k);
    }
    let mut samples = kept.all.unwrap_or_default();
    samples.sort_by_key(|s| s.ts_ns);
    Outcome {
        intervals,
        max_pairs: cfg.max_pairs,
        samples,
        error: r.err(),
        points: kept.points,
        connections: {
            connections.sort_by_key(|c| (c.first_ns, c.client, c.server));
            connections
        },
        untracked_connections,
    }
}
