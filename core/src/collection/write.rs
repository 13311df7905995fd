//! The write path: validation, the log record, applying it, group commit, and the
//! housekeeping every writer does (publishing finished background work, starting merges).

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
use crate::types::Metric;

impl Collection {
    /// Validate one vector; returns it normalised for cosine collections.
    pub(super) fn prepare_vector<'a>(
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
        payloads.iter().try_for_each(validate_payload)?;
        if let Some(t) = &self.text {
            for (id, p) in ids.iter().zip(payloads) {
                t.validate(*id, p)?;
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
        let mut ws = self.writer("delete")?;
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

    /// Delete every live point whose payload matches `filter`; returns how many.
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
    /// into the appendable graph under a shared lock, so searches run during the linking.
    pub(super) fn log_and_apply(
        &self,
        kind: u8,
        body: &[u8],
        apply: impl FnOnce(&mut State) -> std::ops::Range<usize>,
    ) -> Result<()> {
        let mut ws = self.writer("upsert")?;
        // The last point to stop: once the record is in the log, the upsert completes.
        interrupt::check("upsert")?;
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
        if ws
            .sealing
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            self.publish_locked(ws)?;
        }
        self.publish_merge_locked(ws, false)
    }

    pub(super) fn wait_durable(&self, lsn: u64) -> Result<()> {
        match self.options.durability {
            Durability::Always => self.group()?.wait_durable(lsn),
            Durability::Batch(_) | Durability::Off => Ok(()),
        }
    }

    /// Seal the appendable segment now (even if below the threshold) and checkpoint.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        let mut ws = self.writer("flush")?;
        if let Some(first) = ws.poisoned.clone() {
            return Err(Error::Poisoned { first });
        }
        self.seal_locked(&mut ws)
    }
}
