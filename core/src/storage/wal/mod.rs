//! The write-ahead log.
//!
//! A collection's log is a sequence of files `wal/wal-<first lsn, 20 digits>.log`. Each file
//! starts with a 32-byte header and holds records
//! `[body_len u32][crc32 u32][lsn u64][kind u8][body]`; the CRC is seeded with the file's
//! random seed, so a record left over from another file never validates here. See
//! FORMAT.md §WAL for the byte layout and the recovery rules implemented in `replay`.

pub(crate) mod cursor;
pub(crate) mod record;
pub(crate) mod replay;
pub(crate) mod writer;

/// File magic.
pub(crate) const WAL_MAGIC: &[u8; 8] = b"TROVWAL\0";
/// Current WAL format version.
pub(crate) const WAL_VERSION: u16 = 1;
/// Bytes in the file header.
pub(crate) const WAL_HEADER_BYTES: usize = 32;
/// Bytes in a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 17;
/// Largest record body accepted (writers refuse larger batches up front).
pub(crate) const MAX_RECORD_BYTES: usize = 512 << 20;

pub(crate) fn file_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.log")
}

pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

pub(crate) fn record_crc(seed: u32, lsn: u64, kind: u8, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(&lsn.to_le_bytes());
    h.update(&[kind]);
    h.update(body);
    h.finalize()
}
