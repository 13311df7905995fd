//! Index building runs at background CPU priority, so that searches keep their latency while
//! a collection ingests: a dedicated rayon pool whose threads lower their own scheduling
//! priority (nice 10 on Unix) when they start.
//!
//! Measured on 1M x 128 (2 cores, durability always, batches of 1,000, one thread searching):
//! with index linking on the normal-priority global pool, search p99 during ingest was 5.1x
//! its idle p99 (4.19 ms vs 0.82 ms: searches waited out scheduler time slices of the
//! builders); see README "Ingest while searching" for the figures with this pool.
#![expect(
    unsafe_code,
    reason = "FFI calls: setpriority(2) on each pool thread at start; mallopt(3) once; malloc_trim(3) after builds"
)]

use parking_lot::Mutex;

/// Nice value of the index-building threads (seals, `compact()`, graph linking).
const BUILD_NICE: i32 = 10;
/// Nice value of background merges: below seals, which writers wait for when the next
/// segment fills (back-pressure). Measured on a 1M x 128 ingest (see README): with merges on
/// the build pool, ingest stalled behind a 400k-row merge at 401,000 rows.
const MERGE_NICE: i32 = 19;

fn make_pool(name: &'static str, nice: i32) -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .thread_name(move |i| format!("{name}-{i}"))
        .start_handler(move |_| {
            if nice != 0 {
                lower_priority(nice);
            }
        })
        .build()
        .ok()
}

/// A thread pool that belongs to one process. `fork()` copies a pool into the child without
/// its threads, and work handed to such a pool waits forever; so the pool is made per
/// process id, lazily, and a child that inherited its parent's makes its own. The
/// inherited one is leaked (its threads do not exist in the child, there is nothing to
/// stop).
struct ProcessPool {
    name: &'static str,
    nice: i32,
    slot: Mutex<Option<(u32, Option<&'static rayon::ThreadPool>)>>,
}

impl ProcessPool {
    const fn new(name: &'static str, nice: i32) -> Self {
        ProcessPool {
            name,
            nice,
            slot: Mutex::new(None),
        }
    }

    fn get(&self) -> Option<&'static rayon::ThreadPool> {
        let pid = std::process::id();
        if let Some((owner, pool)) = *self.slot.lock() {
            if owner == pid {
                return pool;
            }
        }
        // Built outside the lock, which therefore is only ever held for a copy; two
        // threads racing here build two pools and the loser's is dropped.
        let made = make_pool(self.name, self.nice);
        let mut slot = self.slot.lock();
        match *slot {
            Some((owner, pool)) if owner == pid => pool,
            _ => {
                let pool = made.map(|p| &*Box::leak(Box::new(p)));
                *slot = Some((pid, pool));
                pool
            }
        }
    }
}

static BUILD_POOL: ProcessPool = ProcessPool::new("trovedb-build", BUILD_NICE);
static MERGE_POOL: ProcessPool = ProcessPool::new("trovedb-merge", MERGE_NICE);
/// Batch searches fan out here rather than on rayon's global pool, which a forked child
/// inherits without threads (a batch search in a child that opened its own handle would
/// wait forever).
static SEARCH_POOL: ProcessPool = ProcessPool::new("trovedb-search", 0);

fn pool() -> Option<&'static rayon::ThreadPool> {
    BUILD_POOL.get()
}

fn merge_pool() -> Option<&'static rayon::ThreadPool> {
    MERGE_POOL.get()
}

// Linux only: there `setpriority(PRIO_PROCESS, 0, ..)` changes the calling thread (nice values
// are per thread); on macOS and the BSDs the same call would lower the whole host process.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    // SAFETY: setpriority only reads its integer arguments; `who = 0` with PRIO_PROCESS
    // names the calling thread on Linux (per-thread nice values). Failure is harmless (the
    // thread keeps its priority), so the result is ignored.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

/// Run `f` (and the parallel work it starts) on the background build pool. When called
/// from inside a rayon pool already (a caller that chose its own pool, e.g. a one-thread
/// pool for a deterministic build), `f` runs right there instead.
pub(crate) fn build<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    install(pool(), f)
}

/// Run `f` (a batch search) on this process's search pool, or in place when called from
/// inside a rayon pool the caller chose.
pub(crate) fn search<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    install(SEARCH_POOL.get(), f)
}

/// Run `job` on the background build pool while `here` runs on the calling thread (which
/// waits on neither otherwise); returns `here`'s result once both are done. In sequence
/// (`job` first) when called from inside a rayon pool or without a build pool.
pub(crate) fn build_alongside<R>(job: impl FnOnce() + Send, here: impl FnOnce() -> R) -> R {
    match pool() {
        Some(p) if rayon::current_thread_index().is_none() => p.in_place_scope(|s| {
            s.spawn(|_| job());
            here()
        }),
        _ => {
            job();
            here()
        }
    }
}

/// Like [`build`], on the lower-priority pool of background merges.
pub(crate) fn build_merge<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    install(merge_pool(), f)
}

fn install<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) if rayon::current_thread_index().is_none() => p.install(f),
        _ => f(),
    }
}

/// Return memory freed by a seal or merge to the operating system. glibc keeps freed heap
/// memory in its arenas (one per thread that allocated); a build allocates and frees a few
/// hundred bytes per row in graph lists and buffers, across the pool's threads. Measured
/// with `churnbench --synthetic 100000,128` (HNSW, three rounds of deleting and re-inserting
/// half, then compact): resident memory 184-219 MiB without trimming against 131-135 MiB for
/// a fresh load; with trimming 135-148 MiB.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes an integer by value and only walks the allocator's own
    // free lists under its locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations of at least this many bytes are mapped (and unmapped when freed).
const MMAP_THRESHOLD: i32 = 4 << 20;
/// Free memory above this at the top of a heap is returned when memory is freed.
const TRIM_THRESHOLD: i32 = 1 << 20;

/// Fix glibc's mmap and trim thresholds, once per process, unless the application set them
/// (`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`). By default glibc raises both
/// whenever a large mapped block is freed (up to 32 MiB / 64 MiB): after a seal frees its
/// tens of megabytes of build buffers, later buffers of that size come from thread heaps,
/// whose free tops are then never returned (`malloc_trim` trims only the main heap's top).
/// Measured with `churnbench --synthetic 100000,128` (three rounds of deleting and
/// re-inserting half, then compact, 5 runs each): resident memory 142-190 MiB against
/// 128-155 MiB for a fresh load with glibc's dynamic thresholds; with these fixed thresholds
/// (3 runs each) 121.3-122.1 MiB against 120.5-120.7 MiB (+1%), and the same run time
/// (31.5-31.9 s; 30-34 s before). A trim threshold of 8 MiB left 124-133 MiB.
/// [`crate::DbOptions::tune_allocator`] turns this off.
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
                && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
            {
                // SAFETY: mallopt takes two integers and changes allocator parameters under
                // the allocator's own lock; any thread may call it at any time.
                unsafe {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                    libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
                }
            }
        });
    }
}

/// A fixed-capacity buffer of `f32`s in an anonymous mapping of its own: when dropped it goes
/// back to the operating system at once, whatever glibc's thresholds are (a `Vec` this size,
/// once glibc has raised its mmap threshold, comes from an arena whose free memory may stay
/// resident). Used for the vectors of a segment being built (rows x dim floats).
pub(crate) struct AnonF32 {
    map: memmap2::MmapMut,
    len: usize,
}

impl AnonF32 {
    /// Room for `n` floats.
    pub(crate) fn with_capacity(n: usize) -> std::io::Result<AnonF32> {
        let bytes = n
            .checked_mul(4)
            .ok_or_else(|| std::io::Error::other("buffer size overflows"))?;
        let map = memmap2::MmapMut::map_anon(bytes.max(4))?;
        // Before any page is touched, so that every page can be a huge one.
        crate::hugepages::advise_raw(map.as_ptr() as usize, map.len());
        Ok(AnonF32 { map, len: 0 })
    }

    /// Append `xs` (panics past the capacity: callers size it exactly).
    pub(crate) fn extend_from_slice(&mut self, xs: &[f32]) {
        let all: &mut [f32] = bytemuck::cast_slice_mut(&mut self.map[..]);
        all[self.len..self.len + xs.len()].copy_from_slice(xs);
        self.len += xs.len();
    }
}

impl std::ops::Deref for AnonF32 {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &bytemuck::cast_slice(&self.map[..])[..self.len]
    }
}
