//! The readers' page: `<collection>/PUBLISHED`, one 4 KiB file that the collection's writer
//! maps shared and updates with atomic stores, and that read-only handles in other processes
//! map to learn, without a system call, whether there is anything new to see:
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | magic `TROVPUB\0` |
//! | 8 | version `u32` (1), writer process id `u32` |
//! | 16 | generation `u64`: changes whenever the manifest is replaced and when a writer opens |
//! | 24 | visible LSN `u64`: readers apply log records up to this one |
//!
//! The visible LSN is the last record the writer has made as durable as its durability
//! setting promises (synced under `always` and `batch`, written under `off`), so a reader
//! never sees a write that a crash of the writer could take back. The writer stores the
//! visible LSN before it bumps the generation for a manifest that depends on those records.
//!
//! The page is coordination, not data: it is never synced, and after a power cut or a
//! crash it may be stale, zeroed or missing. A writer rewrites it at open (after recovery).
//! A reader treats a page without the magic as "no writer has published": it then reads
//! every complete record in the log.
#![expect(
    unsafe_code,
    reason = "atomics in a memory map shared with other processes"
)]

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapMut};

use crate::error::{IoContext, Result};

/// The page's file name in the collection directory.
pub(crate) const FILE_NAME: &str = "PUBLISHED";
const PAGE_BYTES: u64 = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"TROVPUB\0");
const VERSION: u64 = 1;
const OFF_MAGIC: usize = 0;
const OFF_VERSION_PID: usize = 8;
const OFF_GENERATION: usize = 16;
const OFF_VISIBLE: usize = 24;

/// The atomic at byte `off` of a page mapping.
#[expect(
    clippy::cast_ptr_alignment,
    reason = "mappings are page-aligned and `off` is checked to be a multiple of 8"
)]
fn atomic_at(base: *const u8, len: usize, off: usize) -> &'static AtomicU64 {
    assert!(
        off + 8 <= len && off.is_multiple_of(8),
        "page field {off} out of range"
    );
    // SAFETY: `base` is the start of a live mapping of at least `len` bytes (asserted
    // above to contain the field); mappings are page-aligned and `off` is a multiple of 8,
    // so the pointer is aligned for `AtomicU64`, which has the layout of `u64`. Every
    // process touches these bytes only through atomic operations. The `'static` lifetime is
    // narrowed by the callers to the borrow of the struct owning the mapping (see
    // `PageWriter::field` / `PageReader::field`), which unmaps only on drop.
    unsafe { &*(base.add(off).cast::<AtomicU64>()) }
}

/// The writer's side: created (or taken over) at open.
#[derive(Debug)]
pub(crate) struct PageWriter {
    map: MmapMut,
}

impl PageWriter {
    /// Map the page of the collection in `dir` (creating it), claim it for this process and
    /// publish `visible` under a new generation.
    pub(crate) fn open(dir: &Path, visible: u64) -> Result<PageWriter> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        if file.metadata().at(&path)?.len() < PAGE_BYTES {
            file.set_len(PAGE_BYTES).at(&path)?;
        }
        // SAFETY: the page is a plain shared mapping of a file that is never truncated
        // while in use (only `drop_collection` removes it, after closing this handle);
        // all concurrent access, here and in other processes, goes through atomics.
        let map = unsafe { MmapMut::map_mut(&file) }.at(&path)?;
        let w = PageWriter { map };
        let old = w.field(OFF_GENERATION).load(Ordering::Acquire);
        let valid = w.field(OFF_MAGIC).load(Ordering::Acquire) == MAGIC;
        // A fresh generation even for a page a crash left behind: time-based when the old
        // value cannot be trusted, so that a reader never mistakes the new state for the old.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let generation = if valid {
            old.wrapping_add(1).max(1)
        } else {
            nanos.max(1)
        };
        w.field(OFF_VISIBLE).store(visible, Ordering::Release);
        w.field(OFF_VERSION_PID).store(
            VERSION | (u64::from(std::process::id()) << 32),
            Ordering::Release,
        );
        w.field(OFF_MAGIC).store(MAGIC, Ordering::Release);
        w.field(OFF_GENERATION).store(generation, Ordering::Release);
        Ok(w)
    }

    fn field(&self, off: usize) -> &AtomicU64 {
        atomic_at(self.map.as_ptr(), self.map.len(), off)
    }

    /// Records up to `lsn` may be applied by readers.
    pub(crate) fn publish_lsn(&self, lsn: u64) {
        self.field(OFF_VISIBLE).fetch_max(lsn, Ordering::Release);
    }

    /// The manifest was replaced.
    pub(crate) fn bump_generation(&self) {
        self.field(OFF_GENERATION).fetch_add(1, Ordering::AcqRel);
    }
}

/// Tell the readers of the collection in `dir` (if it has a valid page) that its files are
/// about to change without a writer's open: it is being dropped. Their next call reloads
/// and finds no manifest.
pub(crate) fn announce_drop(dir: &Path) {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(FILE_NAME))
    else {
        return;
    };
    if file.metadata().map_or(true, |m| m.len() < PAGE_BYTES) {
        return;
    }
    // SAFETY: as in `PageWriter::open`.
    let Ok(map) = (unsafe { MmapMut::map_mut(&file) }) else {
        return;
    };
    let w = PageWriter { map };
    if w.field(OFF_MAGIC).load(Ordering::Acquire) == MAGIC {
        w.bump_generation();
    }
}

/// A reader's side.
#[derive(Debug)]
pub(crate) struct PageReader {
    map: Mmap,
}

/// What a reader sees on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    pub generation: u64,
    /// `u64::MAX` when no writer has published (read every complete record).
    pub visible: u64,
}

/// What a reader assumes without a valid page.
pub(crate) const UNPUBLISHED: Published = Published {
    generation: 0,
    visible: u64::MAX,
};

impl PageReader {
    /// Map the page of the collection in `dir`, if it exists and is whole.
    pub(crate) fn open(dir: &Path) -> Option<PageReader> {
        let file = File::open(dir.join(FILE_NAME)).ok()?;
        if file.metadata().ok()?.len() < PAGE_BYTES {
            return None;
        }
        // SAFETY: as for the writer's mapping; this one is read-only and only read through
        // atomic loads. The writer never truncates the file.
        let map = unsafe { Mmap::map(&file) }.ok()?;
        (map.len() as u64 >= PAGE_BYTES).then_some(PageReader { map })
    }

    fn field(&self, off: usize) -> &AtomicU64 {
        atomic_at(self.map.as_ptr(), self.map.len(), off)
    }

    /// The generation and visible LSN now (generation read first: a visible LSN stored
    /// before a generation bump is seen with it).
    pub(crate) fn read(&self) -> Published {
        if self.field(OFF_MAGIC).load(Ordering::Acquire) != MAGIC
            || self.field(OFF_VERSION_PID).load(Ordering::Acquire) & 0xffff_ffff != VERSION
        {
            return UNPUBLISHED;
        }
        let generation = self.field(OFF_GENERATION).load(Ordering::Acquire);
        let visible = self.field(OFF_VISIBLE).load(Ordering::Acquire);
        Published {
            generation,
            visible,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_what_the_writer_publishes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PageReader::open(dir.path()).is_none());
        let w = PageWriter::open(dir.path(), 7).unwrap();
        let r = PageReader::open(dir.path()).unwrap();
        let p0 = r.read();
        assert_eq!(p0.visible, 7);
        w.publish_lsn(9);
        w.publish_lsn(8);
        assert_eq!(r.read().visible, 9);
        w.bump_generation();
        assert_eq!(r.read().generation, p0.generation + 1);
        drop(w);
        // A new writer starts a new generation.
        let _w2 = PageWriter::open(dir.path(), 3).unwrap();
        let p = r.read();
        assert_eq!(p.visible, 3);
        assert_ne!(p.generation, p0.generation + 1);
        // A zeroed page reads as unpublished.
        std::fs::write(dir.path().join(FILE_NAME), vec![0u8; 4096]).unwrap();
        assert_eq!(PageReader::open(dir.path()).unwrap().read(), UNPUBLISHED);
    }
}
