//! Online backup: `Database::backup` while a writer thread upserts and deletes (with seals
//! and merges going on) yields a database equal to the writer's model after some step
//! between the last one acknowledged before the backup started and the last one acknowledged
//! when it returned; it opens, verifies, and keeps accepting writes. The same from a
//! read-only handle beside the writer (which takes its copy point without the writer's
//! lock). Refusal: a non-empty destination.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trovedb::{
    CollectionConfig, CompactionPolicy, Database, DbOptions, Error, IdType, Metric, Payload,
    SearchParams, Value,
};
use trovedb_tests::{assert_exact, seed, Model, Rng};

const DIM: usize = 8;

/// Vectors and payloads of an upsert step.
type Rows = (Vec<f32>, Vec<Payload>);

/// Step `i` of the writer's workload: upsert 40 points, or (every sixth step) delete 15.
fn step(i: u64) -> (Vec<u64>, Option<Rows>) {
    let mut rng = Rng::new(i + 77);
    if i % 6 == 5 {
        return ((0..15).map(|_| rng.below(1500)).collect(), None);
    }
    let ids: Vec<u64> = (0..40).map(|_| rng.below(1500)).collect();
    let vecs = (0..ids.len() * DIM).map(|_| rng.f32()).collect();
    let pays = ids
        .iter()
        .map(|_| {
            let mut p = Payload::new();
            p.insert("step".into(), Value::Int(i as i64));
            p
        })
        .collect();
    (ids, Some((vecs, pays)))
}

fn apply(model: &mut Model, i: u64) {
    let (ids, up) = step(i);
    match up {
        None => {
            for id in ids {
                model.remove(&id);
            }
        }
        Some((vecs, pays)) => {
            for (j, id) in ids.iter().enumerate() {
                model.insert(
                    *id,
                    (vecs[j * DIM..(j + 1) * DIM].to_vec(), pays[j].clone()),
                );
            }
        }
    }
}

fn equals(c: &trovedb::Collection, model: &Model) -> bool {
    c.len() == model.len()
        && (0..1500).all(|id| match (c.get(id).unwrap(), model.get(&id)) {
            (None, None) => true,
            (Some(p), Some((v, pl))) => &p.vector == v && &p.payload == pl,
            _ => false,
        })
}

#[test]
fn backup_while_writing_is_a_consistent_point_and_reopens() {
    backup_while_writing(false);
}

#[test]
fn backup_from_a_read_only_handle_while_writing_is_a_consistent_point() {
    backup_while_writing(true);
}

fn backup_while_writing(from_reader: bool) {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions::default()
        .seal_threshold_rows(200)
        .compaction(CompactionPolicy::default().min_segments(2));
    let db = Arc::new(Database::open(dir.path(), opts.clone()).unwrap());
    let c = db
        .create_collection("c", &CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    // A second collection, keyed by strings, written once before the backup.
    let s = db
        .create_collection(
            "s",
            &CollectionConfig {
                id_type: IdType::Str,
                ..CollectionConfig::new(DIM, Metric::Cosine)
            },
        )
        .unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let mut rng = Rng::new(seed(3));
    let svecs: Vec<f32> = (0..300 * DIM).map(|_| rng.f32() + 0.1).collect();
    s.upsert_str(&keys, &svecs, &[]).unwrap();

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, acked, stop, during) = (
            Arc::clone(&c),
            Arc::clone(&acked),
            Arc::clone(&stop),
            Arc::clone(&during),
        );
        std::thread::spawn(move || {
            // Longest upsert latency outside and during the backup.
            let (mut before, mut inside) = (Duration::ZERO, Duration::ZERO);
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let (ids, up) = step(i);
                let t = Instant::now();
                match up {
                    None => {
                        c.delete(&ids).unwrap();
                    }
                    Some((vecs, pays)) => c.upsert(&ids, &vecs, &pays).unwrap(),
                }
                let dt = t.elapsed();
                if during.load(Ordering::SeqCst) {
                    inside = inside.max(dt);
                } else {
                    before = before.max(dt);
                }
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
            (before, inside)
        })
    };
    while acked.load(Ordering::SeqCst) < 60 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let dest = dir.path().join("backups").join("b1");
    let a0 = acked.load(Ordering::SeqCst);
    during.store(true, Ordering::SeqCst);
    let report = if from_reader {
        let ro = Database::open(dir.path(), opts.clone().read_only(true)).unwrap();
        let r = ro.backup(&dest).unwrap();
        ro.close().unwrap();
        r
    } else {
        db.backup(&dest).unwrap()
    };
    during.store(false, Ordering::SeqCst);
    let a1 = acked.load(Ordering::SeqCst);
    while acked.load(Ordering::SeqCst) < a1 + 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let (before, inside) = writer.join().unwrap();
    println!(
        "backup: {} files, {} bytes, write lock held up to {} us per collection; longest write \
         {:?} outside the backup, {:?} during it; steps acknowledged {a0}..{a1} during it",
        report.files, report.bytes, report.max_lock_micros, before, inside
    );
    assert_eq!(report.collections, vec!["c".to_string(), "s".to_string()]);
    // The original keeps working; the backup is a separate database.
    let live_len = c.len();
    drop((c, s));
    db.close().unwrap();
    drop(db);

    let b = Database::open(&dest, DbOptions::default()).unwrap();
    let bc = b.collection("c").unwrap();
    bc.verify().unwrap();
    let mut model = Model::new();
    for i in 0..a0 {
        apply(&mut model, i);
    }
    let mut m = a0;
    while !equals(&bc, &model) {
        assert!(m <= a1, "the backup matches no step between {a0} and {a1}");
        apply(&mut model, m);
        m += 1;
    }
    println!("backup equals the workload after {m} steps (acknowledged {a0} before, {a1} after)");
    for _ in 0..5 {
        let q = rng.vector(DIM);
        assert_exact(
            Metric::L2,
            &model,
            &q,
            &bc.search(&q, 10, &SearchParams::default()).unwrap(),
            10,
        );
    }
    let bs = b.collection("s").unwrap();
    assert_eq!(bs.len(), 300);
    assert_eq!(
        bs.get_str("k7").unwrap().unwrap().key.as_deref(),
        Some("k7")
    );
    // The restored database takes writes of its own.
    bc.upsert(&[5000], &[0.5; DIM], &[]).unwrap();
    assert!(bc.get(5000).unwrap().is_some());
    drop((bc, bs));
    b.close().unwrap();
    let db = Database::open(dir.path(), opts).unwrap();
    assert_eq!(db.collection("c").unwrap().len(), live_len);
    assert!(db.collection("c").unwrap().get(5000).unwrap().is_none());

    // Refusal: a non-empty destination (nothing changed there).
    let e = db.backup(&dest).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("not an empty directory"), "{e}");
    assert!(Database::open(&dest, DbOptions::default()).is_ok());
    db.close().unwrap();
}
