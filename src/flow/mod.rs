//! Flows: the normalised 5-tuple ([`key`]), the per-worker table that holds each flow's state
//! ([`table`]), which warms the cache for the frames to come ([`prefetch`]), and the IPv6
//! addresses that flows' keys name by number ([`hosts`]).

pub mod hosts;
pub mod key;
pub mod prefetch;
pub mod table;

pub use hosts::HostIds;
pub use key::{FlowKey, PackedKey, Side};
pub use table::{Entry, FlowTable, Keeper, TableKey, TableStats, Ttl};
