//! `compact()`: space is given back, results equal brute force over the survivors, searches
//! running in other threads during compaction never error or miss a point, and the merged
//! collection survives a reopen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use trovedb::{
    CollectionConfig, CompactionPolicy, Database, DbOptions, IndexConfig, Metric, Payload,
    SearchParams, Value,
};
use trovedb_tests::{assert_exact, put_modelled, Model, Rng};

/// `n` modelled rows (ids `0..n`, see `put_modelled`) upserted in batches of 1,000.
fn fill(c: &trovedb::Collection, n: u64, dim: usize, seed: u64) -> Model {
    let mut rng = Rng::new(seed);
    let mut model = Model::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        put_modelled(c, &mut model, &mut rng, chunk, dim);
    }
    model
}

#[test]
fn compact_after_deleting_half_gives_back_space_and_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 32;
    // Background merging off: this test is about compact() itself.
    let opts = DbOptions::default()
        .seal_threshold_rows(2500)
        .compaction(CompactionPolicy::off());
    let db = Database::open(dir.path(), opts).unwrap();
    let c = db
        .create_collection("c", &CollectionConfig::new(dim, Metric::L2))
        .unwrap();
    let mut model = fill(&c, 10_000, dim, 1);
    c.flush().unwrap();
    let gone: Vec<u64> = (0..10_000).filter(|i| i % 2 == 0).collect();
    assert_eq!(c.delete(&gone).unwrap(), 5000);
    for id in &gone {
        model.remove(id);
    }
    c.flush().unwrap();
    let before = c.stats().unwrap();
    assert!(before.segments.len() >= 4);
    assert_eq!(c.compact().unwrap(), 5000);
    let after = c.stats().unwrap();
    println!(
        "compaction: {} -> {} bytes on disk, {} -> {} segments",
        before.bytes_on_disk,
        after.bytes_on_disk,
        before.segments.len(),
        after.segments.len()
    );
    assert_eq!(after.segments.len(), 1);
    assert_eq!(after.deleted, 0);
    assert!(
        (after.bytes_on_disk as f64) <= 0.6 * before.bytes_on_disk as f64,
        "bytes on disk dropped by less than 40%"
    );
    let mut rng = Rng::new(9);
    let check = |c: &trovedb::Collection, rng: &mut Rng| {
        assert_eq!(c.len(), model.len());
        for _ in 0..20 {
            let q = rng.vector(dim);
            let hits = c
                .search(&q, 10, &SearchParams::default().with_payload(true))
                .unwrap();
            assert_exact(Metric::L2, &model, &q, &hits, 10);
        }
        for id in [1u64, 2, 9_999] {
            assert_eq!(c.get(id).unwrap().is_some(), model.contains_key(&id));
        }
    };
    check(&c, &mut rng);
    // Nothing left to do: a second compaction is a no-op.
    assert_eq!(c.compact().unwrap(), 0);
    db.close().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let c = db.collection("c").unwrap();
    c.verify().unwrap();
    check(&c, &mut rng);
    // No file of the old segments is left behind.
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("collections/c"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "seg" || x == "del"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

#[test]
fn searches_during_compaction_never_error_or_miss() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    // Background merges off: a quiet-period merge of the worn segment would otherwise drop
    // the deleted rows before `compact()` does.
    let opts = DbOptions::default()
        .seal_threshold_rows(1500)
        .compaction(CompactionPolicy::off());
    let db = Database::open(dir.path(), opts).unwrap();
    let cfg = CollectionConfig {
        index: IndexConfig::hnsw(),
        ..CollectionConfig::new(dim, Metric::L2)
    };
    let c = db.create_collection("c", &cfg).unwrap();
    let model = fill(&c, 6000, dim, 3);
    // Delete ids >= 5000 so compaction has work; the searched ids stay.
    let gone: Vec<u64> = (5000..6000).collect();
    c.delete(&gone).unwrap();
    c.flush().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let searches: Vec<_> = (0..2)
        .map(|t| {
            let c = c.clone();
            let stop = Arc::clone(&stop);
            let model = model.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut id = t;
                while !stop.load(Ordering::Acquire) || n < 50 {
                    // The point's own vector with a filter on its id finds exactly it, before,
                    // during and after the switch to the merged segment; an unfiltered graph
                    // search never errors.
                    let v = &model[&id].0;
                    let f = trovedb::Filter::from_json_str(&format!(r#"{{"id": {id}}}"#)).unwrap();
                    let hits = c
                        .search(v, 3, &SearchParams::default().with_filter(f))
                        .unwrap();
                    assert_eq!(hits.len(), 1, "point {id}: {hits:?}");
                    assert_eq!(hits[0].id, id, "point {id} missed during compaction");
                    let hits = c
                        .search(v, 5, &SearchParams::default().with_ef(64))
                        .unwrap();
                    assert_eq!(hits.len(), 5);
                    assert!(
                        hits.iter().all(|h| h.id < 5000),
                        "a deleted point was returned"
                    );
                    n += 1;
                    id = (id + 7) % 5000;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(c.compact().unwrap(), 1000);
    stop.store(true, Ordering::Release);
    let total: u64 = searches.into_iter().map(|h| h.join().unwrap()).sum();
    println!("{total} searches ran during compaction");
    assert_eq!(c.len(), 5000);
}

#[test]
fn background_seal_keeps_frozen_rows_searchable_and_deletable() {
    // An ivf_pq collection (training takes a while) sealing every 3,000 rows: the writer that
    // fills the segment returns at once; while the build runs, the frozen rows are found,
    // deleted and replaced, and everything holds after the publication and a reopen.
    let dir = tempfile::tempdir().unwrap();
    let dim = 32;
    let opts = || DbOptions::default().seal_threshold_rows(3000);
    let cfg = CollectionConfig {
        index: IndexConfig::ivf_pq(),
        ..CollectionConfig::new(dim, Metric::L2)
    };
    let db = Database::open(dir.path(), opts()).unwrap();
    let c = db.create_collection("c", &cfg).unwrap();
    let mut model = fill(&c, 3000, dim, 5); // the 3rd batch fills the segment: frozen now
                                            // During the build: the frozen rows answer get and filtered search; delete and replace.
    for id in [0u64, 1500, 2999] {
        let f = trovedb::Filter::from_json_str(&format!(r#"{{"id": {id}}}"#)).unwrap();
        let hits = c
            .search(&model[&id].0, 1, &SearchParams::default().with_filter(f))
            .unwrap();
        assert_eq!(hits[0].id, id);
    }
    c.delete(&[10, 20]).unwrap();
    model.remove(&10);
    model.remove(&20);
    let mut rng = Rng::new(99);
    let v = rng.vector(dim);
    let mut p = Payload::new();
    p.insert("id".into(), Value::Int(30));
    c.upsert(&[30], &v, &[p.clone()]).unwrap();
    model.insert(30, (v, p));
    let check = |c: &trovedb::Collection| {
        assert_eq!(c.len(), model.len());
        for id in [10u64, 20] {
            assert!(c.get(id).unwrap().is_none(), "deleted id {id} came back");
        }
        assert_eq!(c.get(30).unwrap().unwrap().vector, model[&30].0);
        let mut rng = Rng::new(7);
        for _ in 0..5 {
            let q = rng.vector(dim);
            let exact = trovedb::SearchParams::default()
                .with_nprobe(10_000)
                .with_refine(1000);
            let hits = c.search(&q, 10, &exact).unwrap();
            assert!(hits.iter().all(|h| model.contains_key(&h.id)));
        }
    };
    check(&c);
    // Once the build is published: the ivf_pq segment with its deletions mapped, and the
    // appendable segment (the new 30) sealed by `wait_idle`; one row is too few to be worth
    // rewriting the big segment for (the quiet merge's `idle_ratio`).
    c.wait_idle().unwrap();
    let st = c.stats().unwrap();
    assert_eq!(st.segments.len(), 2, "{st:?}");
    assert_eq!(st.appendable_rows, 0, "{st:?}");
    assert_eq!(st.segments[0].index, "ivf_pq");
    assert_eq!(st.segments[0].deleted, 3, "ids 10, 20 and the old 30");
    assert_eq!((st.segments[1].rows, st.segments[1].deleted), (1, 0));
    check(&c);
    db.close().unwrap();
    let db = Database::open(dir.path(), opts()).unwrap();
    check(&db.collection("c").unwrap());
}
