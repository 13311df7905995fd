//! Every supported format version has a fixture written by that version
//! (`tests/fixtures/v<N>/`, made by `make_fixture`). This build must open a copy of each and
//! find exactly the expected points, with exact search agreeing with brute force.

use trovedb::{Database, DbOptions, Metric, SearchParams};
use trovedb_tests::{assert_exact, fixture_contents, normalized, repo_root, Rng};

#[test]
fn v1_fixture_opens_with_every_point_intact() {
    check_fixture(1);
}

#[test]
fn v2_fixture_opens_with_every_point_intact() {
    check_fixture(2);
}

#[test]
fn v3_fixture_opens_with_every_point_intact() {
    check_fixture(3);
}

fn check_fixture(version: u16) {
    let src = repo_root().join(format!("tests/fixtures/v{version}"));
    assert!(
        src.join("collections").is_dir(),
        "missing fixture {}",
        src.display()
    );
    let dir = tempfile::tempdir().unwrap();
    super::wal_recovery::copy_tree(&src, dir.path());
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    for (name, cfg, model) in fixture_contents(version) {
        let c = db.collection(name).unwrap();
        assert_eq!(c.config(), &cfg.resolved());
        assert_eq!(c.len(), model.len(), "{name}");
        let st = c.stats().unwrap();
        assert!(!st.segments.is_empty() && st.deleted > 0 && st.last_lsn > st.checkpoint_lsn);
        let stored = |v: &[f32]| {
            if cfg.metric == Metric::Cosine {
                normalized(v)
            } else {
                v.to_vec()
            }
        };
        let n = model.keys().max().unwrap() + 1;
        for id in 0..n {
            match (c.get(id).unwrap(), model.get(&id)) {
                (None, None) => {}
                (Some(p), Some((v, pl))) => {
                    assert_eq!(&p.payload, pl);
                    for (a, b) in p.vector.iter().zip(stored(v)) {
                        assert!((a - b).abs() < 1e-6);
                    }
                }
                (got, want) => panic!("{name} id {id}: got {got:?}, want {want:?}"),
            }
        }
        c.verify().unwrap();
        // Filters over the stored payloads (v2 reads the persisted payload index, v1
        // rebuilds it from the payloads) agree with the model.
        for json in [
            r#"{"i": {"$lt": 100}}"#,
            r#"{"t": "m1", "b": true}"#,
            r#"{"f": {"$gte": 10.5}}"#,
        ] {
            let f = trovedb::Filter::from_json_str(json).unwrap();
            let want = model.values().filter(|(_, p)| f.matches(p)).count();
            assert_eq!(c.count(&f).unwrap(), want, "{name} {json}");
        }
        let exact: trovedb_tests::Model = model
            .iter()
            .map(|(k, (v, p))| (*k, (stored(v), p.clone())))
            .collect();
        let mut rng = Rng::new(9);
        for _ in 0..10 {
            let q = rng.vector(cfg.dim);
            let params = SearchParams::default().with_payload(true);
            let flat = cfg.index == trovedb::IndexConfig::Flat;
            let params = match cfg.index {
                trovedb::IndexConfig::Flat => params,
                trovedb::IndexConfig::Hnsw { .. } => params.with_ef(500),
                trovedb::IndexConfig::IvfPq { .. } => params.with_nprobe(64),
                _ => params.with_probes(64),
            };
            let hits = c.search(&q, 5, &params).unwrap();
            if flat {
                assert_exact(cfg.metric, &exact, &q, &hits, 5);
            } else {
                assert_eq!(hits.len(), 5);
                assert!(hits.iter().all(|h| exact.contains_key(&h.id)));
            }
        }
    }
}
