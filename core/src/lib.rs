//! # trovedb
//!
//! An embedded vector database: one directory on disk, no server, crash-safe writes
//! through a write-ahead log, memory-mapped immutable segments, exact and approximate
//! nearest-neighbour search, payload filters, BM25 keyword and hybrid search.
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
//! ## The pieces
//!
//! - A [`Database`] is a directory, opened with [`Database::open`] and [`DbOptions`]
//!   (durability, segment size, background compaction, read-only). One handle per
//!   directory writes at a time (a lock file says so); any number of read-only handles, in
//!   this process or others, follow the writer.
//! - A [`Collection`] holds points of one dimension and [`Metric`] (`L2`, `Cosine`, `Dot`):
//!   a 64-bit id (or a string, [`IdType::Str`]), a vector and an optional [`Payload`] of
//!   named [`Value`]s. Its [`CollectionConfig`] fixes the index kind ([`IndexConfig`]:
//!   flat, HNSW, IVF-PQ, LSH), quantised codes for flat and HNSW ([`Quantization`]: sq8,
//!   binary; re-ranked exactly), which payload fields are indexed for filters, and the
//!   text fields of the BM25 index ([`TextConfig`]).
//! - Writes ([`Collection::upsert`], [`Collection::delete`], [`Collection::delete_where`],
//!   [`Collection::update_payload`]) go to the log first and return once durable
//!   ([`Durability`]); they land in an in-memory appendable segment that is searched like
//!   the rest and sealed into an immutable segment file in the background. Merges combine
//!   segments ([`CompactionPolicy`]); [`Collection::wait_idle`] waits for the collection to
//!   converge, [`Collection::compact`] merges everything now.
//! - Reads: [`Collection::search`] (one query), [`Collection::search_batch`],
//!   [`Collection::search_each`] (one set of [`SearchParams`] per query),
//!   [`Collection::search_text`] (BM25), [`Collection::search_hybrid`] (both, fused:
//!   [`Fusion`]), [`Collection::get`], [`Collection::scroll`], [`Collection::count`].
//!   [`SearchParams`] carries the [`Filter`] (Mongo-style, from JSON with
//!   [`Filter::from_json_str`]), whether payloads come back, and the index knobs (`ef`,
//!   `nprobe`, ...).
//! - Operations: [`Collection::stats`], [`Collection::verify`] (every checksum),
//!   [`Database::repair`], [`Database::backup`] (a consistent copy while writes go on).
//! - Errors are one [`Error`] enum; bad input is an [`Error::InvalidArgument`] naming the
//!   argument and the offending row or value, and changes nothing.
//!
//! ## Filters and payloads
//!
//! ```
//! use trovedb::{CollectionConfig, Database, DbOptions, Filter, Metric, Payload, SearchParams, Value};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open(dir.path(), DbOptions::default())?;
//! let c = db.create_collection("items", &CollectionConfig::new(2, Metric::L2))?;
//! let payload = |lang: &str, year: i64| {
//!     Payload::from([
//!         ("lang".to_string(), Value::Str(lang.into())),
//!         ("year".to_string(), Value::Int(year)),
//!     ])
//! };
//! c.upsert(
//!     &[1, 2, 3],
//!     &[0.0, 0.0, 0.1, 0.0, 0.2, 0.0],
//!     &[payload("en", 2020), payload("de", 2021), payload("en", 2024)],
//! )?;
//! let recent_english = Filter::from_json_str(r#"{"lang": "en", "year": {"$gte": 2022}}"#)?;
//! let params = SearchParams::default().with_filter(recent_english.clone());
//! let hits = c.search(&[0.0, 0.0], 10, &params)?;
//! assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![3]);
//! assert_eq!(c.count(&recent_english)?, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## String ids, keyword and hybrid search
//!
//! ```
//! use trovedb::{CollectionConfig, Database, DbOptions, IdType, Metric, Payload, SearchParams, TextConfig, Value};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open(dir.path(), DbOptions::default())?;
//! let config = CollectionConfig {
//!     id_type: IdType::Str,
//!     text: Some(TextConfig::new(["text"])),
//!     ..CollectionConfig::new(2, Metric::Cosine)
//! };
//! let notes = db.create_collection("notes", &config)?;
//! let text = |t: &str| Payload::from([("text".to_string(), Value::Str(t.into()))]);
//! notes.upsert_str(
//!     &["a", "b"],
//!     &[1.0, 0.0, 0.0, 1.0],
//!     &[text("error E1042: thermostat failed"), text("how to reset the clock")],
//! )?;
//! let kw = notes.search_text("E1042", 5, &SearchParams::default())?;
//! assert_eq!(kw[0].key.as_deref(), Some("a"));
//! let both = notes.search_hybrid(&[0.0, 1.0], "clock", 5, &SearchParams::default())?;
//! assert_eq!(both[0].key.as_deref(), Some("b"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Threads and processes
//!
//! Handles are `Send + Sync`: share an `Arc<Collection>` between threads. A search runs on
//! the calling thread (a batch on rayon's global pool). Background work (sealing, merging,
//! the idle check that seals and merges once writes go quiet) runs on threads a collection
//! starts when it has such work; they finish with it and none outlives the handle's
//! `close`. The crate installs no signal handler and changes no process-wide setting
//! unless asked ([`DbOptions::tune_allocator`]). A handle inherited through `fork()`
//! refuses every call ([`Error::InheritedAcrossFork`]); open the database in the child.
//!
//! ## Examples and further reading
//!
//! `examples/` in the crate: `quickstart`, `filtered_search`, `background_ingest`,
//! `hybrid` (`cargo run --release -p trovedb --example quickstart`). The module map and its
//! invariants are in the repository's `ARCHITECTURE.md`, the byte layout of every file in
//! `FORMAT.md`.
//!
//! Minimum supported Rust version: 1.89 (the `rust-version` in `Cargo.toml`).

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
mod hugepages;
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
    Database, DbOptions, DroppedSegment, Durability, Hit, HybridCandidates, LogCut, MergePolicy,
    OpenReport, Page, PayloadUpdate, Point, RepairReport, SegmentSizes, SegmentStats, TornTail,
    RESERVED_ID,
};
pub use error::{Error, Result};
pub use filter::expr::{Filter, IdMatch, TextMatch};
pub use filter::key::{str_id, MAX_STR_ID_BYTES};
pub use filter::value::{payload_from_json, payload_to_json, Payload, Value};
pub use interrupt::interruptible;
pub use types::{
    CollectionConfig, Fusion, IdType, IndexConfig, Metric, Quantization, SearchParams, TextConfig,
    TextStats, AUTO_SQ8_MIN_DIM, BINARY_DEFAULT_RESCORE, HNSW_DEFAULT_SEED, IVF_DEFAULT_NPROBE,
    IVF_DEFAULT_REFINE, LSH_DEFAULT_PROBES, LSH_DEFAULT_REFINE, LSH_DEFAULT_TABLES, MAX_DIM,
    MAX_RESCORE, MAX_TEXT_FIELDS, SQ8_DEFAULT_RESCORE,
};
