//! Payload values, row bitsets and (as they land) filter expressions, payload indexes
//! and the planner. This module never touches the file system.

pub(crate) mod bitset;
pub(crate) mod cache;
pub mod expr;
pub(crate) mod payload_index;
pub mod value;
