//! `trovedb.Collection`.

use std::sync::Arc;

use numpy::{IntoPyArray, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use trovedb::{
    Collection, Filter, Fusion, Hit, IdType, Payload, PayloadUpdate, Point, SearchParams,
};

use trovedb::text::StopWords;
use trovedb::TextStats;

use crate::convert::{
    f32_array, filter_from_py, id_to_py, ids_from_py, payload_from_py, payload_to_py, PyIds,
};
use crate::error::IntoPy;
use crate::results::{BatchResult, Kind, SearchResult};

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

    fn keyed(&self) -> bool {
        self.c.config().id_type == IdType::Str
    }
}

/// A list of payload dicts (or None) as payloads; None is no payloads.
fn payload_list(payloads: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Payload>> {
    match payloads {
        None => Ok(Vec::new()),
        Some(p) if p.is_none() => Ok(Vec::new()),
        Some(p) => {
            if p.is_instance_of::<PyDict>() {
                return Err(PyTypeError::new_err(
                    "payloads must be a list of dicts, one per id",
                ));
            }
            p.try_iter()?
                .map(|item| payload_from_py(&item?))
                .collect::<PyResult<_>>()
        }
    }
}

/// A stored point as the dict `get` and `scroll` return.
fn point_to_py(py: Python<'_>, p: Point, include_vector: bool) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", id_to_py(py, p.id, p.key.as_deref())?)?;
    d.set_item("payload", payload_to_py(py, &p.payload)?)?;
    if include_vector {
        d.set_item("vector", p.vector.into_pyarray(py))?;
    }
    Ok(d)
}

/// `text_stats()`'s dict back into statistics (as returned, or summed over shards).
fn text_stats_from_py(v: &Bound<'_, PyAny>) -> PyResult<TextStats> {
    let bad = |what: &str| {
        PyValueError::new_err(format!(
            "text_stats must be a dict as text_stats() returns it (terms, fields, df): {what}"
        ))
    };
    let d = v.cast::<PyDict>().map_err(|_| bad("not a dict"))?;
    let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        d.get_item(k)?.ok_or_else(|| bad(&format!("no `{k}`")))
    };
    let terms: Vec<String> = get("terms")?
        .extract()
        .map_err(|_| bad("`terms` must be a list of strings"))?;
    let pairs: Vec<Vec<u64>> = get("fields")?
        .extract()
        .map_err(|_| bad("`fields` must be a list of [documents, tokens] pairs"))?;
    let fields = pairs
        .iter()
        .map(|p| match p.as_slice() {
            [n, t] => Ok((*n, *t)),
            _ => Err(bad("`fields` must be a list of [documents, tokens] pairs")),
        })
        .collect::<PyResult<Vec<(u64, u64)>>>()?;
    let df: Vec<u64> = get("df")?
        .extract()
        .map_err(|_| bad("`df` must be a list of non-negative integers"))?;
    Ok(TextStats { terms, fields, df })
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
                "rescore" => out = out.with_rescore(int()?),
                "parallel_segments" => {
                    out = out.with_parallel_segments(v.extract().map_err(|_| {
                        PyValueError::new_err("parallel_segments must be True or False")
                    })?);
                }
                "text_stats" => out = out.with_text_stats(text_stats_from_py(&v)?),
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown search parameter `{other}` (known: ef, nprobe, refine, probes, \
                         rescore, parallel_segments, text_stats)"
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
    /// Insert or replace points. `ids`: ints (an integer-keyed collection) or strs (one
    /// created with id_type="str"); `vectors`: `[n, dim]` float32 (float64 is converted);
    /// `payloads`: a list of dicts (or None). Searchable on return; durable on return under
    /// durability "always".
    #[pyo3(signature = (ids, vectors, payloads = None))]
    fn upsert(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
        payloads: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (ids, _) = ids_from_py(ids, self.keyed(), self.c.name())?;
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
        let payloads = payload_list(payloads)?;
        let vecs_ro = vecs.readonly();
        let vecs_s = vecs_ro.as_slice()?;
        let c = &self.c;
        let run = || match &ids {
            PyIds::Int(ids) => c.upsert(ids, vecs_s, &payloads),
            PyIds::Str(keys) => c.upsert_str(keys, vecs_s, &payloads),
        };
        if n >= INTERRUPTIBLE_ROWS {
            return crate::interrupt::run(py, "upsert", run);
        }
        py.detach(run).py_err()
    }

    /// Change the payloads of existing points; their vectors stay as they are. `patch` is
    /// one dict for every id, or a list with one dict per id. `mode="merge"` (default)
    /// sets the patch's fields and keeps the others; `mode="replace"` makes the payload
    /// the patch. Atomic and durable like an upsert; a missing id raises KeyError naming
    /// it, and nothing changes.
    #[pyo3(signature = (ids, patch, *, mode = "merge"))]
    fn update_payload(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        patch: &Bound<'_, PyAny>,
        mode: &str,
    ) -> PyResult<()> {
        let (ids, _) = ids_from_py(ids, self.keyed(), self.c.name())?;
        let mode = match mode {
            "merge" => PayloadUpdate::Merge,
            "replace" => PayloadUpdate::Replace,
            other => {
                return Err(PyValueError::new_err(format!(
                    "mode must be \"merge\" or \"replace\", got {other:?}"
                )))
            }
        };
        let patches = if patch.is_instance_of::<PyDict>() {
            vec![payload_from_py(patch)?]
        } else {
            payload_list(Some(patch))?
        };
        let c = &self.c;
        py.detach(|| match &ids {
            PyIds::Int(ids) => c.update_payload(ids, &patches, mode),
            PyIds::Str(keys) => c.update_payload_str(keys, &patches, mode),
        })
        .py_err()
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
                let (ids, _) = ids_from_py(ids, self.keyed(), self.c.name())?;
                py.detach(|| match &ids {
                    PyIds::Int(ids) => c.delete(ids),
                    PyIds::Str(keys) => c.delete_str(keys),
                })
                .py_err()
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

    /// Fetch points as dicts `{"id", "payload", "vector"}` (`vector` only with
    /// `include_vector=True`, the default). For one id: the dict or None. For a sequence:
    /// a list with a dict or None per id, in order. With `filter` (and no ids): up to
    /// `limit` matching points; with neither: the first `limit` points in id order (see
    /// `scroll` for the rest).
    #[pyo3(signature = (ids = None, *, filter = None, limit = 100, include_vector = true))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        ids: Option<&Bound<'py, PyAny>>,
        filter: Option<&Bound<'py, PyAny>>,
        limit: i64,
        include_vector: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = usize::try_from(limit)
            .map_err(|_| PyValueError::new_err(format!("limit must be >= 0, got {limit}")))?;
        let c = Arc::clone(&self.c);
        let (single, points) = match (ids.filter(|i| !i.is_none()), filter_from_py(filter)?) {
            (Some(ids), None) => {
                let (ids, single) = ids_from_py(ids, self.keyed(), self.c.name())?;
                let points = py
                    .detach(move || match &ids {
                        PyIds::Int(ids) => ids
                            .iter()
                            .map(|id| c.get(*id))
                            .collect::<trovedb::Result<Vec<_>>>(),
                        PyIds::Str(keys) => keys.iter().map(|k| c.get_str(k)).collect(),
                    })
                    .py_err()?;
                (single, points)
            }
            (None, Some(f)) => {
                let points = py.detach(move || c.get_where(&f, limit)).py_err()?;
                (false, points.into_iter().map(Some).collect())
            }
            (None, None) => {
                if limit == 0 {
                    return Ok(PyList::empty(py).into_any());
                }
                let page = py.detach(move || c.scroll(None, None, limit)).py_err()?;
                (false, page.points.into_iter().map(Some).collect())
            }
            _ => return Err(PyValueError::new_err("give either ids or filter, not both")),
        };
        let mut out = Vec::with_capacity(points.len());
        for p in points {
            out.push(match p {
                None => py.None().into_bound(py),
                Some(p) => point_to_py(py, p, include_vector)?.into_any(),
            });
        }
        if single {
            return Ok(out.pop().unwrap_or_else(|| py.None().into_bound(py)));
        }
        Ok(PyList::new(py, out)?.into_any())
    }

    /// One page of the points matching `filter` (all points when None), in id order:
    /// returns `(points, cursor)` where `points` is a list of dicts as `get` returns them
    /// (without vectors unless `include_vector=True`) and `cursor` is what to pass to get
    /// the next page, or None after the last one. Pages are stable while writes continue:
    /// a point present from the first page to the last is returned exactly once.
    #[pyo3(signature = (filter = None, limit = 100, cursor = None, *, include_vector = false))]
    fn scroll<'py>(
        &self,
        py: Python<'py>,
        filter: Option<&Bound<'py, PyAny>>,
        limit: i64,
        cursor: Option<&Bound<'py, PyAny>>,
        include_vector: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        if limit < 1 {
            return Err(PyValueError::new_err(format!(
                "limit must be at least 1, got {limit}"
            )));
        }
        let after = match cursor.filter(|c| !c.is_none()) {
            None => None,
            Some(c) => Some(c.extract::<u64>().map_err(|_| {
                PyValueError::new_err(format!(
                    "cursor must be the int a previous scroll returned (or None), got {}",
                    c.repr().map_or_else(|_| "?".to_owned(), |r| r.to_string())
                ))
            })?),
        };
        let f = filter_from_py(filter)?;
        let c = &self.c;
        let page = py
            .detach(|| c.scroll(f.as_ref(), after, limit as usize))
            .py_err()?;
        let points = PyList::empty(py);
        for p in page.points {
            points.append(point_to_py(py, p, include_vector)?)?;
        }
        PyTuple::new(
            py,
            [points.into_any(), page.next.into_pyobject(py)?.into_any()],
        )
    }

    /// The two rankings of a hybrid search before fusion, for a caller that fuses the
    /// candidates of several collections (the shards of `trovedb.ray`): `{"dense": [(id,
    /// distance), ...], "keyword": [(id, score), ...], "both": [(id, distance, score),
    /// ...], "payloads": {id: payload}}` (payloads when asked). Same arguments as a hybrid
    /// `search` of one query; `text_stats` (in `**search_params`) makes the keyword scores
    /// collection-wide.
    #[pyo3(signature = (query, text, k = 10, filter = None, include_payload = false,
        hybrid_candidates = None, **search_params))]
    #[allow(clippy::too_many_arguments, reason = "mirrors the Python signature")]
    fn hybrid_candidates<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
        text: &str,
        k: i64,
        filter: Option<&Bound<'py, PyAny>>,
        include_payload: bool,
        hybrid_candidates: Option<i64>,
        search_params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if k < 1 || k as u64 > MAX_K as u64 {
            return Err(PyValueError::new_err(format!(
                "k must be in 1..={MAX_K}, got {k}"
            )));
        }
        let mut params = parse_search_params(search_params, include_payload)?;
        if let Some(n) = hybrid_candidates {
            if n < 1 {
                return Err(PyValueError::new_err(format!(
                    "hybrid_candidates must be at least 1, got {n}"
                )));
            }
            params = params.with_hybrid_candidates(n as usize);
        }
        if let Some(f) = filter_from_py(filter.filter(|f| !f.is_none()))? {
            params = params.with_filter(f);
        }
        let arr = f32_array(query)?;
        let dim = self.c.dim();
        if arr.shape() != [dim] {
            return Err(PyValueError::new_err(format!(
                "query must have shape ({dim},); got {:?}",
                arr.shape()
            )));
        }
        let q: Vec<f32> = arr.readonly().as_slice()?.to_vec();
        let c = &self.c;
        let text = text.to_owned();
        let h = py
            .detach(move || c.hybrid_candidates(&q, &text, k as usize, &params))
            .py_err()?;
        let key = |id: u64| h.payloads.get(&id).and_then(|(k, _)| k.as_deref());
        let d = PyDict::new(py);
        let dense = PyList::empty(py);
        for (id, dist) in &h.dense {
            dense.append((id_to_py(py, *id, key(*id))?, *dist))?;
        }
        let keyword = PyList::empty(py);
        for (id, score) in &h.keyword {
            keyword.append((id_to_py(py, *id, key(*id))?, *score))?;
        }
        let both = PyList::empty(py);
        for (id, dist, score) in &h.both {
            both.append((id_to_py(py, *id, key(*id))?, *dist, *score))?;
        }
        let payloads = PyDict::new(py);
        if include_payload {
            for (id, (k, p)) in &h.payloads {
                if let Some(p) = p {
                    payloads.set_item(id_to_py(py, *id, k.as_deref())?, payload_to_py(py, p)?)?;
                }
            }
        }
        d.set_item("dense", dense)?;
        d.set_item("keyword", keyword)?;
        d.set_item("both", both)?;
        d.set_item("payloads", payloads)?;
        Ok(d)
    }

    /// Nearest neighbours of `query` (`[dim]`, or `[nq, dim]` for a batch), of the stored
    /// point `id` ("more like this": the point itself left out), keyword search for `text`
    /// (a string, or a list of strings for a batch), or both vector and text (hybrid).
    ///
    /// Returns a `SearchResult` (one query) or a `BatchResult` (a batch): sequences of
    /// `Hit`s (`id`, `distance`, `score`, `payload`), best first, with no padding (fewer
    /// than k hits when fewer points match). `filter` is one dict for every query or, for a
    /// batch, a list with one dict (or None) per query; `exclude_ids` leaves those points
    /// out.
    #[pyo3(signature = (query = None, k = 10, filter = None, include_payload = false, text = None,
        fusion = "weighted", alpha = 0.5, rrf_k = 60.0, hybrid_candidates = None, *, id = None,
        exclude_ids = None, **search_params))]
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
        id: Option<&Bound<'py, PyAny>>,
        exclude_ids: Option<&Bound<'py, PyAny>>,
        search_params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if k < 1 || k as u64 > MAX_K as u64 {
            return Err(PyValueError::new_err(format!(
                "k must be in 1..={MAX_K}, got {k}"
            )));
        }
        let k = k as usize;
        let mut params = parse_search_params(search_params, include_payload)?;
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
        // The filter: one for all queries, or one per query of a batch (below).
        let exclude = match exclude_ids.filter(|e| !e.is_none()) {
            Some(e) => {
                let (ids, _) = ids_from_py(e, self.keyed(), self.c.name())?;
                Some(Filter::Not(Box::new(Filter::Id(ids.id_match()))))
            }
            None => None,
        };
        let with_exclude = |f: Option<Filter>| -> Option<Filter> {
            match (f, exclude.clone()) {
                (Some(f), Some(x)) => Some(Filter::And(vec![f, x])),
                (f, x) => f.or(x),
            }
        };
        let per_query: Option<Vec<Option<Filter>>> = match filter.filter(|f| !f.is_none()) {
            Some(f) if f.is_instance_of::<PyList>() || f.is_instance_of::<PyTuple>() => Some(
                f.try_iter()?
                    .map(|item| Ok(with_exclude(filter_from_py(Some(&item?))?)))
                    .collect::<PyResult<_>>()?,
            ),
            Some(f) => {
                if let Some(f) = with_exclude(filter_from_py(Some(f))?) {
                    params = params.with_filter(f);
                }
                None
            }
            None => {
                if let Some(x) = with_exclude(None) {
                    params = params.with_filter(x);
                }
                None
            }
        };
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
        let c = &self.c;
        let keyed = self.keyed();
        if let Some(id) = id.filter(|i| !i.is_none()) {
            if query.is_some_and(|q| !q.is_none()) || texts.is_some() || per_query.is_some() {
                return Err(PyValueError::new_err(
                    "search by id takes neither a query vector nor a text, and one filter",
                ));
            }
            let (ids, single) = ids_from_py(id, keyed, c.name())?;
            if !single {
                return Err(PyValueError::new_err("id must be one id"));
            }
            let hits = py
                .detach(|| match &ids {
                    PyIds::Int(v) => c.search_by_id(v[0], k, &params),
                    PyIds::Str(v) => c.search_by_str_id(&v[0], k, &params),
                })
                .py_err()?;
            return Ok(
                Bound::new(py, SearchResult::new(hits, Kind::Vector, include_payload))?.into_any(),
            );
        }
        let q = query.filter(|q| !q.is_none()).map(f32_array).transpose()?;
        let shape = |q: &numpy::PyReadonlyArrayDyn<'_, f32>| -> PyResult<(usize, bool)> {
            match q.shape() {
                [d] if *d == dim => Ok((1, true)),
                [n, d] if *d == dim => Ok((*n, false)),
                s => Err(PyValueError::new_err(format!(
                    "query must have shape ({dim},) or (nq, {dim}); got {s:?}"
                ))),
            }
        };
        // Per-query params, when the filter is a list.
        let each = |nq: usize, one: bool| -> PyResult<Option<Vec<SearchParams>>> {
            let Some(fs) = &per_query else {
                return Ok(None);
            };
            if one || fs.len() != nq {
                return Err(PyValueError::new_err(format!(
                    "a list of filters needs a batch with one query per filter: {} filters for \
                     {}",
                    fs.len(),
                    if one {
                        "one query".to_owned()
                    } else {
                        format!("{nq} queries")
                    }
                )));
            }
            Ok(Some(
                fs.iter()
                    .map(|f| {
                        let mut p = params.clone();
                        p.filter.clone_from(f);
                        p
                    })
                    .collect(),
            ))
        };
        let (results, one, kind) = match (q, texts) {
            (None, None) => {
                return Err(PyValueError::new_err(
                    "give a query vector, a text, both (hybrid search), or an id",
                ))
            }
            (Some(q), None) => {
                let ro = q.readonly();
                let (nq, one) = shape(&ro)?;
                check_cells(nq, k)?;
                let qs = ro.as_slice()?;
                let each = each(nq, one)?;
                let run = || match &each {
                    Some(ps) => c.search_each(qs, k, ps),
                    None if nq == 1 => c.search(qs, k, &params).map(|h| vec![h]),
                    None => c.search_batch(qs, k, &params),
                };
                let results: Vec<Vec<Hit>> = if nq >= INTERRUPTIBLE_QUERIES {
                    crate::interrupt::run(py, "search", run)?
                } else {
                    py.detach(run).py_err()?
                };
                (results, one, Kind::Vector)
            }
            (q, Some((texts, single))) => {
                let nq = texts.len();
                check_cells(nq, k)?;
                let each = each(nq, single)?;
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
                        .map(|(i, t)| {
                            let p = each.as_ref().map_or(&params, |e| &e[i]);
                            match qs {
                                Some(qs) => c.search_hybrid(&qs[i * dim..(i + 1) * dim], t, k, p),
                                None => c.search_text(t, k, p),
                            }
                        })
                        .collect()
                };
                let results = if nq >= INTERRUPTIBLE_QUERIES {
                    crate::interrupt::run(py, "search", run)?
                } else {
                    py.detach(run).py_err()?
                };
                let kind = if qs.is_some() {
                    Kind::Hybrid
                } else {
                    Kind::Text
                };
                (results, single, kind)
            }
        };
        if one {
            let hits = results.into_iter().next().unwrap_or_default();
            return Ok(Bound::new(py, SearchResult::new(hits, kind, include_payload))?.into_any());
        }
        let rows = results
            .into_iter()
            .map(|hits| Py::new(py, SearchResult::new(hits, kind, include_payload)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Bound::new(py, BatchResult { rows, k, keyed })?.into_any())
    }

    /// A batch search that always returns a `BatchResult` (one row per query of
    /// `queries`, `[nq, dim]`); the other arguments are those of `search`.
    #[pyo3(signature = (queries, k = 10, filter = None, include_payload = false, *,
        exclude_ids = None, **search_params))]
    #[allow(clippy::too_many_arguments, reason = "mirrors the Python signature")]
    fn search_batch<'py>(
        slf: &Bound<'py, Self>,
        queries: &Bound<'py, PyAny>,
        k: i64,
        filter: Option<&Bound<'py, PyAny>>,
        include_payload: bool,
        exclude_ids: Option<&Bound<'py, PyAny>>,
        search_params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let q = f32_array(queries)?;
        let dim = slf.borrow().c.dim();
        let q = match q.shape() {
            [_, d] if *d == dim => q.into_any(),
            s => {
                return Err(PyValueError::new_err(format!(
                    "queries must have shape (nq, {dim}); got {s:?}"
                )))
            }
        };
        let kwargs = PyDict::new(py);
        kwargs.set_item("k", k)?;
        kwargs.set_item("filter", filter)?;
        kwargs.set_item("include_payload", include_payload)?;
        kwargs.set_item("exclude_ids", exclude_ids)?;
        if let Some(p) = search_params {
            kwargs.update(p.as_mapping())?;
        }
        slf.call_method("search", (q,), Some(&kwargs))
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

    /// The BM25 statistics of the keyword query `text` over this collection's live
    /// documents: `{"terms": [...], "fields": [[documents, tokens], ...], "df": [...]}`
    /// (`df` field-major). Summed over the shards of a collection split across databases
    /// and passed back as `search(text=..., text_stats=...)`, every shard scores as one
    /// collection holding all the documents would.
    fn text_stats<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.c;
        let s = py.detach(|| c.text_stats(text)).py_err()?;
        let d = PyDict::new(py);
        d.set_item("terms", s.terms)?;
        let fields: Vec<[u64; 2]> = s.fields.iter().map(|&(n, t)| [n, t]).collect();
        d.set_item("fields", fields)?;
        d.set_item("df", s.df)?;
        Ok(d)
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
            sd.set_item("file", &seg.file)?;
            sd.set_item("format_version", seg.format_version)?;
            sd.set_item("rows", seg.rows)?;
            sd.set_item("deleted", seg.deleted)?;
            sd.set_item("bytes", seg.bytes)?;
            sd.set_item("index", &seg.index)?;
            sd.set_item("index_bytes", seg.index_bytes)?;
            sd.set_item("index_detail", &seg.index_detail)?;
            sd.set_item("text_bytes", seg.text_bytes)?;
            sd.set_item("quantization", &seg.quantization)?;
            sd.set_item("quant_bytes", seg.quant_bytes)?;
            sd.set_item("vector_bytes", seg.vector_bytes)?;
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
        d.set_item("manifest_version", s.manifest_version)?;
        d.set_item("wal_files", s.wal_files)?;
        d.set_item("wal_bytes", s.wal_bytes)?;
        Ok(d)
    }

    /// Catch up with the writer now (a read-only handle does this before every read by
    /// itself). Does nothing on a writable handle.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let c = &self.c;
        py.detach(|| c.refresh()).py_err()
    }

    /// The collection's configuration by the keyword names `create_collection` takes:
    /// `dim`, `metric`, `index`, `index_params` (a dict), `indexed_fields` (None: all),
    /// `id_type`, `quantization`, `rescore` (None without quantisation), `text_fields` (None: no text index) and, with text fields, `language`,
    /// `stem`, `stopwords` (True: the language's list, False: none, or the list),
    /// `bm25_k1`, `bm25_b`.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.c.config();
        let d = PyDict::new(py);
        d.set_item("dim", c.dim)?;
        d.set_item("metric", c.metric.name())?;
        d.set_item("index", c.index.name())?;
        let params = PyDict::new(py);
        for (k, v) in c.index.params() {
            // Every index parameter is an integer.
            params.set_item(k, v as u64)?;
        }
        d.set_item("index_params", params)?;
        d.set_item("indexed_fields", c.indexed_fields.clone())?;
        d.set_item("id_type", c.id_type.name())?;
        d.set_item("quantization", c.quantization.name())?;
        d.set_item("rescore", c.quantization.rescore())?;
        match &c.text {
            None => d.set_item("text_fields", py.None())?,
            Some(t) => {
                d.set_item("text_fields", t.fields.clone())?;
                d.set_item("language", &t.analyzer.language)?;
                d.set_item("stem", t.analyzer.stem)?;
                match &t.analyzer.stopwords {
                    StopWords::Language => d.set_item("stopwords", true)?,
                    StopWords::None => d.set_item("stopwords", false)?,
                    StopWords::List(w) => d.set_item("stopwords", w.clone())?,
                }
                // The shortest decimal that reads back as the stored f32 (1.2, not
                // 1.2000000476837158).
                let shortest = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
                d.set_item("bm25_k1", shortest(t.k1))?;
                d.set_item("bm25_b", shortest(t.b))?;
            }
        }
        Ok(d)
    }

    /// "int" or "str": what keys the collection's points.
    #[getter]
    fn id_type(&self) -> &'static str {
        self.c.config().id_type.name()
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
