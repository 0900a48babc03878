//! What a live capture hands its caller every interval: the merged statistics of one interface,
//! the kernel's counters, and at the end the whole run for a plot. Printing, DogStatsD and
//! Prometheus all read this one shape, so it lives with them rather than with the capture loop
//! that fills it ([`crate::live`]).
//!
//! An interval's pairs are summarised as they are read ([`Pairs::for_each`]), from the merge of
//! the workers' intervals, and dropped after: a gateway's 200,000 pairs are written as JSON lines
//! or DogStatsD datagrams one at a time, never all held as summaries or as one buffer.

use std::fmt;

use super::merge::Plan;
use super::plot::PlotPoints;
use super::{Counters, PairSummary};
use crate::flow::FlowKey;

/// Kernel counters of the interval, summed over the workers' sockets (`PACKET_STATISTICS`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the kernel handed to the rings, drops included.
    pub received: u64,
    /// Packets dropped because a ring was full.
    pub dropped: u64,
    /// Times a ring's queue froze.
    pub freezes: u64,
}

/// An interval's per-pair statistics: summarised on demand from the merge, or already made.
pub enum Pairs<'a> {
    /// The merge of the workers' intervals, each pair summarised when it is read.
    Merge(Box<Plan<'a>>),
    /// Summaries already made.
    Made(Vec<PairSummary>),
}

impl Pairs<'_> {
    /// Calls `f` with each pair's summary in order (by sender then acknowledger, `other` last).
    /// A merged pair is summarised for the call and dropped after.
    pub fn for_each<E>(&self, f: impl FnMut(&PairSummary) -> Result<(), E>) -> Result<(), E> {
        match self {
            Pairs::Merge(plan) => plan.for_each(f),
            Pairs::Made(pairs) => pairs.iter().try_for_each(f),
        }
    }

    /// Number of summaries.
    pub fn len(&self) -> usize {
        match self {
            Pairs::Merge(plan) => plan.len(),
            Pairs::Made(pairs) => pairs.len(),
        }
    }

    /// True when there is no summary.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples of every summary, without summarising.
    pub fn samples(&self) -> u64 {
        match self {
            Pairs::Merge(plan) => plan.samples(),
            Pairs::Made(pairs) => pairs.iter().map(|p| p.samples).sum(),
        }
    }
}

impl fmt::Debug for Pairs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self {
            Pairs::Merge(_) => "merged",
            Pairs::Made(_) => "made",
        };
        write!(f, "Pairs({} {how})", self.len())
    }
}

/// One interval's results for one interface.
#[derive(Debug)]
pub struct IntervalReport<'a> {
    /// The interface.
    pub iface: String,
    /// Per-pair statistics of the interval's samples.
    pub pairs: Pairs<'a>,
    /// Packet and flow counters of the interval.
    pub counters: Counters,
    /// Kernel counters of the interval.
    pub kernel: KernelStats,
    /// True for the last report, made at shutdown.
    pub last: bool,
    /// With `--dump-flows`, in the last report: the flows each worker holds, indexed
    /// by worker. Empty otherwise.
    pub flows: Vec<Vec<FlowKey>>,
    /// With a plot asked for, in the last report: the whole run's statistics and samples.
    pub whole_run: Option<Box<WholeRun>>,
}

/// A whole live run, for a plot drawn when it ends.
#[derive(Debug, Clone)]
pub struct WholeRun {
    /// Per-pair statistics of the run, from the kept samples ([`PlotPoints::summaries`]): the
    /// counts are exact, the rest is exact unless a pair's samples were thinned.
    pub pairs: Vec<PairSummary>,
    /// The run's counters (`active_flows` summed over the intervals, so not a count of flows).
    pub counters: Counters,
    /// The run's samples, thinned within the plot's limits.
    pub points: PlotPoints,
}
