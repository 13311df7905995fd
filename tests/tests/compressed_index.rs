//! IVF-PQ and LSH collections on real embeddings: recall@10 against a brute-force oracle at
//! default settings, identical results after reopen, deleted points never returned,
//! filtered search correct, clear errors for bad parameters, and the documented exact
//! fallback for segments too small to train.

use std::path::PathBuf;

use trovedb::{
    CollectionConfig, Database, DbOptions, Error, Filter, IndexConfig, Metric, SearchParams,
};
use trovedb_tests::{exact_top10, read_fvecs, recall_at_10 as recall, repo_root};

/// (dir, dim, base, queries): the shared dataset if present, else the repo slice.
fn dataset(name: &str, fallback: Option<&str>) -> Option<(PathBuf, usize, Vec<f32>, Vec<f32>)> {
    let shared = repo_root().join("../shared/data").join(name);
    let dir = if shared.join("base.fvecs").exists() {
        shared
    } else {
        repo_root().join(fallback?)
    };
    let (dim, base) = read_fvecs(&dir.join("base.fvecs")).unwrap();
    let (_, queries) = read_fvecs(&dir.join("query.fvecs")).unwrap();
    println!("dataset: {} ({} vectors)", dir.display(), base.len() / dim);
    Some((dir, dim, base, queries))
}

fn results(c: &trovedb::Collection, dim: usize, queries: &[f32]) -> Vec<Vec<(u64, f32)>> {
    queries
        .chunks_exact(dim)
        .map(|q| {
            c.search(q, 10, &SearchParams::default())
                .unwrap()
                .iter()
                .map(|h| (h.id, h.distance))
                .collect()
        })
        .collect()
}

/// The full check for one index kind on one dataset.
fn check(index: IndexConfig, metric: Metric, name: &str, fallback: Option<&str>, want_kind: &str) {
    let Some((_, dim, base, queries)) = dataset(name, fallback) else {
        println!("{name} not present; skipped");
        return;
    };
    let n = base.len() / dim;
    let dir = tempfile::tempdir().unwrap();
    let cfg = CollectionConfig {
        index,
        ..CollectionConfig::new(dim, metric)
    };
    let before;
    {
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        let c = db.create_collection("c", &cfg).unwrap();
        let ids: Vec<u64> = (0..n as u64).collect();
        let payloads: Vec<trovedb::Payload> = (0..n)
            .map(|i| {
                let mut p = trovedb::Payload::new();
                p.insert("tenth".into(), trovedb::Value::Int((i % 10) as i64));
                p.insert("r".into(), trovedb::Value::Int((i % 1000) as i64));
                p.insert("q".into(), trovedb::Value::Int((i / 1000) as i64));
                p
            })
            .collect();
        c.upsert(&ids, &base, &payloads).unwrap();
        c.flush().unwrap();
        let st = c.stats().unwrap();
        assert_eq!(st.segments.len(), 1);
        assert_eq!(st.segments[0].index, want_kind, "{:?}", st.segments[0]);
        println!(
            "{want_kind}: {} ({} index bytes)",
            st.segments[0].index_detail, st.segments[0].index_bytes
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
        println!("{want_kind} {name}: recall@10 at default settings = {r:.4}");
        assert!(r >= 0.90, "{want_kind} recall@10 {r} < 0.90");

        // Filters passing 50% (searched through the index, probing widened) and 10%
        // (the planner may scan the passing rows): every result passes, recall holds.
        for (json, keep) in [
            (
                r#"{"tenth": {"$lt": 5}}"#,
                &(|id: u64| id % 10 < 5) as &dyn Fn(u64) -> bool,
            ),
            (r#"{"tenth": 3}"#, &|id: u64| id % 10 == 3),
            // 1% and 0.1%: every selectivity the planner may send to the index or to an
            // exact scan of the passing rows.
            (r#"{"r": {"$lt": 10}}"#, &|id: u64| id % 1000 < 10),
            (r#"{"r": 7}"#, &|id: u64| id % 1000 == 7),
        ] {
            let p = SearchParams::default().with_filter(Filter::from_json_str(json).unwrap());
            let r = recall(&c, metric, dim, &base, &queries, &p, keep);
            println!("{want_kind} {name}: filtered {json} recall@10 = {r:.4}");
            assert!(
                r >= 0.90,
                "{want_kind} filtered {json} recall@10 {r} < 0.90"
            );
        }
        // Fewer than k pass: all of them. None pass: an empty result, not an error.
        let f = Filter::from_json_str(r#"{"r": 7, "q": {"$lt": 5}}"#).unwrap();
        let few: Vec<u64> = (0..n as u64)
            .filter(|i| i % 1000 == 7 && i / 1000 < 5)
            .collect();
        let got = c
            .search(&queries[..dim], 10, &SearchParams::default().with_filter(f))
            .unwrap();
        let mut ids: Vec<u64> = got.iter().map(|h| h.id).collect();
        ids.sort_unstable();
        if few.len() <= 10 {
            assert_eq!(ids, few, "every passing point, when fewer than k pass");
        } else {
            assert!(ids.iter().all(|i| few.contains(i)) && ids.len() == 10);
        }
        let f = Filter::from_json_str(r#"{"r": -1}"#).unwrap();
        assert!(c
            .search(&queries[..dim], 10, &SearchParams::default().with_filter(f))
            .unwrap()
            .is_empty());
        before = results(&c, dim, &queries[..(queries.len() / dim).min(100) * dim]);
    }
    // Reopen: identical results, straight from the files.
    {
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        let c = db.collection("c").unwrap();
        c.verify().unwrap();
        let after = results(&c, dim, &queries[..(queries.len() / dim).min(100) * dim]);
        assert_eq!(before, after, "results changed after reopen");
        // Delete a third: none of them is returned, recall over the survivors holds.
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
        println!("{want_kind} {name}: recall@10 after deleting a third = {r:.4}");
        assert!(r >= 0.85, "{want_kind} recall after deletes {r}");
    }
}

#[test]
fn ivf_pq_on_real_embeddings() {
    check(
        IndexConfig::ivf_pq(),
        Metric::Cosine,
        "text-minilm-dev",
        Some("data/minilm-3k"),
        "ivf_pq",
    );
}

#[test]
fn ivf_pq_on_mnist_l2() {
    check(
        IndexConfig::ivf_pq(),
        Metric::L2,
        "mnist-784-euclidean-dev",
        None,
        "ivf_pq",
    );
}

#[test]
fn lsh_on_real_embeddings() {
    check(
        IndexConfig::lsh(),
        Metric::Cosine,
        "text-minilm-dev",
        Some("data/minilm-3k"),
        "lsh",
    );
}

#[test]
fn lsh_on_mnist_l2() {
    check(
        IndexConfig::lsh(),
        Metric::L2,
        "mnist-784-euclidean-dev",
        None,
        "lsh",
    );
}

#[test]
fn bad_parameters_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let p = |k: &str, v: f64| vec![(k.to_owned(), v)];
    // pq_m must divide dim.
    let cfg = CollectionConfig {
        index: IndexConfig::from_name("ivf_pq", &p("pq_m", 7.0)).unwrap(),
        ..CollectionConfig::new(384, Metric::Cosine)
    };
    let e = db.create_collection("a", &cfg).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("pq_m"),
        "{e}"
    );
    assert!(
        db.list_collections().unwrap().is_empty(),
        "a refused collection was created"
    );
    for (kind, k, v) in [
        ("ivf_pq", "nprobe", 0.0),
        ("ivf_pq", "bogus", 1.0),
        ("lsh", "bits", 65.0),
        ("lsh", "tables", 0.0),
        ("ivf_pq", "nlist", 1.5),
    ] {
        let e = IndexConfig::from_name(kind, &p(k, v)).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. }),
            "{kind} {k}={v}: {e}"
        );
    }
    // Knobs of another index kind, and zero, are refused per query.
    let c = db
        .create_collection(
            "ivf",
            &CollectionConfig {
                index: IndexConfig::ivf_pq(),
                ..CollectionConfig::new(4, Metric::L2)
            },
        )
        .unwrap();
    c.upsert(&[1], &[1.0, 2.0, 3.0, 4.0], &[]).unwrap();
    for params in [
        SearchParams::default().with_ef(10),
        SearchParams::default().with_probes(3),
        SearchParams::default().with_nprobe(0),
    ] {
        let e = c.search(&[1.0; 4], 1, &params).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
    assert_eq!(
        c.search(
            &[1.0; 4],
            1,
            &SearchParams::default().with_nprobe(3).with_refine(2)
        )
        .unwrap()
        .len(),
        1
    );
}

#[test]
fn small_segments_fall_back_to_exact_search() {
    // 600 points: too few to train; the segment is stored without an index, shows index
    // "flat" in stats, and search is exact.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let mut rng = trovedb_tests::Rng::new(5);
    for (name, index) in [("ivf", IndexConfig::ivf_pq()), ("lsh", IndexConfig::lsh())] {
        let c = db
            .create_collection(
                name,
                &CollectionConfig {
                    index,
                    ..CollectionConfig::new(16, Metric::L2)
                },
            )
            .unwrap();
        let base: Vec<f32> = (0..600 * 16).map(|_| rng.f32()).collect();
        let ids: Vec<u64> = (0..600).collect();
        c.upsert(&ids, &base, &[]).unwrap();
        c.flush().unwrap();
        let st = c.stats().unwrap();
        assert_eq!(st.segments[0].index, "flat");
        let q: Vec<f32> = (0..16).map(|_| rng.f32()).collect();
        let got: Vec<u64> = c
            .search(&q, 10, &SearchParams::default())
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(got, exact_top10(Metric::L2, 16, &base, &q, &|_| true));
    }
}
