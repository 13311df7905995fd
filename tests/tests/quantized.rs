//! Quantised collections (sq8 and binary codes, HNSW and flat): recall@10 against a
//! brute-force oracle on real embeddings (cosine) and MNIST (l2) at default settings,
//! filtered search, identical results after reopen, deletions, several segments merged and
//! compacted, damaged code sections refused, and bad parameters refused with nothing
//! changed.

use std::path::{Path, PathBuf};

use trovedb::{
    CollectionConfig, Database, DbOptions, Error, Filter, IndexConfig, Metric, Quantization,
    SearchParams,
};
use trovedb_tests::{read_fvecs, recall_at_10 as recall, repo_root};

/// (dim, base, queries): the shared dataset if present, else the repo slice (if any).
fn dataset(name: &str, fallback: Option<&str>) -> Option<(usize, Vec<f32>, Vec<f32>)> {
    let shared = repo_root().join("../shared/data").join(name);
    let dir = if shared.join("base.fvecs").exists() {
        shared
    } else {
        repo_root().join(fallback?)
    };
    let (dim, base) = read_fvecs(&dir.join("base.fvecs")).unwrap();
    let (_, queries) = read_fvecs(&dir.join("query.fvecs")).unwrap();
    println!("dataset: {} ({} vectors)", dir.display(), base.len() / dim);
    Some((dim, base, queries))
}

fn results(c: &trovedb::Collection, dim: usize, queries: &[f32]) -> Vec<Vec<(u64, f32)>> {
    queries
        .chunks_exact(dim)
        .take(100)
        .map(|q| {
            c.search(q, 10, &SearchParams::default())
                .unwrap()
                .iter()
                .map(|h| (h.id, h.distance))
                .collect()
        })
        .collect()
}

fn tenth(n: usize) -> Vec<trovedb::Payload> {
    (0..n)
        .map(|i| {
            let mut p = trovedb::Payload::new();
            p.insert("tenth".into(), trovedb::Value::Int((i % 10) as i64));
            p.insert("r".into(), trovedb::Value::Int((i % 1000) as i64));
            p
        })
        .collect()
}

/// The sections of the quantised vectors in a segment file, read from its v3 directory
/// as FORMAT.md lays it out: (tag, offset, len).
fn quant_sections(path: &Path) -> Vec<(u16, usize, usize)> {
    let b = std::fs::read(path).unwrap();
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let (dir, sections, indexes) = (u64_at(32), u32_at(48), u32_at(52));
    let slot = (0..indexes)
        .map(|i| dir + 16 * i)
        .find(|&e| b[e + 2] == 17)
        .map(&u16_at)
        .expect("a quantised index in the directory");
    (0..sections)
        .map(|i| dir + 16 * indexes + 32 * i)
        .filter(|&e| u16_at(e) == slot)
        .map(|e| (u16_at(e + 2), u64_at(e + 8), u64_at(e + 16)))
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("collections/c"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// The full check of one index kind and quantisation on one dataset.
fn check(
    index: IndexConfig,
    quantization: Quantization,
    metric: Metric,
    name: &str,
    fallback: Option<&str>,
    want: f64,
) {
    let Some((dim, base, queries)) = dataset(name, fallback) else {
        println!("{name} not present; skipped");
        return;
    };
    let label = format!("{} {} {name}", index_name(&index), quantization.name());
    let n = base.len() / dim;
    let dir = tempfile::tempdir().unwrap();
    let cfg = CollectionConfig {
        index,
        quantization,
        ..CollectionConfig::new(dim, metric)
    };
    let ids: Vec<u64> = (0..n as u64).collect();
    let payloads = tenth(n);
    let before;
    {
        // No background merges: three segments stay three until `compact()`.
        let mut opts = DbOptions::default();
        opts.compaction.background = false;
        let db = Database::open(dir.path(), opts).unwrap();
        let c = db.create_collection("c", &cfg).unwrap();
        // Three segments (sealed by flushes), then merged into one by compaction: every
        // stage is searched on codes and must keep the recall.
        for part in 0..3 {
            let (a, b) = (part * n / 3, (part + 1) * n / 3);
            c.upsert(&ids[a..b], &base[a * dim..b * dim], &payloads[a..b])
                .unwrap();
            c.flush().unwrap();
        }
        c.wait_idle().unwrap();
        let segs = c.stats().unwrap().segments.len();
        assert_eq!(segs, 3);
        let r = recall(
            &c,
            metric,
            dim,
            &base,
            &queries,
            &SearchParams::default(),
            &|_| true,
        );
        println!("{label}: {segs} segments, recall@10 at default settings = {r:.4}");
        assert!(
            r >= want,
            "{label}: recall@10 {r} < {want} over {segs} segments"
        );
        let three_segments = r;
        // The candidates by code are shared by the three segments and re-ranked once: with
        // a shortlist as long as the collection a flat search is exact (brute force), with
        // or without a filter.
        // `rescore * k` covering every row (as far as the limit allows).
        let every_row = n.div_ceil(10).min(trovedb::MAX_RESCORE);
        if matches!(cfg.index, IndexConfig::Flat) {
            let all = SearchParams::default().with_rescore(every_row);
            let half = all
                .clone()
                .with_filter(Filter::from_json_str(r#"{"tenth": {"$lt": 5}}"#).unwrap());
            for (p, keep) in [
                (&all, &(|_: u64| true) as &dyn Fn(u64) -> bool),
                (&half, &|id: u64| id % 10 < 5),
            ] {
                let r = recall(&c, metric, dim, &base, &queries, p, keep);
                println!(
                    "{label}: {segs} segments, rescore {:?}: recall@10 = {r:.4}",
                    p.rescore
                );
                assert!(
                    r >= 0.999,
                    "{label}: wide rescore over {segs} segments: {r}"
                );
            }
        }
        c.compact().unwrap();
        let st = c.stats().unwrap();
        assert_eq!(st.segments.len(), 1);
        let seg = &st.segments[0];
        assert_eq!(seg.quantization, quantization.name());
        let code_bytes = match quantization {
            Quantization::Sq8 { .. } => n * dim,
            _ => n * dim.div_ceil(64) * 8,
        };
        assert!(
            seg.quant_bytes >= code_bytes as u64 && seg.vector_bytes == (n * dim * 4) as u64,
            "{seg:?}"
        );
        let r = recall(
            &c,
            metric,
            dim,
            &base,
            &queries,
            &SearchParams::default(),
            &|_| true,
        );
        println!("{label}: compacted, recall@10 at default settings = {r:.4}");
        assert!(
            r >= want,
            "{label}: recall@10 {r} < {want} after compaction"
        );
        // A flat search re-ranks `rescore * k` candidates whether the rows are in one segment
        // or three (only the codes' ranges differ), so the recall is the same.
        if matches!(cfg.index, IndexConfig::Flat) {
            assert!(
                (r - three_segments).abs() <= 0.01,
                "{label}: three segments {three_segments}, one {r}"
            );
        }
        // A larger rescore never loses recall on this set; rescore over every row is exact.
        let mut wide = SearchParams::default().with_rescore(every_row);
        if matches!(cfg.index, IndexConfig::Hnsw { .. }) {
            wide = wide.with_ef(400);
        }
        let rw = recall(&c, metric, dim, &base, &queries, &wide, &|_| true);
        println!("{label}: rescore {:?}: recall@10 = {rw:.4}", wide.rescore);
        assert!(
            rw >= r - 0.005,
            "{label}: a wider rescore lost recall ({rw} < {r})"
        );

        for (json, keep) in [
            (
                r#"{"tenth": {"$lt": 5}}"#,
                &(|id: u64| id % 10 < 5) as &dyn Fn(u64) -> bool,
            ),
            (r#"{"tenth": 3}"#, &|id: u64| id % 10 == 3),
            (r#"{"r": {"$lt": 10}}"#, &|id: u64| id % 1000 < 10),
        ] {
            let p = SearchParams::default().with_filter(Filter::from_json_str(json).unwrap());
            let r = recall(&c, metric, dim, &base, &queries, &p, keep);
            println!("{label}: filtered {json} recall@10 = {r:.4}");
            assert!(r >= want - 0.02, "{label}: filtered {json} recall@10 {r}");
        }
        before = results(&c, dim, &queries);
        // A batch answers each query as `search` does (on the codes, flat included).
        let nq = before.len();
        let batch = c
            .search_batch(&queries[..nq * dim], 10, &SearchParams::default())
            .unwrap();
        let batch: Vec<Vec<(u64, f32)>> = batch
            .iter()
            .map(|hits| hits.iter().map(|h| (h.id, h.distance)).collect())
            .collect();
        assert_eq!(
            batch, before,
            "{label}: batch results differ from single searches"
        );
    }
    // Reopen: identical results, from the files; delete a third: none returned.
    {
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        let c = db.collection("c").unwrap();
        assert_eq!(c.config().quantization, quantization);
        c.verify().unwrap();
        assert_eq!(
            before,
            results(&c, dim, &queries),
            "{label}: results changed after reopen"
        );
        let gone: Vec<u64> = (0..n as u64).filter(|i| i % 3 == 0).collect();
        c.delete(&gone).unwrap();
        let r = recall(
            &c,
            metric,
            dim,
            &base,
            &queries,
            &SearchParams::default(),
            &|id| id % 3 != 0,
        );
        println!("{label}: recall@10 after deleting a third = {r:.4}");
        assert!(r >= want - 0.03, "{label}: recall after deletes {r}");
    }
}

fn index_name(i: &IndexConfig) -> &'static str {
    match i {
        IndexConfig::Flat => "flat",
        IndexConfig::Hnsw { .. } => "hnsw",
        _ => "other",
    }
}

const SQ8: Quantization = Quantization::Sq8 {
    rescore: trovedb::SQ8_DEFAULT_RESCORE,
};
const BINARY: Quantization = Quantization::Binary {
    rescore: trovedb::BINARY_DEFAULT_RESCORE,
};

#[test]
fn hnsw_sq8_on_text_embeddings() {
    check(
        IndexConfig::hnsw(),
        SQ8,
        Metric::Cosine,
        "text-minilm-dev",
        Some("data/minilm-3k"),
        0.95,
    );
}

#[test]
fn hnsw_binary_on_text_embeddings() {
    check(
        IndexConfig::hnsw(),
        BINARY,
        Metric::Cosine,
        "text-minilm-dev",
        Some("data/minilm-3k"),
        0.90,
    );
}

#[test]
fn flat_sq8_and_binary_on_text_embeddings() {
    check(
        IndexConfig::Flat,
        SQ8,
        Metric::Cosine,
        "text-minilm-dev",
        Some("data/minilm-3k"),
        0.95,
    );
    check(
        IndexConfig::Flat,
        BINARY,
        Metric::Cosine,
        "text-minilm-dev",
        Some("data/minilm-3k"),
        0.90,
    );
}

#[test]
fn hnsw_and_flat_quantised_on_mnist_l2() {
    for index in [IndexConfig::hnsw(), IndexConfig::Flat] {
        check(
            index.clone(),
            SQ8,
            Metric::L2,
            "mnist-784-euclidean-dev",
            None,
            0.95,
        );
        check(
            index,
            BINARY,
            Metric::L2,
            "mnist-784-euclidean-dev",
            None,
            0.90,
        );
    }
}

/// Damage to the codes' meta or parameters is refused when the segment opens; damage to
/// the codes themselves is found by `verify()`, naming the file.
#[test]
fn damaged_code_sections_are_refused() {
    let (dim, base, _) = dataset("text-minilm-dev", Some("data/minilm-3k")).unwrap();
    let n = 2000;
    for quantization in [SQ8, BINARY] {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path(), DbOptions::default()).unwrap();
            let cfg = CollectionConfig {
                index: IndexConfig::hnsw(),
                quantization,
                ..CollectionConfig::new(dim, Metric::Cosine)
            };
            let c = db.create_collection("c", &cfg).unwrap();
            let ids: Vec<u64> = (0..n as u64).collect();
            c.upsert(&ids, &base[..n * dim], &[]).unwrap();
            c.flush().unwrap();
        }
        let seg = segment_files(dir.path()).pop().unwrap();
        let sections = quant_sections(&seg);
        assert_eq!(
            sections.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "meta, parameters, codes, factors"
        );
        let original = std::fs::read(&seg).unwrap();
        for (tag, expect_at_open) in [(1u16, true), (2, true), (3, false), (4, false)] {
            let (_, off, len) = sections.iter().find(|s| s.0 == tag).copied().unwrap();
            let mut b = original.clone();
            b[off + len / 2] ^= 0x10;
            std::fs::write(&seg, &b).unwrap();
            let opened = Database::open(dir.path(), DbOptions::default())
                .and_then(|db| db.collection("c").map(|c| (db, c)));
            match (opened, expect_at_open) {
                (Err(Error::Corruption { file, .. }), true) => {
                    assert_eq!(file, seg, "section {tag}");
                }
                (Ok((_db, c)), false) => match c.verify() {
                    Err(Error::Corruption { file, reason, .. }) => {
                        assert_eq!(file, seg);
                        assert!(reason.contains("checksum"), "{reason}");
                    }
                    other => panic!("section {tag}: verify gave {other:?}"),
                },
                (other, _) => panic!(
                    "{} section {tag}: {:?}",
                    quantization.name(),
                    other.map(|_| ()).err()
                ),
            }
        }
        std::fs::write(&seg, &original).unwrap();
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        db.collection("c").unwrap().verify().unwrap();
    }
}

#[test]
fn bad_quantisation_parameters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    for (index, quantization, field) in [
        (IndexConfig::ivf_pq(), SQ8, "quantization"),
        (IndexConfig::lsh(), BINARY, "quantization"),
        (
            IndexConfig::hnsw(),
            Quantization::Sq8 { rescore: 0 },
            "rescore",
        ),
        (
            IndexConfig::Flat,
            Quantization::Binary { rescore: 100_000 },
            "rescore",
        ),
    ] {
        let cfg = CollectionConfig {
            index,
            quantization,
            ..CollectionConfig::new(8, Metric::L2)
        };
        match db.create_collection("c", &cfg) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, field),
            other => panic!("{cfg:?}: {:?}", other.map(|_| ())),
        }
    }
    assert!(
        db.list_collections().unwrap().is_empty(),
        "nothing was created"
    );
    // `rescore` on a collection without codes, or out of range, is refused.
    let plain = db
        .create_collection("plain", &CollectionConfig::new(2, Metric::L2))
        .unwrap();
    plain.upsert(&[1], &[0.0, 1.0], &[]).unwrap();
    let q = SearchParams::default().with_rescore(2);
    assert!(matches!(
        plain.search(&[0.0, 1.0], 1, &q),
        Err(Error::InvalidArgument { name, .. }) if name == "rescore"
    ));
    let quant = db
        .create_collection(
            "q",
            &CollectionConfig {
                quantization: SQ8,
                ..CollectionConfig::new(2, Metric::L2)
            },
        )
        .unwrap();
    for bad in [0, trovedb::MAX_RESCORE + 1] {
        let q = SearchParams::default().with_rescore(bad);
        assert!(matches!(
            quant.search(&[0.0, 1.0], 1, &q),
            Err(Error::InvalidArgument { name, .. }) if name == "rescore"
        ));
    }
}

/// A query that gives `ef` below `rescore * k` and no `rescore` searches as if it had asked
/// for `rescore` = `max(1, ef / k)` (a cheaper search, not the same one as a wider `ef`);
/// one that gives `rescore`, or no `ef`, keeps the collection's `rescore` (3 for sq8).
#[test]
fn a_narrow_beam_without_rescore_cuts_the_rescore() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let dim = 24;
    let config = CollectionConfig {
        index: IndexConfig::hnsw(),
        quantization: Quantization::parse("sq8").unwrap(),
        ..CollectionConfig::new(dim, Metric::L2)
    };
    let c = db.create_collection("q", &config).unwrap();
    let mut rng = trovedb_tests::Rng::new(23);
    let n = 4000u64;
    let ids: Vec<u64> = (0..n).collect();
    let vectors: Vec<f32> = ids.iter().flat_map(|_| rng.vector(dim)).collect();
    c.upsert(&ids, &vectors, &[]).unwrap();
    c.flush().unwrap();
    assert_eq!(
        c.stats().unwrap().segments.len(),
        1,
        "one sealed, quantised segment"
    );
    let hits = |q: &[f32], k: usize, p: SearchParams| -> Vec<(u64, f32)> {
        c.search(q, k, &p)
            .unwrap()
            .iter()
            .map(|h| (h.id, h.distance))
            .collect()
    };
    let p = SearchParams::default;
    let mut narrower = 0;
    for _ in 0..50 {
        let q = rng.vector(dim);
        for (k, ef, cut) in [
            (10, 10, 1),
            (10, 15, 1),
            (10, 25, 2),
            (10, 64, 3),
            (5, 14, 2),
        ] {
            assert_eq!(
                hits(&q, k, p().with_ef(ef)),
                hits(&q, k, p().with_ef(ef).with_rescore(cut)),
                "k {k} ef {ef}: searched as rescore {cut}"
            );
        }
        // Without `ef` (the collection's 64 < 3 * 30) the rescore is the collection's.
        assert_eq!(hits(&q, 30, p()), hits(&q, 30, p().with_rescore(3)));
        // A given rescore is kept, whatever `ef`.
        let full = hits(&q, 10, p().with_ef(10).with_rescore(3));
        assert_eq!(full, hits(&q, 10, p().with_ef(30)));
        if full != hits(&q, 10, p().with_ef(10)) {
            narrower += 1;
        }
    }
    assert!(
        narrower > 0,
        "ef 10 searched exactly as ef 30 on every query"
    );
}
