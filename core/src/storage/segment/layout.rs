//! Byte layout of a sealed segment file (FORMAT.md §Segment).
//!
//! ```text
//! v3:    0        4096                                                     file_len-24
//!        | header | section | pad | ... | section | pad | directory | footer (24) |
//! v1/v2: | header (with a 16-entry section table) | section | ... | section | footer |
//! ```
//! The header is a `#[repr(C)]` struct at offset 0 ([`SegmentHeaderV3`]; v1/v2:
//! [`SegmentHeader`]), zero-padded to [`HEADER_PAGE_BYTES`]. Each section and the v3
//! directory start at a multiple of [`SECTION_ALIGN`].

use bytemuck::{Pod, Zeroable};

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"TROVSEG\0";
/// Format version this build writes. v3 replaced the header's 16-entry section table by a
/// section directory at the end of the file, whose entries belong to the segment itself
/// (owner 0) or to one of its indexes (owner = the index's slot), so a segment holds any
/// number of indexes with any number of sections. v2 added the IVF-PQ and LSH index kinds;
/// v1 files (flat and HNSW only) have the v2 layout. Both are read unchanged.
pub(crate) const SEGMENT_VERSION: u16 = 3;
/// Oldest format version this build reads.
pub(crate) const SEGMENT_OLDEST_VERSION: u16 = 1;
pub(crate) const HEADER_PAGE_BYTES: usize = 4096;
pub(crate) const SECTION_ALIGN: usize = 64;
pub(crate) const MAX_SECTIONS: usize = 16;
pub(crate) const FOOTER_BYTES: usize = 24;

/// Section kinds.
pub(crate) const SECTION_VECTORS: u32 = 1;
pub(crate) const SECTION_IDS: u32 = 2;
pub(crate) const SECTION_ID_INDEX: u32 = 3;
pub(crate) const SECTION_PAYLOAD_OFFSETS: u32 = 4;
pub(crate) const SECTION_PAYLOAD_BYTES: u32 = 5;
// Kinds 6-22 are the vector index's sections: kind `LEGACY_BASE + tag - 1` of the index kind
// (`index/<kind>/kind.rs`: HNSW 6-9, IVF-PQ 10-15, LSH 16-22).
/// The persisted payload index (v2; optional: v1 segments rebuild it from the payloads).
pub(crate) const SECTION_PAYLOAD_INDEX: u32 = 23;

/// Index kind code of HNSW in the header (format v1 knew only flat = 1 and HNSW = 2; every
/// kind's code is its `VectorIndex::CODE`).
pub(crate) const INDEX_HNSW: u8 = 2;

/// One entry of the section table.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Eq)]
pub(crate) struct SectionEntry {
    pub kind: u32,
    pub reserved: u32,
    pub offset: u64,
    pub len_bytes: u64,
    pub crc: u32,
    pub reserved2: u32,
}

/// The segment header (560 bytes, no implicit padding).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct SegmentHeader {
    pub magic: [u8; 8],
    pub version: u16,
    pub metric: u8,
    pub index_kind: u8,
    pub section_count: u32,
    pub dim: u32,
    pub reserved: u32,
    pub rows: u64,
    pub segment_id: u64,
    pub sections: [SectionEntry; MAX_SECTIONS],
    /// CRC32 of the header bytes before this field.
    pub header_crc: u32,
    pub reserved2: u32,
}

pub(crate) const HEADER_CRC_OFFSET: usize = std::mem::offset_of!(SegmentHeader, header_crc);

/// The footer: `file_len u64, header_crc u32, version u16, reserved u16, magic [8]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct SegmentFooter {
    pub file_len: u64,
    pub header_crc: u32,
    pub version: u16,
    pub reserved: u16,
    pub magic: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == 560);
const _: () = assert!(std::mem::size_of::<SegmentFooter>() == FOOTER_BYTES);
const _: () = assert!(HEADER_CRC_OFFSET == 552);

impl SegmentHeader {
    pub(crate) fn compute_crc(&self) -> u32 {
        crc32fast::hash(&bytemuck::bytes_of(self)[..HEADER_CRC_OFFSET])
    }
}

/// The segment header of format v3 (64 bytes, no implicit padding).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct SegmentHeaderV3 {
    pub magic: [u8; 8],
    pub version: u16,
    pub metric: u8,
    pub reserved: u8,
    pub dim: u32,
    pub rows: u64,
    pub segment_id: u64,
    /// Where the directory lies (64-byte aligned, before the footer).
    pub dir_offset: u64,
    pub dir_len: u64,
    pub section_count: u32,
    pub index_count: u32,
    /// CRC32 of the directory bytes.
    pub dir_crc: u32,
    /// CRC32 of the header page but this field ([`header_page_crc`]).
    pub header_crc: u32,
}

pub(crate) const HEADER_V3_CRC_OFFSET: usize = std::mem::offset_of!(SegmentHeaderV3, header_crc);
const _: () = assert!(std::mem::size_of::<SegmentHeaderV3>() == 64);
const _: () = assert!(HEADER_V3_CRC_OFFSET == 60);

/// The checksum of a v3 header page (at least [`HEADER_PAGE_BYTES`] long): every byte of
/// the page but the checksum field itself, so damage to the header's zero padding is
/// detected too.
pub(crate) fn header_page_crc(page: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&page[..HEADER_V3_CRC_OFFSET]);
    h.update(&page[HEADER_V3_CRC_OFFSET + 4..HEADER_PAGE_BYTES]);
    h.finalize()
}

/// An index of a v3 segment, as its directory lists it (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Eq)]
pub(crate) struct DirIndex {
    /// The owner number of its sections (1, 2, ...).
    pub slot: u16,
    /// Its kind's code (`VectorIndex::CODE`).
    pub kind: u8,
    pub reserved: u8,
    /// Length of its field name in the directory's name area (0: the vector index).
    pub name_len: u32,
    /// Offset of its field name in the name area.
    pub name_offset: u64,
}

/// A section of a v3 segment, as its directory lists it (32 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Eq)]
pub(crate) struct DirSection {
    /// 0: the segment's own (vectors, ids, payloads ...); n: index slot n.
    pub owner: u16,
    /// The section's tag within its owner (the segment's own: the `SECTION_*` kinds).
    pub tag: u16,
    pub reserved: u32,
    pub offset: u64,
    pub len_bytes: u64,
    /// CRC32 of the section's bytes.
    pub crc: u32,
    pub reserved2: u32,
}

const _: () = assert!(std::mem::size_of::<DirIndex>() == 16);
const _: () = assert!(std::mem::size_of::<DirSection>() == 32);

/// The slot of a segment's vector index in a v3 directory.
pub(crate) const VECTOR_INDEX_SLOT: u16 = 1;
