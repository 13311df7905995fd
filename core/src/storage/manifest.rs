//! The manifest: the list of live segments, their deletion files, the WAL checkpoint.
//! Stored as `MANIFEST`, a framed JSON body (magic, version, CRC), replaced atomically
//! by `fsutil::write_atomic` (temp file, fsync, rename, fsync directory).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::fsutil::{frame, read, unframe, write_atomic};
use crate::types::CollectionConfig;

const MAGIC: &[u8; 8] = b"TROVMAN\0";
/// Format version this build writes.
pub(crate) const MANIFEST_VERSION: u16 = 1;
pub(crate) const FILE_NAME: &str = "MANIFEST";

/// A sealed segment as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SegmentMeta {
    pub id: u64,
    pub file: String,
    pub rows: u64,
    /// The current deletion file and how many rows it deletes.
    pub deletes: Option<DeleteMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeleteMeta {
    pub file: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format_version: u16,
    pub config: CollectionConfig,
    /// Every WAL record with an LSN at or below this is reflected in the segments.
    pub checkpoint_lsn: u64,
    pub next_segment_id: u64,
    pub segments: Vec<SegmentMeta>,
}

impl Manifest {
    pub(crate) fn new(config: CollectionConfig) -> Manifest {
        Manifest {
            format_version: MANIFEST_VERSION,
            config,
            checkpoint_lsn: 0,
            next_segment_id: 1,
            segments: Vec::new(),
        }
    }

    pub(crate) fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(FILE_NAME);
        let bytes = read(&path)?;
        let (_, body) = unframe(&path, &bytes, MAGIC, MANIFEST_VERSION, MANIFEST_VERSION)?;
        let m: Manifest = serde_json::from_slice(body).map_err(|e| {
            Error::corruption(&path, 16 + e.column() as u64, format!("manifest body: {e}"))
        })?;
        m.config
            .validate()
            .map_err(|e| Error::corruption(&path, 16, format!("manifest config: {e}")))?;
        for s in &m.segments {
            let ok_name = |n: &str| !n.is_empty() && !n.contains(['/', '\\']) && n != "..";
            if !ok_name(&s.file) || s.deletes.as_ref().is_some_and(|d| !ok_name(&d.file)) {
                return Err(Error::corruption(
                    &path,
                    16,
                    "manifest names a file outside the collection",
                ));
            }
        }
        Ok(m)
    }

    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid("manifest", e.to_string()))?;
        write_atomic(&dir.join(FILE_NAME), &frame(MAGIC, MANIFEST_VERSION, &body))
    }
}
