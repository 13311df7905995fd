//! Which process a handle belongs to. `fork()` copies every handle of the parent into the
//! child — its log writer, its in-memory segments, its locks as they stood at that instant —
//! but none of the parent's threads. A handle used from the child would append to the same
//! log as the parent (two processes, two LSN sequences: the log no longer replays), and a
//! lock held by a parent thread at the fork stays held forever in the child. So a handle
//! remembers the process that opened it and refuses to work anywhere else, before it takes
//! a lock or touches a file.

use crate::error::{Error, Result};

/// The process that opened a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pid: u32,
}

impl Owner {
    /// The calling process.
    pub(crate) fn current() -> Owner {
        Owner {
            pid: std::process::id(),
        }
    }

    /// Whether the caller runs in the process that opened the handle.
    pub(crate) fn is_current(self) -> bool {
        std::process::id() == self.pid
    }

    /// `Ok` in the owning process; [`Error::InheritedAcrossFork`] in any other.
    pub(crate) fn check(self) -> Result<()> {
        let current = std::process::id();
        if current == self.pid {
            Ok(())
        } else {
            Err(Error::InheritedAcrossFork {
                opened_by: self.pid,
                current,
            })
        }
    }
}
