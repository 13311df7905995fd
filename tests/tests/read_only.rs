//! Read-only handles beside a writer: in this process, and in other processes while a
//! writer process upserts, deletes, seals and merges (and when it is killed).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trovedb::{
    CollectionConfig, CompactionPolicy, Database, DbOptions, Durability, Error, Filter,
    SearchParams,
};
use trovedb_tests::{follow_apply, follow_config, follow_run, follow_vector, FOLLOW_DIM};

fn listing(c: &trovedb::Collection) -> BTreeMap<u64, Vec<f32>> {
    c.get_where(&Filter::And(vec![]), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.vector))
        .collect()
}

fn config() -> CollectionConfig {
    follow_config()
}

#[test]
fn a_reader_in_the_same_process_follows_seals_merges_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DbOptions::default().seal_threshold_rows(60).compaction(
        CompactionPolicy::default()
            .min_segments(2)
            .max_merged_rows(1_000_000),
    );
    let db = Database::open(dir.path(), opts.clone()).unwrap();
    let w = db.create_collection("f", &config()).unwrap();
    let rdb = Database::open(dir.path(), DbOptions::default().read_only(true)).unwrap();
    let r = rdb.collection("f").unwrap();
    assert!(r.is_read_only() && rdb.is_read_only());
    let mut model = BTreeMap::new();
    for k in 1..=400u64 {
        follow_run(&w, k).unwrap();
        follow_apply(&mut model, k);
        if k % 50 == 0 {
            w.flush().unwrap();
        }
        if k % 90 == 0 {
            w.compact().unwrap();
        }
        if k % 7 == 3 {
            // The reader's view equals the writer's after every acknowledged step.
            let want: BTreeMap<u64, Vec<f32>> = model
                .iter()
                .map(|(&id, &v)| (id, follow_vector(id, v)))
                .collect();
            assert_eq!(listing(&r), want, "step {k}");
            assert_eq!(r.count(&Filter::And(vec![])).unwrap(), model.len());
            let q = follow_vector(1, k);
            let a = w
                .search(&q, 5, &SearchParams::default().with_ef(200))
                .unwrap();
            let b = r
                .search(&q, 5, &SearchParams::default().with_ef(200))
                .unwrap();
            assert_eq!(
                a.iter().map(|h| h.id).collect::<Vec<_>>(),
                b.iter().map(|h| h.id).collect::<Vec<_>>(),
                "step {k}"
            );
        }
    }
    w.wait_idle().unwrap();
    let ws = w.stats().unwrap();
    let rs = r.stats().unwrap();
    assert!(rs.read_only && !ws.read_only);
    assert_eq!(rs.last_lsn, ws.last_lsn);
    assert_eq!(
        rs.segments.iter().map(|s| s.id).collect::<Vec<_>>(),
        ws.segments.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    // The writer closes and another opens (recovery, a new generation): the reader follows.
    db.close().unwrap();
    let db = Database::open(dir.path(), opts).unwrap();
    let w = db.collection("f").unwrap();
    follow_run(&w, 401).unwrap();
    follow_apply(&mut model, 401);
    assert_eq!(listing(&r).len(), model.len());
    assert_eq!(r.stats().unwrap().last_lsn, w.stats().unwrap().last_lsn);
}

#[test]
fn read_only_handles_refuse_changes_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let err = Database::open(&missing, DbOptions::default().read_only(true)).unwrap_err();
    assert!(
        err.to_string().contains("read-only open does not create"),
        "{err}"
    );
    assert!(!missing.exists());

    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let w = db.create_collection("f", &config()).unwrap();
    follow_run(&w, 1).unwrap();
    // While the writer holds the lock, a second writer is refused and told about read_only.
    let locked = Database::open(dir.path(), DbOptions::default()).unwrap_err();
    assert!(
        matches!(
            locked,
            Error::Locked {
                holder: Some(_),
                ..
            }
        ),
        "{locked}"
    );
    assert!(locked.to_string().contains("read_only=True"), "{locked}");

    let rdb = Database::open(dir.path(), DbOptions::default().read_only(true)).unwrap();
    let r = rdb.collection("f").unwrap();
    let before = listing(&r);
    let v = vec![0.5f32; FOLLOW_DIM];
    let refused = [
        ("upsert", r.upsert(&[9999], &v, &[]).map(drop)),
        ("delete", r.delete(&[1]).map(drop)),
        (
            "delete_where",
            r.delete_where(&Filter::And(vec![])).map(drop),
        ),
        ("flush", r.flush()),
        ("compact", r.compact().map(drop)),
        (
            "create_collection",
            rdb.create_collection("g", &config()).map(drop),
        ),
        ("drop_collection", rdb.drop_collection("f")),
    ];
    for (op, res) in refused {
        match res {
            Err(Error::ReadOnly { operation }) => assert_eq!(operation, op),
            other => panic!("{op} on a read-only handle: {other:?}"),
        }
    }
    assert_eq!(listing(&r), before);
    assert_eq!(listing(&w), before);
    r.wait_idle().unwrap();
    assert!(rdb.list_collections().unwrap() == vec!["f".to_owned()]);
    // A collection created after the reader opened is found by name.
    db.create_collection("later", &config()).unwrap();
    assert_eq!(rdb.collection("later").unwrap().len(), 0);
    // The writer drops a collection a reader has open: the reader's next call says so.
    let later = rdb.collection("later").unwrap();
    db.drop_collection("later").unwrap();
    let gone = later.count(&Filter::And(vec![]));
    assert!(
        matches!(gone, Err(Error::CollectionNotFound { ref name }) if name == "later"),
        "{gone:?}"
    );
    rdb.close().unwrap();
    assert!(matches!(r.count(&Filter::And(vec![])), Err(Error::Closed)));
}

#[test]
fn under_durability_off_readers_see_written_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default().durability(Durability::Off)).unwrap();
    let w = db.create_collection("f", &config()).unwrap();
    let rdb = Database::open(dir.path(), DbOptions::default().read_only(true)).unwrap();
    let r = rdb.collection("f").unwrap();
    let mut model = BTreeMap::new();
    for k in 1..=30 {
        follow_run(&w, k).unwrap();
        follow_apply(&mut model, k);
        assert_eq!(listing(&r).len(), model.len(), "step {k}");
    }
}

/// A database no writer has opened since it was copied (a backup, or `cp -r` without the
/// writer's PUBLISHED page): a reader reads every complete record, and stops at the end of
/// the log, also when the last log file holds no record yet (after a flush).
#[test]
fn a_reader_without_a_published_page_opens_a_copied_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let c = db.create_collection("f", &config()).unwrap();
    let v = follow_vector(1, 0);
    c.upsert(&[1, 2], &[v.clone(), v.clone()].concat(), &[])
        .unwrap();
    c.flush().unwrap();
    let flushed_only = listing(&c);
    c.upsert(&[3], &v, &[]).unwrap();
    let with_tail = listing(&c);
    drop(c);
    db.close().unwrap();
    let removed = std::fs::read_dir(dir.path().join("collections").join("f"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == "PUBLISHED")
        .map(|e| std::fs::remove_file(e.path()).unwrap())
        .count();
    assert_eq!(
        removed, 1,
        "the writer's page was where this test expects it"
    );
    let ro = Database::open(dir.path(), DbOptions::default().read_only(true)).unwrap();
    assert_eq!(listing(&ro.collection("f").unwrap()), with_tail);
    ro.close().unwrap();

    // The same after a flush, with an empty last log file.
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let c = db.collection("f").unwrap();
    c.delete(&[3]).unwrap();
    c.flush().unwrap();
    assert_eq!(listing(&c), flushed_only);
    drop(c);
    db.close().unwrap();
    std::fs::remove_file(dir.path().join("collections").join("f").join("PUBLISHED")).unwrap();
    let ro = Database::open(dir.path(), DbOptions::default().read_only(true)).unwrap();
    assert_eq!(listing(&ro.collection("f").unwrap()), flushed_only);
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_follow_worker"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child, what: &str) -> String {
    let out = c.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

fn wait_for_acks(acklog: &Path, n: usize) {
    let t = Instant::now();
    while std::fs::read_to_string(acklog).map_or(0, |s| s.lines().count()) < n {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "writer made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Three reader processes for `seconds`, seeded `seed0..seed0 + 3`.
fn spawn_readers(db: &Path, seconds: &str, ack: &Path, done: &Path, seed0: u64) -> Vec<Child> {
    (0..3)
        .map(|i| {
            let seed = format!("{}", seed0 + i);
            spawn(&["reader", s(db), seconds, s(ack), s(done), &seed])
        })
        .collect()
}

#[test]
fn three_reader_processes_follow_a_writer_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let (ack, done) = (dir.path().join("ack"), dir.path().join("done"));
    let writer = spawn(&["writer", s(&db), "5", s(&ack), s(&done)]);
    wait_for_acks(&ack, 20);
    let readers = spawn_readers(&db, "3.5", &ack, &done, 11);
    let w = finish(writer, "writer");
    println!("{}", w.trim());
    for (i, r) in readers.into_iter().enumerate() {
        let out = finish(r, &format!("reader {i}"));
        println!("{}", out.trim());
        assert!(out.contains("checks="), "{out}");
    }
}

#[test]
fn readers_keep_serving_when_the_writer_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let (ack, done) = (dir.path().join("ack"), dir.path().join("done"));
    let mut writer = spawn(&["writer", s(&db), "60", s(&ack), s(&done)]);
    wait_for_acks(&ack, 20);
    let readers = spawn_readers(&db, "3", &ack, &done, 21);
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL: no close, no final sync; the readers go on with what was published.
    writer.kill().unwrap();
    let _ = writer.wait();
    std::thread::sleep(Duration::from_millis(500));
    // A new writer recovers (checking the state against the acknowledged steps), writes
    // more, and finishes; the readers then see its final state.
    let resumed = spawn(&["writer", s(&db), "1", s(&ack), s(&done)]);
    let w = finish(resumed, "resumed writer");
    println!("{}", w.trim());
    for (i, r) in readers.into_iter().enumerate() {
        let out = finish(r, &format!("reader {i}"));
        println!("{}", out.trim());
    }
}
