//! The only place that maps files. Only sealed, read-only files are mapped.
#![expect(
    unsafe_code,
    reason = "memmap2::Mmap::map is unsafe: the file must not change while mapped"
)]

use std::fs::File;

use memmap2::Mmap;

/// Map a sealed file read-only.
pub(crate) fn map_sealed(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: sealed segment files are written once to a temp name, fsynced and renamed
    // into place; no code path in trovedb opens them for writing again, and the database
    // lock file keeps other trovedb processes out of the directory. A file truncated by
    // someone else while mapped would raise SIGBUS (see UNSAFE.md). The map is owned by
    // `SegmentReader`, and every slice borrowed from it is tied to that reader's lifetime.
    unsafe { Mmap::map(file) }
}
