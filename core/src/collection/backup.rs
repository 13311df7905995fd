//! Online backup: a consistent copy of a collection (and of a database) while writes go on.

use std::path::Path;

use super::collection::{wal_dir, Collection, Role};
use super::db::Database;
use super::follow::{Follow, RETRIES};
use crate::error::{Error, Result};
use crate::storage::backup::Source;
use crate::storage::manifest::Manifest;
use crate::storage::{fsutil, wal};

/// What [`Database::backup`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The collections copied, by name.
    pub collections: Vec<String>,
    /// Files written (segments, deletion files, log files, manifests).
    pub files: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Longest time the write lock of one collection was held to take its copy's point
    /// (opening its files), in microseconds: how long a writer could have waited.
    pub max_lock_micros: u64,
}

impl Collection {
    /// Copy the collection as it is now into the empty directory `dest`: the segments and
    /// deletion files its manifest names, and its log files up to the last record written.
    /// Writes wait only while the files are opened (under the write lock); the bytes are
    /// copied after. Returns (files, bytes, microseconds the lock was held).
    pub(super) fn backup_into(&self, dest: &Path) -> Result<(usize, u64, u64)> {
        self.check_open()?;
        let (manifest, sources, held) = match &self.role {
            Role::Writer { .. } => {
                let ws = self.writer("backup")?;
                let t = std::time::Instant::now();
                let manifest = ws.manifest.clone();
                let sources = self.open_sources(&manifest, Some((ws.wal.path(), ws.wal.len())))?;
                (manifest, sources, t.elapsed().as_micros() as u64)
            }
            Role::Reader(f) => {
                let (manifest, sources) = self.sources_beside_writer(f)?;
                (manifest, sources, 0)
            }
        };
        fsutil::create_dir_all(&wal_dir(dest))?;
        let files = sources.len() + 1;
        let mut bytes = 0;
        for s in sources {
            bytes += s.copy_into(dest)?;
        }
        fsutil::sync_dir(&wal_dir(dest))?;
        manifest.store(dest)?;
        fsutil::sync_dir(dest)?;
        Ok((files, bytes, held))
    }

    /// Open the files `manifest` names and every log file (the one at `active.0` up to
    /// `active.1` bytes; the others whole).
    fn open_sources(
        &self,
        manifest: &Manifest,
        active: Option<(&Path, u64)>,
    ) -> Result<Vec<Source>> {
        let mut sources = Vec::new();
        for seg in &manifest.segments {
            sources.push(Source::open(
                &self.dir.join(&seg.file),
                seg.file.clone(),
                None,
            )?);
            if let Some(d) = &seg.deletes {
                sources.push(Source::open(&self.dir.join(&d.file), d.file.clone(), None)?);
            }
        }
        // Every log file, the one being appended to up to its last record: with the
        // manifest, exactly what recovery would read if the process stopped here.
        for (name, path) in fsutil::list(&wal_dir(&self.dir))? {
            if wal::parse_file_name(&name).is_none() {
                continue;
            }
            let len = active.and_then(|(p, l)| (path == p).then_some(l));
            sources.push(Source::open(&path, format!("wal/{name}"), len)?);
        }
        Ok(sources)
    }

    /// A read-only handle's copy point, taken without the writer's lock (the writer may be
    /// another process): the manifest on disk, then its files and the log files opened,
    /// kept only if the writer published no new manifest meanwhile (a checkpoint could have
    /// removed log files the older manifest needs; a merge, segments it names); otherwise
    /// taken again. A log file is copied as long as it was when opened: a record being
    /// appended then is cut where recovery cuts a torn tail, and was not yet acknowledged.
    fn sources_beside_writer(&self, f: &Follow) -> Result<(Manifest, Vec<Source>)> {
        let mut last = None;
        for _ in 0..RETRIES {
            let before = f.published(&self.dir).generation;
            let taken =
                Manifest::load(&self.dir).and_then(|m| self.open_sources(&m, None).map(|s| (m, s)));
            let moved = f.published(&self.dir).generation != before;
            match taken {
                Ok(t) if !moved => return Ok(t),
                Err(e) if !moved => return Err(e),
                Ok(_) => {}
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::invalid(
                "backup",
                format!(
                    "the writer of {} published {RETRIES} new manifests while the backup \
                     opened its files; try again when writes are quieter",
                    self.dir.display()
                ),
            )
        }))
    }
}

impl Database {
    /// Copy the database into `dest` (a path that does not exist, or an empty directory)
    /// while it stays open and writes go on: every collection as it was at one point during
    /// the call (each at its own point: collections are independent), restorable by opening
    /// `dest`. The copy is assembled in a temporary directory beside `dest` and renamed into
    /// place when complete, so an interrupted backup leaves no partial `dest`. A read-only
    /// handle can take it too (the writer, in this process or another, goes on): its copy
    /// point is the manifest on disk and the log as written when the files were opened.
    ///
    /// ```
    /// # use trovedb::{CollectionConfig, Database, DbOptions, Metric, SearchParams};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Database::open(dir.path(), DbOptions::default())?;
    /// # let c = db.create_collection("c", &CollectionConfig::new(2, Metric::L2))?;
    /// c.upsert(&[7], &[1.0, 2.0], &[])?;
    /// let dest = dir.path().join("backups").join("today");
    /// let report = db.backup(&dest)?;
    /// assert_eq!(report.collections, vec!["c".to_string()]);
    /// let copy = Database::open(&dest, DbOptions::default())?;
    /// assert!(copy.collection("c")?.get(7)?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport> {
        let dest = dest.as_ref();
        if fsutil::exists(dest) && !(fsutil::is_dir(dest) && fsutil::list(dest)?.is_empty()) {
            return Err(Error::invalid(
                "dest",
                format!("{} exists and is not an empty directory", dest.display()),
            ));
        }
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::invalid("dest", format!("{} has no file name", dest.display()))
            })?;
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fsutil::create_dir_all(parent)?;
        let tmp = parent.join(format!(".{name}.backup-tmp"));
        if fsutil::exists(&tmp) {
            fsutil::remove_dir_all(&tmp)?;
        }
        let mut report = BackupReport {
            collections: Vec::new(),
            files: 0,
            bytes: 0,
            max_lock_micros: 0,
        };
        let result = (|| -> Result<()> {
            for c in self.list_collections()? {
                let to = Database::collection_dir_in(&tmp, &c);
                fsutil::create_dir_all(&to)?;
                let (files, bytes, held) = self.collection(&c)?.backup_into(&to)?;
                report.files += files;
                report.bytes += bytes;
                report.max_lock_micros = report.max_lock_micros.max(held);
                report.collections.push(c);
            }
            fsutil::create_dir_all(&Database::collection_dir_in(&tmp, ""))?;
            fsutil::sync_dir(&tmp)?;
            if fsutil::is_dir(dest) {
                fsutil::remove_dir_all(dest)?;
            }
            fsutil::rename(&tmp, dest)?;
            fsutil::sync_dir(parent)
        })();
        if result.is_err() {
            let _ = fsutil::remove_dir_all(&tmp);
        }
        result.map(|()| report)
    }
}
