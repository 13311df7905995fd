//! Failing file operations (ENOSPC, EIO) injected at every operation index of a workload
//! of upserts, deletes, seals and compactions: the failing call returns a typed error, the
//! handle either keeps working or refuses writes with `Poisoned`, nothing panics, and after
//! a reopen without faults every acknowledged write is present and the one failed call is
//! applied entirely or not at all.

use trovedb::testing::{clear_io_fault, fail_io_after, tear_write_after};
use trovedb::{
    CollectionConfig, CompactionPolicy, Database, DbOptions, Error, IndexConfig, Metric, Payload,
    Value,
};
use trovedb_tests::{Model, Rng, WorkOp};

const DIM: usize = 4;

fn workload() -> Vec<WorkOp> {
    let mut rng = Rng::new(77);
    let mut ops = Vec::new();
    for i in 0..40u64 {
        ops.push(match i % 10 {
            4 | 8 => WorkOp::Delete((0..3).map(|_| rng.below(60)).collect()),
            6 => WorkOp::Flush,
            9 => WorkOp::Compact,
            _ => WorkOp::Upsert(
                (0..4)
                    .map(|j| {
                        let mut p = Payload::new();
                        p.insert("i".into(), Value::Int((i * 10 + j) as i64));
                        (rng.below(60), rng.vector(DIM), p)
                    })
                    .collect(),
            ),
        });
    }
    ops
}

fn contents(c: &trovedb::Collection) -> Model {
    (0..60u64)
        .filter_map(|id| c.get(id).unwrap().map(|p| (id, (p.vector, p.payload))))
        .collect()
}

#[test]
fn failed_writes_and_syncs_lose_nothing_acknowledged() {
    let (cases, fired, poisoned) = run(fail_io_after);
    println!(
        "fault injection: {cases} cases (a failing file operation at each index, ENOSPC/EIO alternately), {fired} fired, {poisoned} later calls refused as Poisoned"
    );
    assert!(
        cases > 50,
        "the workload should perform more than 50 file operations"
    );
}

/// Torn writes: the n-th data write puts only half its bytes in the file, then fails. A
/// torn log record must not hide the records acknowledged before it, and a torn segment,
/// manifest or deletion file must never be published.
#[test]
fn torn_writes_lose_nothing_acknowledged() {
    let (cases, fired, poisoned) = run(tear_write_after);
    println!(
        "torn writes: {cases} cases (half of the n-th data write reaches the file, then ENOSPC/EIO), {fired} fired, {poisoned} later calls refused as Poisoned"
    );
    assert!(
        cases > 50,
        "the workload should perform more than 50 writes"
    );
}

/// Run the workload once per operation index `n` with `arm(dir, n, errno)` armed; returns
/// (cases, faults fired, later calls refused as Poisoned).
fn run(arm: fn(&std::path::Path, u64, i32)) -> (u64, u64, u64) {
    // The armed fault is process-wide: one test at a time arms it.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ops = workload();
    let (mut cases, mut fired_total, mut poisoned_total) = (0u64, 0u64, 0u64);
    for (n, errno) in (0..3000u64).map(|n| {
        (
            n,
            if n % 2 == 0 {
                libc_enospc()
            } else {
                libc_eio()
            },
        )
    }) {
        let dir = tempfile::tempdir().unwrap();
        // Background merges off: their file operations would interleave with the
        // workload's at varying points, and each case must fail the same operation.
        let opts = || {
            DbOptions::default()
                .seal_threshold_rows(24)
                .compaction(CompactionPolicy::off())
        };
        let cfg = CollectionConfig {
            index: if n % 3 == 0 {
                IndexConfig::hnsw()
            } else {
                IndexConfig::Flat
            },
            ..CollectionConfig::new(DIM, Metric::L2)
        };
        {
            let db = open(dir.path(), &opts);
            db.create_collection("c", &cfg).unwrap();
        }
        let mut acked = Model::new();
        let mut failed: Option<&WorkOp> = None;
        {
            let db = open(dir.path(), &opts);
            let c = db.collection("c").unwrap();
            arm(dir.path(), n, errno);
            for op in &ops {
                let r = op.run(&c);
                match r {
                    Ok(()) => op.apply(&mut acked),
                    // The call that hit the fault: an I/O error, or Poisoned when the failure
                    // was a group-commit fsync (reported to every waiter that way).
                    Err(Error::Io { .. } | Error::Corruption { .. } | Error::Poisoned { .. })
                        if failed.is_none() =>
                    {
                        failed = Some(op);
                    }
                    // Every later write is refused.
                    Err(Error::Poisoned { .. }) => poisoned_total += 1,
                    Err(e) => panic!("case {n}: unexpected error {e:?}"),
                }
            }
            let (seen, fired) = clear_io_fault().unwrap();
            if !fired {
                assert!(failed.is_none());
                // The workload did fewer operations than n: every later n is the same.
                assert!(seen <= n);
                break;
            }
            fired_total += 1;
            let _ = db.close();
        }
        // Reopen with no fault: everything acknowledged is there; the failed call is applied
        // entirely or not at all.
        let db = open(dir.path(), &opts);
        let c = db.collection("c").unwrap();
        let got = contents(&c);
        let mut with_failed = acked.clone();
        if let Some(op) = failed {
            op.apply(&mut with_failed);
        }
        assert!(
            got == acked || got == with_failed,
            "case {n}: reopened contents match neither the acknowledged writes nor them plus the failed call: got {} ids, acked {}, with failed {}; failed op kind {:?}",
            got.len(), acked.len(), with_failed.len(),
            failed.map(WorkOp::name)
        );
        c.verify().unwrap();
        cases += 1;
    }
    (cases, fired_total, poisoned_total)
}

/// Open, retrying briefly on `Locked`: another test in this binary may fork a child process
/// (the crash test) while this one holds the lock, and the forked copy of the lock's file
/// descriptor keeps the lock until the child's exec closes it.
fn open(dir: &std::path::Path, opts: &dyn Fn() -> DbOptions) -> Database {
    for _ in 0..100 {
        match Database::open(dir, opts()) {
            Err(Error::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(10)),
            r => return r.unwrap(),
        }
    }
    panic!("{} stayed locked", dir.display());
}

fn libc_enospc() -> i32 {
    28
}

fn libc_eio() -> i32 {
    5
}
