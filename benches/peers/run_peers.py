#!/usr/bin/env python3
"""Run the peer engines (hnswlib, faiss-cpu, usearch) on the same dataset, with the same
thread count and parameter sweeps as annbench, and write the same JSON-lines schema, so that
`annbench plot` overlays them on trovedb's points.

Datasets are TEXMEX directories (as in ../shared/data, or a synthetic dataset that annbench
cached: bench-out/cache/synthetic-...). Every engine is optional: a missing package is
reported and skipped. Threads are pinned for every engine: OMP_NUM_THREADS and
faiss.omp_set_num_threads, hnswlib set_num_threads / num_threads, usearch threads=.
Single-query runs use one thread; batch runs use --threads.

    python3 benches/peers/run_peers.py --dataset ../shared/data/text-minilm-dev \
        --engines hnswlib,faiss-hnsw,faiss-flat,usearch --m 16 --ef-construction 200 \
        --sweep-ef 10,20,40,80,160,320 --out bench-out/peers.jsonl
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

_threads_early = "2"
for i, a in enumerate(sys.argv):
    if a == "--threads" and i + 1 < len(sys.argv):
        _threads_early = sys.argv[i + 1]
os.environ["OMP_NUM_THREADS"] = _threads_early

import numpy as np  # noqa: E402


def read_vecs(path: pathlib.Path, dtype) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        raise ValueError(f"{path}: empty")
    dim = int(raw[0])
    if raw.size % (dim + 1):
        raise ValueError(f"{path}: truncated")
    return raw.reshape(-1, dim + 1)[:, 1:].view(dtype).copy()


def load(dirpath: str, query_set: str, queries: int | None):
    d = pathlib.Path(dirpath)
    info = json.loads((d / "info.json").read_text())
    prefix = "" if query_set == "main" else f"{query_set}_"
    base = read_vecs(d / "base.fvecs", np.float32)
    q = read_vecs(d / f"{prefix}query.fvecs", np.float32)
    gt = read_vecs(d / f"{prefix}groundtruth.ivecs", np.int32)
    if queries:
        q, gt = q[:queries], gt[:queries]
    return info.get("name", d.name), info["metric"], base, q, gt


def exact_dist(metric: str, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    q64, r64 = q.astype(np.float64), rows.astype(np.float64)
    if metric == "l2":
        return ((r64 - q64) ** 2).sum(axis=1)
    if metric == "cosine":
        return 1.0 - (r64 @ q64) / (np.linalg.norm(r64, axis=1) * np.linalg.norm(q64))
    return -(r64 @ q64)


def recall(metric, base, queries, gt, results, k) -> float:
    """Same rule as annbench: a hit is in the true top-k or ties the k-th true distance."""
    total = 0.0
    for i, res in enumerate(results):
        kk = min(k, gt.shape[1])
        truth = set(gt[i, :kk].tolist())
        kth = exact_dist(metric, queries[i], base[gt[i, kk - 1]][None, :])[0]
        tol = 1e-6 * max(1.0, abs(kth))
        seen, hits = set(), 0
        cand = [int(x) for x in res[:kk] if 0 <= int(x) < len(base)]
        dists = exact_dist(metric, queries[i], base[cand]) if cand else []
        for x, dx in zip(cand, dists):
            if x in seen:
                continue
            seen.add(x)
            if x in truth or dx <= kth + tol:
                hits += 1
        total += hits / kk
    return total / len(results)


def rss_bytes() -> int:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine() -> str:
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


class Engine:
    """search_one(q, k, params) -> ids; search_batch(Q, k, params) -> ids[nq, k]."""

    engine = ""
    index = ""
    build_params: dict = {}

    def sweep(self):
        return [{}]


def make_hnswlib(metric, dim, a):
    import hnswlib

    class E(Engine):
        engine, index = "hnswlib", "hnsw"

        def __init__(self):
            self.build_params = {"m": a.m, "ef_construction": a.ef_construction}

        def build(self, base):
            space = {"l2": "l2", "cosine": "cosine", "dot": "ip"}[metric]
            self.ix = hnswlib.Index(space=space, dim=dim)
            self.ix.init_index(max_elements=len(base), M=a.m, ef_construction=a.ef_construction, random_seed=100)
            self.ix.set_num_threads(a.threads)
            self.ix.add_items(base, np.arange(len(base)), num_threads=a.threads)

        def nbytes(self):
            with tempfile.NamedTemporaryFile() as f:
                self.ix.save_index(f.name)
                return os.path.getsize(f.name)

        def sweep(self):
            return [{"ef": e} for e in a.sweep_ef]

        def set(self, p):
            self.ix.set_ef(int(p["ef"]))

        filtered = True
        mask = None

        def one(self, q, k):
            if self.mask is not None:
                m = self.mask
                return self.ix.knn_query(q[None, :], k=k, num_threads=1, filter=lambda i: bool(m[i]))[0][0]
            return self.ix.knn_query(q[None, :], k=k, num_threads=1)[0][0]

        def batch(self, Q, k):
            if self.mask is not None:  # Python callbacks: one thread
                return np.stack([self.one(q, k) for q in Q])
            return self.ix.knn_query(Q, k=k, num_threads=a.threads)[0]

    return E()


def make_faiss(kind, metric, dim, a):
    import faiss

    ip = metric in ("cosine", "dot")
    mt = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2

    class E(Engine):
        engine, index = "faiss", kind

        def __init__(self):
            self.build_params = {
                "flat": {},
                "hnsw": {"m": a.m, "ef_construction": a.ef_construction},
                "ivf_pq": {"nlist": a.nlist, "pq_m": a.pq_m, "refine": "IndexRefineFlat"},
                "lsh": {"bits": a.lsh_bits},
            }[kind]

        def build(self, base):
            faiss.omp_set_num_threads(a.threads)
            if kind == "flat":
                self.ix = faiss.IndexFlat(dim, mt)
            elif kind == "hnsw":
                self.ix = faiss.IndexHNSWFlat(dim, a.m, mt)
                self.ix.hnsw.efConstruction = a.ef_construction
            elif kind == "ivf_pq":
                quant = faiss.IndexFlat(dim, mt)
                ivf = faiss.IndexIVFPQ(quant, dim, a.nlist, a.pq_m, 8, mt)
                self.ivf = ivf
                self.ix = faiss.IndexRefineFlat(ivf)
                self.ix.train(base)
            else:
                # IndexLSH ranks by Hamming distance over nbits-bit codes; the exact
                # re-ranking of IndexRefineFlat (k_factor swept) makes it comparable to an LSH
                # that re-ranks its candidates, as trovedb's does.
                self.lsh = faiss.IndexLSH(dim, a.lsh_bits)
                self.ix = faiss.IndexRefineFlat(self.lsh)
                self.ix.train(base)
            self.ix.add(base)

        def nbytes(self):
            return int(faiss.serialize_index(self.ix).nbytes)

        def sweep(self):
            if kind == "hnsw":
                return [{"ef": e} for e in a.sweep_ef]
            if kind == "ivf_pq":
                return [{"nprobe": n, "refine": a.refine} for n in a.sweep_nprobe]
            if kind == "lsh":
                return [{"refine": r} for r in a.sweep_lsh_refine]
            return [{}]

        def set(self, p):
            if kind == "hnsw":
                self.ix.hnsw.efSearch = int(p["ef"])
                self.ef = int(p["ef"])
            elif kind == "ivf_pq":
                self.ivf.nprobe = int(p["nprobe"])
                self.ix.k_factor = float(p["refine"])
            elif kind == "lsh":
                self.ix.k_factor = float(p["refine"])

        filtered = kind in ("flat", "hnsw")
        mask = None
        ef = 16

        def params(self):
            if self.mask is None:
                return None
            if getattr(self, "_sel_for", None) is not self.mask:
                self._bits = np.packbits(self.mask.astype(np.uint8), bitorder="little")
                self._sel = faiss.IDSelectorBitmap(len(self.mask), faiss.swig_ptr(self._bits))
                self._sel_for = self.mask
            if kind == "hnsw":
                return faiss.SearchParametersHNSW(sel=self._sel, efSearch=self.ef)
            return faiss.SearchParameters(sel=self._sel)

        def one(self, q, k):
            faiss.omp_set_num_threads(1)
            return self.ix.search(q[None, :], k, params=self.params())[1][0]

        def batch(self, Q, k):
            faiss.omp_set_num_threads(a.threads)
            return self.ix.search(Q, k, params=self.params())[1]

    return E()


def make_usearch(metric, dim, a):
    from usearch.index import Index

    class E(Engine):
        engine, index = "usearch", "hnsw"

        def __init__(self):
            self.build_params = {"m": a.m, "ef_construction": a.ef_construction, "dtype": "f32"}

        def build(self, base):
            m = {"l2": "l2sq", "cosine": "cos", "dot": "ip"}[metric]
            self.ix = Index(ndim=dim, metric=m, dtype="f32", connectivity=a.m, expansion_add=a.ef_construction)
            self.ix.add(np.arange(len(base)), base, threads=a.threads)

        def nbytes(self):
            with tempfile.NamedTemporaryFile(suffix=".usearch") as f:
                self.ix.save(f.name)
                return os.path.getsize(f.name)

        def sweep(self):
            return [{"ef": e} for e in a.sweep_ef]

        def set(self, p):
            self.ix.expansion_search = int(p["ef"])

        def one(self, q, k):
            return self.ix.search(q, k, threads=1).keys

        def batch(self, Q, k):
            return self.ix.search(Q, k, threads=a.threads).keys

    return E()


def make_trovedb(kind, metric, dim, a):
    """trovedb through its Python module: the same call overhead as the peers above."""
    import trovedb

    class E(Engine):
        engine, index = "trovedb-py", kind

        def __init__(self):
            self.build_params = {
                "hnsw": {"m": a.m, "ef_construction": a.ef_construction},
                "ivf_pq": {"nlist": a.nlist, "pq_m": a.pq_m},
                "lsh": {k: v for k, v in {"tables": a.lsh_tables, "bits": a.lsh_table_bits}.items() if v},
            }.get(kind, {})
            self.dir = tempfile.TemporaryDirectory()
            self.params = {}

        def build(self, base):
            self.db = trovedb.open(self.dir.name, durability="off", seal_threshold_rows=len(base) + 1)
            self.c = self.db.create_collection("bench", dim=dim, metric=metric, index=kind, **self.build_params)
            attr = a.attr
            for s in range(0, len(base), 10000):
                e = min(s + 10000, len(base))
                pays = [{"r": int(attr[i])} for i in range(s, e)] if a.filter_selectivity else None
                self.c.upsert(np.arange(s, e), base[s:e], pays)
            self.c.flush()

        def nbytes(self):
            return int(self.c.stats()["bytes_on_disk"])

        def sweep(self):
            if kind == "hnsw":
                return [{"ef": e} for e in a.sweep_ef]
            if kind == "ivf_pq":
                return [{"nprobe": n, "refine": int(a.refine)} for n in a.sweep_nprobe]
            if kind == "lsh":
                if a.sweep_trovedb_lsh_refine:
                    return [{"refine": r} for r in a.sweep_trovedb_lsh_refine]
                return [{"probes": p} for p in a.sweep_probes]
            return [{}]

        def set(self, p):
            self.params = p

        filtered = True
        mask = None

        def flt(self):
            if self.mask is None:
                return None
            # The mask is `attr < bound`; recover the bound for the engine's own filter.
            bound = int(a.attr[~self.mask].min()) if (~self.mask).any() else 1_000_000
            return {"r": {"$lt": bound}}

        def one(self, q, k):
            return self.c.search(q, k=k, filter=self.flt(), **self.params).ids

        def batch(self, Q, k):
            return self.c.search(Q, k=k, filter=self.flt(), **self.params).ids

    return E()


def bench_attr(n: int) -> np.ndarray:
    """The uniform attribute annbench stores as payload `r`: splitmix64(row) % 1,000,000."""
    m = np.uint64(0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & m
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & m
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(1_000_000)).astype(np.int64)


def filtered_truth(metric, base, queries, mask, k=100):
    """Exact top-k rows among those passing `mask` (brute force)."""
    idx = np.nonzero(mask)[0]
    sub = base[idx].astype(np.float64)
    out = np.zeros((len(queries), min(k, len(idx))), dtype=np.int64)
    for i, q in enumerate(queries):
        d = exact_dist(metric, q, sub)
        out[i] = idx[np.argsort(d, kind="stable")[: out.shape[1]]]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--query-set", default="main")
    ap.add_argument("--queries", type=int)
    ap.add_argument(
        "--engines",
        default="hnswlib,faiss-flat,faiss-hnsw,faiss-ivf_pq,faiss-lsh,usearch,trovedb-flat",
        help="comma-separated: hnswlib, faiss-{flat,hnsw,ivf_pq,lsh}, usearch, trovedb-<index> (via the Python module)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--sweep-ef", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 40, 80, 160, 320])
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--pq-m", type=int, default=16)
    ap.add_argument("--refine", type=float, default=10.0)
    ap.add_argument("--sweep-nprobe", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--lsh-bits", type=int, default=512, help="faiss IndexLSH code bits")
    ap.add_argument("--sweep-lsh-refine", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50, 100, 200, 400],
                    help="faiss IndexLSH + IndexRefineFlat k_factor values")
    ap.add_argument("--lsh-tables", type=int, default=0, help="trovedb lsh tables (0: the engine's default)")
    ap.add_argument("--lsh-table-bits", type=int, default=0, help="trovedb lsh bits per table (0: automatic)")
    ap.add_argument("--sweep-trovedb-lsh-refine", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="trovedb lsh: sweep refine at the default probes instead of sweeping probes")
    ap.add_argument("--repeat", type=int, default=1, help="single-thread QPS: the best of this many passes")
    ap.add_argument("--sweep-probes", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16, 32, 64, 128])
    ap.add_argument("--out", default="bench-out/peers.jsonl")
    ap.add_argument("--filter-selectivity", help="comma-separated fractions, e.g. 1,0.1,0.01: filter on the "
                    "uniform attribute annbench uses (hnswlib filter callback, faiss IDSelectorBitmap, trovedb filter)")
    a = ap.parse_args()

    name, metric, base, queries, gt = load(a.dataset, a.query_set, a.queries)
    n, dim = base.shape
    if metric == "cosine":  # engines without a cosine space get unit vectors
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    print(f"dataset {name}: {n} x {dim} {metric}, {len(queries)} queries; threads pinned to {a.threads} "
          f"(OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}); machine: {machine()}")
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cases = [(None, None, gt, None)]
    if a.filter_selectivity:
        attr = bench_attr(n)
        cases = []
        for s in a.filter_selectivity.split(","):
            bound = int(round(float(s) * 1_000_000))
            mask = attr < bound
            cases.append((f"r<{bound}", mask, filtered_truth(metric, base, queries, mask), float(mask.mean())))
            print(f"filter r<{bound}: {int(mask.sum())} of {n} points pass ({100 * mask.mean():.3f}%)")
    a.attr = bench_attr(n)
    for spec in a.engines.split(","):
        try:
            if spec == "hnswlib":
                e = make_hnswlib(metric, dim, a)
            elif spec.startswith("faiss-"):
                e = make_faiss(spec[len("faiss-"):], metric, dim, a)
            elif spec == "usearch":
                e = make_usearch(metric, dim, a)
            elif spec.startswith("trovedb-"):
                e = make_trovedb(spec[len("trovedb-"):], metric, dim, a)
            else:
                print(f"unknown engine {spec}, skipped")
                continue
        except ImportError as err:
            print(f"{spec}: not installed ({err}); pip install hnswlib faiss-cpu usearch")
            continue
        t = time.perf_counter()
        e.build(base)
        build_s = time.perf_counter() - t
        nbytes, rss = e.nbytes(), rss_bytes()
        for label, mask, cgt, sel in cases:
            if mask is not None and not getattr(e, "filtered", False):
                print(f"{e.engine} {e.index}: no filtered search, skipped for {label}")
                continue
            for p in e.sweep():
                e.set(p) if p else None
                e.mask = mask
                for q in queries[:50]:
                    e.one(q, a.k)
                qps1 = 0.0
                for _ in range(max(1, a.repeat)):  # best of --repeat passes (the machine is noisy)
                    lat, res = [], []
                    t0 = time.perf_counter()
                    for q in queries:
                        s = time.perf_counter()
                        res.append(np.asarray(e.one(q, a.k)))
                        lat.append((time.perf_counter() - s) * 1e3)
                    qps1 = max(qps1, len(queries) / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                e.batch(queries, a.k)
                qpsb = len(queries) / (time.perf_counter() - t0)
                r100 = None
                if cgt.shape[1] >= 100 and n >= 100:
                    r100 = recall(metric, base, queries, cgt, np.asarray(e.batch(queries, 100)), 100)
                lat_a = np.array(lat)
                rec = {
                    "schema": 1, "engine": e.engine, "index": e.index, "dataset": name, "n": n, "dim": dim,
                    "metric": metric, "nq": len(queries), "k": a.k, "build_params": e.build_params,
                    "search_params": {**p, **({"filter": label} if label else {})}, "threads": a.threads, "build_s": build_s, "index_bytes": nbytes,
                    "rss_bytes": rss, "recall_at_1": recall(metric, base, queries, cgt, res, 1),
                    "recall_at_10": recall(metric, base, queries, cgt, res, min(10, a.k)), "recall_at_100": r100,
                    "qps_single": qps1, "qps_batch": qpsb,
                    "latency_ms": {"p50": float(np.percentile(lat_a, 50)), "p95": float(np.percentile(lat_a, 95)),
                                   "p99": float(np.percentile(lat_a, 99))},
                    "filter_selectivity": sel, "machine": machine(), "timestamp": int(time.time()),
                }
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{e.engine:8} {e.index:7} {json.dumps(p):28} R@1 {rec['recall_at_1']:.4f} R@10 {rec['recall_at_10']:.4f} "
                      f"QPS(1t) {qps1:9.1f} QPS(batch) {qpsb:9.1f} p50 {rec['latency_ms']['p50']:.3f} ms build {build_s:.2f}s "
                      f"{nbytes / 2**20:.1f} MiB")
    print(f"appended to {out}; plot with: cargo run --release -p trovedb-bench --bin annbench -- plot --in {out} --in <annbench.jsonl> --out bench-out/plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
