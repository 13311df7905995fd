//! churnbench: resident memory of a collection after a churn of inserts and deletes followed
//! by `compact()`, against a fresh load of the same final contents. Run each mode in its own
//! process (allocators keep freed memory), then compare the two lines:
//!
//! ```text
//! churnbench fresh (--dataset DIR | --synthetic N,DIM) [--index hnsw]
//! churnbench churn (--dataset DIR | --synthetic N,DIM) [--index hnsw] [--rounds 3]
//! ```
//! Both end with the same points (ids 0..n of the base vectors); both search every query once
//! (touching the maps) before RSS is read.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use trovedb::{CollectionConfig, Database, DbOptions, Durability, IndexConfig, SearchParams};
use trovedb_bench::dataset::load_texmex;
use trovedb_bench::report::rss_bytes;
use trovedb_bench::synthetic::gaussian_mixture;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().context("mode: fresh | churn")?;
    let (mut dataset, mut synthetic, mut index, mut rounds, mut tune) =
        (None, None, "hnsw".to_string(), 3usize, false);
    while let Some(f) = args.next() {
        let v = args.next().with_context(|| format!("{f} needs a value"))?;
        match f.as_str() {
            "--dataset" => dataset = Some(PathBuf::from(v)),
            "--synthetic" => {
                let (n, d) = v.split_once(',').context("--synthetic N,DIM")?;
                synthetic = Some((n.parse::<usize>()?, d.parse::<usize>()?));
            }
            "--index" => index = v,
            "--rounds" => rounds = v.parse()?,
            "--tune-allocator" => tune = v.parse()?,
            _ => bail!("unknown flag {f}"),
        }
    }
    let ds = match (dataset, synthetic) {
        (Some(d), None) => load_texmex(&d, None, "main")?,
        (None, Some((n, dim))) => {
            gaussian_mixture(n, dim, 64, 100, trovedb::Metric::L2, 1, &|_| {})?
        }
        _ => bail!("give one of --dataset DIR or --synthetic N,DIM"),
    };
    let (n, dim) = (ds.n(), ds.dim);
    let work = tempfile::tempdir_in(std::env::temp_dir())?;
    let db = Database::open(
        work.path(),
        DbOptions::default()
            .durability(Durability::Off)
            .seal_threshold_rows(n / 4 + 1)
            .tune_allocator(tune),
    )?;
    let cfg = CollectionConfig {
        index: IndexConfig::from_name(&index, &[])?,
        ..CollectionConfig::new(dim, ds.metric)
    };
    let c = db.create_collection("c", &cfg)?;
    let ids: Vec<u64> = (0..n as u64).collect();
    let put = |lo: usize, hi: usize, id0: u64| -> Result<()> {
        let ids: Vec<u64> = (id0..id0 + (hi - lo) as u64).collect();
        for (k, chunk) in ids.chunks(1000).enumerate() {
            let s = lo + k * 1000;
            c.upsert(chunk, &ds.base[s * dim..(s + chunk.len()) * dim], &[])?;
        }
        Ok(())
    };
    match mode.as_str() {
        "fresh" => put(0, n, 0)?,
        "churn" => {
            // Load everything under other ids, then rounds of: delete half, re-insert it.
            put(0, n, 10_000_000)?;
            for r in 0..rounds {
                let half: Vec<u64> = (0..n as u64)
                    .filter(|i| i % 2 == (r as u64 % 2))
                    .map(|i| 10_000_000 + i)
                    .collect();
                c.delete(&half)?;
                c.flush()?;
                put(0, n, 20_000_000 + 1_000_000 * r as u64)?;
                let again: Vec<u64> = (0..n as u64)
                    .map(|i| 20_000_000 + 1_000_000 * r as u64 + i)
                    .collect();
                c.delete(&again)?;
            }
            let old: Vec<u64> = (0..n as u64).map(|i| 10_000_000 + i).collect();
            c.delete(&old)?;
            put(0, n, 0)?;
            c.compact()?;
        }
        _ => bail!("mode: fresh | churn"),
    }
    let t = std::time::Instant::now();
    c.flush()?;
    c.wait_idle()?;
    eprintln!(
        "flush + background work: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        c.len() == n && c.get(ids[n - 1])?.is_some(),
        "wrong final contents"
    );
    for i in 0..ds.nq() {
        c.search(ds.query(i), 10, &SearchParams::default())?;
    }
    let st = c.stats()?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    println!(
        "{mode}: {} points, {} segments, {} deleted rows, {} bytes on disk, rss {:.1} MiB (anon {:.1}, file {:.1}), peak {:.1} MiB",
        c.len(),
        st.segments.len(),
        st.deleted,
        st.bytes_on_disk,
        rss_bytes() as f64 / (1 << 20) as f64,
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:"),
    );
    Ok(())
}
