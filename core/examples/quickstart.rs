//! Quick start: create a database, upsert vectors with payloads, search, reopen.
//!
//! `cargo run --release -p trovedb --example quickstart [DIR]` (a temporary directory when
//! none is given).

use trovedb::{
    CollectionConfig, Database, DbOptions, IndexConfig, Metric, Payload, SearchParams, Value,
};

const DIM: usize = 64;
const N: u64 = 5_000;

/// A small deterministic generator, so the example needs no data files and no crates.
struct Lcg(u64);

impl Lcg {
    fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let path = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);

    // One directory holds the whole database; collections live inside it.
    let db = Database::open(&path, DbOptions::default())?;
    let config = CollectionConfig {
        index: IndexConfig::hnsw(),
        ..CollectionConfig::new(DIM, Metric::Cosine)
    };
    let docs = db.get_or_create_collection("docs", &config)?;

    // Upsert in batches: ids, the vectors row-major, one payload per point.
    let mut rng = Lcg(7);
    let vectors: Vec<f32> = (0..N as usize * DIM).map(|_| rng.next_f32()).collect();
    for start in (0..N).step_by(1_000) {
        let ids: Vec<u64> = (start..start + 1_000).collect();
        let payloads: Vec<Payload> = ids
            .iter()
            .map(|&id| {
                let mut p = Payload::new();
                p.insert("title".into(), Value::Str(format!("document {id}")));
                p.insert("year".into(), Value::Int(2000 + (id % 25) as i64));
                p
            })
            .collect();
        let rows = &vectors[start as usize * DIM..(start as usize + 1_000) * DIM];
        // Returns once the batch is durable (the log record is fsynced).
        docs.upsert(&ids, rows, &payloads)?;
    }

    // The ten nearest neighbours of point 42's vector, with payloads.
    let query = &vectors[42 * DIM..43 * DIM];
    let params = SearchParams::default().with_payload(true);
    let hits = docs.search(query, 10, &params)?;
    println!("{} points; nearest to point 42:", docs.len());
    for h in &hits {
        let title = h.payload.as_ref().and_then(|p| p.get("title"));
        println!("  id {:>5}  distance {:.4}  {:?}", h.id, h.distance, title);
    }
    assert_eq!(hits[0].id, 42, "a point is its own nearest neighbour");

    // Close and reopen: everything acknowledged is there, the answers are the same.
    drop(docs);
    db.close()?;
    let db = Database::open(&path, DbOptions::default())?;
    let docs = db.collection("docs")?;
    let again = docs.search(query, 10, &params)?;
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        again.iter().map(|h| h.id).collect::<Vec<_>>()
    );
    println!(
        "reopened {}: {} points, same answers",
        path.display(),
        docs.len()
    );
    Ok(())
}
