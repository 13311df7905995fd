//! Opens a sealed segment by mapping it: the header, footer and section table (any format
//! version, see `directory`) are validated, the small id/offset sections and the index
//! metadata are checksummed, and nothing else is read.
//! Vectors are served straight from the map through `bytemuck` casts.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::Mmap;

use super::directory::{Section, SectionTable};
use super::layout::{
    SECTION_IDS, SECTION_ID_INDEX, SECTION_PAYLOAD_BYTES, SECTION_PAYLOAD_INDEX,
    SECTION_PAYLOAD_OFFSETS, SECTION_VECTORS,
};
use crate::error::{Error, Result};
use crate::filter::codec::{decode_payload, decode_payload_key, Decoder};
use crate::filter::payload_index::PayloadIndex;
use crate::filter::value::Payload;
use crate::index::quant::{self, QuantParts, QuantView};
use crate::index::registry::{kind_info, IndexParts, IndexView};
use crate::index::text::{TextParts, TextView, TEXT_KIND};
use crate::index::{ColdTracker, RowSource, Sections};
use crate::process::Owner;
use crate::storage::fsutil;
use crate::types::Metric;

/// A memory-mapped sealed segment.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    path: PathBuf,
    map: Mmap,
    table: SectionTable,
    rows: usize,
    dim: usize,
    vectors: Range<usize>,
    ids: Range<usize>,
    id_index: Range<usize>,
    payload_offsets: Range<usize>,
    payload_bytes: Range<usize>,
    /// The persisted payload index (absent in v1 files).
    payload_index: Option<Range<usize>>,
    index: IndexParts,
    /// The text indexes, by field.
    text: Vec<(String, TextParts)>,
    /// The quantised vectors (quantised collections).
    quant: Option<QuantParts>,
    /// Replaced by a merge: the file is removed when the last holder drops this reader.
    obsolete: AtomicBool,
    /// Only the process that opened the reader removes its file (a child that inherited it
    /// through `fork()` drops its copy without touching the file).
    owner: Owner,
    /// Whether re-ranking has been finding rows on disk (rows are then asked for first).
    cold: ColdTracker,
}

impl RowSource for SegmentReader {
    fn will_need(&self, range: Range<usize>) {
        let at = self.vectors.start + range.start;
        if range.end <= self.vectors.len() {
            // Advice only: a refusal changes no result.
            let _ = self
                .map
                .advise_range(memmap2::Advice::WillNeed, at, range.len());
        }
    }

    fn cold(&self) -> bool {
        self.cold.cold()
    }

    fn observe(&self, rows: usize, nanos: u64) {
        self.cold.observe(rows, nanos);
    }
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
        let table = SectionTable::parse(&map, path)?;
        if table.dim as usize != dim || Metric::from_code(table.metric) != Some(metric) {
            return Err(corrupt(
                16,
                format!(
                    "segment has dim {} metric code {}, collection has dim {dim} metric {}",
                    table.dim,
                    table.metric,
                    metric.name()
                ),
            ));
        }
        let rows = usize::try_from(table.rows)
            .map_err(|_| corrupt(24, "row count does not fit in memory".into()))?;
        let section = |kind: u32, elem: usize, count: Option<usize>| -> Result<Range<usize>> {
            let s = table
                .find(0, kind as u16)
                .ok_or_else(|| corrupt(40, format!("section kind {kind} missing")))?;
            let len = s.range.len();
            let want = count.and_then(|c| c.checked_mul(elem));
            if !len.is_multiple_of(elem) || count.is_some_and(|_| want != Some(len)) {
                return Err(corrupt(
                    s.range.start,
                    format!("section kind {kind} has the wrong size {len}"),
                ));
            }
            Ok(s.range.clone())
        };
        let rd = rows
            .checked_mul(dim)
            .ok_or_else(|| corrupt(24, "rows x dim overflows".into()))?;
        let rows_plus_one = rows
            .checked_add(1)
            .ok_or_else(|| corrupt(24, "row count overflows".into()))?;
        let index = open_index(&map, &table, path, rows, dim)?;
        let text = open_text(&map, &table, path, rows)?;
        let quant = open_quant(&map, &table, path, rows, dim)?;
        let r = SegmentReader {
            index,
            text,
            quant,
            vectors: section(SECTION_VECTORS, 4, Some(rd))?,
            ids: section(SECTION_IDS, 8, Some(rows))?,
            id_index: section(SECTION_ID_INDEX, 16, Some(rows))?,
            payload_offsets: section(SECTION_PAYLOAD_OFFSETS, 8, Some(rows_plus_one))?,
            payload_bytes: section(SECTION_PAYLOAD_BYTES, 1, None)?,
            payload_index: match table.find(0, SECTION_PAYLOAD_INDEX as u16) {
                Some(_) => Some(section(SECTION_PAYLOAD_INDEX, 1, None)?),
                None => None,
            },
            path: path.to_path_buf(),
            map,
            rows,
            dim,
            table,
            obsolete: AtomicBool::new(false),
            owner: Owner::current(),
            cold: ColdTracker::default(),
        };
        for kind in [SECTION_IDS, SECTION_ID_INDEX, SECTION_PAYLOAD_OFFSETS] {
            r.verify_section(0, kind as u16)?;
        }
        // The float rows of a segment searched on codes or lists are read a few rows at a
        // time, at random, to re-rank: read-ahead around each would only evict the codes
        // (and, larger than memory, multiply the bytes read from disk per query).
        let rerank_only =
            r.quant.is_some() || matches!(r.index(), IndexView::IvfPq(_) | IndexView::Lsh(_));
        if rerank_only && !r.vectors.is_empty() {
            // Advice only: a refusal changes no result.
            let _ = r
                .map
                .advise_range(memmap2::Advice::Random, r.vectors.start, r.vectors.len());
        }
        Ok(r)
    }

    /// The file is no longer in the manifest: remove it once the last search (or build)
    /// holding this reader lets go of it.
    pub(crate) fn remove_when_unused(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    fn verify_section(&self, owner: u16, tag: u16) -> Result<()> {
        match self.table.find(owner, tag) {
            Some(s) => check_crc(&self.map, s, &self.path),
            None => Ok(()),
        }
    }

    /// Check every section's checksum (reads the whole file) and decode every text
    /// index's postings.
    pub(crate) fn verify(&self) -> Result<()> {
        for s in &self.table.sections {
            check_crc(&self.map, s, &self.path)?;
        }
        for (field, parts) in &self.text {
            parts.view(&self.map).decode_all().map_err(|off| {
                Error::corruption(
                    &self.path,
                    off as u64,
                    format!("text index of field `{field}`: damaged postings"),
                )
            })?;
        }
        Ok(())
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// The file's format version (checked at open: the header is at least a page).
    pub(crate) fn format_version(&self) -> u16 {
        u16::from_le_bytes([self.map[8], self.map[9]])
    }

    /// All vectors, row-major.
    pub(crate) fn vectors(&self) -> &[f32] {
        bytemuck::cast_slice(&self.map[self.vectors.clone()])
    }

    pub(crate) fn vector(&self, row: usize) -> &[f32] {
        let dim = self.dim;
        &self.vectors()[row * dim..(row + 1) * dim]
    }

    pub(crate) fn ids(&self) -> &[u64] {
        bytemuck::cast_slice(&self.map[self.ids.clone()])
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The text index of `field` (validated at open), if the segment has one.
    pub(crate) fn text(&self, field: &str) -> Option<TextView<'_>> {
        self.text
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, p)| p.view(&self.map))
    }

    /// The quantised vectors (validated at open), if the segment has them.
    pub(crate) fn quant(&self) -> Option<QuantView<'_>> {
        self.quant.as_ref().map(|p| p.view(&self.map, self.dim))
    }

    /// Bytes of the quantised vectors (codes, per-row factors and parameters).
    pub(crate) fn quant_bytes(&self) -> usize {
        self.quant.as_ref().map_or(0, QuantParts::bytes)
    }

    /// Bytes of the float32 vectors.
    pub(crate) fn vector_bytes(&self) -> usize {
        self.vectors.len()
    }

    /// Bytes of the text indexes.
    pub(crate) fn text_bytes(&self) -> usize {
        self.text.iter().map(|(_, p)| p.bytes()).sum()
    }

    /// The segment's index (validated at open).
    pub(crate) fn index(&self) -> IndexView<'_> {
        self.index.view(&self.map)
    }

    /// The row holding `id`, by binary search of the sorted (id, row) table.
    /// Rows with an id above `after` (all when `None`), in id order, from the id table
    /// (entries that do not match the ids section are left out, as in `find`).
    pub(crate) fn rows_by_id(&self, after: Option<u64>) -> impl Iterator<Item = (u64, usize)> + '_ {
        let table: &[[u64; 2]] = bytemuck::cast_slice(&self.map[self.id_index.clone()]);
        let from = after.map_or(0, |a| table.partition_point(|e| e[0] <= a));
        let ids = self.ids();
        table[from..]
            .iter()
            .map(|e| (e[0], e[1] as usize))
            .filter(move |&(id, row)| row < ids.len() && ids[row] == id)
    }

    pub(crate) fn find(&self, id: u64) -> Option<usize> {
        let table: &[[u64; 2]] = bytemuck::cast_slice(&self.map[self.id_index.clone()]);
        let i = find_sorted(table, id)?;
        let row = table[i][1] as usize;
        // A row out of range or not matching `ids` means the table is damaged; treat the
        // id as absent rather than index out of bounds. `verify()` reports it.
        (row < self.rows() && self.ids()[row] == id).then_some(row)
    }

    /// The payload index persisted in the file, checksummed and decoded (`None` for files
    /// written without one: format v1). Damage is a `Corruption` naming file and offset.
    pub(crate) fn persisted_payload_index(&self) -> Option<Result<PayloadIndex>> {
        let range = self.payload_index.clone()?;
        Some(
            self.verify_section(0, SECTION_PAYLOAD_INDEX as u16)
                .and_then(|()| {
                    PayloadIndex::decode(&self.map[range.clone()], self.rows()).map_err(|e| {
                        Error::corruption(
                            &self.path,
                            (range.start + e.offset) as u64,
                            format!("bad payload index: {}", e.reason),
                        )
                    })
                }),
        )
    }

    /// Decode the payload of `row`.
    pub(crate) fn payload(&self, row: usize) -> Result<Payload> {
        let (a, bytes) = self.payload_bytes_of(row)?;
        decode_payload(&mut Decoder::new(bytes)).map_err(|e| {
            Error::corruption(
                &self.path,
                (self.payload_bytes.start + a + e.offset) as u64,
                format!("bad payload: {}", e.reason),
            )
        })
    }

    /// The string key stored with `row` (string-id collections; see `filter::key`), read
    /// without decoding the rest of its payload.
    pub(crate) fn payload_key(&self, row: usize) -> Result<Option<&str>> {
        let (a, bytes) = self.payload_bytes_of(row)?;
        decode_payload_key(&mut Decoder::new(bytes)).map_err(|e| {
            Error::corruption(
                &self.path,
                (self.payload_bytes.start + a + e.offset) as u64,
                format!("bad payload: {}", e.reason),
            )
        })
    }

    /// Where `row`'s encoded payload starts in the payload bytes, and those bytes.
    fn payload_bytes_of(&self, row: usize) -> Result<(usize, &[u8])> {
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
        Ok((a, &bytes[a..b]))
    }
}

/// The position of `id` in `table` (sorted by its first column). A few interpolation steps
/// first: ids are sequential numbers or 64-bit hashes of string keys, spread evenly enough
/// that each step shrinks the range to about its square root, so a lookup in a large
/// segment touches a handful of cache lines instead of ~log2(rows); then a binary search of
/// what is left (also the answer for unevenly spread ids). A table out of order (damage)
/// gives a wrong "absent", never a panic.
fn find_sorted(table: &[[u64; 2]], id: u64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, table.len());
    for _ in 0..4 {
        if hi - lo <= 32 {
            break;
        }
        let (a, b) = (table[lo][0], table[hi - 1][0]);
        if id < a || id > b {
            return None;
        }
        if a >= b {
            break;
        }
        let span = (hi - 1 - lo) as u128;
        let pos = lo + (u128::from(id - a) * span / u128::from(b - a)) as usize;
        let pos = pos.clamp(lo, hi - 1);
        match table[pos][0].cmp(&id) {
            std::cmp::Ordering::Equal => return Some(pos),
            std::cmp::Ordering::Less => lo = pos + 1,
            std::cmp::Ordering::Greater => hi = pos,
        }
    }
    table[lo..hi]
        .binary_search_by_key(&id, |e| e[0])
        .ok()
        .map(|i| lo + i)
}

/// `Corruption` unless section `s` matches its checksum.
fn check_crc(map: &[u8], s: &Section, path: &Path) -> Result<()> {
    if crc32fast::hash(&map[s.range.clone()]) == s.crc {
        Ok(())
    } else {
        Err(Error::corruption(
            path,
            s.range.start as u64,
            format!("section {}/{} checksum mismatch", s.owner, s.tag),
        ))
    }
}

/// Open the text indexes of a segment: every byte of their sections is checksummed, then
/// their structure validated (a text index is read at random by queries, so it is checked
/// whole once).
fn open_text(
    map: &[u8],
    table: &SectionTable,
    path: &Path,
    rows: usize,
) -> Result<Vec<(String, TextParts)>> {
    let mut out = Vec::new();
    for ix in table.indexes.iter().filter(|i| i.kind == TEXT_KIND) {
        let mut entries = Vec::new();
        for s in table.sections.iter().filter(|s| s.owner == ix.slot) {
            check_crc(map, s, path)?;
            entries.push((s.tag, s.range.clone()));
        }
        let sections = Sections {
            bytes: map,
            entries,
        };
        let parts = TextParts::open(&sections, rows).map_err(|e| {
            Error::corruption(
                path,
                e.offset as u64,
                format!("text index of field `{}`: {}", ix.field, e.reason),
            )
        })?;
        out.push((ix.field.clone(), parts));
    }
    Ok(out)
}

/// Open the quantised vectors of a segment, if it has them: the meta and parameter
/// sections are checksummed before they are parsed; the codes are checked by `verify()`.
fn open_quant(
    map: &[u8],
    table: &SectionTable,
    path: &Path,
    rows: usize,
    dim: usize,
) -> Result<Option<QuantParts>> {
    let Some(ix) = table.quant_index() else {
        return Ok(None);
    };
    let mut entries = Vec::new();
    for s in table.sections.iter().filter(|s| s.owner == ix.slot) {
        if quant::CHECKED_AT_OPEN.contains(&s.tag) {
            check_crc(map, s, path)?;
        }
        entries.push((s.tag, s.range.clone()));
    }
    let sections = Sections {
        bytes: map,
        entries,
    };
    QuantParts::open(&sections, rows, dim)
        .map(Some)
        .map_err(|e| {
            Error::corruption(
                path,
                if e.offset == 0 { 40 } else { e.offset } as u64,
                e.reason,
            )
        })
}

/// Open the vector index of a segment: gather its sections from the table, verify the
/// checksums of those the kind reads whole at open *before* it parses them, then let the
/// kind validate them.
fn open_index(
    map: &[u8],
    table: &SectionTable,
    path: &Path,
    rows: usize,
    dim: usize,
) -> Result<IndexParts> {
    let corrupt = |off: usize, why: String| Error::corruption(path, off as u64, why);
    let ix = table
        .vector_index()
        .ok_or_else(|| corrupt(40, "the segment lists no vector index".into()))?;
    let info =
        kind_info(ix.kind).ok_or_else(|| corrupt(11, format!("unknown index kind {}", ix.kind)))?;
    let mut entries = Vec::new();
    for s in table.sections.iter().filter(|s| s.owner == ix.slot) {
        if info.checked_at_open.contains(&s.tag) {
            check_crc(map, s, path)?;
        }
        entries.push((s.tag, s.range.clone()));
    }
    let sections = Sections {
        bytes: map,
        entries,
    };
    IndexParts::open(ix.kind, &sections, rows, dim)
        .map_err(|e| corrupt(if e.offset == 0 { 40 } else { e.offset }, e.reason))
}

#[cfg(test)]
mod find_tests {
    use super::find_sorted;

    #[test]
    fn interpolation_lookup_agrees_with_binary_search() {
        let mut z = 7u64;
        let mut next = || {
            z = z
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            z
        };
        for n in [0usize, 1, 2, 31, 33, 1000, 20_000] {
            for kind in 0..3 {
                let mut ids: Vec<u64> = (0..n as u64)
                    .map(|i| match kind {
                        0 => i * 3,
                        1 => next(),
                        _ if i % 2 == 0 => i,
                        _ => u64::MAX - 1 - i,
                    })
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                let table: Vec<[u64; 2]> = ids
                    .iter()
                    .enumerate()
                    .map(|(r, id)| [*id, r as u64])
                    .collect();
                for (i, id) in ids.iter().enumerate() {
                    assert_eq!(find_sorted(&table, *id), Some(i));
                }
                for _ in 0..200 {
                    let probe = if kind == 0 {
                        next() % (3 * n as u64 + 3)
                    } else {
                        next()
                    };
                    let want = table.binary_search_by_key(&probe, |e| e[0]).ok();
                    assert_eq!(
                        find_sorted(&table, probe),
                        want,
                        "n {n} kind {kind} probe {probe}"
                    );
                }
            }
        }
    }
}
