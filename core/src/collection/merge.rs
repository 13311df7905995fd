//! Merges: the size-tiered policy, background merge jobs, `compact()`, and building the
//! merged segment (reusing the largest input's HNSW graph when it can).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::appendable::AppendableSegment;
use super::build::{
    build_index_with, extend_text_from_sealed, vector_set, write_sealed, SealBuild,
};
use super::collection::{Collection, WriteState};
use super::options::{MergePolicy, SegmentSizes};
use super::publish::{Edit, Source};
use super::state::hnsw_params;
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::filter::bitset::Bitset;
use crate::filter::value::Payload;
use crate::index::hnsw::build::GraphBuilder;
use crate::index::registry::BuiltIndex;
use crate::index::text::MemText;
use crate::interrupt;
use crate::storage::segment::reader::SegmentReader;
use crate::types::CollectionConfig;

/// An input of a merge: segment id, reader, and its deletions when the merge started (shared
/// with the state's copy-on-write bitset, so later deletions do not show in it).
pub(super) type MergeInput = (u64, Arc<SegmentReader>, Arc<Bitset>);

/// A background merge of sealed segments.
pub(super) struct MergeJob {
    pub(super) handle: std::thread::JoinHandle<Result<Option<SealBuild>>>,
    /// The input segments with their deletions when the merge started: the merged rows are
    /// their live rows, in this order.
    pub(super) inputs: Vec<(u64, Arc<Bitset>)>,
    /// Set by `close()`: the build gives up early and writes nothing.
    pub(super) stop: Arc<AtomicBool>,
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
pub(super) const MERGE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(30);

impl Collection {
    /// The merge policy in force: the application's, or the compaction policy.
    pub(super) fn merge_policy(&self) -> &dyn MergePolicy {
        match &self.options.merge_policy {
            Some(p) => &**p,
            None => &self.options.compaction,
        }
    }

    /// Start a background merge of the segments the merge policy picks, if any and if none
    /// is running; when writes are `quiet`, the policy's quiet choice too (after the tiers
    /// have nothing to merge). Whether a merge runs afterwards.
    pub(super) fn maybe_start_merge_locked(
        &self,
        ws: &mut WriteState,
        quiet: bool,
    ) -> Result<bool> {
        if ws.merge.is_some() {
            return Ok(true);
        }
        if !self.options.compaction.background || ws.poisoned.is_some() {
            return Ok(false);
        }
        let policy = self.merge_policy();
        if ws
            .merge_retry_after
            .is_some_and(|t| std::time::Instant::now() < t)
        {
            return Ok(false);
        }
        let inputs: Vec<MergeInput> = {
            let st = self.state.read();
            // A segment the appendable or frozen segment grows on is rewritten by their seal:
            // never merged meanwhile.
            let grown_on = [
                st.appendable.base,
                st.frozen.as_ref().and_then(|f| f.seg.base),
            ];
            let sizes: Vec<SegmentSizes> = st
                .sealed
                .iter()
                .filter(|s| !grown_on.iter().flatten().any(|b| b.id == s.id))
                .map(|s| SegmentSizes::new(s.id, s.reader.rows(), s.deleted.count_ones()))
                .collect();
            let seal = self.options.seal_threshold_rows;
            // The memory-sized limit is resolved only for a quiet pick, never on a writer's
            // housekeeping.
            let picked = policy.pick(&sizes, seal).or_else(|| {
                quiet
                    .then(|| policy.pick_idle(&sizes, seal, self.max_segment_rows()))
                    .flatten()
            });
            let Some(pick) = picked else {
                return Ok(false);
            };
            // Ids the state does not hold, or repeated, are ignored (see `MergePolicy`).
            let mut inputs: Vec<MergeInput> = st
                .sealed
                .iter()
                .filter(|s| pick.contains(&s.id))
                .map(|s| (s.id, Arc::clone(&s.reader), Arc::clone(&s.deleted)))
                .collect();
            // Nothing to do: no segment, or one segment with nothing to drop (rewriting it
            // would change nothing, and a policy that keeps asking would loop).
            if inputs.is_empty() || (inputs.len() == 1 && inputs[0].2.count_ones() == 0) {
                return Ok(false);
            }
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
        Ok(true)
    }

    /// Publish the background merge if it has finished (or, with `wait`, once it has): a
    /// manifest with the merged segment in place of its inputs, the rows deleted while it
    /// ran marked in it (and written to its deletion file), then the in-memory switch. The
    /// inputs' files are removed when the last search using them ends. A failed build is
    /// recorded and dropped (the inputs stay; merging pauses for a while); a failed
    /// manifest write poisons the collection like any other.
    pub(super) fn publish_merge_locked(&self, ws: &mut WriteState, wait: bool) -> Result<()> {
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
    pub(super) fn publish_merge(
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

    pub(super) fn publish_merge_inner(
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

    /// Merge every segment into one, dropping deleted rows and rebuilding the index, then
    /// publish it atomically (a new manifest). Writers wait for it (a background merge in
    /// progress is finished first); searches keep running on the old segments until the
    /// switch, and the old files are removed when the last of those searches ends. A crash
    /// at any point leaves either the old or the new set of segments (plus the log).
    /// Returns the rows dropped.
    ///
    /// ```
    /// # use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Database::open(dir.path(), DbOptions::default())?;
    /// # let c = db.create_collection("c", &CollectionConfig::new(2, Metric::L2))?;
    /// for i in 0..3 {
    ///     c.upsert(&[i], &[i as f32, 0.0], &[])?;
    ///     c.flush()?; // one sealed segment per flush
    /// }
    /// assert_eq!(c.stats()?.segments.len(), 3);
    /// c.compact()?;
    /// assert_eq!(c.stats()?.segments.len(), 1);
    /// assert_eq!(c.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(&self) -> Result<usize> {
        self.check_open()?;
        let mut ws = self.writer("compact")?;
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
        let stop = interrupt::current().unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        let built = build_merged(
            &self.dir,
            &self.config,
            self.kernels,
            &old,
            id,
            false,
            &stop,
        )
        .map_err(|e| {
            if interrupt::is_set(Some(&stop)) {
                Error::Interrupted {
                    operation: "compact",
                }
            } else {
                e
            }
        })?;
        // Writers were held throughout, so no input row was deleted meanwhile.
        let inputs: Vec<(u64, Arc<Bitset>)> = old.into_iter().map(|(i, _, d)| (i, d)).collect();
        self.publish_merge(&mut ws, &inputs, built)?;
        Ok(dropped)
    }
}

/// Merge the live rows of `inputs` (each `(id, reader, deleted rows)`), in order, into
/// segment `id` with its index (see [`merged_index`]), and write it. `None` when no row is
/// live. The extra memory is that of the merged rows: their vectors, payloads and the new
/// index. A `background` merge builds on the lowest-priority pool.
pub(super) fn build_merged(
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
    let mut vectors =
        crate::background::AnonF32::with_capacity(live * dim).map_err(|e| Error::io(dir, e))?;
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
    // The inputs' text indexes, merged posting list by posting list (no text is analysed
    // again).
    let mut text = Vec::new();
    for field in config.text.iter().flat_map(|t| t.fields.iter()) {
        let mut m = MemText::default();
        for (_, r, deleted) in inputs {
            let keep: Vec<usize> = (0..r.rows()).filter(|row| !deleted.get(*row)).collect();
            extend_text_from_sealed(&mut m, r, field, &keep)?;
        }
        text.push(m);
    }
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
    write_sealed(
        dir,
        config,
        id,
        &ids,
        &vectors,
        &payloads,
        &built,
        Some(text),
    )
    .map(Some)
}

/// Put first the input whose graph a merge can reuse: the largest with an HNSW index and no
/// deleted row (its rows become the first rows of the merged segment, unchanged).
pub(super) fn order_for_reuse(inputs: &mut [MergeInput]) {
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
/// it (`GraphBuilder::insert_range_merge_or_stop`; with feature `bench`,
/// `TROVEDB_MERGE_REBUILD=1` forces a rebuild, for measurements); otherwise the index is built
/// afresh.
pub(super) fn merged_index(
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
            if let Some(mut b) = GraphBuilder::from_view(params, &view, vectors.len() / config.dim)
            {
                let vs = vector_set(config, kernels, vectors);
                let (have, n) = (b.len_nodes(), vectors.len() / config.dim);
                if have <= n {
                    b.add_nodes(n - have, &vs);
                    b.insert_range_merge_or_stop(have, n, &vs, stop);
                    // A stopped merge is thrown away: not worth linking its unlinked nodes.
                    if stop.load(std::sync::atomic::Ordering::Acquire) {
                        return BuiltIndex::Hnsw(b.freeze());
                    }
                    return BuiltIndex::Hnsw(b.freeze_linked(&vs));
                }
            }
        }
    }
    let empty = AppendableSegment::new(config.dim, None, None, None);
    build_index_with(config, kernels, &empty, usize::MAX, vectors, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collection::options::CompactionPolicy;

    /// The size-tiered policy on `(id, rows, deleted)` triples (seal threshold 1,000,000).
    fn pick_merge(p: &CompactionPolicy, segs: &[(u64, usize, usize)]) -> Option<Vec<u64>> {
        let sizes: Vec<SegmentSizes> = segs
            .iter()
            .map(|&(id, rows, deleted)| SegmentSizes::new(id, rows, deleted))
            .collect();
        p.pick(&sizes, 1_000_000)
    }

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
