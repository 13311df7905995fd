//! Per-segment deletion files: `seg-<id>-<checkpoint lsn>.del`, a framed body of
//! `segment_id u64, rows u64, words u64 x ceil(rows/64)`. Each checkpoint that changes a
//! segment's deletions writes a new file; the manifest names the current one.

use std::path::Path;

use crate::error::{Error, Result};
use crate::filter::bitset::Bitset;
use crate::filter::codec::Decoder;
use crate::storage::fsutil::{frame, read, unframe, write_atomic};

const MAGIC: &[u8; 8] = b"TROVDEL\0";
const VERSION: u16 = 1;

pub(crate) fn file_name(segment_id: u64, lsn: u64) -> String {
    format!("seg-{segment_id:010}-{lsn:020}.del")
}

pub(crate) fn write(path: &Path, segment_id: u64, bits: &Bitset) -> Result<()> {
    let mut body = Vec::with_capacity(16 + bits.words().len() * 8);
    body.extend_from_slice(&segment_id.to_le_bytes());
    body.extend_from_slice(&(bits.len() as u64).to_le_bytes());
    body.extend_from_slice(bytemuck::cast_slice(bits.words()));
    write_atomic(path, &frame(MAGIC, VERSION, &body))
}

pub(crate) fn read_file(path: &Path, segment_id: u64, rows: usize) -> Result<Bitset> {
    let bytes = read(path)?;
    let (_, body) = unframe(path, &bytes, MAGIC, VERSION, VERSION)?;
    let bad = |off: usize, why: &str| Error::corruption(path, (16 + off) as u64, why);
    let mut d = Decoder::new(body);
    let sid = d.u64().map_err(|e| bad(e.offset, "short body"))?;
    let n = d.u64().map_err(|e| bad(e.offset, "short body"))?;
    if sid != segment_id || n != rows as u64 {
        return Err(bad(0, "deletion file belongs to another segment"));
    }
    let words: Vec<u64> = d
        .bytes(d.remaining())
        .map_err(|e| bad(e.offset, "short body"))?
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Bitset::from_words(words, rows).ok_or_else(|| bad(16, "bitmap does not match the row count"))
}
