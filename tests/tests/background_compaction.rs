//! The size-tiered background compaction policy: small segments are merged and worn ones
//! rewritten while writes and searches go on; rows deleted or rewritten while a merge runs
//! stay deleted (also across a reopen, and when a seal persists deletions meanwhile);
//! switched off, nothing is merged. A merge policy of the application's is followed, and one
//! that answers nonsense changes nothing.

use std::time::{Duration, Instant};

use trovedb::testing::{hold_merges, hold_seals};
use trovedb::{
    Collection, CollectionConfig, CompactionPolicy, Database, DbOptions, IndexConfig, MergePolicy,
    Metric, Payload, SearchParams, SegmentSizes,
};
use trovedb_tests::{assert_exact, del_modelled, put_modelled, Model, Rng};

const DIM: usize = 8;

fn put(c: &Collection, model: &mut Model, rng: &mut Rng, ids: &[u64]) {
    put_modelled(c, model, rng, ids, DIM);
}

fn del(c: &Collection, model: &mut Model, ids: &[u64]) {
    del_modelled(c, model, ids);
}

/// Contents equal the model (get of every id ever used, count, exact search, a filter).
fn check(c: &Collection, model: &Model, rng: &mut Rng, max_id: u64) {
    assert_eq!(c.len(), model.len());
    for id in 0..max_id {
        let got = c.get(id).unwrap().map(|p| (p.vector, p.payload));
        assert_eq!(got.as_ref(), model.get(&id), "id {id}");
    }
    for _ in 0..10 {
        let q = rng.vector(DIM);
        let hits = c.search(&q, 10, &SearchParams::default()).unwrap();
        assert_exact(Metric::L2, model, &q, &hits, 10);
    }
    let even = trovedb::Filter::from_json_str(r#"{"even": true}"#).unwrap();
    let want = model.keys().filter(|id| *id % 2 == 0).count();
    assert_eq!(c.count(&even).unwrap(), want);
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

#[test]
fn tiers_of_small_segments_are_merged_in_the_background() {
    for background in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        // Tiers all the way up (the default cap, twice the seal threshold, stops at 200).
        let policy = CompactionPolicy::default()
            .background(background)
            .max_merged_rows(1_000_000);
        let db = open(dir.path(), policy);
        let c = db
            .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
            .unwrap();
        let (mut model, mut rng) = (Model::new(), Rng::new(7));
        // 32 flushes of 50 rows: 32 small segments without merging.
        for b in 0..32u64 {
            let ids: Vec<u64> = (b * 50..b * 50 + 50).collect();
            put(&c, &mut model, &mut rng, &ids);
            if b % 3 == 0 {
                del(&c, &mut model, &[b * 50 + 1, b * 25]);
            }
            c.flush().unwrap();
            if b % 8 == 0 {
                check(&c, &model, &mut rng, 1600);
            }
        }
        c.wait_idle().unwrap();
        let st = c.stats().unwrap();
        if background {
            assert!(st.background.merges_done >= 4, "{st:?}");
            assert!(st.segments.len() <= 6, "tiers merged: {st:?}");
            assert!(st.background.merging.is_empty() && !st.background.sealing);
        } else {
            assert_eq!(st.background.merges_done, 0);
            assert_eq!(st.segments.len(), 32);
        }
        check(&c, &model, &mut rng, 1600);
        drop(c);
        db.close().unwrap();
        let db = open(dir.path(), policy);
        let c = db.collection("c").unwrap();
        check(&c, &model, &mut rng, 1600);
        c.verify().unwrap();
    }
}

#[test]
fn a_worn_segment_is_rewritten_without_its_deleted_rows() {
    let dir = tempfile::tempdir().unwrap();
    // No tier merges (they would need 50 segments): only the deleted fraction acts.
    let policy = CompactionPolicy::default()
        .min_segments(50)
        .max_deleted_fraction(0.3);
    let db = open(dir.path(), policy);
    // Flat, so that every search can be checked exactly (HNSW rewrites: see below).
    let c = db
        .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    let (mut model, mut rng) = (Model::new(), Rng::new(8));
    let ids: Vec<u64> = (0..2000).collect();
    put(&c, &mut model, &mut rng, &ids);
    c.flush().unwrap();
    c.wait_idle().unwrap();
    let before = c.stats().unwrap();
    // 25% deleted: below the threshold, nothing happens.
    let quarter: Vec<u64> = (0..2000).filter(|i| i % 4 == 0).collect();
    del(&c, &mut model, &quarter);
    c.wait_idle().unwrap();
    assert_eq!(c.stats().unwrap().background.merges_done, 0);
    // 37.5%: rewritten.
    let eighth: Vec<u64> = (0..2000).filter(|i| i % 8 == 1).collect();
    del(&c, &mut model, &eighth);
    c.wait_idle().unwrap();
    let after = c.stats().unwrap();
    assert_eq!(after.background.merges_done, 1, "{after:?}");
    let rows: usize = after.segments.iter().map(|s| s.rows).sum();
    assert_eq!(rows, 1250, "{after:?}");
    assert_eq!(after.deleted, 0);
    assert!(
        after.bytes_on_disk < before.bytes_on_disk * 3 / 4,
        "{} -> {}",
        before.bytes_on_disk,
        after.bytes_on_disk
    );
    check(&c, &model, &mut rng, 2000);
    drop(c);
    db.close().unwrap();
    let db = open(dir.path(), policy);
    check(&db.collection("c").unwrap(), &model, &mut rng, 2000);
}

/// Hold a merge after it has chosen its inputs; delete and rewrite rows of those inputs
/// (and, in one variant, seal so that the deletions are persisted and checkpointed before
/// the merge publishes); release. The merged segment must carry those deletions, in memory
/// and after a reopen.
#[test]
fn rows_deleted_during_a_merge_stay_deleted() {
    for seal_meanwhile in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let policy = CompactionPolicy::default()
            .min_segments(4)
            .max_merged_rows(1_000_000);
        let db = open(dir.path(), policy);
        let c = db
            .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
            .unwrap();
        let (mut model, mut rng) = (Model::new(), Rng::new(9));
        hold_merges(dir.path(), true);
        for b in 0..4u64 {
            let ids: Vec<u64> = (b * 60..b * 60 + 60).collect();
            put(&c, &mut model, &mut rng, &ids);
            c.flush().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let merging = loop {
            let st = c.stats().unwrap();
            if !st.background.merging.is_empty() {
                break st.background.merging;
            }
            assert!(Instant::now() < deadline, "no merge started: {st:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(merging.len(), 4);
        // While the merge is held: delete rows of every input, rewrite others.
        del(&c, &mut model, &[0, 61, 122, 183, 239]);
        put(&c, &mut model, &mut rng, &[5, 66, 127]);
        if seal_meanwhile {
            c.flush().unwrap();
        }
        check(&c, &model, &mut rng, 240);
        hold_merges(dir.path(), false);
        c.wait_idle().unwrap();
        let st = c.stats().unwrap();
        assert_eq!(st.background.merges_done, 1, "{st:?}");
        check(&c, &model, &mut rng, 240);
        drop(c);
        db.close().unwrap();
        let db = open(dir.path(), policy);
        let c = db.collection("c").unwrap();
        check(&c, &model, &mut rng, 240);
        // No file outside the manifest is left behind.
        let st = c.stats().unwrap();
        let segs = std::fs::read_dir(dir.path().join("collections/c"))
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().ends_with(".seg")
            })
            .count();
        assert_eq!(segs, st.segments.len());
    }
}

#[test]
fn bad_policies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for p in [
        CompactionPolicy::default().min_segments(1),
        CompactionPolicy::default().max_segments(2),
        CompactionPolicy::default().tier_ratio(1.0),
        CompactionPolicy::default().tier_ratio(f64::NAN),
        CompactionPolicy::default().max_deleted_fraction(0.0),
        CompactionPolicy::default().max_deleted_fraction(1.5),
    ] {
        let e = Database::open(dir.path(), DbOptions::default().compaction(p)).unwrap_err();
        assert!(matches!(e, trovedb::Error::InvalidArgument { .. }), "{e}");
    }
}

/// HNSW merges: with no deleted row in the largest input its graph is reused and the other
/// rows inserted into it (also when rows were deleted from a smaller input); with deletions in
/// the largest input the graph is rebuilt. Either way recall@10 against brute force stays
/// high, and the merged segment has an HNSW index over every live row.
#[test]
fn merged_hnsw_segments_keep_recall() {
    // The input (by its row count) that loses every 50th row before the merge.
    for delete_from in [None, Some(3000u64), Some(2000)] {
        let dir = tempfile::tempdir().unwrap();
        let policy = CompactionPolicy::default().min_segments(4);
        let db = Database::open(
            dir.path(),
            DbOptions::default()
                .seal_threshold_rows(100_000)
                .compaction(policy),
        )
        .unwrap();
        let dim = 16;
        let cfg = CollectionConfig {
            index: IndexConfig::hnsw(),
            ..CollectionConfig::new(dim, Metric::L2)
        };
        let c = db.create_collection("c", &cfg).unwrap();
        let mut rng = Rng::new(10);
        let mut model = Model::new();
        // Four segments in one tier; the first is the largest.
        let mut next = 0u64;
        for rows in [3000u64, 2000, 1800, 1600] {
            let ids: Vec<u64> = (next..next + rows).collect();
            next += rows;
            let mut vectors = Vec::new();
            for id in &ids {
                let v = rng.vector(dim);
                vectors.extend_from_slice(&v);
                model.insert(*id, (v, Payload::new()));
            }
            c.upsert(&ids, &vectors, &[]).unwrap();
            c.flush().unwrap();
            if delete_from == Some(rows) {
                let gone: Vec<u64> = ids.iter().copied().step_by(50).collect();
                c.delete(&gone).unwrap();
                for id in &gone {
                    model.remove(id);
                }
            }
        }
        c.wait_idle().unwrap();
        let st = c.stats().unwrap();
        assert_eq!(st.background.merges_done, 1, "{st:?}");
        assert_eq!(st.segments.len(), 1);
        assert_eq!(st.segments[0].index, "hnsw");
        assert_eq!(st.segments[0].rows, model.len());
        let (mut hit, mut total) = (0usize, 0usize);
        for _ in 0..100 {
            let q = rng.vector(dim);
            let want: Vec<u64> = trovedb_tests::oracle(Metric::L2, &model, &q, 10)
                .into_iter()
                .map(|x| x.0)
                .collect();
            let got = c.search(&q, 10, &SearchParams::default()).unwrap();
            hit += got.iter().filter(|h| want.contains(&h.id)).count();
            total += 10;
        }
        let recall = hit as f64 / total as f64;
        let deleted = delete_from.map_or("none".to_string(), |r| format!("the {r}-row input"));
        println!("merged hnsw (rows deleted from {deleted}): recall@10 {recall:.3}");
        assert!(recall >= 0.95, "recall@10 {recall}");
    }
}

/// Closing while a merge builds stops it (or publishes it, if it finished first): either way
/// the reopened collection has every point and no file outside its manifest.
#[test]
fn close_during_a_merge_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = CompactionPolicy::default()
        .min_segments(4)
        .max_merged_rows(1_000_000);
    let dim = 32;
    let cfg = CollectionConfig {
        index: IndexConfig::hnsw(),
        ..CollectionConfig::new(dim, Metric::L2)
    };
    let mut model = Model::new();
    let mut rng = Rng::new(12);
    {
        let db = open(dir.path(), policy);
        let c = db.create_collection("c", &cfg).unwrap();
        hold_merges(dir.path(), true);
        for b in 0..4u64 {
            let ids: Vec<u64> = (b * 3000..b * 3000 + 3000).collect();
            let mut vectors = Vec::new();
            for id in &ids {
                let v = rng.vector(dim);
                vectors.extend_from_slice(&v);
                model.insert(*id, (v, Payload::new()));
            }
            c.upsert(&ids, &vectors, &[]).unwrap();
            c.flush().unwrap();
        }
        while c.stats().unwrap().background.merging.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        hold_merges(dir.path(), false);
        std::thread::sleep(Duration::from_millis(20));
        drop(c);
        db.close().unwrap();
    }
    // Reopened without merging, so that no new merge writes files during the listing.
    let db = open(dir.path(), CompactionPolicy::off());
    let c = db.collection("c").unwrap();
    assert_eq!(c.len(), model.len());
    for id in (0..12_000).step_by(97) {
        let got = c.get(id).unwrap().unwrap();
        assert_eq!(&got.vector, &model[&id].0);
    }
    let st = c.stats().unwrap();
    println!(
        "close during a merge: {} segments after reopen",
        st.segments.len()
    );
    assert!(st.segments.len() == 1 || st.segments.len() == 4, "{st:?}");
    let files: Vec<String> = std::fs::read_dir(dir.path().join("collections/c"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg" || x == "tmp"))
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(files.len(), st.segments.len(), "{files:?}");
}

/// A merge policy of the application's: everything into one segment once there are three.
#[derive(Debug)]
struct AllAtThree;

impl MergePolicy for AllAtThree {
    fn pick(&self, segments: &[SegmentSizes], _seal: usize) -> Option<Vec<u64>> {
        (segments.len() >= 3).then(|| segments.iter().map(|s| s.id).collect())
    }
}

/// A policy that answers nonsense: unknown ids, repeated ids, one clean segment.
#[derive(Debug)]
struct Nonsense;

impl MergePolicy for Nonsense {
    fn pick(&self, segments: &[SegmentSizes], _seal: usize) -> Option<Vec<u64>> {
        let first = segments.first()?.id;
        Some(vec![first, first, 9_999_999])
    }
}

#[test]
fn a_custom_merge_policy_is_followed_and_a_wrong_one_is_harmless() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions::default()
        .seal_threshold_rows(100)
        .merge_policy(Arc::new(AllAtThree));
    let db = Database::open(dir.path(), opts.clone()).unwrap();
    let c = db
        .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    let (mut model, mut rng) = (Model::new(), Rng::new(17));
    for b in 0..9u64 {
        let ids: Vec<u64> = (b * 40..b * 40 + 40).collect();
        put(&c, &mut model, &mut rng, &ids);
        c.flush().unwrap();
        c.wait_idle().unwrap();
        let segs = c.stats().unwrap().segments.len();
        assert!(segs <= 2, "at most two segments between merges, got {segs}");
    }
    assert!(c.stats().unwrap().background.merges_done >= 3);
    check(&c, &model, &mut rng, 400);
    drop(c);
    db.close().unwrap();

    // The nonsense policy: segments stay as they are, every call succeeds, no merge loops.
    let db = Database::open(
        dir.path(),
        DbOptions::default()
            .seal_threshold_rows(100)
            .merge_policy(Arc::new(Nonsense)),
    )
    .unwrap();
    let c = db.collection("c").unwrap();
    for b in 9..12u64 {
        let ids: Vec<u64> = (b * 40..b * 40 + 40).collect();
        put(&c, &mut model, &mut rng, &ids);
        c.flush().unwrap();
    }
    c.wait_idle().unwrap();
    let st = c.stats().unwrap();
    assert_eq!(st.background.merges_done, 0, "{st:?}");
    assert!(st.background.last_error.is_none());
    check(&c, &model, &mut rng, 480);
}

/// The policy of the convergence tests: seal threshold 100 (from `open`), tier merges
/// capped at twice that (the default), quiet after `quiet`, the appendable segment sealed
/// after twice that.
fn quiet_policy(quiet: Duration) -> CompactionPolicy {
    CompactionPolicy::default()
        .quiet(quiet)
        .seal_idle_after(quiet * 2)
}

/// Poll `stats()` until `done` holds (or panic after 60 s), without any other call.
fn await_stats(
    c: &Collection,
    done: impl Fn(&trovedb::CollectionStats) -> bool,
) -> trovedb::CollectionStats {
    let start = Instant::now();
    loop {
        let st = c.stats().unwrap();
        if done(&st) {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never converged: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bulk_load_left_alone_converges_without_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), quiet_policy(Duration::from_millis(300)));
    let c = db
        .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    let (mut model, mut rng) = (Model::new(), Rng::new(31));
    // A bulk load: 1,630 rows in batches of 50, no pause: sixteen full segments, which the
    // tiers (capped at 200 rows) leave alone, and 30 rows in the appendable segment.
    for b in 0..33u64 {
        let ids: Vec<u64> = (b * 50..(b * 50 + 50).min(1630)).collect();
        put(&c, &mut model, &mut rng, &ids);
    }
    del(&c, &mut model, &[5, 500, 1629]);
    let loaded = c.stats().unwrap();
    assert_eq!(loaded.background.merges_done, 0, "{loaded:?}");
    assert!(loaded.background.converging, "{loaded:?}");
    // Left alone: after the quiet period the sixteen segments merge into one (deleted rows
    // dropped); after `seal_idle_after` the appendable segment is sealed, too small (29 rows,
    // under 1/16 of 1,598) to be worth rewriting the big one for. Then the idle worker ends.
    let st = await_stats(&c, |st| !st.background.converging);
    assert_eq!(st.appendable_rows, 0, "{st:?}");
    let rows: Vec<(usize, usize)> = st.segments.iter().map(|s| (s.rows, s.deleted)).collect();
    assert_eq!(rows, [(1598, 0), (29, 0)], "{st:?}");
    assert!(st.background.merges_done >= 1);
    check(&c, &model, &mut rng, 1700);
    // Converged is stable: nothing more happens, and a reopen sees the same.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(c.stats().unwrap().segments, st.segments);
    drop(c);
    db.close().unwrap();
    let db = open(dir.path(), quiet_policy(Duration::from_millis(300)));
    let c = db.collection("c").unwrap();
    check(&c, &model, &mut rng, 1700);
    assert_eq!(c.stats().unwrap().segments, st.segments);
    c.verify().unwrap();
}

#[test]
fn writes_more_often_than_the_quiet_period_start_no_quiet_merge() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), quiet_policy(Duration::from_secs(5)));
    let c = db
        .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    let (mut model, mut rng) = (Model::new(), Rng::new(32));
    // A trickle: 40 writes of 20 rows, 50 ms apart (far inside the 5 s quiet period even when
    // parallel tests load the machine;
    // counted, not timed, so a slow machine still writes all 800 rows: eight seals).
    let mut next = 0u64;
    for _ in 0..40 {
        let ids: Vec<u64> = (next..next + 20).collect();
        put(&c, &mut model, &mut rng, &ids);
        next += 20;
        let st = c.stats().unwrap();
        assert_eq!(
            st.background.merges_done, 0,
            "merged while writes arrive: {st:?}"
        );
        assert!(st.background.merging.is_empty(), "{st:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy = c.stats().unwrap();
    assert!(
        busy.segments.len() >= 3,
        "the trickle sealed segments: {busy:?}"
    );
    // `wait_idle` is "loading is done": it converges now, without waiting the quiet period.
    let t = Instant::now();
    c.wait_idle().unwrap();
    let st = c.stats().unwrap();
    assert_eq!((st.segments.len(), st.appendable_rows), (1, 0), "{st:?}");
    assert!(st.background.merges_done >= 1);
    assert!(t.elapsed() < Duration::from_secs(30));
    check(&c, &model, &mut rng, next);
}

#[test]
fn quiet_merges_stop_at_max_segment_rows_and_skip_small_additions() {
    let dir = tempfile::tempdir().unwrap();
    let policy = quiet_policy(Duration::from_secs(3600)).max_segment_rows(450);
    let db = open(dir.path(), policy);
    let c = db
        .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    let (mut model, mut rng) = (Model::new(), Rng::new(33));
    for b in 0..10u64 {
        let ids: Vec<u64> = (b * 100..b * 100 + 100).collect();
        put(&c, &mut model, &mut rng, &ids);
    }
    c.wait_idle().unwrap();
    // Ten segments of 100 merge into groups of at most 450 rows: 400 + 400 + 200.
    let st = c.stats().unwrap();
    let mut rows: Vec<usize> = st.segments.iter().map(|s| s.rows).collect();
    rows.sort_unstable();
    assert!(rows.iter().all(|r| *r <= 450), "{st:?}");
    assert!(st.segments.len() <= 3, "{st:?}");
    assert_eq!(rows.iter().sum::<usize>(), 1000);
    check(&c, &model, &mut rng, 1000);
    // Five more rows: sealed by `wait_idle`, but too few (below 1/16 of any segment they
    // could join) to rewrite one; the small segment stays.
    drop(c);
    db.close().unwrap();
    let db = open(
        dir.path(),
        quiet_policy(Duration::from_secs(3600)).max_segment_rows(1_000_000),
    );
    let c = db.collection("c").unwrap();
    c.wait_idle().unwrap();
    let st = c.stats().unwrap();
    assert_eq!(
        st.segments.len(),
        1,
        "with room, the quiet merge joins them: {st:?}"
    );
    put(&c, &mut model, &mut rng, &[2000, 2001, 2002, 2003, 2004]);
    c.wait_idle().unwrap();
    let st2 = c.stats().unwrap();
    assert_eq!(st2.segments.len(), 2, "{st2:?}");
    assert_eq!(st2.appendable_rows, 0);
    check(&c, &model, &mut rng, 2005);
}

/// A quiet merge waits for the seal in flight, so that the segment it brings is merged in the
/// same pass. (`wait_idle` merged the segments already sealed at once, then the new one into
/// the result: every row of the first merge written twice; 33 s of a 1M x 128 load.)
#[test]
fn a_quiet_merge_waits_for_the_seal_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let policy = quiet_policy(Duration::from_secs(3600)).max_segment_rows(1_000_000);
    let db = open(dir.path(), policy);
    let c = db
        .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    let (mut model, mut rng) = (Model::new(), Rng::new(34));
    // Four full segments, sealed and published (too few for a tier merge).
    for b in 0..4u64 {
        let ids: Vec<u64> = (b * 100..b * 100 + 100).collect();
        put(&c, &mut model, &mut rng, &ids);
    }
    await_stats(&c, |st| !st.background.sealing && st.segments.len() == 4);
    // A fifth fills the appendable segment again; its seal is held at its start.
    hold_seals(dir.path(), true);
    let ids: Vec<u64> = (400..500).collect();
    put(&c, &mut model, &mut rng, &ids);
    let st = c.stats().unwrap();
    assert!(st.background.sealing, "{st:?}");
    std::thread::scope(|s| {
        let waiting = s.spawn(|| c.wait_idle());
        std::thread::sleep(Duration::from_millis(300));
        let st = c.stats().unwrap();
        let early = (st.background.merges_done, st.background.merging.is_empty());
        hold_seals(dir.path(), false);
        waiting.join().unwrap().unwrap();
        assert_eq!(
            early,
            (0, true),
            "a quiet merge started before the seal: {st:?}"
        );
    });
    let st = c.stats().unwrap();
    assert_eq!((st.segments.len(), st.appendable_rows), (1, 0), "{st:?}");
    assert_eq!(st.background.merges_done, 1, "{st:?}");
    check(&c, &model, &mut rng, 500);
}

/// A single write that takes longer than `seal_idle_after` (a large batch linked into the
/// appendable graph) is not a quiet period: the idle seal counts from when the write ended.
/// (It counted from when the write's record was logged, so every long batch of a bulk load
/// was sealed as soon as it returned: 100k-row segments despite a larger seal threshold.)
#[test]
fn a_write_longer_than_the_idle_period_is_not_taken_for_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let idle = Duration::from_millis(400);
    let db = Database::open(
        dir.path(),
        DbOptions::default()
            .seal_threshold_rows(1_000_000)
            .compaction(CompactionPolicy::default().seal_idle_after(idle)),
    )
    .unwrap();
    let dim = 64;
    let c = db
        .create_collection(
            "c",
            &CollectionConfig {
                index: IndexConfig::hnsw(),
                ..CollectionConfig::new(dim, Metric::L2)
            },
        )
        .unwrap();
    let mut rng = Rng::new(77);
    // Grow the batch until one write outlasts the idle period several times over.
    let mut n = 4_000usize;
    let mut next = 0u64;
    loop {
        let ids: Vec<u64> = (next..next + n as u64).collect();
        let vectors: Vec<f32> = (0..n * dim).map(|_| rng.f32()).collect();
        let t = Instant::now();
        c.upsert(&ids, &vectors, &[]).unwrap();
        let took = t.elapsed();
        next += n as u64;
        if took >= idle * 3 {
            break;
        }
        // A short write: let the appendable rows seal, then try a larger batch.
        c.wait_idle().unwrap();
        n *= 2;
        assert!(n <= 512_000, "no write took {:?}", idle * 3);
    }
    // Well inside the idle period since the write returned: nothing is sealing.
    std::thread::sleep(idle / 4);
    let st = c.stats().unwrap();
    assert!(
        !st.background.sealing && st.appendable_rows == n,
        "sealed right after a long write: {st:?}"
    );
    // Left alone, it is sealed after the idle period.
    let st = await_stats(&c, |st| st.appendable_rows == 0 && !st.background.sealing);
    assert_eq!(st.rows, next as usize);
}
