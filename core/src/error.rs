//! The crate's error type. One public [`Error`], whose variants carry named fields so a
//! caller can branch on the condition rather than parse a message.

use std::path::PathBuf;

/// `Result` with trovedb's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a trovedb call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A vector had the wrong number of components.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// The collection's dimension.
        expected: usize,
        /// The length that was passed.
        got: usize,
    },
    /// A vector component was NaN or infinite.
    #[error("vector for id {id} has a non-finite value at component {index}")]
    NonFiniteValue {
        /// The point id whose vector is bad (0 for a query).
        id: u64,
        /// The component index.
        index: usize,
    },
    /// A query vector component was NaN or infinite.
    #[error("query {query} has a non-finite value at component {index}")]
    NonFiniteQuery {
        /// The query's row in the batch (0 for a single query).
        query: usize,
        /// The component index.
        index: usize,
    },
    /// Two different string ids have the same 64-bit id (see [`crate::IdType::Str`]): the
    /// write is refused rather than let one replace the other. Nothing was written.
    #[error(
        "string id {key:?} has the same 64-bit id as the stored id {stored:?}; the write is \
         refused so that neither replaces the other (rename one of them)"
    )]
    IdCollision {
        /// The id being written.
        key: String,
        /// The different id already stored under the same 64-bit id.
        stored: String,
    },
    /// An operation on existing points named one that does not exist. Nothing changed.
    #[error("no point with id {id} (position {position} of the batch); nothing was changed")]
    PointNotFound {
        /// The id as given (a string id in quotes).
        id: String,
        /// Its position in the batch (0 for a single id).
        position: usize,
    },
    /// Any other argument that is out of range or malformed.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The parameter at fault.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A named collection does not exist.
    #[error("collection `{name}` not found")]
    CollectionNotFound {
        /// The name that was asked for.
        name: String,
    },
    /// A collection with that name already exists.
    #[error("collection `{name}` already exists")]
    CollectionExists {
        /// The name that was asked for.
        name: String,
    },
    /// Another handle (in this or another process) holds the database lock.
    #[error(
        "database at {path} is locked by another handle{}: one handle per directory writes \
         at a time; close the other handle first, or open this one read-only \
         (read_only=True in Python, DbOptions::read_only in Rust), which any number of \
         processes can do beside the writer",
        holder.map(|p| format!(" (opened by process {p})")).unwrap_or_default()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The process id written into the lock file by the handle that holds it, when it
        /// could be read (the holder may also be a child that inherited its descriptor).
        holder: Option<u32>,
    },
    /// The handle was opened by another process and reached this one through `fork()`.
    /// Every call on it is refused, so two processes never append to one log; it never
    /// touches the files. Open the database in the child after the fork (or start
    /// workers with the `spawn` method), after closing it in the parent.
    #[error(
        "this handle was opened by process {opened_by} and inherited by process {current} \
         across fork(); it refuses every call so that the database is not corrupted: open \
         the database in the child after the fork (close it in the parent before forking), \
         or start workers with the 'spawn' method"
    )]
    InheritedAcrossFork {
        /// The process that opened the handle.
        opened_by: u32,
        /// The process that used it.
        current: u32,
    },
    /// The call was interrupted (see [`crate::interruptible`]) before it changed anything.
    #[error("{operation} was interrupted before it changed anything")]
    Interrupted {
        /// The call: `upsert`, `flush`, `compact`, `search`.
        operation: &'static str,
    },
    /// A write (or another change) was asked of a handle opened read-only.
    #[error(
        "{operation} needs a writable handle; this one was opened read-only (read_only=True / \
         DbOptions::read_only): do it through the process that opened the database for \
         writing"
    )]
    ReadOnly {
        /// What was asked: `upsert`, `delete`, `flush`, ...
        operation: &'static str,
    },
    /// Bytes on disk are not what the writer wrote.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// The byte offset where the problem was detected.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A file was written by an unsupported format version.
    #[error("{file} has format version {found}; this build reads {oldest}..={current}")]
    IncompatibleFormat {
        /// The file.
        file: PathBuf,
        /// The version found on disk.
        found: u16,
        /// Oldest supported version.
        oldest: u16,
        /// The version this build writes.
        current: u16,
    },
    /// An operating-system I/O error, with the file it concerned.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier write-path I/O error poisoned this handle; reopen the database.
    #[error("collection is poisoned by an earlier I/O error ({first}); reopen the database")]
    Poisoned {
        /// The first error's message.
        first: String,
    },
    /// The handle was closed.
    #[error("the database handle is closed")]
    Closed,
}

impl Error {
    /// Whether this is an I/O error for a file or directory that does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }
}

/// Attach a path to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
