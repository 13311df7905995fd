//! The trovedb benchmark suite: dataset readers, synthetic data with exact ground truth,
//! recall computation, the JSONL report schema and the Pareto plot. The `annbench` binary
//! drives them; criterion benches live in `benches/benches/`.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod dataset;
pub mod plot;
pub mod recall;
pub mod report;
pub mod synthetic;
