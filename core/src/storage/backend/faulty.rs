//! A backend that injects I/O faults (feature `testing`): the n-th file operation under a
//! directory fails with a chosen OS error after it ran (`Fail`: the effect may or may not
//! have reached the disk — the case fsync errors present), or the n-th data write puts only
//! the first half of its bytes in the file and fails (`Tear`: a device that filled up or
//! failed mid-write). Everything else passes through to the file system.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::Mutex;

use super::{FileBackend, StorageBackend, WritableFile};

/// What is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The n-th file operation of any kind runs, then reports failure.
    Fail,
    /// The n-th data write writes only a prefix of its bytes, then reports failure.
    Tear,
}

#[derive(Debug)]
struct Fault {
    mode: Mode,
    countdown: u64,
    errno: i32,
    seen: u64,
    fired: bool,
    /// Cleared: files opened while armed pass through from now on.
    armed: bool,
}

impl Fault {
    /// Count an operation of `kind`; the error to report instead of its result, if this is
    /// the one.
    fn hit(&mut self, kind: Mode) -> Option<io::Error> {
        if !self.armed || self.mode != kind {
            return None;
        }
        self.seen += 1;
        if self.fired {
            return None;
        }
        if self.countdown == 0 {
            self.fired = true;
            return Some(io::Error::from_raw_os_error(self.errno));
        }
        self.countdown -= 1;
        None
    }
}

/// The fault-injecting backend of one directory tree.
#[derive(Debug)]
pub(crate) struct Faulty {
    root: PathBuf,
    fault: Arc<Mutex<Fault>>,
}

static ATTACHED: Mutex<Option<Arc<Faulty>>> = Mutex::new(None);

/// The faulty backend attached to a directory containing `path`, if any.
pub(crate) fn attached(path: &Path) -> Option<Arc<dyn StorageBackend>> {
    let g = ATTACHED.lock();
    g.as_ref()
        .filter(|b| path.starts_with(&b.root))
        .map(|b| Arc::clone(b) as Arc<dyn StorageBackend>)
}

/// Arm a fault under `root` (replacing any armed one): operation `n` (0-based; for `Tear`,
/// data write `n`) fails with OS error `errno`.
pub(crate) fn arm(root: &Path, mode: Mode, n: u64, errno: i32) {
    let b = Arc::new(Faulty {
        root: root.to_path_buf(),
        fault: Arc::new(Mutex::new(Fault {
            mode,
            countdown: n,
            errno,
            seen: 0,
            fired: false,
            armed: true,
        })),
    });
    if let Some(old) = ATTACHED.lock().replace(b) {
        old.fault.lock().armed = false;
    }
}

/// Disarm; returns how many operations of the armed kind were seen and whether it fired.
pub(crate) fn clear() -> Option<(u64, bool)> {
    let b = ATTACHED.lock().take()?;
    let mut f = b.fault.lock();
    f.armed = false;
    Some((f.seen, f.fired))
}

impl Faulty {
    /// Run `op`, then report the injected error instead of its result if this is the one.
    fn run<T>(&self, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let r = op();
        match self.fault.lock().hit(Mode::Fail) {
            Some(e) => Err(e),
            None => r,
        }
    }

    fn wrap(&self, f: io::Result<Arc<dyn WritableFile>>) -> io::Result<Arc<dyn WritableFile>> {
        let inner = self.run(|| f)?;
        Ok(Arc::new(FaultyFile {
            inner,
            fault: Arc::clone(&self.fault),
        }))
    }
}

/// A file written through the faulty backend.
#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn WritableFile>,
    fault: Arc<Mutex<Fault>>,
}

impl FaultyFile {
    fn run<T>(&self, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let r = op();
        match self.fault.lock().hit(Mode::Fail) {
            Some(e) => Err(e),
            None => r,
        }
    }
}

impl WritableFile for FaultyFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let torn = self.fault.lock().hit(Mode::Tear);
        if let Some(e) = torn {
            // Whatever the prefix write reports, the call fails with the injected error.
            let _ = self.inner.write_at(offset, &bytes[..bytes.len() / 2]);
            return Err(e);
        }
        self.run(|| self.inner.write_at(offset, bytes))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.run(|| self.inner.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.run(|| self.inner.sync_all())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.run(|| self.inner.set_len(len))
    }
}

impl StorageBackend for Faulty {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        self.wrap(FileBackend.create(path))
    }

    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        self.wrap(FileBackend.open_write(path))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.run(|| FileBackend.read(path))
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        self.run(|| FileBackend.open_read(path))
    }

    fn map(&self, path: &Path) -> io::Result<Mmap> {
        self.run(|| FileBackend.map(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.run(|| FileBackend.rename(from, to))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.run(|| FileBackend.remove_file(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.run(|| FileBackend.remove_dir_all(path))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.run(|| FileBackend.create_dir_all(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.run(|| FileBackend.sync_dir(dir))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        self.run(|| FileBackend.list(dir))
    }

    fn stat(&self, path: &Path) -> io::Result<(u64, bool)> {
        self.run(|| FileBackend.stat(path))
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<File>> {
        self.run(|| FileBackend.try_lock(path))
    }
}
