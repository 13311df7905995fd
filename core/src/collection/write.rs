//! The write path: validation, the log record, applying it, group commit, and the
//! housekeeping every writer does (publishing finished background work, starting merges).

use std::sync::Arc;

use super::appendable::{AppendableSegment, Growth};
use super::collection::{Collection, Point, WriteState, RESERVED_ID};
use super::options::Durability;
use super::state::State;
use crate::distance::normalize;
use crate::error::{Error, Result};
use crate::filter::expr::Filter;
use crate::filter::value::{validate_payload, Payload};
use crate::interrupt;
use crate::storage::wal::record::{encode_delete, encode_upsert, KIND_DELETE, KIND_UPSERT};
use crate::storage::wal::MAX_RECORD_BYTES;
use crate::types::{IdType, Metric};

/// A point as errors name it: by its integer id or its string id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PointRef<'a> {
    Int(u64),
    Str(&'a str),
}

impl std::fmt::Display for PointRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointRef::Int(id) => write!(f, "{id}"),
            PointRef::Str(k) => write!(f, "{k:?}"),
        }
    }
}

/// Refuse a batch of string ids of which one would take the place of a different stored
/// key (their 64-bit ids are equal). Repeats of one key within the batch were checked by
/// the caller.
pub(super) fn check_collisions(st: &State, ids: &[u64], keys: &[&str]) -> Result<()> {
    for (id, key) in ids.iter().zip(keys) {
        if let Some(stored) = st.key_of(*id)? {
            if stored != *key {
                return Err(Error::IdCollision {
                    key: (*key).to_owned(),
                    stored,
                });
            }
        }
    }
    Ok(())
}

impl Collection {
    /// Validate one vector; returns it normalised for cosine collections.
    pub(super) fn prepare_vector<'a>(
        &self,
        id: PointRef<'_>,
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
            return Err(match id {
                PointRef::Int(id) => Error::NonFiniteValue { id, index },
                PointRef::Str(_) => Error::invalid(
                    "vectors",
                    format!("vector for id {id} has a non-finite value at component {index}"),
                ),
            });
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
    ///
    /// A collection keyed by strings takes [`Collection::upsert_str`] instead.
    pub fn upsert(&self, ids: &[u64], vectors: &[f32], payloads: &[Payload]) -> Result<()> {
        self.expect_id_type(IdType::Int, "upsert")?;
        self.upsert_impl(ids, vectors, payloads, None)
    }

    /// Refuse a call meant for the other kind of id.
    pub(super) fn expect_id_type(&self, want: IdType, call: &str) -> Result<()> {
        if self.config.id_type == want {
            return Ok(());
        }
        Err(Error::invalid(
            "ids",
            match want {
                IdType::Int => format!(
                    "collection `{}` is keyed by strings (id_type \"str\"): use the string-id \
                     form of {call}",
                    self.name
                ),
                IdType::Str => format!(
                    "collection `{}` is keyed by integers: {call} takes string ids only in a \
                     collection created with id_type \"str\"",
                    self.name
                ),
            },
        ))
    }

    /// The upsert of both id kinds; `keys` (string-id collections) gives each point's key,
    /// already in its payload.
    pub(super) fn upsert_impl(
        &self,
        ids: &[u64],
        vectors: &[f32],
        payloads: &[Payload],
        keys: Option<&[&str]>,
    ) -> Result<()> {
        self.check_open()?;
        self.check_writable("upsert")?;
        interrupt::check("upsert")?;
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
        let point = |i: usize| match keys {
            Some(k) => PointRef::Str(k[i]),
            None => PointRef::Int(ids[i]),
        };
        if keys.is_none() {
            payloads.iter().try_for_each(validate_payload)?;
        }
        if let Some(t) = &self.text {
            for (i, p) in payloads.iter().enumerate() {
                t.validate(point(i), p)?;
            }
        }
        let mut body = Vec::with_capacity(8 + n * (12 + 4 * dim));
        let stored: std::borrow::Cow<'_, [f32]> = if self.config.metric == Metric::Cosine {
            let mut out = Vec::with_capacity(vectors.len());
            let mut buf = Vec::with_capacity(dim);
            for (i, v) in vectors.chunks_exact(dim).enumerate() {
                if i % 4096 == 4095 {
                    interrupt::check("upsert")?;
                }
                out.extend_from_slice(self.prepare_vector(point(i), v, &mut buf)?);
            }
            out.into()
        } else {
            let mut buf = Vec::new();
            for (i, v) in vectors.chunks_exact(dim).enumerate() {
                self.prepare_vector(point(i), v, &mut buf)?;
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
        let ws = self.writer("upsert")?;
        if let Some(keys) = keys {
            // Under the writer lock, so no other write can take an id between the check
            // and the append.
            check_collisions(&self.state.read(), ids, keys)?;
        }
        self.log_and_apply_locked(ws, KIND_UPSERT, &body, |st| {
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
    ///
    /// In a string-id collection these are the 64-bit ids ([`Hit::id`](super::Hit));
    /// [`Collection::delete_str`] takes the strings.
    pub fn delete(&self, ids: &[u64]) -> Result<usize> {
        self.check_open()?;
        let ws = self.writer("delete")?;
        let present: Vec<u64> = {
            let st = self.state.read();
            let mut seen = std::collections::HashSet::new();
            ids.iter()
                .copied()
                .filter(|id| seen.insert(*id) && st.locate(*id).is_some())
                .collect()
        };
        self.delete_locked(ws, &present)
    }

    /// Delete `present` (distinct ids with a live row), holding the writer lock `ws`.
    pub(super) fn delete_locked(
        &self,
        mut ws: parking_lot::MutexGuard<'_, WriteState>,
        present: &[u64],
    ) -> Result<usize> {
        if present.is_empty() {
            return Ok(0);
        }
        let mut body = Vec::with_capacity(4 + 8 * present.len());
        encode_delete(&mut body, present);
        let lsn = self.append_locked(&mut ws, KIND_DELETE, &body)?;
        {
            let mut st = self.state.write();
            for id in present {
                st.remove(*id);
            }
        }
        self.housekeeping_locked(&mut ws)?;
        drop(ws);
        self.wait_durable(lsn)?;
        Ok(present.len())
    }

    /// Delete every live point whose payload matches `filter`; returns how many.
    ///
    /// ```
    /// # use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Database::open(dir.path(), DbOptions::default())?;
    /// # let c = db.create_collection("c", &CollectionConfig::new(2, Metric::L2))?;
    /// use trovedb::{Filter, Payload, Value};
    /// let year = |y: i64| Payload::from([("year".to_string(), Value::Int(y))]);
    /// c.upsert(&[1, 2, 3], &[0.0; 6], &[year(2019), year(2023), year(2024)])?;
    /// let old = Filter::from_json_str(r#"{"year": {"$lt": 2020}}"#)?;
    /// assert_eq!(c.delete_where(&old)?, 1);
    /// assert_eq!(c.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_where(&self, filter: &Filter) -> Result<usize> {
        self.check_open()?;
        self.check_writable("delete_where")?;
        let filter = &*self.bind_filter(filter)?;
        // Ids are collected first; a concurrent upsert of a matching id after this point
        // is not deleted (it was not visible when the call started).
        let ids: Vec<u64> = {
            let st = self.state.read();
            let locs = st.matching(filter, usize::MAX)?;
            locs.into_iter().map(|l| st.id_at(l)).collect()
        };
        self.delete(&ids)
    }

    pub(super) fn append_locked(&self, ws: &mut WriteState, kind: u8, body: &[u8]) -> Result<u64> {
        self.check_open()?;
        if let Some(first) = ws.poisoned.clone().or_else(|| self.group().ok()?.failure()) {
            return Err(Error::Poisoned { first });
        }
        let lsn = ws.next_lsn;
        if let Err(e) = ws.wal.append(lsn, kind, body) {
            ws.poisoned = Some(e.to_string());
            return Err(e);
        }
        ws.next_lsn += 1;
        self.group()?.note_written(lsn);
        self.note_write_locked(ws);
        Ok(lsn)
    }

    /// Log a record, apply it (under the state's write lock), then link the appended rows
    /// into the appendable graph without holding the state's lock, so searches run during
    /// the linking. The caller holds the writer lock `ws` (released here).
    ///
    /// While the build pool links, this thread does the writer's own serial work that does
    /// not touch the graph, which would otherwise leave the pool idle: it publishes a
    /// background seal that has finished, and, when the rows fill the appendable segment, it
    /// starts the copy its successor grows on ([`Growth`]; the links are copied once linking
    /// is done, in [`Collection::freeze_locked`]).
    pub(super) fn log_and_apply_locked(
        &self,
        mut ws: parking_lot::MutexGuard<'_, WriteState>,
        kind: u8,
        body: &[u8],
        apply: impl FnOnce(&mut State) -> std::ops::Range<usize>,
    ) -> Result<()> {
        // The last point to stop: once the record is in the log, the upsert completes.
        interrupt::check("upsert")?;
        let lsn = self.append_locked(&mut ws, kind, body)?;
        let (app, nodes) = {
            let mut st = self.state.write();
            let nodes = apply(&mut st);
            (Arc::clone(&st.appendable), nodes)
        };
        // Writers are held by `ws`, so nothing else changes the appendable segment, and no
        // publication replaces it.
        let full = app.live_count() >= self.freeze_rows(app.base_rows());
        let (kernels, metric) = (self.kernels, self.config.metric);
        let link = || app.link(nodes.clone(), kernels, metric);
        let published = if nodes.is_empty() {
            Ok(())
        } else {
            crate::background::build_alongside(link, || {
                let published = self.publish_finished_seal_locked(&mut ws);
                self.copy_for_growth_locked(&mut ws, &app, nodes.len());
                published
            })
        };
        // The frozen segment and the state hold the only other references.
        drop(app);
        published?;
        // The write ends now, not when its record was logged: linking a large batch into the
        // graph can outlast `seal_idle_after`, and the idle seal must not take that time for
        // a quiet period (it sealed every 100k-row batch of a bulk load into 100k segments).
        self.note_write_locked(&mut ws);
        if full {
            self.freeze_locked(&mut ws, true)?;
        }
        self.housekeeping_locked(&mut ws)?;
        drop(ws);
        self.wait_durable(lsn)
    }

    /// Copy a share of the appendable segment `app` for the segment that will grow on it
    /// (see [`Growth`]), `batch` rows having just been added: the rows not copied yet, but
    /// at most the batch's and twice the base's share of it (so the base's rows are copied
    /// within the first half of the segment's filling). Starts the copy when `app` may be
    /// grown on and no frozen segment is waiting for its seal (so the rows are in memory at
    /// most twice, as after a freeze: the frozen segment and its successor); drops it when
    /// `app` can no longer be grown on.
    fn copy_for_growth_locked(&self, ws: &mut WriteState, app: &AppendableSegment, batch: usize) {
        let seal = self.freeze_rows(app.base_rows());
        if !(app.seals_whole() && self.grows_on(app)) {
            ws.growth = None;
            return;
        }
        let growth = match ws.growth.take() {
            Some(g) if g.of(app) => Some(g),
            _ if ws.sealing.is_none() => {
                let left = seal.saturating_sub(app.live_count()).saturating_add(batch);
                let more = self.freeze_rows(app.rows().saturating_add(left));
                Some(Box::new(Growth::new(app, left, more)))
            }
            _ => None,
        };
        ws.growth = growth.map(|mut g| {
            let base = app.base_rows().saturating_mul(2).saturating_mul(batch);
            let share = batch.saturating_add(base / seal.max(1));
            g.copy_some(app, share);
            g
        });
    }

    /// Publish background work that has finished and start a merge if the policy calls for
    /// one. Never waits.
    pub(super) fn housekeeping_locked(&self, ws: &mut WriteState) -> Result<()> {
        if ws.poisoned.is_some() {
            return Ok(());
        }
        self.publish_finished_locked(ws)?;
        self.maybe_start_merge_locked(ws, false).map(drop)
    }

    /// Publish the background seal and the background merge if they have finished. Never
    /// waits.
    pub(super) fn publish_finished_locked(&self, ws: &mut WriteState) -> Result<()> {
        self.publish_finished_seal_locked(ws)?;
        self.publish_merge_locked(ws, false)
    }

    /// Publish the background seal if it has finished. Never waits.
    pub(super) fn publish_finished_seal_locked(&self, ws: &mut WriteState) -> Result<()> {
        if ws
            .sealing
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            self.publish_locked(ws)?;
        }
        Ok(())
    }

    pub(super) fn wait_durable(&self, lsn: u64) -> Result<()> {
        match self.options.durability {
            Durability::Always => self.group()?.wait_durable(lsn),
            Durability::Batch(_) | Durability::Off => Ok(()),
        }
    }

    /// Seal the appendable segment now (even if below the threshold) and checkpoint. When it
    /// grows on the last sealed segment (an HNSW collection that filled a segment since the
    /// last flush, see [`crate::CompactionPolicy`]), its seal replaces that segment, and the
    /// next appendable segment starts afresh.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        let mut ws = self.writer("flush")?;
        if let Some(first) = ws.poisoned.clone() {
            return Err(Error::Poisoned { first });
        }
        self.seal_locked(&mut ws)
    }
}
