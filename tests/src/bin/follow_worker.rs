//! Child processes of the read-only follower test (tests/tests/read_only.rs).
//!
//! `follow_worker writer <dir> <seconds> <acklog> <donefile>`: runs the deterministic
//! workload of `trovedb_tests::follow_op` (with seals every 40 steps and background merges)
//! for `seconds`, appending `k` to `acklog` after step `k` returned (durability `always`).
//! If the collection exists it first recovers: the state must be that after the last
//! acknowledged step or the one after it (in flight when the previous writer was killed);
//! it continues from there. At the end it writes the last step to `donefile`.
//!
//! `follow_worker reader <dir> <seconds> <acklog> <donefile> <seed>`: opens the database
//! read-only and, for `seconds`, searches and lists it. Every listing must equal the
//! writer's state after some step `j` — never earlier than the step the previous listing
//! showed, never later than the writer acknowledged (plus the steps in flight) — and every
//! search hit must be a version of its id that existed between those two listings, with
//! the right distance. Then it waits for `donefile` and checks that it sees exactly the
//! final state. Prints `reader checks=<n> steps=<first>..<last>`; exits non-zero on any
//! error or mismatch.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use trovedb::{CompactionPolicy, Database, DbOptions, Filter, Metric, SearchParams, Value};
use trovedb_tests::{
    distance, follow_apply, follow_config, follow_run, follow_vector, Rng, FOLLOW_DIM,
};

const NAME: &str = "follow";

fn last_acked(acklog: &Path) -> u64 {
    std::fs::read_to_string(acklog)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

fn observed(c: &trovedb::Collection) -> anyhow::Result<BTreeMap<u64, u64>> {
    let mut m = BTreeMap::new();
    for p in c.get_where(&Filter::And(vec![]), 100_000)? {
        let v = match p.payload.get("v") {
            Some(Value::Int(v)) => *v as u64,
            other => bail!("id {} has payload v = {other:?}", p.id),
        };
        if p.vector != follow_vector(p.id, v) {
            bail!("id {} at version {v} has the wrong vector", p.id);
        }
        m.insert(p.id, v);
    }
    Ok(m)
}

fn writer(dir: &Path, seconds: f64, acklog: &Path, donefile: &Path) -> anyhow::Result<()> {
    let policy = CompactionPolicy::default()
        .min_segments(2)
        .max_deleted_fraction(0.2)
        .max_merged_rows(1_000_000);
    let db = Database::open(
        dir,
        DbOptions::default()
            .seal_threshold_rows(150)
            .compaction(policy),
    )?;
    let (c, start) = match db.collection(NAME) {
        Ok(c) => {
            // Recover: the state is that after the last acknowledged step or the next one.
            let acked = last_acked(acklog);
            let got = observed(&c)?;
            let mut model = BTreeMap::new();
            for k in 1..=acked {
                follow_apply(&mut model, k);
            }
            let j = if got == model {
                acked
            } else {
                follow_apply(&mut model, acked + 1);
                if got != model {
                    bail!("recovered state is neither step {acked} nor {}", acked + 1);
                }
                acked + 1
            };
            (c, j + 1)
        }
        Err(trovedb::Error::CollectionNotFound { .. }) => {
            (db.create_collection(NAME, &follow_config())?, 1)
        }
        Err(e) => return Err(e.into()),
    };
    let mut ack = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(acklog)?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut k = start;
    while Instant::now() < deadline {
        follow_run(&c, k)?;
        if k % 40 == 0 {
            c.flush()?;
        }
        writeln!(ack, "{k}")?;
        k += 1;
    }
    c.wait_idle()?;
    db.close()?;
    std::fs::write(donefile, format!("{}", k - 1))?;
    println!("writer steps={start}..{}", k - 1);
    Ok(())
}

fn reader(
    dir: &Path,
    seconds: f64,
    acklog: &Path,
    donefile: &Path,
    seed: u64,
) -> anyhow::Result<()> {
    let db = Database::open(dir, DbOptions::default().read_only(true))?;
    let c = db.collection(NAME)?;
    let mut rng = Rng::new(seed);
    // The writer's state after step `j`, and every (id, version) that existed at or after
    // the step the previous listing matched.
    let mut model = BTreeMap::new();
    let mut j = 0u64;
    let mut first = None;
    let mut window: HashSet<(u64, u64)> = HashSet::new();
    let mut checks = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        let q = rng.vector(FOLLOW_DIM);
        let hits = c.search(&q, 10, &SearchParams::default())?;
        let got = observed(&c)?;
        // Advance to the first step >= j whose state this is.
        let limit = last_acked(acklog) + 3;
        window.extend(model.iter().map(|(&id, &v)| (id, v)));
        while got != model {
            j += 1;
            if j > limit {
                bail!(
                    "listing of {} points matches no step of the writer up to {limit} (previous match {})",
                    got.len(),
                    first.unwrap_or(0)
                );
            }
            follow_apply(&mut model, j);
            window.extend(model.iter().map(|(&id, &v)| (id, v)));
        }
        first.get_or_insert(j);
        for h in &hits {
            let ok = window.iter().any(|&(id, v)| {
                id == h.id
                    && (distance(Metric::L2, &q, &follow_vector(id, v)) - f64::from(h.distance))
                        .abs()
                        < 1e-3
            });
            if !ok {
                bail!(
                    "search hit {} at distance {} is no version of it near step {j}",
                    h.id,
                    h.distance
                );
            }
        }
        window.clear();
        checks += 1;
    }
    // After the writer is done, the reader sees exactly its final state.
    let wait = Instant::now() + Duration::from_secs(120);
    let last: u64 = loop {
        if let Ok(s) = std::fs::read_to_string(donefile) {
            if let Ok(v) = s.trim().parse() {
                break v;
            }
        }
        if Instant::now() > wait {
            bail!("no done file after 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut fin = BTreeMap::new();
    for k in 1..=last {
        follow_apply(&mut fin, k);
    }
    let got = observed(&c).context("final listing")?;
    if got != fin {
        bail!(
            "final listing has {} points, the writer's final state {}",
            got.len(),
            fin.len()
        );
    }
    if c.count(&Filter::And(vec![]))? != fin.len() {
        bail!("final count differs from the listing");
    }
    println!(
        "reader checks={checks} steps={}..{j} final={last}",
        first.unwrap_or(0)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: follow_worker writer|reader <dir> <seconds> <acklog> <donefile> [seed]";
    anyhow::ensure!(a.len() >= 6, "{usage}");
    let (dir, seconds, acklog, donefile) = (
        Path::new(&a[2]),
        a[3].parse::<f64>()?,
        Path::new(&a[4]),
        Path::new(&a[5]),
    );
    match a[1].as_str() {
        "writer" => writer(dir, seconds, acklog, donefile),
        "reader" => reader(
            dir,
            seconds,
            acklog,
            donefile,
            a.get(6).map_or(Ok(1), |s| s.parse())?,
        ),
        _ => bail!("{usage}"),
    }
}
