//! Reporting: merging the workers' per-pair histograms ([`merge`]) and writing them for people
//! ([`table`]) and for programs ([`json`]), and sending them to DogStatsD ([`statsd`]).

pub mod json;
pub mod merge;
pub mod statsd;
pub mod table;

pub use merge::{Counters, IntervalStats, Merged, PairHist, PairKey, PairRecorder, PairSummary};

/// Nanoseconds to milliseconds, the unit of every reported RTT.
#[inline]
pub fn ms(ns: f64) -> f64 {
    ns / 1_000_000.0
}
