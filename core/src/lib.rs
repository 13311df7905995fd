//! # trovedb
//!
//! An embedded vector database: one directory on disk, no server, crash-safe writes
//! through a write-ahead log, memory-mapped immutable segments, exact and approximate
//! nearest-neighbour search.
//!
//! ```
//! use trovedb::{Database, DbOptions, CollectionConfig, Metric, SearchParams};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open(dir.path(), DbOptions::default())?;
//! let docs = db.create_collection("docs", &CollectionConfig::new(3, Metric::L2))?;
//! docs.upsert(&[1, 2], &[0.0, 0.0, 1.0, 5.0, 5.0, 5.0], &[])?;
//! let hits = docs.search(&[0.0, 0.0, 0.9], 1, &SearchParams::default())?;
//! assert_eq!(hits[0].id, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The module map and its invariants are in `ARCHITECTURE.md`, the byte layout of every file
//! in `FORMAT.md`.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod background;
mod collection;
pub mod distance;
mod error;
pub mod filter;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod interrupt;
mod process;
mod storage;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
pub mod text;
mod types;

pub use collection::{
    BackgroundStats, BackupReport, Collection, CollectionRepair, CollectionStats, CompactionPolicy,
    Database, DbOptions, DroppedSegment, Durability, Hit, LogCut, MergePolicy, OpenReport, Page,
    PayloadUpdate, Point, RepairReport, SegmentSizes, SegmentStats, TornTail, RESERVED_ID,
};
pub use error::{Error, Result};
pub use filter::expr::{Filter, IdMatch, TextMatch};
pub use filter::key::{str_id, MAX_STR_ID_BYTES};
pub use filter::value::{payload_from_json, payload_to_json, Payload, Value};
pub use interrupt::interruptible;
pub use types::{
    CollectionConfig, Fusion, IdType, IndexConfig, Metric, SearchParams, TextConfig,
    HNSW_DEFAULT_SEED, IVF_DEFAULT_NPROBE, IVF_DEFAULT_REFINE, LSH_DEFAULT_PROBES,
    LSH_DEFAULT_REFINE, LSH_DEFAULT_TABLES, MAX_DIM, MAX_TEXT_FIELDS,
};
