//! Flows: the normalised 5-tuple ([`key`]) and the per-worker table that holds each flow's
//! state ([`table`]).

pub mod key;
pub mod table;

pub use key::{FlowKey, Key4, Side};
pub use table::{Entry, FlowTable, TableKey, TableStats, Ttl};
