//! Filtered search: Mongo-style filters on payload fields, from Rust values or from JSON,
//! with counts, deletes by filter and paging through matches.
//!
//! `cargo run --release -p trovedb --example filtered_search`

use trovedb::{
    CollectionConfig, Database, DbOptions, Filter, IndexConfig, Metric, Payload, SearchParams,
    Value,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DbOptions::default())?;
    let config = CollectionConfig {
        index: IndexConfig::hnsw(),
        ..CollectionConfig::new(2, Metric::L2)
    };
    let shop = db.create_collection("products", &config)?;

    // 2,000 products on a 2-d grid; each has a category, a price and tags.
    let categories = ["books", "games", "tools", "music"];
    let mut ids = Vec::new();
    let mut vectors = Vec::new();
    let mut payloads = Vec::new();
    for i in 0..2_000u64 {
        ids.push(i);
        vectors.extend([(i % 50) as f32, (i / 50) as f32]);
        let mut p = Payload::new();
        p.insert(
            "category".into(),
            Value::Str(categories[i as usize % 4].into()),
        );
        p.insert("price".into(), Value::Float((i % 97) as f64 + 0.99));
        p.insert(
            "tags".into(),
            Value::Tags(if i % 3 == 0 {
                vec!["sale".into(), "new".into()]
            } else {
                vec!["new".into()]
            }),
        );
        payloads.push(p);
    }
    shop.upsert(&ids, &vectors, &payloads)?;

    // A filter from JSON (the same syntax as the Python API and the command line).
    let cheap_games = Filter::from_json_str(
        r#"{"category": "games", "price": {"$lt": 20}, "tags": {"$in": ["sale"]}}"#,
    )?;
    let params = SearchParams::default()
        .with_filter(cheap_games.clone())
        .with_payload(true);
    let hits = shop.search(&[25.0, 20.0], 5, &params)?;
    println!("cheap games on sale nearest to (25, 20):");
    for h in &hits {
        let p = h.payload.as_ref().ok_or("payload asked for")?;
        assert_eq!(p.get("category"), Some(&Value::Str("games".into())));
        println!(
            "  id {:>4}  distance {:>6.1}  price {:?}",
            h.id,
            h.distance,
            p.get("price")
        );
    }

    // Count, page through, and delete by the same filter.
    let n = shop.count(&cheap_games)?;
    let mut seen = 0;
    let mut after = None;
    loop {
        let page = shop.scroll(Some(&cheap_games), after, 100)?;
        seen += page.points.len();
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, n);
    let deleted = shop.delete_where(&cheap_games)?;
    assert_eq!(deleted, n);
    assert_eq!(shop.count(&cheap_games)?, 0);
    println!(
        "{n} matched, paged through, deleted; {} products left",
        shop.len()
    );
    Ok(())
}
