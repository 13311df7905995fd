//! The collection handle: validated writes through the WAL, reads over a consistent
//! view, sealing, recovery.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use super::appendable::AppendableSegment;
use super::options::{CompactionPolicy, DbOptions, Durability};
use super::state::{
    hnsw_params, indexed_fields, sealed_payload, search_sealed, Frozen, Knobs, SealedSegment, State,
};
use crate::distance::{normalize, Kernels};
use crate::error::{Error, Result};
use crate::filter::bitset::Bitset;
use crate::filter::cache::KeyedFilter;
use crate::filter::expr::Filter;
use crate::filter::payload_index::PayloadIndex;
use crate::filter::value::{validate_payload, Payload};
use crate::index::hnsw::build::{GraphBuilder, VectorSet};
use crate::index::hnsw::visited::VisitedPool;
use crate::index::registry::{BuiltIndex, IndexSpec};
use crate::index::topk::TopK;
use crate::index::{BuildInput, GivenKnobs};
use crate::process::Owner;
use crate::storage::manifest::{DeleteMeta, Manifest, SegmentMeta};
use crate::storage::segment::reader::SegmentReader;
use crate::storage::segment::writer::{write_segment, SegmentData};
use crate::storage::wal::record::{encode_delete, encode_upsert, KIND_DELETE, KIND_UPSERT};
use crate::storage::wal::replay::{list_files, replay};
use crate::storage::wal::writer::{GroupSync, WalWriter};
use crate::storage::wal::MAX_RECORD_BYTES;
use crate::storage::{deletes, fsutil, manifest, segment};
use crate::types::{CollectionConfig, IndexConfig, Metric, SearchParams};

/// A stored point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The point's id.
    pub id: u64,
    /// The vector as stored (unit-normalised for cosine collections).
    pub vector: Vec<f32>,
    /// The payload.
    pub payload: Payload,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The point's id.
    pub id: u64,
    /// Distance to the query under the collection's metric (smaller is nearer).
    pub distance: f32,
    /// The payload, when asked for with [`SearchParams::include_payload`].
    pub payload: Option<Payload>,
}

/// Per-segment statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentStats {
    /// Segment id.
    pub id: u64,
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
}

/// The one id points may not have: `u64::MAX` marks padding in batched results (Python's
/// `PAD_ID`).
pub const RESERVED_ID: u64 = u64::MAX;

#[derive(Debug)]
struct WriteState {
    wal: WalWriter,
    next_lsn: u64,
    manifest: Manifest,
    poisoned: Option<String>,
    /// The background build of the frozen segment, if one is in flight.
    sealing: Option<std::thread::JoinHandle<Result<SealBuild>>>,
    /// The background merge, if one is in flight.
    merge: Option<MergeJob>,
    /// Background merges published since open.
    merges_done: u64,
    /// The last background merge failure (the merge is dropped; the inputs stay).
    merge_error: Option<String>,
    /// No new background merge before this instant (after a failure).
    merge_retry_after: Option<std::time::Instant>,
}

/// An input of a merge: segment id, reader, and its deletions when the merge started (shared
/// with the state's copy-on-write bitset, so later deletions do not show in it).
type MergeInput = (u64, Arc<SegmentReader>, Arc<Bitset>);

/// A background merge of sealed segments.
struct MergeJob {
    handle: std::thread::JoinHandle<Result<Option<SealBuild>>>,
    /// The input segments with their deletions when the merge started: the merged rows are
    /// their live rows, in this order.
    inputs: Vec<(u64, Arc<Bitset>)>,
    /// Set by `close()`: the build gives up early and writes nothing.
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for MergeJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u64> = self.inputs.iter().map(|i| i.0).collect();
        f.debug_struct("MergeJob")
            .field("inputs", &ids)
            .finish_non_exhaustive()
    }
}

/// How long background merging pauses after a failed merge.
const MERGE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(30);

/// A segment built in the background from a frozen appendable segment, not yet published.
struct SealBuild {
    id: u64,
    reader: SegmentReader,
    index: PayloadIndex,
}

/// A named set of points with a fixed dimension and metric. `Send + Sync`; share it
/// with `Arc` across threads.
#[derive(Debug)]
pub struct Collection {
    name: String,
    dir: PathBuf,
    config: CollectionConfig,
    options: DbOptions,
    kernels: &'static Kernels,
    write: Mutex<WriteState>,
    state: RwLock<State>,
    sync: Arc<GroupSync>,
    closed: AtomicBool,
    visited: VisitedPool,
    /// The index kind's parameters (from `config`).
    spec: IndexSpec,
    /// The process that opened the handle; every call from another (a child that inherited
    /// the handle through `fork()`) is refused before it takes a lock or touches a file.
    owner: Owner,
}

fn wal_dir(dir: &Path) -> PathBuf {
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
        let sync = Arc::new(GroupSync::new(&wal, outcome.last_lsn));
        let spec = config.index.spec();
        let c = Arc::new(Collection {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            config,
            options: options.clone(),
            kernels: Kernels::best(),
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
            }),
            state: RwLock::new(state),
            sync,
            closed: AtomicBool::new(false),
            visited: VisitedPool::default(),
            owner: Owner::current(),
            spec,
        });
        if let Durability::Batch(every) = options.durability {
            spawn_syncer(Arc::downgrade(&c.sync), every);
        }
        Ok(c)
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

    fn check_open(&self) -> Result<()> {
        self.owner.check()?;
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Validate one vector; returns it normalised for cosine collections.
    fn prepare_vector<'a>(
        &self,
        id: u64,
        v: &'a [f32],
        buf: &'a mut Vec<f32>,
    ) -> Result<&'a [f32]> {
        if v.len() != self.config.dim {
            return Err(Error::DimensionMismatch {
                expected: self.config.dim,
                got: v.len(),
            });
        }
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFiniteValue { id, index });
        }
        if self.config.metric != Metric::Cosine {
            return Ok(v);
        }
        buf.clear();
        buf.extend_from_slice(v);
        if !normalize(buf) {
            return Err(Error::invalid(
                "vectors",
                format!("vector for id {id} has zero length; cosine distance is undefined"),
            ));
        }
        Ok(buf)
    }

    /// Insert or replace points. `vectors` holds `ids.len() * dim` floats, row-major;
    /// `payloads` is empty (no payloads) or has one entry per id. Within a batch a repeated
    /// id keeps its last occurrence. The batch is validated as a whole first: on any error
    /// nothing is written. On return the points are searchable and, under
    /// [`Durability::Always`], durable.
    pub fn upsert(&self, ids: &[u64], vectors: &[f32], payloads: &[Payload]) -> Result<()> {
        self.check_open()?;
        let n = ids.len();
        let dim = self.config.dim;
        if n == 0 {
            return if vectors.is_empty() && payloads.is_empty() {
                Ok(())
            } else {
                Err(Error::invalid("ids", "no ids given for a non-empty batch"))
            };
        }
        if vectors.len() != n * dim {
            return Err(if vectors.len().is_multiple_of(n) {
                Error::DimensionMismatch {
                    expected: dim,
                    got: vectors.len() / n,
                }
            } else {
                Error::invalid(
                    "vectors",
                    format!(
                        "{} floats cannot be {n} vectors of dim {dim}",
                        vectors.len()
                    ),
                )
            });
        }
        if ids.contains(&RESERVED_ID) {
            return Err(Error::invalid(
                "ids",
                format!("id {RESERVED_ID} (2^64 - 1) is reserved: it marks padding in results"),
            ));
        }
        if !payloads.is_empty() && payloads.len() != n {
            return Err(Error::invalid(
                "payloads",
                format!("{} payloads for {n} ids", payloads.len()),
            ));
        }
        payloads.iter().try_for_each(validate_payload)?;
        let mut body = Vec::with_capacity(8 + n * (12 + 4 * dim));
        let stored: std::borrow::Cow<'_, [f32]> = if self.config.metric == Metric::Cosine {
            let mut out = Vec::with_capacity(vectors.len());
            let mut buf = Vec::with_capacity(dim);
            for (i, v) in vectors.chunks_exact(dim).enumerate() {
                out.extend_from_slice(self.prepare_vector(ids[i], v, &mut buf)?);
            }
            out.into()
        } else {
            let mut buf = Vec::new();
            for (i, v) in vectors.chunks_exact(dim).enumerate() {
                self.prepare_vector(ids[i], v, &mut buf)?;
            }
            vectors.into()
        };
        encode_upsert(&mut body, dim, ids, &stored, payloads);
        if body.len() > MAX_RECORD_BYTES {
            return Err(Error::invalid(
                "batch",
                format!(
                    "batch encodes to {} bytes; split it below {MAX_RECORD_BYTES}",
                    body.len()
                ),
            ));
        }
        self.log_and_apply(KIND_UPSERT, &body, |st| {
            let pays = (0..n).map(|i| payloads.get(i).cloned().unwrap_or_default());
            st.upsert_rows(ids, &stored, pays)
        })
    }

    /// Insert or replace a list of points.
    pub fn upsert_points(&self, points: &[Point]) -> Result<()> {
        let ids: Vec<u64> = points.iter().map(|p| p.id).collect();
        let mut vectors = Vec::with_capacity(points.len() * self.config.dim);
        for p in points {
            if p.vector.len() != self.config.dim {
                return Err(Error::DimensionMismatch {
                    expected: self.config.dim,
                    got: p.vector.len(),
                });
            }
            vectors.extend_from_slice(&p.vector);
        }
        let payloads: Vec<Payload> = points.iter().map(|p| p.payload.clone()).collect();
        self.upsert(&ids, &vectors, &payloads)
    }

    /// Delete points by id. Returns how many existed. Unknown ids are ignored.
    pub fn delete(&self, ids: &[u64]) -> Result<usize> {
        self.check_open()?;
        let mut ws = self.write.lock();
        let present: Vec<u64> = {
            let st = self.state.read();
            let mut seen = std::collections::HashSet::new();
            ids.iter()
                .copied()
                .filter(|id| seen.insert(*id) && st.locate(*id).is_some())
                .collect()
        };
        if present.is_empty() {
            return Ok(0);
        }
        let mut body = Vec::with_capacity(4 + 8 * present.len());
        encode_delete(&mut body, &present);
        let lsn = self.append_locked(&mut ws, KIND_DELETE, &body)?;
        {
            let mut st = self.state.write();
            for id in &present {
                st.remove(*id);
            }
        }
        self.housekeeping_locked(&mut ws)?;
        drop(ws);
        self.wait_durable(lsn)?;
        Ok(present.len())
    }

    fn append_locked(&self, ws: &mut WriteState, kind: u8, body: &[u8]) -> Result<u64> {
        self.check_open()?;
        if let Some(first) = ws.poisoned.clone().or_else(|| self.sync.failure()) {
            return Err(Error::Poisoned { first });
        }
        let lsn = ws.next_lsn;
        if let Err(e) = ws.wal.append(lsn, kind, body) {
            ws.poisoned = Some(e.to_string());
            return Err(e);
        }
        ws.next_lsn += 1;
        self.sync.note_written(lsn);
        Ok(lsn)
    }

    /// Log a record, apply it (under the state's write lock), then link the appended rows
    /// into the appendable graph under a shared lock, so searches run during the linking.
    fn log_and_apply(
        &self,
        kind: u8,
        body: &[u8],
        apply: impl FnOnce(&mut State) -> std::ops::Range<usize>,
    ) -> Result<()> {
        let mut ws = self.write.lock();
        let lsn = self.append_locked(&mut ws, kind, body)?;
        let full = {
            let mut st = self.state.write();
            let nodes = apply(&mut st);
            // Writers are held by `ws`, so nothing changes the state while it is shared.
            let st = parking_lot::RwLockWriteGuard::downgrade(st);
            st.link(nodes);
            st.appendable.live_count() >= self.options.seal_threshold_rows
        };
        if full {
            self.freeze_locked(&mut ws)?;
        }
        self.housekeeping_locked(&mut ws)?;
        drop(ws);
        self.wait_durable(lsn)
    }

    /// Publish background work that has finished and start a merge if the policy calls for
    /// one. Never waits.
    fn housekeeping_locked(&self, ws: &mut WriteState) -> Result<()> {
        if ws.poisoned.is_some() {
            return Ok(());
        }
        if ws
            .sealing
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            self.publish_locked(ws)?;
        }
        self.publish_merge_locked(ws, false)?;
        self.maybe_start_merge_locked(ws)
    }

    /// Start a background merge of the segments the compaction policy picks, if any and if
    /// none is running.
    fn maybe_start_merge_locked(&self, ws: &mut WriteState) -> Result<()> {
        let mut policy = self.options.compaction;
        if !policy.background || ws.merge.is_some() || ws.poisoned.is_some() {
            return Ok(());
        }
        if policy.max_merged_rows == 0 {
            policy.max_merged_rows = self.options.seal_threshold_rows.saturating_mul(2);
        }
        if ws
            .merge_retry_after
            .is_some_and(|t| std::time::Instant::now() < t)
        {
            return Ok(());
        }
        let inputs: Vec<MergeInput> = {
            let st = self.state.read();
            let sizes: Vec<(u64, usize, usize)> = st
                .sealed
                .iter()
                .map(|s| (s.id, s.reader.rows(), s.deleted.count_ones()))
                .collect();
            let Some(pick) = pick_merge(&policy, &sizes) else {
                return Ok(());
            };
            let mut inputs: Vec<MergeInput> = st
                .sealed
                .iter()
                .filter(|s| pick.contains(&s.id))
                .map(|s| (s.id, Arc::clone(&s.reader), Arc::clone(&s.deleted)))
                .collect();
            order_for_reuse(&mut inputs);
            inputs
        };
        let id = ws.manifest.next_segment_id;
        ws.manifest.next_segment_id += 1;
        let job_inputs = inputs.iter().map(|(i, _, d)| (*i, Arc::clone(d))).collect();
        let (dir, config, kernels) = (self.dir.clone(), self.config.clone(), self.kernels);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_build = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("trovedb-merge".into())
            .spawn(move || {
                #[cfg(feature = "testing")]
                crate::testing::merge_gate(&dir);
                build_merged(&dir, &config, kernels, &inputs, id, true, &stop_build)
            })
            .map_err(|e| Error::io(&self.dir, e))?;
        ws.merge = Some(MergeJob {
            handle,
            inputs: job_inputs,
            stop,
        });
        Ok(())
    }

    /// Publish the background merge if it has finished (or, with `wait`, once it has): a
    /// manifest with the merged segment in place of its inputs, the rows deleted while it
    /// ran marked in it (and written to its deletion file), then the in-memory switch. The
    /// inputs' files are removed when the last search using them ends. A failed build is
    /// recorded and dropped (the inputs stay; merging pauses for a while); a failed
    /// manifest write poisons the collection like any other.
    fn publish_merge_locked(&self, ws: &mut WriteState, wait: bool) -> Result<()> {
        let Some(job) = ws.merge.take_if(|j| wait || j.handle.is_finished()) else {
            return Ok(());
        };
        let built = job
            .handle
            .join()
            .unwrap_or_else(|_| Err(Error::invalid("merge", "the background merge panicked")));
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                ws.merge_error = Some(e.to_string());
                ws.merge_retry_after = Some(std::time::Instant::now() + MERGE_RETRY_PAUSE);
                return Ok(());
            }
        };
        if ws.poisoned.is_some() {
            // Nothing more may be published; the merged file is an orphan for the next open.
            if let Some(b) = built {
                b.reader.remove_when_unused();
            }
            return Ok(());
        }
        let r = self.publish_merge(ws, &job.inputs, built);
        if r.is_ok() {
            ws.merges_done += 1;
        }
        r
    }

    /// Publish a merged segment in place of `inputs` (see [`Self::publish_merge_locked`]);
    /// any error poisons the collection.
    fn publish_merge(
        &self,
        ws: &mut WriteState,
        inputs: &[(u64, Arc<Bitset>)],
        built: Option<SealBuild>,
    ) -> Result<()> {
        let r = self.publish_merge_inner(ws, inputs, built);
        if let Err(e) = &r {
            ws.poisoned = Some(e.to_string());
        }
        r
    }

    fn publish_merge_inner(
        &self,
        ws: &mut WriteState,
        inputs: &[(u64, Arc<Bitset>)],
        built: Option<SealBuild>,
    ) -> Result<()> {
        self.publish(
            ws,
            Edit {
                source: Source::Merge(inputs),
                built,
            },
        )
    }

    /// Wait until no background seal or merge is running, publishing each result and
    /// starting any merge the compaction policy calls for, until there is none left to do.
    pub fn wait_idle(&self) -> Result<()> {
        self.check_open()?;
        let mut ws = self.write.lock();
        loop {
            if let Some(first) = ws.poisoned.clone() {
                return Err(Error::Poisoned { first });
            }
            self.publish_locked(&mut ws)?;
            self.publish_merge_locked(&mut ws, true)?;
            self.maybe_start_merge_locked(&mut ws)?;
            if ws.merge.is_none() && ws.sealing.is_none() {
                return Ok(());
            }
        }
    }

    fn wait_durable(&self, lsn: u64) -> Result<()> {
        match self.options.durability {
            Durability::Always => self.sync.wait_durable(lsn),
            Durability::Batch(_) | Durability::Off => Ok(()),
        }
    }

    /// The point with this id, if it exists.
    pub fn get(&self, id: u64) -> Result<Option<Point>> {
        self.check_open()?;
        Ok(self.state.read().get(id)?.map(|(vector, payload)| Point {
            id,
            vector,
            payload,
        }))
    }

    fn prepare_query<'a>(
        &self,
        q: &'a [f32],
        buf: &'a mut Vec<f32>,
        k: usize,
    ) -> Result<&'a [f32]> {
        if k == 0 {
            return Err(Error::invalid("k", "k must be at least 1"));
        }
        self.prepare_vector(0, q, buf)
    }

    /// The knobs of a query: its own parameters or the collection's defaults. A knob the
    /// collection's index kind does not read, or 0, is an error.
    fn resolve_knobs(&self, params: &SearchParams, k: usize) -> Result<Knobs> {
        let spec = &self.spec;
        let applies = spec.knob_names();
        let check = |name: &'static str, v: Option<usize>| -> Result<Option<usize>> {
            match v {
                Some(0) => Err(Error::invalid(name, format!("{name} must be at least 1"))),
                Some(_) if !applies.contains(&name) => Err(Error::invalid(
                    name,
                    format!(
                        "`{name}` does not apply to this collection's index ({})",
                        spec.name()
                    ),
                )),
                v => Ok(v),
            }
        };
        let given = GivenKnobs {
            ef: check("ef", params.ef)?,
            nprobe: check("nprobe", params.nprobe)?,
            refine: check("refine", params.refine)?,
            probes: check("probes", params.probes)?,
        };
        let mut knobs = Knobs {
            k,
            ef: given.ef.unwrap_or(k).max(k),
            nprobe: given.nprobe.unwrap_or(1),
            refine: given.refine.unwrap_or(1),
            probes: given.probes.unwrap_or(1),
        };
        spec.knobs(&given, &mut knobs);
        Ok(knobs)
    }

    fn to_hits(st: &State, found: Vec<(u64, f32)>, params: &SearchParams) -> Result<Vec<Hit>> {
        found
            .into_iter()
            .map(|(id, distance)| {
                let payload = if params.include_payload {
                    Some(st.payload_of(id)?)
                } else {
                    None
                };
                Ok(Hit {
                    id,
                    distance,
                    payload,
                })
            })
            .collect()
    }

    /// The `k` nearest points to `query`, nearest first. Fewer than `k` are returned when
    /// the collection holds fewer live points. Exact for `flat`; for `hnsw`, approximate
    /// with beam width `params.ef` (default: the collection's `ef_search`).
    pub fn search(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        self.check_open()?;
        let mut buf = Vec::new();
        let q = self.prepare_query(query, &mut buf, k)?;
        let knobs = self.resolve_knobs(params, k)?;
        let mut hits = self.search_snapshot(q, 1, &knobs, params)?;
        Ok(hits.pop().unwrap_or_default())
    }

    /// Search `nq` prepared queries (`nq * dim` floats; in parallel when more than one).
    /// The in-memory segments are searched under the state lock, and a snapshot of the
    /// sealed segments (their readers and deletion bitsets, shared) is taken under the same
    /// lock; the sealed segments are then searched on that snapshot with the lock released,
    /// so a long search holds off no writer, and a segment replaced meanwhile stays mapped
    /// (its file is removed when the last snapshot holding it is dropped).
    fn search_snapshot(
        &self,
        queries: &[f32],
        nq: usize,
        knobs: &Knobs,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.config.dim;
        let filter = params.filter.as_ref().map(KeyedFilter::new);
        let filter = filter.as_ref();
        let search_unsealed = |st: &State, q: &[f32]| {
            let mut top = TopK::new(knobs.k);
            st.search_unsealed(q, knobs, &self.visited, filter, &mut top);
            top.into_sorted()
        };
        let (sealed, ctx, partial, payloads) = {
            let st = self.state.read();
            let partial: Vec<Vec<(u64, f32)>> = if nq == 1 {
                vec![search_unsealed(&st, queries)]
            } else {
                queries
                    .par_chunks(dim)
                    .map(|q| search_unsealed(&st, q))
                    .collect()
            };
            // Payloads of in-memory hits are read now; sealed ones from the snapshot.
            let mut payloads = std::collections::HashMap::new();
            if params.include_payload {
                for (id, _) in partial.iter().flatten() {
                    payloads.insert(*id, st.payload_of(*id)?);
                }
            }
            (st.sealed_snapshot(), st.ctx(), partial, payloads)
        };
        let finish = |q: &[f32], part: &Vec<(u64, f32)>| -> Result<Vec<(u64, f32)>> {
            let mut top = TopK::new(knobs.k);
            for (id, d) in part {
                top.push(*d, *id);
            }
            search_sealed(ctx, &sealed, q, knobs, &self.visited, filter, &mut top)?;
            Ok(top.into_sorted())
        };
        let found: Vec<Vec<(u64, f32)>> = if nq == 1 {
            vec![finish(queries, &partial[0])?]
        } else {
            queries
                .par_chunks(dim)
                .zip(partial.par_iter())
                .map(|(q, part)| finish(q, part))
                .collect::<Result<_>>()?
        };
        found
            .into_iter()
            .map(|f| {
                f.into_iter()
                    .map(|(id, distance)| {
                        let payload = if params.include_payload {
                            // Two queries of a batch can hit the same in-memory row: the
                            // payload is cloned, not taken.
                            Some(match payloads.get(&id) {
                                Some(p) => p.clone(),
                                None => sealed_payload(&sealed, id)?.unwrap_or_default(),
                            })
                        } else {
                            None
                        };
                        Ok(Hit {
                            id,
                            distance,
                            payload,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Search many queries (row-major, `nq * dim` floats) in parallel over rayon. Same
    /// results as calling [`Collection::search`] per query. Flat collections scan blocks of
    /// queries per pass over the vectors.
    pub fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>> {
        self.check_open()?;
        if k == 0 {
            return Err(Error::invalid("k", "k must be at least 1"));
        }
        let knobs = self.resolve_knobs(params, k)?;
        let dim = self.config.dim;
        if !queries.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "queries",
                format!(
                    "{} floats are not a whole number of dim-{dim} queries",
                    queries.len()
                ),
            ));
        }
        let nq = queries.len() / dim;
        let mut prepared = Vec::with_capacity(queries.len());
        let mut buf = Vec::new();
        for q in queries.chunks_exact(dim) {
            prepared.extend_from_slice(self.prepare_query(q, &mut buf, k)?);
        }
        if self.config.index != IndexConfig::Flat || params.filter.is_some() {
            return crate::background::search(|| {
                self.search_snapshot(&prepared, nq, &knobs, params)
            });
        }
        // Exact unfiltered search of a flat collection: blocks of queries per pass over the
        // vectors, under the state lock.
        let st = self.state.read();
        let found: Vec<Vec<(u64, f32)>> = crate::background::search(|| {
            let block = crate::index::flat::QUERY_BLOCK;
            // Enough blocks to keep every thread busy, never more than `block` per block.
            let per = nq
                .div_ceil(rayon::current_num_threads().max(1))
                .clamp(1, block);
            prepared
                .par_chunks(per * dim)
                .flat_map_iter(|chunk| {
                    let qs: Vec<&[f32]> = chunk.chunks_exact(dim).collect();
                    st.search_flat_block(&qs, k)
                })
                .collect()
        });
        found
            .into_iter()
            .map(|f| Self::to_hits(&st, f, params))
            .collect()
    }

    /// Number of live points whose payload matches `filter` (an empty `Filter::And` matches
    /// every point).
    pub fn count(&self, filter: &Filter) -> Result<usize> {
        self.check_open()?;
        let st = self.state.read();
        match filter {
            Filter::And(all) if all.is_empty() => Ok(st.len()),
            _ => st.count(filter),
        }
    }

    /// Up to `limit` live points whose payload matches `filter` (a metadata-only query),
    /// in storage order.
    pub fn get_where(&self, filter: &Filter, limit: usize) -> Result<Vec<Point>> {
        self.check_open()?;
        let st = self.state.read();
        st.matching(filter, limit)?
            .into_iter()
            .map(|loc| {
                let (id, vector, payload) = st.point_at(loc)?;
                Ok(Point {
                    id,
                    vector,
                    payload,
                })
            })
            .collect()
    }

    /// Delete every live point whose payload matches `filter`; returns how many.
    pub fn delete_where(&self, filter: &Filter) -> Result<usize> {
        self.check_open()?;
        // Ids are collected first; a concurrent upsert of a matching id after this point
        // is not deleted (it was not visible when the call started).
        let ids: Vec<u64> = {
            let st = self.state.read();
            let locs = st.matching(filter, usize::MAX)?;
            locs.into_iter().map(|l| st.id_at(l)).collect()
        };
        self.delete(&ids)
    }

    /// Seal the appendable segment now (even if below the threshold) and checkpoint.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        let mut ws = self.write.lock();
        if let Some(first) = ws.poisoned.clone() {
            return Err(Error::Poisoned { first });
        }
        self.seal_locked(&mut ws)
    }

    /// Merge every segment into one, dropping deleted rows and rebuilding the index, then
    /// publish it atomically (a new manifest). Writers wait for it (a background merge in
    /// progress is finished first); searches keep running on the old segments until the
    /// switch, and the old files are removed when the last of those searches ends. A crash
    /// at any point leaves either the old or the new set of segments (plus the log).
    /// Returns the rows dropped.
    pub fn compact(&self) -> Result<usize> {
        self.check_open()?;
        let mut ws = self.write.lock();
        if let Some(first) = ws.poisoned.clone() {
            return Err(Error::Poisoned { first });
        }
        self.seal_locked(&mut ws)?;
        self.publish_merge_locked(&mut ws, true)?;
        if let Some(first) = ws.poisoned.clone() {
            return Err(Error::Poisoned { first });
        }
        // Writers are held by `ws`, so the segments and their deletions cannot change now.
        let mut old: Vec<MergeInput> = {
            let st = self.state.read();
            st.sealed
                .iter()
                .map(|s| (s.id, Arc::clone(&s.reader), Arc::clone(&s.deleted)))
                .collect()
        };
        order_for_reuse(&mut old);
        let dropped: usize = old.iter().map(|(_, _, d)| d.count_ones()).sum();
        if old.len() <= 1 && dropped == 0 {
            return Ok(0);
        }
        let id = ws.manifest.next_segment_id;
        ws.manifest.next_segment_id += 1;
        let never = AtomicBool::new(false);
        let built = build_merged(
            &self.dir,
            &self.config,
            self.kernels,
            &old,
            id,
            false,
            &never,
        )?;
        // Writers were held throughout, so no input row was deleted meanwhile.
        let inputs: Vec<(u64, Arc<Bitset>)> = old.into_iter().map(|(i, _, d)| (i, d)).collect();
        self.publish_merge(&mut ws, &inputs, built)?;
        Ok(dropped)
    }

    /// Freeze the full appendable segment and build its sealed segment on a background
    /// thread; writers continue into a fresh appendable segment and searches see both. At
    /// most one frozen segment exists: a second freeze first waits for (and publishes) the
    /// previous build — the back-pressure.
    fn freeze_locked(&self, ws: &mut WriteState) -> Result<()> {
        self.publish_locked(ws)?;
        let last = ws.next_lsn - 1;
        let seg = {
            let mut st = self.state.write();
            let seg = Arc::clone(&st.appendable);
            st.frozen = Some(Frozen {
                dead: seg.deleted.clone(),
                seg: Arc::clone(&seg),
                lsn: last,
            });
            st.reset_appendable();
            seg
        };
        // Start a new log file, so that the files holding the frozen segment's records can be
        // dropped once it is published (its records end at `last`).
        let r = (|| -> Result<()> {
            ws.wal.sync()?;
            ws.wal = WalWriter::create(&wal_dir(&self.dir), last + 1)?;
            self.sync.rotated(&ws.wal);
            Ok(())
        })();
        if let Err(e) = r {
            ws.poisoned = Some(e.to_string());
            return Err(e);
        }
        let id = ws.manifest.next_segment_id;
        ws.manifest.next_segment_id += 1;
        let (dir, config, kernels) = (self.dir.clone(), self.config.clone(), self.kernels);
        let handle = std::thread::Builder::new()
            .name("trovedb-seal".into())
            .spawn(move || build_sealed(&dir, &config, kernels, &seg, id))
            .map_err(|e| Error::io(&self.dir, e))?;
        ws.sealing = Some(handle);
        Ok(())
    }

    /// Publish the background-built segment (waiting for the build if it is still running):
    /// manifest with the new segment and every pending deletion file, checkpoint at the
    /// frozen segment's last record, then the in-memory switch and log clean-up.
    fn publish_locked(&self, ws: &mut WriteState) -> Result<()> {
        let Some(handle) = ws.sealing.take() else {
            return Ok(());
        };
        let built = handle
            .join()
            .unwrap_or_else(|_| Err(Error::invalid("seal", "the background seal panicked")));
        let r = built.and_then(|b| self.publish_build(ws, b));
        if let Err(e) = &r {
            ws.poisoned = Some(e.to_string());
        }
        r
    }

    /// The write-ahead rule for publications: a deletion file or manifest reflects the
    /// in-memory state, which includes every record appended to the log so far — durable or
    /// not yet (a writer applies its record before it waits for the group sync). So the log
    /// is synced first; otherwise a power cut could keep a deletion (say, of the old row of
    /// an id rewritten by a record still in the page cache) while losing the record that
    /// re-inserted it. Found by the power-cut test (tests/tests/power_cut.rs).
    fn log_before_publish(ws: &WriteState) -> Result<()> {
        ws.wal.sync()
    }

    fn publish_build(&self, ws: &mut WriteState, b: SealBuild) -> Result<()> {
        self.publish(
            ws,
            Edit {
                source: Source::Frozen,
                built: Some(b),
            },
        )
    }

    /// Apply one change of the segment set — the only function that does: sync the log
    /// (the write-ahead rule), write the new segment's and the changed segments' deletion
    /// files, the manifest (the commit point), swap the in-memory state to match, move the
    /// checkpoint (rotating and trimming the log), and remove the files nothing references
    /// any more. The segment file itself was written by the build. Like LevelDB's
    /// `LogAndApply` for a `VersionEdit`.
    fn publish(&self, ws: &mut WriteState, edit: Edit<'_>) -> Result<()> {
        Self::log_before_publish(ws)?;
        let now = ws.next_lsn - 1;
        let mut m = ws.manifest.clone();
        let mut garbage = Vec::new();
        let mut seg = edit
            .built
            .map(|b| SealedSegment::fresh(b.id, b.reader, b.index, indexed_fields(&self.config)));
        let (checkpoint, keep) = {
            let st = self.state.read();
            if let Source::Merge(inputs) = edit.source {
                // Rows deleted since the merge started: the merged rows are the inputs' rows
                // that were live then, in input order.
                mark_deleted_since(&st, inputs, seg.as_mut())?;
                m.segments.retain(|s| {
                    let input = inputs.iter().any(|(id, _)| *id == s.id);
                    if input {
                        garbage.extend(s.deletes.as_ref().map(|d| d.file.clone()));
                    }
                    !input
                });
            }
            if let Some(seg) = &seg {
                // Only a merged segment can have deleted rows when it is published; a sealed
                // one gets those of the frozen segment in memory (they are in the log after
                // the checkpoint) and writes them at the next checkpoint.
                let deletes = if seg.deleted.count_ones() > 0 {
                    let name = deletes::file_name(seg.id, now);
                    deletes::write(&self.dir.join(&name), seg.id, &seg.deleted)?;
                    Some(DeleteMeta {
                        file: name,
                        count: seg.deleted.count_ones() as u64,
                    })
                } else {
                    None
                };
                m.segments.push(SegmentMeta {
                    id: seg.id,
                    file: segment::file_name(seg.id),
                    rows: seg.reader.rows() as u64,
                    deletes,
                });
            }
            match edit.source {
                Source::Merge(_) => (None, None),
                Source::Frozen | Source::Appendable => {
                    let keep = self.persist_deletions(ws, &st, &mut m, now, &mut garbage)?;
                    let checkpoint = match (&edit.source, &st.frozen) {
                        (Source::Frozen, Some(f)) => f.lsn,
                        _ => now,
                    };
                    (Some(checkpoint), Some(keep))
                }
            }
        };
        if let Some(c) = checkpoint {
            m.checkpoint_lsn = c;
        }
        m.store(&self.dir)?;
        {
            let mut st = self.state.write();
            match (&edit.source, &keep) {
                (Source::Merge(inputs), _) => {
                    retire(&mut st, |s| inputs.iter().any(|(id, _)| *id == s.id));
                }
                (_, Some(keep)) => {
                    retire(&mut st, |s| !keep.contains(&s.id));
                    for s in &mut st.sealed {
                        s.dirty = false;
                    }
                }
                (_, None) => {}
            }
            match edit.source {
                Source::Frozen => {
                    if let (Some(f), Some(seg)) = (st.frozen.take(), seg.as_mut()) {
                        map_frozen_deletions(&f, seg);
                    }
                }
                Source::Appendable => st.reset_appendable(),
                Source::Merge(_) => {}
            }
            st.sealed.extend(seg);
        }
        ws.manifest = m;
        if let Some(c) = checkpoint {
            self.rotate_wal(ws, c)?;
        }
        for f in garbage {
            fsutil::remove_if_exists(&self.dir.join(f))?;
        }
        crate::background::release_free_memory();
        Ok(())
    }

    /// Write a deletion file for every sealed segment with new deletions and drop segments
    /// with no live row (except inputs of a merge in progress), into `m`; returns the ids of
    /// the segments kept. Dropped segments' deletion files go to `garbage`; their segment
    /// files are removed when their readers are retired and unused.
    fn persist_deletions(
        &self,
        ws: &WriteState,
        st: &State,
        m: &mut Manifest,
        lsn: u64,
        garbage: &mut Vec<String>,
    ) -> Result<Vec<u64>> {
        let merging = |id: u64| {
            ws.merge
                .as_ref()
                .is_some_and(|j| j.inputs.iter().any(|(i, _)| *i == id))
        };
        let mut keep = Vec::with_capacity(st.sealed.len());
        for s in &st.sealed {
            let meta_pos = m.segments.iter().position(|x| x.id == s.id);
            let Some(pos) = meta_pos else { continue };
            if s.live_count() == 0 && !merging(s.id) {
                let old = m.segments.remove(pos);
                garbage.extend(old.deletes.map(|d| d.file));
                continue;
            }
            keep.push(s.id);
            if s.dirty {
                let name = deletes::file_name(s.id, lsn);
                deletes::write(&self.dir.join(&name), s.id, &s.deleted)?;
                let old = m.segments[pos].deletes.replace(DeleteMeta {
                    file: name,
                    count: s.deleted.count_ones() as u64,
                });
                garbage.extend(old.map(|d| d.file));
            }
        }
        Ok(keep)
    }

    fn seal_locked(&self, ws: &mut WriteState) -> Result<()> {
        let r = self.seal_inner(ws);
        if let Err(e) = &r {
            ws.poisoned = Some(e.to_string());
        }
        r
    }

    /// Seal: write the segment and deletion files, publish the manifest, then rotate the
    /// log and remove what the new manifest no longer needs (FORMAT.md §Commit).
    ///
    /// The segment is built and written while searches go on: `ws` holds every writer off,
    /// so the appendable segment (shared through its `Arc`) and the deletion bitsets cannot
    /// change; the state's write lock is taken only to switch to the new segment.
    fn seal_inner(&self, ws: &mut WriteState) -> Result<()> {
        self.publish_locked(ws)?;
        let last = ws.next_lsn - 1;
        let (a, dirty) = {
            let st = self.state.read();
            (
                Arc::clone(&st.appendable),
                st.sealed.iter().any(|s| s.dirty),
            )
        };
        if a.rows() == 0 && !dirty && last == ws.manifest.checkpoint_lsn {
            return Ok(());
        }
        let built = if a.live_count() > 0 {
            let id = ws.manifest.next_segment_id;
            ws.manifest.next_segment_id += 1;
            Some(build_sealed(&self.dir, &self.config, self.kernels, &a, id)?)
        } else {
            None
        };
        drop(a);
        self.publish(
            ws,
            Edit {
                source: Source::Appendable,
                built,
            },
        )
    }

    fn rotate_wal(&self, ws: &mut WriteState, checkpoint: u64) -> Result<()> {
        ws.wal.sync()?;
        if ws.wal.first_lsn() <= checkpoint {
            ws.wal = WalWriter::create(&wal_dir(&self.dir), checkpoint + 1)?;
        }
        self.sync.rotated(&ws.wal);
        for (first, path) in list_files(&wal_dir(&self.dir))? {
            if first <= checkpoint {
                fsutil::remove_if_exists(&path)?;
            }
        }
        Ok(())
    }

    /// Statistics: rows, segments, deletions, bytes on disk, background work in progress.
    ///
    /// Background work that has finished is published first; work still running is
    /// reported, not waited for ([`Collection::wait_idle`] waits).
    pub fn stats(&self) -> Result<CollectionStats> {
        self.owner.check()?;
        let mut ws = self.write.lock();
        self.housekeeping_locked(&mut ws)?;
        let st = self.state.read();
        let segments = st
            .sealed
            .iter()
            .map(|s| SegmentStats {
                id: s.id,
                rows: s.reader.rows(),
                deleted: s.deleted.count_ones(),
                bytes: s.reader.file_bytes(),
                index: s.reader.index().name().to_owned(),
                index_bytes: s.reader.index().bytes() as u64,
                index_detail: s.reader.index().detail(),
            })
            .collect::<Vec<_>>();
        Ok(CollectionStats {
            rows: st.len(),
            appendable_rows: st.appendable.rows(),
            deleted: segments.iter().map(|s| s.deleted).sum(),
            segments,
            bytes_on_disk: fsutil::dir_bytes(&self.dir)?,
            last_lsn: ws.next_lsn - 1,
            checkpoint_lsn: ws.manifest.checkpoint_lsn,
            frozen_rows: st.frozen.as_ref().map_or(0, |f| f.seg.rows()),
            background: BackgroundStats {
                sealing: ws.sealing.is_some(),
                merging: ws
                    .merge
                    .as_ref()
                    .map(|j| j.inputs.iter().map(|(id, _)| *id).collect())
                    .unwrap_or_default(),
                merges_done: ws.merges_done,
                last_error: ws.merge_error.clone(),
            },
        })
    }

    /// Check every checksum of every sealed segment (reads all files).
    pub fn verify(&self) -> Result<()> {
        self.owner.check()?;
        let st = self.state.read();
        for s in &st.sealed {
            s.reader.verify()?;
        }
        Ok(())
    }

    /// Sync the log and refuse further calls. In a process that inherited the handle through
    /// `fork()` this only forgets it: the log and files belong to the opener.
    pub(crate) fn close(&self) -> Result<()> {
        if !self.owner.is_current() {
            self.closed.store(true, Ordering::Release);
            return Ok(());
        }
        let mut ws = self.write.lock();
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

/// Where the segment of a publication comes from: it decides the checkpoint and which
/// in-memory segments the new one replaces.
enum Source<'a> {
    /// The frozen segment, built in the background: the checkpoint moves to its last record.
    Frozen,
    /// The appendable segment, sealed by the caller (`flush`): the checkpoint moves to the
    /// last record.
    Appendable,
    /// A merge of these segments (with their deletions as the merge started): the
    /// checkpoint stays.
    Merge(&'a [(u64, Arc<Bitset>)]),
}

/// One change of the segment set, applied by [`Collection::publish`].
struct Edit<'a> {
    source: Source<'a>,
    /// The new segment (none when a seal or merge had no live row).
    built: Option<SealBuild>,
}

/// Mark in the merged segment `seg` the rows of `inputs` deleted since the merge started
/// (its rows are the inputs' rows that were live then, in input order).
fn mark_deleted_since(
    st: &State,
    inputs: &[(u64, Arc<Bitset>)],
    mut seg: Option<&mut SealedSegment>,
) -> Result<()> {
    let mut row = 0;
    for (id, snap) in inputs {
        let Some(s) = st.sealed.iter().find(|s| s.id == *id) else {
            return Err(Error::invalid(
                "merge",
                format!("input segment {id} vanished during the merge"),
            ));
        };
        for r in (0..s.reader.rows()).filter(|r| !snap.get(*r)) {
            if s.deleted.get(r) {
                if let Some(seg) = seg.as_deref_mut() {
                    Arc::make_mut(&mut seg.deleted).insert(row);
                }
            }
            row += 1;
        }
    }
    Ok(())
}

/// Rows of the frozen segment `f` deleted since the freeze, marked in its sealed segment
/// (whose rows are the frozen rows that were live at the freeze, in order). These deletions
/// are in the log after the checkpoint, and the next checkpoint writes them to a deletion
/// file.
fn map_frozen_deletions(f: &Frozen, seg: &mut SealedSegment) {
    let mut row = 0;
    for r in 0..f.seg.rows() {
        if f.seg.deleted.get(r) {
            continue;
        }
        if f.dead.get(r) {
            seg.delete_row(row);
        }
        row += 1;
    }
}

/// Remove segment, deletion and temp files that the manifest does not reference.
fn remove_orphans(dir: &Path, m: &Manifest) -> Result<()> {
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

fn spawn_syncer(sync: Weak<GroupSync>, every: std::time::Duration) {
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

/// Take the sealed segments matching `gone` out of the state; their files (no longer in the
/// published manifest) are removed when the last search holding their readers ends.
fn retire(st: &mut State, gone: impl Fn(&SealedSegment) -> bool) {
    st.sealed.retain(|s| {
        if gone(s) {
            s.reader.remove_when_unused();
            false
        } else {
            true
        }
    });
}

/// The segments the compaction policy merges next, from `(id, rows, deleted)` of each
/// sealed segment: those past the deleted fraction first, else the smallest tier holding
/// `min_segments` segments (its smallest `max_segments`, within `max_merged_rows`).
pub(crate) fn pick_merge(
    policy: &CompactionPolicy,
    segs: &[(u64, usize, usize)],
) -> Option<Vec<u64>> {
    let live = |s: &(u64, usize, usize)| s.1 - s.2.min(s.1);
    let mut worn: Vec<&(u64, usize, usize)> = segs
        .iter()
        .filter(|s| s.1 > 0 && live(s) > 0)
        .filter(|s| s.2 as f64 >= policy.max_deleted_fraction * s.1 as f64)
        .collect();
    if !worn.is_empty() {
        // The most worn first; together they never grow past their live rows.
        worn.sort_by(|a, b| (b.2 * a.1).cmp(&(a.2 * b.1)));
        worn.truncate(policy.max_segments);
        return Some(worn.iter().map(|s| s.0).collect());
    }
    let tier = |s: &(u64, usize, usize)| {
        ((live(s).max(1) as f64).ln() / policy.tier_ratio.ln()).floor() as i64
    };
    let mut by_size: Vec<&(u64, usize, usize)> = segs.iter().filter(|s| live(s) > 0).collect();
    by_size.sort_by_key(|s| (live(s), s.0));
    let mut i = 0;
    while i < by_size.len() {
        let t = tier(by_size[i]);
        let j = i + by_size[i..].iter().take_while(|s| tier(s) == t).count();
        let mut group: Vec<&(u64, usize, usize)> = by_size[i..j]
            .iter()
            .take(policy.max_segments)
            .copied()
            .collect();
        while group.iter().map(|s| live(s)).sum::<usize>() > policy.max_merged_rows {
            group.pop();
        }
        if group.len() >= policy.min_segments {
            return Some(group.iter().map(|s| s.0).collect());
        }
        i = j;
    }
    None
}

/// Merge the live rows of `inputs` (each `(id, reader, deleted rows)`), in order, into
/// segment `id` with its index (see [`merged_index`]), and write it. `None` when no row is
/// live. The extra memory is that of the merged rows: their vectors, payloads and the new
/// index. A `background` merge builds on the lowest-priority pool.
fn build_merged(
    dir: &Path,
    config: &CollectionConfig,
    kernels: &'static Kernels,
    inputs: &[MergeInput],
    id: u64,
    background: bool,
    stop: &AtomicBool,
) -> Result<Option<SealBuild>> {
    let dim = config.dim;
    let stopped = || stop.load(Ordering::Acquire);
    let live: usize = inputs
        .iter()
        .map(|(_, r, d)| r.rows() - d.count_ones())
        .sum();
    if live == 0 {
        return Ok(None);
    }
    let mut ids = Vec::with_capacity(live);
    let mut vectors = Vec::with_capacity(live * dim);
    let mut owned = Vec::with_capacity(live);
    for (_, r, deleted) in inputs {
        if stopped() {
            return Err(Error::Closed);
        }
        for row in (0..r.rows()).filter(|row| !deleted.get(*row)) {
            ids.push(r.ids()[row]);
            vectors.extend_from_slice(r.vector(row));
            owned.push(r.payload(row)?);
        }
    }
    let payloads: Vec<&Payload> = owned.iter().collect();
    let index = || merged_index(config, kernels, inputs, &vectors, stop);
    let built = if background {
        crate::background::build_merge(index)
    } else {
        crate::background::build(index)
    };
    // A stopped build is incomplete: nothing is written.
    if stopped() {
        return Err(Error::Closed);
    }
    write_sealed(dir, config, id, &ids, &vectors, &payloads, &built).map(Some)
}

/// Put first the input whose graph a merge can reuse: the largest with an HNSW index and no
/// deleted row (its rows become the first rows of the merged segment, unchanged).
fn order_for_reuse(inputs: &mut [MergeInput]) {
    let best = inputs
        .iter()
        .enumerate()
        .filter(|(_, (_, r, d))| d.count_ones() == 0 && r.index().as_graph().is_some())
        .max_by_key(|(_, (_, r, _))| r.rows())
        .map(|(i, _)| i);
    if let Some(i) = best {
        inputs[..=i].rotate_right(1);
    }
}

/// The index of merged rows `vectors` (the inputs' live rows in order). For HNSW, when the
/// first input has no deleted row, its graph is copied and the other rows are inserted into
/// it (`TROVEDB_MERGE_REBUILD=1` with feature `bench` forces a rebuild, for measurements); otherwise the index is
/// built afresh.
fn merged_index(
    config: &CollectionConfig,
    kernels: &'static Kernels,
    inputs: &[MergeInput],
    vectors: &[f32],
    stop: &AtomicBool,
) -> BuiltIndex {
    #[cfg(feature = "bench")]
    let rebuild = {
        static V: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
        crate::index::bench_knob(&V, "TROVEDB_MERGE_REBUILD", 0) == 1
    };
    #[cfg(not(feature = "bench"))]
    let rebuild = false;
    if let (Some(params), Some((_, first, deleted)), false) =
        (hnsw_params(config), inputs.first(), rebuild)
    {
        if let (Some(view), 0) = (first.index().as_graph(), deleted.count_ones()) {
            if let Some(mut b) = GraphBuilder::from_view(params, &view) {
                let vs = VectorSet {
                    data: vectors,
                    dim: config.dim,
                    kernels,
                    metric: config.metric,
                };
                let (have, n) = (b.len_nodes(), vectors.len() / config.dim);
                if have <= n {
                    b.add_nodes(n - have);
                    b.insert_range_or_stop(have, n, &vs, stop);
                    return BuiltIndex::Hnsw(b.freeze());
                }
            }
        }
    }
    let empty = AppendableSegment::new(config.dim, None, None);
    build_index_with(config, kernels, &empty, usize::MAX, vectors, stop)
}

/// Build and write the sealed segment of a frozen appendable segment (background thread).
fn build_sealed(
    dir: &Path,
    config: &CollectionConfig,
    kernels: &'static Kernels,
    a: &AppendableSegment,
    id: u64,
) -> Result<SealBuild> {
    let rows: Vec<usize> = a.live_rows().collect();
    let ids: Vec<u64> = rows.iter().map(|r| a.ids[*r]).collect();
    let mut vectors = Vec::with_capacity(rows.len() * config.dim);
    for r in &rows {
        vectors.extend_from_slice(a.vector(*r));
    }
    let payloads: Vec<&Payload> = rows.iter().map(|r| &a.payloads[*r]).collect();
    let built = crate::background::build(|| {
        build_index_with(
            config,
            kernels,
            a,
            rows.len(),
            &vectors,
            &AtomicBool::new(false),
        )
    });
    write_sealed(dir, config, id, &ids, &vectors, &payloads, &built)
}

/// Write segment `id` holding these rows and their index (with the payload index built from
/// `payloads`), durably, and open it.
fn write_sealed(
    dir: &Path,
    config: &CollectionConfig,
    id: u64,
    ids: &[u64],
    vectors: &[f32],
    payloads: &[&Payload],
    built: &BuiltIndex,
) -> Result<SealBuild> {
    let mut index = PayloadIndex::new(indexed_fields(config));
    for p in payloads {
        index.add(p);
    }
    let name = segment::file_name(id);
    write_segment(
        dir,
        &name,
        &SegmentData {
            segment_id: id,
            metric: config.metric,
            dim: config.dim,
            ids,
            vectors,
            payloads,
            index: built,
            payload_index: Some(&index),
        },
    )?;
    let reader = SegmentReader::open(&dir.join(&name), config.dim, config.metric)?;
    Ok(SealBuild { id, reader, index })
}

/// Build the index of a segment about to be sealed from the appendable `a`, whose live rows
/// are `vectors` (`live` of them). An HNSW build gives up early once `stop` is set (the
/// caller then discards the result).
fn build_index_with(
    config: &CollectionConfig,
    kernels: &'static Kernels,
    a: &AppendableSegment,
    live: usize,
    vectors: &[f32],
    stop: &AtomicBool,
) -> BuiltIndex {
    // The appendable graph is reused when no row was deleted (rows map one to one);
    // otherwise the index is built afresh over the live rows (in parallel).
    if let Some(g) = &a.graph {
        if a.deleted.count_ones() == 0 && g.len_nodes() == live {
            return BuiltIndex::Hnsw(g.freeze());
        }
    }
    config.index.spec().build(&BuildInput {
        vectors,
        dim: config.dim,
        metric: config.metric,
        kernels,
        stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(p: Option<Vec<u64>>) -> Vec<u64> {
        let mut v = p.unwrap_or_default();
        v.sort_unstable();
        v
    }

    #[test]
    fn pick_merge_by_tier_wear_and_size_cap() {
        let p = CompactionPolicy::default().max_merged_rows(2_000_000);
        // Three of a tier: nothing; four: the four.
        let three = [(1, 100, 0), (2, 120, 0), (3, 90, 0), (4, 100_000, 0)];
        assert_eq!(pick_merge(&p, &three), None);
        let four = [
            (1, 100, 0),
            (2, 120, 0),
            (3, 90, 0),
            (4, 100_000, 0),
            (5, 70, 0),
        ];
        assert_eq!(ids(pick_merge(&p, &four)), vec![1, 2, 3, 5]);
        // Tiers go by live rows; with two full tiers the smaller one is merged first.
        let mixed = [
            (1, 300, 10),
            (2, 310, 0),
            (3, 280, 0),
            (4, 260, 5),
            (5, 10, 0),
            (6, 12, 0),
            (7, 11, 0),
            (8, 9, 0),
        ];
        assert_eq!(ids(pick_merge(&p, &mixed)), vec![5, 6, 7, 8]);
        // At most max_segments, the smallest of the tier.
        let many: Vec<(u64, usize, usize)> = (0..12).map(|i| (i, 100 + i as usize, 0)).collect();
        assert_eq!(ids(pick_merge(&p, &many)), (0..8).collect::<Vec<_>>());
        // The size cap drops the largest until the group fits; too few left: nothing.
        let capped = p.max_merged_rows(450);
        let big = [(1, 100, 0), (2, 110, 0), (3, 120, 0), (4, 130, 0)];
        assert_eq!(pick_merge(&capped, &big), None);
        let fits = p.max_merged_rows(460);
        assert_eq!(ids(pick_merge(&fits, &big)), vec![1, 2, 3, 4]);
        // A worn segment (deleted fraction >= 0.3) is rewritten first, whatever the tiers.
        let worn = [
            (1, 100, 0),
            (2, 120, 0),
            (3, 90, 0),
            (4, 1000, 300),
            (5, 70, 0),
        ];
        assert_eq!(ids(pick_merge(&p, &worn)), vec![4]);
        // Fully deleted segments are left to the seal (it drops them).
        let dead = [(1, 100, 100), (2, 50, 0)];
        assert_eq!(pick_merge(&p, &dead), None);
        assert_eq!(pick_merge(&p, &[]), None);
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    /// A replaced segment's file stays until the last holder of its reader (a search
    /// snapshot, a merge) lets go, then disappears.
    #[test]
    fn retired_segment_file_outlives_its_last_reader_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CollectionConfig::new(2, Metric::L2);
        let p = Payload::new();
        let b = write_sealed(
            dir.path(),
            &config,
            7,
            &[1, 2],
            &[0.0, 1.0, 2.0, 3.0],
            &[&p, &p],
            &BuiltIndex::Flat,
        )
        .expect("write");
        let path = dir.path().join(segment::file_name(b.id));
        let seg = SealedSegment::fresh(b.id, b.reader, b.index, None);
        let snapshot = seg.clone();
        let mut st = State::new(&config, Kernels::best(), vec![seg]);
        retire(&mut st, |_| true);
        assert!(st.sealed.is_empty());
        assert!(path.exists(), "a snapshot still holds the reader");
        assert_eq!(snapshot.reader.vector(1), &[2.0, 3.0]);
        drop(snapshot);
        assert!(!path.exists(), "removed with its last reader");
    }
}
