//! Writes the seed corpus of every fuzz target (valid files made by this build) into
//! `corpus/<target>/`: `cargo run --bin gen_corpus` from `fuzz/`. Nothing is committed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new("corpus");
    for (i, seed) in trovedb::fuzzing::seed_corpus()?.iter().enumerate() {
        // The checksummed target: a kind byte, then the file.
        let pick = match seed.target {
            "wal" => 0u8,
            "segment" => 1,
            "manifest" => 2,
            _ => 3,
        };
        let dir = root.join("checksummed");
        std::fs::create_dir_all(&dir)?;
        let mut b = vec![pick];
        b.extend_from_slice(&seed.bytes);
        std::fs::write(dir.join(format!("seed-{i}")), b)?;
        let target = match seed.target {
            "wal" => "wal_replay",
            "segment" => "segment_open",
            "manifest" => "manifest_open",
            _ => continue,
        };
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{i}")), &seed.bytes)?;
    }
    let dir = root.join("filter_parse");
    std::fs::create_dir_all(&dir)?;
    for (i, f) in [
        r#"{"lang": "en", "year": {"$gte": 2020}}"#,
        r#"{"$or": [{"t": {"$in": ["a", "b"]}}, {"$not": {"u": {"$exists": true}}}]}"#,
        r#"{"x": {"$nin": [1, 2.5, null, true, "s"]}, "y": {"$ne": [1]}}"#,
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(dir.join(format!("seed-{i}")), f)?;
    }
    let dir = root.join("ops");
    std::fs::create_dir_all(&dir)?;
    // Upserts, a search, a flush, deletes, a compaction, a reopen, a count, a get.
    let seed: Vec<u8> = vec![
        0, 3, 1, 2, 3, 4, 1, 5, 6, 7, 8, 2, 9, 10, 11, 12, 3, 13, 14, 15, 0, 2, 1, 1, 1, 1, 3,
        5, 1, 5, 1, 9, 6, 2, 0, 0, 0, 0, 4, 7, 3, 1, 4, 2, 4, 9,
    ];
    std::fs::write(dir.join("seed-0"), seed)?;
    println!("corpus written to {}", root.display());
    Ok(())
}
