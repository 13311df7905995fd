//! Read-only handles: following what a writer, in this process or another, publishes.
//!
//! A read-only collection holds the same in-memory [`State`] as a writer: the sealed
//! segments of a manifest plus an appendable segment rebuilt from the log records after the
//! manifest's checkpoint. It never writes a file and takes no lock. Before every read it
//! compares two numbers on the writer's shared page (`storage::published`) with the ones
//! it last acted on:
//!
//! - the **visible LSN** grew: the new log records, up to that LSN, are read (from where the
//!   last read stopped, following the writer into its next log file) and applied;
//! - the **generation** changed (a new manifest, or a writer reopened the collection): the
//!   manifest is read again; if it differs, the new sealed set is opened (segments already
//!   open are kept; new ones mapped; deletion files read), and the appendable segment is
//!   rebuilt from the log after the new checkpoint — or, when the checkpoint did not move
//!   (a merge), kept, with the sealed part of the records it holds applied to the new
//!   segments.
//!
//! The new state is built aside and swapped in under the state's write lock, so a search
//! sees the old state or the new one, never a mix. A file the writer retired between the
//! manifest read and its open (a merged-away segment, a log file behind a new checkpoint)
//! shows up as an error while the generation has moved: the refresh starts over on the new
//! manifest. Errors with an unchanged generation are real and returned.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::collection::{wal_dir, Collection, Role};
use super::options::DbOptions;
use super::state::{indexed_fields, SealedData, SealedSegment, State};
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::filter::bitset::Bitset;
use crate::storage::deletes;
use crate::storage::manifest::{self, Manifest};
use crate::storage::published::{PageReader, Published, UNPUBLISHED};
use crate::storage::segment::reader::SegmentReader;
use crate::storage::wal::cursor::{LogReader, Opened, Step};
use crate::storage::wal::record::{decode, WalOp};
use crate::storage::wal::replay::list_files;
use crate::storage::wal::{file_name, RECORD_HEADER_BYTES};

/// How many times a refresh starts over because the writer moved on meanwhile.
pub(super) const RETRIES: u32 = 64;

/// A read-only handle's link to the writer.
#[derive(Debug)]
pub(crate) struct Follow {
    inner: Mutex<Follower>,
    page: OnceLock<PageReader>,
    /// The page's generation and visible LSN the state reflects.
    seen_generation: AtomicU64,
    seen_visible: AtomicU64,
}

#[derive(Debug, Default)]
struct Follower {
    /// The manifest the sealed segments come from (`None`: load everything afresh).
    manifest: Option<Manifest>,
    generation: u64,
    /// The last log record applied.
    applied: u64,
    /// Where the next record is read.
    log: Option<LogReader>,
    /// Deletion files as read (before later log records), by file name.
    pristine: HashMap<String, Arc<Bitset>>,
}

impl Follow {
    fn new() -> Follow {
        Follow {
            inner: Mutex::new(Follower::default()),
            page: OnceLock::new(),
            seen_generation: AtomicU64::new(u64::MAX),
            seen_visible: AtomicU64::new(0),
        }
    }

    pub(super) fn published(&self, dir: &Path) -> Published {
        if let Some(p) = self.page.get() {
            return p.read();
        }
        match PageReader::open(dir) {
            Some(p) => self.page.get_or_init(|| p).read(),
            None => UNPUBLISHED,
        }
    }

    /// The format version of the manifest in use (0 before one is read).
    pub(super) fn manifest_version(&self) -> u16 {
        self.inner
            .lock()
            .manifest
            .as_ref()
            .map_or(0, |m| m.format_version)
    }

    /// `(last LSN applied, checkpoint LSN of the manifest in use)`.
    pub(super) fn position(&self) -> (u64, u64) {
        let f = self.inner.lock();
        (
            f.applied,
            f.manifest.as_ref().map_or(0, |m| m.checkpoint_lsn),
        )
    }
}

/// Whether `e` may come from a file the writer retired (then a new manifest explains it).
fn is_missing_file(e: &Error) -> bool {
    match e {
        Error::Corruption { .. } => true,
        e => e.is_not_found(),
    }
}

impl Collection {
    /// Open the collection in `dir` read-only: the manifest's segments plus the log records
    /// the writer has published.
    pub(crate) fn open_reader(
        name: &str,
        dir: &Path,
        options: &DbOptions,
    ) -> Result<Arc<Collection>> {
        let manifest = Manifest::load(dir)?;
        let config = manifest.config.clone();
        let state = State::new(&config, Kernels::best(), Vec::new());
        let c = Collection::assemble(
            name,
            dir,
            config,
            options,
            Role::Reader(Follow::new()),
            state,
        );
        if let Role::Reader(f) = &c.role {
            c.follow(f, true)?;
        }
        Ok(c)
    }

    /// Catch up with the writer if its page changed since the last call (always when
    /// `force`).
    pub(super) fn follow(&self, f: &Follow, force: bool) -> Result<()> {
        let p = f.published(&self.dir);
        if !force
            && p.generation == f.seen_generation.load(Ordering::Acquire)
            && p.visible == f.seen_visible.load(Ordering::Acquire)
        {
            return Ok(());
        }
        let mut fl = f.inner.lock();
        let mut attempt = 0;
        loop {
            let p = f.published(&self.dir);
            match self.catch_up(f, &mut fl, p) {
                Ok(target) => {
                    f.seen_generation.store(p.generation, Ordering::Release);
                    // Short of the visible LSN (a log file not there yet): try again on the
                    // next call. Without a page (`u64::MAX`), the end of the log is the end.
                    let seen = if fl.applied >= target || target == u64::MAX {
                        target
                    } else {
                        fl.applied
                    };
                    f.seen_visible.store(seen, Ordering::Release);
                    return Ok(());
                }
                Err(e) => {
                    // Start the next attempt from a fresh manifest and log position.
                    fl.manifest = None;
                    fl.log = None;
                    attempt += 1;
                    let moved = f.published(&self.dir).generation != p.generation;
                    if !(moved && is_missing_file(&e)) || attempt >= RETRIES {
                        return Err(e);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200 << attempt.min(6)));
                }
            }
        }
    }

    /// Bring the state up to the page `p` (read before): returns the last LSN it aimed for.
    fn catch_up(&self, f: &Follow, fl: &mut Follower, p: Published) -> Result<u64> {
        let mut pending = None;
        let mut target = p.visible;
        if fl.manifest.is_none() || p.generation != fl.generation {
            let m = match Manifest::load(&self.dir) {
                Err(e) if e.is_not_found() && !crate::storage::fsutil::is_dir(&self.dir) => {
                    // The writer dropped the collection.
                    return Err(Error::CollectionNotFound {
                        name: self.name.clone(),
                    });
                }
                m => m?,
            };
            // The manifest just read may be newer than `p` (stored, its generation not yet
            // bumped); it depends on records up to an LSN the writer made visible before
            // storing it. Reading the page again now covers them, so the new segments are
            // never combined with a log prefix older than they are.
            target = target.max(f.published(&self.dir).visible);
            if fl.manifest.as_ref() != Some(&m) {
                pending = Some(self.reload(fl, m, target)?);
            }
        }
        self.advance(fl, target, pending)?;
        fl.generation = p.generation;
        Ok(target)
    }

    /// Open the sealed set of `m` and build the state it implies, up to `visible` (or, when
    /// the checkpoint did not move, up to the records already applied; `advance` does the
    /// rest under the same lock as the swap).
    fn reload(&self, fl: &mut Follower, m: Manifest, visible: u64) -> Result<Pending> {
        let same_checkpoint = fl
            .manifest
            .as_ref()
            .is_some_and(|o| o.checkpoint_lsn == m.checkpoint_lsn);
        let open: HashMap<u64, Arc<SealedData>> = self
            .state
            .read()
            .sealed
            .iter()
            .map(|s| (s.id, Arc::clone(&s.data)))
            .collect();
        let only = indexed_fields(&self.config);
        let mut pristine = HashMap::new();
        let mut sealed = Vec::with_capacity(m.segments.len());
        for meta in &m.segments {
            let data = if let Some(d) = open.get(&meta.id) {
                Arc::clone(d)
            } else {
                let path = self.dir.join(&meta.file);
                let reader = SegmentReader::open(&path, self.config.dim, self.config.metric)?;
                if reader.rows() as u64 != meta.rows {
                    return Err(Error::corruption(
                        self.dir.join(manifest::FILE_NAME),
                        16,
                        format!(
                            "manifest says {} rows for {}, the file has {}",
                            meta.rows,
                            meta.file,
                            reader.rows()
                        ),
                    ));
                }
                SealedSegment::new(meta.id, Arc::new(reader), Bitset::new(0), only.clone()).data
            };
            let rows = data.reader.rows();
            let deleted = match &meta.deletes {
                Some(d) => {
                    let bits = match fl.pristine.get(&d.file) {
                        Some(b) => Arc::clone(b),
                        None => {
                            Arc::new(deletes::read_file(&self.dir.join(&d.file), meta.id, rows)?)
                        }
                    };
                    pristine.insert(d.file.clone(), Arc::clone(&bits));
                    bits
                }
                None => Arc::new(Bitset::new(rows)),
            };
            sealed.push(SealedSegment {
                data,
                deleted,
                dirty: false,
            });
        }
        let mut next = State::new(&self.config, self.kernels, sealed);
        let checkpoint = m.checkpoint_lsn;
        let mut log = open_log_at(&wal_dir(&self.dir), checkpoint + 1)?;
        let (applied, keep) = if same_checkpoint {
            // The appendable segment stays; the new sealed segments learn what the records
            // it holds did to them.
            let until = fl.applied;
            let got = read_records(&self.dir, &mut log, checkpoint, until, |_, op| {
                next.apply_to_sealed(&op);
            })?;
            if got != until {
                return Err(Error::corruption(
                    wal_dir(&self.dir).join(file_name(got + 1)),
                    0,
                    format!(
                        "log record {} is missing (the follower had applied it)",
                        got + 1
                    ),
                ));
            }
            (until, true)
        } else {
            let got = read_records(&self.dir, &mut log, checkpoint, visible, |_, op| {
                next.apply(op);
            })?;
            (got, false)
        };
        fl.manifest = Some(m);
        fl.pristine = pristine;
        fl.log = log;
        fl.applied = applied;
        Ok(Pending {
            state: next,
            keep_appendable: keep,
        })
    }

    /// Read the records after the last applied one up to `visible` and apply them, with
    /// the state from a reload (if any) swapped in first, under one write lock.
    fn advance(&self, fl: &mut Follower, visible: u64, pending: Option<Pending>) -> Result<()> {
        let mut ops = Vec::new();
        let from = fl.applied;
        let got = read_records(&self.dir, &mut fl.log, from, visible, |_, op| ops.push(op))?;
        if pending.is_none() && ops.is_empty() {
            return Ok(());
        }
        if let Some(mut p) = pending {
            // A new sealed set and the records after it: one swap, so no search sees the
            // new segments without the records they were published with.
            let mut st = self.state.write();
            if p.keep_appendable {
                p.state.appendable = Arc::clone(&st.appendable);
            }
            *st = p.state;
            for op in ops {
                st.apply(op);
            }
        } else {
            // Record by record, each a consistent prefix; as in a writer, the graph linking
            // runs under the shared lock, so searches go on meanwhile.
            for op in ops {
                let mut st = self.state.write();
                let nodes = st.apply_unlinked(op);
                let st = parking_lot::RwLockWriteGuard::downgrade(st);
                st.link(nodes);
            }
        }
        fl.applied = got;
        Ok(())
    }
}

/// A state built by a reload, waiting for the swap.
struct Pending {
    state: State,
    /// Take over the current appendable segment (the checkpoint did not move).
    keep_appendable: bool,
}

/// A reader positioned at the start of the log file holding `lsn` (`None` when the log has
/// no file yet: the writer's first one appears later).
fn open_log_at(wdir: &Path, lsn: u64) -> Result<Option<LogReader>> {
    // The writer creates the next log file before it removes the ones a new checkpoint
    // covers, so a file that vanished between the listing and its open is retried on a new
    // listing (which then holds its successor).
    let mut attempts = 0;
    loop {
        let files = list_files(wdir)?;
        let Some((first, path)) = files.iter().rev().find(|(first, _)| *first <= lsn) else {
            return match files.first() {
                Some((first, path)) => Err(Error::corruption(
                    path,
                    16,
                    format!("WAL gap: LSN {lsn} is needed, the log starts at {first}"),
                )),
                None => Ok(None),
            };
        };
        return match LogReader::open(path) {
            Ok(Opened::Ok(r)) if r.first_lsn == *first => Ok(Some(r)),
            Ok(Opened::Ok(_)) => Err(Error::corruption(
                path,
                16,
                "WAL header LSN does not match the file name",
            )),
            // Being created right now: nothing in it yet.
            Ok(Opened::Short) => Ok(None),
            Err(e) if e.is_not_found() && attempts < 16 => {
                attempts += 1;
                continue;
            }
            Err(e) => Err(e),
        };
    }
}

/// Read records `(after, until]` in order through `apply`, skipping older ones, following
/// the writer into its next file at the end of one. Stops early at the end of what is
/// written (with `until == u64::MAX`, that is the normal end). Returns the last LSN read.
fn read_records(
    dir: &Path,
    log: &mut Option<LogReader>,
    after: u64,
    until: u64,
    mut apply: impl FnMut(u64, WalOp),
) -> Result<u64> {
    let mut last = after;
    while last < until {
        let Some(r) = log.as_mut() else {
            match open_next(dir, last + 1)? {
                Some(r) => *log = Some(r),
                None => break,
            }
            continue;
        };
        match r.next()? {
            Step::Record(rec) if rec.lsn <= last => {}
            Step::Record(rec) if rec.lsn == last + 1 => {
                let op = decode(rec.kind, r.body()).map_err(|e| {
                    Error::corruption(
                        r.path(),
                        rec.start + (RECORD_HEADER_BYTES + e.offset) as u64,
                        format!("bad record body: {}", e.reason),
                    )
                })?;
                apply(rec.lsn, op);
                last = rec.lsn;
            }
            Step::Record(rec) => {
                return Err(Error::corruption(
                    r.path(),
                    rec.start,
                    format!("LSN {} where {} was expected", rec.lsn, last + 1),
                ))
            }
            // The end of this file: the next record is in the file named after it, unless
            // that is this very file (it holds no record yet), where the log ends for now.
            Step::End if r.path() == wal_dir(dir).join(file_name(last + 1)) => break,
            Step::End => match open_next(dir, last + 1)? {
                Some(next) => *log = Some(next),
                None => break,
            },
            // Without a published LSN, the end of the complete records is the end.
            Step::Bad { .. } if until == u64::MAX => break,
            Step::Bad { pos, reason } => return Err(Error::corruption(r.path(), pos, reason)),
        }
    }
    Ok(last)
}

/// The log file that starts at `lsn`, if the writer has created it.
fn open_next(dir: &Path, lsn: u64) -> Result<Option<LogReader>> {
    let path = wal_dir(dir).join(file_name(lsn));
    match LogReader::open(&path) {
        Ok(Opened::Ok(r)) => Ok(Some(r)),
        Ok(Opened::Short) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}
