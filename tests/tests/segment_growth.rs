//! Segments that grow over a bulk load ("link once"): once the appendable segment of an HNSW
//! collection fills, the next one grows on the segment being sealed (its rows and graph come
//! first), and its seal writes them again with the new rows, replacing that segment. A load
//! therefore ends as one segment whose graph linked every row once, without a merge. Checked
//! against an in-memory model: contents, exact answers (a beam as wide as the collection),
//! deletions and rewrites of rows in the segment grown on and in the one being sealed, a
//! reopen, and the cap on a grown segment's size.

use std::time::Duration;

use trovedb::testing::hold_seals;
use trovedb::{
    Collection, CollectionConfig, CompactionPolicy, Database, DbOptions, IndexConfig, Metric,
    SearchParams,
};
use trovedb_tests::{assert_exact, del_modelled, distance, oracle, put_modelled, Model, Rng};

const DIM: usize = 8;

/// Contents equal the model: every id ever used, the count, a filter, and the answers of a
/// beam wider than the collection (with and without the filter): exact for a flat collection;
/// for HNSW every hit is a live row at its exact distance, and at most 5 of the 110 true
/// top-10 rows are missed. Not exact: pruning can leave a rare node of a graph without a link
/// to it, which no beam reaches (with exactness asserted, this file failed 5 of 20 runs of
/// main at 7593560, always at a few such rows).
fn check(c: &Collection, model: &Model, rng: &mut Rng, max_id: u64) {
    assert_eq!(c.len(), model.len());
    for id in 0..max_id {
        let got = c.get(id).unwrap().map(|p| (p.vector, p.payload));
        assert_eq!(got.as_ref(), model.get(&id), "id {id}");
    }
    let flat = matches!(c.config().index, IndexConfig::Flat);
    let wide = if flat {
        SearchParams::default()
    } else {
        SearchParams::default().with_ef(4096)
    };
    let mut missed = 0;
    let mut answers = |model: &Model, q: &[f32], hits: &[trovedb::Hit]| {
        if flat {
            assert_exact(Metric::L2, model, q, hits, 10);
        } else {
            missed += misses(model, q, hits);
        }
    };
    for _ in 0..10 {
        let q = rng.vector(DIM);
        let hits = c.search(&q, 10, &wide).unwrap();
        answers(model, &q, &hits);
    }
    let even = trovedb::Filter::from_json_str(r#"{"even": true}"#).unwrap();
    let want = model.keys().filter(|id| *id % 2 == 0).count();
    assert_eq!(c.count(&even).unwrap(), want);
    let even_model: Model = model
        .iter()
        .filter(|(id, _)| *id % 2 == 0)
        .map(|(id, v)| (*id, v.clone()))
        .collect();
    let q = rng.vector(DIM);
    let filtered = wide.with_filter(even);
    let hits = c.search(&q, 10, &filtered).unwrap();
    answers(&even_model, &q, &hits);
    assert!(missed <= 5, "{missed} of the 110 true top-10 rows missed");
}

/// How many of the oracle's top 10 for `q` the hits miss; each hit must be a distinct row
/// of `model` at its exact distance, in order.
fn misses(model: &Model, q: &[f32], hits: &[trovedb::Hit]) -> usize {
    let want = oracle(Metric::L2, model, q, 10);
    assert_eq!(hits.len(), want.len(), "result count");
    let mut seen = std::collections::HashSet::new();
    let mut last = f64::NEG_INFINITY;
    for h in hits {
        assert!(seen.insert(h.id), "duplicate id {}", h.id);
        let (v, _) = model
            .get(&h.id)
            .unwrap_or_else(|| panic!("id {} returned but not in the model", h.id));
        let d = distance(Metric::L2, q, v);
        assert!(
            (f64::from(h.distance) - d).abs() <= 1e-4 * d.max(1.0),
            "id {}",
            h.id
        );
        assert!(d >= last - 1e-6, "out of order at id {}", h.id);
        last = d;
    }
    let kth = want.last().map_or(0.0, |w| w.1);
    let found = hits
        .iter()
        .filter(|h| f64::from(h.distance) <= kth + 1e-4 * kth.max(1.0))
        .count();
    want.len() - found.min(want.len())
}

fn open(dir: &std::path::Path, policy: CompactionPolicy) -> Database {
    Database::open(
        dir,
        DbOptions::default()
            .seal_threshold_rows(100)
            .compaction(policy),
    )
    .unwrap()
}

/// Nothing happens on its own during a test: no quiet merge, no idle seal.
fn patient() -> CompactionPolicy {
    CompactionPolicy::default()
        .quiet(Duration::from_secs(3600))
        .seal_idle_after(Duration::from_secs(7200))
        .max_segment_rows(1_000_000)
}

fn hnsw() -> CollectionConfig {
    CollectionConfig {
        index: IndexConfig::hnsw(),
        ..CollectionConfig::new(DIM, Metric::L2)
    }
}

/// A fresh database with a patient policy and one empty HNSW collection "c", an empty model
/// and a generator seeded with `seed`.
fn hnsw_collection(
    seed: u64,
) -> (
    tempfile::TempDir,
    Database,
    std::sync::Arc<Collection>,
    Model,
    Rng,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), patient());
    let c = db.create_collection("c", &hnsw()).unwrap();
    (dir, db, c, Model::new(), Rng::new(seed))
}

#[test]
fn a_bulk_load_grows_one_segment_without_a_merge() {
    let (dir, db, c, mut model, mut rng) = hnsw_collection(41);
    for b in 0..30u64 {
        let ids: Vec<u64> = (b * 50..b * 50 + 50).collect();
        put_modelled(&c, &mut model, &mut rng, &ids, DIM);
        if b % 7 == 3 {
            check(&c, &model, &mut rng, 1500);
        }
        // Fifteen seals so far at most, and never more than one segment: each seal
        // replaced the one before it.
        let st = c.stats().unwrap();
        assert!(st.segments.len() <= 1, "after batch {b}: {st:?}");
    }
    ends_as_one_grown_segment(dir.path(), &db, c, &model, &mut rng, 1500, 0);
}

/// A growing segment takes as many rows of its own as the segment it grows on holds, at
/// least the seal threshold (100) and at most twice it, before it is frozen: a load of 1,000
/// rows in batches of 50 freezes at 100, 200, 400, 600, 800 and 1,000 rows (each seal writes
/// every row again, so freezing every 100 rows wrote 5,500 rows; this writes 3,100), never
/// holds more than 200 unsealed rows of its own, and ends as one segment equal to the model.
#[test]
fn a_growing_segment_takes_as_many_rows_as_its_base_up_to_twice_the_threshold() {
    let (dir, db, c, mut model, mut rng) = hnsw_collection(45);
    let mut frozen_at = Vec::new();
    for b in 0..20u64 {
        let ids: Vec<u64> = (b * 50..b * 50 + 50).collect();
        put_modelled(&c, &mut model, &mut rng, &ids, DIM);
        let st = c.stats().unwrap();
        assert!(st.appendable_rows <= 200, "after batch {b}: {st:?}");
        if st.appendable_rows == 0 {
            frozen_at.push(ids[49] + 1);
        }
    }
    assert_eq!(frozen_at, [100, 200, 400, 600, 800, 1000]);
    ends_as_one_grown_segment(dir.path(), &db, c, &model, &mut rng, 1000, 0);
}

/// After `wait_idle`, the load of `rows` rows (`deleted` of them deleted) is one grown
/// segment, not merged, equal to the model, and still so after a reopen.
fn ends_as_one_grown_segment(
    dir: &std::path::Path,
    db: &Database,
    c: std::sync::Arc<Collection>,
    model: &Model,
    rng: &mut Rng,
    rows: u64,
    deleted: usize,
) {
    c.wait_idle().unwrap();
    let st = c.stats().unwrap();
    let got: Vec<(usize, usize)> = st.segments.iter().map(|s| (s.rows, s.deleted)).collect();
    assert_eq!(got, [(rows as usize, deleted)], "{st:?}");
    assert_eq!(st.appendable_rows, 0, "{st:?}");
    assert_eq!(st.background.merges_done, 0, "grown, not merged: {st:?}");
    check(&c, model, rng, rows);
    c.verify().unwrap();
    drop(c);
    db.close().unwrap();
    let db = open(dir, patient());
    let c = db.collection("c").unwrap();
    check(&c, model, rng, rows);
}

/// Batches much smaller than a seal: the writer copies a growing segment for its successor a
/// share at a time while batches link (several batches per segment, the base's rows spread
/// over them), with rows of the segments grown on deleted meanwhile; the load still ends as
/// one segment equal to the model, before and after a reopen.
#[test]
fn a_load_in_small_batches_grows_one_segment() {
    let (dir, db, c, mut model, mut rng) = hnsw_collection(43);
    let mut next = 0u64;
    while next < 1200 {
        let ids: Vec<u64> = (next..next + 7).collect();
        put_modelled(&c, &mut model, &mut rng, &ids, DIM);
        next += 7;
        if next.is_multiple_of(140) {
            // A row sealed long ago and one of the segment grown on last (the appendable
            // segment holds at most 200 rows of its own, plus a batch).
            del_modelled(&c, &mut model, &[next / 10, next.saturating_sub(220)]);
            check(&c, &model, &mut rng, next);
            assert!(c.stats().unwrap().segments.len() <= 1);
        }
    }
    // Two rows deleted every 140 rows, all of them sealed rows by the end.
    let deleted = 2 * (next / 140) as usize;
    ends_as_one_grown_segment(dir.path(), &db, c, &model, &mut rng, next, deleted);
}

/// A seal threshold and a segment cap as large as they go: the copy a growing segment's
/// successor is built in reserves room for what the segment may still get, and that must
/// neither overflow nor try to reserve it all (found by the fuzz smoke test).
#[test]
fn huge_thresholds_neither_overflow_nor_reserve_absurdly() {
    let dir = tempfile::tempdir().unwrap();
    let policy = patient().max_segment_rows(usize::MAX);
    let options = DbOptions::default()
        .seal_threshold_rows(usize::MAX)
        .compaction(policy);
    let db = Database::open(dir.path(), options).unwrap();
    let c = db.create_collection("c", &hnsw()).unwrap();
    let (mut model, mut rng) = (Model::new(), Rng::new(44));
    for b in 0..4u64 {
        let ids: Vec<u64> = (b * 30..b * 30 + 30).collect();
        put_modelled(&c, &mut model, &mut rng, &ids, DIM);
    }
    check(&c, &model, &mut rng, 120);
    c.flush().unwrap();
    check(&c, &model, &mut rng, 120);
}

/// Rows deleted or rewritten while segments grow: in the segment grown on (sealed), in the
/// frozen one while its seal runs, and in the appendable one (which then seals on its own
/// rows and starts afresh). Deletions land in the grown segment, survive a reopen (the log
/// replays over them) and `wait_idle` converges to few segments.
#[test]
fn deletions_and_rewrites_during_growth_match_the_model() {
    let (dir, db, c, mut model, mut rng) = hnsw_collection(42);
    // 350 rows: segment 1 (rows 0..100) sealed, grown on to 200 rows (frozen once it held as
    // many rows as its base), and the next segment grown on that.
    for b in 0..7u64 {
        let ids: Vec<u64> = (b * 50..b * 50 + 50).collect();
        put_modelled(&c, &mut model, &mut rng, &ids, DIM);
    }
    // Hold the next seal at its start: the segment it seals grows on the one before.
    hold_seals(dir.path(), true);
    let ids: Vec<u64> = (350..400).collect();
    put_modelled(&c, &mut model, &mut rng, &ids, DIM);
    let st = c.stats().unwrap();
    assert!(st.background.sealing, "{st:?}");
    // Deleted and rewritten while the seal is held: rows of the segment grown on (7, 50) and
    // of the frozen segment (210, 360); the rewrites land in the appendable segment.
    del_modelled(&c, &mut model, &[7, 210]);
    put_modelled(&c, &mut model, &mut rng, &[50, 360], DIM);
    check(&c, &model, &mut rng, 500);
    hold_seals(dir.path(), false);
    // The next batches publish that seal; rows of the new appendable segment rewritten
    // before it fills, so it seals on its own rows and the one after starts afresh.
    for b in 8..10u64 {
        let ids: Vec<u64> = (b * 50..b * 50 + 50).collect();
        put_modelled(&c, &mut model, &mut rng, &ids, DIM);
        put_modelled(&c, &mut model, &mut rng, &[b * 50 + 1], DIM);
        del_modelled(&c, &mut model, &[b * 50 + 3, 120 + b]);
        check(&c, &model, &mut rng, 500);
    }
    // Reopened (a close leaves the appendable segment in the log): the log replays over the
    // grown segment.
    drop(c);
    drop(db);
    let db = open(dir.path(), patient());
    let c = db.collection("c").unwrap();
    check(&c, &model, &mut rng, 500);
    let ids: Vec<u64> = (500..620).collect();
    put_modelled(&c, &mut model, &mut rng, &ids, DIM);
    c.wait_idle().unwrap();
    let st = c.stats().unwrap();
    assert!(st.segments.len() <= 2, "{st:?}");
    assert_eq!(st.appendable_rows, 0, "{st:?}");
    check(&c, &model, &mut rng, 620);
    c.verify().unwrap();
    drop(c);
    db.close().unwrap();
    let db = open(dir.path(), patient());
    let c = db.collection("c").unwrap();
    check(&c, &model, &mut rng, 620);
}

/// The memory cap bounds a grown segment (then the next one starts afresh); a flat
/// collection has no graph to grow, and neither does a collection whose background
/// compaction is off: their loads end as one segment per seal.
#[test]
fn growth_stops_at_the_cap_and_needs_a_graph_and_background_work() {
    let load = |config: &CollectionConfig, policy: CompactionPolicy| {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), policy);
        let c = db.create_collection("c", config).unwrap();
        let (mut model, mut rng) = (Model::new(), Rng::new(43));
        for b in 0..10u64 {
            let ids: Vec<u64> = (b * 100..b * 100 + 100).collect();
            put_modelled(&c, &mut model, &mut rng, &ids, DIM);
        }
        // Publish the last seal without a quiet merge (`flush` seals, merges nothing).
        c.flush().unwrap();
        let st = c.stats().unwrap();
        check(&c, &model, &mut rng, 1000);
        let mut rows: Vec<usize> = st.segments.iter().map(|s| s.rows).collect();
        rows.sort_unstable();
        (rows, st.background.merges_done)
    };
    // Capped at 350 rows: segments grow while the next seal fits (100 + 100 + 100), then
    // start afresh.
    let (rows, merges) = load(&hnsw(), patient().max_segment_rows(350));
    assert_eq!(rows, [100, 300, 300, 300], "{rows:?}");
    assert_eq!(merges, 0);
    let (rows, _) = load(
        &CollectionConfig::new(DIM, Metric::L2),
        patient().max_segment_rows(1_000_000),
    );
    assert_eq!(rows, [100; 10], "flat: {rows:?}");
    let (rows, _) = load(&hnsw(), patient().background(false));
    assert_eq!(rows, [100; 10], "background off: {rows:?}");
}
