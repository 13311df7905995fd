"""Batch exact search through the Python API against faiss IndexFlat, in one process.

The collection is built through the public API with default settings (upsert in batches,
`wait_idle()`), then the whole query set is searched as one batch (`search(Q, k)`) on the
engine's default thread pool, alternating with faiss `IndexFlatIP` (cosine) or
`IndexFlatL2` (l2) on the same number of threads (OMP_NUM_THREADS, default 2). Each engine
runs `--repeat` times; the median and best QPS are printed with their ratio. The ids are
checked against faiss's (both exact: the same neighbour sets up to ties) so a fast wrong
answer cannot pass.

    python3 benches/batchflat.py --dataset ../shared/data/text-minilm-dev
    python3 benches/batchflat.py --synthetic 100000,128,1000     # rows,dim,queries; l2

Requires the trovedb module and faiss-cpu (pip install ./bindings/python faiss-cpu).
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

_threads = "2"
for i, a in enumerate(sys.argv):
    if a == "--threads" and i + 1 < len(sys.argv):
        _threads = sys.argv[i + 1]
os.environ["OMP_NUM_THREADS"] = _threads
os.environ["RAYON_NUM_THREADS"] = _threads

import numpy as np  # noqa: E402

import trovedb  # noqa: E402


def read_fvecs(path: str) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        raise ValueError(f"{path}: empty")
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()


def synthetic(n: int, dim: int, nq: int, seed: int = 42):
    """64 gaussian clusters (N(0,1) centres, spread 0.35), queries from the same mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim)).astype(np.float32)
    base = centres[rng.integers(0, 64, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    queries = centres[rng.integers(0, 64, nq)] + 0.35 * rng.standard_normal((nq, dim)).astype(np.float32)
    return base.astype(np.float32), queries.astype(np.float32)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="TEXMEX directory (base.fvecs, query.fvecs, info.json)")
    src.add_argument("--synthetic", help="rows,dim,queries (l2)")
    ap.add_argument("--queries", type=int, default=0, help="use the first N queries (0: all)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--batch-rows", type=int, default=10_000, help="rows per upsert")
    a = ap.parse_args()
    import faiss

    if a.dataset:
        import json

        base = read_fvecs(os.path.join(a.dataset, "base.fvecs"))
        queries = read_fvecs(os.path.join(a.dataset, "query.fvecs"))
        with open(os.path.join(a.dataset, "info.json")) as f:
            metric = json.load(f).get("metric", "l2")
        name = os.path.basename(os.path.normpath(a.dataset))
    else:
        n, dim, nq = (int(x) for x in a.synthetic.split(","))
        base, queries = synthetic(n, dim, nq)
        metric, name = "l2", f"synthetic {a.synthetic}"
    if a.queries:
        queries = queries[: a.queries]
    n, dim = base.shape
    nq = len(queries)
    if metric not in ("cosine", "l2"):
        print(f"metric {metric!r}: only cosine and l2 are compared", file=sys.stderr)
        return 2
    print(f"{name}: {n} x {dim} {metric}, {nq} queries as one batch, k={a.k}, "
          f"{_threads} threads, machine: {cpu_name()}, faiss {faiss.__version__}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        with trovedb.open(tmp) as db:
            coll = db.create_collection("c", dim=dim, metric=metric, index="flat")
            ids = np.arange(n, dtype=np.uint64)
            for i in range(0, n, a.batch_rows):
                coll.upsert(ids[i : i + a.batch_rows], base[i : i + a.batch_rows])
            coll.wait_idle()
            segments = len(coll.stats()["segments"])
            ref = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
            ref.add(base)
            ours, theirs = [], []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                res = coll.search(queries, k=a.k)
                t1 = time.perf_counter()
                _, want = ref.search(queries, a.k)
                t2 = time.perf_counter()
                ours.append(t1 - t0)
                theirs.append(t2 - t1)
            got = np.asarray(res.ids).astype(np.int64)
            # Exact on both sides: the neighbour sets agree but for ties at the k-th place.
            overlap = np.mean([len(set(got[i]) & set(want[i])) / a.k for i in range(nq)])
    med_o, med_t = statistics.median(ours), statistics.median(theirs)
    print(f"segments after wait_idle: {segments}; id overlap with faiss {overlap:.4f}")
    print("| engine | QPS median | QPS best |")
    print("| --- | --- | --- |")
    print(f"| trovedb flat, search(Q) | {nq / med_o:,.0f} | {nq / min(ours):,.0f} |")
    print(f"| faiss {type(ref).__name__} | {nq / med_t:,.0f} | {nq / min(theirs):,.0f} |")
    print(f"ratio trovedb / faiss: median {med_t / med_o:.2f}x, best {min(theirs) / min(ours):.2f}x")
    if overlap < 0.999:
        print(f"FAIL: exact results differ from faiss's (overlap {overlap:.4f})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
