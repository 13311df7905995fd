//! The section table of a segment, whatever its format version. v1/v2 list at most 16
//! sections in the header, numbered globally (the vector index's from its kind's
//! `LEGACY_BASE`); v3 lists any number in a directory at the end of the file, each owned by
//! the segment itself (owner 0) or by one of its indexes (owner = the index's slot). Both
//! are turned into one [`SectionTable`] whose every range lies inside the file, aligned, so
//! the reader never looks at a format version again.

use std::ops::Range;
use std::path::Path;

use super::layout::{
    header_page_crc, DirIndex, DirSection, SegmentFooter, SegmentHeader, SegmentHeaderV3,
    FOOTER_BYTES, HEADER_CRC_OFFSET, HEADER_PAGE_BYTES, HEADER_V3_CRC_OFFSET, INDEX_HNSW,
    MAX_SECTIONS, SECTION_ALIGN, SECTION_IDS, SECTION_ID_INDEX, SECTION_PAYLOAD_BYTES,
    SECTION_PAYLOAD_INDEX, SECTION_PAYLOAD_OFFSETS, SECTION_VECTORS, SEGMENT_MAGIC,
    SEGMENT_OLDEST_VERSION, SEGMENT_VERSION, VECTOR_INDEX_SLOT,
};
use crate::error::{Error, Result};
use crate::index::quant::QUANT_KIND;
use crate::index::registry::kind_info;

/// A section: its owner (0: the segment; n: index slot n), its tag within the owner, where
/// it lies, its checksum, and where its table entry is (for error offsets).
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub owner: u16,
    pub tag: u16,
    pub range: Range<usize>,
    pub crc: u32,
    pub entry_at: usize,
}

/// An index of the segment: its slot, kind code and field (empty: the vector index).
#[derive(Debug, Clone)]
pub(crate) struct IndexInfo {
    pub slot: u16,
    pub kind: u8,
    pub field: String,
}

/// A segment's header facts and sections, checked against the file.
#[derive(Debug, Clone)]
pub(crate) struct SectionTable {
    pub metric: u8,
    pub dim: u32,
    pub rows: u64,
    pub sections: Vec<Section>,
    pub indexes: Vec<IndexInfo>,
}

fn corrupt(path: &Path, off: usize, why: impl Into<String>) -> Error {
    Error::corruption(path, off as u64, why)
}

impl SectionTable {
    /// Parse and check the header, footer and section table (v3: the directory, whose
    /// checksum is verified before it is read) of the mapped file `map`.
    pub(crate) fn parse(map: &[u8], path: &Path) -> Result<SectionTable> {
        if map.len() < HEADER_PAGE_BYTES + FOOTER_BYTES {
            return Err(corrupt(
                path,
                0,
                format!("file of {} bytes is too short", map.len()),
            ));
        }
        if map[..8] != SEGMENT_MAGIC {
            return Err(corrupt(path, 0, "bad segment magic"));
        }
        let version = u16::from_le_bytes([map[8], map[9]]);
        if !(SEGMENT_OLDEST_VERSION..=SEGMENT_VERSION).contains(&version) {
            return Err(Error::IncompatibleFormat {
                file: path.to_path_buf(),
                found: version,
                oldest: SEGMENT_OLDEST_VERSION,
                current: SEGMENT_VERSION,
            });
        }
        let foot_at = map.len() - FOOTER_BYTES;
        let (table, header_crc) = if version >= 3 {
            Self::parse_v3(map, path, foot_at)?
        } else {
            Self::parse_v2(map, path)?
        };
        let footer: SegmentFooter = bytemuck::pod_read_unaligned(&map[foot_at..]);
        if footer.magic != SEGMENT_MAGIC
            || footer.reserved != 0
            || footer.version != version
            || footer.file_len != map.len() as u64
            || footer.header_crc != header_crc
        {
            return Err(corrupt(
                path,
                foot_at,
                "segment footer does not match (truncated file?)",
            ));
        }
        for s in &table.sections {
            let (off, len) = (s.range.start, s.range.len());
            if off < HEADER_PAGE_BYTES
                || !off.is_multiple_of(SECTION_ALIGN)
                || s.range.end > foot_at
            {
                return Err(corrupt(
                    path,
                    s.entry_at,
                    format!(
                        "section {}/{} ({len} bytes at {off}) lies outside the file",
                        s.owner, s.tag
                    ),
                ));
            }
        }
        Ok(table)
    }

    /// Format v1/v2: the 16-entry table in the header.
    fn parse_v2(map: &[u8], path: &Path) -> Result<(SectionTable, u32)> {
        let h: SegmentHeader =
            bytemuck::pod_read_unaligned(&map[..std::mem::size_of::<SegmentHeader>()]);
        if h.compute_crc() != h.header_crc {
            return Err(corrupt(
                path,
                HEADER_CRC_OFFSET,
                "segment header checksum mismatch",
            ));
        }
        if h.version < 2 && h.index_kind > INDEX_HNSW {
            return Err(corrupt(
                path,
                11,
                format!("index kind {} in a version 1 file", h.index_kind),
            ));
        }
        let count = h.section_count as usize;
        if count > MAX_SECTIONS {
            return Err(corrupt(
                path,
                12,
                format!(
                    "{count} sections where a version {} header holds {MAX_SECTIONS}",
                    h.version
                ),
            ));
        }
        let info = kind_info(h.index_kind)
            .ok_or_else(|| corrupt(path, 11, format!("unknown index kind {}", h.index_kind)))?;
        let table_at = std::mem::offset_of!(SegmentHeader, sections);
        let mut sections = Vec::with_capacity(count);
        for (i, e) in h.sections[..count].iter().enumerate() {
            let entry_at = table_at + i * std::mem::size_of_val(e);
            let own = [
                SECTION_VECTORS,
                SECTION_IDS,
                SECTION_ID_INDEX,
                SECTION_PAYLOAD_OFFSETS,
                SECTION_PAYLOAD_BYTES,
                SECTION_PAYLOAD_INDEX,
            ];
            let (owner, tag) = if own.contains(&e.kind) {
                (0, e.kind)
            } else if e.kind >= info.legacy_base
                && e.kind < info.legacy_base + u32::from(info.section_count)
                && info.legacy_base > 0
            {
                (VECTOR_INDEX_SLOT, e.kind - info.legacy_base + 1)
            } else {
                return Err(corrupt(
                    path,
                    entry_at,
                    format!("section kind {} does not belong in this segment", e.kind),
                ));
            };
            let range = range_of(e.offset, e.len_bytes).ok_or_else(|| {
                corrupt(
                    path,
                    entry_at,
                    format!("section kind {} is out of range", e.kind),
                )
            })?;
            sections.push(Section {
                owner,
                tag: tag as u16,
                range,
                crc: e.crc,
                entry_at,
            });
        }
        let table = SectionTable {
            metric: h.metric,
            dim: h.dim,
            rows: h.rows,
            sections,
            indexes: vec![IndexInfo {
                slot: VECTOR_INDEX_SLOT,
                kind: h.index_kind,
                field: String::new(),
            }],
        };
        Ok((table, h.header_crc))
    }

    /// Format v3: the directory at the end of the file.
    fn parse_v3(map: &[u8], path: &Path, foot_at: usize) -> Result<(SectionTable, u32)> {
        let h: SegmentHeaderV3 =
            bytemuck::pod_read_unaligned(&map[..std::mem::size_of::<SegmentHeaderV3>()]);
        if header_page_crc(map) != h.header_crc {
            return Err(corrupt(
                path,
                HEADER_V3_CRC_OFFSET,
                "segment header checksum mismatch",
            ));
        }
        let dir = range_of(h.dir_offset, h.dir_len)
            .filter(|r| {
                r.start >= HEADER_PAGE_BYTES
                    && r.start.is_multiple_of(SECTION_ALIGN)
                    && r.end <= foot_at
            })
            .ok_or_else(|| corrupt(path, 32, "section directory lies outside the file"))?;
        let bytes = &map[dir.clone()];
        if crc32fast::hash(bytes) != h.dir_crc {
            return Err(corrupt(
                path,
                dir.start,
                "section directory checksum mismatch",
            ));
        }
        let (ic, sc) = (h.index_count as usize, h.section_count as usize);
        let index_bytes = ic.checked_mul(std::mem::size_of::<DirIndex>());
        let section_bytes = sc.checked_mul(std::mem::size_of::<DirSection>());
        let fixed = index_bytes
            .zip(section_bytes)
            .and_then(|(a, b)| a.checked_add(b))
            .filter(|n| *n <= bytes.len())
            .ok_or_else(|| corrupt(path, 48, "directory counts exceed the directory"))?;
        let index_bytes = ic * std::mem::size_of::<DirIndex>();
        let names = &bytes[fixed..];
        let mut indexes = Vec::with_capacity(ic);
        for i in 0..ic {
            let at = i * std::mem::size_of::<DirIndex>();
            let e: DirIndex =
                bytemuck::pod_read_unaligned(&bytes[at..at + std::mem::size_of::<DirIndex>()]);
            let name = usize::try_from(e.name_offset)
                .ok()
                .zip(usize::try_from(e.name_len).ok())
                .and_then(|(o, l)| Some(o..o.checked_add(l)?))
                .filter(|r| r.end <= names.len())
                .and_then(|r| std::str::from_utf8(&names[r]).ok())
                .ok_or_else(|| {
                    corrupt(
                        path,
                        dir.start + at,
                        "index entry names a field outside the directory",
                    )
                })?;
            if e.slot == 0 || indexes.iter().any(|x: &IndexInfo| x.slot == e.slot) {
                return Err(corrupt(
                    path,
                    dir.start + at,
                    format!("index slot {} is not unique and positive", e.slot),
                ));
            }
            indexes.push(IndexInfo {
                slot: e.slot,
                kind: e.kind,
                field: name.to_owned(),
            });
        }
        let mut sections = Vec::with_capacity(sc);
        for i in 0..sc {
            let at = index_bytes + i * std::mem::size_of::<DirSection>();
            let e: DirSection =
                bytemuck::pod_read_unaligned(&bytes[at..at + std::mem::size_of::<DirSection>()]);
            let entry_at = dir.start + at;
            if e.owner != 0 && !indexes.iter().any(|x| x.slot == e.owner) {
                return Err(corrupt(
                    path,
                    entry_at,
                    format!("section owned by unknown index slot {}", e.owner),
                ));
            }
            let range = range_of(e.offset, e.len_bytes)
                .ok_or_else(|| corrupt(path, entry_at, "section is out of range"))?;
            sections.push(Section {
                owner: e.owner,
                tag: e.tag,
                range,
                crc: e.crc,
                entry_at,
            });
        }
        let table = SectionTable {
            metric: h.metric,
            dim: h.dim,
            rows: h.rows,
            sections,
            indexes,
        };
        Ok((table, h.header_crc))
    }

    /// The section `tag` of `owner`.
    pub(crate) fn find(&self, owner: u16, tag: u16) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.owner == owner && s.tag == tag)
    }

    /// The vector index (the index with no field that is not the quantised vectors).
    pub(crate) fn vector_index(&self) -> Option<&IndexInfo> {
        self.indexes
            .iter()
            .find(|i| i.field.is_empty() && i.kind != QUANT_KIND)
    }

    /// The quantised vectors, if the segment has them.
    pub(crate) fn quant_index(&self) -> Option<&IndexInfo> {
        self.indexes.iter().find(|i| i.kind == QUANT_KIND)
    }
}

/// `offset..offset + len` if it fits in memory.
fn range_of(offset: u64, len: u64) -> Option<Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    Some(start..start.checked_add(len)?)
}

/// The v3 directory: `indexes` as (slot, kind, field), then the sections, then the names.
pub(crate) fn encode_directory(indexes: &[(u16, u8, &str)], sections: &[DirSection]) -> Vec<u8> {
    let mut names = Vec::new();
    let mut out = Vec::new();
    for (slot, kind, field) in indexes {
        let e = DirIndex {
            slot: *slot,
            kind: *kind,
            reserved: 0,
            name_len: field.len() as u32,
            name_offset: names.len() as u64,
        };
        names.extend_from_slice(field.as_bytes());
        out.extend_from_slice(bytemuck::bytes_of(&e));
    }
    for s in sections {
        out.extend_from_slice(bytemuck::bytes_of(s));
    }
    out.extend_from_slice(&names);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 file of `sections` (owner, tag) of 64 bytes each, listing `indexes`.
    fn file(indexes: &[(u16, u8, &str)], sections: &[(u16, u16)]) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_PAGE_BYTES];
        let mut entries = Vec::new();
        for (i, (owner, tag)) in sections.iter().enumerate() {
            let bytes = [i as u8; 64];
            entries.push(DirSection {
                owner: *owner,
                tag: *tag,
                reserved: 0,
                offset: out.len() as u64,
                len_bytes: 64,
                crc: crc32fast::hash(&bytes),
                reserved2: 0,
            });
            out.extend_from_slice(&bytes);
        }
        let dir = encode_directory(indexes, &entries);
        let dir_offset = out.len() as u64;
        out.extend_from_slice(&dir);
        let mut h = SegmentHeaderV3 {
            magic: SEGMENT_MAGIC,
            version: SEGMENT_VERSION,
            metric: 1,
            reserved: 0,
            dim: 4,
            rows: 1,
            segment_id: 9,
            dir_offset,
            dir_len: dir.len() as u64,
            section_count: entries.len() as u32,
            index_count: indexes.len() as u32,
            dir_crc: crc32fast::hash(&dir),
            header_crc: 0,
        };
        out[..64].copy_from_slice(bytemuck::bytes_of(&h));
        h.header_crc = header_page_crc(&out);
        out[..64].copy_from_slice(bytemuck::bytes_of(&h));
        let footer = SegmentFooter {
            file_len: (out.len() + FOOTER_BYTES) as u64,
            header_crc: h.header_crc,
            version: SEGMENT_VERSION,
            reserved: 0,
            magic: SEGMENT_MAGIC,
        };
        out.extend_from_slice(bytemuck::bytes_of(&footer));
        out
    }

    #[test]
    fn a_directory_holds_many_indexes_and_sections() {
        let indexes = [(1, 2, ""), (2, 9, "text"), (3, 9, "title")];
        let sections: Vec<(u16, u16)> = (0..40u16).map(|i| (i % 4, i / 4 + 1)).collect();
        let bytes = file(&indexes, &sections);
        let t = SectionTable::parse(&bytes, Path::new("x.seg")).expect("parses");
        assert_eq!(t.sections.len(), 40);
        assert_eq!(t.indexes.len(), 3);
        assert_eq!(t.indexes[2].field, "title");
        assert_eq!(t.vector_index().map(|i| (i.slot, i.kind)), Some((1, 2)));
        let s = t.find(2, 5).expect("slot 2 tag 5");
        assert_eq!(bytes[s.range.start], 18);
        // Every flipped byte of the header page and of the directory is detected.
        let dir_at = HEADER_PAGE_BYTES + 40 * 64;
        for at in (0..HEADER_PAGE_BYTES)
            .step_by(97)
            .chain(dir_at..bytes.len() - FOOTER_BYTES)
        {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                SectionTable::parse(&bad, Path::new("x.seg")).is_err(),
                "flip at {at} not detected"
            );
        }
    }

    #[test]
    fn a_section_of_an_unknown_slot_is_corruption() {
        let bytes = file(&[(1, 1, "")], &[(0, 1), (4, 1)]);
        match SectionTable::parse(&bytes, Path::new("x.seg")) {
            Err(Error::Corruption { reason, .. }) => assert!(reason.contains("slot 4"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
