//! Appending records and group commit.
//!
//! Writers append under the collection's write lock, then call [`GroupSync::wait_durable`]
//! after releasing it. The first waiter becomes the leader and issues one `fdatasync`
//! covering every record written so far; the others wait on a condition variable and
//! return when a sync covering their LSN completes. So N concurrent writers share one
//! fsync instead of paying N.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{file_name, record_crc, WAL_HEADER_BYTES, WAL_MAGIC, WAL_VERSION};
use crate::error::{Error, IoContext, Result};
use crate::storage::backend::WritableFile;
use crate::storage::fsutil::{self, sync_dir, write_at};
use crate::storage::published::PageWriter;

/// The WAL file currently being appended to.
#[derive(Debug)]
pub(crate) struct WalWriter {
    path: PathBuf,
    file: Arc<dyn WritableFile>,
    /// Bytes in the file: where the next record goes.
    len: u64,
    seed: u32,
    first_lsn: u64,
}

fn new_seed(first_lsn: u64) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = crc32fast::Hasher::new();
    h.update(&first_lsn.to_le_bytes());
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.finalize()
}

pub(crate) fn encode_header(seed: u32, first_lsn: u64) -> [u8; WAL_HEADER_BYTES] {
    let mut h = [0u8; WAL_HEADER_BYTES];
    h[..8].copy_from_slice(WAL_MAGIC);
    h[8..10].copy_from_slice(&WAL_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&seed.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

impl WalWriter {
    /// Create `wal-<first_lsn>.log` in `dir` with a fresh seed; durable on return.
    pub(crate) fn create(dir: &Path, first_lsn: u64) -> Result<WalWriter> {
        let path = dir.join(file_name(first_lsn));
        let seed = new_seed(first_lsn);
        let file = fsutil::create(&path)?;
        write_at(&*file, 0, &encode_header(seed, first_lsn), &path)?;
        fsutil::sync_all(&*file, &path)?;
        sync_dir(dir)?;
        Ok(WalWriter {
            path,
            file,
            len: WAL_HEADER_BYTES as u64,
            seed,
            first_lsn,
        })
    }

    /// Reopen an existing file for appending at `valid_len` (the end of its last good
    /// record, as found by replay).
    pub(crate) fn reopen(path: &Path, seed: u32, first_lsn: u64, valid_len: u64) -> Result<Self> {
        let file = fsutil::open_write(path)?;
        Ok(WalWriter {
            path: path.to_path_buf(),
            file,
            len: valid_len,
            seed,
            first_lsn,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn first_lsn(&self) -> u64 {
        self.first_lsn
    }

    /// Bytes in the file (records appended so far, synced or not).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn file(&self) -> Arc<dyn WritableFile> {
        Arc::clone(&self.file)
    }

    /// Append one record. Not durable until a sync covers it.
    pub(crate) fn append(&mut self, lsn: u64, kind: u8, body: &[u8]) -> Result<()> {
        let mut head = [0u8; super::RECORD_HEADER_BYTES];
        head[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        head[4..8].copy_from_slice(&record_crc(self.seed, lsn, kind, body).to_le_bytes());
        head[8..16].copy_from_slice(&lsn.to_le_bytes());
        head[16] = kind;
        write_at(&*self.file, self.len, &head, &self.path)?;
        write_at(&*self.file, self.len + head.len() as u64, body, &self.path)?;
        self.len += (head.len() + body.len()) as u64;
        Ok(())
    }

    /// fsync the file now.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().at(&self.path)
    }
}

#[derive(Debug)]
struct SyncState {
    written: u64,
    synced: u64,
    syncing: bool,
    file: Arc<dyn WritableFile>,
    path: PathBuf,
    failed: Option<String>,
}

/// Where the group sync tells read-only handles how far they may read (see
/// `storage::published`).
#[derive(Debug)]
pub(crate) struct Visibility {
    pub page: PageWriter,
    /// Publish records when written (durability `off`) rather than when synced.
    pub on_write: bool,
}

/// Group-commit coordinator shared by a collection's writers.
#[derive(Debug)]
pub(crate) struct GroupSync {
    state: Mutex<SyncState>,
    cv: Condvar,
    visibility: Visibility,
}

impl GroupSync {
    pub(crate) fn new(w: &WalWriter, durable_lsn: u64, visibility: Visibility) -> GroupSync {
        GroupSync {
            state: Mutex::new(SyncState {
                written: durable_lsn,
                synced: durable_lsn,
                syncing: false,
                file: w.file(),
                path: w.path().to_path_buf(),
                failed: None,
            }),
            cv: Condvar::new(),
            visibility,
        }
    }

    /// Record that `lsn` has been written to the current file.
    pub(crate) fn note_written(&self, lsn: u64) {
        let mut st = self.state.lock();
        st.written = st.written.max(lsn);
        if self.visibility.on_write {
            self.visibility.page.publish_lsn(lsn);
        }
    }

    /// The writer moved to a new file after syncing the old one: everything written so
    /// far is durable.
    pub(crate) fn rotated(&self, w: &WalWriter) {
        let mut st = self.state.lock();
        st.synced = st.written;
        self.visibility.page.publish_lsn(st.synced);
        st.file = w.file();
        st.path = w.path().to_path_buf();
        self.cv.notify_all();
    }

    /// The writer synced the current file itself: records through `lsn` are durable.
    pub(crate) fn synced_through(&self, lsn: u64) {
        let mut st = self.state.lock();
        st.synced = st.synced.max(lsn.min(st.written));
        self.visibility.page.publish_lsn(st.synced);
        self.cv.notify_all();
    }

    /// The manifest was replaced: tell read-only handles.
    pub(crate) fn manifest_replaced(&self) {
        self.visibility.page.bump_generation();
    }

    /// The first sync error, if any. Once set, the log refuses to report durability.
    pub(crate) fn failure(&self) -> Option<String> {
        self.state.lock().failed.clone()
    }

    /// Block until a sync covering `lsn` completed (leading one if nobody is).
    pub(crate) fn wait_durable(&self, lsn: u64) -> Result<()> {
        let mut st = self.state.lock();
        loop {
            if let Some(first) = &st.failed {
                return Err(Error::Poisoned {
                    first: first.clone(),
                });
            }
            if st.synced >= lsn {
                return Ok(());
            }
            if st.syncing {
                self.cv.wait(&mut st);
            } else {
                self.lead_sync(&mut st);
                self.cv.notify_all();
            }
        }
    }

    /// Sync whatever has been written (used by the `batch` durability timer).
    pub(crate) fn sync_pending(&self) {
        let mut st = self.state.lock();
        if st.synced < st.written && !st.syncing && st.failed.is_none() {
            self.lead_sync(&mut st);
            self.cv.notify_all();
        }
    }

    fn lead_sync(&self, st: &mut MutexGuard<'_, SyncState>) {
        st.syncing = true;
        let target = st.written;
        let file = Arc::clone(&st.file);
        let r = MutexGuard::unlocked(st, || file.sync_data());
        st.syncing = false;
        match r {
            Ok(()) => {
                st.synced = st.synced.max(target);
                self.visibility.page.publish_lsn(st.synced);
            }
            Err(e) => {
                st.failed = Some(format!("fsync of {} failed: {e}", st.path.display()));
            }
        }
    }
}
