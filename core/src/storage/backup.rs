//! Copying a collection's files for an online backup (`Database::backup`). The writer
//! opens every file the copy needs while it holds the write lock, noting how many bytes of
//! each belong to the copy; the bytes are copied afterwards, with the lock released. An
//! opened file stays readable after the writer retires it (a merge, a log trim), and no
//! byte below the noted length changes afterwards (segments and deletion files are
//! immutable, the log is append-only), so the copy is the collection as it was at that one
//! point, whatever is written meanwhile.

use std::io::Read;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::storage::fsutil;

/// A file to copy: opened, with the number of its bytes that belong to the backup.
#[derive(Debug)]
pub(crate) struct Source {
    /// The path relative to the collection directory (`seg-...seg`, `wal/wal-...log`).
    pub(crate) name: String,
    file: std::fs::File,
    len: u64,
}

impl Source {
    /// Open `path` for copying its first `len` bytes (all of them when `None`).
    pub(crate) fn open(path: &Path, name: String, len: Option<u64>) -> Result<Source> {
        let file = fsutil::open_read(path)?;
        let len = match len {
            Some(l) => l,
            None => file.metadata().at(path)?.len(),
        };
        Ok(Source { name, file, len })
    }

    /// Write the bytes to `dir/name`, durable on return.
    pub(crate) fn copy_into(mut self, dir: &Path) -> Result<u64> {
        let to = dir.join(&self.name);
        let out = fsutil::create(&to)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < self.len {
            let want = usize::try_from((self.len - at).min(buf.len() as u64)).unwrap_or(buf.len());
            let got = self.file.read(&mut buf[..want]).at(&to)?;
            if got == 0 {
                return Err(crate::error::Error::io(
                    &to,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("source ended at byte {at} of {}", self.len),
                    ),
                ));
            }
            fsutil::write_at(&*out, at, &buf[..got], &to)?;
            at += got as u64;
        }
        fsutil::sync_all(&*out, &to)?;
        Ok(at)
    }
}
