//! Opens a sealed segment by mapping it: the header, footer and section table are
//! validated, the small id/offset sections are checksummed, and nothing else is read.
//! Vectors are served straight from the map through `bytemuck` casts.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::Mmap;

use super::layout::{
    SegmentFooter, SegmentHeader, FOOTER_BYTES, HEADER_PAGE_BYTES, INDEX_HNSW, SECTION_ALIGN,
    SECTION_IDS, SECTION_ID_INDEX, SECTION_PAYLOAD_BYTES, SECTION_PAYLOAD_INDEX,
    SECTION_PAYLOAD_OFFSETS, SECTION_VECTORS, SEGMENT_MAGIC, SEGMENT_OLDEST_VERSION,
    SEGMENT_VERSION,
};
use crate::error::{Error, Result};
use crate::filter::codec::{decode_payload, Decoder};
use crate::filter::payload_index::PayloadIndex;
use crate::filter::value::Payload;
use crate::index::registry::{kind_info, IndexParts, IndexView};
use crate::index::Sections;
use crate::process::Owner;
use crate::storage::fsutil;
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
            let _ = fsutil::remove_if_exists(&self.path);
        }
    }
}

impl SegmentReader {
    /// Map and validate `path`, expecting the given shape.
    pub(crate) fn open(path: &Path, dim: usize, metric: Metric) -> Result<SegmentReader> {
        let map = fsutil::map(path)?;
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
        let index = open_index(&map, &header, path, rows, dim)?;
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
        for kind in [SECTION_IDS, SECTION_ID_INDEX, SECTION_PAYLOAD_OFFSETS] {
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
        self.index.view(&self.map)
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

/// Open the vector index of a segment: find its sections (format v1/v2 numbered every
/// kind's sections globally, from the kind's `LEGACY_BASE`), verify the checksums of those
/// the kind reads whole at open *before* it parses them, then let the kind validate them.
fn open_index(
    map: &[u8],
    header: &SegmentHeader,
    path: &Path,
    rows: usize,
    dim: usize,
) -> Result<IndexParts> {
    let corrupt = |off: usize, why: String| Error::corruption(path, off as u64, why);
    let info = kind_info(header.index_kind)
        .ok_or_else(|| corrupt(11, format!("unknown index kind {}", header.index_kind)))?;
    if header.version < 2 && header.index_kind > INDEX_HNSW {
        return Err(corrupt(
            11,
            format!("index kind {} in a version 1 file", header.index_kind),
        ));
    }
    let foot_at = map.len() - FOOTER_BYTES;
    let mut entries = Vec::with_capacity(usize::from(info.section_count));
    for tag in 1..=info.section_count {
        let kind = info.legacy_base + u32::from(tag) - 1;
        let Some(e) = header.section(kind) else {
            continue;
        };
        let (off, len) = (e.offset as usize, e.len_bytes as usize);
        let end = off.checked_add(len).filter(|end| *end <= foot_at);
        if off < HEADER_PAGE_BYTES || off % SECTION_ALIGN != 0 || end.is_none() {
            return Err(corrupt(
                40,
                format!("section kind {kind} lies outside the file"),
            ));
        }
        if info.checked_at_open.contains(&tag) && crc32fast::hash(&map[off..off + len]) != e.crc {
            return Err(corrupt(
                off,
                format!("section kind {kind} checksum mismatch"),
            ));
        }
        entries.push((tag, off..off + len));
    }
    let sections = Sections {
        bytes: map,
        entries,
    };
    IndexParts::open(header.index_kind, &sections, rows, dim).map_err(|e| {
        let (off, reason) = (e.offset, e.reason);
        // Name the legacy section kind in messages, as files and FORMAT.md number them.
        corrupt(if off == 0 { 40 } else { off }, reason)
    })
}
