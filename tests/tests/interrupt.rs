//! `trovedb::interruptible`: a call asked to stop before its safe point changes nothing
//! and says so; other threads' calls are unaffected.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use trovedb::{interruptible, CollectionConfig, Database, DbOptions, Error, Metric, SearchParams};

#[test]
fn calls_asked_to_stop_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    let c = db
        .create_collection("c", &CollectionConfig::new(4, Metric::L2))
        .unwrap();
    c.upsert(&[1, 2], &[0.0; 8], &[]).unwrap();
    let stop = Arc::new(AtomicBool::new(true));
    let r = interruptible(Arc::clone(&stop), || c.upsert(&[3], &[1.0; 4], &[]));
    assert!(
        matches!(
            r,
            Err(Error::Interrupted {
                operation: "upsert"
            })
        ),
        "{r:?}"
    );
    let r = interruptible(Arc::clone(&stop), || c.flush());
    assert!(
        matches!(r, Err(Error::Interrupted { operation: "flush" })),
        "{r:?}"
    );
    let r = interruptible(Arc::clone(&stop), || {
        c.search_batch(&[0.0; 8], 1, &SearchParams::default())
    });
    assert!(
        matches!(
            r,
            Err(Error::Interrupted {
                operation: "search"
            })
        ),
        "{r:?}"
    );
    // Nothing changed, the handle is not poisoned, and outside the closure calls work.
    assert_eq!(c.len(), 2);
    assert!(c.stats().unwrap().segments.is_empty());
    c.upsert(&[3], &[1.0; 4], &[]).unwrap();
    c.flush().unwrap();
    assert_eq!(c.stats().unwrap().segments.len(), 1);
    drop(c);
    db.close().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    assert_eq!(db.collection("c").unwrap().len(), 3);
}
