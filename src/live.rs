//! Live capture: TPACKET_V3 rings fanned out to pinned workers, and a reporter thread.
//!
//! (Interface only: the implementation lands with the live-capture issue.)

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::report::{Counters, PairSummary};
use crate::worker::{Net, WorkerConfig};

/// Sizes of each worker's TPACKET_V3 ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks per ring.
    pub block_count: u32,
    /// How long the kernel waits before handing over a block that is not full.
    pub block_timeout: Duration,
}

/// A duty cycle: capture for `on` out of every `every` (go-metro's `sample_duration` and
/// `sample_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DutyCycle {
    /// Capture time per period.
    pub on: Duration,
    /// The period.
    pub every: Duration,
}

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
    /// Flow table and reporting settings; `local` is filled from the interface.
    pub worker: WorkerConfig,
    /// Report interval.
    pub interval: Duration,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Capture only part of the time.
    pub duty: Option<DutyCycle>,
}

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
}

/// Why live capture could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Placeholder until the ring lands.
    #[error("live capture is not built yet")]
    NotBuilt,
}

/// Captures until `stop` is set or the duration ends, calling `on_interval` after every
/// interval and once more at shutdown.
pub fn run(
    _cfg: &LiveConfig,
    _stop: &Arc<AtomicBool>,
    _on_interval: &mut dyn FnMut(&IntervalReport),
) -> Result<(), LiveError> {
    Err(LiveError::NotBuilt)
}
