//! Stable-toolchain mutation fuzzing of every file reader: valid files of every kind
//! (`trovedb::fuzzing::seed_corpus`) are truncated, bit-flipped, overwritten and spliced
//! by a seeded generator, and each result is opened. Every case must give `Ok` or a typed
//! error — a panic fails the test. `TROVEDB_FUZZ_CASES` sets the cases per seed (default
//! 300); the cargo-fuzz targets in `fuzz/` run the same entry points with coverage guidance.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use trovedb::fuzzing::{filter_parse, fix_checksums, run, seed_corpus};
use trovedb_tests::Rng;

fn mutate(rng: &mut Rng, src: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    let len = b.len().max(1) as u64;
    match rng.below(6) {
        0 => b.truncate(rng.below(len) as usize),
        1 => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(len) as usize % b.len().max(1);
                if let Some(x) = b.get_mut(at) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            // Overwrite a run with one value (0, 0xff or random): lengths, counts, offsets.
            let at = rng.below(len) as usize;
            let v = [0u8, 0xff, rng.below(256) as u8][rng.below(3) as usize];
            for x in b.iter_mut().skip(at).take(1 + rng.below(16) as usize) {
                *x = v;
            }
        }
        3 => {
            // Splice bytes of another valid file in.
            let at = rng.below(len) as usize;
            let from = rng.below(other.len().max(1) as u64) as usize;
            let n = (1 + rng.below(64) as usize).min(other.len().saturating_sub(from));
            for (i, x) in other[from..from + n].iter().enumerate() {
                if let Some(y) = b.get_mut(at + i) {
                    *y = *x;
                }
            }
        }
        4 => {
            // A header-region flip: the first 4 KiB hold the structures that size everything.
            let at = rng.below(len.min(4096)) as usize;
            if let Some(x) = b.get_mut(at) {
                *x = x.wrapping_add(1 + rng.below(255) as u8);
            }
        }
        _ => {
            let at = rng.below(len) as usize % b.len().max(1);
            let junk: Vec<u8> = (0..rng.below(32)).map(|_| rng.below(256) as u8).collect();
            b.splice(at..at, junk);
        }
    }
    b
}

#[test]
fn mutated_files_never_panic() {
    let cases: u64 = std::env::var("TROVEDB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed = trovedb_tests::seed(0xf0_22);
    let corpus = seed_corpus().unwrap();
    let t = Instant::now();
    let mut rng = Rng::new(seed);
    let (mut total, mut refused, mut passed_checksums) = (0u64, 0u64, 0u64);
    let mut per_target = std::collections::BTreeMap::new();
    for (i, s) in corpus.iter().enumerate() {
        run(s, &s.bytes).unwrap_or_else(|e| panic!("seed {i} ({}) must open: {e}", s.target));
        // Recomputing the checksums of a valid file changes nothing (so the fix-up computes
        // them as the writer does).
        let mut same = s.bytes.clone();
        fix_checksums(s.target, &mut same);
        assert!(
            same == s.bytes,
            "fix_checksums changed valid {} seed {i}",
            s.target
        );
        let other = &corpus[(i + 1) % corpus.len()].bytes;
        for case in 0..cases {
            let b = mutate(&mut rng, &s.bytes, other);
            let Ok(r) = catch_unwind(AssertUnwindSafe(|| run(s, &b))) else {
                panic!(
                    "panic on a mutated {} file (seed {i}, case {case}, fuzz seed {seed}; \
                     set TROVEDB_SEED to reproduce)",
                    s.target
                );
            };
            if r.is_err() {
                refused += 1;
            }
            total += 1;
            *per_target.entry(s.target).or_insert(0u64) += 1;
            // The same mutation with its checksums recomputed reaches the parsers behind them.
            let mut fixed = b;
            fix_checksums(s.target, &mut fixed);
            let Ok(r) = catch_unwind(AssertUnwindSafe(|| run(s, &fixed))) else {
                panic!(
                    "panic on a mutated {} file with fixed checksums (seed {i}, case {case}, \
                     fuzz seed {seed}; set TROVEDB_SEED to reproduce)",
                    s.target
                );
            };
            if r.is_ok() {
                passed_checksums += 1;
            }
            total += 1;
            *per_target.entry("checksummed").or_insert(0u64) += 1;
        }
    }
    // Filters: random JSON-ish text and mutations of valid filters.
    let filters = [
        r#"{"a": 1}"#,
        r#"{"$and": [{"x": {"$gte": 2.5}}, {"$or": [{"t": {"$in": ["a", "b"]}}, {"u": {"$exists": false}}]}]}"#,
        r#"{"$not": {"s": {"$nin": ["v1", null, true]}}}"#,
    ];
    for f in filters {
        assert!(filter_parse(f.as_bytes()).is_ok(), "{f}");
        for _ in 0..cases * 4 {
            let b = mutate(&mut rng, f.as_bytes(), filters[0].as_bytes());
            let r = catch_unwind(AssertUnwindSafe(|| filter_parse(&b)));
            assert!(r.is_ok(), "panic parsing {:?}", String::from_utf8_lossy(&b));
            total += 1;
            *per_target.entry("filter").or_insert(0u64) += 1;
        }
    }
    // Operation sequences against the model (random bytes as ops; see fuzzing::ops).
    for _ in 0..cases / 3 {
        let len = 20 + rng.below(200) as usize;
        let b: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        trovedb::fuzzing::ops(&b);
        total += 1;
        *per_target.entry("ops").or_insert(0u64) += 1;
    }
    println!(
        "fuzz smoke: {total} mutated inputs ({per_target:?}), {refused} file cases refused with a typed error, {passed_checksums} checksum-fixed cases opened, {:.1} s, seed {seed}",
        t.elapsed().as_secs_f64()
    );
}
