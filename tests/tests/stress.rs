//! Concurrency stress: two writers (disjoint id ranges, upserts and deletes), two searchers
//! (plain and filtered) and a compactor run together for a bounded time over a collection
//! that seals every few hundred rows. No call may error, no search may return a duplicate
//! or a point failing its filter, nothing may deadlock (every thread must finish within a
//! timeout), and afterwards — and after a reopen — the contents equal the writers' models.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use trovedb::{
    CollectionConfig, Database, DbOptions, Filter, IndexConfig, Metric, Payload, SearchParams,
    Value,
};
use trovedb_tests::{Model, Rng};

const DIM: usize = 8;

fn check_contents(c: &trovedb::Collection, model: &Model) {
    assert_eq!(c.len(), model.len());
    for (id, (v, p)) in model {
        let got = c
            .get(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("id {id} lost"));
        assert_eq!(&got.payload, p, "id {id}");
        assert_eq!(&got.vector, v, "id {id}");
    }
}

#[test]
fn writers_searchers_and_compaction_together() {
    let secs: f64 = std::env::var("TROVEDB_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        DbOptions::default()
            .seal_threshold_rows(400)
            .durability(trovedb::Durability::Off)
            .compaction(
                trovedb::CompactionPolicy::default()
                    .min_segments(2)
                    .max_merged_rows(1_000_000),
            )
    };
    let db = Database::open(dir.path(), opts()).unwrap();
    let cfg = CollectionConfig {
        index: IndexConfig::hnsw(),
        ..CollectionConfig::new(DIM, Metric::L2)
    };
    let c = db.create_collection("s", &cfg).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<&'static str>();
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let (c, stop, done) = (c.clone(), Arc::clone(&stop), done_tx.clone());
        writers.push(std::thread::spawn(move || {
            let mut rng = Rng::new(100 + w);
            let mut model = Model::new();
            let mut ops = 0u64;
            while !stop.load(Ordering::Acquire) {
                let base = w * 1_000_000;
                if rng.below(5) == 0 {
                    let ids: Vec<u64> = (0..3).map(|_| base + rng.below(800)).collect();
                    c.delete(&ids).unwrap();
                    for id in &ids {
                        model.remove(id);
                    }
                } else {
                    let n = 1 + rng.below(20) as usize;
                    let ids: Vec<u64> = (0..n).map(|_| base + rng.below(800)).collect();
                    let mut vectors = Vec::new();
                    let mut payloads = Vec::new();
                    for id in &ids {
                        let v: Vec<f32> = (0..DIM).map(|_| rng.f32()).collect();
                        let mut p = Payload::new();
                        p.insert("w".into(), Value::Int(w as i64));
                        p.insert("op".into(), Value::Int(ops as i64));
                        vectors.extend_from_slice(&v);
                        payloads.push(p.clone());
                        model.insert(*id, (v, p));
                    }
                    c.upsert(&ids, &vectors, &payloads).unwrap();
                }
                ops += 1;
            }
            done.send("writer").unwrap();
            (model, ops)
        }));
    }
    let mut others = Vec::new();
    for s in 0..2u64 {
        let (c, stop, done) = (c.clone(), Arc::clone(&stop), done_tx.clone());
        others.push(std::thread::spawn(move || {
            let mut rng = Rng::new(200 + s);
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let q: Vec<f32> = (0..DIM).map(|_| rng.f32()).collect();
                let w = rng.below(2) as i64;
                let params = if s == 0 {
                    SearchParams::default()
                } else {
                    let f = Filter::from_json_str(&format!(r#"{{"w": {w}}}"#)).unwrap();
                    SearchParams::default().with_filter(f).with_payload(true)
                };
                let hits = c.search(&q, 10, &params).unwrap();
                let mut ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), hits.len(), "duplicate ids in a result");
                if s == 1 {
                    assert!(hits.iter().all(
                        |h| h.payload.as_ref().and_then(|p| p.get("w")) == Some(&Value::Int(w))
                    ));
                }
                n += 1;
                if n.is_multiple_of(8) {
                    // Leave the index builders (background priority) some CPU on 2 cores.
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            done.send("searcher").unwrap();
            n
        }));
    }
    let compactor = {
        let (c, stop, done) = (c.clone(), Arc::clone(&stop), done_tx.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(400));
                c.compact().unwrap();
                n += 1;
            }
            done.send("compactor").unwrap();
            n
        })
    };
    drop(done_tx);
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Release);
    // Every thread must finish promptly: a deadlock fails here instead of hanging CI.
    let t = Instant::now();
    for _ in 0..5 {
        let who = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a thread did not finish within 60 s: deadlock?");
        let _ = who;
    }
    let mut model = Model::new();
    let mut writes = 0;
    for h in writers {
        let (m, ops) = h.join().unwrap();
        model.extend(m);
        writes += ops;
    }
    let searches: u64 = others.into_iter().map(|h| h.join().unwrap()).sum();
    let compactions = compactor.join().unwrap();
    let merges = c.stats().unwrap().background.merges_done;
    println!(
        "stress: {writes} write calls, {searches} searches, {compactions} compactions, {merges} background merges in {secs} s (stopped in {:.2} s)",
        t.elapsed().as_secs_f64()
    );
    assert!(writes > 0 && searches > 0 && compactions > 0);
    check_contents(&c, &model);
    db.close().unwrap();
    let db = Database::open(dir.path(), opts()).unwrap();
    check_contents(&db.collection("s").unwrap(), &model);
}
