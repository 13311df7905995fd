//! `stats()` and `verify()`: what a collection holds, on disk and in the background.

use super::collection::{wal_dir, Collection, Role};
use super::state::State;
use crate::error::Result;
pub use crate::storage::wal::replay::TornTail;
use crate::storage::{fsutil, wal};

fn segment_stats(st: &State) -> Vec<SegmentStats> {
    st.sealed
        .iter()
        .map(|s| SegmentStats {
            id: s.id,
            file: s
                .reader
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            format_version: s.reader.format_version(),
            rows: s.reader.rows(),
            deleted: s.deleted.count_ones(),
            bytes: s.reader.file_bytes(),
            index: s.reader.index().name().to_owned(),
            index_bytes: s.reader.index().bytes() as u64,
            index_detail: s.reader.index().detail(),
            text_bytes: s.reader.text_bytes() as u64,
            quantization: s
                .reader
                .quant()
                .map_or("none", |q| q.kind().name())
                .to_owned(),
            quant_bytes: s.reader.quant_bytes() as u64,
            vector_bytes: s.reader.vector_bytes() as u64,
        })
        .collect()
}

/// Per-segment statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentStats {
    /// Segment id.
    pub id: u64,
    /// The segment's file name in the collection directory.
    pub file: String,
    /// The segment file's format version (FORMAT.md §3).
    pub format_version: u16,
    /// Rows in the file.
    pub rows: usize,
    /// Rows deleted since it was sealed.
    pub deleted: usize,
    /// File size.
    pub bytes: u64,
    /// Index kind over this segment.
    pub index: String,
    /// Bytes of the index structure inside the file (0 for flat).
    pub index_bytes: u64,
    /// The parameters the index was built with (e.g. `nlist=141 pq_m=96 ...`), empty for
    /// flat. A segment of an `ivf_pq` or `lsh` collection too small to train shows index
    /// `flat`: it is scanned exactly.
    pub index_detail: String,
    /// Bytes of the text (BM25) indexes inside the file.
    pub text_bytes: u64,
    /// The segment's quantised vectors: `none`, `sq8` or `binary`.
    pub quantization: String,
    /// Bytes of the quantised vectors (codes, per-row factors, parameters): with the index
    /// bytes, what a search keeps resident (README "Memory").
    pub quant_bytes: u64,
    /// Bytes of the float32 vectors (a quantised segment reads them only to re-rank).
    pub vector_bytes: u64,
}

/// A snapshot of a collection's size and layout.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionStats {
    /// Live points.
    pub rows: usize,
    /// Rows in the appendable (in-memory) segment, live or not.
    pub appendable_rows: usize,
    /// Sealed segments.
    pub segments: Vec<SegmentStats>,
    /// Deleted rows still occupying sealed segments.
    pub deleted: usize,
    /// Bytes of all files in the collection directory.
    pub bytes_on_disk: u64,
    /// Last LSN written to the log.
    pub last_lsn: u64,
    /// LSN covered by the sealed segments.
    pub checkpoint_lsn: u64,
    /// Rows of the frozen segment being sealed in the background (0 when none is).
    pub frozen_rows: usize,
    /// Background work.
    pub background: BackgroundStats,
    /// The damaged end of the log that recovery cut off when this handle opened the
    /// collection, if it did (see [`TornTail`]).
    pub torn_tail: Option<TornTail>,
    /// Whether the handle is read-only (then `last_lsn` is the last record it has applied).
    pub read_only: bool,
    /// The manifest's format version (FORMAT.md §4).
    pub manifest_version: u16,
    /// Log files in the collection's `wal/` directory and their total size.
    pub wal_files: usize,
    /// Bytes of those log files.
    pub wal_bytes: u64,
}

/// Number and total size of the log files of the collection in `dir`.
fn wal_sizes(dir: &std::path::Path) -> Result<(usize, u64)> {
    let mut n = 0;
    let mut bytes = 0;
    for (name, path) in fsutil::list(&wal_dir(dir))? {
        if wal::parse_file_name(&name).is_some() {
            n += 1;
            bytes += fsutil::file_len(&path)?;
        }
    }
    Ok((n, bytes))
}

/// Background work of a collection, as [`Collection::stats`] saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackgroundStats {
    /// A frozen segment is being built and written.
    pub sealing: bool,
    /// Ids of the segments a merge in progress is combining (empty when none is).
    pub merging: Vec<u64>,
    /// Background merges published since the collection was opened.
    pub merges_done: u64,
    /// The last background merge failure, if any (its inputs stay as they were).
    pub last_error: Option<String>,
    /// The idle worker runs: the collection has not converged since its last write (a
    /// quiet period, a seal or a merge is still to come; see [`crate::CompactionPolicy`]).
    pub converging: bool,
}

impl Collection {
    /// Statistics: rows, segments, deletions, bytes on disk, background work in progress.
    ///
    /// Background work that has finished is published first; work still running is
    /// reported, not waited for ([`Collection::wait_idle`] waits).
    ///
    /// ```
    /// # use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Database::open(dir.path(), DbOptions::default())?;
    /// # let c = db.create_collection("c", &CollectionConfig::new(2, Metric::L2))?;
    /// c.upsert(&[1, 2], &[0.0; 4], &[])?;
    /// let s = c.stats()?;
    /// assert_eq!((s.rows, s.appendable_rows, s.segments.len()), (2, 2, 0));
    /// c.flush()?;
    /// let s = c.stats()?;
    /// assert_eq!((s.appendable_rows, s.segments[0].rows), (0, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Result<CollectionStats> {
        self.owner.check()?;
        let mut ws = match &self.role {
            Role::Writer { write, .. } => write.lock(),
            Role::Reader(f) => {
                self.check_read()?;
                let (last_lsn, checkpoint_lsn) = f.position();
                let manifest_version = f.manifest_version();
                let (wal_files, wal_bytes) = wal_sizes(&self.dir)?;
                let st = self.state.read();
                return Ok(CollectionStats {
                    rows: st.len(),
                    appendable_rows: st.appendable.own_rows(),
                    deleted: st.sealed.iter().map(|s| s.deleted.count_ones()).sum(),
                    segments: segment_stats(&st),
                    bytes_on_disk: fsutil::dir_bytes(&self.dir)?,
                    last_lsn,
                    checkpoint_lsn,
                    frozen_rows: 0,
                    background: BackgroundStats::default(),
                    torn_tail: None,
                    read_only: true,
                    manifest_version,
                    wal_files,
                    wal_bytes,
                });
            }
        };
        self.housekeeping_locked(&mut ws)?;
        let (wal_files, wal_bytes) = wal_sizes(&self.dir)?;
        let st = self.state.read();
        let segments = segment_stats(&st);
        Ok(CollectionStats {
            rows: st.len(),
            appendable_rows: st.appendable.own_rows(),
            deleted: segments.iter().map(|s| s.deleted).sum(),
            segments,
            bytes_on_disk: fsutil::dir_bytes(&self.dir)?,
            last_lsn: ws.next_lsn - 1,
            checkpoint_lsn: ws.manifest.checkpoint_lsn,
            frozen_rows: st.frozen.as_ref().map_or(0, |f| f.seg.own_rows()),
            background: BackgroundStats {
                sealing: ws.sealing.is_some(),
                merging: ws
                    .merge
                    .as_ref()
                    .map(|j| j.inputs.iter().map(|(id, _)| *id).collect())
                    .unwrap_or_default(),
                merges_done: ws.merges_done,
                last_error: ws.merge_error.clone(),
                converging: ws.idle_worker,
            },
            torn_tail: ws.torn_tail.clone(),
            read_only: false,
            manifest_version: ws.manifest.format_version,
            wal_files,
            wal_bytes,
        })
    }

    /// Check every checksum of every sealed segment (reads all files).
    pub fn verify(&self) -> Result<()> {
        self.check_read()?;
        let st = self.state.read();
        for s in &st.sealed {
            s.reader.verify()?;
        }
        Ok(())
    }
}
