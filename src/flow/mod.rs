//! Flows: the normalised 5-tuple ([`key`]) and the per-worker table that holds each flow's
//! state ([`table`]), which warms the cache for the frames to come ([`prefetch`]).

pub mod key;
pub mod prefetch;
pub mod table;

pub use key::{FlowKey, Key4, Side};
pub use table::{Entry, FlowTable, TableKey, TableStats, Ttl};
