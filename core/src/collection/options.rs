//! Database options.

use std::sync::Arc;
use std::time::Duration;

/// When an acknowledged write reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// fsync before `upsert`/`delete` returns (group commit shares one fsync among
    /// concurrent writers). An acknowledged write survives a crash or power loss.
    Always,
    /// fsync in the background at this interval: a crash may lose the writes of the
    /// last interval, never corrupt older ones.
    Batch(Duration),
    /// Never fsync the log (the OS writes it back eventually). Seals and close still sync.
    Off,
}

impl Durability {
    /// Parse `always`, `off`, or `batch` / `batch:<ms>` (default 100 ms).
    pub fn parse(s: &str) -> crate::Result<Durability> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "always" => Ok(Durability::Always),
            "off" | "none" => Ok(Durability::Off),
            "batch" => Ok(Durability::Batch(Duration::from_millis(100))),
            _ => s
                .strip_prefix("batch:")
                .or_else(|| s.strip_prefix("batch("))
                .map(|r| r.trim_end_matches(')').trim_end_matches("ms"))
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(|ms| Durability::Batch(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    crate::Error::invalid(
                        "durability",
                        format!("unknown durability `{s}`; expected always, batch:<ms> or off"),
                    )
                }),
        }
    }
}

/// Options for [`crate::Database::open`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbOptions {
    /// When writes become durable. Default: [`Durability::Always`].
    pub durability: Durability,
    /// The appendable segment is sealed into a segment file once it holds this many rows.
    /// Default 100,000. During a bulk load into an HNSW collection the appendable segment
    /// grows on the one just sealed (README "Ingest while searching, compaction") and takes
    /// as many rows of its own as that segment holds before it is sealed, up to twice this
    /// many: an unsealed segment, which recovery replays from the log, holds at most twice
    /// this many rows.
    pub seal_threshold_rows: usize,
    /// When sealed segments are merged in the background: `background` switches merging on
    /// or off; the other fields are the default size-tiered policy, used unless
    /// `merge_policy` is set.
    pub compaction: CompactionPolicy,
    /// A merge policy of the application's instead of the size-tiered `compaction`.
    pub merge_policy: Option<Arc<dyn MergePolicy>>,
    /// On Linux with glibc, fix the allocator's mmap threshold (4 MiB) and trim threshold
    /// (1 MiB) for the process at the first open, unless the application set
    /// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`: without it, memory freed after
    /// seals and merges stays resident (README "Ingest while searching, compaction").
    /// Changing process-wide allocator settings is the application's call, so this is
    /// off by default; seals and merges return freed memory with `malloc_trim` either way.
    /// Default false.
    pub tune_allocator: bool,
    /// Open without taking the writer's lock: any number of read-only handles, in any
    /// processes, can be open beside the one writer. A read-only handle sees the writer's
    /// published state (its manifest and the log records it has made durable) and catches
    /// up before each read; every write, `flush`, `compact` and collection create/drop is
    /// refused with [`crate::Error::ReadOnly`]. Default false.
    pub read_only: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            durability: Durability::Always,
            seal_threshold_rows: 100_000,
            compaction: CompactionPolicy::default(),
            merge_policy: None,
            tune_allocator: false,
            read_only: false,
        }
    }
}

/// A sealed segment as a [`MergePolicy`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentSizes {
    /// The segment's id.
    pub id: u64,
    /// Its rows, live or deleted.
    pub rows: usize,
    /// Its deleted rows.
    pub deleted: usize,
}

impl SegmentSizes {
    /// Sizes of segment `id`.
    pub fn new(id: u64, rows: usize, deleted: usize) -> Self {
        SegmentSizes { id, rows, deleted }
    }

    /// Live rows.
    pub fn live(&self) -> usize {
        self.rows - self.deleted.min(self.rows)
    }
}

/// Which sealed segments a background merge combines next. A pure function of the segments'
/// sizes — no I/O, no clock — asked by a writer whenever no merge is running (tantivy's
/// `MergePolicy`). Returned ids that are not among `segments`, or repeated, are ignored; a
/// single id rewrites that segment without its deleted rows. The default is the size-tiered
/// [`CompactionPolicy`]; set another with [`DbOptions::merge_policy`].
pub trait MergePolicy: Send + Sync + std::fmt::Debug {
    /// The ids to merge into one segment, or `None` to merge nothing now.
    /// `seal_threshold_rows` is the collection's seal threshold (the size of a full
    /// segment).
    fn pick(&self, segments: &[SegmentSizes], seal_threshold_rows: usize) -> Option<Vec<u64>>;

    /// The ids to merge once writes have gone quiet (no write for the compaction policy's
    /// `quiet` period, or [`crate::Collection::wait_idle`]) and [`Self::pick`] has nothing
    /// to do. `max_segment_rows` is the largest segment a merge should build (see
    /// [`CompactionPolicy::max_segment_rows`]). The default merges nothing more.
    fn pick_idle(
        &self,
        segments: &[SegmentSizes],
        seal_threshold_rows: usize,
        max_segment_rows: usize,
    ) -> Option<Vec<u64>> {
        let _ = (segments, seal_threshold_rows, max_segment_rows);
        None
    }
}

/// The background compaction policy: size tiers while writes arrive, convergence once they
/// go quiet.
///
/// While writes arrive, segments are grouped in tiers by live rows (tier `t` holds segments
/// with `tier_ratio^t <= live < tier_ratio^(t+1)`); when a tier holds `min_segments`, up to
/// `max_segments` of them are merged into one (which lands a tier up), as long as the result
/// stays within `max_merged_rows` (by default twice the seal threshold: small segments left
/// by frequent flushes are merged, full-size ones wait, so a bulk load is not taxed by
/// merges). A segment whose deleted fraction reaches `max_deleted_fraction` is rewritten
/// without its deleted rows. In an HNSW collection (with the built-in policy), each full
/// appendable segment is moreover sealed *onto* the segment sealed before it, as long as the
/// result stays within `max_segment_rows`: the new rows are linked into that segment's graph
/// as they arrive, and the seal writes one segment in place of the two. A bulk load thus
/// builds one graph, linking every row once, instead of one graph per seal that a merge later
/// throws away; its segment is never a merge input meanwhile. (While it grows, the
/// appendable segment holds a copy of the base's vectors and graph in memory.)
///
/// Once no write has arrived for `quiet` (or [`crate::Collection::wait_idle`] is called),
/// the smallest segments are merged together up to `max_segment_rows` (reusing the largest
/// input's HNSW graph), as long as the rows they add are at least `1/idle_ratio` of the
/// largest input (which bounds how often a big segment is rewritten for a trickle of small
/// ones); and an appendable segment left alone for `seal_idle_after` is sealed. A
/// collection left alone after a bulk load thus ends with few segments, each at most
/// `max_segment_rows`, without a call to [`crate::Collection::compact`].
///
/// One merge runs at a time per collection, on a background thread (its index build at
/// background priority); searches and writes go on, and rows deleted meanwhile stay
/// deleted.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CompactionPolicy {
    /// Merge in the background. Default true; `false` leaves merging to
    /// [`crate::Collection::compact`].
    pub background: bool,
    /// Segments of one tier that trigger a merge (at least 2). Default 4.
    pub min_segments: usize,
    /// Most segments merged at once. Default 8.
    pub max_segments: usize,
    /// Size ratio between tiers (above 1). Default 4.
    pub tier_ratio: f64,
    /// Deleted fraction of a segment that triggers its rewrite (0 < f <= 1). Default 0.3.
    pub max_deleted_fraction: f64,
    /// Tier merges never build a segment above this many rows. Default 0: twice the seal
    /// threshold. Measured on a 1M x 128 ingest (README "Ingest while searching"): with a
    /// cap of 2,000,000, background merges of full-size segments (400k and 600k rows) took
    /// the end-to-end ingest from 141.6 s to 384 s, while idle search p99 fell 3.6x.
    pub max_merged_rows: usize,
    /// Largest segment that merges after writes go quiet build. Default 0: sized from
    /// memory, an eighth of the machine's physical memory divided by `4·dim + 256` bytes
    /// per row (the vectors plus the graph and row overhead a merge holds in memory), and
    /// at least twice the seal threshold: 1.85M rows of 384 dimensions with 24 GiB.
    pub max_segment_rows: usize,
    /// No write for this long counts as quiet: merges toward `max_segment_rows` may start.
    /// Writes arriving more often than this never start one. Default 2 s.
    pub quiet: Duration,
    /// An appendable segment without a write for this long is sealed in the background
    /// (so its rows join the converged segments and the log is trimmed). Default 30 s.
    pub seal_idle_after: Duration,
    /// A quiet merge runs only when the rows it adds to its largest input are at least
    /// `1/idle_ratio` of that input (at least 1). Default 16.
    pub idle_ratio: f64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            background: true,
            min_segments: 4,
            max_segments: 8,
            tier_ratio: 4.0,
            max_deleted_fraction: 0.3,
            max_merged_rows: 0,
            max_segment_rows: 0,
            quiet: Duration::from_secs(2),
            seal_idle_after: Duration::from_secs(30),
            idle_ratio: 16.0,
        }
    }
}

impl CompactionPolicy {
    /// No background merging.
    #[must_use]
    pub fn off() -> Self {
        CompactionPolicy {
            background: false,
            ..CompactionPolicy::default()
        }
    }

    /// Merge in the background or not.
    #[must_use]
    pub fn background(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Segments of one tier that trigger a merge.
    #[must_use]
    pub fn min_segments(mut self, n: usize) -> Self {
        self.min_segments = n;
        self.max_segments = self.max_segments.max(n);
        self
    }

    /// Most segments merged at once.
    #[must_use]
    pub fn max_segments(mut self, n: usize) -> Self {
        self.max_segments = n;
        self
    }

    /// Size ratio between tiers.
    #[must_use]
    pub fn tier_ratio(mut self, r: f64) -> Self {
        self.tier_ratio = r;
        self
    }

    /// Deleted fraction that triggers a segment's rewrite.
    #[must_use]
    pub fn max_deleted_fraction(mut self, f: f64) -> Self {
        self.max_deleted_fraction = f;
        self
    }

    /// Largest segment a tier merge may build (0: twice the seal threshold).
    #[must_use]
    pub fn max_merged_rows(mut self, n: usize) -> Self {
        self.max_merged_rows = n;
        self
    }

    /// Largest segment a quiet merge builds (0: sized from memory).
    #[must_use]
    pub fn max_segment_rows(mut self, n: usize) -> Self {
        self.max_segment_rows = n;
        self
    }

    /// How long without a write counts as quiet.
    #[must_use]
    pub fn quiet(mut self, d: Duration) -> Self {
        self.quiet = d;
        self
    }

    /// How long an appendable segment may go without a write before it is sealed.
    #[must_use]
    pub fn seal_idle_after(mut self, d: Duration) -> Self {
        self.seal_idle_after = d;
        self
    }

    /// Least growth of a quiet merge's largest input, as `1/idle_ratio` of it.
    #[must_use]
    pub fn idle_ratio(mut self, r: f64) -> Self {
        self.idle_ratio = r;
        self
    }

    /// `max_segment_rows` resolved for a collection of dimension `dim` (see the field).
    pub fn resolved_max_segment_rows(&self, dim: usize, seal_threshold_rows: usize) -> usize {
        if self.max_segment_rows > 0 {
            return self.max_segment_rows;
        }
        let floor = seal_threshold_rows.saturating_mul(2);
        let per_row = (4 * dim + 256) as u64;
        let rows = crate::storage::fsutil::physical_memory().map_or(0, |m| m / 8 / per_row);
        usize::try_from(rows).unwrap_or(usize::MAX).max(floor)
    }

    /// The quiet choice (see the type's documentation): the smallest live segments whose
    /// rows fit in `max_rows`, when there are at least two and they grow the largest of them
    /// by at least `1/idle_ratio`.
    fn pick_quiet(&self, segs: &[SegmentSizes], max_rows: usize) -> Option<Vec<u64>> {
        let mut by_size: Vec<&SegmentSizes> = segs.iter().filter(|s| s.live() > 0).collect();
        by_size.sort_by_key(|s| (s.live(), s.id));
        let mut total = 0usize;
        let mut group = Vec::new();
        for s in by_size {
            if total.saturating_add(s.live()) > max_rows {
                break;
            }
            total += s.live();
            group.push(s);
        }
        let largest = group.last()?.live();
        let added = total - largest;
        if group.len() < 2 || (added as f64) * self.idle_ratio < largest as f64 {
            return None;
        }
        Some(group.iter().map(|s| s.id).collect())
    }

    /// The size-tiered choice (see the type's documentation) with `max_merged_rows` given.
    fn pick_tiered(&self, segs: &[SegmentSizes], max_merged_rows: usize) -> Option<Vec<u64>> {
        let mut worn: Vec<&SegmentSizes> = segs
            .iter()
            .filter(|s| s.rows > 0 && s.live() > 0)
            .filter(|s| s.deleted as f64 >= self.max_deleted_fraction * s.rows as f64)
            .collect();
        if !worn.is_empty() {
            // The most worn first; together they never grow past their live rows.
            worn.sort_by(|a, b| (b.deleted * a.rows).cmp(&(a.deleted * b.rows)));
            worn.truncate(self.max_segments);
            return Some(worn.iter().map(|s| s.id).collect());
        }
        let tier = |s: &SegmentSizes| {
            ((s.live().max(1) as f64).ln() / self.tier_ratio.ln()).floor() as i64
        };
        let mut by_size: Vec<&SegmentSizes> = segs.iter().filter(|s| s.live() > 0).collect();
        by_size.sort_by_key(|s| (s.live(), s.id));
        let mut i = 0;
        while i < by_size.len() {
            let t = tier(by_size[i]);
            let j = i + by_size[i..].iter().take_while(|s| tier(s) == t).count();
            let mut group: Vec<&SegmentSizes> = by_size[i..j]
                .iter()
                .take(self.max_segments)
                .copied()
                .collect();
            while group.iter().map(|s| s.live()).sum::<usize>() > max_merged_rows {
                group.pop();
            }
            if group.len() >= self.min_segments {
                return Some(group.iter().map(|s| s.id).collect());
            }
            i = j;
        }
        None
    }

    /// Check the values; a bad one is `InvalidArgument` naming it.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |name, why: String| Err(crate::Error::invalid(name, why));
        if self.min_segments < 2 {
            return bad(
                "min_segments",
                format!("must be at least 2, got {}", self.min_segments),
            );
        }
        if self.max_segments < self.min_segments {
            return bad(
                "max_segments",
                format!(
                    "must be at least min_segments ({}), got {}",
                    self.min_segments, self.max_segments
                ),
            );
        }
        if !(self.tier_ratio.is_finite() && self.tier_ratio > 1.0) {
            return bad(
                "tier_ratio",
                format!("must be above 1, got {}", self.tier_ratio),
            );
        }
        if !(self.max_deleted_fraction > 0.0 && self.max_deleted_fraction <= 1.0) {
            return bad(
                "max_deleted_fraction",
                format!("must be in (0, 1], got {}", self.max_deleted_fraction),
            );
        }
        if !(self.idle_ratio.is_finite() && self.idle_ratio >= 1.0) {
            return bad(
                "idle_ratio",
                format!("must be at least 1, got {}", self.idle_ratio),
            );
        }
        Ok(())
    }
}

impl MergePolicy for CompactionPolicy {
    fn pick(&self, segments: &[SegmentSizes], seal_threshold_rows: usize) -> Option<Vec<u64>> {
        let cap = if self.max_merged_rows == 0 {
            seal_threshold_rows.saturating_mul(2)
        } else {
            self.max_merged_rows
        };
        self.pick_tiered(segments, cap)
    }

    fn pick_idle(
        &self,
        segments: &[SegmentSizes],
        _seal_threshold_rows: usize,
        max_segment_rows: usize,
    ) -> Option<Vec<u64>> {
        self.pick_quiet(segments, max_segment_rows)
    }
}

impl DbOptions {
    /// Merge with `policy` instead of the size-tiered `compaction` (whose `background`
    /// switch still turns background merging on or off).
    #[must_use]
    pub fn merge_policy(mut self, policy: Arc<dyn MergePolicy>) -> Self {
        self.merge_policy = Some(policy);
        self
    }

    /// Set the durability.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Set the background compaction policy.
    #[must_use]
    pub fn compaction(mut self, policy: CompactionPolicy) -> Self {
        self.compaction = policy;
        self
    }

    /// Let the database fix glibc's allocation thresholds (see the field).
    #[must_use]
    pub fn tune_allocator(mut self, on: bool) -> Self {
        self.tune_allocator = on;
        self
    }

    /// Open read-only (see the field).
    #[must_use]
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Set the seal threshold (rows, at least 1).
    #[must_use]
    pub fn seal_threshold_rows(mut self, rows: usize) -> Self {
        self.seal_threshold_rows = rows.max(1);
        self
    }
}
