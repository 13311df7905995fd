//! annbench: build a trovedb collection from a dataset, sweep search parameters, and
//! report recall, throughput and latency as a table, JSON lines and a Pareto plot.
//!
//! ```text
//! annbench [run] (--dataset DIR | --npy BASE,QUERIES,GT | --synthetic N,DIM,CLUSTERS)
//!          [--metric l2|cosine|dot] [--query-set main|ood] [--queries N]
//!          [--index flat|hnsw|ivf_pq|lsh] [--param key=value ...] [--search key=value ...]
//!          [--sweep key=v1,v2,...]
//!          [--k 10] [--threads T] [--out results.jsonl] [--plot PREFIX] [--workdir DIR] [--keep-db DIR]
//!          [--cache DIR] [--seed S]
//! annbench plot --in A.jsonl [--in B.jsonl ...] --out PREFIX [--title T]
//! ```

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use trovedb::{
    CollectionConfig, Database, DbOptions, Durability, Filter, IndexConfig, Metric, Payload,
    SearchParams,
};
use trovedb_bench::dataset::{load_texmex, read_npy, save_texmex, Dataset};
use trovedb_bench::recall::{percentile, recall_at_k};
use trovedb_bench::report::{self, Latency, Record, SCHEMA};
use trovedb_bench::synthetic::gaussian_mixture;

#[derive(Debug, Default)]
struct Args {
    dataset: Option<PathBuf>,
    npy: Option<String>,
    synthetic: Option<String>,
    metric: Option<Metric>,
    query_set: String,
    queries: Option<usize>,
    index: String,
    params: Vec<(String, f64)>,
    /// Fixed search parameters (`--search refine=8`).
    search: Vec<(String, f64)>,
    sweep: Option<(String, Vec<f64>)>,
    k: usize,
    threads: usize,
    out: Option<PathBuf>,
    plot: Option<PathBuf>,
    workdir: PathBuf,
    keep_db: Option<PathBuf>,
    cache: PathBuf,
    seed: u64,
    filter_selectivity: Option<String>,
    filters: Vec<String>,
    /// Seal into this many segments (background merging off) instead of one.
    segments: Option<usize>,
    /// `--quantization`: the collection's (default: the engine's default, `auto`).
    quantization: Option<String>,
}

fn parse_kv(s: &str) -> Result<(String, f64)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("expected key=value, got `{s}`"))?;
    Ok((
        k.trim().to_owned(),
        v.trim()
            .parse()
            .with_context(|| format!("bad number in `{s}`"))?,
    ))
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args {
        query_set: "main".into(),
        index: "flat".into(),
        k: 10,
        threads: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        workdir: PathBuf::from("bench-out/work"),
        keep_db: None,
        cache: PathBuf::from("bench-out/cache"),
        seed: 42,
        ..Args::default()
    };
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dataset" => a.dataset = Some(val()?.into()),
            "--npy" => a.npy = Some(val()?),
            "--synthetic" => a.synthetic = Some(val()?),
            "--metric" => a.metric = Some(Metric::parse(&val()?)?),
            "--query-set" => a.query_set = val()?,
            "--queries" => a.queries = Some(val()?.parse()?),
            "--index" => a.index = val()?,
            "--param" => a.params.push(parse_kv(&val()?)?),
            "--search" => a.search.push(parse_kv(&val()?)?),
            "--sweep" => {
                let v = val()?;
                let (k, vs) = v
                    .split_once('=')
                    .with_context(|| format!("--sweep key=v1,v2: `{v}`"))?;
                let vals = vs
                    .split(',')
                    .map(|x| x.trim().parse::<f64>())
                    .collect::<Result<_, _>>()?;
                a.sweep = Some((k.to_owned(), vals));
            }
            "--k" => a.k = val()?.parse()?,
            "--threads" => a.threads = val()?.parse()?,
            "--out" => a.out = Some(val()?.into()),
            "--plot" => a.plot = Some(val()?.into()),
            "--workdir" => a.workdir = val()?.into(),
            "--keep-db" => a.keep_db = Some(val()?.into()),
            "--cache" => a.cache = val()?.into(),
            "--seed" => a.seed = val()?.parse()?,
            "--filter-selectivity" => a.filter_selectivity = Some(val()?),
            "--filter" => a.filters.push(val()?),
            "--segments" => a.segments = Some(val()?.parse()?),
            "--quantization" => a.quantization = Some(val()?),
            "-h" | "--help" => {
                println!("{}", include_str!("annbench_usage.txt"));
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    ensure!(a.k >= 1, "--k must be at least 1");
    ensure!(a.threads >= 1, "--threads must be at least 1");
    Ok(a)
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_owned());
    pb
}

fn load(a: &Args) -> Result<Dataset> {
    if let Some(dir) = &a.dataset {
        return load_texmex(dir, a.metric, &a.query_set);
    }
    if let Some(spec) = &a.npy {
        let parts: Vec<&str> = spec.split(',').collect();
        ensure!(parts.len() == 3, "--npy BASE,QUERIES,GROUNDTRUTH");
        let (n, dim, base) = read_npy(parts[0].as_ref())?;
        let (nq, qdim, queries) = read_npy(parts[1].as_ref())?;
        let (gn, gk, gt) = read_npy(parts[2].as_ref())?;
        ensure!(qdim == dim && gn == nq && n > 0, "npy shapes do not match");
        let metric = a.metric.context("--npy needs --metric")?;
        let gt = gt
            .chunks_exact(gk)
            .map(|r| r.iter().map(|x| *x as u32).collect())
            .collect();
        return Ok(Dataset {
            name: "npy".into(),
            dim,
            metric,
            base,
            queries,
            gt,
            gt_dist: None,
            metadata: None,
            path: None,
        });
    }
    let spec = a
        .synthetic
        .as_deref()
        .context("give --dataset, --npy or --synthetic")?;
    let v: Vec<usize> = spec
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()?;
    ensure!(v.len() == 3, "--synthetic N,DIM,CLUSTERS");
    let metric = a.metric.unwrap_or(Metric::L2);
    let nq = a.queries.unwrap_or(1000);
    let dir = a.cache.join(format!(
        "synthetic-{}x{}-c{}-{}-q{nq}-s{}",
        v[0],
        v[1],
        v[2],
        metric.name(),
        a.seed
    ));
    if dir.join("info.json").exists() {
        eprintln!("using cached synthetic dataset {}", dir.display());
        let mut ds = load_texmex(&dir, Some(metric), "main")?;
        ds.name = dir
            .file_name()
            .map_or(ds.name, |n| n.to_string_lossy().into_owned());
        return Ok(ds);
    }
    let pb = bar(nq as u64, "ground truth");
    let ds = gaussian_mixture(v[0], v[1], v[2], nq, metric, a.seed, &|n| pb.inc(n))?;
    pb.finish_and_clear();
    save_texmex(&ds, &dir)?;
    eprintln!(
        "cached synthetic dataset (with exact ground truth) in {}",
        dir.display()
    );
    let mut ds = ds;
    ds.path = Some(dir);
    Ok(ds)
}

/// One filter to benchmark (or none), with its exact filtered ground truth.
struct FilterCase {
    label: Option<String>,
    filter: Option<Filter>,
    selectivity: Option<f64>,
    gt: Vec<Vec<u32>>,
}

/// A uniform pseudo-random attribute in 0..1_000_000 per row (splitmix64 of the row), the
/// same function as `benches/peers/run_peers.py`, for filters of exact selectivity that
/// are uncorrelated with the vectors.
fn bench_attr(row: usize) -> i64 {
    let mut z = (row as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % 1_000_000) as i64
}

/// The payload stored in filtered runs: `r` (see [`bench_attr`]) plus the dataset's
/// metadata fields, except long text.
fn bench_payload(row: usize, meta: Option<&serde_json::Value>) -> Payload {
    let mut p = meta
        .and_then(|m| m.as_object())
        .map(|o| {
            let mut o = o.clone();
            o.remove("text");
            o.remove("doc_id");
            trovedb::payload_from_json(&serde_json::Value::Object(o)).unwrap_or_default()
        })
        .unwrap_or_default();
    p.insert("r".into(), trovedb::Value::Int(bench_attr(row)));
    p
}

fn filter_cases(a: &Args, ds: &Dataset) -> Result<Vec<FilterCase>> {
    let mut specs: Vec<(String, serde_json::Value)> = Vec::new();
    if let Some(list) = &a.filter_selectivity {
        for s in list.split(',') {
            let sel: f64 = s
                .trim()
                .parse()
                .with_context(|| format!("bad selectivity `{s}`"))?;
            ensure!(
                sel > 0.0 && sel <= 1.0,
                "selectivity must be in (0, 1], got {sel}"
            );
            let bound = (sel * 1_000_000.0).round() as i64;
            specs.push((
                format!("r<{bound}"),
                serde_json::json!({"r": {"$lt": bound}}),
            ));
        }
    }
    for f in &a.filters {
        specs.push((
            f.clone(),
            serde_json::from_str(f).with_context(|| format!("--filter is not JSON: {f}"))?,
        ));
    }
    if specs.is_empty() {
        return Ok(vec![FilterCase {
            label: None,
            filter: None,
            selectivity: None,
            gt: ds.gt.clone(),
        }]);
    }
    let n = ds.n();
    let mut cases = Vec::new();
    for (label, json) in specs {
        let filter = Filter::from_json(&json)?;
        let pass: Vec<usize> = (0..n)
            .filter(|i| {
                filter.matches(&bench_payload(
                    *i,
                    ds.metadata.as_ref().and_then(|m| m.get(*i)),
                ))
            })
            .collect();
        let sub: Vec<f32> = pass
            .iter()
            .flat_map(|i| ds.base[i * ds.dim..(i + 1) * ds.dim].iter().copied())
            .collect();
        let pb = bar(ds.nq() as u64, "filtered truth");
        let (gt_sub, _) = trovedb_bench::synthetic::exact_ground_truth(
            ds.metric,
            ds.dim,
            &sub,
            &ds.queries,
            100.min(pass.len()),
            &|x| pb.inc(x),
        );
        pb.finish_and_clear();
        let gt = gt_sub
            .into_iter()
            .map(|r| r.into_iter().map(|j| pass[j as usize] as u32).collect())
            .collect();
        eprintln!(
            "filter {label}: {} of {n} points pass ({:.3}%)",
            pass.len(),
            100.0 * pass.len() as f64 / n as f64
        );
        cases.push(FilterCase {
            label: Some(label),
            filter: Some(filter),
            selectivity: Some(pass.len() as f64 / n as f64),
            gt,
        });
    }
    Ok(cases)
}

fn exact_dist(metric: Metric, q: &[f32], v: &[f32]) -> f64 {
    let dot: f64 = q
        .iter()
        .zip(v)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    match metric {
        Metric::L2 => q
            .iter()
            .zip(v)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum(),
        Metric::Cosine => {
            let nq: f64 = q.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let nv: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (nq * nv)
        }
        _ => -dot,
    }
}

fn run(a: &Args) -> Result<()> {
    let mut ds = load(a)?;
    if let Some(n) = a.queries {
        ds.limit_queries(n);
    }
    let (n, nq, dim) = (ds.n(), ds.nq(), ds.dim);
    eprintln!(
        "dataset {}: {n} x {dim} {}, {nq} queries",
        ds.name,
        ds.metric.name()
    );
    let mut config = CollectionConfig {
        index: IndexConfig::from_name(&a.index, &a.params)?,
        ..CollectionConfig::new(dim, ds.metric)
    };
    if let Some(q) = &a.quantization {
        config.quantization = trovedb::Quantization::parse(q)?;
    }
    eprintln!("quantization: {}", config.resolved().quantization.name());
    std::fs::create_dir_all(&a.workdir)?;
    let work = tempfile::tempdir_in(&a.workdir)?;
    // `--keep-db DIR`: build into DIR and keep it; a later run with the same DIR (and the
    // same dataset, index and parameters: the caller's promise) opens it instead of building.
    let db_dir = a
        .keep_db
        .clone()
        .unwrap_or_else(|| work.path().to_path_buf());
    let reuse = a.keep_db.is_some() && db_dir.join("collections").join("bench").exists();
    // One segment (the best case), or `--segments S` sealed segments of n/S rows each, left
    // unmerged (what a default ingest leaves before merging).
    let opts = match a.segments {
        Some(s) if s > 1 => DbOptions::default()
            .durability(Durability::Off)
            .seal_threshold_rows(n.div_ceil(s))
            .compaction(trovedb::CompactionPolicy::off()),
        _ => DbOptions::default()
            .durability(Durability::Off)
            .seal_threshold_rows(n + 1),
    };
    let db = Database::open(&db_dir, opts)?;
    let coll = if reuse {
        eprintln!("reusing the collection in {}", db_dir.display());
        db.collection("bench")?
    } else {
        db.create_collection("bench", &config)?
    };
    let cases = filter_cases(a, &ds)?;
    let payloads: Vec<Payload> = if cases.iter().any(|c| c.filter.is_some()) {
        (0..n)
            .map(|i| bench_payload(i, ds.metadata.as_ref().and_then(|m| m.get(i))))
            .collect()
    } else {
        Vec::new()
    };
    let t0 = Instant::now();
    let pb = bar(n as u64, "insert");
    // Batches no larger than a segment, so that `--segments S` really seals S segments (a
    // batch is never split across segments).
    let step = match a.segments {
        Some(s) if s > 1 => n.div_ceil(s).clamp(1, 10_000),
        _ => 10_000,
    };
    let ids: Vec<u64> = (0..n as u64).collect();
    for s in (0..n).step_by(step).filter(|_| !reuse) {
        let e = (s + step).min(n);
        coll.upsert(
            &ids[s..e],
            &ds.base[s * dim..e * dim],
            payloads.get(s..e).unwrap_or(&[]),
        )?;
        pb.inc((e - s) as u64);
    }
    pb.finish_and_clear();
    let insert_s = t0.elapsed().as_secs_f64();
    coll.flush()?;
    coll.wait_idle()?;
    let build_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "insert (log + index) {insert_s:.2}s, seal {:.2}s",
        build_s - insert_s
    );
    let stats = coll.stats()?;
    let rss = report::rss_bytes();
    eprintln!(
        "built in {build_s:.2}s, {} bytes on disk, {} segments",
        stats.bytes_on_disk,
        stats.segments.len()
    );

    let settings: Vec<Option<(String, f64)>> = match &a.sweep {
        None => vec![None],
        Some((key, vals)) if SEARCH_KNOBS.contains(&key.as_str()) => {
            vals.iter().map(|v| Some((key.clone(), *v))).collect()
        }
        Some((key, _)) => bail!(
            "unknown search parameter `{key}` to sweep (known: {})",
            SEARCH_KNOBS.join(", ")
        ),
    };
    let has100 = |gt: &[Vec<u32>]| gt.first().is_some_and(|g| g.len() >= 100) && n >= 100;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()?;
    let mut records = Vec::new();
    for case in &cases {
        let gt = &case.gt;
        for setting in settings.clone() {
            let mut params = SearchParams::default();
            for (key, v) in a.search.iter().chain(setting.iter()) {
                params = with_knob(params, key, *v as usize);
            }
            let params = match &case.filter {
                Some(f) => params.with_filter(f.clone()),
                None => params,
            };
            // Warm-up: touch the pages and the caches once.
            for i in 0..nq.min(50) {
                coll.search(ds.query(i), a.k, &params)?;
            }
            let mut lat = Vec::with_capacity(nq);
            let mut results = Vec::with_capacity(nq);
            let t = Instant::now();
            for i in 0..nq {
                let s = Instant::now();
                let hits = coll.search(ds.query(i), a.k, &params)?;
                lat.push(s.elapsed().as_secs_f64() * 1e3);
                results.push(hits.iter().map(|h| h.id).collect::<Vec<u64>>());
            }
            let qps_single = nq as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            let batch = pool.install(|| coll.search_batch(&ds.queries, a.k, &params))?;
            let qps_batch = nq as f64 / t.elapsed().as_secs_f64();
            ensure!(
                batch.len() == nq,
                "batch returned {} result lists",
                batch.len()
            );
            let recall = |res: &[Vec<u64>], k: usize| -> f64 {
                (0..nq)
                    .into_par_iter()
                    .map(|i| {
                        let q = ds.query(i);
                        recall_at_k(&res[i], &gt[i], k, |id| {
                            exact_dist(
                                ds.metric,
                                q,
                                &ds.base[id as usize * dim..(id as usize + 1) * dim],
                            )
                        })
                    })
                    .sum::<f64>()
                    / nq as f64
            };
            let r1 = recall(&results, 1);
            let r10 = recall(&results, 10.min(a.k));
            let r100 = if has100(gt) {
                let res100: Vec<Vec<u64>> = (0..nq)
                    .into_par_iter()
                    .map(|i| {
                        coll.search(ds.query(i), 100, &params)
                            .map(|h| h.iter().map(|x| x.id).collect())
                    })
                    .collect::<trovedb::Result<_>>()?;
                Some(recall(&res100, 100))
            } else {
                None
            };
            let mut search_params = serde_json::json!({});
            for (k, v) in a.search.iter().chain(setting.iter()) {
                search_params[k] = serde_json::json!(v);
            }
            if let Some(label) = &case.label {
                search_params["filter"] = serde_json::Value::String(label.clone());
            }
            records.push(Record {
                schema: SCHEMA,
                engine: "trovedb".into(),
                index: a.index.clone(),
                dataset: ds.name.clone(),
                n,
                dim,
                metric: ds.metric.name().into(),
                nq,
                k: a.k,
                build_params: serde_json::json!(a
                    .params
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeMap<_, _>>()),
                search_params,
                threads: a.threads,
                build_s,
                index_bytes: stats.bytes_on_disk,
                rss_bytes: rss,
                recall_at_1: r1,
                recall_at_10: r10,
                recall_at_100: r100,
                qps_single,
                qps_batch,
                latency_ms: Latency {
                    p50: percentile(&mut lat, 50.0),
                    p95: percentile(&mut lat, 95.0),
                    p99: percentile(&mut lat, 99.0),
                },
                filter_selectivity: case.selectivity,
                reopen_first_query_ms: None,
                machine: report::machine(),
                timestamp: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            });
        }
    }
    println!(
        "dataset {} ({n} x {dim}, {}), {nq} queries, k={}, batch threads={}, machine: {}",
        ds.name,
        ds.metric.name(),
        a.k,
        a.threads,
        report::machine()
    );
    // Reopen: the sealed segment is mapped, nothing rebuilt; time open + the first query.
    // With ANNBENCH_DROP_CACHES=1 (root) the page cache is dropped first: a cold start.
    drop(coll);
    db.close()?;
    drop(db);
    if std::env::var("ANNBENCH_DROP_CACHES").is_ok_and(|v| v == "1") {
        std::fs::write("/proc/sys/vm/drop_caches", "3")
            .context("dropping the page cache (needs root)")?;
    }
    let t = Instant::now();
    let db = Database::open(&db_dir, DbOptions::default())?;
    let coll = db.collection("bench")?;
    let first = coll.search(ds.query(0), a.k, &SearchParams::default())?;
    let reopen_ms = t.elapsed().as_secs_f64() * 1e3;
    ensure!(!first.is_empty(), "no result after reopen");
    eprintln!("reopen + first query: {reopen_ms:.1} ms");
    for r in &mut records {
        r.reopen_first_query_ms = Some(reopen_ms);
    }
    report::print_table(&records);
    if let Some(out) = &a.out {
        report::append_jsonl(out, &records)?;
        eprintln!("appended {} line(s) to {}", records.len(), out.display());
    }
    if let Some(prefix) = &a.plot {
        let mut all = records.clone();
        if let Some(out) = &a.out {
            all = report::read_jsonl(out)?
                .into_iter()
                .filter(|r| r.dataset == ds.name)
                .collect();
        }
        trovedb_bench::plot::plot(
            &all,
            &format!("{} ({n} x {dim}, {})", ds.name, ds.metric.name()),
            prefix,
        )?;
        eprintln!("plot: {}.png / .svg", prefix.display());
    }
    db.close()?;
    Ok(())
}

fn plot_cmd(mut it: impl Iterator<Item = String>) -> Result<()> {
    let (mut inputs, mut out, mut title, mut dataset) = (Vec::new(), None, None, None);
    while let Some(f) = it.next() {
        let v = it.next().with_context(|| format!("{f} needs a value"))?;
        match f.as_str() {
            "--in" => inputs.push(PathBuf::from(v)),
            "--out" => out = Some(PathBuf::from(v)),
            "--title" => title = Some(v),
            "--dataset" => dataset = Some(v),
            other => bail!("unknown plot argument `{other}`"),
        }
    }
    ensure!(!inputs.is_empty(), "plot needs at least one --in");
    let out = out.context("plot needs --out PREFIX")?;
    let mut recs = Vec::new();
    for p in &inputs {
        recs.extend(report::read_jsonl(p)?);
    }
    if let Some(d) = &dataset {
        recs.retain(|r| &r.dataset == d);
    }
    ensure!(!recs.is_empty(), "no records to plot");
    report::print_table(&recs);
    let title = title.unwrap_or_else(|| recs[0].dataset.clone());
    trovedb_bench::plot::plot(&recs, &title, &out)?;
    eprintln!("plot: {}.png / .svg", out.display());
    Ok(())
}

/// Search parameters annbench can set or sweep.
const SEARCH_KNOBS: [&str; 4] = ["ef", "nprobe", "refine", "probes"];

fn with_knob(p: SearchParams, key: &str, v: usize) -> SearchParams {
    match key {
        "ef" => p.with_ef(v),
        "nprobe" => p.with_nprobe(v),
        "refine" => p.with_refine(v),
        _ => p.with_probes(v),
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("plot") => {
            args.next();
            plot_cmd(args)
        }
        Some("run") => {
            args.next();
            run(&parse_args(args)?)
        }
        _ => run(&parse_args(args)?),
    }
}
