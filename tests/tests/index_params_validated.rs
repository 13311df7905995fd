//! Index parameters are checked by the same function at create time and when a manifest is
//! read (the index kind's `validate`): a parameter that a reopen would refuse is refused at
//! `create_collection`, naming the parameter, and nothing is created. Regression for
//! `m = 600`, `m = 1`, `nprobe = 0`, `refine = 0`, `probes = 0` being accepted at create and
//! the first sealed segment then refused as corrupt.

use trovedb::{CollectionConfig, Database, DbOptions, Error, IndexConfig, Metric};

fn hnsw(m: usize) -> IndexConfig {
    IndexConfig::Hnsw {
        m,
        ef_construction: 100,
        ef_search: 50,
        seed: 1,
    }
}

#[test]
fn create_refuses_what_open_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let bad = [
        ("m", hnsw(600)),
        ("m", hnsw(1)),
        (
            "ef_search",
            IndexConfig::Hnsw {
                m: 16,
                ef_construction: 100,
                ef_search: 0,
                seed: 1,
            },
        ),
        (
            "nprobe",
            IndexConfig::IvfPq {
                nlist: 0,
                pq_m: 0,
                nprobe: 0,
                refine: 10,
                seed: 1,
            },
        ),
        (
            "refine",
            IndexConfig::IvfPq {
                nlist: 0,
                pq_m: 0,
                nprobe: 8,
                refine: 0,
                seed: 1,
            },
        ),
        (
            "pq_m",
            IndexConfig::IvfPq {
                nlist: 0,
                pq_m: 5,
                nprobe: 8,
                refine: 4,
                seed: 1,
            },
        ),
        (
            "probes",
            IndexConfig::Lsh {
                tables: 8,
                bits: 0,
                probes: 0,
                seed: 1,
            },
        ),
    ];
    for (i, (param, index)) in bad.into_iter().enumerate() {
        let config = CollectionConfig {
            index: index.clone(),
            ..CollectionConfig::new(16, Metric::L2)
        };
        match db.create_collection(&format!("c{i}"), &config) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, param, "{index:?}"),
            other => panic!("{index:?} accepted or wrong error: {other:?}"),
        }
    }
    assert!(db.list_collections().unwrap().is_empty());
    // The largest graph degree a reopen accepts is accepted at create, and survives a seal and
    // a reopen.
    let config = CollectionConfig {
        index: hnsw(512),
        ..CollectionConfig::new(4, Metric::L2)
    };
    let c = db.create_collection("wide", &config).unwrap();
    let ids: Vec<u64> = (0..50).collect();
    let vs: Vec<f32> = (0..200).map(|x| x as f32).collect();
    c.upsert(&ids, &vs, &[]).unwrap();
    c.flush().unwrap();
    drop(c);
    db.close().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    assert_eq!(db.collection("wide").unwrap().len(), 50);
}
