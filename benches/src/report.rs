//! One JSON line per (engine, index, parameter setting): the schema shared by `annbench`
//! and `benches/peers/run_peers.py`, documented in `benches/README.md`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Current schema version.
pub const SCHEMA: u32 = 1;

/// Latency percentiles of single-query search, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// One measured setting.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Schema version.
    pub schema: u32,
    /// `trovedb`, `hnswlib`, `faiss`, `usearch`.
    pub engine: String,
    /// Index kind (`flat`, `hnsw`, `ivf_pq`, `lsh`, ...).
    pub index: String,
    /// Dataset name.
    pub dataset: String,
    /// Base vectors.
    pub n: usize,
    /// Dimension.
    pub dim: usize,
    /// Metric.
    pub metric: String,
    /// Queries measured.
    pub nq: usize,
    /// Neighbours asked for in the timed runs.
    pub k: usize,
    /// Build parameters.
    pub build_params: serde_json::Value,
    /// Search parameters of this setting.
    pub search_params: serde_json::Value,
    /// Threads used for the batch run (single-query runs use one).
    pub threads: usize,
    /// Wall seconds to build (insert + seal/index).
    pub build_s: f64,
    /// Bytes of the index (on disk for trovedb; serialized size for peers).
    pub index_bytes: u64,
    /// Resident memory of the process after building, bytes.
    pub rss_bytes: u64,
    /// recall@1.
    pub recall_at_1: f64,
    /// recall@10.
    pub recall_at_10: f64,
    /// recall@100, when the ground truth has 100 entries.
    pub recall_at_100: Option<f64>,
    /// Queries per second, one query per call on one thread.
    pub qps_single: f64,
    /// Queries per second, all queries as one batch on `threads` threads.
    pub qps_batch: f64,
    /// Single-query latency.
    pub latency_ms: Latency,
    /// Fraction of points passing the filter, for filtered runs.
    pub filter_selectivity: Option<f64>,
    /// Milliseconds to reopen the database and answer one query (trovedb only).
    #[serde(default)]
    pub reopen_first_query_ms: Option<f64>,
    /// CPU model and core count.
    pub machine: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// Append records as JSON lines.
pub fn append_jsonl(path: &Path, records: &[Record]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for r in records {
        writeln!(f, "{}", serde_json::to_string(r)?)?;
    }
    Ok(())
}

/// Read every record of a JSONL file (blank lines skipped).
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

/// `CPU model, N cores`, from /proc/cpuinfo when available.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    format!("{model}, {cores} cores")
}

/// Resident set size of this process, bytes (0 where unknown).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Print records as a table.
pub fn print_table(records: &[Record]) {
    println!(
        "{:<9} {:<7} {:<28} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8} {:>9} {:>10}",
        "engine",
        "index",
        "search params",
        "R@1",
        "R@10",
        "R@100",
        "QPS(1t)",
        "QPS(batch)",
        "p50 ms",
        "p99 ms",
        "build s",
        "MiB"
    );
    for r in records {
        let sp = r.search_params.to_string();
        println!(
            "{:<9} {:<7} {:<28} {:>8.4} {:>8.4} {:>8} {:>10.1} {:>10.1} {:>8.3} {:>8.3} {:>9.2} {:>10.1}",
            r.engine,
            r.index,
            if sp.len() > 28 { &sp[..28] } else { &sp },
            r.recall_at_1,
            r.recall_at_10,
            r.recall_at_100.map_or_else(|| "-".into(), |v| format!("{v:.4}")),
            r.qps_single,
            r.qps_batch,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.build_s,
            r.index_bytes as f64 / 1_048_576.0
        );
    }
}
