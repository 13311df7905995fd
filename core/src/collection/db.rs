//! The database handle: a directory of collections behind an advisory lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::collection::Collection;
use super::options::DbOptions;
use super::repair::{repair_collection, RepairReport};
use super::stats::TornTail;
use crate::error::{Error, Result};
use crate::process::Owner;
use crate::storage::fsutil::{self, LockFile};
use crate::types::CollectionConfig;

const COLLECTIONS_DIR: &str = "collections";
const LOCK_FILE: &str = "LOCK";

/// What [`Database::open_all`] found.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Collections that opened, sorted by name.
    pub opened: Vec<String>,
    /// Collections that could not be opened, sorted by name, each with its error (for
    /// damaged files, [`Error::Corruption`] naming the file and offset).
    pub failed: Vec<(String, Error)>,
    /// Collections whose recovery cut a damaged end off the log (see [`TornTail`]): a
    /// record being appended at a crash, or a damaged last record whose write is lost.
    pub torn_tails: Vec<(String, TornTail)>,
}

/// An open database directory. One handle per directory at a time (a second opener,
/// in this process or another, gets [`Error::Locked`]). A handle belongs to the process
/// that opened it: in a child that inherited it through `fork()`, every call returns
/// [`Error::InheritedAcrossFork`] and nothing is written.
#[derive(Debug)]
pub struct Database {
    root: PathBuf,
    options: DbOptions,
    lock: Mutex<Held>,
    open: Mutex<HashMap<String, Arc<Collection>>>,
    /// The process that opened the handle (see [`Error::InheritedAcrossFork`]).
    owner: Owner,
}

/// What an open handle holds.
#[derive(Debug)]
enum Held {
    /// The writer's lock (released when dropped).
    Writer(#[allow(dead_code, reason = "held for its Drop")] LockFile),
    /// Nothing: a read-only handle.
    Reader,
    Closed,
}

/// `Io` (not found) for a path that holds no database.
fn no_database(root: &Path, why: &str) -> Error {
    Error::io(
        root,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no trovedb database here{why}"),
        ),
    )
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("collection names are 1-128 chars of [A-Za-z0-9_.-], not starting with '.'; got `{name}`"),
        ))
    }
}

impl Database {
    /// Open the database at `path`, creating the directory if it does not exist.
    ///
    /// ```
    /// use std::time::Duration;
    /// use trovedb::{Database, DbOptions, Durability};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path();
    /// // Writes acknowledged once fsynced (the default), or synced every 50 ms in the background.
    /// let db = Database::open(path, DbOptions::default())?;
    /// db.close()?;
    /// let fast = Database::open(path, DbOptions::default().durability(Durability::Batch(Duration::from_millis(50))))?;
    /// fast.close()?;
    /// // Beside a writer, in this process or another: a read-only handle that follows it.
    /// let reader = Database::open(path, DbOptions::default().read_only(true))?;
    /// assert!(reader.is_read_only());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, options: DbOptions) -> Result<Database> {
        options.compaction.validate()?;
        if options.tune_allocator {
            crate::background::tune_allocator();
        }
        let root = path.as_ref().to_path_buf();
        let cdir = root.join(COLLECTIONS_DIR);
        if options.read_only {
            // Creates nothing, locks nothing, cleans nothing up: that is the writer's job.
            if !fsutil::is_dir(&cdir) {
                return Err(no_database(
                    &root,
                    " (a read-only open does not create one)",
                ));
            }
            return Ok(Database {
                root,
                options,
                lock: Mutex::new(Held::Reader),
                open: Mutex::new(HashMap::new()),
                owner: Owner::current(),
            });
        }
        fsutil::create_dir_all(&cdir)?;
        let lock = LockFile::acquire(&root.join(LOCK_FILE))?;
        // Leftovers of an interrupted create or drop.
        for (name, p) in fsutil::list(&cdir)? {
            if name.starts_with(".tmp-") || name.starts_with(".drop-") {
                fsutil::remove_dir_all(&p)?;
            }
        }
        Ok(Database {
            root,
            options,
            lock: Mutex::new(Held::Writer(lock)),
            open: Mutex::new(HashMap::new()),
            owner: Owner::current(),
        })
    }

    /// Repair the database at `path` after damage that makes a collection fail to open:
    /// drop damaged segments, cut each log at its first bad record, and report exactly what
    /// was lost (see [`RepairReport`]); then check that every collection opens. Takes the
    /// writer's lock ([`Error::Locked`] while a writer has the database open). Never done
    /// implicitly: opening a damaged database keeps failing with [`Error::Corruption`].
    ///
    /// ```
    /// use trovedb::{Database, DbOptions};
    /// # let dir = tempfile::tempdir()?;
    /// # Database::open(dir.path(), DbOptions::default())?.close()?;
    /// let report = Database::repair(dir.path())?;
    /// assert!(report.ok() && !report.changed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn repair(path: impl AsRef<Path>) -> Result<RepairReport> {
        let root = path.as_ref();
        let cdir = root.join(COLLECTIONS_DIR);
        if !fsutil::is_dir(&cdir) {
            return Err(no_database(root, ""));
        }
        let _lock = LockFile::acquire(&root.join(LOCK_FILE))?;
        let mut report = RepairReport::default();
        for (name, dir) in fsutil::list(&cdir)? {
            if name.starts_with('.') || !fsutil::is_dir(&dir) {
                continue;
            }
            report.collections.push(repair_collection(&name, &dir));
        }
        Ok(report)
    }

    /// Open with default options.
    pub fn open_default(path: impl AsRef<Path>) -> Result<Database> {
        Self::open(path, DbOptions::default())
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The options it was opened with.
    pub fn options(&self) -> &DbOptions {
        &self.options
    }

    fn check_open(&self) -> Result<()> {
        self.owner.check()?;
        match *self.lock.lock() {
            Held::Closed => Err(Error::Closed),
            _ => Ok(()),
        }
    }

    fn check_writable(&self, operation: &'static str) -> Result<()> {
        self.check_open()?;
        if self.options.read_only {
            Err(Error::ReadOnly { operation })
        } else {
            Ok(())
        }
    }

    /// Whether the handle was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.options.read_only
    }

    /// Bring every open collection of a read-only handle up to what the writer has
    /// published (reads do this by themselves). Does nothing on a writable handle.
    pub fn refresh(&self) -> Result<()> {
        self.check_open()?;
        let open: Vec<Arc<Collection>> = self.open.lock().values().cloned().collect();
        open.iter().try_for_each(|c| c.refresh())
    }

    fn open_collection(&self, name: &str, dir: &Path) -> Result<Arc<Collection>> {
        if self.options.read_only {
            Collection::open_reader(name, dir, &self.options)
        } else {
            Collection::open(name, dir, &self.options)
        }
    }

    fn dir_of(&self, name: &str) -> PathBuf {
        self.root.join(COLLECTIONS_DIR).join(name)
    }

    /// Create a collection. Fails with [`Error::CollectionExists`] if the name is taken.
    pub fn create_collection(
        &self,
        name: &str,
        config: &CollectionConfig,
    ) -> Result<Arc<Collection>> {
        self.check_writable("create_collection")?;
        validate_name(name)?;
        config.validate()?;
        let config = &config.resolved();
        let mut open = self.open.lock();
        let dir = self.dir_of(name);
        if open.contains_key(name) || fsutil::exists(&dir) {
            return Err(Error::CollectionExists {
                name: name.to_owned(),
            });
        }
        Collection::create_files(&dir, config)?;
        let c = Collection::open(name, &dir, &self.options)?;
        open.insert(name.to_owned(), Arc::clone(&c));
        Ok(c)
    }

    /// The collection `name` if it exists with exactly this config, else a new one created
    /// with it (what a script that runs twice wants). An existing collection with another
    /// config is an `InvalidArgument` naming each difference; nothing is changed.
    pub fn get_or_create_collection(
        &self,
        name: &str,
        config: &CollectionConfig,
    ) -> Result<Arc<Collection>> {
        config.validate()?;
        let config = &config.resolved();
        let c = match self.collection(name) {
            Err(Error::CollectionNotFound { .. }) => match self.create_collection(name, config) {
                Err(Error::CollectionExists { .. }) => self.collection(name)?,
                created => return created,
            },
            other => other?,
        };
        let have = c.config();
        let mut diffs = Vec::new();
        if have.dim != config.dim {
            diffs.push(format!("dim {} (asked {})", have.dim, config.dim));
        }
        if have.metric != config.metric {
            diffs.push(format!(
                "metric {} (asked {})",
                have.metric.name(),
                config.metric.name()
            ));
        }
        if have.index != config.index {
            diffs.push(format!("index {:?} (asked {:?})", have.index, config.index));
        }
        if have.indexed_fields != config.indexed_fields {
            diffs.push(format!(
                "indexed_fields {:?} (asked {:?})",
                have.indexed_fields, config.indexed_fields
            ));
        }
        if have.text != config.text {
            diffs.push(format!("text {:?} (asked {:?})", have.text, config.text));
        }
        if have.id_type != config.id_type {
            diffs.push(format!(
                "id_type {:?} (asked {:?})",
                have.id_type.name(),
                config.id_type.name()
            ));
        }
        if have.quantization != config.quantization {
            diffs.push(format!(
                "quantization {:?} (asked {:?})",
                have.quantization, config.quantization
            ));
        }
        if diffs.is_empty() {
            Ok(c)
        } else {
            Err(Error::invalid(
                "config",
                format!(
                    "collection `{name}` exists with another config: {}",
                    diffs.join("; ")
                ),
            ))
        }
    }

    /// Open an existing collection (recovering it from its log on first use).
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.check_open()?;
        validate_name(name)?;
        let mut open = self.open.lock();
        if let Some(c) = open.get(name) {
            return Ok(Arc::clone(c));
        }
        let dir = self.dir_of(name);
        if !fsutil::is_dir(&dir) {
            return Err(Error::CollectionNotFound {
                name: name.to_owned(),
            });
        }
        let c = self.open_collection(name, &dir)?;
        open.insert(name.to_owned(), Arc::clone(&c));
        Ok(c)
    }

    /// The directory of collection `name` in a database rooted at `root`.
    pub(super) fn collection_dir_in(root: &Path, name: &str) -> PathBuf {
        root.join(COLLECTIONS_DIR).join(name)
    }

    /// Names of all collections, sorted.
    pub fn list_collections(&self) -> Result<Vec<String>> {
        self.check_open()?;
        Ok(fsutil::list(&self.root.join(COLLECTIONS_DIR))?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !n.starts_with('.'))
            .collect())
    }

    /// Open every collection. A collection that cannot be opened (a damaged file, a
    /// newer format, an I/O error) does not stop the others: it is reported by name with
    /// its error, and the collections that opened are ready in this handle.
    pub fn open_all(&self) -> Result<OpenReport> {
        let mut report = OpenReport::default();
        for name in self.list_collections()? {
            match self.collection(&name) {
                Ok(c) => {
                    if let Some(t) = c.torn_tail() {
                        report.torn_tails.push((name.clone(), t));
                    }
                    report.opened.push(name);
                }
                // Another handle dropped it between the listing and the open.
                Err(Error::CollectionNotFound { .. }) => {}
                Err(e @ Error::Closed) => return Err(e),
                Err(e) => report.failed.push((name, e)),
            }
        }
        Ok(report)
    }

    /// Delete a collection and its files. Existing handles to it return [`Error::Closed`].
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        self.check_writable("drop_collection")?;
        validate_name(name)?;
        let mut open = self.open.lock();
        let dir = self.dir_of(name);
        if !fsutil::is_dir(&dir) {
            return Err(Error::CollectionNotFound {
                name: name.to_owned(),
            });
        }
        if let Some(c) = open.remove(name) {
            c.close()?;
        }
        // Read-only handles in other processes learn it at their next call.
        crate::storage::published::announce_drop(&dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let trash = self
            .root
            .join(COLLECTIONS_DIR)
            .join(format!(".drop-{name}-{nanos}"));
        fsutil::rename(&dir, &trash)?;
        fsutil::sync_dir(&self.root.join(COLLECTIONS_DIR))?;
        fsutil::remove_dir_all(&trash)
    }

    /// Sync and close every collection and release the lock. Later calls on this
    /// handle or its collections return [`Error::Closed`]. Also done on drop. In a process
    /// that inherited the handle through `fork()`, closing touches nothing (the opener
    /// still owns the files and the lock) and returns `Ok`.
    pub fn close(&self) -> Result<()> {
        if !self.owner.is_current() {
            return Ok(());
        }
        let mut lock = self.lock.lock();
        let mut first_err = None;
        for (_, c) in self.open.lock().drain() {
            if let Err(e) = c.close() {
                first_err.get_or_insert(e);
            }
        }
        *lock = Held::Closed;
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Errors here have nowhere to go; `close()` reports them to callers who care.
        let _ = self.close();
    }
}
