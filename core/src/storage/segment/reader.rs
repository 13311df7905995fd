//! Opens a sealed segment by mapping it: the header, footer and section table are
//! validated, the small id/offset sections are checksummed, and nothing else is read.
//! Vectors are served straight from the map through `bytemuck` casts.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::Mmap;

use super::layout::{
    SegmentFooter, SegmentHeader, FOOTER_BYTES, HEADER_PAGE_BYTES, INDEX_FLAT, INDEX_HNSW,
    INDEX_IVF_PQ, INDEX_LSH, SECTION_ALIGN, SECTION_HNSW_L0, SECTION_HNSW_META, SECTION_HNSW_UPPER,
    SECTION_HNSW_UPPER_OFFSETS, SECTION_IDS, SECTION_ID_INDEX, SECTION_IVF_CENTROIDS,
    SECTION_IVF_CODEBOOKS, SECTION_IVF_CODES, SECTION_IVF_LIST_OFFSETS, SECTION_IVF_LIST_ROWS,
    SECTION_IVF_META, SECTION_LSH_FUNCTIONS, SECTION_LSH_KEYS, SECTION_LSH_META, SECTION_LSH_ROWS,
    SECTION_LSH_SIGS, SECTION_LSH_STARTS, SECTION_LSH_TABLE_OFFSETS, SECTION_PAYLOAD_BYTES,
    SECTION_PAYLOAD_INDEX, SECTION_PAYLOAD_OFFSETS, SECTION_VECTORS, SEGMENT_MAGIC,
    SEGMENT_OLDEST_VERSION, SEGMENT_VERSION,
};
use crate::error::{Error, Result};
use crate::filter::codec::{decode_payload, Decoder};
use crate::filter::payload_index::PayloadIndex;
use crate::filter::value::Payload;
use crate::index::hnsw::graph::GraphView;
use crate::index::ivfpq::IvfPqView;
use crate::index::lsh::LshView;
use crate::process::Owner;
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
    /// The persisted payload index (absent in v1 files).
    payload_index: Option<Range<usize>>,
    index: IndexParts,
    /// Replaced by a merge: the file is removed when the last holder drops this reader.
    obsolete: AtomicBool,
    /// Only the process that opened the reader removes its file (a child that inherited it
    /// through `fork()` drops its copy without touching the file).
    owner: Owner,
}

impl Drop for SegmentReader {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) && self.owner.is_current() {
            // Nothing references the file any more (the manifest stopped naming it before it
            // was marked); if removal fails, the next open removes it as an orphan.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a validated index lies in the map.
#[derive(Debug, Clone)]
enum IndexParts {
    Flat,
    Hnsw(GraphParts),
    IvfPq {
        meta: [u64; 8],
        parts: [Range<usize>; 5],
    },
    Lsh {
        meta: [u64; 8],
        parts: [Range<usize>; 6],
    },
}

/// The index of a sealed segment, borrowed from its map.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IndexView<'a> {
    Flat,
    Hnsw(GraphView<'a>),
    IvfPq(IvfPqView<'a>),
    Lsh(LshView<'a>),
}

impl IndexView<'_> {
    /// Name for `stats()`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            IndexView::Flat => "flat",
            IndexView::Hnsw(_) => "hnsw",
            IndexView::IvfPq(_) => "ivf_pq",
            IndexView::Lsh(_) => "lsh",
        }
    }

    /// Bytes of index structures in the file.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            IndexView::Flat => 0,
            IndexView::Hnsw(g) => g.bytes(),
            IndexView::IvfPq(ix) => ix.bytes(),
            IndexView::Lsh(ix) => ix.bytes(),
        }
    }

    /// The parameters the segment's index was built with, for `stats()`.
    pub(crate) fn detail(&self) -> String {
        match self {
            IndexView::Flat => String::new(),
            IndexView::Hnsw(g) => format!("m={}", g.m),
            IndexView::IvfPq(ix) => format!(
                "nlist={} pq_m={} code_bytes_per_vector={}",
                ix.nlist,
                ix.m,
                ix.code_bytes_per_vector()
            ),
            IndexView::Lsh(ix) => format!(
                "family={} tables={} bits={}",
                ix.family_name(),
                ix.tables,
                ix.bits
            ),
        }
    }
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
        if header.version < 2 && header.index_kind > INDEX_HNSW {
            return Err(corrupt(
                11,
                format!("index kind {} in a version 1 file", header.index_kind),
            ));
        }
        let meta_of = |r: &Range<usize>| -> [u64; 8] {
            let mut meta = [0u64; 8];
            meta.copy_from_slice(bytemuck::cast_slice(&map[r.clone()]));
            meta
        };
        let index = match header.index_kind {
            INDEX_FLAT => IndexParts::Flat,
            INDEX_IVF_PQ => {
                let meta_r = section(SECTION_IVF_META, 8, Some(8))?;
                let meta = meta_of(&meta_r);
                let parts = [
                    section(SECTION_IVF_CENTROIDS, 4, None)?,
                    section(SECTION_IVF_CODEBOOKS, 4, None)?,
                    section(SECTION_IVF_LIST_OFFSETS, 8, None)?,
                    section(SECTION_IVF_LIST_ROWS, 4, None)?,
                    section(SECTION_IVF_CODES, 1, None)?,
                ];
                if meta[3] != rows as u64 || meta[4] != dim as u64 {
                    return Err(corrupt(
                        meta_r.start,
                        "ivf_pq shape differs from the segment's".into(),
                    ));
                }
                IvfPqView::new(
                    &meta,
                    bytemuck::cast_slice(&map[parts[0].clone()]),
                    bytemuck::cast_slice(&map[parts[1].clone()]),
                    bytemuck::cast_slice(&map[parts[2].clone()]),
                    bytemuck::cast_slice(&map[parts[3].clone()]),
                    &map[parts[4].clone()],
                )
                .map_err(|why| corrupt(meta_r.start, format!("ivf_pq index: {why}")))?;
                IndexParts::IvfPq { meta, parts }
            }
            INDEX_LSH => {
                let meta_r = section(SECTION_LSH_META, 8, Some(8))?;
                let meta = meta_of(&meta_r);
                let parts = [
                    section(SECTION_LSH_FUNCTIONS, 4, None)?,
                    section(SECTION_LSH_TABLE_OFFSETS, 8, None)?,
                    section(SECTION_LSH_KEYS, 8, None)?,
                    section(SECTION_LSH_STARTS, 4, None)?,
                    section(SECTION_LSH_ROWS, 4, None)?,
                    section(SECTION_LSH_SIGS, 1, None)?,
                ];
                if meta[3] != rows as u64 || meta[4] != dim as u64 {
                    return Err(corrupt(
                        meta_r.start,
                        "lsh shape differs from the segment's".into(),
                    ));
                }
                LshView::new(
                    &meta,
                    bytemuck::cast_slice(&map[parts[0].clone()]),
                    bytemuck::cast_slice(&map[parts[1].clone()]),
                    bytemuck::cast_slice(&map[parts[2].clone()]),
                    bytemuck::cast_slice(&map[parts[3].clone()]),
                    bytemuck::cast_slice(&map[parts[4].clone()]),
                    &map[parts[5].clone()],
                )
                .map_err(|why| corrupt(meta_r.start, format!("lsh index: {why}")))?;
                IndexParts::Lsh { meta, parts }
            }
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
                IndexParts::Hnsw(parts)
            }
            k => return Err(corrupt(11, format!("unknown index kind {k}"))),
        };
        let r = SegmentReader {
            index,
            vectors: section(SECTION_VECTORS, 4, Some(rd))?,
            ids: section(SECTION_IDS, 8, Some(rows))?,
            id_index: section(SECTION_ID_INDEX, 16, Some(rows))?,
            payload_offsets: section(SECTION_PAYLOAD_OFFSETS, 8, Some(rows + 1))?,
            payload_bytes: section(SECTION_PAYLOAD_BYTES, 1, None)?,
            payload_index: match header.section(SECTION_PAYLOAD_INDEX) {
                Some(_) => Some(section(SECTION_PAYLOAD_INDEX, 1, None)?),
                None => None,
            },
            path: path.to_path_buf(),
            map,
            header,
            obsolete: AtomicBool::new(false),
            owner: Owner::current(),
        };
        for kind in [
            SECTION_IDS,
            SECTION_ID_INDEX,
            SECTION_PAYLOAD_OFFSETS,
            SECTION_HNSW_META,
            SECTION_IVF_META,
            SECTION_IVF_LIST_OFFSETS,
            SECTION_LSH_META,
            SECTION_LSH_TABLE_OFFSETS,
        ] {
            r.verify_section(kind)?;
        }
        Ok(r)
    }

    /// The file is no longer in the manifest: remove it once the last search (or build)
    /// holding this reader lets go of it.
    pub(crate) fn remove_when_unused(&self) {
        self.obsolete.store(true, Ordering::Release);
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

    /// The segment's index (validated at open).
    pub(crate) fn index(&self) -> IndexView<'_> {
        let m = &self.map;
        match &self.index {
            IndexParts::Flat => IndexView::Flat,
            IndexParts::Hnsw(g) => IndexView::Hnsw(GraphView::trusted(
                &g.meta,
                bytemuck::cast_slice(&m[g.l0.clone()]),
                bytemuck::cast_slice(&m[g.offsets.clone()]),
                bytemuck::cast_slice(&m[g.upper.clone()]),
            )),
            IndexParts::IvfPq { meta, parts } => IndexView::IvfPq(IvfPqView::trusted(
                meta,
                bytemuck::cast_slice(&m[parts[0].clone()]),
                bytemuck::cast_slice(&m[parts[1].clone()]),
                bytemuck::cast_slice(&m[parts[2].clone()]),
                bytemuck::cast_slice(&m[parts[3].clone()]),
                &m[parts[4].clone()],
            )),
            IndexParts::Lsh { meta, parts } => IndexView::Lsh(LshView::trusted(
                meta,
                bytemuck::cast_slice(&m[parts[0].clone()]),
                bytemuck::cast_slice(&m[parts[1].clone()]),
                bytemuck::cast_slice(&m[parts[2].clone()]),
                bytemuck::cast_slice(&m[parts[3].clone()]),
                bytemuck::cast_slice(&m[parts[4].clone()]),
                &m[parts[5].clone()],
            )),
        }
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

    /// The payload index persisted in the file, checksummed and decoded (`None` for files
    /// written without one: format v1). Damage is a `Corruption` naming file and offset.
    pub(crate) fn persisted_payload_index(&self) -> Option<Result<PayloadIndex>> {
        let range = self.payload_index.clone()?;
        Some(self.verify_section(SECTION_PAYLOAD_INDEX).and_then(|()| {
            PayloadIndex::decode(&self.map[range.clone()], self.rows()).map_err(|e| {
                Error::corruption(
                    &self.path,
                    (range.start + e.offset) as u64,
                    format!("bad payload index: {}", e.reason),
                )
            })
        }))
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
