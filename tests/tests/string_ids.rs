//! String ids: a collection keyed by strings through upsert, overwrite, delete, payload
//! updates, seals, merges, compaction and reopening, checked against a dictionary model;
//! collisions of the 64-bit ids refused (never an overwrite); bad ids refused with nothing
//! written; `$id` filters; scrolling; search by a stored point.

use std::collections::{BTreeMap, HashMap};

use trovedb::{
    str_id, CollectionConfig, Database, DbOptions, Error, Filter, Hit, IdType, Metric, Payload,
    PayloadUpdate, SearchParams, Value, MAX_STR_ID_BYTES,
};
use trovedb_tests::{assert_exact, normalized, seed, Model, Rng};

const DIM: usize = 9;

/// The key universe: plain, path-like, UUID-like, unicode, with spaces, and one at the
/// length limit.
fn universe() -> Vec<String> {
    let mut keys: Vec<String> = (0..240)
        .map(|i| match i % 6 {
            0 => format!("doc-{i}#0"),
            1 => format!("/data/corpus/file {i}.txt#chunk-{}", i % 5),
            2 => format!("{i:08x}-e29b-41d4-a716-446655440000"),
            3 => format!("ключ-{i}-日本語"),
            4 => format!("{i}"),
            _ => format!("k{i}\u{0}tail"),
        })
        .collect();
    keys.push("x".repeat(MAX_STR_ID_BYTES));
    keys.push("\u{1F600} emoji".into());
    keys
}

type StrModel = BTreeMap<String, (Vec<f32>, Payload)>;

fn payload(rng: &mut Rng, step: u64) -> Payload {
    let mut p = Payload::new();
    p.insert("step".into(), Value::Int(step as i64));
    p.insert("bucket".into(), Value::Int(rng.below(4) as i64));
    if rng.below(3) == 0 {
        p.insert("note".into(), Value::Str(format!("n{}", rng.below(10))));
    }
    p
}

fn config(metric: Metric) -> CollectionConfig {
    CollectionConfig {
        id_type: IdType::Str,
        ..CollectionConfig::new(DIM, metric)
    }
}

/// The model as an integer-keyed one (key -> its position in the universe) for the
/// brute-force oracle, and hits translated the same way through their keys.
fn as_int_model(model: &StrModel, pos: &HashMap<String, u64>) -> Model {
    model.iter().map(|(k, v)| (pos[k], v.clone())).collect()
}

fn translate(hits: &[Hit], pos: &HashMap<String, u64>) -> Vec<Hit> {
    hits.iter()
        .map(|h| {
            let key = h.key.as_ref().expect("string-id hits carry their key");
            assert_eq!(h.id, str_id(key), "hit id is the key's 64-bit id");
            Hit {
                id: pos[key],
                ..h.clone()
            }
        })
        .collect()
}

fn check(
    c: &trovedb::Collection,
    model: &StrModel,
    keys: &[String],
    metric: Metric,
    rng: &mut Rng,
) {
    let pos: HashMap<String, u64> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u64))
        .collect();
    assert_eq!(c.len(), model.len());
    for k in keys {
        let got = c.get_str(k).unwrap();
        match model.get(k) {
            None => assert!(got.is_none(), "{k:?} should be absent"),
            Some((v, p)) => {
                let got = got.unwrap_or_else(|| panic!("{k:?} missing"));
                assert_eq!(got.key.as_deref(), Some(k.as_str()));
                assert_eq!(&got.payload, p, "{k:?}: payload");
                assert!(!got.payload.contains_key(""), "the key field never shows");
                for (a, b) in got.vector.iter().zip(v) {
                    assert!((a - b).abs() < 1e-5, "{k:?} vector differs");
                }
            }
        }
    }
    // Scrolling in pages visits every point once, in the order of the 64-bit ids.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = c.scroll(None, after, 37).unwrap();
        for p in &page.points {
            let k = p.key.clone().unwrap();
            assert_eq!(&p.payload, &model[&k].1);
            seen.push((p.id, k));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut want: Vec<(u64, String)> = model.keys().map(|k| (str_id(k), k.clone())).collect();
    want.sort();
    assert_eq!(seen, want, "scroll");
    // A filtered scroll sees exactly the passing points.
    let f = Filter::from_json(&serde_json::json!({"bucket": {"$lte": 1}})).unwrap();
    let mut n = 0;
    let mut after = None;
    loop {
        let page = c.scroll(Some(&f), after, 50).unwrap();
        n += page.points.len();
        assert!(page.points.iter().all(|p| f.matches(&p.payload)));
        match page.next {
            Some(x) => after = Some(x),
            None => break,
        }
    }
    assert_eq!(n, model.values().filter(|(_, p)| f.matches(p)).count());

    let int_model = as_int_model(model, &pos);
    let params = SearchParams::default().with_payload(true);
    for k in [1, 10, 40] {
        let q = rng.vector(DIM);
        let hits = c.search(&q, k, &params).unwrap();
        for h in &hits {
            let key = h.key.as_ref().unwrap();
            assert_eq!(h.payload.as_ref(), Some(&model[key].1));
        }
        assert_exact(metric, &int_model, &q, &translate(&hits, &pos), k);
        // Without payloads the keys still come back.
        let bare = c.search(&q, k, &SearchParams::default()).unwrap();
        assert_eq!(
            bare.iter().map(|h| h.key.clone()).collect::<Vec<_>>(),
            hits.iter().map(|h| h.key.clone()).collect::<Vec<_>>()
        );
    }
    // `$id` selects by string id: `$in` over a mix of present and absent keys, `$nin`.
    let pick: Vec<String> = keys.iter().step_by(7).cloned().collect();
    let f_in = Filter::from_json(&serde_json::json!({"$id": {"$in": pick}})).unwrap();
    let present = pick.iter().filter(|k| model.contains_key(*k)).count();
    assert_eq!(c.count(&f_in).unwrap(), present);
    let f_nin = Filter::from_json(&serde_json::json!({"$id": {"$nin": pick}})).unwrap();
    assert_eq!(c.count(&f_nin).unwrap(), model.len() - present);
    let q = rng.vector(DIM);
    let kept: Model = int_model
        .iter()
        .filter(|(i, _)| !pick.contains(&keys[**i as usize]))
        .map(|(i, v)| (*i, v.clone()))
        .collect();
    let hits = c
        .search(&q, 10, &SearchParams::default().with_filter(f_nin))
        .unwrap();
    assert_exact(metric, &kept, &q, &translate(&hits, &pos), 10);
    // More like this: the point itself left out, the rest exact.
    if let Some((k0, _)) = model.iter().next() {
        let v = &model[k0].0;
        let others: Model = int_model
            .iter()
            .filter(|(i, _)| keys[**i as usize] != *k0)
            .map(|(i, v)| (*i, v.clone()))
            .collect();
        let hits = c.search_by_str_id(k0, 5, &SearchParams::default()).unwrap();
        assert_exact(metric, &others, v, &translate(&hits, &pos), 5);
    }
}

/// Random upserts, overwrites, deletes and payload updates over many segments, with merges,
/// compaction and reopening, against the dictionary model.
#[test]
fn string_ids_match_a_dict_model_through_seal_compact_reopen() {
    for (metric, s) in [(Metric::L2, 11), (Metric::Cosine, 12)] {
        let mut rng = Rng::new(seed(s));
        let keys = universe();
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions::default().seal_threshold_rows(70);
        let mut model = StrModel::new();
        let db = Database::open(dir.path(), opts.clone()).unwrap();
        let mut c = db.create_collection("s", &config(metric)).unwrap();
        let mut db = Some(db);
        for step in 0..80u64 {
            let pick = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize].clone();
            match step % 8 {
                3 => {
                    let del: Vec<String> = (0..12).map(|_| pick(&mut rng)).collect();
                    let mut distinct = del.clone();
                    distinct.sort();
                    distinct.dedup();
                    let existing = distinct.iter().filter(|k| model.contains_key(*k)).count();
                    assert_eq!(c.delete_str(&del).unwrap(), existing);
                    for k in &del {
                        model.remove(k);
                    }
                }
                5 => {
                    // Merge a patch into some existing points, replace another's payload.
                    let have: Vec<String> = model.keys().cloned().collect();
                    if have.len() < 3 {
                        continue;
                    }
                    let chosen: Vec<String> = (0..4)
                        .map(|_| have[rng.below(have.len() as u64) as usize].clone())
                        .collect();
                    let mut patch = Payload::new();
                    patch.insert("bucket".into(), Value::Int(9));
                    patch.insert("patched".into(), Value::Bool(true));
                    c.update_payload_str(&chosen, &[patch.clone()], PayloadUpdate::Merge)
                        .unwrap();
                    for k in &chosen {
                        let p = &mut model.get_mut(k).unwrap().1;
                        p.extend(patch.clone());
                    }
                    let one = vec![have[0].clone()];
                    let mut new = Payload::new();
                    new.insert("only".into(), Value::Str("this".into()));
                    c.update_payload_str(&one, &[new.clone()], PayloadUpdate::Replace)
                        .unwrap();
                    model.get_mut(&have[0]).unwrap().1 = new;
                }
                7 if step % 16 == 7 => {
                    c.compact().unwrap();
                }
                7 => {
                    drop(c);
                    db.take().unwrap().close().unwrap();
                    let reopened = Database::open(dir.path(), opts.clone()).unwrap();
                    c = reopened.collection("s").unwrap();
                    db = Some(reopened);
                }
                _ => {
                    let batch: Vec<String> = (0..30).map(|_| pick(&mut rng)).collect();
                    let vecs: Vec<f32> = (0..batch.len() * DIM).map(|_| rng.f32() - 0.5).collect();
                    let pays: Vec<Payload> =
                        batch.iter().map(|_| payload(&mut rng, step)).collect();
                    c.upsert_str(&batch, &vecs, &pays).unwrap();
                    for (j, k) in batch.iter().enumerate() {
                        let v = &vecs[j * DIM..(j + 1) * DIM];
                        let stored = if metric == Metric::Cosine {
                            normalized(v)
                        } else {
                            v.to_vec()
                        };
                        model.insert(k.clone(), (stored, pays[j].clone()));
                    }
                }
            }
            if step % 10 == 9 {
                check(&c, &model, &keys, metric, &mut rng);
            }
        }
        c.wait_idle().unwrap();
        assert!(!c.stats().unwrap().segments.is_empty());
        check(&c, &model, &keys, metric, &mut rng);
        c.verify().unwrap();
        drop(c);
        db.take().unwrap().close().unwrap();
        let db = Database::open(dir.path(), opts).unwrap();
        let c = db.collection("s").unwrap();
        assert_eq!(c.config().id_type, IdType::Str);
        check(&c, &model, &keys, metric, &mut rng);
    }
}

/// With ids narrowed to 6 bits (a test hook), different keys meet the same id constantly:
/// every such write is refused with `IdCollision` naming both keys and changes nothing; a
/// colliding key that is not stored is never found, deleted, updated or matched by `$id`.
#[test]
fn colliding_string_ids_are_refused_never_overwritten() {
    trovedb::testing::narrow_str_ids(6, || {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), DbOptions::default().seal_threshold_rows(20)).unwrap();
        let c = db.create_collection("s", &config(Metric::L2)).unwrap();
        let mut stored: BTreeMap<u64, String> = BTreeMap::new();
        let mut refused = 0;
        for i in 0..300u32 {
            let key = format!("key-{i}");
            let id = str_id(&key);
            assert!(id < 64);
            let v = vec![i as f32; DIM];
            match c.upsert_str(&[&key], &v, &[]) {
                Ok(()) => {
                    assert!(!stored.contains_key(&id) || stored[&id] == key);
                    stored.insert(id, key.clone());
                }
                Err(Error::IdCollision { key: k, stored: s }) => {
                    assert_eq!(k, key);
                    assert_eq!(Some(&s), stored.get(&id));
                    refused += 1;
                    // The stored point is untouched, the new key absent.
                    let p = c.get_str(&s).unwrap().unwrap();
                    assert_eq!(p.key.as_deref(), Some(s.as_str()));
                    assert!(c.get_str(&key).unwrap().is_none());
                    assert_eq!(c.delete_str(&[&key]).unwrap(), 0);
                    assert!(matches!(
                        c.update_payload_str(&[&key], &[Payload::new()], PayloadUpdate::Merge),
                        Err(Error::PointNotFound { .. })
                    ));
                    let f = Filter::from_json(&serde_json::json!({"$id": key})).unwrap();
                    assert_eq!(c.count(&f).unwrap(), 0);
                    let f = Filter::from_json(&serde_json::json!({"$id": s})).unwrap();
                    assert_eq!(c.count(&f).unwrap(), 1);
                }
                Err(e) => panic!("unexpected {e}"),
            }
            if i == 150 {
                c.flush().unwrap();
            }
        }
        assert!(refused > 200, "collisions should be frequent: {refused}");
        assert_eq!(c.len(), stored.len());
        // Two different keys with the same id in one batch: refused as a whole.
        let fresh: Vec<String> = (1000..1200).map(|i| format!("key-{i}")).collect();
        let (a, b) = fresh
            .iter()
            .enumerate()
            .find_map(|(i, a)| {
                fresh[i + 1..]
                    .iter()
                    .find(|b| str_id(b) == str_id(a))
                    .map(|b| (a.clone(), b.clone()))
            })
            .unwrap();
        let before = c.len();
        let err = c.upsert_str(&[&a, &b], &[0.0; 2 * DIM], &[]).unwrap_err();
        assert!(matches!(err, Error::IdCollision { .. }), "{err}");
        assert_eq!(c.len(), before);
        // Reopened (the log and a segment), the same keys under the same ids.
        drop(c);
        db.close().unwrap();
        let db = Database::open(dir.path(), DbOptions::default()).unwrap();
        let c = db.collection("s").unwrap();
        for (id, key) in &stored {
            let p = c.get_str(key).unwrap().unwrap();
            assert_eq!(p.id, *id);
        }
    });
}

/// Bad ids and calls for the other id kind are refused with a message naming the problem,
/// and nothing is written.
#[test]
fn bad_string_ids_are_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let s = db.create_collection("s", &config(Metric::Cosine)).unwrap();
    let i = db
        .create_collection("i", &CollectionConfig::new(DIM, Metric::Cosine))
        .unwrap();
    let v = vec![0.5; 3 * DIM];
    let msg = |e: Error| e.to_string();
    let e = msg(s.upsert_str(&["a", "b", ""], &v, &[]).unwrap_err());
    assert!(e.contains("position 2") && e.contains("empty"), "{e}");
    let long = "y".repeat(MAX_STR_ID_BYTES + 1);
    let e = msg(s.upsert_str(&["a", &long, "c"], &v, &[]).unwrap_err());
    assert!(e.contains("position 1") && e.contains("1025 bytes"), "{e}");
    let mut bad = v.clone();
    bad[DIM + 3] = f32::NAN;
    let e = msg(s.upsert_str(&["a", "b", "c"], &bad, &[]).unwrap_err());
    assert!(e.contains("\"b\"") && e.contains("component 3"), "{e}");
    let mut p = Payload::new();
    p.insert(String::new(), Value::Str("sneaky".into()));
    let e = msg(s
        .upsert_str(&["a", "b", "c"], &v, &[Payload::new(), p, Payload::new()])
        .unwrap_err());
    assert!(e.contains("field names"), "{e}");
    let e = msg(s.upsert(&[1, 2, 3], &v, &[]).unwrap_err());
    assert!(e.contains("keyed by strings"), "{e}");
    let e = msg(i.upsert_str(&["a", "b", "c"], &v, &[]).unwrap_err());
    assert!(e.contains("keyed by integers"), "{e}");
    assert_eq!(s.len(), 0);
    assert_eq!(i.len(), 0);
    // `$id` of the wrong kind.
    let f = Filter::from_json(&serde_json::json!({"$id": 3})).unwrap();
    let e = msg(s.count(&f).unwrap_err());
    assert!(e.contains("keyed by strings"), "{e}");
    let f = Filter::from_json(&serde_json::json!({"$id": {"$in": ["x"]}})).unwrap();
    let e = msg(i.count(&f).unwrap_err());
    assert!(e.contains("keyed by integers"), "{e}");
    for bad in [
        serde_json::json!({"$id": -1}),
        serde_json::json!({"$id": 1.5}),
        serde_json::json!({"$id": {"$gt": 3}}),
        serde_json::json!({"$id": {"$in": [1, null]}}),
        serde_json::json!({"": 1}),
    ] {
        assert!(Filter::from_json(&bad).is_err(), "{bad}");
    }
    // Empty batches are no-ops.
    s.upsert_str::<&str>(&[], &[], &[]).unwrap();
    assert_eq!(s.delete_str::<&str>(&[]).unwrap(), 0);
}

/// `update_payload` on an integer-keyed collection: merge and replace, the vector kept bit
/// for bit, text fields re-indexed, a missing id refusing the whole batch, durable.
#[test]
fn update_payload_merges_replaces_and_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CollectionConfig {
        text: Some(trovedb::TextConfig::new(["text"])),
        ..CollectionConfig::new(DIM, Metric::Cosine)
    };
    let mut rng = Rng::new(seed(5));
    let vecs: Vec<f32> = (0..40 * DIM).map(|_| rng.f32() - 0.5).collect();
    let ids: Vec<u64> = (0..40).collect();
    let pays: Vec<Payload> = ids
        .iter()
        .map(|i| {
            let mut p = Payload::new();
            p.insert("n".into(), Value::Int(*i as i64));
            p.insert("text".into(), Value::Str(format!("apple number {i}")));
            p
        })
        .collect();
    let before: Vec<Vec<f32>>;
    {
        let db = Database::open(dir.path(), DbOptions::default().seal_threshold_rows(25)).unwrap();
        let c = db.create_collection("c", &cfg).unwrap();
        c.upsert(&ids, &vecs, &pays).unwrap();
        c.wait_idle().unwrap();
        before = ids
            .iter()
            .map(|i| c.get(*i).unwrap().unwrap().vector)
            .collect();
        let mut patch = Payload::new();
        patch.insert("text".into(), Value::Str("banana".into()));
        patch.insert("extra".into(), Value::Bool(true));
        c.update_payload(&[3, 30, 3], &[patch], PayloadUpdate::Merge)
            .unwrap();
        let mut only = Payload::new();
        only.insert("m".into(), Value::Int(-1));
        c.update_payload(&[7], &[only], PayloadUpdate::Replace)
            .unwrap();
        // A missing id refuses the whole batch.
        let e = c
            .update_payload(&[1, 999, 2], &[Payload::new()], PayloadUpdate::Replace)
            .unwrap_err();
        assert!(
            matches!(&e, Error::PointNotFound { id, position: 1 } if id == "999"),
            "{e}"
        );
        // A patch that breaks the text field's type is refused, nothing changed.
        let mut wrong = Payload::new();
        wrong.insert("text".into(), Value::Int(5));
        assert!(c
            .update_payload(&[1], &[wrong], PayloadUpdate::Merge)
            .is_err());
        // Patch count must be 1 or one per id.
        assert!(c
            .update_payload(
                &[1, 2, 4],
                &[Payload::new(), Payload::new()],
                PayloadUpdate::Merge
            )
            .is_err());
    }
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let c = db.collection("c").unwrap();
    for i in &ids {
        let p = c.get(*i).unwrap().unwrap();
        assert_eq!(
            p.vector, before[*i as usize],
            "vector of {i} kept bit for bit"
        );
        let want = match i {
            3 | 30 => {
                let mut w = pays[*i as usize].clone();
                w.insert("text".into(), Value::Str("banana".into()));
                w.insert("extra".into(), Value::Bool(true));
                w
            }
            7 => [("m".to_string(), Value::Int(-1))].into_iter().collect(),
            _ => pays[*i as usize].clone(),
        };
        assert_eq!(p.payload, want, "payload of {i}");
    }
    let hits = c
        .search_text("banana", 10, &SearchParams::default())
        .unwrap();
    let mut got: Vec<u64> = hits.iter().map(|h| h.id).collect();
    got.sort_unstable();
    assert_eq!(got, vec![3, 30]);
    let hits = c
        .search_text("apple", 50, &SearchParams::default())
        .unwrap();
    assert_eq!(hits.len(), 37, "3, 7 and 30 no longer say apple");
    // `$id` on integer ids, and search by id excluding itself.
    let f = Filter::from_json(&serde_json::json!({"$id": {"$in": [1, 2, 500]}})).unwrap();
    assert_eq!(c.count(&f).unwrap(), 2);
    let hits = c.search_by_id(5, 3, &SearchParams::default()).unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.id != 5));
    assert!(matches!(
        c.search_by_id(777, 3, &SearchParams::default()),
        Err(Error::PointNotFound { .. })
    ));
}

/// A scroll while writes continue: every point that exists from the first page to the last
/// is returned exactly once.
#[test]
fn scroll_is_stable_under_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default().seal_threshold_rows(64)).unwrap();
    let c = db
        .create_collection("c", &CollectionConfig::new(4, Metric::L2))
        .unwrap();
    // Even ids stay; odd ids are written and deleted during the scroll.
    let stable: Vec<u64> = (0..600).map(|i| i * 2).collect();
    c.upsert(&stable, &vec![1.0; stable.len() * 4], &[])
        .unwrap();
    let mut after = None;
    let mut seen = Vec::new();
    let mut round = 0u64;
    loop {
        let page = c.scroll(None, after, 23).unwrap();
        seen.extend(page.points.iter().map(|p| p.id));
        // Writes between pages: new odd ids everywhere, some deleted again.
        let odd: Vec<u64> = (0..20)
            .map(|j| ((round * 97 + j * 61) % 1200) | 1)
            .collect();
        c.upsert(&odd, &vec![2.0; odd.len() * 4], &[]).unwrap();
        c.delete(&odd[..10]).unwrap();
        if round.is_multiple_of(5) {
            c.flush().unwrap();
        }
        round += 1;
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut evens: Vec<u64> = seen.iter().copied().filter(|i| i % 2 == 0).collect();
    let total = evens.len();
    evens.dedup();
    assert_eq!(evens.len(), total, "no point twice");
    assert_eq!(evens, stable, "every stable point once, in id order");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "id order");
    assert!(c.scroll(None, None, 0).is_err());
}
