//! Payload values, their byte encoding, row bitsets, filter expressions and the payload
//! index. This module never touches the file system, and depends on nothing but `error`
//! and `text` (the analyzer a `$match` is bound to; storage encodes and decodes through
//! `codec` here, never the other way round).

pub(crate) mod bitset;
pub(crate) mod cache;
pub(crate) mod codec;
pub mod expr;
pub mod key;
pub(crate) mod payload_index;
pub mod value;
