//! The API boundary: [`Database`], [`Collection`], options, results. Everything below
//! this module is `pub(crate)`.

mod appendable;
#[allow(clippy::module_inception)]
mod collection;
mod db;
mod options;
mod state;

pub use collection::{
    BackgroundStats, Collection, CollectionStats, Hit, Point, SegmentStats, RESERVED_ID,
};
pub use db::{Database, OpenReport};
pub use options::{CompactionPolicy, DbOptions, Durability};
