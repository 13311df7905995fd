//! The collection handle: its state, opening (recovery) and closing, the result types.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, MutexGuard, RwLock};

use super::build::SealBuild;
use super::follow::Follow;
use super::merge::MergeJob;
use super::options::{DbOptions, Durability};
use super::state::{indexed_fields, SealedSegment, State};
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::filter::bitset::Bitset;
use crate::filter::value::Payload;
use crate::index::hnsw::visited::VisitedPool;
use crate::index::registry::IndexSpec;
use crate::process::Owner;
use crate::storage::manifest::Manifest;
use crate::storage::published::PageWriter;
use crate::storage::segment::reader::SegmentReader;
use crate::storage::wal::replay::{replay, TornTail};
use crate::storage::wal::writer::{GroupSync, Visibility, WalWriter};
use crate::storage::{deletes, fsutil, manifest};
use crate::types::{CollectionConfig, Metric};

/// A stored point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The point's id (in a string-id collection, [`crate::str_id`] of its key).
    pub id: u64,
    /// The point's string id, in a collection keyed by strings ([`crate::IdType::Str`]).
    pub key: Option<String>,
    /// The vector as stored (unit-normalised for cosine collections).
    pub vector: Vec<f32>,
    /// The payload.
    pub payload: Payload,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The point's id (in a string-id collection, [`crate::str_id`] of its key).
    pub id: u64,
    /// The point's string id, in a collection keyed by strings ([`crate::IdType::Str`]).
    pub key: Option<String>,
    /// Distance to the query under the collection's metric (smaller is nearer).
    pub distance: f32,
    /// The payload, when asked for with [`crate::SearchParams::with_payload`].
    pub payload: Option<Payload>,
}

/// The one id points may not have: `u64::MAX` marks padding in batched results (Python's
/// `PAD_ID`).
pub const RESERVED_ID: u64 = u64::MAX;

#[derive(Debug)]
pub(super) struct WriteState {
    pub(super) wal: WalWriter,
    pub(super) next_lsn: u64,
    pub(super) manifest: Manifest,
    pub(super) poisoned: Option<String>,
    /// The background build of the frozen segment, if one is in flight.
    pub(super) sealing: Option<std::thread::JoinHandle<Result<SealBuild>>>,
    /// The background merge, if one is in flight.
    pub(super) merge: Option<MergeJob>,
    /// Background merges published since open.
    pub(super) merges_done: u64,
    /// The last background merge failure (the merge is dropped; the inputs stay).
    pub(super) merge_error: Option<String>,
    /// The damaged end of the log that recovery cut off at open, if it did.
    pub(super) torn_tail: Option<TornTail>,
    /// No new background merge before this instant (after a failure).
    pub(super) merge_retry_after: Option<std::time::Instant>,
    /// When the last write was appended (or the handle opened): the quiet periods of the
    /// compaction policy run from here.
    pub(super) last_write: std::time::Instant,
    /// The idle worker runs (see `idle.rs`).
    pub(super) idle_worker: bool,
    /// The copy of the appendable segment that its successor will grow on, taken a share at
    /// a time while batches are linked (see [`super::appendable::Growth`]).
    pub(super) growth: Option<Box<super::appendable::Growth>>,
}

/// A named set of points with a fixed dimension and metric. `Send + Sync`; share it
/// with `Arc` across threads.
#[derive(Debug)]
pub struct Collection {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) config: CollectionConfig,
    pub(super) options: DbOptions,
    pub(super) kernels: &'static Kernels,
    /// Writer (holds the log) or read-only follower of another process's writes.
    pub(super) role: Role,
    pub(super) state: RwLock<State>,
    pub(super) closed: AtomicBool,
    pub(super) visited: VisitedPool,
    /// The index kind's parameters (from `config`).
    pub(super) spec: IndexSpec,
    /// The process that opened the handle; every call from another (a child that inherited
    /// the handle through `fork()`) is refused before it takes a lock or touches a file.
    pub(super) owner: Owner,
    /// This handle, for the idle worker (which must not keep it alive).
    pub(super) me: Weak<Collection>,
    /// The text fields and their analyzer, when the collection has any.
    pub(super) text: Option<Arc<super::text::TextIndexing>>,
}

/// What a handle may do.
#[derive(Debug)]
pub(super) enum Role {
    /// The database's one writer: the log, group commit, background work.
    Writer {
        write: Mutex<WriteState>,
        sync: Arc<GroupSync>,
    },
    /// A read-only handle following what a writer (in any process) publishes.
    Reader(Follow),
}

pub(super) fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

impl Collection {
    /// Create the on-disk layout of a new collection in `dir` (which must not exist),
    /// atomically: built under a temp name, then renamed into place.
    pub(crate) fn create_files(dir: &Path, config: &CollectionConfig) -> Result<()> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("collection");
        let tmp = parent.join(format!(".tmp-{name}"));
        if fsutil::exists(&tmp) {
            fsutil::remove_dir_all(&tmp)?;
        }
        fsutil::create_dir_all(&wal_dir(&tmp))?;
        Manifest::new(config.clone()).store(&tmp)?;
        WalWriter::create(&wal_dir(&tmp), 1)?;
        fsutil::sync_dir(&tmp)?;
        fsutil::rename(&tmp, dir)?;
        fsutil::sync_dir(parent)
    }

    /// Open (recover) the collection stored in `dir`.
    pub(crate) fn open(name: &str, dir: &Path, options: &DbOptions) -> Result<Arc<Collection>> {
        let manifest = Manifest::load(dir)?;
        let config = manifest.config.clone();
        let mut sealed = Vec::with_capacity(manifest.segments.len());
        for m in &manifest.segments {
            let reader = SegmentReader::open(&dir.join(&m.file), config.dim, config.metric)?;
            if reader.rows() as u64 != m.rows {
                return Err(Error::corruption(
                    dir.join(manifest::FILE_NAME),
                    16,
                    format!(
                        "manifest says {} rows for {}, the file has {}",
                        m.rows,
                        m.file,
                        reader.rows()
                    ),
                ));
            }
            let deleted = match &m.deletes {
                Some(d) => deletes::read_file(&dir.join(&d.file), m.id, reader.rows())?,
                None => Bitset::new(reader.rows()),
            };
            sealed.push(SealedSegment::new(
                m.id,
                Arc::new(reader),
                deleted,
                indexed_fields(&config),
            ));
        }
        let mut state = State::new(&config, Kernels::best(), sealed);
        let wdir = wal_dir(dir);
        let outcome = replay(&wdir, manifest.checkpoint_lsn, |_, op| {
            state.apply(op);
            Ok(())
        })?;
        // Tell read-only handles (a new generation) before removing anything they may be
        // reading, so that they retry on what this open leaves.
        let page = PageWriter::open(dir, outcome.last_lsn)?;
        if let Some(p) = &outcome.unfinished {
            fsutil::remove_if_exists(p)?;
        }
        // Files left by a crash mid-seal, and logs wholly covered by the checkpoint.
        remove_orphans(dir, &manifest)?;
        let files = &outcome.files;
        for w in files.windows(2) {
            if w[1].0 <= manifest.checkpoint_lsn + 1 {
                fsutil::remove_if_exists(&w[0].1)?;
            }
        }
        let next_lsn = outcome.last_lsn + 1;
        let wal = match outcome.tail {
            Some(t) => WalWriter::reopen(&t.path, t.seed, t.first_lsn, t.valid_len)?,
            None => WalWriter::create(&wdir, next_lsn)?,
        };
        let visibility = Visibility {
            page,
            on_write: options.durability == Durability::Off,
        };
        let sync = Arc::new(GroupSync::new(&wal, outcome.last_lsn, visibility));
        let role = Role::Writer {
            write: Mutex::new(WriteState {
                wal,
                next_lsn,
                manifest,
                poisoned: None,
                sealing: None,
                merge: None,
                merges_done: 0,
                merge_error: None,
                merge_retry_after: None,
                torn_tail: outcome.truncated,
                last_write: std::time::Instant::now(),
                idle_worker: false,
                growth: None,
            }),
            sync: Arc::clone(&sync),
        };
        let c = Collection::assemble(name, dir, config, options, role, state);
        if let Durability::Batch(every) = options.durability {
            spawn_syncer(Arc::downgrade(&sync), every);
        }
        // Work left from the last session (an unsealed appendable segment, segments a quiet
        // merge would combine) converges without waiting for a write.
        let pending = {
            let st = c.state.read();
            st.appendable.own_rows() > 0 || st.sealed.len() > 1
        };
        if pending {
            if let Ok(mut ws) = c.writer("open") {
                c.start_idle_worker_locked(&mut ws);
            }
        }
        Ok(c)
    }

    /// A handle over `state` in `role` (shared by the writer's and a reader's open).
    pub(super) fn assemble(
        name: &str,
        dir: &Path,
        config: CollectionConfig,
        options: &DbOptions,
        role: Role,
        state: State,
    ) -> Arc<Collection> {
        let spec = config.index.spec();
        let text = state.text_indexing();
        Arc::new_cyclic(|me| Collection {
            text,
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            config,
            options: options.clone(),
            kernels: Kernels::best(),
            role,
            state: RwLock::new(state),
            closed: AtomicBool::new(false),
            visited: VisitedPool::default(),
            owner: Owner::current(),
            spec,
            me: me.clone(),
        })
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The collection's configuration.
    pub fn config(&self) -> &CollectionConfig {
        &self.config
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    /// Distance metric.
    pub fn metric(&self) -> Metric {
        self.config.metric
    }

    /// Number of live points. Infallible, so it cannot refuse a handle inherited across
    /// `fork()` as every other call does: there, use [`Collection::count`] with an empty
    /// `Filter::And`, which returns [`Error::InheritedAcrossFork`].
    pub fn len(&self) -> usize {
        self.state.read().len()
    }

    /// Whether the collection holds no live point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn check_open(&self) -> Result<()> {
        self.owner.check()?;
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The write state, for a writer; [`Error::ReadOnly`] naming `operation` for a
    /// read-only handle.
    pub(super) fn writer(&self, operation: &'static str) -> Result<MutexGuard<'_, WriteState>> {
        match &self.role {
            Role::Writer { write, .. } => Ok(write.lock()),
            Role::Reader(_) => Err(Error::ReadOnly { operation }),
        }
    }

    /// [`Error::ReadOnly`] naming `operation` for a read-only handle.
    pub(super) fn check_writable(&self, operation: &'static str) -> Result<()> {
        match &self.role {
            Role::Writer { .. } => Ok(()),
            Role::Reader(_) => Err(Error::ReadOnly { operation }),
        }
    }

    /// The group commit, for a writer.
    pub(super) fn group(&self) -> Result<&GroupSync> {
        match &self.role {
            Role::Writer { sync, .. } => Ok(sync),
            Role::Reader(_) => Err(Error::ReadOnly {
                operation: "a write",
            }),
        }
    }

    /// The damaged end of the log that recovery cut off when this handle opened the
    /// collection, if it did (also in [`Collection::stats`]).
    pub fn torn_tail(&self) -> Option<TornTail> {
        match &self.role {
            Role::Writer { write, .. } => write.lock().torn_tail.clone(),
            Role::Reader(_) => None,
        }
    }

    /// Whether this handle is read-only.
    pub fn is_read_only(&self) -> bool {
        matches!(self.role, Role::Reader(_))
    }

    /// Check the handle before a read; a read-only handle first catches up with what the
    /// writer has published since the last call (cheap when nothing changed: two atomic
    /// loads from a shared page).
    pub(super) fn check_read(&self) -> Result<()> {
        self.check_open()?;
        match &self.role {
            Role::Writer { .. } => Ok(()),
            Role::Reader(f) => self.follow(f, false),
        }
    }

    /// Catch up with the writer now. Reads do this by themselves; this is for a caller that
    /// wants to know the handle is current (after [`Collection::len`], say). On a writable
    /// handle it does nothing.
    pub fn refresh(&self) -> Result<()> {
        self.check_open()?;
        match &self.role {
            Role::Writer { .. } => Ok(()),
            Role::Reader(f) => self.follow(f, true),
        }
    }

    /// Sync the log and refuse further calls. In a process that inherited the handle through
    /// `fork()` this only forgets it: the log and files belong to the opener.
    pub(crate) fn close(&self) -> Result<()> {
        if !self.owner.is_current() || self.is_read_only() {
            self.closed.store(true, Ordering::Release);
            return Ok(());
        }
        let mut ws = self.writer("close")?;
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Finish a background seal (its records are in the log either way) and a background
        // merge.
        let published = if ws.poisoned.is_none() {
            self.publish_locked(&mut ws)
        } else {
            Ok(())
        };
        // Poisoned or not, no merge thread outlives the handle: a merge still building is
        // stopped (its inputs stay; a later open may merge them again), a finished one is
        // published (a poisoned collection discards it).
        if let Some(j) = &ws.merge {
            j.stop.store(true, Ordering::Release);
        }
        let published = published.and(self.publish_merge_locked(&mut ws, true));
        ws.wal.sync()?;
        published
    }

    /// The collection's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// Remove segment, deletion and temp files that the manifest does not reference.
pub(super) fn remove_orphans(dir: &Path, m: &Manifest) -> Result<()> {
    let mut live: Vec<&str> = vec![manifest::FILE_NAME];
    for s in &m.segments {
        live.push(&s.file);
        if let Some(d) = &s.deletes {
            live.push(&d.file);
        }
    }
    for (name, path) in fsutil::list(dir)? {
        let ext = Path::new(&name).extension().and_then(|e| e.to_str());
        let ours = matches!(ext, Some("seg" | "del" | "tmp"));
        if ours && !live.contains(&name.as_str()) {
            fsutil::remove_if_exists(&path)?;
        }
    }
    Ok(())
}

pub(super) fn spawn_syncer(sync: Weak<GroupSync>, every: std::time::Duration) {
    std::thread::Builder::new()
        .name("trovedb-wal-sync".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match sync.upgrade() {
                Some(s) => s.sync_pending(),
                None => return,
            }
        })
        .map(drop)
        .unwrap_or_default();
}
