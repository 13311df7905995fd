//! Reading the log back on open.
//!
//! Rules (FORMAT.md §Recovery): records must carry consecutive LSNs. At the first record
//! that fails to parse or validate, the rest of the file is searched for any record that
//! does validate. If none does and this is the last file, the bad bytes are a torn tail
//! from a crash mid-append: the file is truncated there and recovery continues. Otherwise
//! acknowledged data may sit behind the damage, so open fails with `Corruption` naming the
//! file and offset instead of silently dropping it.

use std::path::{Path, PathBuf};

use super::cursor::{LogReader, Opened, Step};
use super::record::{decode, WalOp};
use super::{parse_file_name, RECORD_HEADER_BYTES};
use crate::error::{Error, IoContext, Result};
use crate::storage::fsutil;

/// The file the writer should continue appending to.
#[derive(Debug)]
pub(crate) struct TailFile {
    pub path: PathBuf,
    pub seed: u32,
    pub first_lsn: u64,
    pub valid_len: u64,
}

/// The damaged end of the last log file that recovery cut off: a record being appended when
/// the writer crashed (never acknowledged under `Durability::Always`), or damage to the last
/// acknowledged record, which is then lost. Reported in the open report and `stats()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The log file.
    pub file: PathBuf,
    /// Where the cut was made (the first byte that did not form a valid record).
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Why the bytes at `offset` were not a record.
    pub reason: String,
}

#[derive(Debug)]
pub(crate) struct ReplayOutcome {
    /// Highest LSN found in the log (or the checkpoint when the log holds nothing newer).
    pub last_lsn: u64,
    /// Every log file, by first LSN.
    pub files: Vec<(u64, PathBuf)>,
    pub tail: Option<TailFile>,
    /// Where a torn tail was cut off, if one was.
    pub truncated: Option<TornTail>,
    /// Records applied (LSN above the checkpoint).
    pub applied: u64,
    /// A last file shorter than its header (a crash while creating it), to remove.
    pub unfinished: Option<PathBuf>,
}

/// List the log files in `dir` by first LSN.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files: Vec<(u64, PathBuf)> = fsutil::list(dir)?
        .into_iter()
        .filter_map(|(name, path)| parse_file_name(&name).map(|lsn| (lsn, path)))
        .collect();
    files.sort();
    Ok(files)
}

/// Replay every record with LSN > `checkpoint`, in order, through `apply`. Reads each file
/// through a bounded buffer ([`LogReader`]), so memory does not grow with the log.
pub(crate) fn replay(
    dir: &Path,
    checkpoint: u64,
    mut apply: impl FnMut(u64, WalOp) -> Result<()>,
) -> Result<ReplayOutcome> {
    let mut files = list_files(dir)?;
    let mut out = ReplayOutcome {
        last_lsn: checkpoint,
        files: Vec::new(),
        tail: None,
        truncated: None,
        applied: 0,
        unfinished: None,
    };
    let mut prev_lsn: Option<u64> = None;
    let n_files = files.len();
    for (i, (name_lsn, path)) in files.drain(..).enumerate() {
        let is_last = i + 1 == n_files;
        let mut r = match LogReader::open(&path)? {
            Opened::Ok(r) => r,
            Opened::Short if is_last => {
                // Crash while creating the file: nothing in it was ever acknowledged. The
                // caller removes it (after telling read-only handles that files change).
                out.unfinished = Some(path);
                continue;
            }
            Opened::Short => {
                return Err(Error::corruption(
                    &path,
                    0,
                    "WAL file shorter than its header",
                ))
            }
        };
        let (seed, first_lsn) = (r.seed, r.first_lsn);
        if first_lsn != name_lsn {
            return Err(Error::corruption(
                &path,
                16,
                "WAL header LSN does not match the file name",
            ));
        }
        let missing = match prev_lsn {
            Some(p) => first_lsn != p + 1 && first_lsn > checkpoint + 1,
            None => first_lsn > checkpoint + 1,
        };
        if missing {
            let p = prev_lsn.unwrap_or(checkpoint);
            return Err(Error::corruption(
                &path,
                16,
                format!("WAL gap: the log before this file ends at LSN {p}, this one starts at {first_lsn}"),
            ));
        }
        let mut expected = first_lsn;
        loop {
            let (pos, reason) = match r.next()? {
                Step::End => break,
                Step::Record(p) if p.lsn == expected => {
                    if p.lsn > checkpoint {
                        let op = decode(p.kind, r.body()).map_err(|e| {
                            Error::corruption(
                                &path,
                                p.start + (RECORD_HEADER_BYTES + e.offset) as u64,
                                format!("bad record body: {}", e.reason),
                            )
                        })?;
                        apply(p.lsn, op)?;
                        out.applied += 1;
                    }
                    out.last_lsn = out.last_lsn.max(p.lsn);
                    expected += 1;
                    continue;
                }
                Step::Record(p) => (
                    p.start,
                    format!("LSN {} where {expected} was expected", p.lsn),
                ),
                Step::Bad { pos, reason } => (pos, reason),
            };
            if is_last && !r.any_valid_after(pos + 1, expected)? {
                let len = fsutil::file_len(&path)?;
                let f = fsutil::open_write(&path)?;
                f.set_len(pos).at(&path)?;
                fsutil::sync_all(&*f, &path)?;
                out.truncated = Some(TornTail {
                    file: path.clone(),
                    offset: pos,
                    bytes: len - pos,
                    reason,
                });
                break;
            }
            return Err(Error::corruption(&path, pos, reason));
        }
        prev_lsn = Some(expected - 1);
        if is_last {
            out.tail = Some(TailFile {
                path: path.clone(),
                seed,
                first_lsn,
                valid_len: r.pos(),
            });
        }
        out.files.push((first_lsn, path));
    }
    Ok(out)
}
