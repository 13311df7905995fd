//! Writes the seed corpus of every fuzz target (valid files made by this build) into
//! `corpus/<target>/`: `cargo run --bin gen_corpus` from `fuzz/`. Nothing is committed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new("corpus");
    for (i, seed) in trovedb::fuzzing::seed_corpus()?.iter().enumerate() {
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
    println!("corpus written to {}", root.display());
    Ok(())
}
