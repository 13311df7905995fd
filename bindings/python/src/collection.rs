//! `trovedb.Collection`.

use std::sync::Arc;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use trovedb::{Collection, Filter, Fusion, Hit, Payload, SearchParams};

use crate::convert::{f32_array, filter_from_py, id_array, payload_from_py, payload_to_py};
use crate::error::IntoPy;

/// Id used to pad results when fewer than k points exist.
const PAD_ID: u64 = trovedb::RESERVED_ID;
/// Results are returned as dense `(nq, k)` arrays; this bounds their allocation.
const MAX_K: usize = 1 << 24;
/// Bound on `nq * k` (the dense result arrays are allocated up front).
const MAX_RESULT_CELLS: usize = 1 << 28;

/// A collection of points. Obtain one from `Database.create_collection` or
/// `Database.get_collection`.
/// Upserts of at least this many rows, and batch searches of at least this many queries,
/// can be stopped with Ctrl-C (smaller calls are quick and skip the helper thread).
const INTERRUPTIBLE_ROWS: usize = 1024;
const INTERRUPTIBLE_QUERIES: usize = 64;

#[pyclass(name = "Collection", module = "trovedb")]
pub(crate) struct PyCollection {
    c: Arc<Collection>,
}

impl PyCollection {
    pub(crate) fn new(c: Arc<Collection>) -> Self {
        PyCollection { c }
    }
}

fn parse_search_params(
    params: Option<&Bound<'_, PyDict>>,
    include_payload: bool,
) -> PyResult<SearchParams> {
    let mut out = SearchParams::default().with_payload(include_payload);
    if let Some(p) = params {
        for (k, v) in p.iter() {
            let key: String = k.extract()?;
            let int = || -> PyResult<usize> {
                v.extract()
                    .map_err(|_| PyValueError::new_err(format!("{key} must be a positive integer")))
            };
            match key.as_str() {
                "ef" => out = out.with_ef(int()?),
                "nprobe" => out = out.with_nprobe(int()?),
                "refine" => out = out.with_refine(int()?),
                "probes" => out = out.with_probes(int()?),
                "parallel_segments" => {
                    out = out.with_parallel_segments(v.extract().map_err(|_| {
                        PyValueError::new_err("parallel_segments must be True or False")
                    })?);
                }
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown search parameter `{other}` (known: ef, nprobe, refine, probes, \
                         parallel_segments)"
                    )))
                }
            }
        }
    }
    Ok(out)
}

fn check_cells(nq: usize, k: usize) -> PyResult<()> {
    if nq.saturating_mul(k) > MAX_RESULT_CELLS {
        return Err(PyValueError::new_err(format!(
            "nq * k = {nq} * {k} exceeds {MAX_RESULT_CELLS} result cells; search in smaller batches"
        )));
    }
    Ok(())
}

#[pymethods]
impl PyCollection {
    /// Insert or replace points. `ids`: ints; `vectors`: `[n, dim]` float32 (float64 is
    /// converted); `payloads`: a list of dicts (or None). Searchable on return; durable on
    /// return under durability "always".
    #[pyo3(signature = (ids, vectors, payloads = None))]
    fn upsert(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
        payloads: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let ids = id_array(ids)?;
        let vecs = f32_array(vectors)?;
        let n = ids.len();
        let shape = vecs.shape().to_vec();
        let ok_shape = match shape.as_slice() {
            [rows, cols] => *rows == n && *cols == self.c.dim(),
            [cols] => (n == 1 && *cols == self.c.dim()) || (n == 0 && *cols == 0),
            _ => false,
        };
        if !ok_shape {
            return Err(PyValueError::new_err(format!(
                "vectors must have shape ({n}, {}) for {n} ids; got {shape:?}",
                self.c.dim()
            )));
        }
        let payloads: Vec<Payload> = match payloads {
            None => Vec::new(),
            Some(p) if p.is_none() => Vec::new(),
            Some(p) => {
                if p.is_instance_of::<PyDict>() {
                    return Err(PyTypeError::new_err(
                        "payloads must be a list of dicts, one per id",
                    ));
                }
                p.try_iter()?
                    .map(|item| payload_from_py(&item?))
                    .collect::<PyResult<_>>()?
            }
        };
        let ids_ro = ids.readonly();
        let vecs_ro = vecs.readonly();
        let ids_s = ids_ro.as_slice()?;
        let vecs_s = vecs_ro.as_slice()?;
        let c = &self.c;
        if ids_s.len() >= INTERRUPTIBLE_ROWS {
            return crate::interrupt::run(py, "upsert", || c.upsert(ids_s, vecs_s, &payloads));
        }
        py.detach(|| c.upsert(ids_s, vecs_s, &payloads)).py_err()
    }

    /// Delete points by id, or every point matching `filter`; returns how many existed.
    #[pyo3(signature = (ids = None, *, filter = None))]
    fn delete(
        &self,
        py: Python<'_>,
        ids: Option<&Bound<'_, PyAny>>,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let c = &self.c;
        match (ids.filter(|i| !i.is_none()), filter_from_py(filter)?) {
            (Some(ids), None) => {
                let ids = id_array(ids)?;
                let ro = ids.readonly();
                let s = ro.as_slice()?;
                py.detach(|| c.delete(s)).py_err()
            }
            (None, Some(f)) => py.detach(|| c.delete_where(&f)).py_err(),
            _ => Err(PyValueError::new_err("give either ids or filter")),
        }
    }

    /// Number of points, or of points matching `filter`.
    #[pyo3(signature = (filter = None))]
    fn count(&self, py: Python<'_>, filter: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let c = &self.c;
        match filter_from_py(filter)? {
            None => py.detach(|| c.count(&Filter::And(Vec::new()))).py_err(),
            Some(f) => py.detach(|| c.count(&f)).py_err(),
        }
    }

    /// Fetch points. For one int: a dict `{"id", "vector", "payload"}` or None. For a
    /// sequence: a list with a dict or None per id, in order. With `filter` (and no ids):
    /// a list of up to `limit` matching points (a metadata-only query).
    #[pyo3(signature = (ids = None, *, filter = None, limit = 100))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        ids: Option<&Bound<'py, PyAny>>,
        filter: Option<&Bound<'py, PyAny>>,
        limit: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = usize::try_from(limit)
            .map_err(|_| PyValueError::new_err(format!("limit must be >= 0, got {limit}")))?;
        let c = Arc::clone(&self.c);
        let (single, points) = match (ids.filter(|i| !i.is_none()), filter_from_py(filter)?) {
            (Some(ids), None) => {
                let single = ids.extract::<u64>().is_ok() && !ids.hasattr("__len__")?;
                let arr = id_array(ids)?;
                let ro = arr.readonly();
                let s = ro.as_slice()?.to_vec();
                let points = py
                    .detach(move || {
                        s.iter()
                            .map(|id| c.get(*id))
                            .collect::<trovedb::Result<Vec<_>>>()
                    })
                    .py_err()?;
                (single, points)
            }
            (None, Some(f)) => {
                let points = py.detach(move || c.get_where(&f, limit)).py_err()?;
                (false, points.into_iter().map(Some).collect())
            }
            _ => return Err(PyValueError::new_err("give either ids or filter")),
        };
        let mut out = Vec::with_capacity(points.len());
        for p in points {
            out.push(match p {
                None => py.None().into_bound(py),
                Some(p) => {
                    let d = PyDict::new(py);
                    d.set_item("id", p.id)?;
                    d.set_item("vector", p.vector.into_pyarray(py))?;
                    d.set_item("payload", payload_to_py(py, &p.payload)?)?;
                    d.into_any()
                }
            });
        }
        if single {
            return Ok(out.pop().unwrap_or_else(|| py.None().into_bound(py)));
        }
        Ok(PyList::new(py, out)?.into_any())
    }

    /// Nearest neighbours of `query` (`[dim]` or `[nq, dim]`), keyword search for `text`
    /// (a string, or a list of strings for a batch), or both (hybrid).
    ///
    /// Returns `(ids, values)` as uint64 and float32 arrays of shape `(k,)` or `(nq, k)`,
    /// best first; with `include_payload=True` also a list of payload dicts (a list per
    /// query). `values` are distances (smaller is nearer) for a vector query, BM25 scores
    /// for a keyword query, and fused scores for a hybrid query (higher is better for
    /// both). Rows with fewer than k hits are padded with id 2**64-1, distance +inf or
    /// score -inf, payload None.
    #[pyo3(signature = (query = None, k = 10, filter = None, include_payload = false, text = None,
        fusion = "weighted", alpha = 0.5, rrf_k = 60.0, hybrid_candidates = None, **search_params))]
    #[allow(clippy::too_many_arguments, reason = "mirrors the Python signature")]
    fn search<'py>(
        &self,
        py: Python<'py>,
        query: Option<&Bound<'py, PyAny>>,
        k: i64,
        filter: Option<&Bound<'py, PyAny>>,
        include_payload: bool,
        text: Option<&Bound<'py, PyAny>>,
        fusion: &str,
        alpha: f32,
        rrf_k: f32,
        hybrid_candidates: Option<i64>,
        search_params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if k < 1 || k as u64 > MAX_K as u64 {
            return Err(PyValueError::new_err(format!(
                "k must be in 1..={MAX_K}, got {k}"
            )));
        }
        let k = k as usize;
        let mut params = parse_search_params(search_params, include_payload)?;
        if let Some(f) = filter_from_py(filter)? {
            params = params.with_filter(f);
        }
        params = params.with_fusion(match fusion {
            "rrf" => Fusion::Rrf { k: rrf_k },
            "weighted" => Fusion::Weighted { alpha },
            other => {
                return Err(PyValueError::new_err(format!(
                    "fusion must be \"rrf\" or \"weighted\", got {other:?}"
                )))
            }
        });
        if let Some(n) = hybrid_candidates {
            if n < 1 {
                return Err(PyValueError::new_err(format!(
                    "hybrid_candidates must be at least 1, got {n}"
                )));
            }
            params = params.with_hybrid_candidates(n as usize);
        }
        let texts: Option<(Vec<String>, bool)> = match text {
            None => None,
            Some(t) if t.is_instance_of::<pyo3::types::PyString>() => {
                Some((vec![t.extract()?], true))
            }
            Some(t) => Some((
                t.extract().map_err(|_| {
                    PyTypeError::new_err("text must be a string or a list of strings")
                })?,
                false,
            )),
        };
        let dim = self.c.dim();
        let q = query.map(f32_array).transpose()?;
        let shape = |q: &numpy::PyReadonlyArrayDyn<'_, f32>| -> PyResult<(usize, bool)> {
            match q.shape() {
                [d] if *d == dim => Ok((1, true)),
                [n, d] if *d == dim => Ok((*n, false)),
                s => Err(PyValueError::new_err(format!(
                    "query must have shape ({dim},) or (nq, {dim}); got {s:?}"
                ))),
            }
        };
        let c = &self.c;
        let (results, nq, one, scores) = match (q, texts) {
            (None, None) => {
                return Err(PyValueError::new_err(
                    "give a query vector, a text, or both (hybrid search)",
                ))
            }
            (Some(q), None) => {
                let (nq, one) = shape(&q.readonly())?;
                check_cells(nq, k)?;
                let ro = q.readonly();
                let qs = ro.as_slice()?;
                let results: Vec<Vec<Hit>> = if nq >= INTERRUPTIBLE_QUERIES {
                    crate::interrupt::run(py, "search", || c.search_batch(qs, k, &params))?
                } else {
                    py.detach(|| {
                        if nq == 1 {
                            c.search(qs, k, &params).map(|h| vec![h])
                        } else {
                            c.search_batch(qs, k, &params)
                        }
                    })
                    .py_err()?
                };
                (results, nq, one, false)
            }
            (q, Some((texts, single))) => {
                let nq = texts.len();
                check_cells(nq, k)?;
                let ro = q.as_ref().map(PyArrayMethods::readonly);
                let qs = match &ro {
                    Some(ro) => {
                        let (qn, qone) = shape(ro)?;
                        if qn != nq || qone != single {
                            return Err(PyValueError::new_err(format!(
                                "a hybrid search takes one text per query vector: {} and {}",
                                if qone {
                                    "one vector".to_owned()
                                } else {
                                    format!("{qn} vectors")
                                },
                                if single {
                                    "one text".to_owned()
                                } else {
                                    format!("{nq} texts")
                                },
                            )));
                        }
                        Some(ro.as_slice()?)
                    }
                    None => None,
                };
                let run = || -> trovedb::Result<Vec<Vec<Hit>>> {
                    texts
                        .iter()
                        .enumerate()
                        .map(|(i, t)| match qs {
                            Some(qs) => c.search_hybrid(&qs[i * dim..(i + 1) * dim], t, k, &params),
                            None => c.search_text(t, k, &params),
                        })
                        .collect()
                };
                let results = if nq >= INTERRUPTIBLE_QUERIES {
                    crate::interrupt::run(py, "search", run)?
                } else {
                    py.detach(run).py_err()?
                };
                (results, nq, single, true)
            }
        };
        let width = k;
        let pad = if scores {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        };
        let mut ids = Array2::<u64>::from_elem((nq, width), PAD_ID);
        let mut dists = Array2::<f32>::from_elem((nq, width), pad);
        let payloads = PyList::empty(py);
        for (i, hits) in results.iter().enumerate() {
            let row = PyList::empty(py);
            for (j, h) in hits.iter().enumerate() {
                ids[[i, j]] = h.id;
                dists[[i, j]] = if scores { -h.distance } else { h.distance };
                if include_payload {
                    match &h.payload {
                        Some(p) => row.append(payload_to_py(py, p)?)?,
                        None => row.append(py.None())?,
                    }
                }
            }
            for _ in hits.len()..width {
                if include_payload {
                    row.append(py.None())?;
                }
            }
            payloads.append(row)?;
        }
        let (ids, dists) = (ids.into_pyarray(py), dists.into_pyarray(py));
        let (ids, dists, payloads) = if one {
            (
                ids.call_method1("reshape", (width,))?,
                dists.call_method1("reshape", (width,))?,
                payloads.get_item(0)?,
            )
        } else {
            (ids.into_any(), dists.into_any(), payloads.into_any())
        };
        let out = if include_payload {
            (ids, dists, payloads).into_pyobject(py)?.into_any()
        } else {
            (ids, dists).into_pyobject(py)?.into_any()
        };
        Ok(out)
    }

    /// Seal the in-memory segment to disk now and checkpoint the log.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let c = &self.c;
        crate::interrupt::run(py, "flush", || c.flush())
    }

    /// Merge all segments into one without the deleted rows (index rebuilt), publish it
    /// atomically and remove the old files. Returns the number of rows dropped.
    fn compact(&self, py: Python<'_>) -> PyResult<usize> {
        let c = &self.c;
        crate::interrupt::run(py, "compact", || c.compact())
    }

    /// Wait until no background seal or merge is running (publishing their results and
    /// any merge the compaction policy starts meanwhile).
    fn wait_idle(&self, py: Python<'_>) -> PyResult<()> {
        let c = &self.c;
        py.detach(|| c.wait_idle()).py_err()
    }

    /// Check every checksum of every sealed segment.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let c = &self.c;
        py.detach(|| c.verify()).py_err()
    }

    /// Sizes and layout: rows, segments, deleted rows, bytes on disk, index per segment,
    /// and background work (`background`: sealing, merging segment ids, merges_done,
    /// last_error). Work still running is reported, not waited for.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.c;
        let s = py.detach(|| c.stats()).py_err()?;
        let d = PyDict::new(py);
        d.set_item("rows", s.rows)?;
        d.set_item("appendable_rows", s.appendable_rows)?;
        d.set_item("deleted", s.deleted)?;
        d.set_item("bytes_on_disk", s.bytes_on_disk)?;
        d.set_item("last_lsn", s.last_lsn)?;
        d.set_item("checkpoint_lsn", s.checkpoint_lsn)?;
        d.set_item("index", self.c.config().index.name())?;
        let segs = PyList::empty(py);
        for seg in &s.segments {
            let sd = PyDict::new(py);
            sd.set_item("id", seg.id)?;
            sd.set_item("rows", seg.rows)?;
            sd.set_item("deleted", seg.deleted)?;
            sd.set_item("bytes", seg.bytes)?;
            sd.set_item("index", &seg.index)?;
            sd.set_item("index_bytes", seg.index_bytes)?;
            sd.set_item("index_detail", &seg.index_detail)?;
            sd.set_item("text_bytes", seg.text_bytes)?;
            segs.append(sd)?;
        }
        d.set_item("segments", segs)?;
        d.set_item("frozen_rows", s.frozen_rows)?;
        let bg = PyDict::new(py);
        bg.set_item("sealing", s.background.sealing)?;
        bg.set_item("merging", s.background.merging.clone())?;
        bg.set_item("merges_done", s.background.merges_done)?;
        bg.set_item("converging", s.background.converging)?;
        bg.set_item("last_error", s.background.last_error.clone())?;
        d.set_item("background", bg)?;
        let torn = match &s.torn_tail {
            Some(t) => {
                let td = PyDict::new(py);
                td.set_item("file", t.file.display().to_string())?;
                td.set_item("offset", t.offset)?;
                td.set_item("bytes", t.bytes)?;
                td.set_item("reason", &t.reason)?;
                Some(td)
            }
            None => None,
        };
        d.set_item("torn_tail", torn)?;
        d.set_item("read_only", s.read_only)?;
        Ok(d)
    }

    /// Catch up with the writer now (a read-only handle does this before every read by
    /// itself). Does nothing on a writable handle.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let c = &self.c;
        py.detach(|| c.refresh()).py_err()
    }

    /// Whether the handle is read-only.
    #[getter]
    fn read_only(&self) -> bool {
        self.c.is_read_only()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let c = &self.c;
        py.detach(|| c.count(&Filter::And(Vec::new()))).py_err()
    }

    /// The collection's name.
    #[getter]
    fn name(&self) -> String {
        self.c.name().to_owned()
    }

    /// Vector dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.c.dim()
    }

    /// Metric name: "l2", "cosine" or "dot".
    #[getter]
    fn metric(&self) -> &'static str {
        self.c.metric().name()
    }

    fn __repr__(&self) -> String {
        // A closed or fork-inherited handle still has a repr, without a count.
        let len = self
            .c
            .count(&Filter::And(Vec::new()))
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        format!(
            "Collection(name={:?}, dim={}, metric={:?}, len={len})",
            self.c.name(),
            self.c.dim(),
            self.c.metric().name(),
        )
    }
}
