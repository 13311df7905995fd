//! Filtered search on real embeddings with their metadata: for filters passing 100%, 50%,
//! 10%, 1%, ~0.1% of points, fewer than k, none, and a correlated one (`source = kjv`, far
//! from most queries), every result passes the filter, flat search is exact and HNSW
//! recall@10 against a brute-force filtered oracle is at least 0.95; count, get_where and
//! delete_where agree with a naive scan of the metadata.

use std::io::BufRead;

use serde_json::json;
use trovedb::{
    payload_from_json, CollectionConfig, Database, DbOptions, Filter, IndexConfig, Metric, Payload,
    SearchParams,
};
use trovedb_tests::{normalized, read_fvecs, repo_root};

struct Data {
    dim: usize,
    base: Vec<f32>,
    queries: Vec<f32>,
    payloads: Vec<Payload>,
}

fn load() -> Data {
    let shared = repo_root().join("../shared/data/text-minilm-dev");
    let dir = if shared.join("base.fvecs").exists() {
        shared
    } else {
        repo_root().join("data/minilm-3k")
    };
    println!("dataset: {}", dir.display());
    let (dim, base) = read_fvecs(&dir.join("base.fvecs")).unwrap();
    let (_, queries) = read_fvecs(&dir.join("query.fvecs")).unwrap();
    let f = std::fs::File::open(dir.join("metadata.jsonl")).unwrap();
    let payloads = std::io::BufReader::new(f)
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("text");
            o.remove("doc_id");
            payload_from_json(&v).unwrap()
        })
        .collect();
    Data {
        dim,
        base,
        queries,
        payloads,
    }
}

/// Brute-force filtered top 10 (f64 cosine).
fn truth(d: &Data, q: &[f32], f: &Filter) -> Vec<u64> {
    let qn = normalized(q);
    let mut all: Vec<(f64, u64)> = d
        .base
        .chunks_exact(d.dim)
        .enumerate()
        .filter(|(i, _)| f.matches(&d.payloads[*i]))
        .map(|(i, v)| {
            let vn = normalized(v);
            (
                1.0 - qn
                    .iter()
                    .zip(&vn)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>(),
                i as u64,
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().take(10).map(|x| x.1).collect()
}

#[test]
fn filtered_recall_at_every_selectivity() {
    let d = load();
    let n = d.base.len() / d.dim;
    let ids: Vec<u64> = (0..n as u64).collect();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        dir.path(),
        DbOptions::default().seal_threshold_rows(n * 2 / 3),
    )
    .unwrap();
    let hnsw = db
        .create_collection(
            "h",
            &CollectionConfig {
                index: IndexConfig::hnsw(),
                ..CollectionConfig::new(d.dim, Metric::Cosine)
            },
        )
        .unwrap();
    let flat = db
        .create_collection("f", &CollectionConfig::new(d.dim, Metric::Cosine))
        .unwrap();
    for c in [&hnsw, &flat] {
        for s in (0..n).step_by(2500) {
            let e = (s + 2500).min(n);
            c.upsert(&ids[s..e], &d.base[s * d.dim..e * d.dim], &d.payloads[s..e])
                .unwrap();
        }
        c.wait_idle().unwrap();
        assert_eq!(
            c.stats().unwrap().segments.len(),
            1,
            "one sealed segment plus the appendable one"
        );
    }
    let rare_category = {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for p in &d.payloads {
            if let Some(trovedb::Value::Str(c)) = p.get("category") {
                *counts.entry(c.clone()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .find(|(_, c)| (2..10).contains(c))
            .map(|(k, _)| k)
            .unwrap()
    };
    let filters = [
        json!({"bucket100": {"$lt": 100}}),
        json!({"bucket100": {"$lt": 50}}),
        json!({"bucket100": {"$lt": 10}}),
        json!({"bucket100": 3}),
        json!({"bucket100": 3, "length_bucket": {"$in": ["long", "short"]}}),
        json!({"$or": [{"bucket100": 5, "year": {"$gte": 1990}}, {"pos": "adv", "bucket100": {"$lt": 2}}]}),
        json!({"source": "kjv"}),
        json!({"source": {"$ne": "wordnet"}, "word_count": {"$gt": 20}}),
        json!({"category": rare_category}),
        json!({"source": "no-such-source"}),
    ];
    for fj in &filters {
        let f = Filter::from_json(fj).unwrap();
        let passing = d.payloads.iter().filter(|p| f.matches(p)).count();
        assert_eq!(hnsw.count(&f).unwrap(), passing, "{fj}");
        let params = SearchParams::default()
            .with_filter(f.clone())
            .with_payload(true);
        let (mut hits, mut total) = (0, 0);
        for q in d.queries.chunks_exact(d.dim).take(100) {
            let want = truth(&d, q, &f);
            let got = hnsw.search(q, 10, &params).unwrap();
            assert!(
                got.iter().all(|h| f.matches(h.payload.as_ref().unwrap())),
                "{fj}: a result fails the filter"
            );
            assert_eq!(got.len(), want.len().min(10), "{fj}: result count");
            hits += got.iter().filter(|h| want.contains(&h.id)).count();
            total += want.len();
            let exact: Vec<u64> = flat
                .search(q, 10, &params)
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect();
            let agree = exact.iter().filter(|i| want.contains(i)).count();
            assert!(
                agree + 1 >= want.len(),
                "{fj}: flat search is not exact ({agree} of {})",
                want.len()
            );
        }
        let recall = if total == 0 {
            1.0
        } else {
            hits as f64 / total as f64
        };
        println!(
            "filter {fj}: {passing} of {n} pass ({:.2}%), hnsw recall@10 {recall:.4}",
            100.0 * passing as f64 / n as f64
        );
        assert!(recall >= 0.95, "{fj}: recall {recall}");
    }
    // After a reopen the sealed segment's payload index is rebuilt from the file: same
    // counts and the same filtered results.
    let f10 = Filter::from_json(&json!({"bucket100": {"$lt": 10}})).unwrap();
    let p10 = SearchParams::default().with_filter(f10.clone());
    let q0 = &d.queries[..d.dim];
    let before = hnsw.search(q0, 10, &p10).unwrap();
    drop((hnsw, flat));
    db.close().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let (hnsw, flat) = (db.collection("h").unwrap(), db.collection("f").unwrap());
    assert_eq!(hnsw.search(q0, 10, &p10).unwrap(), before);
    assert_eq!(
        hnsw.count(&f10).unwrap(),
        d.payloads.iter().filter(|p| f10.matches(p)).count()
    );
    // Metadata-only queries and delete by filter.
    let kjv = Filter::from_json(&json!({"source": "kjv"})).unwrap();
    let got = flat.get_where(&kjv, 7).unwrap();
    assert_eq!(got.len(), 7.min(flat.count(&kjv).unwrap()));
    assert!(got.iter().all(|p| kjv.matches(&p.payload)));
    let before = flat.len();
    let removed = flat.delete_where(&kjv).unwrap();
    assert_eq!(
        removed,
        d.payloads.iter().filter(|p| kjv.matches(p)).count()
    );
    assert_eq!(flat.len(), before - removed);
    assert_eq!(flat.count(&kjv).unwrap(), 0);
}

#[test]
fn bad_filters_are_refused() {
    for bad in [
        json!({"year": {"$foo": 1}}),
        json!({"$or": 3}),
        json!({"a": {"$in": 1}}),
        json!("x"),
    ] {
        assert!(
            matches!(
                Filter::from_json(&bad),
                Err(trovedb::Error::InvalidArgument { .. })
            ),
            "{bad}"
        );
    }
    assert!(Filter::from_json_str("{not json").is_err());
}

#[test]
fn persisted_payload_index_is_used_and_checked() {
    use trovedb::{CollectionConfig, Database, DbOptions, Metric, Payload, Value};
    let dir = tempfile::tempdir().unwrap();
    let n = 3000u64;
    let ids: Vec<u64> = (0..n).collect();
    let vectors: Vec<f32> = (0..n * 4).map(|i| (i % 97) as f32).collect();
    let payloads: Vec<Payload> = ids
        .iter()
        .map(|i| {
            let mut p = Payload::new();
            p.insert("k".into(), Value::Int((i % 7) as i64));
            p.insert("s".into(), Value::Str(format!("v{}", i % 3)));
            p
        })
        .collect();
    let f = Filter::from_json_str(r#"{"k": {"$gte": 5}, "s": {"$ne": "v1"}}"#).unwrap();
    let want = payloads.iter().filter(|p| f.matches(p)).count();
    {
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        let c = db
            .create_collection("c", &CollectionConfig::new(4, Metric::L2))
            .unwrap();
        c.upsert(&ids, &vectors, &payloads).unwrap();
        c.flush().unwrap();
        db.close().unwrap();
    }
    // Reopened: the count comes from the persisted index and agrees with the naive one.
    {
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        assert_eq!(db.collection("c").unwrap().count(&f).unwrap(), want);
        db.close().unwrap();
    }
    // Damage one byte inside the payload-index section (tag 23): filtered calls report
    // Corruption naming the segment file; unfiltered search still works.
    let seg = std::fs::read_dir(dir.path().join("collections/c"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Segment format v3 (FORMAT.md 3.3): the directory lies at the header's `dir_offset`;
    // index entries (16 bytes each) come first, then section entries (32 bytes each:
    // owner u16, tag u16, reserved u32, offset u64, len u64, ...).
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let dir_at = u64_at(&bytes, 32) as usize;
    let (sections, indexes) = (u32_at(&bytes, 48) as usize, u32_at(&bytes, 52) as usize);
    let (mut off, mut len) = (0usize, 0usize);
    for i in 0..sections {
        let e = dir_at + 16 * indexes + 32 * i;
        let (owner, tag) = (
            u16::from_le_bytes([bytes[e], bytes[e + 1]]),
            u16::from_le_bytes([bytes[e + 2], bytes[e + 3]]),
        );
        if (owner, tag) == (0, 23) {
            off = u64_at(&bytes, e + 8) as usize;
            len = u64_at(&bytes, e + 16) as usize;
        }
    }
    assert!(len > 0, "no payload index section in {}", seg.display());
    bytes[off + len / 2] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let c = db.collection("c").unwrap();
    match c.count(&f) {
        Err(trovedb::Error::Corruption { file, .. }) => assert_eq!(file, seg),
        other => panic!("expected Corruption, got {other:?}"),
    }
    assert_eq!(
        c.search(&[1.0; 4], 3, &trovedb::SearchParams::default())
            .unwrap()
            .len(),
        3
    );
    assert!(c.verify().is_err());
}

#[test]
fn indexed_fields_restrict_the_index_not_the_answers() {
    use trovedb::{CollectionConfig, Database, DbOptions, Metric, Payload, Value};
    let dir = tempfile::tempdir().unwrap();
    let n = 2500u64;
    let ids: Vec<u64> = (0..n).collect();
    let vectors: Vec<f32> = (0..n * 4).map(|i| ((i * 7) % 101) as f32).collect();
    let payloads: Vec<Payload> = ids
        .iter()
        .map(|i| {
            let mut p = Payload::new();
            p.insert("k".into(), Value::Int((i % 7) as i64));
            p.insert("s".into(), Value::Str(format!("v{}", i % 3)));
            p
        })
        .collect();
    let cfg = CollectionConfig {
        indexed_fields: Some(vec!["k".into()]),
        ..CollectionConfig::new(4, Metric::L2)
    };
    let filters = [
        r#"{"k": {"$gte": 5}}"#,
        r#"{"s": "v1"}"#,
        r#"{"$or": [{"k": 2}, {"s": {"$ne": "v0"}}]}"#,
    ];
    let check = |c: &trovedb::Collection| {
        for json in filters {
            let f = Filter::from_json_str(json).unwrap();
            let want: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|i| f.matches(&payloads[*i as usize]))
                .collect();
            assert_eq!(c.count(&f).unwrap(), want.len(), "{json}");
            let q = [3.0f32, 1.0, 4.0, 1.0];
            let hits = c
                .search(&q, 5, &SearchParams::default().with_filter(f.clone()))
                .unwrap();
            assert!(hits.iter().all(|h| want.contains(&h.id)), "{json}");
        }
    };
    {
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        let c = db.create_collection("c", &cfg).unwrap();
        c.upsert(&ids[..1000], &vectors[..4000], &payloads[..1000])
            .unwrap();
        c.flush().unwrap();
        c.upsert(&ids[1000..], &vectors[4000..], &payloads[1000..])
            .unwrap();
        check(&c); // one sealed segment + the appendable one
        db.close().unwrap();
    }
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.config().indexed_fields, Some(vec!["k".to_string()]));
    check(&c);
    let bad = CollectionConfig {
        indexed_fields: Some(vec![String::new()]),
        ..CollectionConfig::new(4, Metric::L2)
    };
    assert!(db.create_collection("bad", &bad).is_err());
}
