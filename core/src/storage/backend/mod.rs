//! Every file operation of the engine goes through [`StorageBackend`]. The production
//! backend, [`FileBackend`], is the operating system's file system. A test (feature
//! `testing`) can attach another to a directory: `powercut::PowerCut` keeps
//! written-but-unsynced bytes apart and, on a simulated power cut, throws them away;
//! `faulty::Faulty` makes the n-th operation fail (ENOSPC, EIO, ...) or tears the n-th
//! write.
//!
//! The backend of a path is chosen by [`of`]: the file system, unless a test attached
//! another one to a directory that contains the path.

#[cfg(feature = "testing")]
pub(crate) mod faulty;
#[cfg(all(feature = "testing", unix))]
pub(crate) mod powercut;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

/// A file open for writing. Positions are explicit (`write_at`), so one handle can be
/// appended to under a writer's lock while another thread syncs it.
pub(crate) trait WritableFile: Send + Sync + std::fmt::Debug {
    /// Write all of `bytes` at `offset`.
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Make the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Make the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Truncate or extend to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// The file operations the engine performs. Renames and creations are durable only after
/// [`StorageBackend::sync_dir`] of their directory; data only after a sync of the file.
pub(crate) trait StorageBackend: Send + Sync + std::fmt::Debug {
    /// Create (or truncate) `path` for writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>>;
    /// Open an existing file for writing.
    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Open a file for reading in pieces (a log being replayed or followed).
    fn open_read(&self, path: &Path) -> io::Result<File>;
    /// Map a sealed (never again written) file read-only.
    fn map(&self, path: &Path) -> io::Result<Mmap>;
    /// Rename `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Remove a directory and everything under it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Create a directory and its missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Make the renames, creations and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The entries of `dir` (name, path), unsorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>>;
    /// Length and whether it is a directory.
    fn stat(&self, path: &Path) -> io::Result<(u64, bool)>;
    /// Open (creating) `path` and take an exclusive advisory lock on it without waiting:
    /// `Ok(None)` when another handle holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<File>>;
}

/// The operating system's file system.
#[derive(Debug, Default)]
pub(crate) struct FileBackend;

/// A file of the [`FileBackend`].
#[derive(Debug)]
struct OsFile(File);

impl WritableFile for OsFile {
    #[cfg(unix)]
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, bytes, offset)
    }

    #[cfg(windows)]
    fn write_at(&self, mut offset: u64, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = std::os::windows::fs::FileExt::seek_write(&self.0, bytes, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
            offset += n as u64;
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl StorageBackend for FileBackend {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(path)?;
        Ok(Arc::new(OsFile(f)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let f = OpenOptions::new().write(true).read(true).open(path)?;
        Ok(Arc::new(OsFile(f)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    fn map(&self, path: &Path) -> io::Result<Mmap> {
        super::mmap::map_sealed(&File::open(path)?)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
        Ok(out)
    }

    fn stat(&self, path: &Path) -> io::Result<(u64, bool)> {
        let md = fs::metadata(path)?;
        Ok((md.len(), md.is_dir()))
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

fn file_backend() -> Arc<dyn StorageBackend> {
    static FS: OnceLock<Arc<dyn StorageBackend>> = OnceLock::new();
    Arc::clone(FS.get_or_init(|| Arc::new(FileBackend)))
}

/// The backend that owns `path`.
pub(crate) fn of(path: &Path) -> Arc<dyn StorageBackend> {
    #[cfg(all(feature = "testing", unix))]
    if let Some(b) = powercut::attached(path) {
        return b;
    }
    #[cfg(feature = "testing")]
    if let Some(b) = faulty::attached(path) {
        return b;
    }
    let _ = path;
    file_backend()
}
