//! Opens a sealed segment by mapping it: the header, footer and section table are
//! validated, the small id/offset sections are checksummed, and nothing else is read.
//! Vectors are served straight from the map through `bytemuck` casts.

use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::layout::{
    SegmentFooter, SegmentHeader, FOOTER_BYTES, HEADER_PAGE_BYTES, INDEX_FLAT, INDEX_HNSW,
    SECTION_ALIGN, SECTION_HNSW_L0, SECTION_HNSW_META, SECTION_HNSW_UPPER,
    SECTION_HNSW_UPPER_OFFSETS, SECTION_IDS, SECTION_ID_INDEX, SECTION_PAYLOAD_BYTES,
    SECTION_PAYLOAD_OFFSETS, SECTION_VECTORS, SEGMENT_MAGIC, SEGMENT_OLDEST_VERSION,
    SEGMENT_VERSION,
};
use crate::error::{Error, Result};
use crate::filter::value::Payload;
use crate::index::hnsw::graph::GraphView;
use crate::storage::codec::{decode_payload, Decoder};
use crate::storage::mmap::map_sealed;
use crate::types::Metric;

/// A memory-mapped sealed segment.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    path: PathBuf,
    map: Mmap,
    header: SegmentHeader,
    vectors: Range<usize>,
    ids: Range<usize>,
    id_index: Range<usize>,
    payload_offsets: Range<usize>,
    payload_bytes: Range<usize>,
    graph: Option<GraphParts>,
}

/// Where a validated HNSW graph lies in the map.
#[derive(Debug, Clone)]
struct GraphParts {
    meta: [u64; 8],
    l0: Range<usize>,
    offsets: Range<usize>,
    upper: Range<usize>,
}

impl SegmentReader {
    /// Map and validate `path`, expecting the given shape.
    pub(crate) fn open(path: &Path, dim: usize, metric: Metric) -> Result<SegmentReader> {
        let map = map_sealed(path)?;
        let corrupt = |off: usize, why: String| Error::corruption(path, off as u64, why);
        if map.len() < HEADER_PAGE_BYTES + FOOTER_BYTES {
            return Err(corrupt(
                0,
                format!("file of {} bytes is too short", map.len()),
            ));
        }
        let header: SegmentHeader =
            bytemuck::pod_read_unaligned(&map[..std::mem::size_of::<SegmentHeader>()]);
        if header.magic != SEGMENT_MAGIC {
            return Err(corrupt(0, "bad segment magic".into()));
        }
        if header.version < SEGMENT_OLDEST_VERSION || header.version > SEGMENT_VERSION {
            return Err(Error::IncompatibleFormat {
                file: path.to_path_buf(),
                found: header.version,
                oldest: SEGMENT_OLDEST_VERSION,
                current: SEGMENT_VERSION,
            });
        }
        if header.compute_crc() != header.header_crc {
            return Err(corrupt(
                super::layout::HEADER_CRC_OFFSET,
                "segment header checksum mismatch".into(),
            ));
        }
        let foot_at = map.len() - FOOTER_BYTES;
        let footer: SegmentFooter = bytemuck::pod_read_unaligned(&map[foot_at..]);
        if footer.magic != SEGMENT_MAGIC
            || footer.reserved != 0
            || footer.version != header.version
            || footer.file_len != map.len() as u64
            || footer.header_crc != header.header_crc
        {
            return Err(corrupt(
                foot_at,
                "segment footer does not match (truncated file?)".into(),
            ));
        }
        if header.dim as usize != dim || Metric::from_code(header.metric) != Some(metric) {
            return Err(corrupt(
                16,
                format!(
                    "segment has dim {} metric code {}, collection has dim {dim} metric {}",
                    header.dim,
                    header.metric,
                    metric.name()
                ),
            ));
        }
        let rows = usize::try_from(header.rows)
            .map_err(|_| corrupt(24, "row count does not fit in memory".into()))?;
        let section = |kind: u32, elem: usize, count: Option<usize>| -> Result<Range<usize>> {
            let s = header
                .section(kind)
                .ok_or_else(|| corrupt(40, format!("section kind {kind} missing")))?;
            let (off, len) = (s.offset as usize, s.len_bytes as usize);
            let end = off.checked_add(len).filter(|e| *e <= foot_at);
            if off < HEADER_PAGE_BYTES || off % SECTION_ALIGN != 0 || end.is_none() {
                return Err(corrupt(
                    40,
                    format!("section kind {kind} lies outside the file"),
                ));
            }
            let want = count.and_then(|c| c.checked_mul(elem));
            if len % elem != 0 || want.is_some_and(|w| w != len) {
                return Err(corrupt(
                    off,
                    format!("section kind {kind} has the wrong size {len}"),
                ));
            }
            Ok(off..off + len)
        };
        let rd = rows
            .checked_mul(dim)
            .ok_or_else(|| corrupt(24, "rows x dim overflows".into()))?;
        let graph = match header.index_kind {
            INDEX_FLAT => None,
            INDEX_HNSW => {
                let meta_r = section(SECTION_HNSW_META, 8, Some(8))?;
                let mut meta = [0u64; 8];
                meta.copy_from_slice(bytemuck::cast_slice(&map[meta_r.clone()]));
                let parts = GraphParts {
                    meta,
                    l0: section(SECTION_HNSW_L0, 4, None)?,
                    offsets: section(SECTION_HNSW_UPPER_OFFSETS, 4, Some(rows + 1))?,
                    upper: section(SECTION_HNSW_UPPER, 4, None)?,
                };
                if meta[5] != rows as u64 {
                    return Err(corrupt(
                        meta_r.start,
                        "graph row count differs from the segment's".into(),
                    ));
                }
                GraphView::new(
                    &parts.meta,
                    bytemuck::cast_slice(&map[parts.l0.clone()]),
                    bytemuck::cast_slice(&map[parts.offsets.clone()]),
                    bytemuck::cast_slice(&map[parts.upper.clone()]),
                )
                .map_err(|why| corrupt(meta_r.start, format!("hnsw graph: {why}")))?;
                Some(parts)
            }
            k => return Err(corrupt(11, format!("unknown index kind {k}"))),
        };
        let r = SegmentReader {
            graph,
            vectors: section(SECTION_VECTORS, 4, Some(rd))?,
            ids: section(SECTION_IDS, 8, Some(rows))?,
            id_index: section(SECTION_ID_INDEX, 16, Some(rows))?,
            payload_offsets: section(SECTION_PAYLOAD_OFFSETS, 8, Some(rows + 1))?,
            payload_bytes: section(SECTION_PAYLOAD_BYTES, 1, None)?,
            path: path.to_path_buf(),
            map,
            header,
        };
        for kind in [
            SECTION_IDS,
            SECTION_ID_INDEX,
            SECTION_PAYLOAD_OFFSETS,
            SECTION_HNSW_META,
        ] {
            r.verify_section(kind)?;
        }
        Ok(r)
    }

    fn verify_section(&self, kind: u32) -> Result<()> {
        if let Some(s) = self.header.section(kind) {
            let bytes = &self.map[s.offset as usize..(s.offset + s.len_bytes) as usize];
            if crc32fast::hash(bytes) != s.crc {
                return Err(Error::corruption(
                    &self.path,
                    s.offset,
                    format!("section kind {kind} checksum mismatch"),
                ));
            }
        }
        Ok(())
    }

    /// Check every section's checksum (reads the whole file).
    pub(crate) fn verify(&self) -> Result<()> {
        for s in &self.header.sections[..self.header.section_count as usize] {
            self.verify_section(s.kind)?;
        }
        Ok(())
    }

    pub(crate) fn rows(&self) -> usize {
        self.header.rows as usize
    }

    pub(crate) fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// All vectors, row-major.
    pub(crate) fn vectors(&self) -> &[f32] {
        bytemuck::cast_slice(&self.map[self.vectors.clone()])
    }

    pub(crate) fn vector(&self, row: usize) -> &[f32] {
        let dim = self.header.dim as usize;
        &self.vectors()[row * dim..(row + 1) * dim]
    }

    pub(crate) fn ids(&self) -> &[u64] {
        bytemuck::cast_slice(&self.map[self.ids.clone()])
    }

    /// The HNSW graph of this segment, if it has one (validated at open).
    pub(crate) fn graph(&self) -> Option<GraphView<'_>> {
        self.graph.as_ref().map(|g| {
            GraphView::trusted(
                &g.meta,
                bytemuck::cast_slice(&self.map[g.l0.clone()]),
                bytemuck::cast_slice(&self.map[g.offsets.clone()]),
                bytemuck::cast_slice(&self.map[g.upper.clone()]),
            )
        })
    }

    /// The row holding `id`, by binary search of the sorted (id, row) table.
    pub(crate) fn find(&self, id: u64) -> Option<usize> {
        let table: &[[u64; 2]] = bytemuck::cast_slice(&self.map[self.id_index.clone()]);
        let i = table.binary_search_by_key(&id, |e| e[0]).ok()?;
        let row = table[i][1] as usize;
        // A row out of range or not matching `ids` means the table is damaged; treat the
        // id as absent rather than index out of bounds. `verify()` reports it.
        (row < self.rows() && self.ids()[row] == id).then_some(row)
    }

    /// Decode the payload of `row`.
    pub(crate) fn payload(&self, row: usize) -> Result<Payload> {
        let offsets: &[u64] = bytemuck::cast_slice(&self.map[self.payload_offsets.clone()]);
        let bytes = &self.map[self.payload_bytes.clone()];
        let (a, b) = (offsets[row] as usize, offsets[row + 1] as usize);
        if a > b || b > bytes.len() {
            return Err(Error::corruption(
                &self.path,
                (self.payload_offsets.start + row * 8) as u64,
                "payload offsets out of range",
            ));
        }
        decode_payload(&mut Decoder::new(&bytes[a..b])).map_err(|e| {
            Error::corruption(
                &self.path,
                (self.payload_bytes.start + a + e.offset) as u64,
                format!("bad payload: {}", e.reason),
            )
        })
    }
}
