"""Read-only handles: worker processes (spawn and fork pools) open the database with
read_only=True beside the writer, see what it has written, and follow its later writes,
seals and merges; changes through them raise ReadOnlyError."""

import multiprocessing as mp
import os
import sys

import numpy as np
import pytest

import trovedb

DIM = 8

# The read-only handle each pool worker opens once (in the worker, after it started).
_worker = {}


def _rows(lo: int, hi: int):
    ids = np.arange(lo, hi, dtype=np.uint64)
    rng = np.random.default_rng(lo)
    return ids, rng.standard_normal((hi - lo, DIM)).astype(np.float32), [{"n": int(i)} for i in ids]


def _reader_view(path: str) -> tuple[int, list[int], list[int]]:
    """Open read-only once per worker process; return (count, ids found by a filter, top ids)."""
    if "c" not in _worker:
        db = trovedb.open(path, read_only=True)
        _worker.update(db=db, c=db.get_collection("c"))
    c = _worker["c"]
    got = c.get(filter={"n": {"$gte": 0}}, limit=100_000)
    ids = c.search(np.ones(DIM, dtype=np.float32), k=5).ids
    return c.count(), sorted(p["id"] for p in got), [int(i) for i in ids]


def _reader_refuses(path: str) -> list[str]:
    db = trovedb.open(path, read_only=True)
    c = db.get_collection("c")
    v = np.ones((1, DIM), dtype=np.float32)
    refused = []
    for name, call in {
        "upsert": lambda: c.upsert(np.array([99_999], dtype=np.uint64), v),
        "delete": lambda: c.delete([1]),
        "flush": lambda: c.flush(),
        "compact": lambda: c.compact(),
        "create_collection": lambda: db.create_collection("x", dim=DIM),
        "drop_collection": lambda: db.drop_collection("c"),
    }.items():
        try:
            call()
        except trovedb.ReadOnlyError as e:
            assert "read-only" in str(e), e
            refused.append(name)
    db.close()
    return refused


def _exact_top(ids: np.ndarray, vecs: np.ndarray, k: int) -> list[int]:
    q = np.ones(DIM, dtype=np.float32)
    q /= np.linalg.norm(q)
    v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    order = np.argsort(-(v @ q), kind="stable")[:k]
    return [int(ids[i]) for i in order]


@pytest.mark.parametrize("method", ["spawn", "fork"] if sys.platform != "win32" else ["spawn"])
def test_reader_pools_follow_the_writer(tmp_path, method):
    path = tmp_path / "db"
    db = trovedb.open(path, seal_threshold_rows=300)
    c = db.create_collection("c", dim=DIM)
    all_ids, all_vecs, payloads = _rows(0, 1000)
    c.upsert(all_ids[:500], all_vecs[:500], payloads[:500])
    # Fork-pool workers inherit the writer's handle but never use it: each opens its own
    # read-only handle (the pattern for gunicorn --preload and fork pools).
    with mp.get_context(method).Pool(3) as pool:
        first = pool.map(_reader_view, [str(path)] * 6)
        for count, ids, top in first:
            assert count == 500 and ids == list(range(500))
            assert top == _exact_top(all_ids[:500], all_vecs[:500], 5)
        # More writes, a delete, a seal and a merge: the same worker handles follow.
        c.upsert(all_ids[500:], all_vecs[500:], payloads[500:])
        c.delete(list(range(0, 100)))
        c.flush()
        c.compact()
        later = pool.map(_reader_view, [str(path)] * 6)
        live = list(range(100, 1000))
        for count, ids, top in later:
            assert count == 900 and ids == live
            assert top == _exact_top(all_ids[100:], all_vecs[100:], 5)
        refused = pool.apply(_reader_refuses, (str(path),))
        assert refused == ["upsert", "delete", "flush", "compact", "create_collection", "drop_collection"]
    assert c.count() == 900
    db.close()


def test_second_writer_is_told_about_read_only(tmp_path):
    path = tmp_path / "db"
    db = trovedb.open(path)
    db.create_collection("c", dim=DIM).upsert(*_rows(0, 10))
    with mp.get_context("spawn").Pool(1) as pool:
        msg = pool.apply(_second_writer, (str(path),))
    assert f"process {os.getpid()}" in msg and "read_only=True" in msg, msg
    ro = trovedb.open(path, read_only=True)
    assert ro.read_only and not db.read_only
    rc = ro.get_collection("c")
    assert rc.read_only and len(rc) == 10
    assert rc.stats()["read_only"] is True and rc.stats()["torn_tail"] is None
    db.get_collection("c").upsert(*_rows(10, 20))
    ro.refresh()
    assert len(rc) == 20
    ro.close()
    db.close()


def _second_writer(path: str) -> str:
    try:
        trovedb.open(path)
    except trovedb.LockedError as e:
        return str(e)
    return "opened"


def test_read_only_open_creates_nothing(tmp_path):
    with pytest.raises(trovedb.StorageIOError, match="does not create"):
        trovedb.open(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()


def test_repair_cuts_a_damaged_log_and_reports_it(tmp_path):
    path = tmp_path / "db"
    with trovedb.open(path) as db:
        c = db.create_collection("c", dim=DIM)
        for i in range(10):
            c.upsert(*_rows(i, i + 1))
    (wal,) = sorted((path / "collections" / "c" / "wal").iterdir())
    data = bytearray(wal.read_bytes())
    rec = (len(data) - 32) // 10
    at = 32 + 4 * rec  # the 5th record; five acknowledged ones follow it
    data[at + 20] ^= 0xFF
    wal.write_bytes(bytes(data))
    with trovedb.open(path) as db:
        with pytest.raises(trovedb.CorruptionError, match=f"offset {at}"):
            db.get_collection("c")
    report = trovedb.repair(path)
    cut = report["c"]["log_cut"]
    assert report["c"]["error"] is None and report["c"]["dropped_segments"] == []
    assert (cut["offset"], cut["records_lost"], cut["last_kept_lsn"]) == (at, 5, 4), cut
    with trovedb.open(path) as db:
        c = db.get_collection("c")
        assert sorted(p["id"] for p in c.get(filter={}, limit=100)) == [0, 1, 2, 3]
        assert c.stats()["torn_tail"] is None
