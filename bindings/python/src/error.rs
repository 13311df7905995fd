//! Maps every core error to a Python exception. Bad arguments become `ValueError`;
//! engine conditions become subclasses of `trovedb.TroveError`.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

create_exception!(
    trovedb,
    TroveError,
    PyException,
    "Base class of trovedb engine errors."
);
create_exception!(
    trovedb,
    CorruptionError,
    TroveError,
    "Bytes on disk fail a check; the message names the file and offset."
);
create_exception!(
    trovedb,
    IdCollisionError,
    TroveError,
    "A string id has the same 64-bit id as a different stored string id; the write was refused and nothing changed."
);
create_exception!(
    trovedb,
    LockedError,
    TroveError,
    "Another handle holds the database directory."
);
create_exception!(
    trovedb,
    CollectionNotFoundError,
    TroveError,
    "No collection by that name."
);
create_exception!(
    trovedb,
    CollectionExistsError,
    TroveError,
    "A collection by that name exists already."
);
create_exception!(
    trovedb,
    IncompatibleFormatError,
    TroveError,
    "A file was written by an unsupported format version."
);
create_exception!(
    trovedb,
    StorageIOError,
    TroveError,
    "An operating-system I/O error; the message names the file."
);
create_exception!(
    trovedb,
    PoisonedError,
    TroveError,
    "An earlier I/O error stopped writes; reopen the database."
);
create_exception!(
    trovedb,
    InheritedHandleError,
    TroveError,
    "The handle was opened by another process and inherited across fork(); open the database in this process instead."
);
create_exception!(
    trovedb,
    ReadOnlyError,
    TroveError,
    "A change was asked of a handle opened with read_only=True."
);
create_exception!(
    trovedb,
    ClosedError,
    TroveError,
    "The database or collection handle is closed."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TroveError", py.get_type::<TroveError>())?;
    m.add("CorruptionError", py.get_type::<CorruptionError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add(
        "CollectionNotFoundError",
        py.get_type::<CollectionNotFoundError>(),
    )?;
    m.add(
        "CollectionExistsError",
        py.get_type::<CollectionExistsError>(),
    )?;
    m.add(
        "IncompatibleFormatError",
        py.get_type::<IncompatibleFormatError>(),
    )?;
    m.add("StorageIOError", py.get_type::<StorageIOError>())?;
    m.add("IdCollisionError", py.get_type::<IdCollisionError>())?;
    m.add("PoisonedError", py.get_type::<PoisonedError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("ReadOnlyError", py.get_type::<ReadOnlyError>())?;
    m.add(
        "InheritedHandleError",
        py.get_type::<InheritedHandleError>(),
    )?;
    Ok(())
}

/// Convert a core error.
#[allow(clippy::needless_pass_by_value, reason = "used as map_err(to_py)")]
pub(crate) fn to_py(e: trovedb::Error) -> PyErr {
    use trovedb::Error as E;
    let msg = e.to_string();
    match e {
        E::DimensionMismatch { .. }
        | E::NonFiniteValue { .. }
        | E::NonFiniteQuery { .. }
        | E::InvalidArgument { .. } => PyValueError::new_err(msg),
        E::IdCollision { .. } => IdCollisionError::new_err(msg),
        E::PointNotFound { .. } => pyo3::exceptions::PyKeyError::new_err(msg),
        E::CollectionNotFound { .. } => CollectionNotFoundError::new_err(msg),
        E::CollectionExists { .. } => CollectionExistsError::new_err(msg),
        E::Locked { .. } => LockedError::new_err(msg),
        E::Corruption { .. } => CorruptionError::new_err(msg),
        E::IncompatibleFormat { .. } => IncompatibleFormatError::new_err(msg),
        E::Io { .. } => StorageIOError::new_err(msg),
        E::Poisoned { .. } => PoisonedError::new_err(msg),
        E::Closed => ClosedError::new_err(msg),
        E::InheritedAcrossFork { .. } => InheritedHandleError::new_err(msg),
        E::ReadOnly { .. } => ReadOnlyError::new_err(msg),
        // The core enum is non-exhaustive: a variant added later still maps somewhere.
        _ => TroveError::new_err(msg),
    }
}

/// `Result` conversion shorthand.
pub(crate) trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for trovedb::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
