#!/usr/bin/env python3
"""A collection larger than memory: built once, then opened and searched by a process whose
memory (page cache included) is capped below the size of its float32 vectors.

    # 1. build (no cap): synthetic clustered vectors, exact ground truth, one segment
    python3 benches/ltmbench.py build --n 10000000 --dim 128 --index ivf_pq --dir /big/ltm
    # 2. search under a memory cap (cgroup v1 or v2; see README "Memory")
    python3 benches/ltmbench.py search --dir /big/ltm --cap-gb 2.5 \
        --sweep "nprobe=16,refine=2;nprobe=32,refine=3"

`search` moves itself into a fresh memory cgroup with the given limit (root needed; it
refuses to run uncapped unless `--no-cap`), drops the build's pages from the page cache
first (`posix_fadvise(DONTNEED)` on every file of the database), opens the database (timed:
the open reads no vectors, no codes), runs one warm-up pass, then searches single-threaded
over the sweep: per setting once with the float32 rows dropped from the page cache ("disk":
every re-ranked row read from disk) and once more ("cached"), printing recall@10, QPS, bytes
read from disk per query (`/proc/self/io`) and the resident set.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np


def synthetic(n: int, dim: int, nq: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, dim)).astype(np.float32) * 2.0
    scale = (0.5 + rng.random(dim)).astype(np.float32)

    def draw(m, out=None):
        out = np.empty((m, dim), np.float32) if out is None else out
        for i in range(0, m, 500_000):
            j = min(m, i + 500_000)
            out[i:j] = centres[rng.integers(0, len(centres), j - i)]
            out[i:j] += rng.standard_normal((j - i, dim)).astype(np.float32) * scale
        return out

    return draw(n), draw(nq)


def exact_l2(base, queries, k=100):
    qn = (queries.astype(np.float64) ** 2).sum(1)
    best_d = np.full((len(queries), k), np.inf)
    best_i = np.zeros((len(queries), k), np.int64)
    for i in range(0, len(base), 100_000):
        b = base[i : i + 100_000]
        d = qn[:, None] - 2.0 * (queries @ b.T).astype(np.float64) + (b.astype(np.float64) ** 2).sum(1)[None, :]
        dd = np.concatenate([best_d, d], 1)
        ii = np.concatenate([best_i, np.broadcast_to(np.arange(i, i + len(b)), d.shape)], 1)
        top = np.argpartition(dd, k, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(dd, top, 1), np.take_along_axis(ii, top, 1)
    order = np.argsort(best_d, 1)
    return np.take_along_axis(best_i, order, 1)


def peak_rss_gb():
    """This process's peak resident set (VmHWM: reset by exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def rss_gb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def read_bytes():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def build(a):
    d = pathlib.Path(a.dir)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    t = time.perf_counter()
    base, queries = synthetic(a.n, a.dim, a.queries)
    gt = exact_l2(base, queries)
    base.tofile(d / "base.f32")
    del base
    np.save(d / "queries.npy", queries)
    np.save(d / "gt.npy", gt)
    print(f"data and ground truth: {time.perf_counter() - t:.0f} s", flush=True)
    # The ingest runs in a fresh process, so its peak resident set is trovedb's own.
    cmd = [sys.executable, __file__, "ingest", "--dir", str(d), "--n", str(a.n), "--dim", str(a.dim),
           "--index", a.index, "--quantization", a.quantization]
    subprocess.run(cmd, check=True)


def ingest(a):
    import trovedb

    d = pathlib.Path(a.dir)
    db = trovedb.open(d / "db", seal_threshold_rows=a.n + 1, durability="off")
    params = {}
    if a.quantization != "none":
        params["quantization"] = a.quantization
    c = db.create_collection("c", a.dim, metric="l2", index=a.index, **params)
    t = time.perf_counter()
    row = a.dim * 4
    with open(d / "base.f32", "rb") as f:
        for i in range(0, a.n, 100_000):
            chunk = np.fromfile(f, dtype=np.float32, count=min(100_000, a.n - i) * a.dim).reshape(-1, a.dim)
            c.upsert(np.arange(i, i + len(chunk), dtype=np.uint64), chunk)
    assert os.path.getsize(d / "base.f32") == a.n * row
    t_ingest = time.perf_counter() - t
    c.flush()
    c.wait_idle()
    t_build = time.perf_counter() - t
    st = c.stats()
    seg = st["segments"]
    print(json.dumps({"n": a.n, "dim": a.dim, "index": a.index, "quantization": a.quantization,
                      "ingest_s": round(t_ingest, 1), "ingest_and_build_s": round(t_build, 1),
                      "peak_rss_gb": round(peak_rss_gb(), 2), "bytes_on_disk": st["bytes_on_disk"],
                      "segments": [{k: s[k] for k in ("rows", "index", "index_detail", "index_bytes",
                                                       "quant_bytes", "vector_bytes", "bytes")} for s in seg]}),
          flush=True)
    db.close()
    (d / "build.json").write_text(json.dumps({"n": a.n, "dim": a.dim, "index": a.index,
                                               "quantization": a.quantization, "build_s": t_build,
                                               "peak_rss_gb": peak_rss_gb()}))


def enter_cgroup(limit: int) -> str:
    v2 = pathlib.Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        g = pathlib.Path(f"/sys/fs/cgroup/ltmbench-{os.getpid()}")
        g.mkdir()
        (g / "memory.max").write_text(str(limit))
        (g / "memory.swap.max").write_text("0")
    else:
        g = pathlib.Path(f"/sys/fs/cgroup/memory/ltmbench-{os.getpid()}")
        g.mkdir()
        (g / "memory.limit_in_bytes").write_text(str(limit))
    (g / "cgroup.procs").write_text(str(os.getpid()))
    return str(g)


def drop_cache(d: pathlib.Path):
    for p in d.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd) if os.access(p, os.W_OK) else None
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def search(a):
    d = pathlib.Path(a.dir)
    meta = json.loads((d / "build.json").read_text())
    raw = meta["n"] * meta["dim"] * 4
    if not a.no_cap:
        limit = int(a.cap_gb * 2**30)
        g = enter_cgroup(limit)
        print(f"memory cap {a.cap_gb} GiB ({limit / raw:.2f}x the {raw / 2**30:.2f} GiB of float32 vectors), cgroup {g}")
    queries = np.load(d / "queries.npy")[: a.queries]
    gt = np.load(d / "gt.npy")[: a.queries]
    drop_cache(d / "db")
    import trovedb

    r0 = read_bytes()
    t = time.perf_counter()
    db = trovedb.open(d / "db", read_only=True)
    c = db.get_collection("c")
    t_open = time.perf_counter() - t
    print(f"open: {t_open * 1000:.0f} ms, read {(read_bytes() - r0) / 2**20:.1f} MiB, rss {rss_gb():.2f} GiB", flush=True)
    seg = c.stats()["segments"]
    print("segments:", [(s["rows"], s["index"], s["index_detail"]) for s in seg])
    settings = [{k: int(v) for k, v in (kv.split("=") for kv in one.split(","))} for one in a.sweep.split(";")]
    seg_files = sorted((d / "db").rglob("*.seg"))
    vec_bytes = meta["n"] * meta["dim"] * 4
    out = []

    def run(label_round, params):
        nonlocal c
        r0 = read_bytes()
        hits = 0
        t = time.perf_counter()
        for q, g in zip(queries, gt):
            ids = c.search(q, k=10, **params).ids
            hits += len(set(ids.tolist()) & set(g[:10].tolist()))
        dt = time.perf_counter() - t
        rec = hits / (10 * len(queries))
        per_q = (read_bytes() - r0) / len(queries)
        row = {"round": label_round, **params, "recall": round(rec, 4), "qps": round(len(queries) / dt, 1),
               "read_kib_per_query": round(per_q / 1024, 1), "rss_gb": round(rss_gb(), 2)}
        out.append(row)
        label = " ".join(f"{k}={v}" for k, v in params.items())
        print(f"  {label_round:<6} {label}: recall@10 {rec:.4f}, {len(queries) / dt:,.0f} QPS, "
              f"{per_q / 1024:.1f} KiB read/query, rss {rss_gb():.2f} GiB", flush=True)

    # "disk": the float32 rows (the first section of a segment file, at 4096) are dropped
    # from the page cache before each setting, so every row a query re-ranks is read from
    # disk (the codes, lists and graph stay cached as they would in steady state: the
    # pessimistic case of a working set far larger than memory). "cached": the same queries
    # again, their rows now in the page cache within the cap.
    run("warmup", settings[0])
    for params in settings:
        # Pages mapped by a process stay cached whatever the advice: close (unmap), drop the
        # float32 rows, open again (the codes, lists and graph stay in the page cache).
        del c
        db.close()
        for f in seg_files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 4096, vec_bytes, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        db = trovedb.open(d / "db", read_only=True)
        c = db.get_collection("c")
        run("disk", params)
        run("cached", params)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps({"build": meta, "cap_gb": None if a.no_cap else a.cap_gb,
                                "open_ms": round(t_open * 1000, 1), "sweep": out}) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--n", type=int, default=10_000_000)
    b.add_argument("--dim", type=int, default=128)
    b.add_argument("--index", default="ivf_pq")
    b.add_argument("--quantization", default="none")
    b.add_argument("--queries", type=int, default=1000)
    b.add_argument("--dir", required=True)
    s = sub.add_parser("search")
    s.add_argument("--dir", required=True)
    s.add_argument("--cap-gb", type=float, default=2.5)
    s.add_argument("--no-cap", action="store_true")
    s.add_argument("--sweep", default="nprobe=8;nprobe=16;nprobe=32",
                   help="settings separated by ';', each knob=value[,knob=value]")
    s.add_argument("--queries", type=int, default=1000)
    s.add_argument("--json")
    g = sub.add_parser("ingest", help="(run by build)")
    g.add_argument("--dir", required=True)
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--dim", type=int, required=True)
    g.add_argument("--index", required=True)
    g.add_argument("--quantization", required=True)
    a = ap.parse_args()
    {"build": build, "ingest": ingest, "search": search}[a.cmd](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
