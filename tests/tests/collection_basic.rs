//! Points in and out: upsert, overwrite, delete, get, exact search across segments,
//! reopen after seal, and refusal of bad input without side effects.

use trovedb::{CollectionConfig, Database, DbOptions, Error, Metric, Payload, SearchParams, Value};
use trovedb_tests::{assert_exact, normalized, seed, Model, Rng};

fn opts(seal: usize) -> DbOptions {
    DbOptions::default().seal_threshold_rows(seal)
}

fn payload(i: u64) -> Payload {
    let mut p = Payload::new();
    p.insert("n".into(), Value::Int(i as i64));
    p.insert("name".into(), Value::Str(format!("point-{i}")));
    p.insert("score".into(), Value::Float(i as f64 / 3.0));
    p.insert(
        "tags".into(),
        Value::Tags(vec!["a".into(), format!("t{}", i % 3)]),
    );
    p.insert("flag".into(), Value::Bool(i.is_multiple_of(2)));
    p.insert("none".into(), Value::Null);
    p
}

/// Random upserts, overwrites and deletes with a small seal threshold (so many segments),
/// checked against the model: every get, the length, and exact search for every metric.
#[test]
fn random_ops_match_model_across_segments_and_reopen() {
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let s = seed(7);
        let mut rng = Rng::new(s);
        let dir = tempfile::tempdir().unwrap();
        let dim = 13;
        let mut model = Model::new();
        {
            let db = Database::open(dir.path(), opts(150)).unwrap();
            let c = db
                .create_collection("c", &CollectionConfig::new(dim, metric))
                .unwrap();
            for step in 0..60 {
                if step % 4 == 3 {
                    let ids: Vec<u64> = (0..20).map(|_| rng.below(600)).collect();
                    let existing = ids
                        .iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .filter(|id| model.contains_key(id))
                        .count();
                    assert_eq!(c.delete(&ids).unwrap(), existing);
                    for id in &ids {
                        model.remove(id);
                    }
                } else {
                    let ids: Vec<u64> = (0..40).map(|_| rng.below(600)).collect();
                    let vecs: Vec<f32> = (0..ids.len() * dim).map(|_| rng.f32()).collect();
                    let pays: Vec<Payload> = ids.iter().map(|i| payload(*i + step)).collect();
                    c.upsert(&ids, &vecs, &pays).unwrap();
                    for (j, id) in ids.iter().enumerate() {
                        let v = &vecs[j * dim..(j + 1) * dim];
                        let stored = if metric == Metric::Cosine {
                            normalized(v)
                        } else {
                            v.to_vec()
                        };
                        model.insert(*id, (stored, pays[j].clone()));
                    }
                }
            }
            c.wait_idle().unwrap();
            let st = c.stats().unwrap();
            assert!(
                st.segments.len() >= 3 || st.background.merges_done > 0,
                "expected several sealed segments: {st:?}"
            );
            check(&c, &model, metric, &mut rng);
        }
        let db = Database::open(dir.path(), opts(150)).unwrap();
        let c = db.collection("c").unwrap();
        check(&c, &model, metric, &mut rng);
    }
}

fn check(c: &trovedb::Collection, model: &Model, metric: Metric, rng: &mut Rng) {
    assert_eq!(c.len(), model.len());
    for id in 0..600 {
        let got = c.get(id).unwrap();
        match model.get(&id) {
            None => assert!(got.is_none(), "id {id} should be absent"),
            Some((v, p)) => {
                let got = got.unwrap_or_else(|| panic!("id {id} missing"));
                assert_eq!(&got.payload, p);
                for (a, b) in got.vector.iter().zip(v) {
                    assert!((a - b).abs() < 1e-5, "id {id} vector differs");
                }
            }
        }
    }
    let params = SearchParams::default();
    for k in [1, 10, 50] {
        for _ in 0..10 {
            let q = rng.vector(c.dim());
            let hits = c.search(&q, k, &params).unwrap();
            assert_exact(metric, model, &q, &hits, k);
        }
    }
    // Filtered exact search equals the oracle over the passing points.
    let f =
        trovedb::Filter::from_json(&serde_json::json!({"n": {"$lt": 300}, "flag": true})).unwrap();
    let passing: Model = model
        .iter()
        .filter(|(_, (_, p))| f.matches(p))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert_eq!(c.count(&f).unwrap(), passing.len());
    for _ in 0..5 {
        let q = rng.vector(c.dim());
        let hits = c
            .search(&q, 10, &SearchParams::default().with_filter(f.clone()))
            .unwrap();
        assert_exact(metric, &passing, &q, &hits, 10);
    }
    // Batch search equals one-at-a-time search.
    let qs: Vec<f32> = (0..5 * c.dim()).map(|_| rng.f32()).collect();
    let batch = c.search_batch(&qs, 7, &params).unwrap();
    for (i, q) in qs.chunks(c.dim()).enumerate() {
        assert_eq!(batch[i], c.search(q, 7, &params).unwrap());
    }
}

#[test]
fn overwrite_delete_and_payload_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), opts(1000)).unwrap();
    let c = db
        .create_collection("c", &CollectionConfig::new(2, Metric::L2))
        .unwrap();
    c.upsert(
        &[1, 2, 3],
        &[0.0, 0.0, 1.0, 0.0, 2.0, 0.0],
        &[payload(1), payload(2), payload(3)],
    )
    .unwrap();
    c.flush().unwrap();
    // Overwrite a sealed point, and a repeated id in one batch keeps the last.
    c.upsert(&[1, 1], &[9.0, 9.0, 5.0, 5.0], &[payload(10), payload(11)])
        .unwrap();
    assert_eq!(c.len(), 3);
    let p = c.get(1).unwrap().unwrap();
    assert_eq!((p.vector, p.payload), (vec![5.0, 5.0], payload(11)));
    let hits = c
        .search(&[5.0, 5.0], 1, &SearchParams::default().with_payload(true))
        .unwrap();
    assert_eq!((hits[0].id, hits[0].distance), (1, 0.0));
    assert_eq!(hits[0].payload.as_ref(), Some(&payload(11)));
    // Deletes: sealed, appendable, unknown, repeated.
    assert_eq!(c.delete(&[2, 1, 77, 2]).unwrap(), 2);
    assert_eq!(c.len(), 1);
    assert!(c.get(2).unwrap().is_none());
    let hits = c.search(&[0.0, 0.0], 10, &SearchParams::default()).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![3]);
    drop(c);
    db.close().unwrap();
    let db = Database::open(dir.path(), opts(1000)).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c.get(3).unwrap().unwrap().payload, payload(3));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), opts(1000)).unwrap();
    assert!(matches!(
        db.create_collection("x", &CollectionConfig::new(0, Metric::L2)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        db.create_collection("../evil", &CollectionConfig::new(2, Metric::L2)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Metric::parse("hamming"),
        Err(Error::InvalidArgument { .. })
    ));
    let c = db
        .create_collection("c", &CollectionConfig::new(3, Metric::Cosine))
        .unwrap();
    assert!(matches!(
        db.create_collection("c", &CollectionConfig::new(3, Metric::L2)),
        Err(Error::CollectionExists { .. })
    ));
    assert!(matches!(
        db.collection("nope"),
        Err(Error::CollectionNotFound { .. })
    ));
    c.upsert(&[1], &[1.0, 0.0, 0.0], &[]).unwrap();
    let before = c.stats().unwrap().last_lsn;
    assert!(matches!(
        c.upsert(&[2, 3], &[1.0, 2.0, 3.0, 4.0], &[]),
        Err(Error::DimensionMismatch {
            expected: 3,
            got: 2
        })
    ));
    assert!(matches!(
        c.upsert(&[2, 3], &[1.0, 2.0, 3.0, 4.0, f32::NAN, 6.0], &[]),
        Err(Error::NonFiniteValue { id: 3, index: 1 })
    ));
    assert!(matches!(
        c.upsert(&[2], &[f32::INFINITY, 0.0, 0.0], &[]),
        Err(Error::NonFiniteValue { .. })
    ));
    assert!(matches!(
        c.upsert(&[2], &[0.0, 0.0, 0.0], &[]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.upsert(&[2], &[1.0, 0.0, 0.0], &[Payload::new(), Payload::new()]),
        Err(Error::InvalidArgument { .. })
    ));
    let mut bad = Payload::new();
    bad.insert("f".into(), Value::Float(f64::NAN));
    assert!(matches!(
        c.upsert(&[2], &[1.0, 0.0, 0.0], &[bad]),
        Err(Error::InvalidArgument { .. })
    ));
    let p = SearchParams::default();
    assert!(matches!(
        c.search(&[1.0, 0.0, 0.0], 0, &p),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.search(&[1.0, 0.0], 1, &p),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(
        c.search(&[f32::NAN, 0.0, 0.0], 1, &p),
        Err(Error::NonFiniteQuery { query: 0, index: 0 })
    ));
    // An empty batch is a no-op; k beyond the collection returns what there is.
    c.upsert(&[], &[], &[]).unwrap();
    assert_eq!(c.search(&[1.0, 0.0, 0.0], 1000, &p).unwrap().len(), 1);
    assert_eq!(
        c.stats().unwrap().last_lsn,
        before,
        "refused writes must not reach the log"
    );
    assert_eq!(c.len(), 1);
    // Huge ids are ordinary ids, except u64::MAX: it marks padding in batched results.
    c.upsert(&[u64::MAX - 1], &[0.0, 1.0, 0.0], &[]).unwrap();
    assert_eq!(c.get(u64::MAX - 1).unwrap().unwrap().id, u64::MAX - 1);
    let e = c.upsert(&[u64::MAX], &[0.0, 1.0, 0.0], &[]).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(c.get(u64::MAX).unwrap().is_none());
}

#[test]
fn collections_create_list_drop_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), opts(1000)).unwrap();
    let a = db
        .create_collection("a", &CollectionConfig::new(2, Metric::L2))
        .unwrap();
    db.create_collection("b.v2", &CollectionConfig::new(4, Metric::Dot))
        .unwrap();
    assert_eq!(db.list_collections().unwrap(), vec!["a", "b.v2"]);
    a.upsert(&[1], &[1.0, 1.0], &[]).unwrap();
    db.drop_collection("a").unwrap();
    assert!(matches!(
        a.upsert(&[2], &[1.0, 1.0], &[]),
        Err(Error::Closed)
    ));
    assert_eq!(db.list_collections().unwrap(), vec!["b.v2"]);
    let a = db
        .create_collection("a", &CollectionConfig::new(3, Metric::L2))
        .unwrap();
    assert!(a.is_empty(), "a recreated collection starts empty");
    db.close().unwrap();
    assert!(matches!(a.get(1), Err(Error::Closed)));
    assert!(matches!(db.list_collections(), Err(Error::Closed)));
    let db = Database::open(dir.path(), opts(1000)).unwrap();
    assert_eq!(db.collection("b.v2").unwrap().metric(), Metric::Dot);
    assert_eq!(db.collection("a").unwrap().dim(), 3);
}

#[test]
fn more_bad_input_and_documented_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), opts(4)).unwrap();
    let c = db
        .create_collection("c", &CollectionConfig::new(2, Metric::L2))
        .unwrap();
    for i in 0..6u64 {
        c.upsert(&[i], &[i as f32, 0.0], &[payload(i)]).unwrap();
    }
    let before = c.stats().unwrap().last_lsn;
    let p = SearchParams::default();
    // Batch search: a ragged query buffer, NaN in the second query.
    assert!(matches!(
        c.search_batch(&[0.0, 0.0, 1.0], 1, &p),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.search_batch(&[0.0, 0.0, 1.0, f32::NEG_INFINITY, 0.0, 0.0], 1, &p),
        Err(Error::NonFiniteQuery { query: 1, index: 1 })
    ));
    assert!(matches!(
        c.search_batch(&[0.0, 0.0], 0, &p),
        Err(Error::InvalidArgument { .. })
    ));
    // Payloads: a key over 256 bytes, a string over 1 MiB, nested JSON.
    let mut long_key = Payload::new();
    long_key.insert("k".repeat(300), Value::Int(1));
    let mut huge = Payload::new();
    huge.insert("s".into(), Value::Str("x".repeat(1 << 20)));
    for bad in [long_key, huge] {
        assert!(matches!(
            c.upsert(&[9], &[9.0, 9.0], &[bad]),
            Err(Error::InvalidArgument { .. })
        ));
    }
    let mut deep = serde_json::json!("leaf");
    for _ in 0..100 {
        deep = serde_json::json!([deep]);
    }
    assert!(trovedb::payload_from_json(&serde_json::json!({ "d": deep })).is_err());
    assert!(trovedb::payload_from_json(&serde_json::json!({"d": {"a": 1}})).is_err());
    // Malformed filters are refused when parsed, so no entry point sees them.
    for f in [
        r#"{"a": {"$bogus": 1}}"#,
        r#"{"$or": 3}"#,
        r#"{"a": {"$in": 5}}"#,
        "[",
        "",
    ] {
        assert!(
            matches!(
                trovedb::Filter::from_json_str(f),
                Err(Error::InvalidArgument { .. })
            ),
            "{f}"
        );
    }
    assert_eq!(c.stats().unwrap().last_lsn, before);
    assert_eq!(c.len(), 6);
    // Unicode keys and values round-trip.
    let mut uni = Payload::new();
    uni.insert("ключ ✓ 鍵".into(), Value::Str("значение 🙂".into()));
    c.upsert(&[7], &[7.0, 0.0], &[uni.clone()]).unwrap();
    assert_eq!(c.get(7).unwrap().unwrap().payload, uni);
    // Duplicate ids in one batch: the last occurrence wins, also after a seal and a reopen.
    c.upsert(
        &[8, 8, 8],
        &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
        &[payload(1), payload(2), payload(3)],
    )
    .unwrap();
    let check = |c: &trovedb::Collection| {
        assert_eq!(c.len(), 8);
        let got = c.get(8).unwrap().unwrap();
        assert_eq!((got.vector, got.payload), (vec![3.0, 3.0], payload(3)));
        let hits = c.search(&[3.0, 3.0], 2, &p).unwrap();
        assert_eq!(hits[0].id, 8);
        assert_ne!(hits[1].id, 8, "a duplicate id must not appear twice");
    };
    check(&c);
    c.flush().unwrap();
    check(&c);
    drop(c);
    db.close().unwrap();
    let db = Database::open(dir.path(), opts(4)).unwrap();
    check(&db.collection("c").unwrap());
}

#[test]
fn get_or_create_opens_the_same_config_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let cfg = CollectionConfig::new(3, Metric::L2);
    let c = db.get_or_create_collection("c", &cfg).unwrap();
    c.upsert(&[1], &[1.0, 2.0, 3.0], &[]).unwrap();
    assert_eq!(db.get_or_create_collection("c", &cfg).unwrap().len(), 1);
    let other = CollectionConfig::new(4, Metric::Cosine);
    match db.get_or_create_collection("c", &other) {
        Err(Error::InvalidArgument {
            name: "config",
            reason,
        }) => {
            assert!(
                reason.contains("dim 3 (asked 4)") && reason.contains("metric l2"),
                "{reason}"
            );
        }
        r => panic!("expected InvalidArgument, got {r:?}"),
    }
    // The stored config has `Quantization::Auto` resolved (none for a flat collection).
    assert_eq!(db.collection("c").unwrap().config(), &cfg.resolved());
    let sq8 = CollectionConfig {
        quantization: trovedb::Quantization::parse("sq8").unwrap(),
        ..cfg.clone()
    };
    match db.get_or_create_collection("c", &sq8) {
        Err(Error::InvalidArgument {
            name: "config",
            reason,
        }) => assert!(reason.contains("quantization None"), "{reason}"),
        r => panic!("expected InvalidArgument, got {r:?}"),
    }
}
