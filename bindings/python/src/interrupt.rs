//! Ctrl-C during long calls. A long call runs on a scoped thread under
//! `trovedb::interruptible`, while the calling thread waits without the GIL and, every
//! 50 ms, runs Python's signal handlers. When one raises (KeyboardInterrupt on SIGINT), the
//! call is asked to stop: it stops where stopping changes nothing (then the
//! KeyboardInterrupt says nothing was written), or it was past that point and completes
//! (then the KeyboardInterrupt says it completed). Short calls skip the extra thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::error::{IntoPy, TroveError};

/// Run `f` (the trovedb call `op`) so that Ctrl-C stops it.
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    op: &str,
    f: impl FnOnce() -> trovedb::Result<T> + Send,
) -> PyResult<T> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    std::thread::scope(|s| {
        let flag = Arc::clone(&stop);
        s.spawn(move || {
            // The receiver outlives this thread (it is waited on below).
            let _ = tx.send(trovedb::interruptible(flag, f));
        });
        let mut signal: Option<PyErr> = None;
        let mut rx = rx;
        let result = loop {
            let (got, back) = py.detach(move || (rx.recv_timeout(Duration::from_millis(50)), rx));
            rx = back;
            match got {
                Ok(r) => break r,
                Err(RecvTimeoutError::Timeout) => {
                    if signal.is_none() {
                        if let Err(e) = py.check_signals() {
                            stop.store(true, Ordering::Release);
                            signal = Some(e);
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TroveError::new_err(format!(
                        "{op} failed: its thread panicked"
                    )));
                }
            }
        };
        match (signal, result) {
            (None, r) => r.py_err(),
            (Some(_), Err(trovedb::Error::Interrupted { .. })) => Err(
                PyKeyboardInterrupt::new_err(format!("{op} interrupted: nothing was changed")),
            ),
            (Some(_), Ok(_)) => Err(PyKeyboardInterrupt::new_err(format!(
                "{op} completed before the interrupt could stop it: its changes are kept \
                 (and durable under durability='always')"
            ))),
            // The call failed on its own; the interrupt is raised after it (Python's
            // handler already consumed the signal), the failure chained as its cause.
            (Some(_), Err(e)) => {
                let ki = PyKeyboardInterrupt::new_err(format!("{op} interrupted"));
                ki.set_cause(py, Some(crate::error::to_py(e)));
                Err(ki)
            }
        }
    })
}
