//! Writes a sealed segment file: temp file, fsync, rename, fsync directory.

use std::path::{Path, PathBuf};

use super::directory::encode_directory;
use super::layout::{
    header_page_crc, DirSection, SegmentFooter, SegmentHeaderV3, FOOTER_BYTES, HEADER_PAGE_BYTES,
    SECTION_ALIGN, SECTION_IDS, SECTION_ID_INDEX, SECTION_PAYLOAD_BYTES, SECTION_PAYLOAD_INDEX,
    SECTION_PAYLOAD_OFFSETS, SECTION_VECTORS, SEGMENT_MAGIC, SEGMENT_VERSION, VECTOR_INDEX_SLOT,
};
use crate::error::Result;
use crate::filter::codec::encode_payload;
use crate::filter::payload_index::PayloadIndex;
use crate::filter::value::Payload;
use crate::index::quant::{BuiltQuant, QUANT_KIND};
use crate::index::registry::BuiltIndex;
use crate::index::text::{MemText, TEXT_KIND};
use crate::storage::backend::WritableFile;
use crate::storage::fsutil::{self, sync_dir, write_at};
use crate::types::Metric;

/// The rows of a segment to be sealed, in row order.
pub(crate) struct SegmentData<'a> {
    pub segment_id: u64,
    pub metric: Metric,
    pub dim: usize,
    pub ids: &'a [u64],
    pub vectors: &'a [f32],
    pub payloads: &'a [&'a Payload],
    /// The index over these rows.
    pub index: &'a BuiltIndex,
    /// The payload index over these rows (persisted so a reopen need not decode payloads).
    pub payload_index: Option<&'a PayloadIndex>,
    /// The text index of each text field over these rows: (field, index).
    pub text: &'a [(&'a str, &'a MemText)],
    /// Quantised copies of the vectors (quantised collections).
    pub quant: Option<&'a BuiltQuant>,
}

struct SectionSink<'a> {
    out: &'a dyn WritableFile,
    pos: u64,
    sections: Vec<DirSection>,
}

impl SectionSink<'_> {
    /// Write `bytes` 64-byte aligned (the gap is left as a hole, which reads as zeros);
    /// returns its offset.
    fn put(&mut self, path: &Path, bytes: &[u8]) -> Result<u64> {
        let pad = (SECTION_ALIGN as u64 - self.pos % SECTION_ALIGN as u64) % SECTION_ALIGN as u64;
        self.pos += pad;
        write_at(self.out, self.pos, bytes, path)?;
        let at = self.pos;
        self.pos += bytes.len() as u64;
        Ok(at)
    }

    /// Write section `tag` of `owner` (0: the segment's own; n: index slot n).
    fn section(&mut self, path: &Path, owner: u16, tag: u32, bytes: &[u8]) -> Result<()> {
        let offset = self.put(path, bytes)?;
        self.sections.push(DirSection {
            owner,
            tag: tag as u16,
            reserved: 0,
            offset,
            len_bytes: bytes.len() as u64,
            crc: crc32fast::hash(bytes),
            reserved2: 0,
        });
        Ok(())
    }
}

/// Write `data` as `dir/<name>` durably. Returns the path and the file size.
pub(crate) fn write_segment(
    dir: &Path,
    name: &str,
    data: &SegmentData<'_>,
) -> Result<(PathBuf, u64)> {
    let rows = data.ids.len();
    debug_assert_eq!(data.vectors.len(), rows * data.dim);
    debug_assert_eq!(data.payloads.len(), rows);
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = fsutil::create(&tmp)?;
    let mut sink = SectionSink {
        out: &*file,
        pos: HEADER_PAGE_BYTES as u64,
        sections: Vec::with_capacity(16),
    };

    sink.section(&tmp, 0, SECTION_VECTORS, bytemuck::cast_slice(data.vectors))?;
    sink.section(&tmp, 0, SECTION_IDS, bytemuck::cast_slice(data.ids))?;
    let mut id_index: Vec<[u64; 2]> = data
        .ids
        .iter()
        .enumerate()
        .map(|(row, id)| [*id, row as u64])
        .collect();
    id_index.sort_unstable();
    sink.section(&tmp, 0, SECTION_ID_INDEX, bytemuck::cast_slice(&id_index))?;
    let mut offsets = Vec::with_capacity(rows + 1);
    let mut payload_bytes = Vec::new();
    for p in data.payloads {
        offsets.push(payload_bytes.len() as u64);
        encode_payload(&mut payload_bytes, p);
    }
    offsets.push(payload_bytes.len() as u64);
    sink.section(
        &tmp,
        0,
        SECTION_PAYLOAD_OFFSETS,
        bytemuck::cast_slice(&offsets),
    )?;
    sink.section(&tmp, 0, SECTION_PAYLOAD_BYTES, &payload_bytes)?;
    drop(payload_bytes);
    if let Some(ix) = data.payload_index {
        let mut bytes = Vec::new();
        ix.encode(&mut bytes);
        sink.section(&tmp, 0, SECTION_PAYLOAD_INDEX, &bytes)?;
    }
    let index_kind = data.index.code();
    for (tag, bytes) in data.index.sections() {
        sink.section(&tmp, VECTOR_INDEX_SLOT, u32::from(tag), bytes)?;
    }
    let mut indexes = vec![(VECTOR_INDEX_SLOT, index_kind, "")];
    for (i, (field, text)) in data.text.iter().enumerate() {
        let slot = VECTOR_INDEX_SLOT + 1 + i as u16;
        for (tag, bytes) in text.encode() {
            sink.section(&tmp, slot, u32::from(tag), &bytes)?;
        }
        indexes.push((slot, TEXT_KIND, field));
    }
    if let Some(q) = data.quant {
        let slot = VECTOR_INDEX_SLOT + 1 + data.text.len() as u16;
        for (tag, bytes) in q.sections() {
            sink.section(&tmp, slot, u32::from(tag), bytes)?;
        }
        indexes.push((slot, QUANT_KIND, ""));
    }
    let directory = encode_directory(&indexes, &sink.sections);
    let dir_offset = sink.put(&tmp, &directory)?;
    let mut header = SegmentHeaderV3 {
        magic: SEGMENT_MAGIC,
        version: SEGMENT_VERSION,
        metric: data.metric.code(),
        reserved: 0,
        dim: data.dim as u32,
        rows: rows as u64,
        segment_id: data.segment_id,
        dir_offset,
        dir_len: directory.len() as u64,
        section_count: sink.sections.len() as u32,
        index_count: indexes.len() as u32,
        dir_crc: crc32fast::hash(&directory),
        header_crc: 0,
    };
    let mut page = vec![0u8; HEADER_PAGE_BYTES];
    page[..std::mem::size_of::<SegmentHeaderV3>()].copy_from_slice(bytemuck::bytes_of(&header));
    header.header_crc = header_page_crc(&page);
    page[..std::mem::size_of::<SegmentHeaderV3>()].copy_from_slice(bytemuck::bytes_of(&header));
    let file_len = sink.pos + FOOTER_BYTES as u64;
    let footer = SegmentFooter {
        file_len,
        header_crc: header.header_crc,
        version: SEGMENT_VERSION,
        reserved: 0,
        magic: SEGMENT_MAGIC,
    };
    write_at(&*file, sink.pos, bytemuck::bytes_of(&footer), &tmp)?;
    // The header page: the header, zero-padded to HEADER_PAGE_BYTES.
    write_at(&*file, 0, &page, &tmp)?;
    fsutil::sync_all(&*file, &tmp)?;
    drop(file);
    fsutil::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok((path, file_len))
}
