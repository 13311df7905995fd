"""trovedb.ray on one machine: 1, 2 and 4 shards against one embedded collection.

    python3 benches/raybench.py --dataset ../shared/data/text-minilm-dev [--shards 1,2,4]

For each shard count: bulk ingest of the base vectors (with their metadata as payloads)
from a Ray Dataset through `TroveDatasink`, batch search QPS (all queries in one call),
single-query latency (one call per query), recall@10 against the exact top-10; and Ray's
own round trip (an empty actor call), measured in the same run. The baseline is one
trovedb collection through the Python API in this process (batches of 1,000).
Index: HNSW with default settings; one sealed segment per shard (flush after ingest).
"""

import argparse
import json
import pathlib
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import ray

import trovedb
import trovedb.ray as tr


def read_fvecs(p):
    raw = np.fromfile(p, dtype=np.int32)
    d = int(raw[0])
    return raw.reshape(-1, d + 1)[:, 1:].view(np.float32).copy()


def recall(found, gt, k=10):
    return float(np.mean([len(set(map(int, f[:k])) & set(map(int, g[:k]))) / k for f, g in zip(found, gt)]))


def latency(search, queries):
    ts = []
    for q in queries:
        t = time.perf_counter()
        search(q)
        ts.append(time.perf_counter() - t)
    ts = np.asarray(ts) * 1e3
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 99))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="../shared/data/text-minilm-dev")
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--out")
    args = ap.parse_args()
    d = pathlib.Path(args.dataset)
    base = read_fvecs(d / "base.fvecs")
    queries = read_fvecs(d / "query.fvecs")[: args.queries]
    raw = np.fromfile(d / "groundtruth.ivecs", dtype=np.int32)
    gt = raw.reshape(-1, raw[0] + 1)[: args.queries, 1:]
    meta = [json.loads(l) for l in (d / "metadata.jsonl").read_text().splitlines()]
    n, dim = base.shape
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="raybench-"))
    out = []

    # Baseline: one collection, this process.
    t = time.perf_counter()
    db = trovedb.open(tmp / "single", seal_threshold_rows=n + 1)
    one = db.create_collection("c", dim=dim, metric="cosine", index="hnsw")
    for s in range(0, n, 1000):
        one.upsert(np.arange(s, min(s + 1000, n)), base[s : s + 1000],
                   [{"source": m["source"], "bucket100": m["bucket100"]} for m in meta[s : s + 1000]])
    one.flush()
    ingest = time.perf_counter() - t
    t = time.perf_counter()
    res = one.search_batch(queries, k=10, ef=args.ef)
    batch_s = time.perf_counter() - t
    p50, p99 = latency(lambda q: one.search(q.tolist(), k=10, ef=args.ef), queries[:200])
    out.append({"engine": "trovedb (one collection, no Ray)", "shards": 0, "ingest_vps": n / ingest,
                "batch_qps": len(queries) / batch_s, "p50_ms": p50, "p99_ms": p99,
                "recall": recall([list(r.ids) for r in res], gt)})
    db.close()

    ray.init(include_dashboard=False, log_to_driver=False)
    probe = ray.remote(lambda: 0)
    ray.get(probe.remote())

    @ray.remote
    class Echo:
        def ping(self):
            return 0

    e = Echo.remote()
    ray.get(e.ping.remote())
    ts = []
    for _ in range(500):
        t = time.perf_counter()
        ray.get(e.ping.remote())
        ts.append(time.perf_counter() - t)
    ray_rt = float(np.median(ts) * 1e3)

    table = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), dim),
        "source": pa.array([m["source"] for m in meta]),
        "bucket100": pa.array([m["bucket100"] for m in meta]),
    })
    for ns in [int(x) for x in args.shards.split(",")]:
        root = tmp / f"s{ns}"
        c = tr.create_collection(root, "c", ns, dim, "cosine", "hnsw",
                                 open_options={"seal_threshold_rows": n + 1})
        ds = ray.data.from_arrow(table).repartition(max(4, ns * 2))
        t = time.perf_counter()
        ds.write_datasink(tr.TroveDatasink(root, "c"))
        c.flush()
        ingest = time.perf_counter() - t
        assert len(c) == n
        t = time.perf_counter()
        res = c.search(queries, k=10, ef=args.ef)
        batch_s = time.perf_counter() - t
        p50, p99 = latency(lambda q: c.search(q, k=10, ef=args.ef), queries[:200])
        out.append({"engine": "trovedb.ray", "shards": ns, "ingest_vps": n / ingest,
                    "batch_qps": len(queries) / batch_s, "p50_ms": p50, "p99_ms": p99,
                    "recall": recall([r.ids for r in res], gt)})
        c.close()
        shutil.rmtree(root, ignore_errors=True)
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{n:,} x {dim} ({d.name}), {len(queries)} queries, k=10, ef={args.ef}; "
          f"Ray empty actor call round trip: {ray_rt:.3f} ms (median)")
    print(f"{'engine':34} {'shards':>6} {'ingest/s':>9} {'batch QPS':>9} {'p50 ms':>7} {'p99 ms':>7} {'recall':>7}")
    for r in out:
        print(f"{r['engine']:34} {r['shards']:>6} {r['ingest_vps']:>9,.0f} {r['batch_qps']:>9,.0f} "
              f"{r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['recall']:>7.4f}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"ray_roundtrip_ms": ray_rt, "rows": out}, indent=1))


if __name__ == "__main__":
    main()
