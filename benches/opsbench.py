"""Operations figures for the README and issue notes: `trovedb info` / `verify` time on a
large database, online backup throughput and what it does to concurrent writes, import
time of the module.

    python3 benches/opsbench.py --rows 1000000 --dim 128 --workdir /tmp/opsbench

The database is built once (flat index, default settings, batches of 10,000 random
vectors with a small payload) and reused by later runs with the same --workdir.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

import trovedb


def build(path: pathlib.Path, rows: int, dim: int) -> None:
    if (path / "done").exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(1)
    t = time.monotonic()
    with trovedb.open(path) as db:
        c = db.create_collection("vecs", dim=dim, metric="l2", index="flat")
        for s in range(0, rows, 10_000):
            n = min(10_000, rows - s)
            c.upsert(
                np.arange(s, s + n),
                rng.standard_normal((n, dim), dtype=np.float32),
                [{"g": i % 100} for i in range(s, s + n)],
            )
        c.wait_idle()
    (path / "done").write_text("")
    print(f"built {rows:,} x {dim} in {time.monotonic() - t:.1f} s", flush=True)


def timed_cli(*args: str) -> tuple[float, str]:
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "trovedb", *args], capture_output=True, text=True)
    dt = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"trovedb {args}: exit {p.returncode}: {p.stderr}")
    return dt, p.stdout


def write_latencies(c: trovedb.Collection, dim: int, stop: threading.Event, out: list) -> None:
    rng = np.random.default_rng(2)
    i = 10**9
    while not stop.is_set():
        v = rng.standard_normal((100, dim), dtype=np.float32)
        t = time.perf_counter()
        c.upsert(np.arange(i, i + 100), v)
        out.append((time.monotonic(), time.perf_counter() - t))
        i += 100


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--workdir", default="/tmp/opsbench")
    args = ap.parse_args()
    work = pathlib.Path(args.workdir)
    db_path = work / "db"
    build(db_path, args.rows, args.dim)
    res: dict = {"rows": args.rows, "dim": args.dim}

    # Import time of the module (fresh interpreters, best of 5), numpy alone for reference.
    def best(code: str) -> float:
        ts = []
        for _ in range(5):
            t = time.monotonic()
            subprocess.run([sys.executable, "-c", code], check=True)
            ts.append(time.monotonic() - t)
        return min(ts)

    res["python_startup_s"] = round(best("pass"), 3)
    res["import_numpy_s"] = round(best("import numpy"), 3)
    res["import_trovedb_s"] = round(best("import trovedb"), 3)

    for cmd in ("info", "verify"):
        ts = [timed_cli(cmd, str(db_path), "--json")[0] for _ in range(3)]
        res[f"{cmd}_s"] = round(min(ts), 3)
    res["bytes_on_disk"] = json.loads(timed_cli("info", str(db_path), "--json")[1])["bytes"]

    # Backup while a thread writes batches of 100: write latency before and during.
    with trovedb.open(db_path) as db:
        c = db.get_collection("vecs")
        lat: list = []
        stop = threading.Event()
        th = threading.Thread(target=write_latencies, args=(c, args.dim, stop, lat))
        th.start()
        time.sleep(3.0)
        dest = work / "backup"
        shutil.rmtree(dest, ignore_errors=True)
        t0 = time.monotonic()
        report = db.backup(dest)
        t1 = time.monotonic()
        time.sleep(1.0)
        stop.set()
        th.join()
        before = [d for (t, d) in lat if t < t0]
        during = [d for (t, d) in lat if t0 <= t <= t1]
        res["backup"] = {
            "bytes": report["bytes"],
            "seconds": round(t1 - t0, 3),
            "mb_per_s": round(report["bytes"] / 1e6 / (t1 - t0), 1),
            "max_lock_us": report["max_lock_micros"],
            "write_batches_before": len(before),
            "write_batches_during": len(during),
            "write_p50_ms_before": round(pct(before, 50), 3),
            "write_p99_ms_before": round(pct(before, 99), 3),
            "write_p50_ms_during": round(pct(during, 50), 3),
            "write_p99_ms_during": round(pct(during, 99), 3),
            "write_max_ms_during": round(max(during) * 1e3, 3) if during else None,
        }
        c.delete(np.arange(10**9, 10**9 + 100 * len(lat)))
    # The same copy from the command line (a read-only handle, no writer).
    shutil.rmtree(dest, ignore_errors=True)
    dt, _ = timed_cli("backup", str(db_path), str(dest), "--json")
    res["cli_backup_s"] = round(dt, 3)
    shutil.rmtree(dest, ignore_errors=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
