//! Interrupting long calls (Ctrl-C in Python).
//!
//! [`interruptible`] runs a closure with a stop flag that the engine's long calls check at
//! points where stopping leaves nothing half-done: an upsert before its log record is
//! written (after that it completes), a `flush`/`compact` index build (the build is
//! discarded, nothing is published), a batch search between queries. A call that stops
//! returns [`Error::Interrupted`] and has changed nothing. The flag is per call (a
//! thread-local set for the closure's duration), so other threads' calls are unaffected.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

thread_local! {
    static CURRENT: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Run `f` so that setting `stop` (from any thread) makes the trovedb call in progress in
/// `f` stop at its next safe point with [`Error::Interrupted`].
pub fn interruptible<T>(stop: Arc<AtomicBool>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<AtomicBool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = CURRENT.with(|c| c.borrow_mut().replace(stop));
    let _restore = Restore(prev);
    f()
}

/// The stop flag of the calling thread's call, if it runs under [`interruptible`].
pub(crate) fn current() -> Option<Arc<AtomicBool>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Whether `stop` is set.
pub(crate) fn is_set(stop: Option<&Arc<AtomicBool>>) -> bool {
    stop.is_some_and(|s| s.load(Ordering::Acquire))
}

/// `Err(Interrupted)` if the calling thread's call was asked to stop.
pub(crate) fn check(operation: &'static str) -> Result<()> {
    if is_set(current().as_ref()) {
        Err(Error::Interrupted { operation })
    } else {
        Ok(())
    }
}
