//! Damaged files are reported, never silently used: a flipped byte in the middle of the
//! WAL (with good records after it), in a segment header, in a deletion file or in the
//! manifest each gives `Error::Corruption` naming the file; a truncated segment too. Other
//! collections of the same database still open.

use std::path::{Path, PathBuf};

use trovedb::{CollectionConfig, Database, DbOptions, Error, Metric};

fn build(dir: &Path, seal: bool) {
    let db = Database::open(dir, DbOptions::default()).unwrap();
    for name in ["bad", "good"] {
        let c = db
            .create_collection(name, &CollectionConfig::new(8, Metric::L2))
            .unwrap();
        for i in 0..40u64 {
            c.upsert(&[i], &[i as f32; 8], &[]).unwrap();
        }
        if seal {
            c.flush().unwrap();
        }
        if seal && name == "bad" {
            c.delete(&[1, 2]).unwrap();
            c.flush().unwrap();
        }
    }
}

fn coll_dir(dir: &Path) -> PathBuf {
    dir.join("collections").join("bad")
}

fn flip(path: &Path, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

fn expect_corruption(dir: &Path, file_name_part: &str) -> u64 {
    let db = Database::open(dir, DbOptions::default()).unwrap();
    let err = db.collection("bad").unwrap_err();
    let (file, offset) = match &err {
        Error::Corruption { file, offset, .. } => (file.clone(), *offset),
        other => panic!("expected Corruption, got {other:?}"),
    };
    assert!(
        file.to_string_lossy().contains(file_name_part),
        "error names {} instead of a {file_name_part} file",
        file.display()
    );
    assert!(err.to_string().contains(&file.display().to_string()));
    // The damaged collection does not take the database down with it.
    assert_eq!(db.collection("good").unwrap().len(), 40);
    drop(db);
    // Opening everything reports it by name with the same error, and opens the rest.
    let db = Database::open(dir, DbOptions::default()).unwrap();
    let report = db.open_all().unwrap();
    assert_eq!(report.opened, vec!["good".to_owned()]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, "bad");
    assert_eq!(report.failed[0].1.to_string(), err.to_string());
    assert_eq!(db.collection("good").unwrap().len(), 40);
    offset
}

fn find(dir: &Path, ext: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(ext))
        .unwrap_or_else(|| panic!("no {ext} file in {}", dir.display()))
}

#[test]
fn flipped_byte_mid_wal_is_corruption_with_offset() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false);
    let wal = find(&coll_dir(dir.path()).join("wal"), ".log");
    let len = std::fs::metadata(&wal).unwrap().len() as usize;
    // Record 5 of 40: header 32 bytes, then equal records.
    let rec = (len - 32) / 40;
    for within in [0, 5, 9, 16, 20, rec - 1] {
        let copy = tempfile::tempdir().unwrap();
        super::wal_recovery::copy_tree(dir.path(), copy.path());
        let w = find(&coll_dir(copy.path()).join("wal"), ".log");
        flip(&w, 32 + 5 * rec + within);
        let offset = expect_corruption(copy.path(), "wal-");
        assert_eq!(offset as usize, 32 + 5 * rec, "offset of the bad record");
    }
}

#[test]
fn flipped_byte_in_segment_header_or_deletes_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true);
    for (ext, offsets) in [
        (".seg", vec![0usize, 9, 20, 40, 100, 296]),
        (".del", vec![0, 20, 30]),
    ] {
        for off in offsets {
            let copy = tempfile::tempdir().unwrap();
            super::wal_recovery::copy_tree(dir.path(), copy.path());
            flip(&find(&coll_dir(copy.path()), ext), off);
            let db = Database::open(copy.path(), DbOptions::default()).unwrap();
            match db.collection("bad") {
                Err(Error::Corruption { file, .. }) => {
                    assert!(file.to_string_lossy().ends_with(ext), "{}", file.display());
                }
                Err(Error::IncompatibleFormat { file, .. }) => {
                    assert!(file.to_string_lossy().ends_with(ext));
                }
                other => panic!("flip at {off} of {ext}: expected an error, got {other:?}"),
            }
        }
    }
    // A truncated segment (e.g. copied partially) is detected by its footer.
    let copy = tempfile::tempdir().unwrap();
    super::wal_recovery::copy_tree(dir.path(), copy.path());
    let seg = find(&coll_dir(copy.path()), ".seg");
    let b = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &b[..b.len() - 100]).unwrap();
    expect_corruption(copy.path(), ".seg");
    // Damage inside the id table is caught by its section checksum at open; damage in
    // the vectors by `verify()`.
    let copy = tempfile::tempdir().unwrap();
    super::wal_recovery::copy_tree(dir.path(), copy.path());
    let seg = find(&coll_dir(copy.path()), ".seg");
    flip(&seg, 4096 + 40 * 8 * 4 + 64 + 3);
    expect_corruption(copy.path(), ".seg");
    let copy = tempfile::tempdir().unwrap();
    super::wal_recovery::copy_tree(dir.path(), copy.path());
    let seg = find(&coll_dir(copy.path()), ".seg");
    flip(&seg, 4096 + 17);
    let db = Database::open(copy.path(), DbOptions::default()).unwrap();
    let c = db.collection("bad").unwrap();
    assert!(matches!(c.verify(), Err(Error::Corruption { .. })));
}

#[test]
fn flipped_byte_in_manifest_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true);
    let len = std::fs::metadata(coll_dir(dir.path()).join("MANIFEST"))
        .unwrap()
        .len() as usize;
    for off in [0, 20, len / 2, len - 30, len - 1] {
        let copy = tempfile::tempdir().unwrap();
        super::wal_recovery::copy_tree(dir.path(), copy.path());
        flip(&coll_dir(copy.path()).join("MANIFEST"), off);
        expect_corruption(copy.path(), "MANIFEST");
    }
}
