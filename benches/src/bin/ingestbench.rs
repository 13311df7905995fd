//! ingestbench: search latency while ingesting, against the same searches with no ingest.
//!
//! ```text
//! ingestbench (--dataset DIR | --synthetic N,DIM,CLUSTERS) [--index hnsw] [--batch 1000]
//!             [--durability always|batch:MS|off] [--seal-rows 100000] [--k 10]
//!             [--merges on|off] [--out results.jsonl] [--workdir DIR]
//! ```
//! One thread upserts the base vectors in batches (ids 0..n, end-to-end: log, fsync, index);
//! another searches the query set round-robin the whole time and records each latency.
//! After the ingest, the same searcher runs alone on the finished collection for as many
//! queries. Reported: ingest vectors/s and search p50/p99/p99.9 in both phases.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use trovedb::{
    CollectionConfig, Database, DbOptions, Durability, IndexConfig, Metric, SearchParams,
};
use trovedb_bench::dataset::load_texmex;
use trovedb_bench::recall::percentile;
use trovedb_bench::synthetic::gaussian_mixture;

struct Args {
    dataset: Option<PathBuf>,
    synthetic: Option<(usize, usize, usize)>,
    index: String,
    batch: usize,
    durability: String,
    seal_rows: usize,
    /// Background compaction (`--merges on|off`, default on).
    merges: bool,
    k: usize,
    out: Option<PathBuf>,
    workdir: PathBuf,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        dataset: None,
        synthetic: None,
        index: "hnsw".into(),
        batch: 1000,
        durability: "always".into(),
        seal_rows: 100_000,
        merges: true,
        k: 10,
        out: None,
        workdir: PathBuf::from("bench-out/work"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dataset" => a.dataset = Some(val()?.into()),
            "--synthetic" => {
                let v: Vec<usize> = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--synthetic N,DIM,CLUSTERS")?;
                if v.len() != 3 {
                    bail!("--synthetic N,DIM,CLUSTERS");
                }
                a.synthetic = Some((v[0], v[1], v[2]));
            }
            "--index" => a.index = val()?,
            "--batch" => a.batch = val()?.parse()?,
            "--durability" => a.durability = val()?,
            "--seal-rows" => a.seal_rows = val()?.parse()?,
            "--merges" => a.merges = val()? == "on",
            "--k" => a.k = val()?.parse()?,
            "--out" => a.out = Some(val()?.into()),
            "--workdir" => a.workdir = val()?.into(),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn summary(lat: &mut [f64]) -> (f64, f64, f64) {
    (
        percentile(lat, 50.0),
        percentile(lat, 99.0),
        percentile(lat, 99.9),
    )
}

fn main() -> Result<()> {
    let a = parse()?;
    let ds = match (&a.dataset, a.synthetic) {
        (Some(dir), _) => load_texmex(dir, None, "main")?,
        (None, Some((n, dim, c))) => gaussian_mixture(n, dim, c, 1000, Metric::L2, 42, &|_| {})?,
        _ => bail!("give --dataset DIR or --synthetic N,DIM,CLUSTERS"),
    };
    let (n, dim) = (ds.n(), ds.dim);
    let durability = match a.durability.as_str() {
        "always" => Durability::Always,
        "off" => Durability::Off,
        s => match s.strip_prefix("batch:") {
            Some(ms) => Durability::Batch(Duration::from_millis(ms.parse()?)),
            None => bail!("--durability always|batch:MS|off"),
        },
    };
    std::fs::create_dir_all(&a.workdir)?;
    let work = tempfile::tempdir_in(&a.workdir)?;
    let db = Database::open(
        work.path(),
        DbOptions::default()
            .durability(durability)
            .seal_threshold_rows(a.seal_rows)
            .compaction(trovedb::CompactionPolicy::default().background(a.merges)),
    )?;
    let cfg = CollectionConfig {
        index: IndexConfig::from_name(&a.index, &[])?,
        ..CollectionConfig::new(dim, ds.metric)
    };
    let c = db.create_collection("bench", &cfg)?;
    eprintln!(
        "{}: {n} x {dim} {}, index {}, batches of {}, durability {}, {} threads",
        ds.name,
        ds.metric.name(),
        a.index,
        a.batch,
        a.durability,
        rayon::current_num_threads()
    );

    // Phase 1: ingest while searching. The searcher starts once the first batch is in.
    let done = Arc::new(AtomicBool::new(false));
    let ingested = Arc::new(AtomicU64::new(0));
    let queries = Arc::new(ds.queries.clone());
    let searcher = {
        let (c, done, ingested, queries) = (
            Arc::clone(&c),
            Arc::clone(&done),
            Arc::clone(&ingested),
            Arc::clone(&queries),
        );
        let k = a.k;
        std::thread::spawn(move || -> Result<Vec<f64>> {
            let nq = queries.len() / dim;
            let mut lat = Vec::new();
            let mut i = 0usize;
            while ingested.load(Ordering::Acquire) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            while !done.load(Ordering::Acquire) {
                let q = &queries[(i % nq) * dim..(i % nq + 1) * dim];
                let t = Instant::now();
                c.search(q, k, &SearchParams::default())?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                i += 1;
            }
            Ok(lat)
        })
    };
    let t = Instant::now();
    let ids: Vec<u64> = (0..n as u64).collect();
    for (b, chunk) in ids.chunks(a.batch).enumerate() {
        let s = b * a.batch;
        c.upsert(chunk, &ds.base[s * dim..(s + chunk.len()) * dim], &[])?;
        ingested.store((s + chunk.len()) as u64, Ordering::Release);
        if b % 100 == 0 {
            eprint!("\r{} / {n}", s + chunk.len());
        }
    }
    let ingest_s = t.elapsed().as_secs_f64();
    // End to end: until every background seal and merge has been published (the searcher
    // keeps going meanwhile).
    c.wait_idle()?;
    let settled_s = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let mut during = searcher
        .join()
        .map_err(|_| anyhow::anyhow!("searcher panicked"))??;
    eprintln!();

    // Phase 2: the same searcher alone, as many queries (at least 2,000).
    let nq = ds.nq();
    let count = during.len().clamp(2000, 20_000);
    let mut idle = Vec::with_capacity(count);
    for i in 0..count {
        let q = ds.query(i % nq);
        let t = Instant::now();
        c.search(q, a.k, &SearchParams::default())?;
        idle.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let st = c.stats()?;
    let (d50, d99, d999) = summary(&mut during);
    let (i50, i99, i999) = summary(&mut idle);
    let rate = n as f64 / ingest_s;
    println!(
        "ingest: {n} vectors in {ingest_s:.1} s = {rate:.0} vectors/s; background work done at {settled_s:.1} s = {:.0} vectors/s end to end ({} segments of {:?} rows, {} appendable rows, {} background merges)",
        n as f64 / settled_s,
        st.segments.len(),
        st.segments.iter().map(|s| s.rows).collect::<Vec<_>>(),
        st.appendable_rows,
        st.background.merges_done
    );
    println!(
        "search during ingest: {} queries, p50 {d50:.3} ms, p99 {d99:.3} ms, p99.9 {d999:.3} ms",
        during.len()
    );
    println!(
        "search idle:          {} queries, p50 {i50:.3} ms, p99 {i99:.3} ms, p99.9 {i999:.3} ms",
        idle.len()
    );
    println!(
        "ratio during/idle: p50 {:.2}x, p99 {:.2}x",
        d50 / i50,
        d99 / i99
    );
    if let Some(out) = &a.out {
        let rec = serde_json::json!({
            "schema": 1, "bench": "ingest", "dataset": ds.name, "n": n, "dim": dim,
            "index": a.index, "batch": a.batch, "durability": a.durability,
            "seal_rows": a.seal_rows, "ingest_s": ingest_s, "ingest_vectors_per_s": rate,
            "settled_s": settled_s, "merges": st.background.merges_done,
            "during": {"queries": during.len(), "p50_ms": d50, "p99_ms": d99, "p999_ms": d999},
            "idle": {"queries": idle.len(), "p50_ms": i50, "p99_ms": i99, "p999_ms": i999},
            "segments": st.segments.len(),
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        writeln!(f, "{rec}")?;
    }
    Ok(())
}
