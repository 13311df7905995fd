"""Foundation benchmarks (issue 2), trovedb side by side with faiss in one run.

1. Flat exact scan, single thread, dim 384 x 100k vectors: queries/s of trovedb `flat`
   vs faiss `IndexFlatIP`/`IndexFlatL2`, one query per call and as one batch.
2. Opening a sealed 1,000,000 x 128 collection: seconds to open + first query, and
   resident memory added by the open (it must not read the vectors).
3. Durable ingest: upsert in batches of 1,000 x 384 with durability "always".

Run: python3 benches/foundation.py [--quick]. Requires the trovedb module and faiss-cpu
(pip install ./bindings/python faiss-cpu). Threads are pinned to 1 for the scan.
"""

import argparse
import os
import platform
import shutil
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import trovedb  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_flat(n: int, dim: int, nq: int, k: int, metric: str) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    if metric == "cosine":
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    tmp = tempfile.mkdtemp()
    try:
        db = trovedb.open(tmp, durability="off", seal_threshold_rows=n + 1)
        c = db.create_collection("flat", dim=dim, metric=metric)
        for i in range(0, n, 10000):
            c.upsert(np.arange(i, i + 10000), base[i : i + 10000])
        c.flush()
        index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        index.add(base)

        def trove_single():
            for q in queries:
                c.search(q, k=k)

        def faiss_single():
            for q in queries:
                index.search(q[None, :], k)

        t_trove = best_of(trove_single)
        t_faiss = best_of(faiss_single)
        t_trove_b = best_of(lambda: c.search(queries, k=k))
        t_faiss_b = best_of(lambda: index.search(queries, k))
        # Same answers (ids) as faiss, up to float ties.
        ti = c.search(queries, k=k).ids
        _, fi = index.search(queries, k)
        agree = np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(ti, fi)])
        print(f"flat scan {n} x {dim} {metric}, k={k}, 1 thread, {nq} queries:")
        print(f"  one query per call: trovedb {nq / t_trove:8.1f} QPS  faiss {nq / t_faiss:8.1f} QPS  ratio {t_faiss / t_trove:.2f}x")
        print(f"  one batch of {nq}:   trovedb {nq / t_trove_b:8.1f} QPS  faiss {nq / t_faiss_b:8.1f} QPS  ratio {t_faiss_b / t_trove_b:.2f}x")
        print(f"  result agreement with faiss: {agree:.4f}")
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_open(n: int, dim: int) -> None:
    tmp = tempfile.mkdtemp()
    try:
        rng = np.random.default_rng(1)
        with trovedb.open(tmp, durability="off", seal_threshold_rows=n + 1) as db:
            c = db.create_collection("big", dim=dim, metric="l2")
            step = 50000
            for i in range(0, n, step):
                c.upsert(np.arange(i, i + step), rng.standard_normal((step, dim)).astype(np.float32))
            c.flush()
            size = c.stats()["bytes_on_disk"]
        q = rng.standard_normal(dim).astype(np.float32)
        rss0 = rss_bytes()
        t = time.perf_counter()
        db = trovedb.open(tmp)
        c = db.get_collection("big")
        t_open = time.perf_counter() - t
        rss1 = rss_bytes()
        t = time.perf_counter()
        c.get(12345)
        t_get = time.perf_counter() - t
        print(f"open sealed {n} x {dim} ({size / 2**20:.0f} MiB on disk):")
        print(f"  open + get_collection: {t_open * 1e3:.2f} ms; resident memory added: {(rss1 - rss0) / 2**20:.1f} MiB; first get(): {t_get * 1e3:.2f} ms")
        t = time.perf_counter()
        c.search(q, k=10)
        print(f"  first full flat scan after open (pages in {n * dim * 4 / 2**20:.0f} MiB): {(time.perf_counter() - t) * 1e3:.1f} ms")
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_ingest(n: int, dim: int, batch: int) -> None:
    tmp = tempfile.mkdtemp()
    try:
        rng = np.random.default_rng(2)
        data = rng.standard_normal((n, dim)).astype(np.float32)
        with trovedb.open(tmp, durability="always") as db:
            c = db.create_collection("ingest", dim=dim, metric="cosine")
            t = time.perf_counter()
            for i in range(0, n, batch):
                c.upsert(np.arange(i, i + batch), data[i : i + batch])
            dt = time.perf_counter() - t
        print(f"durable ingest (always), batches of {batch} x {dim}: {n / dt:,.0f} vectors/s over {n} vectors (includes seals every 100k rows)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    a = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; trovedb {trovedb.__version__}")
    if a.quick:
        bench_flat(5000, 384, 20, 10, "cosine")
        bench_open(20000, 128)
        bench_ingest(10000, 384, 1000)
        return
    bench_flat(100_000, 384, 200, 10, "cosine")
    bench_flat(100_000, 384, 200, 10, "l2")
    bench_open(1_000_000, 128)
    bench_ingest(200_000, 384, 1000)


if __name__ == "__main__":
    main()
