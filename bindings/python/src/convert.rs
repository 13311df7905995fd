//! Type conversion at the Python boundary: payload dicts, and NumPy arrays checked for
//! dtype, shape and contiguity (copied only when they are not already float32/uint64
//! C-contiguous).

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use trovedb::{Payload, Value};

fn numpy(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    PyModule::import(py, "numpy")
}

fn dtype_kind(arr: &Bound<'_, PyAny>) -> PyResult<String> {
    arr.getattr("dtype")?.getattr("kind")?.extract()
}

/// `obj` as a C-contiguous float32 array. float32 C-contiguous input is used as is;
/// other float or integer dtypes (float64 included) are converted; anything else is a
/// `TypeError`.
pub(crate) fn f32_array<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
        if a.is_c_contiguous() {
            return Ok(a.clone());
        }
    }
    let np = numpy(obj.py())?;
    let arr = np.call_method1("asarray", (obj,))?;
    let kind = dtype_kind(&arr)?;
    if !matches!(kind.as_str(), "f" | "i" | "u") {
        return Err(PyTypeError::new_err(format!(
            "vectors must be a float32 array (float64 and integers are converted); got dtype {}",
            arr.getattr("dtype")?.str()?
        )));
    }
    let f32t = np.getattr("float32")?;
    let kwargs = PyDict::new(obj.py());
    kwargs.set_item("dtype", f32t)?;
    let out = np.call_method("ascontiguousarray", (arr,), Some(&kwargs))?;
    Ok(out.cast_into::<PyArrayDyn<f32>>()?)
}

/// `obj` (an int, a sequence of ints or an integer array) as a 1-D uint64 array.
pub(crate) fn id_array<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<u64>>> {
    if let Ok(a) = obj.cast::<PyArray1<u64>>() {
        if a.is_c_contiguous() {
            return Ok(a.clone());
        }
    }
    let np = numpy(obj.py())?;
    let arr = np.call_method1("asarray", (obj,))?;
    let kind = dtype_kind(&arr)?;
    let size: usize = arr.getattr("size")?.extract()?;
    if size > 0 && !matches!(kind.as_str(), "i" | "u") {
        return Err(PyTypeError::new_err(format!(
            "ids must be integers; got dtype {}",
            arr.getattr("dtype")?.str()?
        )));
    }
    if kind == "i" && size > 0 && arr.call_method0("min")?.extract::<i64>()? < 0 {
        return Err(PyValueError::new_err("ids must be non-negative"));
    }
    let ndim: usize = arr.getattr("ndim")?.extract()?;
    if ndim > 1 {
        return Err(PyValueError::new_err(format!(
            "ids must be an int or a 1-D sequence of ints; got shape {}",
            arr.getattr("shape")?.str()?
        )));
    }
    let flat = arr.call_method1("reshape", (-1,))?;
    let kwargs = PyDict::new(obj.py());
    kwargs.set_item("dtype", np.getattr("uint64")?)?;
    let out = np.call_method("ascontiguousarray", (flat,), Some(&kwargs))?;
    Ok(out.cast_into::<PyArray1<u64>>()?)
}

/// Ids given from Python, as the collection keys its points.
pub(crate) enum PyIds {
    Int(Vec<u64>),
    Str(Vec<String>),
}

impl PyIds {
    pub(crate) fn len(&self) -> usize {
        match self {
            PyIds::Int(v) => v.len(),
            PyIds::Str(v) => v.len(),
        }
    }

    /// As a `$id` operand.
    pub(crate) fn id_match(&self) -> trovedb::IdMatch {
        match self {
            PyIds::Int(v) => trovedb::IdMatch::ints(v.iter().copied()),
            PyIds::Str(v) => trovedb::IdMatch::keys(v.iter().cloned()),
        }
    }
}

/// `obj` as ids of a collection keyed by strings (`keyed`) or integers, and whether it was
/// one id rather than a sequence. Errors say which kind the collection takes.
pub(crate) fn ids_from_py(
    obj: &Bound<'_, PyAny>,
    keyed: bool,
    name: &str,
) -> PyResult<(PyIds, bool)> {
    if !keyed {
        if obj.is_instance_of::<PyString>() || first_is_str(obj)? {
            return Err(PyTypeError::new_err(format!(
                "collection `{name}` is keyed by integers (id_type=\"int\"); got a string id \
                 (create the collection with id_type=\"str\" to key it by strings)"
            )));
        }
        let single = obj.extract::<u64>().is_ok() && !obj.hasattr("__len__")?;
        let arr = id_array(obj)?;
        let ro = arr.readonly();
        return Ok((PyIds::Int(ro.as_slice()?.to_vec()), single));
    }
    if obj.is_instance_of::<PyString>() {
        return Ok((PyIds::Str(vec![obj.extract()?]), true));
    }
    if obj.is_instance_of::<PyDict>() || !obj.hasattr("__iter__")? {
        return Err(PyTypeError::new_err(format!(
            "collection `{name}` is keyed by strings (id_type=\"str\"): ids must be a str or a \
             sequence of str; got {}",
            obj.get_type().name()?
        )));
    }
    let mut out = Vec::new();
    for (i, item) in obj.try_iter()?.enumerate() {
        let item = item?;
        if !item.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(format!(
                "collection `{name}` is keyed by strings (id_type=\"str\"): the id at \
                 position {i} is {} {}",
                item.get_type().name()?,
                item.repr()?
            )));
        }
        out.push(item.extract()?);
    }
    Ok((PyIds::Str(out), false))
}

/// Whether `obj` is a non-empty sequence (or a numpy array of strings) whose first item is
/// a string.
fn first_is_str(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        return Ok(obj.len()? > 0 && obj.get_item(0)?.is_instance_of::<PyString>());
    }
    if obj.hasattr("dtype")? {
        let kind = dtype_kind(obj)?;
        return Ok(kind == "U" || kind == "S");
    }
    Ok(false)
}

/// The id of a stored point as Python sees it: its string key, or its integer id.
pub(crate) fn id_to_py<'py>(
    py: Python<'py>,
    id: u64,
    key: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match key {
        Some(k) => PyString::new(py, k).into_any(),
        None => id.into_pyobject(py)?.into_any(),
    })
}

/// A numpy scalar (`np.int64`, `np.float32`, `np.bool_`, `np.str_`, ...) as the Python
/// value it holds; `None` for anything else.
fn numpy_scalar<'py>(v: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let t = v.get_type();
    if t.getattr("__module__")?.extract::<String>().ok().as_deref() != Some("numpy") {
        return Ok(None);
    }
    if !v.hasattr("item")? || !v.hasattr("dtype")? || v.getattr("ndim")?.extract::<usize>()? != 0 {
        return Ok(None);
    }
    Ok(Some(v.call_method0("item")?))
}

fn value_from_py(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Some(plain) = numpy_scalar(v)? {
        return value_from_py(key, &plain);
    }
    if v.is_none() {
        Ok(Value::Null)
    } else if v.is_instance_of::<PyBool>() {
        Ok(Value::Bool(v.extract()?))
    } else if v.is_instance_of::<PyInt>() {
        v.extract::<i64>().map(Value::Int).map_err(|_| {
            PyValueError::new_err(format!(
                "payload field `{key}`: integer does not fit in 64 bits"
            ))
        })
    } else if v.is_instance_of::<PyFloat>() {
        Ok(Value::Float(v.extract()?))
    } else if v.is_instance_of::<PyString>() {
        Ok(Value::Str(v.extract()?))
    } else if v.is_instance_of::<PyList>()
        || v.is_instance_of::<PyTuple>()
        || (v.hasattr("dtype")? && v.hasattr("tolist")?)
    {
        // A list, a tuple, or a numpy array (of strings: `tolist()` gives Python values).
        let items = if v.hasattr("dtype")? {
            v.call_method0("tolist")?
        } else {
            v.clone()
        };
        let mut tags = Vec::new();
        for (i, item) in items.try_iter()?.enumerate() {
            let item = item?;
            let item = numpy_scalar(&item)?.unwrap_or(item);
            if !item.is_instance_of::<PyString>() {
                return Err(PyTypeError::new_err(format!(
                    "payload field `{key}`: a list may hold only strings (tags); item {i} is {} \
                     {} (store numbers as separate fields, or as strings)",
                    item.get_type().name()?,
                    item.repr()?
                )));
            }
            tags.push(item.extract()?);
        }
        Ok(Value::Tags(tags))
    } else if v.is_instance_of::<PyDict>() {
        Err(PyTypeError::new_err(format!(
            "payload field `{key}`: nested objects are not supported; flatten them into dotted \
             field names (\"{key}.name\": ...), which filters reach as they are"
        )))
    } else if v.hasattr("isoformat")? {
        Err(PyTypeError::new_err(format!(
            "payload field `{key}`: dates and times are not stored as such; store \
             value.isoformat() (a string: compares in time order for one format and time zone) \
             or value.timestamp() (a float)"
        )))
    } else {
        Err(PyTypeError::new_err(format!(
            "payload field `{key}`: unsupported type {} (use str, int, float, bool, None or a list of str)",
            v.get_type().name()?
        )))
    }
}

/// A filter dict (Mongo style) as a core filter; `None` means no filter. The dict goes
/// through `json.dumps`, so anything JSON-serialisable is accepted and parsed by the core.
pub(crate) fn filter_from_py(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<trovedb::Filter>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    if !obj.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err("filter must be a dict"));
    }
    // numpy scalars (from pandas columns, say) are written as the values they hold.
    let default = pyo3::types::PyCFunction::new_closure(
        obj.py(),
        None,
        None,
        |args: &Bound<'_, pyo3::types::PyTuple>,
         _kw: Option<&Bound<'_, PyDict>>|
         -> PyResult<Py<PyAny>> {
            let v = args.get_item(0)?;
            match numpy_scalar(&v)? {
                Some(plain) => Ok(plain.unbind()),
                None => Err(PyTypeError::new_err(format!(
                    "filter value of type {} is not supported (use str, int, float, bool, None or lists of them)",
                    v.get_type().name()?
                ))),
            }
        },
    )?;
    let kwargs = PyDict::new(obj.py());
    kwargs.set_item("default", default)?;
    let text: String = PyModule::import(obj.py(), "json")?
        .call_method("dumps", (obj,), Some(&kwargs))?
        .extract()?;
    trovedb::Filter::from_json_str(&text)
        .map(Some)
        .map_err(crate::error::to_py)
}

/// A dict as a payload (`None` is an empty payload).
pub(crate) fn payload_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Payload> {
    if obj.is_none() {
        return Ok(Payload::new());
    }
    let d = obj
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("each payload must be a dict or None"))?;
    let mut p = Payload::new();
    for (k, v) in d.iter() {
        let key: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err("payload keys must be str"))?;
        let value = value_from_py(&key, &v)?;
        p.insert(key, value);
    }
    Ok(p)
}

pub(crate) fn payload_to_py<'py>(py: Python<'py>, p: &Payload) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in p {
        match v {
            Value::Bool(b) => d.set_item(k, *b)?,
            Value::Int(i) => d.set_item(k, *i)?,
            Value::Float(f) => d.set_item(k, *f)?,
            Value::Str(s) => d.set_item(k, s)?,
            Value::Tags(t) => d.set_item(k, PyList::new(py, t)?)?,
            _ => d.set_item(k, py.None())?,
        }
    }
    Ok(d)
}
