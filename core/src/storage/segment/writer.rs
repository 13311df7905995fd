//! Writes a sealed segment file: temp file, fsync, rename, fsync directory.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::layout::{
    SectionEntry, SegmentFooter, SegmentHeader, FOOTER_BYTES, HEADER_PAGE_BYTES, INDEX_FLAT,
    INDEX_HNSW, INDEX_IVF_PQ, INDEX_LSH, MAX_SECTIONS, SECTION_ALIGN, SECTION_HNSW_L0,
    SECTION_HNSW_META, SECTION_HNSW_UPPER, SECTION_HNSW_UPPER_OFFSETS, SECTION_IDS,
    SECTION_ID_INDEX, SECTION_IVF_CENTROIDS, SECTION_IVF_CODEBOOKS, SECTION_IVF_CODES,
    SECTION_IVF_LIST_OFFSETS, SECTION_IVF_LIST_ROWS, SECTION_IVF_META, SECTION_LSH_FUNCTIONS,
    SECTION_LSH_KEYS, SECTION_LSH_META, SECTION_LSH_ROWS, SECTION_LSH_SIGS, SECTION_LSH_STARTS,
    SECTION_LSH_TABLE_OFFSETS, SECTION_PAYLOAD_BYTES, SECTION_PAYLOAD_INDEX,
    SECTION_PAYLOAD_OFFSETS, SECTION_VECTORS, SEGMENT_MAGIC, SEGMENT_VERSION,
};
use crate::error::{IoContext, Result};
use crate::filter::codec::encode_payload;
use crate::filter::payload_index::PayloadIndex;
use crate::filter::value::Payload;
use crate::index::hnsw::graph::FrozenGraph;
use crate::index::ivfpq::FrozenIvfPq;
use crate::index::lsh::FrozenLsh;
use crate::storage::fsutil::{sync_dir, write_all};
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
    pub index: SegmentIndex<'a>,
    /// The payload index over these rows (persisted so a reopen need not decode payloads).
    pub payload_index: Option<&'a PayloadIndex>,
}

/// The index stored with a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SegmentIndex<'a> {
    /// None: the segment is scanned exactly.
    Flat,
    Hnsw(&'a FrozenGraph),
    IvfPq(&'a FrozenIvfPq),
    Lsh(&'a FrozenLsh),
}

struct SectionSink<W: Write> {
    out: W,
    pos: u64,
    sections: Vec<SectionEntry>,
}

impl<W: Write> SectionSink<W> {
    fn section(&mut self, path: &Path, kind: u32, bytes: &[u8]) -> Result<()> {
        let pad = (SECTION_ALIGN as u64 - self.pos % SECTION_ALIGN as u64) % SECTION_ALIGN as u64;
        write_all(&mut self.out, &[0u8; SECTION_ALIGN][..pad as usize], path)?;
        self.pos += pad;
        write_all(&mut self.out, bytes, path)?;
        self.sections.push(SectionEntry {
            kind,
            reserved: 0,
            offset: self.pos,
            len_bytes: bytes.len() as u64,
            crc: crc32fast::hash(bytes),
            reserved2: 0,
        });
        self.pos += bytes.len() as u64;
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
    let file = File::create(&tmp).at(&tmp)?;
    let mut sink = SectionSink {
        out: BufWriter::with_capacity(1 << 20, file),
        pos: HEADER_PAGE_BYTES as u64,
        sections: Vec::with_capacity(MAX_SECTIONS),
    };
    write_all(&mut sink.out, &[0u8; HEADER_PAGE_BYTES], &tmp)?;

    sink.section(&tmp, SECTION_VECTORS, bytemuck::cast_slice(data.vectors))?;
    sink.section(&tmp, SECTION_IDS, bytemuck::cast_slice(data.ids))?;
    let mut id_index: Vec<[u64; 2]> = data
        .ids
        .iter()
        .enumerate()
        .map(|(row, id)| [*id, row as u64])
        .collect();
    id_index.sort_unstable();
    sink.section(&tmp, SECTION_ID_INDEX, bytemuck::cast_slice(&id_index))?;
    let mut offsets = Vec::with_capacity(rows + 1);
    let mut payload_bytes = Vec::new();
    for p in data.payloads {
        offsets.push(payload_bytes.len() as u64);
        encode_payload(&mut payload_bytes, p);
    }
    offsets.push(payload_bytes.len() as u64);
    sink.section(
        &tmp,
        SECTION_PAYLOAD_OFFSETS,
        bytemuck::cast_slice(&offsets),
    )?;
    sink.section(&tmp, SECTION_PAYLOAD_BYTES, &payload_bytes)?;
    drop(payload_bytes);
    if let Some(ix) = data.payload_index {
        let mut bytes = Vec::new();
        ix.encode(&mut bytes);
        sink.section(&tmp, SECTION_PAYLOAD_INDEX, &bytes)?;
    }
    let index_kind = match data.index {
        SegmentIndex::Flat => INDEX_FLAT,
        SegmentIndex::Hnsw(g) => {
            sink.section(&tmp, SECTION_HNSW_META, bytemuck::cast_slice(&g.meta))?;
            sink.section(&tmp, SECTION_HNSW_L0, bytemuck::cast_slice(&g.l0))?;
            sink.section(
                &tmp,
                SECTION_HNSW_UPPER_OFFSETS,
                bytemuck::cast_slice(&g.offsets),
            )?;
            sink.section(&tmp, SECTION_HNSW_UPPER, bytemuck::cast_slice(&g.upper))?;
            INDEX_HNSW
        }
        SegmentIndex::IvfPq(ix) => {
            sink.section(&tmp, SECTION_IVF_META, bytemuck::cast_slice(&ix.meta))?;
            sink.section(
                &tmp,
                SECTION_IVF_CENTROIDS,
                bytemuck::cast_slice(&ix.centroids),
            )?;
            sink.section(
                &tmp,
                SECTION_IVF_CODEBOOKS,
                bytemuck::cast_slice(&ix.codebooks),
            )?;
            sink.section(
                &tmp,
                SECTION_IVF_LIST_OFFSETS,
                bytemuck::cast_slice(&ix.list_offsets),
            )?;
            sink.section(
                &tmp,
                SECTION_IVF_LIST_ROWS,
                bytemuck::cast_slice(&ix.list_rows),
            )?;
            sink.section(&tmp, SECTION_IVF_CODES, &ix.codes)?;
            INDEX_IVF_PQ
        }
        SegmentIndex::Lsh(ix) => {
            sink.section(&tmp, SECTION_LSH_META, bytemuck::cast_slice(&ix.meta))?;
            sink.section(
                &tmp,
                SECTION_LSH_FUNCTIONS,
                bytemuck::cast_slice(&ix.functions),
            )?;
            sink.section(
                &tmp,
                SECTION_LSH_TABLE_OFFSETS,
                bytemuck::cast_slice(&ix.table_offsets),
            )?;
            sink.section(&tmp, SECTION_LSH_KEYS, bytemuck::cast_slice(&ix.keys))?;
            sink.section(&tmp, SECTION_LSH_STARTS, bytemuck::cast_slice(&ix.starts))?;
            sink.section(&tmp, SECTION_LSH_ROWS, bytemuck::cast_slice(&ix.rows))?;
            sink.section(&tmp, SECTION_LSH_SIGS, &ix.sigs)?;
            INDEX_LSH
        }
    };

    let mut header = SegmentHeader {
        magic: SEGMENT_MAGIC,
        version: SEGMENT_VERSION,
        metric: data.metric.code(),
        index_kind,
        section_count: sink.sections.len() as u32,
        dim: data.dim as u32,
        reserved: 0,
        rows: rows as u64,
        segment_id: data.segment_id,
        sections: [bytemuck::Zeroable::zeroed(); MAX_SECTIONS],
        header_crc: 0,
        reserved2: 0,
    };
    header.sections[..sink.sections.len()].copy_from_slice(&sink.sections);
    header.header_crc = header.compute_crc();
    let file_len = sink.pos + FOOTER_BYTES as u64;
    let footer = SegmentFooter {
        file_len,
        header_crc: header.header_crc,
        version: SEGMENT_VERSION,
        reserved: 0,
        magic: SEGMENT_MAGIC,
    };
    write_all(&mut sink.out, bytemuck::bytes_of(&footer), &tmp)?;
    let mut file = sink
        .out
        .into_inner()
        .map_err(|e| crate::error::Error::io(&tmp, e.into_error()))?;
    file.seek(SeekFrom::Start(0)).at(&tmp)?;
    write_all(&mut file, bytemuck::bytes_of(&header), &tmp)?;
    file.sync_all().at(&tmp)?;
    drop(file);
    fs::rename(&tmp, &path).at(&path)?;
    sync_dir(dir)?;
    Ok((path, file_len))
}
