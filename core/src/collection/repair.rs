//! `Database::repair`: make a damaged database open again, keeping everything intact and
//! reporting exactly what it had to drop. Never run implicitly: an open that finds damage
//! still fails with [`Error::Corruption`].
//!
//! Per collection:
//! - every segment the manifest lists is opened and its checksums verified (with its
//!   deletion file); a damaged one is dropped from the manifest (its rows are lost) and its
//!   files renamed to `<name>.damaged` for inspection;
//! - the log after the checkpoint is read in order; at the first record that does not
//!   validate (checksum, LSN sequence, body, a damaged file header, a missing file) the log
//!   is cut: that file is truncated there and every later file removed. Records that still
//!   validate after the damage are counted in the report: they were acknowledged writes and
//!   are lost;
//! - then the collection is opened, as the check that the repair worked.
//!
//! A damaged manifest is not repaired (nothing says which segments are current); the
//! report carries the error.

use std::path::{Path, PathBuf};

use super::collection::{wal_dir, Collection};
use super::options::DbOptions;
use crate::error::{Error, IoContext, Result};
use crate::storage::deletes;
use crate::storage::fsutil;
use crate::storage::manifest::Manifest;
use crate::storage::segment::reader::SegmentReader;
use crate::storage::wal::cursor::{LogReader, Opened, Step};
use crate::storage::wal::record::decode;
use crate::storage::wal::replay::list_files;
use crate::storage::wal::writer::WalWriter;
use crate::storage::wal::WAL_HEADER_BYTES;

/// A segment that [`crate::Database::repair`] dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedSegment {
    /// The segment id.
    pub id: u64,
    /// Its file (renamed to `<file>.damaged`).
    pub file: String,
    /// Rows it held, live or deleted: the live ones are lost.
    pub rows: u64,
    /// What was wrong.
    pub reason: String,
}

/// Where [`crate::Database::repair`] cut a collection's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCut {
    /// The file truncated (or removed, when the damage is in its header).
    pub file: PathBuf,
    /// The offset of the first bad byte: the file now ends there.
    pub offset: u64,
    /// Bytes cut from that file.
    pub bytes: u64,
    /// Later log files removed.
    pub files_removed: Vec<PathBuf>,
    /// The last record kept.
    pub last_kept_lsn: u64,
    /// Records after the damage that still validated: acknowledged writes that are lost.
    pub records_lost: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// What [`crate::Database::repair`] did to one collection.
#[derive(Debug)]
pub struct CollectionRepair {
    /// The collection.
    pub name: String,
    /// Damaged segments dropped.
    pub dropped_segments: Vec<DroppedSegment>,
    /// Where the log was cut, if it was.
    pub log_cut: Option<LogCut>,
    /// `None` when the collection opens after the repair; else the error it still gives.
    pub error: Option<Error>,
}

impl CollectionRepair {
    /// Whether anything was dropped.
    pub fn changed(&self) -> bool {
        !self.dropped_segments.is_empty() || self.log_cut.is_some()
    }
}

/// What [`crate::Database::repair`] did, per collection (sorted by name).
#[derive(Debug, Default)]
pub struct RepairReport {
    /// One entry per collection.
    pub collections: Vec<CollectionRepair>,
}

impl RepairReport {
    /// Whether any collection lost data.
    pub fn changed(&self) -> bool {
        self.collections.iter().any(CollectionRepair::changed)
    }

    /// Whether every collection opens now.
    pub fn ok(&self) -> bool {
        self.collections.iter().all(|c| c.error.is_none())
    }
}

/// Repair the collection in `dir`.
pub(crate) fn repair_collection(name: &str, dir: &Path) -> CollectionRepair {
    let mut out = CollectionRepair {
        name: name.to_owned(),
        dropped_segments: Vec::new(),
        log_cut: None,
        error: None,
    };
    if let Err(e) = repair_files(dir, &mut out) {
        out.error = Some(e);
        return out;
    }
    match Collection::open(name, dir, &DbOptions::default()) {
        Ok(c) => {
            if let Err(e) = c.close() {
                out.error = Some(e);
            }
        }
        Err(e) => out.error = Some(e),
    }
    out
}

fn check_segment(
    dir: &Path,
    m: &crate::storage::manifest::SegmentMeta,
    m_all: &Manifest,
) -> Result<()> {
    let config = &m_all.config;
    let reader = SegmentReader::open(&dir.join(&m.file), config.dim, config.metric)?;
    reader.verify()?;
    if reader.rows() as u64 != m.rows {
        return Err(Error::corruption(
            dir.join(&m.file),
            0,
            format!(
                "manifest says {} rows, the file has {}",
                m.rows,
                reader.rows()
            ),
        ));
    }
    if let Some(d) = &m.deletes {
        deletes::read_file(&dir.join(&d.file), m.id, reader.rows())?;
    }
    Ok(())
}

fn set_aside(path: &Path) -> Result<()> {
    if fsutil::exists(path) {
        let mut to = path.as_os_str().to_owned();
        to.push(".damaged");
        fsutil::rename(path, Path::new(&to))?;
    }
    Ok(())
}

fn repair_files(dir: &Path, out: &mut CollectionRepair) -> Result<()> {
    let mut m = Manifest::load(dir)?;
    let before = m.segments.len();
    let mut keep = Vec::with_capacity(before);
    for s in std::mem::take(&mut m.segments) {
        match check_segment(dir, &s, &m) {
            Ok(()) => keep.push(s),
            Err(e) => {
                set_aside(&dir.join(&s.file))?;
                if let Some(d) = &s.deletes {
                    set_aside(&dir.join(&d.file))?;
                }
                out.dropped_segments.push(DroppedSegment {
                    id: s.id,
                    file: s.file.clone(),
                    rows: s.rows,
                    reason: e.to_string(),
                });
            }
        }
    }
    m.segments = keep;
    out.log_cut = cut_log(&wal_dir(dir), m.checkpoint_lsn)?;
    if m.segments.len() != before {
        m.store(dir)?;
    }
    Ok(())
}

/// Count the records of a file, from its header, that validate in sequence.
fn count_records(path: &Path) -> u64 {
    let Ok(Opened::Ok(mut r)) = LogReader::open(path) else {
        return 0;
    };
    let mut n = 0;
    while let Ok(Step::Record(_)) = r.next() {
        n += 1;
    }
    n
}

/// Cut the log in `wdir` at its first bad record after `checkpoint`; `None` if it is whole.
fn cut_log(wdir: &Path, checkpoint: u64) -> Result<Option<LogCut>> {
    let files = list_files(wdir)?;
    let mut expected: Option<u64> = None;
    let mut cut: Option<LogCut> = None;
    let n_files = files.len();
    for (i, (name_lsn, path)) in files.iter().enumerate() {
        if let Some(c) = &mut cut {
            c.records_lost += count_records(path);
            fsutil::remove_if_exists(path)?;
            c.files_removed.push(path.clone());
            continue;
        }
        let last_kept = expected.map_or(checkpoint, |e| e - 1);
        let bad_file = |reason: String| LogCut {
            file: path.clone(),
            offset: 0,
            bytes: fsutil::file_len(path).unwrap_or(0),
            files_removed: Vec::new(),
            last_kept_lsn: last_kept,
            records_lost: 0,
            reason,
        };
        let mut r = match LogReader::open(path) {
            Ok(Opened::Ok(r)) => r,
            // A file cut short while being created (the last one): nothing in it.
            Ok(Opened::Short) if i + 1 == n_files => {
                fsutil::remove_if_exists(path)?;
                continue;
            }
            Ok(Opened::Short) => {
                cut = Some(bad_file("WAL file shorter than its header".into()));
                fsutil::remove_if_exists(path)?;
                continue;
            }
            Err(e @ (Error::Corruption { .. } | Error::IncompatibleFormat { .. })) => {
                cut = Some(bad_file(e.to_string()));
                fsutil::remove_if_exists(path)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let first = r.first_lsn;
        let gap = match expected {
            Some(e) => first != e && first > checkpoint + 1,
            None => first > checkpoint + 1,
        };
        if first != *name_lsn || gap {
            let reason = if gap {
                format!(
                    "WAL gap: LSN {} is missing, this file starts at {first}",
                    last_kept + 1
                )
            } else {
                "WAL header LSN does not match the file name".to_owned()
            };
            let mut c = bad_file(reason);
            c.records_lost = count_records(path);
            cut = Some(c);
            fsutil::remove_if_exists(path)?;
            continue;
        }
        let mut next = first;
        loop {
            let (pos, reason) = match r.next()? {
                Step::End => break,
                Step::Record(rec) if rec.lsn == next => match decode(rec.kind, r.body()) {
                    Ok(_) => {
                        next += 1;
                        continue;
                    }
                    Err(e) => (rec.start, format!("bad record body: {}", e.reason)),
                },
                Step::Record(rec) => (
                    rec.start,
                    format!("LSN {} where {next} was expected", rec.lsn),
                ),
                Step::Bad { pos, reason } => (pos, reason),
            };
            let len = fsutil::file_len(path)?;
            let lost = count_valid_after(&mut r, pos, next)?;
            let f = fsutil::open_write(path)?;
            f.set_len(pos.max(WAL_HEADER_BYTES as u64)).at(path)?;
            fsutil::sync_all(&*f, path)?;
            cut = Some(LogCut {
                file: path.clone(),
                offset: pos,
                bytes: len - pos,
                files_removed: Vec::new(),
                last_kept_lsn: next - 1,
                records_lost: lost,
                reason,
            });
            break;
        }
        expected = Some(next);
    }
    if let Some(c) = &cut {
        fsutil::sync_dir(wdir)?;
        // Records at or below the checkpoint are in the segments. If the cut leaves the log
        // ending there, start it afresh after the checkpoint, so the next record's LSN
        // follows the last one in the log.
        let remaining = list_files(wdir)?;
        if c.last_kept_lsn <= checkpoint || remaining.is_empty() {
            for (_, p) in remaining {
                fsutil::remove_if_exists(&p)?;
            }
            WalWriter::create(wdir, checkpoint.max(c.last_kept_lsn) + 1)?;
        }
    }
    Ok(cut)
}

/// How many records after the bad bytes at `pos` still validate (LSN `>= min_lsn`),
/// stepping over each one found.
fn count_valid_after(r: &mut LogReader, pos: u64, min_lsn: u64) -> Result<u64> {
    let mut n = 0;
    let mut from = pos + 1;
    while let Some(end) = r.next_valid_after(from, min_lsn)? {
        n += 1;
        from = end;
    }
    Ok(n)
}
