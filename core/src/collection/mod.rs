//! The API boundary: [`Database`], [`Collection`], options, results. Everything below
//! this module is `pub(crate)`.

mod appendable;
mod backup;
mod build;
#[allow(clippy::module_inception)]
mod collection;
mod db;
mod follow;
mod idle;
mod merge;
mod ops;
mod options;
mod publish;
mod repair;
mod search;
mod segment;
mod shared_rows;
mod state;
mod stats;
mod text;
mod write;

pub use backup::BackupReport;
pub use collection::{Collection, Hit, Point, RESERVED_ID};
pub use db::{Database, OpenReport};
pub use ops::{Page, PayloadUpdate};
pub use options::{CompactionPolicy, DbOptions, Durability, MergePolicy, SegmentSizes};
pub use repair::{CollectionRepair, DroppedSegment, LogCut, RepairReport};
pub use stats::{BackgroundStats, CollectionStats, SegmentStats, TornTail};
pub use text::HybridCandidates;
