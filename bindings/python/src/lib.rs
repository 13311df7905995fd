//! `trovedb._core`: the native module behind the `trovedb` Python package. It only
//! registers the classes and exceptions; each class lives in its own file, and all
//! engine logic stays in the `trovedb` crate.

mod collection;
mod convert;
mod database;
mod error;
mod interrupt;
mod results;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<database::PyDatabase>()?;
    m.add_class::<collection::PyCollection>()?;
    m.add_class::<results::SearchResult>()?;
    m.add_class::<results::BatchResult>()?;
    m.add_class::<results::PyHit>()?;
    m.add_function(wrap_pyfunction!(database::open, m)?)?;
    m.add_function(wrap_pyfunction!(database::repair, m)?)?;
    m.add_function(wrap_pyfunction!(database::analyze, m)?)?;
    error::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
