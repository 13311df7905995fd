//! Reading a log file record by record through a bounded buffer.
//!
//! Recovery and read-only followers both read logs with this: memory stays at about one
//! chunk plus the largest record (never the whole file), and the reader never writes.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::record::{KIND_DELETE, KIND_UPSERT};
use super::{record_crc, MAX_RECORD_BYTES, RECORD_HEADER_BYTES};
use super::{WAL_HEADER_BYTES, WAL_MAGIC, WAL_VERSION};
use crate::error::{Error, IoContext, Result};
use crate::storage::fsutil;

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;

/// One record as read: its LSN, kind, and where it sits in the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordAt {
    pub lsn: u64,
    pub kind: u8,
    /// Offset of the record header.
    pub start: u64,
    /// Offset just past the body.
    pub end: u64,
}

/// What the next read found.
#[derive(Debug)]
pub(crate) enum Step {
    /// A record that validates; its body is [`LogReader::body`].
    Record(RecordAt),
    /// The file ends exactly here.
    End,
    /// Bytes at `pos` that are not a valid record (damaged, or still being written).
    Bad { pos: u64, reason: String },
}

/// A log file opened for reading.
#[derive(Debug)]
pub(crate) struct LogReader {
    path: PathBuf,
    file: File,
    pub seed: u32,
    pub first_lsn: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Offset of the next record.
    pos: u64,
    /// The last record returned: its body is `buf[body]`.
    body: std::ops::Range<usize>,
}

/// What opening a log file found.
#[derive(Debug)]
pub(crate) enum Opened {
    Ok(LogReader),
    /// The file is shorter than its header (a crash while creating it).
    Short,
}

/// Parse a log file header: `(seed, first_lsn)`.
pub(crate) fn parse_header(path: &Path, h: &[u8]) -> Result<(u32, u64)> {
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

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::FileExt::seek_read(file, buf, offset)
    }
}

impl LogReader {
    /// Open `path` and read its header. `NotFound` comes back as an `Io` error whose source
    /// has that kind (a follower retries on it).
    pub(crate) fn open(path: &Path) -> Result<Opened> {
        let file = fsutil::open_read(path)?;
        let mut h = [0u8; WAL_HEADER_BYTES];
        let mut got = 0;
        while got < h.len() {
            let n = read_at(&file, &mut h[got..], got as u64).at(path)?;
            if n == 0 {
                return Ok(Opened::Short);
            }
            got += n;
        }
        let (seed, first_lsn) = parse_header(path, &h)?;
        Ok(Opened::Ok(LogReader {
            path: path.to_path_buf(),
            file,
            seed,
            first_lsn,
            buf: Vec::new(),
            buf_off: WAL_HEADER_BYTES as u64,
            pos: WAL_HEADER_BYTES as u64,
            body: 0..0,
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next record (after the last one returned).
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// The body of the last record returned.
    pub(crate) fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    /// Make `buf` hold the file's bytes `[from, to)` if the file has them; returns how many
    /// of them it holds (less than asked at the end of the file).
    fn fill(&mut self, from: u64, to: u64) -> Result<usize> {
        let have_end = self.buf_off + self.buf.len() as u64;
        if from < self.buf_off || from > have_end {
            self.buf.clear();
            self.buf_off = from;
        } else if from > self.buf_off && (to > have_end) {
            // Drop the consumed prefix before reading more.
            let skip = (from - self.buf_off) as usize;
            self.buf.drain(..skip);
            self.buf_off = from;
        }
        while self.buf_off + (self.buf.len() as u64) < to {
            let at = self.buf_off + self.buf.len() as u64;
            let want = ((to - at) as usize).max(CHUNK);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let n = read_at(&self.file, &mut self.buf[old..], at).at(&self.path)?;
            self.buf.truncate(old + n);
            if n == 0 {
                break;
            }
        }
        let end = (self.buf_off + self.buf.len() as u64).min(to);
        Ok(end.saturating_sub(from) as usize)
    }

    fn slice(&self, from: u64, len: usize) -> &[u8] {
        let s = (from - self.buf_off) as usize;
        &self.buf[s..s + len]
    }

    /// Parse the record at `at` without moving the cursor.
    fn parse(&mut self, at: u64) -> Result<std::result::Result<RecordAt, String>> {
        let h = self.fill(at, at + RECORD_HEADER_BYTES as u64)?;
        if h == 0 {
            return Ok(Err(String::new()));
        }
        if h < RECORD_HEADER_BYTES {
            return Ok(Err("short record header".into()));
        }
        let head = self.slice(at, RECORD_HEADER_BYTES);
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let mut l8 = [0u8; 8];
        l8.copy_from_slice(&head[8..16]);
        let lsn = u64::from_le_bytes(l8);
        let kind = head[16];
        if len > MAX_RECORD_BYTES {
            return Ok(Err(format!("record length {len} exceeds the maximum")));
        }
        if kind != KIND_UPSERT && kind != KIND_DELETE {
            return Ok(Err(format!("unknown record kind {kind}")));
        }
        let start = at + RECORD_HEADER_BYTES as u64;
        if self.fill(at, start + len as u64)? < RECORD_HEADER_BYTES + len {
            return Ok(Err("record extends past the end of the file".into()));
        }
        if record_crc(self.seed, lsn, kind, self.slice(start, len)) != crc {
            return Ok(Err("record checksum mismatch".into()));
        }
        let s = (start - self.buf_off) as usize;
        self.body = s..s + len;
        Ok(Ok(RecordAt {
            lsn,
            kind,
            start: at,
            end: start + len as u64,
        }))
    }

    /// Read the next record. After `Bad` or `End` the cursor stays put, so a follower can
    /// call again once the writer appended more.
    pub(crate) fn next(&mut self) -> Result<Step> {
        let at = self.pos;
        match self.parse(at)? {
            Ok(r) => {
                self.pos = r.end;
                Ok(Step::Record(r))
            }
            Err(reason) if reason.is_empty() => Ok(Step::End),
            Err(reason) => Ok(Step::Bad { pos: at, reason }),
        }
    }

    /// Whether any offset at or after `from` holds a record that validates with an LSN in
    /// `[min_lsn, min_lsn + n)`, where `n` bounds how many records the rest of the file could
    /// hold. Only offsets whose header is plausible (kind, length, LSN range) pay for a
    /// checksum, so the search is linear in the file size for damaged or zeroed bytes.
    pub(crate) fn any_valid_after(&mut self, from: u64, min_lsn: u64) -> Result<bool> {
        Ok(self.next_valid_after(from, min_lsn)?.is_some())
    }

    /// The first record at an offset at or after `from` that validates with an LSN of at
    /// least `min_lsn` (see [`LogReader::any_valid_after`]); returns where it ends.
    pub(crate) fn next_valid_after(&mut self, from: u64, min_lsn: u64) -> Result<Option<u64>> {
        let file_len = self.file.metadata().at(&self.path)?.len();
        let max_records = file_len / RECORD_HEADER_BYTES as u64 + 1;
        let mut off = from;
        while off + RECORD_HEADER_BYTES as u64 <= file_len {
            let window_end = (off + CHUNK as u64).min(file_len);
            let got = self.fill(off, window_end)?;
            let mut i = 0usize;
            while i + RECORD_HEADER_BYTES <= got {
                let h = self.slice(off + i as u64, RECORD_HEADER_BYTES);
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
                let mut l8 = [0u8; 8];
                l8.copy_from_slice(&h[8..16]);
                let lsn = u64::from_le_bytes(l8);
                let kind = h[16];
                let at = off + i as u64;
                let plausible = (kind == KIND_UPSERT || kind == KIND_DELETE)
                    && len as usize <= MAX_RECORD_BYTES
                    && at + RECORD_HEADER_BYTES as u64 + len <= file_len
                    && lsn >= min_lsn
                    && lsn - min_lsn < max_records;
                if plausible {
                    if let Ok(r) = self.parse(at)? {
                        if r.lsn >= min_lsn {
                            return Ok(Some(r.end));
                        }
                    }
                    // `parse` may have moved the buffer; refill the window.
                    self.fill(off, window_end)?;
                }
                i += 1;
            }
            off += (i as u64).max(1);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::wal::writer::WalWriter;

    #[test]
    fn reads_records_across_chunks_and_stops_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        // Bodies larger than a chunk and small ones, so records straddle buffer refills.
        let sizes = [10usize, CHUNK + 7, 3, 2 * CHUNK, 1];
        for (i, &n) in sizes.iter().enumerate() {
            let body = vec![i as u8; n];
            w.append(i as u64 + 1, KIND_DELETE, &body).unwrap();
        }
        let Opened::Ok(mut r) = LogReader::open(w.path()).unwrap() else {
            panic!("short")
        };
        for (i, &n) in sizes.iter().enumerate() {
            match r.next().unwrap() {
                Step::Record(rec) => {
                    assert_eq!(rec.lsn, i as u64 + 1);
                    assert_eq!(r.body().len(), n);
                    assert!(r.body().iter().all(|&b| b == i as u8));
                }
                other => panic!("record {i}: {other:?}"),
            }
        }
        assert!(matches!(r.next().unwrap(), Step::End));
        // Appending more is seen by the same reader.
        w.append(6, KIND_DELETE, b"tail").unwrap();
        assert!(matches!(r.next().unwrap(), Step::Record(x) if x.lsn == 6));
        // A damaged record is Bad at its offset, and a valid one after it is found.
        let bad_at = r.pos();
        w.append(7, KIND_DELETE, b"x").unwrap();
        w.append(8, KIND_DELETE, b"y").unwrap();
        let f = fsutil::open_write(w.path()).unwrap();
        fsutil::write_at(&*f, bad_at + 4, &[0xAB, 0xCD], w.path()).unwrap();
        assert!(matches!(r.next().unwrap(), Step::Bad { pos, .. } if pos == bad_at));
        assert!(r.any_valid_after(bad_at + 1, 7).unwrap());
        assert!(!r.any_valid_after(bad_at + 1, 9).unwrap());
    }
}
