//! `trovedb.Database`.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use trovedb::text::{Analyzer, AnalyzerConfig, StopWords};
use trovedb::TextConfig;
use trovedb::{
    CollectionConfig, CompactionPolicy, Database, DbOptions, Durability, IdType, IndexConfig,
    Metric, Quantization, AUTO_SQ8_MIN_DIM,
};

use crate::collection::PyCollection;
use crate::error::IntoPy;

/// An open database directory. Use as a context manager, or call `close()`.
#[pyclass(name = "Database", module = "trovedb")]
pub(crate) struct PyDatabase {
    db: Arc<Database>,
}

/// Open (creating if needed) the database at `path`.
///
/// `durability` is "always" (fsync before each write returns; the default), "batch" or
/// "batch:<ms>" (fsync in the background), or "off". `read_only=True` opens beside the
/// writer (any number of processes): no lock, nothing created, every change refused with
/// `ReadOnlyError`; reads see what the writer has published and catch up by themselves.
/// `tune_allocator=True` lets trovedb set glibc's malloc thresholds for the process.
/// `seal_threshold_rows`: rows the in-memory segment takes before it is sealed into a file;
/// during a bulk load into an HNSW collection a segment growing on the one just sealed takes
/// as many as that one holds, up to twice the threshold (what recovery may replay).
#[pyfunction]
#[allow(
    clippy::needless_pass_by_value,
    reason = "pyo3 extracts os.PathLike into an owned PathBuf"
)]
#[pyo3(signature = (
    path,
    durability = "always",
    seal_threshold_rows = 100_000,
    background_compaction = true,
    compaction_min_segments = 4,
    compaction_max_deleted_fraction = 0.3,
    compaction_max_merged_rows = 0,
    compaction_max_segment_rows = 0,
    compaction_quiet_seconds = 2.0,
    compaction_seal_idle_seconds = 30.0,
    read_only = false,
    tune_allocator = false,
))]
#[allow(clippy::too_many_arguments, reason = "mirrors the Python signature")]
pub(crate) fn open(
    py: Python<'_>,
    path: std::path::PathBuf,
    durability: &str,
    seal_threshold_rows: i64,
    background_compaction: bool,
    compaction_min_segments: i64,
    compaction_max_deleted_fraction: f64,
    compaction_max_merged_rows: i64,
    compaction_max_segment_rows: i64,
    compaction_quiet_seconds: f64,
    compaction_seal_idle_seconds: f64,
    read_only: bool,
    tune_allocator: bool,
) -> PyResult<PyDatabase> {
    let count = |name: &str, v: i64| {
        usize::try_from(v)
            .map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {v}")))
    };
    let seconds = |name: &str, v: f64| {
        std::time::Duration::try_from_secs_f64(v).map_err(|_| {
            PyValueError::new_err(format!("{name} must be a finite number >= 0, got {v}"))
        })
    };
    let policy = CompactionPolicy::default()
        .background(background_compaction)
        .min_segments(count("compaction_min_segments", compaction_min_segments)?)
        .max_deleted_fraction(compaction_max_deleted_fraction)
        .max_merged_rows(count(
            "compaction_max_merged_rows",
            compaction_max_merged_rows,
        )?)
        .max_segment_rows(count(
            "compaction_max_segment_rows",
            compaction_max_segment_rows,
        )?)
        .quiet(seconds(
            "compaction_quiet_seconds",
            compaction_quiet_seconds,
        )?)
        .seal_idle_after(seconds(
            "compaction_seal_idle_seconds",
            compaction_seal_idle_seconds,
        )?);
    let d = Durability::parse(durability).py_err()?;
    let seal_threshold_rows = usize::try_from(seal_threshold_rows)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "seal_threshold_rows must be at least 1, got {seal_threshold_rows}"
            ))
        })?;
    let opts = DbOptions::default()
        .durability(d)
        .seal_threshold_rows(seal_threshold_rows)
        .compaction(policy)
        .read_only(read_only)
        .tune_allocator(tune_allocator);
    let db = py.detach(|| Database::open(&path, opts)).py_err()?;
    Ok(PyDatabase { db: Arc::new(db) })
}

/// Repair the database at `path` after damage that makes a collection fail to open (see
/// the README, "Repair"). Returns `{collection: {"dropped_segments": [...], "log_cut":
/// {...} or None, "error": exception or None}}`; raises LockedError while a writer has it
/// open.
#[pyfunction]
#[allow(
    clippy::needless_pass_by_value,
    reason = "pyo3 extracts os.PathLike into an owned PathBuf"
)]
pub(crate) fn repair(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let report = py.detach(|| Database::repair(&path)).py_err()?;
    let out = PyDict::new(py);
    for c in report.collections {
        let d = PyDict::new(py);
        let dropped = pyo3::types::PyList::empty(py);
        for s in &c.dropped_segments {
            let sd = PyDict::new(py);
            sd.set_item("id", s.id)?;
            sd.set_item("file", &s.file)?;
            sd.set_item("rows", s.rows)?;
            sd.set_item("reason", &s.reason)?;
            dropped.append(sd)?;
        }
        d.set_item("dropped_segments", dropped)?;
        let cut = match &c.log_cut {
            Some(l) => {
                let ld = PyDict::new(py);
                ld.set_item("file", l.file.display().to_string())?;
                ld.set_item("offset", l.offset)?;
                ld.set_item("bytes", l.bytes)?;
                ld.set_item(
                    "files_removed",
                    l.files_removed
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>(),
                )?;
                ld.set_item("last_kept_lsn", l.last_kept_lsn)?;
                ld.set_item("records_lost", l.records_lost)?;
                ld.set_item("reason", &l.reason)?;
                Some(ld)
            }
            None => None,
        };
        d.set_item("log_cut", cut)?;
        d.set_item("error", c.error.map(crate::error::to_py))?;
        out.set_item(c.name, d)?;
    }
    Ok(out)
}

/// An analyzer config from the Python arguments (`stopwords`: None/True = the language's
/// list, False = none, a sequence of words = those).
pub(crate) fn analyzer_config(
    language: &str,
    stem: bool,
    stopwords: Option<&Bound<'_, PyAny>>,
) -> PyResult<AnalyzerConfig> {
    let stopwords = match stopwords {
        None => StopWords::Language,
        Some(v) if v.is_instance_of::<pyo3::types::PyBool>() => {
            if v.extract::<bool>()? {
                StopWords::Language
            } else {
                StopWords::None
            }
        }
        Some(v) if v.is_instance_of::<pyo3::types::PyString>() => {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "stopwords must be True, False or a list of words, not a string",
            ))
        }
        Some(v) => StopWords::List(v.extract::<Vec<String>>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(
                "stopwords must be True, False or a list of words",
            )
        })?),
    };
    Ok(AnalyzerConfig {
        language: language.to_ascii_lowercase(),
        stem,
        stopwords,
    })
}

/// The terms the BM25 index would store for `text` under these analyzer settings (the
/// same function a collection with `text_fields` applies to documents and queries).
#[pyfunction]
#[pyo3(signature = (text, language = "english", stem = true, stopwords = None))]
pub(crate) fn analyze(
    text: &str,
    language: &str,
    stem: bool,
    stopwords: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<String>> {
    let cfg = analyzer_config(language, stem, stopwords)?;
    TextConfig {
        analyzer: cfg.clone(),
        ..TextConfig::new(["text"])
    }
    .validate()
    .py_err()?;
    Ok(Analyzer::new(&cfg).terms(text))
}

/// The collection config the arguments of `create_collection` describe.
#[allow(clippy::too_many_arguments, reason = "mirrors the Python signature")]
fn collection_config(
    dim: i64,
    metric: &str,
    index: &str,
    indexed_fields: Option<Vec<String>>,
    text_fields: Option<Vec<String>>,
    language: &str,
    stem: bool,
    stopwords: Option<&Bound<'_, PyAny>>,
    bm25_k1: f32,
    bm25_b: f32,
    id_type: &str,
    quantization: &str,
    rescore: Option<i64>,
    index_params: Option<&Bound<'_, PyDict>>,
) -> PyResult<CollectionConfig> {
    let analyzer = analyzer_config(language, stem, stopwords)?;
    let text = text_fields.map(|fields| TextConfig {
        fields,
        analyzer,
        k1: bm25_k1,
        b: bm25_b,
    });
    let metric = Metric::parse(metric).py_err()?;
    // Negative: refused by the config's own check (dim 0), with its message.
    let dim = usize::try_from(dim).unwrap_or(0);
    let mut params = Vec::new();
    if let Some(p) = index_params {
        for (k, v) in p.iter() {
            params.push((k.extract::<String>()?, v.extract::<f64>()?));
        }
    }
    let index = IndexConfig::from_name(index, &params).py_err()?;
    let mut quantization = Quantization::parse(quantization)
        .py_err()?
        .resolve(&index, dim);
    if let Some(r) = rescore {
        if quantization == Quantization::None {
            return Err(PyValueError::new_err(format!(
                "invalid argument `rescore`: applies to quantised collections only, and this one stores float32 vectors only (quantization=\"auto\" gives sq8 codes to hnsw collections of at least {AUTO_SQ8_MIN_DIM} dimensions; give quantization=\"sq8\" or \"binary\")"
            )));
        }
        // Negative: refused by the config's own check (rescore 0), with its message.
        quantization = quantization.with_rescore(usize::try_from(r).unwrap_or(0));
    }
    Ok(CollectionConfig {
        index,
        indexed_fields,
        text,
        id_type: IdType::parse(id_type).py_err()?,
        quantization,
        ..CollectionConfig::new(dim, metric)
    })
}

#[pymethods]
impl PyDatabase {
    /// Create a collection. `index` is "flat", "hnsw", "ivf_pq" or "lsh"; index parameters
    /// (m, ef_construction, ef_search, nlist, pq_m, nprobe, refine, tables, bits, probes,
    /// seed) go in `**index_params`.
    /// `indexed_fields` limits the payload index to those fields (default: all); filters on
    /// other fields still work by reading payloads.
    /// `text_fields` names payload string fields that also feed a BM25 full-text index,
    /// analysed with `language` (a Snowball language), `stem` and `stopwords` (True: the
    /// language's list, False: none, or a list of words); `bm25_k1`, `bm25_b` set BM25.
    /// `id_type` is "int" (points keyed by non-negative integers) or "str" (by strings of
    /// 1 to 1024 bytes: UUIDs, paths, "doc#chunk").
    /// `quantization` ("auto", "none", "sq8" or "binary"; flat and hnsw) keeps quantised
    /// codes of the sealed vectors that searches walk and scan, re-ranking the best
    /// `rescore * k` exactly (`rescore`: the default of the search knob; 3 for sq8, 10 for
    /// binary). "auto" (the default) is sq8 for an hnsw collection of at least 256
    /// dimensions and none otherwise; `config()` shows what it resolved to.
    #[pyo3(signature = (name, dim, metric = "cosine", index = "flat", indexed_fields = None,
        text_fields = None, language = "english", stem = true, stopwords = None,
        bm25_k1 = 1.2, bm25_b = 0.75, id_type = "int", quantization = "auto", rescore = None,
        **index_params))]
    #[allow(clippy::too_many_arguments, reason = "mirrors the Python signature")]
    fn create_collection(
        &self,
        py: Python<'_>,
        name: &str,
        dim: i64,
        metric: &str,
        index: &str,
        indexed_fields: Option<Vec<String>>,
        text_fields: Option<Vec<String>>,
        language: &str,
        stem: bool,
        stopwords: Option<&Bound<'_, PyAny>>,
        bm25_k1: f32,
        bm25_b: f32,
        id_type: &str,
        quantization: &str,
        rescore: Option<i64>,
        index_params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyCollection> {
        let config = collection_config(
            dim,
            metric,
            index,
            indexed_fields,
            text_fields,
            language,
            stem,
            stopwords,
            bm25_k1,
            bm25_b,
            id_type,
            quantization,
            rescore,
            index_params,
        )?;
        let db = Arc::clone(&self.db);
        let name = name.to_owned();
        let c = py
            .detach(move || db.create_collection(&name, &config))
            .py_err()?;
        Ok(PyCollection::new(c))
    }

    /// The collection `name` if it exists with exactly this config (same arguments as
    /// `create_collection`), else a new one; a different existing config is a ValueError
    /// naming each difference.
    #[pyo3(signature = (name, dim, metric = "cosine", index = "flat", indexed_fields = None,
        text_fields = None, language = "english", stem = true, stopwords = None,
        bm25_k1 = 1.2, bm25_b = 0.75, id_type = "int", quantization = "auto", rescore = None,
        **index_params))]
    #[allow(clippy::too_many_arguments, reason = "mirrors the Python signature")]
    fn get_or_create_collection(
        &self,
        py: Python<'_>,
        name: &str,
        dim: i64,
        metric: &str,
        index: &str,
        indexed_fields: Option<Vec<String>>,
        text_fields: Option<Vec<String>>,
        language: &str,
        stem: bool,
        stopwords: Option<&Bound<'_, PyAny>>,
        bm25_k1: f32,
        bm25_b: f32,
        id_type: &str,
        quantization: &str,
        rescore: Option<i64>,
        index_params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyCollection> {
        let config = collection_config(
            dim,
            metric,
            index,
            indexed_fields,
            text_fields,
            language,
            stem,
            stopwords,
            bm25_k1,
            bm25_b,
            id_type,
            quantization,
            rescore,
            index_params,
        )?;
        let db = Arc::clone(&self.db);
        let name = name.to_owned();
        let c = py
            .detach(move || db.get_or_create_collection(&name, &config))
            .py_err()?;
        Ok(PyCollection::new(c))
    }

    /// Open an existing collection.
    fn get_collection(&self, py: Python<'_>, name: &str) -> PyResult<PyCollection> {
        let db = Arc::clone(&self.db);
        let name = name.to_owned();
        let c = py.detach(move || db.collection(&name)).py_err()?;
        Ok(PyCollection::new(c))
    }

    /// Names of all collections, sorted.
    fn list_collections(&self) -> PyResult<Vec<String>> {
        self.db.list_collections().py_err()
    }

    /// Open every collection. Returns `{name: None}` for each that opened and
    /// `{name: error}` (an exception instance, e.g. CorruptionError naming the file and
    /// offset) for each that could not: one damaged collection does not stop the others.
    fn open_all(
        &self,
        py: Python<'_>,
    ) -> PyResult<std::collections::BTreeMap<String, Option<PyErr>>> {
        let db = Arc::clone(&self.db);
        let report = py.detach(move || db.open_all()).py_err()?;
        let mut out: std::collections::BTreeMap<String, Option<PyErr>> =
            report.opened.into_iter().map(|n| (n, None)).collect();
        for (name, e) in report.failed {
            out.insert(name, Some(crate::error::to_py(e)));
        }
        Ok(out)
    }

    /// Delete a collection and its files.
    fn drop_collection(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let db = Arc::clone(&self.db);
        let name = name.to_owned();
        py.detach(move || db.drop_collection(&name)).py_err()
    }

    /// Sync and close every collection and release the directory lock.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let db = Arc::clone(&self.db);
        py.detach(move || db.close()).py_err()
    }

    /// Copy the database into `dest` (a new path or an empty directory) while it stays open
    /// and writes go on: each collection as it was at one point during the call, restorable
    /// by `trovedb.open(dest)`. Returns `{"collections", "files", "bytes",
    /// "max_lock_micros"}` (the longest a writer could have waited).
    #[allow(
        clippy::needless_pass_by_value,
        reason = "pyo3 extracts os.PathLike into an owned PathBuf"
    )]
    fn backup<'py>(
        &self,
        py: Python<'py>,
        dest: std::path::PathBuf,
    ) -> PyResult<Bound<'py, PyDict>> {
        let db = Arc::clone(&self.db);
        let r = py.detach(move || db.backup(&dest)).py_err()?;
        let d = PyDict::new(py);
        d.set_item("collections", r.collections)?;
        d.set_item("files", r.files)?;
        d.set_item("bytes", r.bytes)?;
        d.set_item("max_lock_micros", r.max_lock_micros)?;
        Ok(d)
    }

    /// Bring every open collection of a read-only handle up to what the writer has
    /// published (reads do this by themselves). Does nothing on a writable handle.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let db = Arc::clone(&self.db);
        py.detach(move || db.refresh()).py_err()
    }

    /// Whether the handle was opened with `read_only=True`.
    #[getter]
    fn read_only(&self) -> bool {
        self.db.is_read_only()
    }

    /// The database directory.
    #[getter]
    fn path(&self) -> std::path::PathBuf {
        self.db.path().to_path_buf()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Database({:?})", self.db.path().display().to_string())
    }
}
