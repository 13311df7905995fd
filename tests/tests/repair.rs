//! Repair and torn-tail reports: a damaged log is cut at its first bad record (the prefix
//! kept, the loss reported), a damaged segment dropped and reported, and the database opens
//! afterwards; recovery that cuts a damaged last record says so.

use std::path::{Path, PathBuf};

use trovedb::{CollectionConfig, Database, DbOptions, Error, Metric, Payload, Value};

fn wal_files(db_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(db_dir.join("collections/c/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Upsert ids `from..to`, one record each.
fn write(dir: &Path, from: u64, to: u64, flush_after: bool) {
    let db = Database::open(dir, DbOptions::default()).unwrap();
    let c = match db.collection("c") {
        Ok(c) => c,
        Err(_) => db
            .create_collection("c", &CollectionConfig::new(4, Metric::L2))
            .unwrap(),
    };
    for i in from..to {
        let mut p = Payload::new();
        p.insert("i".into(), Value::Int(i as i64));
        c.upsert(&[i], &[i as f32, 1.0, 2.0, 3.0], &[p]).unwrap();
    }
    if flush_after {
        c.flush().unwrap();
    }
}

fn ids(dir: &Path) -> Vec<u64> {
    let db = Database::open(dir, DbOptions::default()).unwrap();
    let c = db.collection("c").unwrap();
    let mut ids: Vec<u64> = c
        .get_where(&trovedb::Filter::And(vec![]), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(p.vector, vec![p.id as f32, 1.0, 2.0, 3.0]);
            p.id
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Record offsets of a log file whose records all have the same length.
fn record_starts(file: &Path, n: usize) -> Vec<usize> {
    let len = std::fs::metadata(file).unwrap().len() as usize;
    let rec = (len - 32) / n;
    assert_eq!(rec * n + 32, len);
    (0..n).map(|i| 32 + i * rec).collect()
}

fn flip(file: &Path, at: usize) {
    let mut b = std::fs::read(file).unwrap();
    b[at] ^= 0x5a;
    std::fs::write(file, b).unwrap();
}

#[test]
fn repair_keeps_the_log_before_mid_file_damage_and_reports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 0, 20, false);
    // A healthy database: nothing to do.
    let report = Database::repair(dir.path()).unwrap();
    assert!(!report.changed() && report.ok(), "{report:?}");
    let wal = wal_files(dir.path());
    let starts = record_starts(&wal[0], 20);
    // Damage the body of the 11th record (id 10): acknowledged records follow it.
    flip(&wal[0], starts[10] + 20);
    let err = Database::open(dir.path(), DbOptions::default())
        .unwrap()
        .collection("c")
        .unwrap_err();
    assert!(
        matches!(err, Error::Corruption { offset, .. } if offset == starts[10] as u64),
        "{err}"
    );
    // Not while a writer holds the database.
    {
        let _db = Database::open(dir.path(), DbOptions::default()).unwrap();
        assert!(matches!(
            Database::repair(dir.path()),
            Err(Error::Locked { .. })
        ));
    }
    let report = Database::repair(dir.path()).unwrap();
    assert!(report.changed() && report.ok(), "{report:?}");
    let c = &report.collections[0];
    let cut = c.log_cut.as_ref().unwrap();
    assert_eq!(cut.file, wal[0]);
    assert_eq!(cut.offset, starts[10] as u64);
    assert_eq!(
        cut.records_lost, 9,
        "records 12..20 still validated: {cut:?}"
    );
    assert_eq!(cut.last_kept_lsn, 10);
    assert!(c.dropped_segments.is_empty());
    // The prefix is kept exactly (the model: ids 0..10), and the database works on.
    assert_eq!(ids(dir.path()), (0..10).collect::<Vec<_>>());
    write(dir.path(), 100, 105, false);
    assert_eq!(ids(dir.path()).len(), 15);
    assert!(!Database::repair(dir.path()).unwrap().changed());
}

#[test]
fn repair_drops_a_damaged_segment_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 0, 30, true); // segment 1: ids 0..30
    write(dir.path(), 30, 40, true); // segment 2: ids 30..40
    write(dir.path(), 40, 45, false); // in the log
    let seg = dir.path().join("collections/c/seg-0000000001.seg");
    // A byte in the middle of the vectors (offset 4096 is past the header page).
    flip(&seg, 4096 + 40);
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    // Opening may not read every vector, but verification finds the damage.
    if let Ok(c) = db.collection("c") {
        assert!(matches!(c.verify(), Err(Error::Corruption { .. })));
    }
    db.close().unwrap();
    let report = Database::repair(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    let c = &report.collections[0];
    assert_eq!(c.dropped_segments.len(), 1, "{c:?}");
    assert_eq!(c.dropped_segments[0].id, 1);
    assert_eq!(c.dropped_segments[0].rows, 30);
    assert!(c.log_cut.is_none());
    assert!(dir
        .path()
        .join("collections/c/seg-0000000001.seg.damaged")
        .exists());
    assert_eq!(ids(dir.path()), (30..45).collect::<Vec<_>>());
}

#[test]
fn a_cut_damaged_last_record_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 0, 20, false);
    let wal = wal_files(dir.path());
    let starts = record_starts(&wal[0], 20);
    let len = std::fs::metadata(&wal[0]).unwrap().len();
    // A flipped byte in the last record: recovery treats it as a torn tail and cuts it —
    // and says so, since under `always` that record was acknowledged.
    flip(&wal[0], starts[19] + 20);
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let report = db.open_all().unwrap();
    assert_eq!(report.torn_tails.len(), 1, "{report:?}");
    let (name, t) = &report.torn_tails[0];
    assert_eq!(name, "c");
    assert_eq!(
        (t.file.clone(), t.offset, t.bytes),
        (wal[0].clone(), starts[19] as u64, len - starts[19] as u64)
    );
    assert!(t.reason.contains("checksum"), "{t:?}");
    let c = db.collection("c").unwrap();
    assert_eq!(c.stats().unwrap().torn_tail.as_ref(), Some(t));
    assert_eq!(c.len(), 19);
    drop(c);
    db.close().unwrap();
    // The next open finds a whole log: nothing to report.
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    assert_eq!(db.collection("c").unwrap().stats().unwrap().torn_tail, None);
}
