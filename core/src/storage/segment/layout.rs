//! Byte layout of a sealed segment file (FORMAT.md §Segment).
//!
//! ```text
//! 0        4096                                           file_len-24   file_len
//! | header | section | pad | section | pad | ... | section | footer (24) |
//! ```
//! The header is a `#[repr(C)]` [`SegmentHeader`] at offset 0, zero-padded to
//! [`HEADER_PAGE_BYTES`]. Each section starts at a multiple of [`SECTION_ALIGN`].

use bytemuck::{Pod, Zeroable};

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"TROVSEG\0";
/// Format version this build writes. v2 added the IVF-PQ and LSH index kinds; v1 files
/// (flat and HNSW only) have the same layout and are read unchanged.
pub(crate) const SEGMENT_VERSION: u16 = 2;
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

    pub(crate) fn section(&self, kind: u32) -> Option<&SectionEntry> {
        self.sections[..(self.section_count as usize).min(MAX_SECTIONS)]
            .iter()
            .find(|s| s.kind == kind)
    }
}
