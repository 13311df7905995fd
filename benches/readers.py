"""Read-only processes beside a writer: search QPS and refresh latency.

    python3 benches/readers.py [--data ../shared/data/text-minilm-dev] [--seconds 20]

Through the public Python API with default settings except a seal threshold of 5,000 rows
(so that seals happen during the run), an HNSW cosine collection of text-minilm-dev
(20,000 x 384). Phases, each for --seconds:

1. idle: no writes; single-thread search QPS (k=10) in a read-only process and in the
   writer's own process.
2. ingest: the writer re-upserts the base in batches of 1,000 (durability "always")
   without pause; the same two searchers measure QPS meanwhile (the writer's searcher is a
   thread of the writer process; searches release the GIL).
3. refresh latency: the writer upserts 2,000 rows then calls flush() (a seal: a new
   manifest); the reader times its first call afterwards (count(), which catches up) and an
   idle call, 20 times.

Prints one table; the ratios are reader / writer in the same phase.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time

import numpy as np

import trovedb


def fvecs(path: str) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


def search_loop(c, queries: np.ndarray, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        c.search(queries[n % len(queries)], k=10)
        n += 1
    return n / (time.perf_counter() - t0)


def reader_main(path: str, qpath: str, cmd, out) -> None:
    queries = fvecs(qpath)
    db = trovedb.open(path, read_only=True)
    c = db.get_collection("docs")
    while True:
        msg = cmd.recv()
        if msg[0] == "qps":
            out.send(search_loop(c, queries, msg[1]))
        elif msg[0] == "refresh":
            # The writer has just published a seal: time the call that catches up, then an
            # idle one.
            t0 = time.perf_counter()
            n = c.count()
            t1 = time.perf_counter()
            c.count()
            t2 = time.perf_counter()
            out.send((t1 - t0, t2 - t1, n))
        else:
            db.close()
            return


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../shared/data/text-minilm-dev"))
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    base = fvecs(os.path.join(a.data, "base.fvecs"))
    qpath = os.path.join(a.data, "query.fvecs")
    queries = fvecs(qpath)
    n = len(base)
    work = tempfile.mkdtemp(prefix="trovedb-readers-")
    path = os.path.join(work, "db")
    db = trovedb.open(path, seal_threshold_rows=5000)
    c = db.create_collection("docs", dim=base.shape[1], metric="cosine", index="hnsw")
    ids = np.arange(n, dtype=np.uint64)
    for lo in range(0, n, 1000):
        c.upsert(ids[lo : lo + 1000], base[lo : lo + 1000])
    c.wait_idle()

    ctx = mp.get_context("spawn")
    cmd_parent, cmd_child = ctx.Pipe()
    out_parent, out_child = ctx.Pipe()
    reader = ctx.Process(target=reader_main, args=(path, qpath, cmd_child, out_child))
    reader.start()

    def both(seconds: float) -> tuple[float, float]:
        cmd_parent.send(("qps", seconds))
        w = search_loop(c, queries, seconds)
        return out_parent.recv(), w

    rows = []
    r, w = both(a.seconds)
    rows.append(("idle", r, w, None))

    stop = threading.Event()
    ingested = [0]

    def ingest() -> None:
        rng = np.random.default_rng(1)
        while not stop.is_set():
            lo = int(rng.integers(0, n - 1000))
            c.upsert(ids[lo : lo + 1000], base[lo : lo + 1000])
            ingested[0] += 1000

    t = threading.Thread(target=ingest)
    t0 = time.perf_counter()
    t.start()
    r, w = both(a.seconds)
    stop.set()
    t.join()
    rate = ingested[0] / (time.perf_counter() - t0)
    rows.append(("ingest", r, w, rate))
    c.wait_idle()

    lat = []
    for i in range(20):
        lo = (i * 2000) % (n - 2000)
        c.upsert(ids[lo : lo + 2000], base[lo : lo + 2000])
        c.flush()
        cmd_parent.send(("refresh",))
        lat.append(out_parent.recv())
    cmd_parent.send(("stop",))
    reader.join()
    db.close()

    print(f"text-minilm-dev {n} x {base.shape[1]}, hnsw defaults, seal_threshold_rows=5000, "
          f"{a.seconds:.0f} s per phase, single-thread QPS (k=10)")
    print("| phase | read-only process QPS | writer process QPS | reader / writer | writer ingest |")
    print("| --- | --- | --- | --- | --- |")
    for name, r, w, rate in rows:
        ing = f"{rate:,.0f} vectors/s" if rate else "-"
        print(f"| {name} | {r:,.0f} | {w:,.0f} | {r / w:.2f} | {ing} |")
    first = sorted(x[0] * 1e3 for x in lat)
    idle = sorted(x[1] * 1e3 for x in lat)
    print(f"refresh after a seal (2,000 new rows flushed; 20 trials): first call median "
          f"{first[10]:.2f} ms, max {first[-1]:.2f} ms; next call median {idle[10]:.3f} ms")


if __name__ == "__main__":
    main()
