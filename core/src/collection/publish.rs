//! Publication: every change of the segment set (background seal, `flush`, merge) is one
//! [`Edit`] applied by [`Collection::publish`]; freezing and sealing lead up to it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::appendable::AppendableSegment;
use super::build::{build_sealed, chain_base, SealBuild};
use super::collection::{wal_dir, Collection, WriteState};
use super::state::{indexed_fields, Frozen, SealedSegment, State};
use crate::error::{Error, Result};
use crate::filter::bitset::Bitset;
use crate::interrupt;
use crate::storage::manifest::{DeleteMeta, Manifest, SegmentMeta};
use crate::storage::wal::replay::list_files;
use crate::storage::wal::writer::WalWriter;
use crate::storage::{deletes, fsutil, segment};

/// Where the segment of a publication comes from: it decides the checkpoint and which
/// in-memory segments the new one replaces.
pub(super) enum Source<'a> {
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
pub(super) struct Edit<'a> {
    pub(super) source: Source<'a>,
    /// The new segment (none when a seal or merge had no live row).
    pub(super) built: Option<SealBuild>,
}

/// Mark in the merged segment `seg` the rows of `inputs` deleted since the merge started
/// (its rows are the inputs' rows that were live then, in input order).
pub(super) fn mark_deleted_since(
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
pub(super) fn map_frozen_deletions(f: &Frozen, seg: &mut SealedSegment, chained: bool) {
    if chained {
        // A chain seal holds every row of the frozen segment in order (none of its own rows
        // was deleted at the freeze; the base's rows are marked from the base).
        for r in f.seg.base_rows()..f.seg.rows() {
            if f.dead.get(r) {
                seg.delete_row(r);
            }
        }
        return;
    }
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

/// Take the sealed segments matching `gone` out of the state; their files (no longer in the
/// published manifest) are removed when the last search holding their readers ends.
pub(super) fn retire(st: &mut State, gone: impl Fn(&SealedSegment) -> bool) {
    st.sealed.retain(|s| {
        if gone(s) {
            s.reader.remove_when_unused();
            false
        } else {
            true
        }
    });
}

impl Collection {
    /// Freeze the full appendable segment and build its sealed segment on a background
    /// thread; writers continue into a fresh appendable segment and searches see both. At
    /// most one frozen segment exists: a second freeze first waits for (and publishes) the
    /// previous build — the back-pressure.
    ///
    /// With `grow` (a freeze because the segment is full, while writes arrive), the next
    /// appendable segment grows on the one frozen when [`Collection::grows_on`] allows it,
    /// finishing the copy the writer started ([`Growth`]) if there is one.
    pub(super) fn freeze_locked(&self, ws: &mut WriteState, grow: bool) -> Result<()> {
        let growth = ws.growth.take();
        self.publish_locked(ws)?;
        let last = ws.next_lsn - 1;
        let id = ws.manifest.next_segment_id;
        ws.manifest.next_segment_id += 1;
        // Writers are held by `ws`: the appendable segment cannot change until the switch.
        let (seg, base) = {
            let st = self.state.read();
            let seg = Arc::clone(&st.appendable);
            let base = chain_base(&seg, st.sealed.iter().map(|s| (s.id, &s.reader)));
            (seg, base)
        };
        // Sealed whole (every row in graph order, into segment `id`), it can be grown on.
        let whole = seg.seals_whole() && (seg.base.is_none() || base.is_some());
        let more = self.freeze_rows(seg.rows());
        let next = (grow && whole && self.grows_on(&seg)).then(|| match growth {
            Some(g) if g.of(&seg) => (*g).finish(&seg, id),
            _ => AppendableSegment::grow_on(&seg, id, more),
        });
        {
            let mut st = self.state.write();
            st.frozen = Some(Frozen {
                dead: seg.deleted.clone(),
                seg: Arc::clone(&seg),
                lsn: last,
            });
            match next {
                Some(a) => st.appendable = Arc::new(a),
                None => st.reset_appendable(),
            }
        }
        // Start a new log file, so that the files holding the frozen segment's records can be
        // dropped once it is published (its records end at `last`).
        let r = (|| -> Result<()> {
            ws.wal.sync()?;
            ws.wal = WalWriter::create(&wal_dir(&self.dir), last + 1)?;
            self.group()?.rotated(&ws.wal);
            Ok(())
        })();
        if let Err(e) = r {
            ws.poisoned = Some(e.to_string());
            return Err(e);
        }
        let (dir, config, kernels) = (self.dir.clone(), self.config.clone(), self.kernels);
        let handle = std::thread::Builder::new()
            .name("trovedb-seal".into())
            .spawn(move || {
                #[cfg(feature = "testing")]
                crate::testing::seal_gate(&dir);
                let never = AtomicBool::new(false);
                build_sealed(&dir, &config, kernels, &seg, base.as_deref(), id, &never)
            })
            .map_err(|e| Error::io(&self.dir, e))?;
        ws.sealing = Some(handle);
        Ok(())
    }

    /// Whether the next appendable segment may grow on `seg` (being frozen): the collection
    /// builds HNSW graphs, merges in the background with the built-in policy (a grown
    /// segment is a merge of the sealed one and the new rows), and the grown segment stays
    /// within the quiet merges' maximum segment size
    /// ([`crate::CompactionPolicy::resolved_max_segment_rows`]). With feature `bench`,
    /// `TROVEDB_GROW_SEGMENTS=0` turns it off, for measurements.
    pub(super) fn grows_on(&self, seg: &AppendableSegment) -> bool {
        #[cfg(feature = "bench")]
        {
            static V: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
            if crate::index::bench_knob(&V, "TROVEDB_GROW_SEGMENTS", 1) == 0 {
                return false;
            }
        }
        self.options.compaction.background
            && self.options.merge_policy.is_none()
            && seg.graph.is_some()
            && seg.rows().saturating_add(self.options.seal_threshold_rows)
                <= self.max_segment_rows()
    }

    /// The quiet merges' maximum segment size, resolved for this collection
    /// ([`crate::CompactionPolicy::resolved_max_segment_rows`]).
    pub(super) fn max_segment_rows(&self) -> usize {
        let seal = self.options.seal_threshold_rows;
        self.options
            .compaction
            .resolved_max_segment_rows(self.config.dim, seal)
    }

    /// Live rows at which the appendable segment is frozen, when it grows on a segment of
    /// `base` rows (0: it grows on none): as many rows as the base holds, at least the seal
    /// threshold and at most twice it, or the threshold when that would take the segment past
    /// the quiet merges' maximum segment size ([`Self::grows_on`] checks the threshold fits).
    /// Each seal of a growing segment writes the base's rows again, so freezing every
    /// `seal_threshold_rows` rows wrote rows²/(2·threshold) rows over a load (text-minilm-dev,
    /// threshold 2,000: 110,000 rows for 20,000); growing in proportion to the base writes
    /// 62,000 (converged load 2.08 s against 2.145 s, CPU 3.67 s against 3.80 s, medians of
    /// ten alternated runs), while an unsealed segment, which recovery replays from the log,
    /// stays within twice the threshold.
    pub(super) fn freeze_rows(&self, base: usize) -> usize {
        let seal = self.options.seal_threshold_rows;
        let step = base.clamp(seal, seal.saturating_mul(2));
        if base.saturating_add(step) <= self.max_segment_rows() {
            step
        } else {
            seal
        }
    }

    /// Publish the background-built segment (waiting for the build if it is still running):
    /// manifest with the new segment and every pending deletion file, checkpoint at the
    /// frozen segment's last record, then the in-memory switch and log clean-up.
    pub(super) fn publish_locked(&self, ws: &mut WriteState) -> Result<()> {
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
    pub(super) fn log_before_publish(ws: &WriteState) -> Result<()> {
        ws.wal.sync()
    }

    pub(super) fn publish_build(&self, ws: &mut WriteState, b: SealBuild) -> Result<()> {
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
    pub(super) fn publish(&self, ws: &mut WriteState, edit: Edit<'_>) -> Result<()> {
        Self::log_before_publish(ws)?;
        let now = ws.next_lsn - 1;
        // Readers may apply everything up to `now` before they see the new manifest.
        self.group()?.synced_through(now);
        let mut m = ws.manifest.clone();
        let mut garbage = Vec::new();
        let replaces = edit.built.as_ref().and_then(|b| b.replaces);
        let mut seg = edit
            .built
            .map(|b| SealedSegment::fresh(b.id, b.reader, b.index, indexed_fields(&self.config)));
        let (checkpoint, keep) = {
            let st = self.state.read();
            if let Source::Merge(inputs) = edit.source {
                // Rows deleted since the merge started: the merged rows are the inputs' rows
                // that were live then, in input order.
                mark_deleted_since(&st, inputs, seg.as_mut())?;
                drop_segments(&mut m, &mut garbage, |id| {
                    inputs.iter().any(|(input, _)| *input == id)
                });
            }
            if let (Some(b), Some(seg)) = (replaces, seg.as_mut()) {
                // A chain seal holds the base's rows first, in order, and replaces it: the
                // base's deletions so far carry over (all of its rows if it is gone: it is
                // dropped only once every row is deleted, and never merged while grown on).
                let deleted = Arc::make_mut(&mut seg.deleted);
                match st.sealed.iter().find(|s| s.id == b.id) {
                    Some(base) => base.deleted.iter_ones().for_each(|r| {
                        deleted.insert(r);
                    }),
                    None => (0..b.rows).for_each(|r| {
                        deleted.insert(r);
                    }),
                }
                drop_segments(&mut m, &mut garbage, |id| id == b.id);
            }
            if let Some(seg) = &seg {
                // A merged or chain-sealed segment can have deleted rows when it is published
                // (written with it); a sealed one gets those of the frozen segment in memory
                // (they are in the log after the checkpoint) and writes them at the next
                // checkpoint.
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
        self.group()?.manifest_replaced();
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
                        map_frozen_deletions(&f, seg, replaces.is_some());
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
    pub(super) fn persist_deletions(
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

    pub(super) fn seal_locked(&self, ws: &mut WriteState) -> Result<()> {
        let r = self.seal_inner(ws);
        // Stopped before anything was written (`Interrupted`): nothing to poison.
        if let Err(e) = &r {
            if !matches!(e, Error::Interrupted { .. }) {
                ws.poisoned = Some(e.to_string());
            }
        }
        r
    }

    /// Seal: write the segment and deletion files, publish the manifest, then rotate the
    /// log and remove what the new manifest no longer needs (FORMAT.md §Commit).
    ///
    /// The segment is built and written while searches go on: `ws` holds every writer off,
    /// so the appendable segment (shared through its `Arc`) and the deletion bitsets cannot
    /// change; the state's write lock is taken only to switch to the new segment.
    pub(super) fn seal_inner(&self, ws: &mut WriteState) -> Result<()> {
        // The appendable segment is sealed as it is: nothing grows on it.
        ws.growth = None;
        self.publish_locked(ws)?;
        let last = ws.next_lsn - 1;
        let (a, dirty) = {
            let mut st = self.state.write();
            // An appendable segment that grows on a sealed one without a row of its own yet
            // has nothing to seal: it starts afresh (the flush ends the growth).
            if st.appendable.base.is_some() && st.appendable.own_rows() == 0 {
                st.reset_appendable();
            }
            (
                Arc::clone(&st.appendable),
                st.sealed.iter().any(|s| s.dirty),
            )
        };
        if a.own_rows() == 0 && !dirty && last == ws.manifest.checkpoint_lsn {
            return Ok(());
        }
        let built = if a.live_count() > 0 {
            let id = ws.manifest.next_segment_id;
            ws.manifest.next_segment_id += 1;
            let never = Arc::new(AtomicBool::new(false));
            let stop = interrupt::current().unwrap_or(never);
            let base = {
                let st = self.state.read();
                chain_base(&a, st.sealed.iter().map(|s| (s.id, &s.reader)))
            };
            Some(build_sealed(
                &self.dir,
                &self.config,
                self.kernels,
                &a,
                base.as_deref(),
                id,
                &stop,
            )?)
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

    pub(super) fn rotate_wal(&self, ws: &mut WriteState, checkpoint: u64) -> Result<()> {
        ws.wal.sync()?;
        if ws.wal.first_lsn() <= checkpoint {
            ws.wal = WalWriter::create(&wal_dir(&self.dir), checkpoint + 1)?;
        }
        self.group()?.rotated(&ws.wal);
        for (first, path) in list_files(&wal_dir(&self.dir))? {
            if first <= checkpoint {
                fsutil::remove_if_exists(&path)?;
            }
        }
        Ok(())
    }
}

/// Remove the segments for which `gone` holds from manifest `m`; their deletion files go to
/// `garbage` (their segment files are removed once their readers are retired and unused).
fn drop_segments(m: &mut Manifest, garbage: &mut Vec<String>, gone: impl Fn(u64) -> bool) {
    m.segments.retain(|s| {
        let drop = gone(s.id);
        if drop {
            garbage.extend(s.deletes.as_ref().map(|d| d.file.clone()));
        }
        !drop
    });
}

#[cfg(test)]
mod tests {
    use super::super::build::write_sealed;
    use super::*;
    use crate::distance::Kernels;
    use crate::filter::value::Payload;
    use crate::index::registry::BuiltIndex;
    use crate::types::{CollectionConfig, Metric};

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
            None,
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
