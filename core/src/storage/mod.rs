//! Everything that touches the file system: the write-ahead log, sealed segment files,
//! deletion files, the manifest, the lock file. `index/` and `filter/` never see a path.

pub(crate) mod backend;
pub(crate) mod backup;
pub(crate) mod deletes;
pub(crate) mod fsutil;
pub(crate) mod manifest;
pub(crate) mod mmap;
pub(crate) mod published;
pub(crate) mod segment;
pub(crate) mod wal;

#[cfg(target_endian = "big")]
compile_error!("trovedb's on-disk format is little-endian and is read by casting; big-endian targets are not supported");
