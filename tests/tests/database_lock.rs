//! One handle per database directory: a second opener, in this process or in another
//! one, gets `Error::Locked`; closing releases the lock.

use std::process::Command;

use trovedb::{Database, DbOptions, Error};

#[test]
fn second_opener_is_locked_until_close() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), DbOptions::default()).unwrap();
    assert!(matches!(
        Database::open(dir.path(), DbOptions::default()),
        Err(Error::Locked { .. })
    ));
    // Another process too: the crash writer exits with an error naming the lock.
    let out = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
        .arg(dir.path())
        .arg("100")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.close().unwrap();
    Database::open(dir.path(), DbOptions::default()).unwrap();
}
