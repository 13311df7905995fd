//! A database opened in a parent process and inherited by forked children (a `gunicorn
//! --preload` or `multiprocessing` fork pool): every call through the inherited handles
//! in a child is refused with `Error::InheritedAcrossFork` before it takes a lock or
//! touches a file, dropping them in the child touches nothing, and the database reopens
//! with exactly the parent's acknowledged writes. A child may open a database of its own
//! and use it fully, even though the parent had used trovedb's thread pools before the
//! fork (a pool inherited without its threads would hang it).
#![allow(
    unsafe_code,
    reason = "the test forks the process (libc::fork, waitpid, _exit)"
)]

use std::time::{Duration, Instant};

use trovedb::{
    CollectionConfig, Database, DbOptions, Error, Filter, IndexConfig, Metric, Payload,
    SearchParams, Value,
};
use trovedb_tests::{assert_exact, Model, Rng};

const DIM: usize = 16;

fn hnsw_config() -> CollectionConfig {
    CollectionConfig {
        index: IndexConfig::hnsw(),
        ..CollectionConfig::new(DIM, Metric::L2)
    }
}

fn batch(
    rng: &mut Rng,
    ids: std::ops::Range<u64>,
    model: &mut Model,
) -> (Vec<u64>, Vec<f32>, Vec<Payload>) {
    let (mut vs, mut ps) = (Vec::new(), Vec::new());
    let ids: Vec<u64> = ids.collect();
    for &id in &ids {
        let v = rng.vector(DIM);
        let mut p = Payload::new();
        p.insert("n".into(), Value::Int(id as i64));
        vs.extend_from_slice(&v);
        ps.push(p.clone());
        model.insert(id, (v, p));
    }
    (ids, vs, ps)
}

fn refused<T: std::fmt::Debug>(
    what: &str,
    r: trovedb::Result<T>,
    parent: u32,
) -> Result<(), String> {
    match r {
        Err(Error::InheritedAcrossFork { opened_by, current })
            if opened_by == parent && current == std::process::id() =>
        {
            Ok(())
        }
        other => Err(format!(
            "{what}: expected InheritedAcrossFork, got {other:?}"
        )),
    }
}

/// Everything the child does. Returns a description of the first thing that went wrong.
fn child(db: &Database, root: &std::path::Path, parent: u32) -> Result<(), String> {
    let c = db.collection("c").map(|_| ()).err();
    if !matches!(c, Some(Error::InheritedAcrossFork { .. })) {
        return Err(format!("db.collection: {c:?}"));
    }
    Ok(())
        .and_then(|()| {
            refused(
                "create",
                db.create_collection("d", &CollectionConfig::new(DIM, Metric::L2)),
                parent,
            )
        })
        .and_then(|()| refused("list", db.list_collections(), parent))
        .and_then(|()| refused("open_all", db.open_all(), parent))
        .and_then(|()| refused("drop", db.drop_collection("c"), parent))?;
    // The message says what happened and what to do.
    let msg = db
        .list_collections()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    if !(msg.contains("fork") && msg.contains(&parent.to_string()) && msg.contains("spawn")) {
        return Err(format!("unhelpful message: {msg}"));
    }
    // Opening the same directory anew is refused by the lock, naming the parent.
    match Database::open(root, DbOptions::default()) {
        Err(Error::Locked {
            holder: Some(p), ..
        }) if p == parent => {}
        other => return Err(format!("reopen in child: {other:?}")),
    }
    Ok(())
}

fn child_collection(c: &trovedb::Collection, parent: u32) -> Result<(), String> {
    let v = vec![0.5; DIM];
    refused("upsert", c.upsert(&[9_000], &v, &[]), parent)?;
    refused("delete", c.delete(&[1]), parent)?;
    refused("flush", c.flush(), parent)?;
    refused("compact", c.compact(), parent)?;
    refused("wait_idle", c.wait_idle(), parent)?;
    refused("search", c.search(&v, 5, &SearchParams::default()), parent)?;
    refused(
        "search_batch",
        c.search_batch(
            &[v.clone(), v.clone()].concat(),
            5,
            &SearchParams::default(),
        ),
        parent,
    )?;
    refused("get", c.get(1), parent)?;
    refused("count", c.count(&Filter::And(Vec::new())), parent)?;
    refused(
        "get_where",
        c.get_where(&Filter::And(Vec::new()), 3),
        parent,
    )?;
    refused(
        "delete_where",
        c.delete_where(&Filter::And(Vec::new())),
        parent,
    )?;
    refused("stats", c.stats(), parent)?;
    refused("verify", c.verify(), parent)
}

/// A database of the child's own, with a seal, a compaction and a batch search: the
/// thread pools are per process.
fn child_own_database(dir: &std::path::Path) -> Result<(), String> {
    let run = || -> trovedb::Result<()> {
        let db = Database::open(dir, DbOptions::default())?;
        let c = db.create_collection("own", &hnsw_config())?;
        let mut rng = Rng::new(7);
        let mut model = Model::new();
        let (ids, vs, ps) = batch(&mut rng, 0..600, &mut model);
        c.upsert(&ids, &vs, &ps)?;
        c.flush()?;
        let (ids, vs, ps) = batch(&mut rng, 600..900, &mut model);
        c.upsert(&ids, &vs, &ps)?;
        c.compact()?;
        let qs: Vec<f32> = (0..8).flat_map(|_| rng.vector(DIM)).collect();
        let hits = c.search_batch(&qs, 3, &SearchParams::default().with_ef(400))?;
        assert_eq!(hits.len(), 8);
        db.close()
    };
    run().map_err(|e| format!("own database in the child: {e}"))
}

fn wait_child(pid: libc::pid_t, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a pid this test forked and a valid pointer to a local.
        let r = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                100
            };
        }
        if start.elapsed() > limit {
            // SAFETY: kill and a blocking waitpid on the child this test forked.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &raw mut status, 0);
            }
            return 101;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn forked_children_are_refused_and_the_parents_writes_survive() {
    let root = tempfile::tempdir().unwrap();
    let own = tempfile::tempdir().unwrap();
    let db = Database::open(root.path(), DbOptions::default().seal_threshold_rows(500)).unwrap();
    let c = db.create_collection("c", &hnsw_config()).unwrap();
    let mut rng = Rng::new(11);
    let mut model = Model::new();
    let (ids, vs, ps) = batch(&mut rng, 0..700, &mut model);
    c.upsert(&ids, &vs, &ps).unwrap();
    c.flush().unwrap();
    // The parent has used the build and search pools before forking.
    let qs: Vec<f32> = (0..4).flat_map(|_| rng.vector(DIM)).collect();
    c.search_batch(&qs, 3, &SearchParams::default()).unwrap();
    let parent = std::process::id();

    let mut children = Vec::new();
    for i in 0..3 {
        let own_dir = own.path().join(format!("child-{i}"));
        // SAFETY: the child only calls trovedb (which refuses before taking any lock held
        // at the fork), opens a database of its own, and leaves with `_exit`, running no
        // destructor of the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let r = child(&db, root.path(), parent)
                .and_then(|()| child_collection(&c, parent))
                .and_then(|()| child_own_database(&own_dir));
            // Dropping the inherited handles in the child must not touch the files.
            let closed = db.close();
            drop(c);
            drop(db);
            let code = match (r, closed) {
                (Ok(()), Ok(())) => 0,
                (Err(e), _) => {
                    eprintln!("child {i}: {e}");
                    1
                }
                (Ok(()), Err(e)) => {
                    eprintln!("child {i}: close: {e}");
                    2
                }
            };
            // SAFETY: ends the child without unwinding into the parent's test harness.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }
    // The parent keeps writing while the children run.
    let (ids, vs, ps) = batch(&mut rng, 700..1_100, &mut model);
    c.upsert(&ids, &vs, &ps).unwrap();
    assert_eq!(c.delete(&[3, 5, 8]).unwrap(), 3);
    for id in [3, 5, 8] {
        model.remove(&id);
    }
    for (i, pid) in children.into_iter().enumerate() {
        assert_eq!(
            wait_child(pid, Duration::from_secs(120)),
            0,
            "child {i} failed (see stderr)"
        );
    }
    // And after the children are gone.
    let (ids, vs, ps) = batch(&mut rng, 1_100..1_200, &mut model);
    c.upsert(&ids, &vs, &ps).unwrap();
    drop(c);
    db.close().unwrap();
    drop(db);

    let db = Database::open(root.path(), DbOptions::default()).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.len(), model.len());
    for (id, (v, p)) in &model {
        let got = c
            .get(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("id {id} lost"));
        assert_eq!(&got.vector, v);
        assert_eq!(&got.payload, p);
    }
    for q in qs.chunks(DIM) {
        let hits = c
            .search(q, 10, &SearchParams::default().with_ef(1_200))
            .unwrap();
        assert_exact(Metric::L2, &model, q, &hits, 10);
    }
    // Nothing the children did reached the disk: no stray collection, no log of theirs.
    assert_eq!(db.list_collections().unwrap(), vec!["c".to_owned()]);
}
