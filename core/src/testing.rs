//! Test hooks (feature `testing`; not a stable API). Fault injection and simulated power
//! loss are storage backends (`storage/backend/`) attached to a directory: every file
//! operation of the engine goes through the backend, so a test can make the n-th one fail
//! with a chosen OS error (`ENOSPC`, `EIO`, ...) after it ran — an operation reported as
//! failed whose effect may or may not have reached the disk, the case fsync errors present —
//! tear the n-th write, or cut the power. Merges and seals can be held at their start.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::storage::backend::faulty::{self, Mode};

/// Make the file operation number `n` (0-based) under `dir` fail once with OS error
/// `errno`, after it ran. Replaces any armed fault.
pub fn fail_io_after(dir: &Path, n: u64, errno: i32) {
    faulty::arm(dir, Mode::Fail, n, errno);
}

/// Make the data write number `n` (0-based; writes only, under `dir`) a torn write: only
/// the first half of its bytes (rounded down, so possibly none) reaches the file before it
/// fails with OS error `errno`, as on a device that filled up or failed mid-write.
/// Replaces any armed fault.
pub fn tear_write_after(dir: &Path, n: u64, errno: i32) {
    faulty::arm(dir, Mode::Tear, n, errno);
}

/// Disarm; returns how many operations (of the armed kind) under the directory were seen
/// and whether the fault fired.
pub fn clear_io_fault() -> Option<(u64, bool)> {
    faulty::clear()
}

/// Directories whose background jobs of one kind wait at their start until released.
struct Gate {
    held: Mutex<Vec<PathBuf>>,
    released: parking_lot::Condvar,
}

impl Gate {
    const fn new() -> Gate {
        Gate {
            held: Mutex::new(Vec::new()),
            released: parking_lot::Condvar::new(),
        }
    }

    fn hold(&self, dir: &Path, hold: bool) {
        let mut g = self.held.lock();
        g.retain(|d| d != dir);
        if hold {
            g.push(dir.to_path_buf());
        }
        self.released.notify_all();
    }

    fn pass(&self, dir: &Path) {
        let mut g = self.held.lock();
        while g.iter().any(|d| dir.starts_with(d)) {
            self.released.wait(&mut g);
        }
    }
}

static MERGES: Gate = Gate::new();
static SEALS: Gate = Gate::new();

/// Hold (or release) background merges of collections under `dir`: a merge that starts
/// while held waits, its inputs chosen and their deletions noted, until released.
pub fn hold_merges(dir: &Path, hold: bool) {
    MERGES.hold(dir, hold);
}

/// Called by a background merge of the collection in `dir` before it builds anything.
pub(crate) fn merge_gate(dir: &Path) {
    MERGES.pass(dir);
}

/// Hold (or release) background seals of collections under `dir`: a seal that starts while
/// held waits, its rows frozen, until released (writes go on into the next appendable
/// segment).
pub fn hold_seals(dir: &Path, hold: bool) {
    SEALS.hold(dir, hold);
}

/// Called by a background seal of the collection in `dir` before it builds anything.
pub(crate) fn seal_gate(dir: &Path) {
    SEALS.pass(dir);
}

/// Attach the simulated-power-loss backend to the database directory `root` (its files as
/// they are now count as durable). With `cut_at = Some(n)`, the power goes at operation
/// `n` (0-based; creates, writes, syncs, truncations, renames and removals count): it and
/// every later file operation under `root` fail with `EIO` and change nothing.
#[cfg(unix)]
pub fn power_cut_attach(root: &Path, cut_at: Option<u64>) -> std::io::Result<()> {
    crate::storage::backend::powercut::attach(root, cut_at)
}

/// `(operations, operation index of each sync, cut)` of the power-cut backend at `root`.
#[cfg(unix)]
pub fn power_cut_stats(root: &Path) -> Option<(u64, Vec<u64>, bool)> {
    crate::storage::backend::powercut::stats(root)
}

/// Cut the power at `root` now (if it was not cut yet) and write into `dest` the tree as the
/// disk would hold it: the names made durable by directory syncs, each with the bytes its
/// last sync made durable — and, with `torn_seed`, a pseudo-random prefix of the bytes
/// appended after that sync. `root` stays cut until [`power_cut_detach`]. Returns `(files
/// that had unsynced changes, files that kept a torn tail)`.
#[cfg(unix)]
pub fn power_cut_image(
    root: &Path,
    dest: &Path,
    torn_seed: Option<u64>,
) -> std::io::Result<(usize, usize)> {
    crate::storage::backend::powercut::image(root, dest, torn_seed)
}

/// What each file operation under `root` was, in order (kind and path), while the power-cut
/// backend was attached.
#[cfg(unix)]
pub fn power_cut_trace(root: &Path) -> Vec<String> {
    crate::storage::backend::powercut::trace(root)
}

/// Detach the power-cut backend of `root`.
#[cfg(unix)]
pub fn power_cut_detach(root: &Path) {
    crate::storage::backend::powercut::detach(root);
}

/// Run `f` with string ids narrowed to their low `bits` bits on this thread, so that
/// different keys collide often (ids of keys computed on other threads are unchanged).
pub fn narrow_str_ids<T>(bits: u32, f: impl FnOnce() -> T) -> T {
    let key = &crate::filter::key::NARROW_BITS;
    let before = key.with(|b| b.replace(bits));
    let out = f();
    key.with(|b| b.set(before));
    out
}
