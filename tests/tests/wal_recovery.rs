//! Recovery from the write-ahead log: writes that were never sealed come back on reopen;
//! a torn tail (a crash mid-append) is cut off and every earlier acknowledged write is
//! kept; every durability mode replays what it wrote.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use trovedb::{
    CollectionConfig, CompactionPolicy, Database, DbOptions, Durability, Metric, Payload, Value,
};

fn wal_files(db_dir: &Path, coll: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(db_dir.join("collections").join(coll).join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn write_batches(dir: &Path, n: u64, durability: Durability) {
    let db = Database::open(dir, DbOptions::default().durability(durability)).unwrap();
    let c = db
        .create_collection("c", &CollectionConfig::new(4, Metric::L2))
        .unwrap();
    for i in 0..n {
        let mut p = Payload::new();
        p.insert("i".into(), Value::Int(i as i64));
        c.upsert(&[i], &[i as f32, 1.0, 2.0, 3.0], &[p]).unwrap();
    }
}

fn ids_present(dir: &Path) -> Vec<u64> {
    let db = Database::open(dir, DbOptions::default()).unwrap();
    let c = db.collection("c").unwrap();
    let ids: Vec<u64> = (0..1000).filter(|i| c.get(*i).unwrap().is_some()).collect();
    for id in &ids {
        let p = c.get(*id).unwrap().unwrap();
        assert_eq!(p.vector, vec![*id as f32, 1.0, 2.0, 3.0]);
        assert_eq!(p.payload.get("i"), Some(&Value::Int(*id as i64)));
    }
    ids
}

#[test]
fn unsealed_writes_replay_in_every_durability_mode() {
    for d in [
        Durability::Always,
        Durability::Batch(std::time::Duration::from_millis(5)),
        Durability::Off,
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_batches(dir.path(), 50, d);
        assert_eq!(
            ids_present(dir.path()),
            (0..50).collect::<Vec<_>>(),
            "{d:?}"
        );
        // A second reopen (after the first appended nothing) sees the same.
        assert_eq!(ids_present(dir.path()).len(), 50);
    }
}

#[test]
fn torn_tail_is_truncated_at_every_cut_point() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(dir.path(), 20, Durability::Always);
    let wal = wal_files(dir.path(), "c");
    assert_eq!(wal.len(), 1);
    let full = std::fs::read(&wal[0]).unwrap();
    let rec_len = (full.len() - 32) / 20; // 20 equal-sized records after the 32-byte header
    assert_eq!(rec_len * 20 + 32, full.len());
    let last_start = full.len() - rec_len;
    for cut in (last_start..full.len()).step_by(3) {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(dir.path(), copy.path());
        let w = wal_files(copy.path(), "c");
        std::fs::write(&w[0], &full[..cut]).unwrap();
        assert_eq!(
            ids_present(copy.path()),
            (0..19).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        // The database keeps working after the truncation, and the tail stays valid.
        {
            let db = Database::open(copy.path(), DbOptions::default()).unwrap();
            let c = db.collection("c").unwrap();
            let mut p = Payload::new();
            p.insert("i".into(), Value::Int(500));
            c.upsert(&[500], &[500.0, 1.0, 2.0, 3.0], &[p]).unwrap();
        }
        let ids = ids_present(copy.path());
        assert_eq!(ids.len(), 20);
        assert!(ids.contains(&500));
    }
    // Garbage appended after the last good record (a torn, never-acknowledged append).
    let copy = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), copy.path());
    let w = wal_files(copy.path(), "c");
    OpenOptions::new()
        .append(true)
        .open(&w[0])
        .unwrap()
        .write_all(&[0xAB; 40])
        .unwrap();
    assert_eq!(ids_present(copy.path()).len(), 20);
}

#[test]
fn seal_then_more_writes_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let opts = DbOptions::default()
            .seal_threshold_rows(7)
            .compaction(CompactionPolicy::off());
        let db = Database::open(dir.path(), opts).unwrap();
        let c = db
            .create_collection("c", &CollectionConfig::new(4, Metric::L2))
            .unwrap();
        for i in 0..30 {
            let mut p = Payload::new();
            p.insert("i".into(), Value::Int(i as i64));
            c.upsert(&[i], &[i as f32, 1.0, 2.0, 3.0], &[p]).unwrap();
        }
        c.delete(&[3, 8, 29]).unwrap();
        c.wait_idle().unwrap();
        let st = c.stats().unwrap();
        assert_eq!(st.segments.len(), 4);
        assert!(st.checkpoint_lsn > 0 && st.last_lsn > st.checkpoint_lsn);
        // Old logs are gone once a checkpoint covers them.
        assert_eq!(wal_files(dir.path(), "c").len(), 1);
    }
    let want: Vec<u64> = (0..30).filter(|i| ![3, 8, 29].contains(i)).collect();
    assert_eq!(ids_present(dir.path()), want);
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}
