//! What a live capture hands its caller every interval: the merged statistics of one interface,
//! the kernel's counters, and at the end the whole run for a plot. Printing, DogStatsD and
//! Prometheus all read this one shape, so it lives with them rather than with the capture loop
//! that fills it ([`crate::live`]).

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

/// One interval's results for one interface.
#[derive(Debug, Clone)]
pub struct IntervalReport {
    /// The interface.
    pub iface: String,
    /// Per-pair statistics of the interval's samples.
    pub pairs: Vec<PairSummary>,
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
