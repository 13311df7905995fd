//! trovedb integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod architecture_layering;
mod background_compaction;
mod backup;
mod batch_search;
mod collection_basic;
mod compaction;
mod compressed_index;
mod corruption_detected;
mod crash_process;
mod database_lock;
mod fault_injection;
mod filtered_search;
mod fork_inherited_handle;
mod format_fixtures;
mod fuzz_smoke;
mod hnsw_index;
mod index_params_validated;
mod interrupt;
mod power_cut;
mod quantized;
mod read_only;
mod real_data;
mod repair;
mod segment_growth;
mod stress;
mod string_ids;
mod text_search;
mod wal_recovery;
