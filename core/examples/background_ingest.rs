//! Background ingest: several threads write while another searches; segments are sealed
//! and merged in the background; `wait_idle` says when the collection has converged.
//!
//! `cargo run --release -p trovedb --example background_ingest`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use trovedb::{
    CollectionConfig, Database, DbOptions, Durability, IndexConfig, Metric, SearchParams,
};

const DIM: usize = 32;
const WRITERS: u64 = 2;
const PER_WRITER: u64 = 20_000;
const BATCH: u64 = 500;

fn vector(id: u64) -> Vec<f32> {
    let mut s = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..DIM)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Small segments so this short run seals and merges; the default seals every 100,000
    // rows. `Durability::Always` (the default) acknowledges a write once it is fsynced;
    // concurrent writers share one fsync (group commit).
    let options = DbOptions::default()
        .seal_threshold_rows(8_000)
        .durability(Durability::Always);
    let db = Database::open(dir.path(), options)?;
    let config = CollectionConfig {
        index: IndexConfig::hnsw(),
        ..CollectionConfig::new(DIM, Metric::L2)
    };
    let c = db.create_collection("events", &config)?;

    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    // A reader searching all along: it sees every acknowledged write, never a torn one.
    let reader = {
        let (c, done) = (Arc::clone(&c), Arc::clone(&done));
        std::thread::spawn(move || -> trovedb::Result<usize> {
            let mut queries = 0;
            while !done.load(Ordering::Acquire) {
                let q = vector(queries as u64 % 1_000);
                c.search(&q, 10, &SearchParams::default())?;
                queries += 1;
            }
            Ok(queries)
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || -> trovedb::Result<()> {
                let base = w * PER_WRITER;
                for s in (base..base + PER_WRITER).step_by(BATCH as usize) {
                    let ids: Vec<u64> = (s..s + BATCH).collect();
                    let vecs: Vec<f32> = ids.iter().flat_map(|&id| vector(id)).collect();
                    c.upsert(&ids, &vecs, &[])?;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().map_err(|_| "writer panicked")??;
    }
    let ingest = start.elapsed();
    done.store(true, Ordering::Release);
    let queries = reader.join().map_err(|_| "reader panicked")??;
    let before = c.stats()?;
    println!(
        "{} points written by {WRITERS} threads in {ingest:.2?} ({:.0}/s) while {queries} \
         searches ran; {} sealed segments + {} rows in the appendable segment",
        c.len(),
        c.len() as f64 / ingest.as_secs_f64(),
        before.segments.len(),
        before.appendable_rows
    );

    // Writes are over: the background seals the rest and merges segments; wait for it.
    let idle_from = Instant::now();
    c.wait_idle()?;
    let after = c.stats()?;
    println!(
        "after wait_idle ({:.2?}): {} segment(s) of {:?} rows",
        idle_from.elapsed(),
        after.segments.len(),
        after.segments.iter().map(|s| s.rows).collect::<Vec<_>>()
    );
    assert_eq!(c.len() as u64, WRITERS * PER_WRITER);
    let hits = c.search(&vector(12_345), 1, &SearchParams::default())?;
    assert_eq!(hits[0].id, 12_345);
    Ok(())
}
