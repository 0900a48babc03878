//! Reporting: merging the workers' finished intervals into per-pair summaries ([`merge`]) and
//! writing them for people ([`table`]) and for programs ([`json`]), sending them to DogStatsD
//! ([`statsd`]), serving them to Prometheus ([`prometheus`]), and drawing them ([`plot`]). Nothing
//! here runs on the per-packet path.

pub mod interval;
pub mod json;
pub mod line;
pub mod merge;
pub mod plot;
pub mod prometheus;
pub mod statsd;
pub mod table;

pub use crate::record::Counters;
pub use merge::{Merged, PairSummary};

/// Nanoseconds to milliseconds, the unit of every reported RTT.
#[inline]
pub fn ms(ns: f64) -> f64 {
    ns / 1_000_000.0
}
