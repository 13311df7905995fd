//! Batch exact search (matrix products re-ranked exactly) returns what one-at-a-time search
//! returns — the same ids and the same distances — and what brute force says, over several
//! segments with deleted rows, for every metric; duplicate and near-duplicate rows (ties the
//! products' rounding cannot order) go through the exact fallback.

use trovedb::{
    CollectionConfig, CompactionPolicy, Database, DbOptions, Metric, Payload, SearchParams,
};
use trovedb_tests::{assert_exact, Model, Rng};

#[test]
fn batch_exact_search_equals_single_queries_and_brute_force() {
    let dim = 24;
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let dir = tempfile::tempdir().unwrap();
        // Merges off: three sealed segments plus the appendable one.
        let opts = DbOptions::default()
            .seal_threshold_rows(700)
            .compaction(CompactionPolicy::off());
        let db = Database::open(dir.path(), opts).unwrap();
        let c = db
            .create_collection("c", &CollectionConfig::new(dim, metric))
            .unwrap();
        let mut rng = Rng::new(41);
        let mut model = Model::new();
        let mut queries = Vec::new();
        for b in 0..25u64 {
            let mut vectors = Vec::new();
            let ids: Vec<u64> = (b * 100..b * 100 + 100).collect();
            for id in &ids {
                let v: Vec<f32> = match id % 10 {
                    // Exact duplicates of row 0 (ties broken by id) and near-duplicates of
                    // row 1 (closer together than the products' rounding).
                    3 => model
                        .get(&0)
                        .map_or_else(|| rng.vector(dim), |(v, _)| v.clone()),
                    7 => model.get(&1).map_or_else(
                        || rng.vector(dim),
                        |(v, _)| v.iter().map(|x| x * (1.0 + 1e-7 * (*id as f32))).collect(),
                    ),
                    _ => rng.vector(dim),
                };
                vectors.extend_from_slice(&v);
            }
            c.upsert(&ids, &vectors, &[]).unwrap();
            for (id, v) in ids.iter().zip(vectors.chunks(dim)) {
                let stored = c.get(*id).unwrap().unwrap().vector;
                assert_eq!(stored.len(), v.len());
                model.insert(*id, (stored, Payload::new()));
            }
        }
        let gone: Vec<u64> = (0..2500).filter(|i| i % 13 == 5).collect();
        c.delete(&gone).unwrap();
        for id in &gone {
            model.remove(id);
        }
        c.wait_idle().unwrap();
        assert!(c.stats().unwrap().segments.len() >= 3);
        // 200 queries: random ones, stored rows (distance 0), and the duplicated rows.
        for i in 0..200u64 {
            let q = match i % 4 {
                0 => model[&0].0.clone(),
                1 => model
                    .get(&(i * 7 % 2500))
                    .map_or_else(|| rng.vector(dim), |(v, _)| v.clone()),
                _ => rng.vector(dim),
            };
            queries.extend_from_slice(&q);
        }
        let p = SearchParams::default();
        for k in [1, 10, 40] {
            let batch = c.search_batch(&queries, k, &p).unwrap();
            assert_eq!(batch.len(), 200);
            for (i, q) in queries.chunks(dim).enumerate() {
                let one = c.search(q, k, &p).unwrap();
                assert_eq!(batch[i], one, "{metric:?} k={k} query {i}");
                assert_exact(metric, &model, q, &batch[i], k);
            }
        }
    }
}
