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
    reason = "FFI calls: setpriority(2) on each pool thread at start; malloc_trim(3) after builds"
)]

use std::sync::OnceLock;

/// Nice value of the index-building threads.
const BUILD_NICE: i32 = 10;

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
            .thread_name(|i| format!("trovedb-build-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .ok()
    })
    .as_ref()
}

#[cfg(unix)]
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; `who = 0` with PRIO_PROCESS
    // names the calling thread on Linux (per-thread nice values). Failure is harmless (the
    // thread keeps its priority), so the result is ignored.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, BUILD_NICE);
    }
}

#[cfg(not(unix))]
fn lower_priority() {}

/// Run `f` (and the parallel work it starts) on the background build pool. When called
/// from inside a rayon pool already (a caller that chose its own pool, e.g. a one-thread
/// pool for a deterministic build), `f` runs right there instead.
pub(crate) fn build<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match pool() {
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
