//! trovedb integration tests: one binary, one module per area.

mod collection_basic;
mod corruption_detected;
mod crash_process;
mod database_lock;
mod real_data;
mod wal_recovery;
