"""String ids, payload updates, paging, typed results and per-query filters through the
Python API, checked against a dictionary model and brute force."""

import datetime
import json

import numpy as np
import pytest

import trovedb

DIM = 6


def brute(model: dict, q: np.ndarray, k: int, metric: str = "l2") -> list:
    """Keys of the k nearest points of `model` (key -> (vector, payload)), ties by key."""
    def dist(v):
        if metric == "l2":
            return float(((v.astype(np.float64) - q) ** 2).sum())
        a, b = v.astype(np.float64), q.astype(np.float64)
        return 1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return [key for key, _ in sorted(((key, dist(v)) for key, (v, _) in model.items()), key=lambda e: e[1])[:k]]


def keys_for(rng, n):
    pool = [f"doc-{i}#chunk-{j}" for i in range(60) for j in range(3)] + ["ümlaut/ключ", "a b c", "x" * 1024]
    return [pool[i] for i in rng.integers(0, len(pool), n)]


def test_string_ids_match_a_dict_model_through_flush_compact_reopen(tmp_path):
    rng = np.random.default_rng(8)
    model: dict = {}
    db = trovedb.open(tmp_path, seal_threshold_rows=50)
    c = db.create_collection("docs", dim=DIM, metric="l2", index="hnsw", id_type="str")
    assert c.id_type == "str"
    for step in range(40):
        op = step % 5
        if op == 3:
            gone = keys_for(rng, 8)
            assert c.delete(gone) == len({k for k in gone if k in model})
            for k in gone:
                model.pop(k, None)
        elif op == 4 and model:
            chosen = list(model)[: 3]
            c.update_payload(chosen, {"touched": step})
            for k in chosen:
                model[k][1]["touched"] = step
        else:
            ks = keys_for(rng, 20)
            vs = rng.standard_normal((20, DIM)).astype(np.float32)
            ps = [{"step": step, "tag": ["even" if step % 2 == 0 else "odd"]} for _ in ks]
            c.upsert(ks, vs, ps)
            for k, v, p in zip(ks, vs, ps):
                model[k] = (v, dict(p))
        if step == 20:
            c.flush()
        if step == 30:
            c.compact()
    for reopen in (False, True):
        if reopen:
            db.close()
            db = trovedb.open(tmp_path)
            c = db.get_collection("docs")
            assert c.id_type == "str"
        assert len(c) == len(model) == c.count()
        got = c.get(list(model) + ["never-written"], include_vector=True)
        assert got[-1] is None
        for (k, (v, p)), g in zip(model.items(), got):
            assert g["id"] == k and g["payload"] == p
            np.testing.assert_allclose(g["vector"], v, rtol=1e-6)
        # Paging visits every key exactly once.
        seen, cursor = [], None
        while True:
            page, cursor = c.scroll(limit=17, cursor=cursor)
            assert all("vector" not in p for p in page)
            seen += [p["id"] for p in page]
            if cursor is None:
                break
        assert sorted(seen) == sorted(model) and len(seen) == len(set(seen))
        # Exact results (hnsw at a wide beam over ~150 points) with string ids.
        for _ in range(5):
            q = rng.standard_normal(DIM).astype(np.float32)
            res = c.search(q, k=10, ef=400)
            assert res.ids == brute(model, q, 10)
            assert all(isinstance(h.id, str) for h in res)
    db.close()


def test_colliding_or_bad_string_ids_are_refused_with_clear_errors(tmp_path):
    db = trovedb.open(tmp_path)
    c = db.create_collection("s", dim=2, id_type="str")
    i = db.create_collection("i", dim=2)
    with pytest.raises(ValueError, match="position 1 is an empty string"):
        c.upsert(["a", ""], [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="at most 1024 bytes"):
        c.upsert(["y" * 1025], [[1, 0]])
    with pytest.raises(TypeError, match="position 1 is int 5"):
        c.upsert(["a", 5], [[1, 0], [0, 1]])
    with pytest.raises(TypeError, match="keyed by integers"):
        i.upsert(["a"], [[1, 0]])
    with pytest.raises(TypeError, match="keyed by integers"):
        i.upsert(np.array(["a", "b"]), [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="keyed by strings"):
        c.count({"$id": 3})
    assert len(c) == 0 and len(i) == 0
    # numpy string arrays are string ids.
    c.upsert(np.array(["p", "q"]), [[1, 0], [0, 1]])
    assert c.get("q")["id"] == "q"
    assert c.count({"$id": {"$in": ["p", "zz"]}}) == 1
    with pytest.raises(ValueError, match="id_type"):
        db.get_or_create_collection("s", dim=2, id_type="int")
    assert db.get_or_create_collection("s", dim=2, id_type="str").id_type == "str"
    with pytest.raises(ValueError, match='"int" or "str"'):
        db.create_collection("z", dim=2, id_type="uuid")
    assert issubclass(trovedb.IdCollisionError, trovedb.TroveError)
    db.close()


def test_update_payload_is_atomic_durable_and_keeps_the_vector(tmp_path):
    db = trovedb.open(tmp_path)
    c = db.create_collection("c", dim=3, metric="cosine")
    c.upsert([1, 2, 3], [[1, 2, 3], [3, 2, 1], [0, 1, 0]], [{"a": 1, "b": "x"}, {"a": 2}, None])
    before = c.get([1, 2, 3])
    c.update_payload([1, 3], {"b": "y", "c": True})
    c.update_payload([2], [{"only": 1}], mode="replace")
    with pytest.raises(KeyError, match="no point with id 9"):
        c.update_payload([1, 9], {"z": 1})
    with pytest.raises(ValueError, match="mode"):
        c.update_payload([1], {"z": 1}, mode="upsert")
    with pytest.raises(ValueError, match="2 patches for 3 ids"):
        c.update_payload([1, 2, 3], [{}, {}])
    db.close()
    db = trovedb.open(tmp_path)
    c = db.get_collection("c")
    after = c.get([1, 2, 3])
    assert [p["payload"] for p in after] == [{"a": 1, "b": "y", "c": True}, {"only": 1}, {"b": "y", "c": True}]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x["vector"], y["vector"])
    assert c.count({"b": "y"}) == 2 and c.count({"z": 1}) == 0
    db.close()


def test_results_are_typed_json_safe_and_never_padded(tmp_path):
    db = trovedb.open(tmp_path)
    c = db.create_collection("c", dim=2, metric="l2")
    c.upsert([10, 20, 30], [[0, 0], [1, 0], [5, 5]], [{"n": 1}, {"n": 2}, None])
    res = c.search([0, 0], k=5, filter={"n": {"$gte": 1}}, include_payload=True)
    assert isinstance(res, trovedb.SearchResult) and len(res) == 2 and res.kind == "vector"
    assert [h.id for h in res] == [10, 20] and all(type(h.id) is int for h in res)
    assert res.ids.dtype == np.uint64 and res.distances.dtype == np.float32
    assert [h.payload for h in res] == [{"n": 1}, {"n": 2}]
    assert res[-1].distance == pytest.approx(1.0) and res[-1].score == pytest.approx(-1.0)
    json.dumps(res.to_list())
    with pytest.raises(IndexError):
        res[2]
    # Without payloads, payload is None (not fetched).
    assert [h.payload for h in c.search([0, 0], k=3)] == [None, None, None]
    # A point stored without payload has an empty dict, never None.
    assert c.search([5, 5], k=1, include_payload=True)[0].payload == {}
    # Batches: one SearchResult per query; arrays padded for the array-minded.
    batch = c.search(np.array([[0, 0], [5, 5]], np.float32), k=4, filter={"n": 1})
    assert isinstance(batch, trovedb.BatchResult) and len(batch) == 2
    assert [r.ids.tolist() for r in batch] == [[10], [10]]
    assert batch.ids.shape == (2, 4) and batch.ids[0, 1] == trovedb.PAD_ID
    assert c.search_batch(np.array([[0, 0]]), k=1).ids.tolist() == [[10]]
    db.close()


def test_per_query_filters_exclusions_and_search_by_id(tmp_path):
    rng = np.random.default_rng(2)
    db = trovedb.open(tmp_path)
    c = db.create_collection("c", dim=DIM, metric="l2")
    vs = rng.standard_normal((200, DIM)).astype(np.float32)
    c.upsert(np.arange(200), vs, [{"g": i % 4} for i in range(200)])
    model = {i: (vs[i], {"g": i % 4}) for i in range(200)}
    qs = rng.standard_normal((4, DIM)).astype(np.float32)
    filters = [{"g": 0}, {"g": {"$in": [1, 2]}}, None, {"g": 3}]
    batch = c.search(qs, k=5, filter=filters)
    for q, f, r in zip(qs, filters, batch):
        sub = {i: v for i, v in model.items() if f is None or trovedb_match(f, v[1])}
        assert r.ids.tolist() == brute(sub, q, 5)
    with pytest.raises(ValueError, match="one query per filter"):
        c.search(qs, k=5, filter=filters[:3])
    with pytest.raises(ValueError, match="one query per filter"):
        c.search(qs[0], k=5, filter=filters)
    # exclude_ids, with and without a filter.
    top = brute(model, qs[0], 3)
    got = c.search(qs[0], k=5, exclude_ids=top).ids.tolist()
    assert got == brute({i: v for i, v in model.items() if i not in top}, qs[0], 5)
    got = c.search(qs[0], k=5, exclude_ids=top, filter={"g": {"$ne": 0}}).ids.tolist()
    assert not set(got) & set(top) and all(i % 4 != 0 for i in got)
    # More like this: the nearest to a stored point, itself left out.
    res = c.search(id=7, k=5)
    assert res.ids.tolist() == brute({i: v for i, v in model.items() if i != 7}, vs[7], 5)
    with pytest.raises(KeyError):
        c.search(id=999, k=5)
    with pytest.raises(ValueError, match="neither a query vector"):
        c.search(vs[0], id=7)
    db.close()


def trovedb_match(f: dict, p: dict) -> bool:
    (field, cond), = f.items()
    if isinstance(cond, dict):
        (op, arg), = cond.items()
        return {"$in": lambda: p[field] in arg, "$ne": lambda: p[field] != arg}[op]()
    return p[field] == cond


def test_get_and_scroll_without_a_filter_and_payload_edge_cases(tmp_path):
    db = trovedb.open(tmp_path)
    c = db.create_collection("c", dim=2)
    c.upsert(np.arange(250), np.ones((250, 2), np.float32), [{"i": i} for i in range(250)])
    first = c.get(limit=10, include_vector=False)
    assert [p["id"] for p in first] == list(range(10)) and "vector" not in first[0]
    page, cursor = c.scroll(filter={"i": {"$gte": 100}}, limit=100)
    assert [p["id"] for p in page] == list(range(100, 200)) and cursor == 199
    page, cursor = c.scroll(filter={"i": {"$gte": 100}}, limit=100, cursor=cursor)
    assert [p["id"] for p in page] == list(range(200, 250)) and cursor is None
    with pytest.raises(ValueError, match="limit"):
        c.scroll(limit=0)
    with pytest.raises(ValueError, match="cursor"):
        c.scroll(cursor="abc")
    assert c.count() == 250
    with pytest.raises(TypeError, match="nested objects are not supported"):
        c.upsert([1], [[1, 1]], [{"meta": {"a": 1}}])
    with pytest.raises(TypeError, match="isoformat"):
        c.upsert([1], [[1, 1]], [{"when": datetime.date(2024, 1, 1)}])
    with pytest.raises(TypeError, match="item 1 is int 2"):
        c.upsert([1], [[1, 1]], [{"nums": ["a", 2]}])
    assert c.get(1)["payload"] == {"i": 1}
    db.close()


def test_online_backup_restores_while_writes_continue(tmp_path):
    import threading

    db = trovedb.open(tmp_path / "live", seal_threshold_rows=300)
    c = db.create_collection("docs", dim=DIM, metric="l2", index="hnsw", id_type="str")
    rng = np.random.default_rng(4)
    vs = rng.standard_normal((2000, DIM)).astype(np.float32)
    keys = [f"k{i}" for i in range(2000)]
    c.upsert(keys[:1000], vs[:1000], [{"i": i} for i in range(1000)])
    done = []

    def write():
        for s in range(1000, 2000, 50):
            c.upsert(keys[s : s + 50], vs[s : s + 50], [{"i": i} for i in range(s, s + 50)])
            done.append(s + 50)

    t = threading.Thread(target=write)
    t.start()
    report = db.backup(tmp_path / "copy")
    t.join()
    assert report["collections"] == ["docs"] and report["bytes"] > 0
    with pytest.raises(ValueError, match="not an empty directory"):
        db.backup(tmp_path / "copy")
    db.close()
    with trovedb.open(tmp_path / "copy") as b:
        bc = b.get_collection("docs")
        n = len(bc)
        # A prefix of the writes: the first n points, each with its payload.
        assert 1000 <= n <= 2000 and n % 50 == 0
        got = bc.get(keys[:n], include_vector=False)
        assert all(g is not None and g["payload"] == {"i": i} for i, g in enumerate(got))
        assert bc.get(keys[n]) is None if n < 2000 else True
        assert bc.search(vs[7], k=1, ef=200)[0].id == "k7"
