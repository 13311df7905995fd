//! Search results as Python sees them: `SearchResult` (the hits of one query), `Hit`, and
//! `BatchResult` (one `SearchResult` per query of a batch). Hits are kept as the core
//! returned them and converted when asked for, so a caller that reads only `.ids` pays for
//! nothing else.

use numpy::ndarray::Array2;
use numpy::IntoPyArray;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use trovedb::Hit;

use crate::convert::{id_to_py, payload_to_py};

/// What produced the hits: their `distance` is a distance under the metric for a vector
/// search, and minus the score for a keyword or hybrid search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Vector,
    Text,
    Hybrid,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vector => "vector",
            Kind::Text => "text",
            Kind::Hybrid => "hybrid",
        }
    }
}

/// One hit: `id` (an int, or a str in a collection keyed by strings), `distance` (smaller
/// is nearer), `score` (higher is better: BM25 or fused score for keyword and hybrid
/// searches, minus the distance for vector searches) and `payload` (a dict when the search
/// asked for payloads, else None).
#[pyclass(name = "Hit", module = "trovedb", frozen)]
pub(crate) struct PyHit {
    id: Py<PyAny>,
    distance: f32,
    payload: Option<Py<PyDict>>,
}

#[pymethods]
impl PyHit {
    #[getter]
    fn id(&self, py: Python<'_>) -> Py<PyAny> {
        self.id.clone_ref(py)
    }

    #[getter]
    fn distance(&self) -> f32 {
        self.distance
    }

    #[getter]
    fn score(&self) -> f32 {
        -self.distance
    }

    #[getter]
    fn payload(&self, py: Python<'_>) -> Option<Py<PyDict>> {
        self.payload.as_ref().map(|p| p.clone_ref(py))
    }

    /// `{"id", "distance", "score", "payload"}`: plain Python values, JSON-serialisable.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id.bind(py))?;
        d.set_item("distance", self.distance)?;
        d.set_item("score", -self.distance)?;
        d.set_item("payload", self.payload.as_ref().map(|p| p.bind(py)))?;
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let payload = match &self.payload {
            Some(p) => format!(", payload={}", p.bind(py).repr()?),
            None => String::new(),
        };
        Ok(format!(
            "Hit(id={}, distance={}{payload})",
            self.id.bind(py).repr()?,
            self.distance
        ))
    }
}

fn hit_to_py(py: Python<'_>, h: &Hit) -> PyResult<PyHit> {
    Ok(PyHit {
        id: id_to_py(py, h.id, h.key.as_deref())?.unbind(),
        distance: h.distance,
        payload: match &h.payload {
            Some(p) => Some(payload_to_py(py, p)?.unbind()),
            None => None,
        },
    })
}

/// The hits of one query, best first; fewer than k when fewer points match (never
/// padded). A sequence of `Hit`; `.ids`, `.distances`, `.scores` and `.payloads` give the
/// columns (`.ids` a uint64 array, or a list of str in a collection keyed by strings).
#[pyclass(name = "SearchResult", module = "trovedb", frozen, sequence)]
pub(crate) struct SearchResult {
    hits: Vec<Hit>,
    kind: Kind,
    with_payload: bool,
}

impl SearchResult {
    pub(crate) fn new(hits: Vec<Hit>, kind: Kind, with_payload: bool) -> Self {
        SearchResult {
            hits,
            kind,
            with_payload,
        }
    }

    fn keyed(&self) -> bool {
        self.hits.first().is_some_and(|h| h.key.is_some())
    }
}

#[pymethods]
impl SearchResult {
    fn __len__(&self) -> usize {
        self.hits.len()
    }

    fn __getitem__(&self, py: Python<'_>, i: isize) -> PyResult<PyHit> {
        let n = self.hits.len() as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err(format!(
                "hit index {i} out of range for {n} hits"
            )));
        }
        hit_to_py(py, &self.hits[j as usize])
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let hits = self
            .hits
            .iter()
            .map(|h| hit_to_py(py, h))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, hits)?.try_iter().map(Bound::into_any)
    }

    /// The ids, best first: a uint64 array, or a list of str in a collection keyed by
    /// strings.
    #[getter]
    fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.keyed() {
            let keys: Vec<&str> = self.hits.iter().filter_map(|h| h.key.as_deref()).collect();
            return Ok(PyList::new(py, keys)?.into_any());
        }
        let ids: Vec<u64> = self.hits.iter().map(|h| h.id).collect();
        Ok(ids.into_pyarray(py).into_any())
    }

    /// Distances as a float32 array (smaller is nearer; minus the score for keyword and
    /// hybrid searches).
    #[getter]
    fn distances<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        let d: Vec<f32> = self.hits.iter().map(|h| h.distance).collect();
        d.into_pyarray(py).into_any()
    }

    /// Scores as a float32 array (higher is better; minus the distance for vector
    /// searches).
    #[getter]
    fn scores<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        let d: Vec<f32> = self.hits.iter().map(|h| -h.distance).collect();
        d.into_pyarray(py).into_any()
    }

    /// The payload dicts (None for each when the search did not ask for payloads).
    #[getter]
    fn payloads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for h in &self.hits {
            match &h.payload {
                Some(p) => out.append(payload_to_py(py, p)?)?,
                None => out.append(py.None())?,
            }
        }
        Ok(out)
    }

    /// "vector", "text" or "hybrid".
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind.name()
    }

    /// The hits as `Hit.to_dict()` dicts (JSON-serialisable).
    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for h in &self.hits {
            out.append(hit_to_py(py, h)?.to_dict(py)?)?;
        }
        Ok(out)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let shown: Vec<String> = self
            .hits
            .iter()
            .take(3)
            .map(|h| Ok(format!("{}", id_to_py(py, h.id, h.key.as_deref())?.repr()?)))
            .collect::<PyResult<_>>()?;
        let more = if self.hits.len() > 3 { ", ..." } else { "" };
        Ok(format!(
            "SearchResult({} {} hits: ids [{}{more}]{})",
            self.hits.len(),
            self.kind.name(),
            shown.join(", "),
            if self.with_payload {
                ", with payloads"
            } else {
                ""
            }
        ))
    }
}

/// The results of a batch: one `SearchResult` per query, in order. `.ids` and `.distances`
/// give `(nq, k)` arrays for the array-minded, where rows with fewer than k hits are padded
/// with id `trovedb.PAD_ID` (2**64-1) and distance +inf (score -inf); in a collection keyed
/// by strings `.ids` is a list of lists of str (no padding).
#[pyclass(name = "BatchResult", module = "trovedb", frozen, sequence)]
pub(crate) struct BatchResult {
    pub(crate) rows: Vec<Py<SearchResult>>,
    pub(crate) k: usize,
    pub(crate) keyed: bool,
}

impl BatchResult {
    fn padded<'py>(&self, py: Python<'py>, pad: f32, f: impl Fn(&Hit) -> f32) -> Bound<'py, PyAny> {
        let mut a = Array2::<f32>::from_elem((self.rows.len(), self.k), pad);
        for (i, r) in self.rows.iter().enumerate() {
            for (j, h) in r.get().hits.iter().enumerate().take(self.k) {
                a[[i, j]] = f(h);
            }
        }
        a.into_pyarray(py).into_any()
    }
}

#[pymethods]
impl BatchResult {
    fn __len__(&self) -> usize {
        self.rows.len()
    }

    fn __getitem__(&self, py: Python<'_>, i: isize) -> PyResult<Py<SearchResult>> {
        let n = self.rows.len() as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err(format!(
                "query index {i} out of range for {n} queries"
            )));
        }
        Ok(self.rows[j as usize].clone_ref(py))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rows: Vec<Py<SearchResult>> = self.rows.iter().map(|r| r.clone_ref(py)).collect();
        PyList::new(py, rows)?.try_iter().map(Bound::into_any)
    }

    /// `(nq, k)` uint64 ids padded with `PAD_ID`, or lists of str (keyed by strings).
    #[getter]
    fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.keyed {
            let out = PyList::empty(py);
            for r in &self.rows {
                out.append(r.get().ids(py)?)?;
            }
            return Ok(out.into_any());
        }
        let mut a = Array2::<u64>::from_elem((self.rows.len(), self.k), trovedb::RESERVED_ID);
        for (i, r) in self.rows.iter().enumerate() {
            for (j, h) in r.get().hits.iter().enumerate().take(self.k) {
                a[[i, j]] = h.id;
            }
        }
        Ok(a.into_pyarray(py).into_any())
    }

    /// `(nq, k)` float32 distances padded with +inf.
    #[getter]
    fn distances<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.padded(py, f32::INFINITY, |h| h.distance)
    }

    /// `(nq, k)` float32 scores padded with -inf.
    #[getter]
    fn scores<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.padded(py, f32::NEG_INFINITY, |h| -h.distance)
    }

    /// One list of payload dicts (or Nones) per query.
    #[getter]
    fn payloads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for r in &self.rows {
            out.append(r.get().payloads(py)?)?;
        }
        Ok(out)
    }

    /// One list of `Hit.to_dict()` dicts per query.
    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for r in &self.rows {
            out.append(r.get().to_list(py)?)?;
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!("BatchResult({} queries, k={})", self.rows.len(), self.k)
    }
}
