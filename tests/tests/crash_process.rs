//! Process crash: a child process (`crash_writer`) runs a deterministic workload of
//! upserts and deletes with durability `always`, printing `ack i` after step i returns,
//! and with a small seal threshold so that seals (segment write, manifest swap, log
//! rotation) happen throughout. The parent kills it with SIGKILL at a random moment, then
//! reopens the database and checks that its contents equal the model after some step
//! M >= the last acknowledged one: every acknowledged write is there with its exact vector
//! and payload, and the step in flight is either wholly applied or not at all. The next
//! child continues from M + 1 on the same directory.
//!
//! `TROVEDB_CRASH_ITERS` sets the number of kills (default 30); `TROVEDB_SEED` the seed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use trovedb::{Database, DbOptions, IdType, SearchParams};
use trovedb_tests::{
    apply_crash_op, assert_exact, crash_op, crash_str_key, seed, Model, Rng, CRASH_IDS,
};

fn matches_model(c: &trovedb::Collection, model: &Model) -> bool {
    if c.len() != model.len() {
        return false;
    }
    let keyed = c.config().id_type == IdType::Str;
    (0..CRASH_IDS).all(|id| {
        let got = if keyed {
            let key = crash_str_key(id);
            let got = c.get_str(&key).expect("get");
            assert!(got.as_ref().is_none_or(|p| p.key.as_deref() == Some(&*key)));
            got
        } else {
            c.get(id).expect("get")
        };
        match (got, model.get(&id)) {
            (None, None) => true,
            (Some(p), Some((v, pl))) => &p.vector == v && &p.payload == pl,
            _ => false,
        }
    })
}

#[test]
fn sigkill_during_writes_and_seals_loses_no_acknowledged_write() {
    let iters: u64 = std::env::var("TROVEDB_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut rng = Rng::new(seed(2024));
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut next_step = 0u64;
    let mut acked_total = 0u64;
    let mut merges_total = 0u64;
    for iter in 0..iters {
        let target = rng.below(40) + 1;
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg(dir.path())
            .arg("64")
            .arg(next_step.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut last_ack = None;
        let mut child_merges = 0u64;
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("ack ") {
                let (i, merges) = rest.split_once(" merges ").unwrap();
                let i: u64 = i.parse().unwrap();
                child_merges = merges.parse().unwrap();
                last_ack = Some(i);
                if i + 1 >= next_step + target {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        merges_total += child_merges;
        let last_ack = last_ack.expect("child acknowledged nothing");
        // Model after every acknowledged step.
        for i in next_step..=last_ack {
            apply_crash_op(&mut model, &crash_op(i));
        }
        acked_total += last_ack + 1 - next_step;
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        // Each collection matches the workload after some step at or past the last
        // acknowledged one (the child may have completed more; the string-keyed write of a
        // step follows the integer-keyed one). The next child starts after the smaller of
        // the two: re-running a step already applied changes nothing.
        let mut after = Vec::new();
        for name in ["crash", "crash_str"] {
            let c = db.collection(name).unwrap();
            let mut m = last_ack;
            let mut probe = model.clone();
            while !matches_model(&c, &probe) {
                m += 1;
                assert!(
                    m <= last_ack + 200,
                    "iteration {iter}: {name} matches no prefix of the workload after step \
                     {last_ack}"
                );
                apply_crash_op(&mut probe, &crash_op(m));
            }
            for _ in 0..3 {
                let q = rng.vector(trovedb_tests::CRASH_DIM);
                let mut hits = c.search(&q, 10, &SearchParams::default()).unwrap();
                if name == "crash_str" {
                    // Back to the model's integer ids through the keys.
                    for h in &mut hits {
                        let key = h.key.clone().expect("a string-id hit carries its key");
                        let id: u64 = key[4..8].parse().unwrap();
                        assert_eq!(key, crash_str_key(id));
                        h.id = id;
                    }
                }
                assert_exact(trovedb::Metric::L2, &probe, &q, &hits, 10);
            }
            after.push((m, probe));
        }
        after.sort_by_key(|(m, _)| *m);
        let (m, probe) = after.swap_remove(0);
        model = probe;
        next_step = m + 1;
    }
    println!(
        "crash test: {iters} kills, {acked_total} acknowledged steps checked, {merges_total} background merges published before the kills, final {} points",
        model.len()
    );
    assert!(
        merges_total > 0,
        "the workload should trigger background merges"
    );
}
