//! Reading the log back on open.
//!
//! Rules (FORMAT.md §Recovery): records must carry consecutive LSNs. At the first record
//! that fails to parse or validate, the rest of the file is searched for any record that
//! does validate. If none does and this is the last file, the bad bytes are a torn tail
//! from a crash mid-append: the file is truncated there and recovery continues. Otherwise
//! acknowledged data may sit behind the damage, so open fails with `Corruption` naming the
//! file and offset instead of silently dropping it.

use std::path::{Path, PathBuf};

use super::record::{decode, WalOp, KIND_DELETE, KIND_UPSERT};
use super::{parse_file_name, record_crc, MAX_RECORD_BYTES, RECORD_HEADER_BYTES};
use super::{WAL_HEADER_BYTES, WAL_MAGIC, WAL_VERSION};
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

#[derive(Debug)]
pub(crate) struct ReplayOutcome {
    /// Highest LSN found in the log (or the checkpoint when the log holds nothing newer).
    pub last_lsn: u64,
    /// Every log file, by first LSN.
    pub files: Vec<(u64, PathBuf)>,
    pub tail: Option<TailFile>,
    /// Where a torn tail was cut off, if one was.
    pub truncated: Option<(PathBuf, u64)>,
    /// Records applied (LSN above the checkpoint).
    pub applied: u64,
}

struct Parsed<'a> {
    lsn: u64,
    kind: u8,
    body: &'a [u8],
    next: usize,
}

fn parse_at(bytes: &[u8], pos: usize, seed: u32) -> std::result::Result<Parsed<'_>, String> {
    if bytes.len() - pos < RECORD_HEADER_BYTES {
        return Err("short record header".into());
    }
    let h = &bytes[pos..pos + RECORD_HEADER_BYTES];
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let mut l8 = [0u8; 8];
    l8.copy_from_slice(&h[8..16]);
    let lsn = u64::from_le_bytes(l8);
    let kind = h[16];
    if len > MAX_RECORD_BYTES {
        return Err(format!("record length {len} exceeds the maximum"));
    }
    if kind != KIND_UPSERT && kind != KIND_DELETE {
        return Err(format!("unknown record kind {kind}"));
    }
    let start = pos + RECORD_HEADER_BYTES;
    if bytes.len() - start < len {
        return Err("record extends past the end of the file".into());
    }
    let body = &bytes[start..start + len];
    if record_crc(seed, lsn, kind, body) != crc {
        return Err("record checksum mismatch".into());
    }
    Ok(Parsed {
        lsn,
        kind,
        body,
        next: start + len,
    })
}

/// Is there any record at an offset after `from` that validates with an LSN >= `min_lsn`?
fn valid_record_after(bytes: &[u8], from: usize, seed: u32, min_lsn: u64) -> bool {
    (from..bytes.len().saturating_sub(RECORD_HEADER_BYTES - 1))
        .any(|off| matches!(parse_at(bytes, off, seed), Ok(p) if p.lsn >= min_lsn))
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<(u32, u64)> {
    let h = &bytes[..WAL_HEADER_BYTES];
    if &h[..8] != WAL_MAGIC {
        return Err(Error::corruption(path, 0, "bad WAL magic"));
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    let crc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    if crc32fast::hash(&h[..24]) != crc {
        return Err(Error::corruption(path, 24, "WAL header checksum mismatch"));
    }
    if version != WAL_VERSION {
        return Err(Error::IncompatibleFormat {
            file: path.to_path_buf(),
            found: version,
            oldest: WAL_VERSION,
            current: WAL_VERSION,
        });
    }
    let seed = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    let mut f8 = [0u8; 8];
    f8.copy_from_slice(&h[16..24]);
    Ok((seed, u64::from_le_bytes(f8)))
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

/// Replay every record with LSN > `checkpoint`, in order, through `apply`.
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
    };
    let mut prev_lsn: Option<u64> = None;
    let n_files = files.len();
    for (i, (name_lsn, path)) in files.drain(..).enumerate() {
        let is_last = i + 1 == n_files;
        let bytes = fsutil::read(&path)?;
        if bytes.len() < WAL_HEADER_BYTES {
            if is_last {
                // Crash while creating the file: nothing in it was ever acknowledged.
                fsutil::remove_if_exists(&path)?;
                continue;
            }
            return Err(Error::corruption(
                &path,
                0,
                "WAL file shorter than its header",
            ));
        }
        let (seed, first_lsn) = parse_header(&path, &bytes)?;
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
        let mut pos = WAL_HEADER_BYTES;
        let mut expected = first_lsn;
        while pos < bytes.len() {
            let rec = parse_at(&bytes, pos, seed).and_then(|p| {
                if p.lsn == expected {
                    Ok(p)
                } else {
                    Err(format!("LSN {} where {expected} was expected", p.lsn))
                }
            });
            match rec {
                Ok(p) => {
                    if p.lsn > checkpoint {
                        let op = decode(p.kind, p.body).map_err(|e| {
                            Error::corruption(
                                &path,
                                (pos + RECORD_HEADER_BYTES + e.offset) as u64,
                                format!("bad record body: {}", e.reason),
                            )
                        })?;
                        apply(p.lsn, op)?;
                        out.applied += 1;
                    }
                    out.last_lsn = out.last_lsn.max(p.lsn);
                    expected += 1;
                    pos = p.next;
                }
                Err(reason) => {
                    if is_last && !valid_record_after(&bytes, pos + 1, seed, expected) {
                        let f = fsutil::open_write(&path)?;
                        f.set_len(pos as u64).at(&path)?;
                        fsutil::sync_all(&*f, &path)?;
                        out.truncated = Some((path.clone(), pos as u64));
                        break;
                    }
                    return Err(Error::corruption(&path, pos as u64, reason));
                }
            }
        }
        prev_lsn = Some(expected - 1);
        if is_last {
            out.tail = Some(TailFile {
                path: path.clone(),
                seed,
                first_lsn,
                valid_len: pos as u64,
            });
        }
        out.files.push((first_lsn, path));
    }
    Ok(out)
}
