//! Shared helpers for trovedb's integration tests: a seeded RNG, a brute-force oracle,
//! an in-memory model, dataset readers and the deterministic workload of the crash test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use trovedb::{Collection, Hit, Metric, Payload, Value};

/// xorshift64* — small, seeded, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// `n` floats in [-1, 1).
    pub fn vector(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// The seed for a randomized test: `TROVEDB_SEED` if set, else a fixed default. Printed
/// so that a failure can be reproduced.
pub fn seed(default: u64) -> u64 {
    let s = std::env::var("TROVEDB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("seed = {s} (set TROVEDB_SEED to reproduce)");
    s
}

/// What the database should contain: id -> (stored vector, payload).
pub type Model = BTreeMap<u64, (Vec<f32>, Payload)>;

/// Upsert `ids` with random `dim`-wide vectors and payloads `{id, even}` into `c` and the
/// model (l2 collections: stored as given).
pub fn put_modelled(c: &Collection, model: &mut Model, rng: &mut Rng, ids: &[u64], dim: usize) {
    let mut vectors = Vec::new();
    let mut payloads = Vec::new();
    for id in ids {
        let v = rng.vector(dim);
        let mut p = Payload::new();
        p.insert("id".into(), Value::Int(*id as i64));
        p.insert("even".into(), Value::Bool(id % 2 == 0));
        vectors.extend_from_slice(&v);
        payloads.push(p.clone());
        model.insert(*id, (v, p));
    }
    c.upsert(ids, &vectors, &payloads)
        .expect("upsert of the modelled rows");
}

/// Delete `ids` from `c` and the model.
pub fn del_modelled(c: &Collection, model: &mut Model, ids: &[u64]) {
    c.delete(ids).expect("delete of the modelled rows");
    for id in ids {
        model.remove(id);
    }
}

/// The vector as a cosine collection stores it.
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    v.iter().map(|x| (f64::from(*x) / n) as f32).collect()
}

/// Exact top-10 ids by brute force in f64 over the rows of `base` (id = row) that `keep`
/// allows, ties broken by id: the oracle of the approximate indexes' recall tests.
pub fn exact_top10(
    metric: Metric,
    dim: usize,
    base: &[f32],
    q: &[f32],
    keep: &dyn Fn(u64) -> bool,
) -> Vec<u64> {
    let mut all: Vec<(f64, u64)> = base
        .chunks_exact(dim)
        .enumerate()
        .filter(|(i, _)| keep(*i as u64))
        .map(|(i, v)| (distance(metric, q, v), i as u64))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.iter().take(10).map(|x| x.1).collect()
}

/// Recall@10 of `c` over the first 200 `queries` (row i of `base` has id i) against
/// [`exact_top10`]: every hit passes `keep`, hits come sorted by distance, and each hit's
/// distance is its exact one (the approximate indexes re-rank from the float rows).
pub fn recall_at_10(
    c: &trovedb::Collection,
    metric: Metric,
    dim: usize,
    base: &[f32],
    queries: &[f32],
    params: &trovedb::SearchParams,
    keep: &dyn Fn(u64) -> bool,
) -> f64 {
    let (mut hits, mut total) = (0, 0);
    for q in queries.chunks_exact(dim).take(200) {
        let got = match c.search(q, 10, params) {
            Ok(got) => got,
            Err(e) => panic!("search failed: {e}"),
        };
        assert!(
            got.iter().all(|h| keep(h.id)),
            "a point outside the allowed set was returned"
        );
        assert!(got.windows(2).all(|w| w[0].distance <= w[1].distance));
        for h in &got {
            let v = &base[h.id as usize * dim..(h.id as usize + 1) * dim];
            let exact = distance(metric, q, v);
            assert!(
                (f64::from(h.distance) - exact).abs() <= 1e-3 * exact.abs().max(1.0),
                "hit {} has distance {} but its exact distance is {exact}",
                h.id,
                h.distance
            );
        }
        let truth = exact_top10(metric, dim, base, q, keep);
        hits += got.iter().filter(|h| truth.contains(&h.id)).count();
        total += truth.len();
    }
    hits as f64 / total as f64
}

/// Distance in f64, as the metric defines it.
pub fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    match metric {
        Metric::L2 => a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum(),
        Metric::Cosine => {
            let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (na * nb)
        }
        _ => -dot,
    }
}

/// Exact top-k by brute force over the model, ties broken by the smaller id.
pub fn oracle(metric: Metric, model: &Model, q: &[f32], k: usize) -> Vec<(u64, f64)> {
    let mut all: Vec<(u64, f64)> = model
        .iter()
        .map(|(id, (v, _))| (*id, distance(metric, q, v)))
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Assert `got` is an exact top-k: same length as the oracle's, no duplicates, every
/// reported distance equal to the true distance of that id, and the distance at every rank
/// equal to the oracle's (so only ties may be ordered differently).
pub fn assert_exact(metric: Metric, model: &Model, q: &[f32], got: &[Hit], k: usize) {
    let want = oracle(metric, model, q, k);
    assert_eq!(got.len(), want.len(), "result count");
    let eps = 1e-4;
    let mut seen = std::collections::HashSet::new();
    for (i, h) in got.iter().enumerate() {
        assert!(seen.insert(h.id), "duplicate id {} in results", h.id);
        let (v, _) = model
            .get(&h.id)
            .unwrap_or_else(|| panic!("id {} returned but not in the model", h.id));
        let true_d = distance(metric, q, v);
        assert!(
            (f64::from(h.distance) - true_d).abs() <= eps * true_d.abs().max(1.0),
            "rank {i}: id {} reported {} but is at {true_d}",
            h.id,
            h.distance
        );
        assert!(
            (true_d - want[i].1).abs() <= eps * want[i].1.abs().max(1.0),
            "rank {i}: got id {} at {true_d}, oracle has id {} at {}",
            h.id,
            want[i].0,
            want[i].1
        );
    }
}

/// Read a TEXMEX `.fvecs` file: `(dim, row-major floats)`.
pub fn read_fvecs(path: &Path) -> anyhow::Result<(usize, Vec<f32>)> {
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(bytes.len() >= 4, "{}: empty", path.display());
    let dim = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let rec = 4 + 4 * dim;
    anyhow::ensure!(
        bytes.len() % rec == 0,
        "{}: truncated record",
        path.display()
    );
    let mut out = Vec::with_capacity(bytes.len() / rec * dim);
    for r in bytes.chunks_exact(rec) {
        out.extend(
            r[4..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok((dim, out))
}

/// The repository root (for `data/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Dimension of the crash-test workload.
pub const CRASH_DIM: usize = 16;
/// Ids used by the crash-test workload.
pub const CRASH_IDS: u64 = 300;

/// One step of the crash-test workload.
#[derive(Debug, Clone)]
pub enum CrashOp {
    /// Upsert these points.
    Upsert(Vec<(u64, Vec<f32>, Payload)>),
    /// Delete these ids.
    Delete(Vec<u64>),
}

/// Step `i` of the deterministic crash-test workload.
pub fn crash_op(i: u64) -> CrashOp {
    let mut rng = Rng::new(i + 1);
    if i % 5 == 4 {
        return CrashOp::Delete((0..6).map(|_| rng.below(CRASH_IDS)).collect());
    }
    CrashOp::Upsert(
        (0..8)
            .map(|j| {
                let id = rng.below(CRASH_IDS);
                let mut p = Payload::new();
                p.insert("batch".into(), Value::Int(i as i64));
                p.insert("j".into(), Value::Int(j));
                p.insert("tag".into(), Value::Str(format!("b{i}-{j}")));
                (id, rng.vector(CRASH_DIM), p)
            })
            .collect(),
    )
}

/// The string id of crash-test id `id` in the string-keyed collection (`crash_str`).
pub fn crash_str_key(id: u64) -> String {
    format!("doc/{id:04}#chunk-{}", id % 7)
}

/// Apply step `op` to the model.
pub fn apply_crash_op(model: &mut Model, op: &CrashOp) {
    match op {
        CrashOp::Upsert(points) => {
            for (id, v, p) in points {
                model.insert(*id, (v.clone(), p.clone()));
            }
        }
        CrashOp::Delete(ids) => {
            for id in ids {
                model.remove(id);
            }
        }
    }
}

/// Format version the current build writes (its fixture is `tests/fixtures/v<N>/`).
pub const FIXTURE_VERSION: u16 = 3;

/// The deterministic contents of the format fixture of `version` (`tests/fixtures/v<N>/`):
/// the collection name, its config, and its final points (id -> vector as given, payload).
/// Version 2 added the ivf_pq and lsh index kinds; version 3 (the section directory) holds
/// the same collections as version 2.
pub fn fixture_contents(version: u16) -> Vec<(&'static str, trovedb::CollectionConfig, Model)> {
    let mut out = Vec::new();
    let mut kinds = vec![
        (
            "flat_l2",
            4usize,
            Metric::L2,
            trovedb::IndexConfig::Flat,
            60u64,
        ),
        (
            "hnsw_cos",
            8,
            Metric::Cosine,
            trovedb::IndexConfig::hnsw(),
            1200,
        ),
    ];
    if version >= 2 {
        // Spelled out: the fixture's manifest holds these values, whatever the defaults become.
        let seed = trovedb::HNSW_DEFAULT_SEED;
        let ivf = trovedb::IndexConfig::IvfPq {
            nlist: 0,
            pq_m: 0,
            nprobe: 24,
            refine: 4,
            seed,
        };
        let lsh = trovedb::IndexConfig::Lsh {
            tables: 32,
            bits: 0,
            probes: 32,
            seed,
        };
        kinds.push(("ivf_pq_l2", 8, Metric::L2, ivf, 1300));
        kinds.push(("lsh_cos", 8, Metric::Cosine, lsh, 1300));
    }
    for (name, dim, metric, index, n) in kinds {
        let mut rng = Rng::new(n);
        let mut model = Model::new();
        for id in 0..n {
            let mut p = Payload::new();
            p.insert("i".into(), Value::Int(id as i64));
            p.insert("s".into(), Value::Str(format!("p{id}")));
            p.insert(
                "t".into(),
                Value::Tags(vec!["x".into(), format!("m{}", id % 3)]),
            );
            p.insert("f".into(), Value::Float(id as f64 / 4.0));
            p.insert("b".into(), Value::Bool(id % 2 == 0));
            model.insert(id, (rng.vector(dim), p));
        }
        for id in (0..n).step_by(7) {
            model.remove(&id);
        }
        let cfg = trovedb::CollectionConfig {
            index,
            ..trovedb::CollectionConfig::new(dim, metric)
        };
        out.push((name, cfg, model));
    }
    out
}

/// A step of the fault-injection and power-cut workloads.
pub enum WorkOp {
    /// Upsert these points.
    Upsert(Vec<(u64, Vec<f32>, Payload)>),
    /// Delete these ids.
    Delete(Vec<u64>),
    /// `flush()`.
    Flush,
    /// `compact()`.
    Compact,
}

impl WorkOp {
    /// Run the step on `c`.
    pub fn run(&self, c: &trovedb::Collection) -> trovedb::Result<()> {
        match self {
            WorkOp::Upsert(points) => {
                let ids: Vec<u64> = points.iter().map(|p| p.0).collect();
                let v: Vec<f32> = points.iter().flat_map(|p| p.1.clone()).collect();
                let pl: Vec<Payload> = points.iter().map(|p| p.2.clone()).collect();
                c.upsert(&ids, &v, &pl)
            }
            WorkOp::Delete(ids) => c.delete(ids).map(drop),
            WorkOp::Flush => c.flush(),
            WorkOp::Compact => c.compact().map(drop),
        }
    }

    /// Apply the step to the model (what an acknowledged step changes).
    pub fn apply(&self, model: &mut Model) {
        match self {
            WorkOp::Upsert(points) => {
                for (id, v, p) in points {
                    model.insert(*id, (v.clone(), p.clone()));
                }
            }
            WorkOp::Delete(ids) => {
                for id in ids {
                    model.remove(id);
                }
            }
            WorkOp::Flush | WorkOp::Compact => {}
        }
    }

    /// The step's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            WorkOp::Upsert(_) => "upsert",
            WorkOp::Delete(_) => "delete",
            WorkOp::Flush => "flush",
            WorkOp::Compact => "compact",
        }
    }
}

/// Dimension of the read-only follower workload.
pub const FOLLOW_DIM: usize = 8;
/// Ids of the follower workload are drawn from `0..FOLLOW_IDS`.
pub const FOLLOW_IDS: u64 = 400;

/// The collection of the follower workload: HNSW over `FOLLOW_DIM`-d l2 vectors.
pub fn follow_config() -> trovedb::CollectionConfig {
    trovedb::CollectionConfig {
        index: trovedb::IndexConfig::Hnsw {
            m: 8,
            ef_construction: 40,
            ef_search: 32,
            seed: 7,
        },
        ..trovedb::CollectionConfig::new(FOLLOW_DIM, Metric::L2)
    }
}

/// Step `k` (from 1) of the follower workload: an upsert of a few ids at version `k`, or
/// (every 7th step) a delete of a few ids. Deterministic, so that a reader process can
/// recompute the writer's history from `k` alone.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowOp {
    /// Upsert these ids with version `k` (payload `{"v": k}`, vector `follow_vector(id, k)`).
    Upsert(Vec<u64>),
    /// Delete these ids.
    Delete(Vec<u64>),
}

/// The follower workload's step `k`.
pub fn follow_op(k: u64) -> FollowOp {
    let mut r = Rng::new(k ^ 0x5eed_f011);
    let n = 1 + r.below(6) as usize;
    let mut ids: Vec<u64> = (0..n).map(|_| r.below(FOLLOW_IDS)).collect();
    ids.sort_unstable();
    ids.dedup();
    if k.is_multiple_of(7) {
        FollowOp::Delete(ids)
    } else {
        FollowOp::Upsert(ids)
    }
}

/// The vector id `id` has at version `version`.
pub fn follow_vector(id: u64, version: u64) -> Vec<f32> {
    Rng::new(id.wrapping_mul(1_000_003) ^ version).vector(FOLLOW_DIM)
}

/// Apply step `k` to a model of id -> version.
pub fn follow_apply(model: &mut BTreeMap<u64, u64>, k: u64) {
    match follow_op(k) {
        FollowOp::Upsert(ids) => {
            for id in ids {
                model.insert(id, k);
            }
        }
        FollowOp::Delete(ids) => {
            for id in ids {
                model.remove(&id);
            }
        }
    }
}

/// Run step `k` against a collection.
pub fn follow_run(c: &trovedb::Collection, k: u64) -> trovedb::Result<()> {
    match follow_op(k) {
        FollowOp::Upsert(ids) => {
            let vectors: Vec<f32> = ids.iter().flat_map(|&id| follow_vector(id, k)).collect();
            let payloads: Vec<Payload> = ids
                .iter()
                .map(|_| {
                    let mut p = Payload::new();
                    p.insert("v".into(), Value::Int(k as i64));
                    p
                })
                .collect();
            c.upsert(&ids, &vectors, &payloads)
        }
        FollowOp::Delete(ids) => c.delete(&ids).map(drop),
    }
}
