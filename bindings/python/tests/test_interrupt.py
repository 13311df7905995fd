"""Ctrl-C during long calls: a compact stops mid-build and changes nothing; an upsert past
its log write completes and the KeyboardInterrupt says so."""

import _thread
import threading
import time

import numpy as np
import pytest

import trovedb

DIM = 64


def _interrupt_after(seconds: float) -> threading.Timer:
    t = threading.Timer(seconds, _thread.interrupt_main)
    t.start()
    return t


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return np.arange(n, dtype=np.uint64), rng.standard_normal((n, DIM)).astype(np.float32)


def test_compact_stops_and_changes_nothing(tmp_path):
    db = trovedb.open(tmp_path / "db", seal_threshold_rows=1_000_000, background_compaction=False)
    c = db.create_collection("c", dim=DIM, metric="l2", index="hnsw", ef_construction=200)
    ids, vecs = _data(40_000, 1)
    for lo in range(0, 40_000, 20_000):
        c.upsert(ids[lo : lo + 20_000], vecs[lo : lo + 20_000])
        c.flush()
    c.delete(list(range(0, 40_000, 3)))  # deletions: the merge must rebuild its graph
    before = c.stats()
    t0 = time.monotonic()
    timer = _interrupt_after(0.3)
    with pytest.raises(KeyboardInterrupt, match="compact interrupted: nothing was changed"):
        c.compact()
    stopped_after = time.monotonic() - t0
    timer.join()
    after = c.stats()
    assert [s["id"] for s in after["segments"]] == [s["id"] for s in before["segments"]]
    assert after["rows"] == before["rows"] == 40_000 - len(range(0, 40_000, 3))
    # Uninterrupted, the same compact runs to the end (and took longer than the stop).
    t0 = time.monotonic()
    c.compact()
    full = time.monotonic() - t0
    assert len(c.stats()["segments"]) == 1 and len(c) == after["rows"]
    print(f"compact stopped after {stopped_after:.2f} s; uninterrupted {full:.2f} s")
    db.close()


def test_upsert_past_its_log_write_completes_and_says_so(tmp_path):
    db = trovedb.open(tmp_path / "db", seal_threshold_rows=1_000_000)
    c = db.create_collection("c", dim=DIM, metric="l2", index="hnsw", ef_construction=200)
    ids, vecs = _data(20_000, 2)
    timer = _interrupt_after(0.5)
    with pytest.raises(KeyboardInterrupt, match="upsert completed before the interrupt"):
        c.upsert(ids, vecs)
    timer.join()
    assert len(c) == 20_000
    db.close()
    with trovedb.open(tmp_path / "db") as again:
        assert len(again.get_collection("c")) == 20_000
