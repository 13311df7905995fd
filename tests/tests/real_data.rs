//! Exact search on real sentence embeddings (the `data/minilm-3k` slice shipped in the
//! repository): flat search equals a brute-force f64 oracle for every query, before and
//! after sealing and reopening.

use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
use trovedb_tests::{assert_exact, read_fvecs, repo_root, Model};

#[test]
fn flat_is_exact_on_minilm_before_and_after_reopen() {
    let data = repo_root().join("data/minilm-3k");
    let (dim, base) = read_fvecs(&data.join("base.fvecs")).unwrap();
    let (qdim, queries) = read_fvecs(&data.join("query.fvecs")).unwrap();
    assert_eq!((dim, qdim), (384, 384));
    let n = base.len() / dim;
    let ids: Vec<u64> = (0..n as u64).collect();
    let model: Model = ids
        .iter()
        .map(|i| {
            let v = trovedb_tests::normalized(&base[*i as usize * dim..(*i as usize + 1) * dim]);
            (*i, (v, trovedb::Payload::new()))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let check = |c: &trovedb::Collection| {
        for q in queries.chunks(dim) {
            let hits = c.search(q, 10, &SearchParams::default()).unwrap();
            assert_exact(Metric::Cosine, &model, q, &hits, 10);
        }
    };
    {
        // Merges off: the point is an exact search over several segments.
        let opts = DbOptions::default()
            .seal_threshold_rows(1000)
            .compaction(trovedb::CompactionPolicy::off());
        let db = Database::open(dir.path(), opts).unwrap();
        let c = db
            .create_collection("minilm", &CollectionConfig::new(dim, Metric::Cosine))
            .unwrap();
        for chunk in 0..3 {
            let r = chunk * 1000..(chunk + 1) * 1000;
            c.upsert(&ids[r.clone()], &base[r.start * dim..r.end * dim], &[])
                .unwrap();
        }
        c.wait_idle().unwrap();
        assert_eq!(c.stats().unwrap().segments.len(), 3);
        check(&c);
    }
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    check(&db.collection("minilm").unwrap());
}
