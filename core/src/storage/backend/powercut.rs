//! A backend that simulates power loss (feature `testing`). It runs every operation on the
//! real file system and keeps a model of what would survive a power cut:
//!
//! - a file's data is durable as of its last `sync_data`/`sync_all` (bytes written since
//!   are volatile);
//! - a file's name (creation, rename, removal) is durable once its directory is synced;
//! - directories themselves (created, renamed or removed whole) are durable at once — the
//!   engine makes its directories before it writes anything that matters in them.
//!
//! Armed to cut at operation `n`, it refuses operation `n` and every later one with `EIO`
//! (the process "lost power": nothing it does reaches the disk). [`restore`] then rewrites
//! the directory as the disk would hold it: the durable names with their durable bytes,
//! optionally each followed by a random prefix of the bytes written after its last sync
//! (a device that wrote some of its cache before losing power).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::Mutex;

use super::{FileBackend, StorageBackend, WritableFile};

#[derive(Debug, Default)]
struct State {
    next_ino: u64,
    /// Files as the running process sees them.
    live: HashMap<PathBuf, u64>,
    /// Files as the disk would list them after a power cut.
    durable_names: HashMap<PathBuf, u64>,
    /// Each inode's bytes as of its last sync (absent: never synced, empty).
    durable_bytes: HashMap<u64, Vec<u8>>,
    /// Mutating operations seen (and refused after the cut).
    ops: u64,
    syncs: u64,
    /// The operation index of every sync (file or directory).
    sync_ops: Vec<u64>,
    cut_at: Option<u64>,
    cut: bool,
    /// What each operation was (kind and path), for a failing test to print.
    trace: Vec<String>,
}

/// The simulated-power-loss backend of one directory tree.
#[derive(Debug)]
pub(crate) struct PowerCut {
    root: PathBuf,
    st: Arc<Mutex<State>>,
}

static ATTACHED: Mutex<Vec<Arc<PowerCut>>> = Mutex::new(Vec::new());

/// The power-cut backend attached to a directory containing `path`, if any.
pub(crate) fn attached(path: &Path) -> Option<Arc<dyn StorageBackend>> {
    let g = ATTACHED.lock();
    g.iter()
        .find(|b| path.starts_with(&b.root))
        .map(|b| Arc::clone(b) as Arc<dyn StorageBackend>)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc_eio())
}

const fn libc_eio() -> i32 {
    5
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Attach a power-cut backend to `root` (its files as they are now count as durable).
/// With `cut_at = Some(n)`, operation `n` (0-based, counting creates, writes, syncs,
/// truncations, renames and removals) and every later one fail with `EIO`.
pub(crate) fn attach(root: &Path, cut_at: Option<u64>) -> io::Result<()> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut st = State {
        cut_at,
        ..State::default()
    };
    for p in files {
        let ino = st.next_ino;
        st.next_ino += 1;
        st.durable_bytes.insert(ino, fs::read(&p)?);
        st.live.insert(p.clone(), ino);
        st.durable_names.insert(p, ino);
    }
    let b = Arc::new(PowerCut {
        root: root.to_path_buf(),
        st: Arc::new(Mutex::new(st)),
    });
    let mut g = ATTACHED.lock();
    g.retain(|x| x.root != root);
    g.push(b);
    Ok(())
}

/// (operations seen, operation index of every sync, whether the cut happened) of the
/// backend at `root`.
pub(crate) fn stats(root: &Path) -> Option<(u64, Vec<u64>, bool)> {
    let g = ATTACHED.lock();
    let b = g.iter().find(|b| b.root == root)?;
    let st = b.st.lock();
    Some((st.ops, st.sync_ops.clone(), st.cut))
}

/// Write into `dest` the tree under `root` as the disk would hold it after the power cut:
/// the durable names with their durable bytes and, with `torn_seed`, each followed by a
/// pseudo-random prefix of the bytes appended after its last sync. `root` stays attached
/// (and cut), so a background thread of the crashed handle that is still finishing can
/// change nothing. Returns `(files with unsynced changes, files that kept a torn tail)`.
pub(crate) fn image(
    root: &Path,
    dest: &Path,
    torn_seed: Option<u64>,
) -> io::Result<(usize, usize)> {
    let b = {
        let g = ATTACHED.lock();
        g.iter()
            .find(|b| b.root == root)
            .map(Arc::clone)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no power-cut backend"))?
    };
    let mut st = b.st.lock();
    st.cut = true;
    let mut rng = torn_seed.unwrap_or(0) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let live_path: HashMap<u64, &PathBuf> = st.live.iter().map(|(p, i)| (*i, p)).collect();
    let (mut lost, mut torn) = (0, 0);
    let mut dirs = Vec::new();
    walk_dirs(root, &mut dirs)?;
    for d in dirs {
        if let Ok(rest) = d.strip_prefix(root) {
            fs::create_dir_all(dest.join(rest))?;
        }
    }
    let mut names: Vec<(&PathBuf, &u64)> = st.durable_names.iter().collect();
    names.sort();
    for (p, ino) in names {
        let mut bytes = st.durable_bytes.get(ino).cloned().unwrap_or_default();
        let now = live_path.get(ino).and_then(|lp| fs::read(lp).ok());
        if let Some(now) = now {
            if now != bytes {
                lost += 1;
                if torn_seed.is_some() && now.len() > bytes.len() && now.starts_with(&bytes) {
                    let extra = now.len() - bytes.len();
                    let keep = (next() % (extra as u64 + 1)) as usize;
                    if keep > 0 {
                        torn += 1;
                        bytes.extend_from_slice(&now[bytes.len()..bytes.len() + keep]);
                    }
                }
            }
        }
        let Ok(rest) = p.strip_prefix(root) else {
            continue;
        };
        let out = dest.join(rest);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&out, bytes)?;
    }
    Ok((lost, torn))
}

/// Detach the backend of `root` (operations go to the file system again).
pub(crate) fn detach(root: &Path) {
    ATTACHED.lock().retain(|b| b.root != root);
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    out.push(dir.to_path_buf());
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk_dirs(&p, out)?;
        }
    }
    Ok(())
}

/// Count a mutating operation; `Err(EIO)` once the cut has come.
fn op(st: &mut State, what: impl FnOnce() -> String) -> io::Result<()> {
    if st.cut {
        return Err(eio());
    }
    if st.cut_at == Some(st.ops) {
        st.cut = true;
        return Err(eio());
    }
    st.ops += 1;
    st.trace.push(what());
    Ok(())
}

/// What each operation under `root` was, in order (for a failing test to print).
pub(crate) fn trace(root: &Path) -> Vec<String> {
    let g = ATTACHED.lock();
    g.iter()
        .find(|b| b.root == root)
        .map(|b| b.st.lock().trace.clone())
        .unwrap_or_default()
}

impl PowerCut {
    fn check(&self) -> io::Result<()> {
        if self.st.lock().cut {
            Err(eio())
        } else {
            Ok(())
        }
    }
}

/// A file written through the power-cut backend.
#[derive(Debug)]
struct SimFile {
    ino: u64,
    file: File,
    st: Arc<Mutex<State>>,
}

impl SimFile {
    fn sync(&self, all: bool) -> io::Result<()> {
        let mut st = self.st.lock();
        op(&mut st, || {
            format!("sync {} ino {}", if all { "all" } else { "data" }, self.ino)
        })?;
        st.syncs += 1;
        let at = st.ops - 1;
        st.sync_ops.push(at);
        if all {
            self.file.sync_all()?;
        } else {
            self.file.sync_data()?;
        }
        let len = self.file.metadata()?.len() as usize;
        let mut bytes = vec![0u8; len];
        self.file.read_exact_at(&mut bytes, 0)?;
        st.durable_bytes.insert(self.ino, bytes);
        Ok(())
    }
}

impl WritableFile for SimFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.st.lock();
        op(&mut st, || {
            format!("write ino {} at {offset} len {}", self.ino, bytes.len())
        })?;
        self.file.write_all_at(bytes, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync(false)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(true)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.st.lock();
        op(&mut st, || format!("set_len ino {} {len}", self.ino))?;
        self.file.set_len(len)
    }
}

impl PowerCut {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn WritableFile>> {
        let mut st = self.st.lock();
        op(&mut st, || {
            format!("open(create={create}) {}", path.display())
        })?;
        let file = OpenOptions::new()
            .create(create)
            .truncate(create)
            .write(true)
            .read(true)
            .open(path)?;
        let ino = if let Some(i) = st.live.get(path) {
            *i
        } else {
            let i = st.next_ino;
            st.next_ino += 1;
            st.live.insert(path.to_path_buf(), i);
            i
        };
        Ok(Arc::new(SimFile {
            ino,
            file,
            st: Arc::clone(&self.st),
        }))
    }
}

impl StorageBackend for PowerCut {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        self.open(path, true)
    }

    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        self.open(path, false)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check()?;
        fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        self.check()?;
        FileBackend.open_read(path)
    }

    fn map(&self, path: &Path) -> io::Result<Mmap> {
        self.check()?;
        FileBackend.map(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.st.lock();
        op(&mut st, || {
            format!("rename {} -> {}", from.display(), to.display())
        })?;
        let is_dir = from.is_dir();
        fs::rename(from, to)?;
        if is_dir {
            // Directories are durable at once (see the module comment): move both views.
            let State {
                live,
                durable_names,
                ..
            } = &mut *st;
            for map in [live, durable_names] {
                let moved: Vec<(PathBuf, u64)> = map
                    .iter()
                    .filter(|(p, _)| p.starts_with(from))
                    .map(|(p, i)| (p.clone(), *i))
                    .collect();
                for (p, i) in moved {
                    map.remove(&p);
                    if let Ok(rest) = p.strip_prefix(from) {
                        map.insert(to.join(rest), i);
                    }
                }
            }
        } else if let Some(i) = st.live.remove(from) {
            st.live.insert(to.to_path_buf(), i);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st.lock();
        op(&mut st, || format!("remove {}", path.display()))?;
        fs::remove_file(path)?;
        st.live.remove(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st.lock();
        op(&mut st, || format!("remove_dir_all {}", path.display()))?;
        fs::remove_dir_all(path)?;
        st.live.retain(|p, _| !p.starts_with(path));
        st.durable_names.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st.lock();
        op(&mut st, || format!("create_dir_all {}", path.display()))?;
        fs::create_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st.lock();
        op(&mut st, || format!("sync_dir {}", dir.display()))?;
        st.syncs += 1;
        let at = st.ops - 1;
        st.sync_ops.push(at);
        File::open(dir)?.sync_all()?;
        let State {
            live,
            durable_names,
            ..
        } = &mut *st;
        durable_names.retain(|p, _| p.parent() != Some(dir) || live.contains_key(p));
        for (p, i) in live.iter() {
            if p.parent() == Some(dir) {
                durable_names.insert(p.clone(), *i);
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        self.check()?;
        FileBackend.list(dir)
    }

    fn stat(&self, path: &Path) -> io::Result<(u64, bool)> {
        self.check()?;
        FileBackend.stat(path)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<File>> {
        self.check()?;
        FileBackend.try_lock(path)
    }
}
