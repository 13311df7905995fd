#!/usr/bin/env python3
"""Quantised HNSW against float HNSW and the peers' quantised graphs, in one process.

trovedb HNSW with float32 vectors, with `quantization="sq8"` and with `"binary"` (each
bulk-loaded through the public Python API and compacted into one segment), faiss
`IndexHNSWSQ` (QT_8bit) and usearch `dtype="i8"`, all with M=16 and ef_construction=200,
built on `--threads` threads and searched single-threaded one query at a time over an `ef`
sweep. Prints QPS at recall@10 0.90 / 0.95 / 0.99 (linear interpolation), the ratios
against trovedb float, and the memory a search keeps resident per vector (codes and graph:
trovedb's `stats()`; faiss: the serialised index; usearch: `memory_usage`).

    python3 benches/quantbench.py --dataset ../shared/data/text-minilm-dev
    python3 benches/quantbench.py --synthetic 1000000,384 --queries 1000

`--synthetic n,dim` generates clustered unit vectors (cosine) and exact ground truth.
"""

import argparse
import json
import pathlib
import shutil
import tempfile
import time

import numpy as np

# Shared with the default-path benchmark (this directory is on the path when run as a script).
from defaultpath import RECALLS, fmt, read_vecs, recall_at



def synthetic(n: int, dim: int, nq: int, seed: int = 7):
    """Clustered unit vectors (1,000 centres, anisotropic noise) like sentence embeddings;
    queries from the same distribution; exact top-100 by matrix products."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    scale = (0.3 + rng.random(dim)).astype(np.float32)

    def draw(m):
        out = np.empty((m, dim), np.float32)
        for i in range(0, m, 100_000):
            j = min(m, i + 100_000)
            c = centres[rng.integers(0, 1000, j - i)]
            out[i:j] = c + rng.standard_normal((j - i, dim)).astype(np.float32) * scale
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    base, queries = draw(n), draw(nq)
    gt = np.empty((nq, 100), np.int64)
    best_d = np.full((nq, 100), -np.inf, np.float32)
    best_i = np.zeros((nq, 100), np.int64)
    for i in range(0, n, 200_000):
        s = queries @ base[i : i + 200_000].T
        d = np.concatenate([best_d, s], axis=1)
        idx = np.concatenate([best_i, np.arange(i, i + s.shape[1])[None, :].repeat(nq, 0)], axis=1)
        top = np.argpartition(-d, 100, axis=1)[:, :100]
        best_d = np.take_along_axis(d, top, 1)
        best_i = np.take_along_axis(idx, top, 1)
    order = np.argsort(-best_d, axis=1)
    gt = np.take_along_axis(best_i, order, 1)
    return base, queries, gt, "cosine"


def frontier(points):
    """The (recall, qps) points no other point beats on both."""
    out, best = [], -1.0
    for r, q in sorted(points, key=lambda p: (-p[0], -p[1])):
        if q > best:
            out.append((r, q))
            best = q
    return out


def at_recall(points, target):
    pts = sorted(frontier(points))
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return max(q0, q1) if r1 == r0 else q0 + (q1 - q0) * (target - r0) / (r1 - r0)
    if pts and pts[0][0] >= target:
        return pts[0][1]
    return None


def sweep(search, queries, gt, k, efs, repeat):
    out = []
    for ef in efs:
        best, res = 0.0, []
        for _ in range(repeat):
            res = []
            t = time.perf_counter()
            for q in queries:
                res.append(search(q, k, ef))
            best = max(best, len(queries) / (time.perf_counter() - t))
        out.append((recall_at(res, gt, k), best, ef if isinstance(ef, str) else f"ef{ef}"))
    return out


def show(name, pts):
    print(f"  {name:<18} " + " ".join(f"{ef}:{r:.3f}@{q:.0f}" for r, q, ef in pts), flush=True)
    return {t: at_recall([(r, q) for r, q, _ in pts], t) for t in RECALLS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", help="TEXMEX directory (base/query fvecs, groundtruth.ivecs, info.json)")
    ap.add_argument("--synthetic", help="n,dim: clustered unit vectors, cosine")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="build threads (every engine)")
    ap.add_argument("--sweep-ef", default="10,16,24,32,48,64,96,128,192,256")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", default="float,sq8,binary,faiss-sq8,usearch-i8")
    ap.add_argument("--rescore", default="sq8=2,3;binary=3,5,10",
                    help="rescore values swept with ef for each quantisation (QPS at a recall is "
                         "read off the frontier of all the points)")
    ap.add_argument("--dir", help="database directory (default: a temporary one)")
    ap.add_argument("--json", help="append the figures as one JSON line here")
    a = ap.parse_args()
    if a.dataset:
        d = pathlib.Path(a.dataset)
        metric = json.loads((d / "info.json").read_text())["metric"]
        base = read_vecs(d / "base.fvecs", np.float32)
        queries = read_vecs(d / "query.fvecs", np.float32)[: a.queries]
        gt = read_vecs(d / "groundtruth.ivecs", np.int32)[: a.queries]
        label = d.name
    elif a.synthetic:
        n, dim = (int(x) for x in a.synthetic.split(","))
        t = time.perf_counter()
        base, queries, gt, metric = synthetic(n, dim, a.queries)
        label = f"synthetic-{n}-{dim}"
        print(f"generated {label} and its ground truth in {time.perf_counter() - t:.0f} s")
    else:
        ap.error("--dataset or --synthetic")
    n, dim = base.shape
    efs = [int(x) for x in a.sweep_ef.split(",")]
    only = set(a.only.split(","))
    print(f"{label}: {n} x {dim} {metric}, {len(queries)} queries, k={a.k}, build threads {a.threads}")
    curves, memory, build = {}, {}, {}

    import trovedb

    root = pathlib.Path(a.dir) if a.dir else pathlib.Path(tempfile.mkdtemp(prefix="quantbench-"))
    shutil.rmtree(root, ignore_errors=True)
    db = trovedb.open(root, seal_threshold_rows=n + 1, durability="off")
    ids = np.arange(n, dtype=np.uint64)
    for quant in ("none", "sq8", "binary"):
        name = {"none": "trovedb float", "sq8": "trovedb sq8", "binary": "trovedb binary"}[quant]
        if {"none": "float"}.get(quant, quant) not in only:
            continue
        c = db.create_collection(quant, dim, metric=metric, index="hnsw", quantization=quant)
        t = time.perf_counter()
        for i in range(0, n, 10_000):
            c.upsert(ids[i : i + 10_000], base[i : i + 10_000])
        c.flush()
        c.wait_idle()
        build[name] = time.perf_counter() - t
        seg = c.stats()["segments"]
        assert len(seg) == 1, seg
        resident = seg[0]["index_bytes"] + (seg[0]["quant_bytes"] if quant != "none" else seg[0]["vector_bytes"])
        memory[name] = resident / n
        print(f"{name}: built in {build[name]:.1f} s; resident {memory[name]:.0f} B/vector "
              f"(graph {seg[0]['index_bytes'] / n:.0f}, codes {seg[0]['quant_bytes'] / n:.0f}, "
              f"float rows {seg[0]['vector_bytes'] / n:.0f} read to re-rank)", flush=True)

        if quant == "none":
            def tsearch(q, k, ef, c=c):
                return c.search(q, k=k, ef=ef).ids

            curves[name] = show(name, sweep(tsearch, queries, gt, a.k, efs, a.repeat))
        else:
            rescores = dict(x.split("=") for x in a.rescore.split(";")).get(quant, "")
            settings = [f"r{r}ef{ef}" for r in rescores.split(",") if r for ef in efs]

            def qsearch(q, k, setting, c=c):
                r, ef = setting[1:].split("ef")
                return c.search(q, k=k, ef=int(ef), rescore=int(r)).ids

            curves[name] = show(name, sweep(qsearch, queries, gt, a.k, settings, a.repeat))
    db.close()
    if not a.dir:
        shutil.rmtree(root, ignore_errors=True)

    unit = base
    if metric == "cosine":
        unit = base / np.linalg.norm(base, axis=1, keepdims=True)
        qs = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    else:
        qs = queries
    if "faiss-sq8" in only:
        import faiss

        faiss.omp_set_num_threads(a.threads)
        mt = faiss.METRIC_INNER_PRODUCT if metric in ("cosine", "dot") else faiss.METRIC_L2
        fx = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, 16, mt)
        fx.hnsw.efConstruction = 200
        t = time.perf_counter()
        fx.train(unit)
        fx.add(unit)
        build["faiss HNSWSQ"] = time.perf_counter() - t
        memory["faiss HNSWSQ"] = faiss.serialize_index(fx).nbytes / n
        print(f"faiss HNSWSQ: built in {build['faiss HNSWSQ']:.1f} s; {memory['faiss HNSWSQ']:.0f} B/vector", flush=True)
        faiss.omp_set_num_threads(1)

        def fsearch(q, k, ef):
            fx.hnsw.efSearch = max(ef, k)
            return fx.search(q[None, :], k)[1][0]

        curves["faiss HNSWSQ"] = show("faiss HNSWSQ", sweep(fsearch, qs, gt, a.k, efs, a.repeat))
        del fx
    if "usearch-i8" in only:
        from usearch.index import Index

        um = {"cosine": "cos", "l2": "l2sq", "dot": "ip"}[metric]
        ux = Index(ndim=dim, metric=um, dtype="i8", connectivity=16, expansion_add=200)
        t = time.perf_counter()
        ux.add(np.arange(n, dtype=np.uint64), unit, threads=a.threads)
        build["usearch i8"] = time.perf_counter() - t
        memory["usearch i8"] = ux.memory_usage / n
        print(f"usearch i8: built in {build['usearch i8']:.1f} s; {memory['usearch i8']:.0f} B/vector", flush=True)

        def usearch(q, k, ef):
            ux.expansion_search = max(ef, k)
            return ux.search(q, k, threads=1).keys

        curves["usearch i8"] = show("usearch i8", sweep(usearch, qs, gt, a.k, efs, a.repeat))

    print(f"\nsingle-thread QPS at recall@{a.k} ({label}):")
    print(f"  {'':<18} " + " ".join(f"{t:>9}" for t in RECALLS) + "   B/vector  build s")
    for name, row in curves.items():
        print(f"  {name:<18} " + " ".join(f"{fmt(row[t]):>9}" for t in RECALLS)
              + f"   {memory[name]:>8.0f}  {build[name]:>7.1f}")
    ref = curves.get("trovedb float")
    if ref:
        print("  ratio to trovedb float at 0.95 (QPS, resident bytes):")
        for name, row in curves.items():
            x, y = row[0.95], ref[0.95]
            q = "-" if x is None or y is None else f"{x / y:.2f}x"
            print(f"    {name:<18} {q:>7}  {memory[name] / memory['trovedb float']:.2f}")
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps({"dataset": label, "n": n, "dim": dim, "curves": {k: {str(t): v for t, v in r.items()} for k, r in curves.items()},
                                "bytes_per_vector": memory, "build_s": build}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
