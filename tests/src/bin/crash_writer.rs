//! Child process of the crash test: runs the deterministic workload of
//! `trovedb_tests::crash_op` against a database and prints `ack <i>` after step i returns
//! (durability `always`) with the number of background merges it has published so far,
//! until it is killed.
//!
//! Usage: `crash_writer <dir> <seal_threshold_rows> [start_step]`

use std::io::Write;

use trovedb::{CollectionConfig, CompactionPolicy, Database, DbOptions, IdType, Metric};
use trovedb_tests::{crash_op, crash_str_key, CrashOp, CRASH_DIM};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: crash_writer <dir> <seal_threshold_rows> [start]"
    );
    let seal: usize = args[2].parse()?;
    let start: u64 = args.get(3).map_or(Ok(0), |s| s.parse())?;
    // Background merges as often as possible (two segments of a tier, a fifth deleted), so
    // that kills also land while a merge builds, writes or publishes.
    let policy = CompactionPolicy::default()
        .min_segments(2)
        .max_deleted_fraction(0.2)
        .max_merged_rows(1_000_000);
    let db = Database::open(
        &args[1],
        DbOptions::default()
            .seal_threshold_rows(seal)
            .compaction(policy),
    )?;
    let c = match db.collection("crash") {
        Ok(c) => c,
        Err(trovedb::Error::CollectionNotFound { .. }) => {
            db.create_collection("crash", &CollectionConfig::new(CRASH_DIM, Metric::L2))?
        }
        Err(e) => return Err(e.into()),
    };
    // The same workload keyed by strings (`crash_str_key(id)`), written after each step's
    // integer-keyed write.
    let cs = match db.collection("crash_str") {
        Ok(c) => c,
        Err(trovedb::Error::CollectionNotFound { .. }) => db.create_collection(
            "crash_str",
            &CollectionConfig {
                id_type: IdType::Str,
                ..CollectionConfig::new(CRASH_DIM, Metric::L2)
            },
        )?,
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for i in start.. {
        match crash_op(i) {
            CrashOp::Upsert(points) => {
                let ids: Vec<u64> = points.iter().map(|p| p.0).collect();
                let vectors: Vec<f32> = points.iter().flat_map(|p| p.1.clone()).collect();
                let payloads: Vec<_> = points.iter().map(|p| p.2.clone()).collect();
                c.upsert(&ids, &vectors, &payloads)?;
                let keys: Vec<String> = ids.iter().map(|id| crash_str_key(*id)).collect();
                cs.upsert_str(&keys, &vectors, &payloads)?;
            }
            CrashOp::Delete(ids) => {
                c.delete(&ids)?;
                let keys: Vec<String> = ids.iter().map(|id| crash_str_key(*id)).collect();
                cs.delete_str(&keys)?;
            }
        }
        // Every 14th step also compacts, so kills land during compaction too (it changes no
        // point, so the parent's model is unaffected).
        if i % 14 == 6 {
            c.compact()?;
        }
        if i % 14 == 13 {
            cs.compact()?;
        }
        writeln!(out, "ack {i} merges {}", c.stats()?.background.merges_done)?;
        out.flush()?;
    }
    Ok(())
}
