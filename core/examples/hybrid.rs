//! Hybrid search: string ids, a BM25 index over a text field, keyword search, vector
//! search, the two fused, and `$match` in a filter.
//!
//! `cargo run --release -p trovedb --example hybrid`

use trovedb::{
    CollectionConfig, Database, DbOptions, Filter, IdType, Metric, Payload, SearchParams,
    TextConfig, Value,
};

/// Stand-in embeddings: a bag of hashed words (a real application calls its embedding
/// model here). Texts sharing words get nearby vectors.
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 64];
    for word in text.split_whitespace() {
        let h = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        v[(h % 64) as usize] += 1.0;
    }
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DbOptions::default())?;
    let config = CollectionConfig {
        id_type: IdType::Str,
        text: Some(TextConfig::new(["text"])),
        ..CollectionConfig::new(64, Metric::Cosine)
    };
    let notes = db.create_collection("notes", &config)?;

    let docs = [
        (
            "guide#1",
            "How to bake sourdough bread with a long cold fermentation",
        ),
        (
            "guide#2",
            "Clam chowder: a creamy New England soup with potatoes",
        ),
        (
            "guide#3",
            "Quick weeknight soup recipes for cold winter evenings",
        ),
        (
            "faq#7",
            "Error E1042 means the oven thermostat failed its self test",
        ),
        ("faq#8", "Resetting the oven clock after a power cut"),
    ];
    let keys: Vec<&str> = docs.iter().map(|d| d.0).collect();
    let vectors: Vec<f32> = docs.iter().flat_map(|d| embed(d.1)).collect();
    let payloads: Vec<Payload> = docs
        .iter()
        .map(|d| Payload::from([("text".to_string(), Value::Str(d.1.into()))]))
        .collect();
    notes.upsert_str(&keys, &vectors, &payloads)?;

    // Keyword and hybrid hits carry a score (higher is better) as minus their distance.
    let show = |label: &str, hits: &[trovedb::Hit], scored: bool| {
        println!("{label}");
        for h in hits {
            let (what, v) = if scored {
                ("score", -h.distance)
            } else {
                ("distance", h.distance)
            };
            println!("  {:<8} {what} {v:.4}", h.key.as_deref().unwrap_or("?"));
        }
    };
    // Keyword search (BM25; a hit's distance is minus its score): an exact code.
    let kw = notes.search_text("E1042", 3, &SearchParams::default())?;
    show("keyword \"E1042\":", &kw, true);
    assert_eq!(kw[0].key.as_deref(), Some("faq#7"));

    // Hybrid: the vector branch and the keyword branch fused (a score blend by default).
    let q = "warm soup for a cold evening";
    let hy = notes.search_hybrid(&embed(q), q, 3, &SearchParams::default())?;
    show(&format!("hybrid {q:?}:"), &hy, true);

    // `$match` (every term of the text) combines with any other filter.
    let soups = Filter::from_json_str(r#"{"text": {"$match": "soup"}}"#)?;
    assert_eq!(notes.count(&soups)?, 2);
    let p = SearchParams::default().with_filter(soups);
    let hits = notes.search(&embed("clam"), 1, &p)?;
    show(
        "nearest to \"clam\" among texts matching \"soup\":",
        &hits,
        false,
    );
    assert_eq!(hits[0].key.as_deref(), Some("guide#2"));
    Ok(())
}
