"""Smoke and behaviour tests of the Python API against NumPy brute force."""

import threading
import time

import numpy as np
import pytest

import trovedb


def brute_force(base: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "l2":
        d = ((base.astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=1)
    elif metric == "cosine":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        d = 1.0 - b.astype(np.float64) @ (q / np.linalg.norm(q)).astype(np.float64)
    else:
        d = -(base.astype(np.float64) @ q.astype(np.float64))
    return np.argsort(d, kind="stable")[:k]


def test_exact_search_on_real_embeddings_and_reopen(tmp_path, minilm):
    base, queries = minilm
    ids = np.arange(len(base), dtype=np.uint64)
    with trovedb.open(tmp_path / "db", seal_threshold_rows=1000) as db:
        c = db.create_collection("docs", dim=384, metric="cosine")
        c.upsert(ids, base)
        assert len(c) == len(base)
        res = c.search(queries, k=10)
        got, dist = res.ids, res.distances
        assert got.shape == (len(queries), 10) and got.dtype == np.uint64
        assert dist.dtype == np.float32
        hits = 0
        for i, q in enumerate(queries):
            hits += len(set(got[i].tolist()) & set(brute_force(base, q, 10, "cosine").tolist()))
        assert hits / (10 * len(queries)) >= 0.999  # exact up to float ties
        assert np.all(np.diff(dist, axis=1) >= 0)
    with trovedb.open(tmp_path / "db") as db:
        c = db.get_collection("docs")
        res = c.search(queries, k=10)
        again, dist2 = res.ids, res.distances
        np.testing.assert_array_equal(got, again)
        np.testing.assert_allclose(dist, dist2)
        assert c.stats()["segments"] and c.stats()["rows"] == len(base)


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
def test_metrics_match_numpy(tmp_path, metric):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((500, 24)).astype(np.float32)
    with trovedb.open(tmp_path) as db:
        c = db.create_collection("c", dim=24, metric=metric)
        c.upsert(np.arange(500), base)
        for q in rng.standard_normal((20, 24)).astype(np.float32):
            ids = c.search(q, k=5).ids
            np.testing.assert_array_equal(ids, brute_force(base, q, 5, metric))


def test_payloads_round_trip_exactly(tmp_path):
    payloads = [
        {"s": "héllo ✓", "i": -(2**63), "f": 0.1, "b": True, "n": None, "tags": ["a", "b"]},
        {},
        None,
    ]
    with trovedb.open(tmp_path) as db:
        c = db.create_collection("c", dim=2, metric="l2")
        c.upsert([10, 11, 12], np.array([[0, 0], [1, 1], [2, 2]], dtype=np.float32), payloads)
    with trovedb.open(tmp_path) as db:
        c = db.get_collection("c")
        got = c.get([10, 11, 12, 99])
        assert got[0]["payload"] == payloads[0]
        assert got[1]["payload"] == {} and got[2]["payload"] == {}
        assert got[3] is None
        assert c.get(10)["id"] == 10
        res = c.search([0.1, 0.1], k=2, include_payload=True)
        ids, dists, pays = res.ids, res.distances, res.payloads
        assert ids.tolist() == [10, 11] and pays[0] == payloads[0]


def test_upsert_overwrites_delete_and_padding(tmp_path):
    with trovedb.open(tmp_path) as db:
        c = db.create_collection("c", dim=3, metric="l2")
        c.upsert([1, 2], np.eye(2, 3))
        c.flush()
        c.upsert([1], [[5.0, 5.0, 5.0]])
        np.testing.assert_array_equal(c.get(1)["vector"], [5, 5, 5])
        assert c.delete([2, 3]) == 1
        assert len(c) == 1
        # One query: only the hits there are, never padding.
        hits = c.search([0, 0, 0], k=4)
        assert len(hits) == 1 and hits.ids.tolist() == [1]
        assert hits[0].id == 1 and hits[0].distance == pytest.approx(75.0)
        # A batch's arrays are (nq, k), padded with PAD_ID and +inf.
        batch = c.search([[0, 0, 0], [5, 5, 5]], k=4)
        assert [len(r) for r in batch] == [1, 1]
        assert batch.ids.tolist() == [[1] + [trovedb.PAD_ID] * 3] * 2
        assert np.isinf(batch.distances[:, 1:]).all() and np.isneginf(batch.scores[:, 1:]).all()


def test_float64_and_non_contiguous_input_are_converted(tmp_path):
    rng = np.random.default_rng(1)
    wide = rng.standard_normal((50, 16))  # float64
    with trovedb.open(tmp_path) as db:
        a = db.create_collection("a", dim=8, metric="l2")
        a.upsert(np.arange(50), wide[:, ::2])  # strided view, float64
        b = db.create_collection("b", dim=8, metric="l2")
        b.upsert(np.arange(50), np.ascontiguousarray(wide[:, ::2], dtype=np.float32))
        q = wide[0, ::2]
        np.testing.assert_array_equal(a.search(q, k=5).ids, b.search(q, k=5).ids)


def test_bad_input_raises_and_changes_nothing(tmp_path):
    with trovedb.open(tmp_path) as db:
        with pytest.raises(ValueError):
            db.create_collection("x", dim=3, metric="hamming")
        with pytest.raises(ValueError):
            db.create_collection("x", dim=3, index="annoy")
        c = db.create_collection("c", dim=3, metric="l2")
        c.upsert([1], [[1, 2, 3]])
        before = c.stats()["last_lsn"]
        with pytest.raises(ValueError):
            c.upsert([2], [[1, 2]])  # wrong dim
        with pytest.raises(ValueError):
            c.upsert([2, 3], [[1, 2, 3]])  # count mismatch
        with pytest.raises(ValueError):
            c.upsert([2], [[1, np.nan, 3]])
        with pytest.raises(ValueError):
            c.upsert([2], [[1, np.inf, 3]])
        with pytest.raises(TypeError):
            c.upsert([2], np.array([["a", "b", "c"]]))
        with pytest.raises(ValueError):
            c.upsert([2], np.zeros((1, 1, 3), dtype=np.float32))
        with pytest.raises(ValueError):
            c.upsert([-1], [[1, 2, 3]])
        with pytest.raises(ValueError, match="reserved"):
            c.upsert([trovedb.PAD_ID], [[1, 2, 3]])  # the padding id
        with pytest.raises(TypeError):
            c.upsert([2**64], [[1, 2, 3]])
        with pytest.raises(TypeError):
            c.upsert([1.5], [[1, 2, 3]])
        with pytest.raises(TypeError):
            c.upsert([2], [[1, 2, 3]], [{"nested": {"a": 1}}])
        with pytest.raises(TypeError):
            c.upsert([2], [[1, 2, 3]], [{1: "non-str key"}])
        with pytest.raises(ValueError):
            c.upsert([2], [[1, 2, 3]], [{"big": 2**70}])
        with pytest.raises(ValueError, match="limit"):
            c.upsert([2], [[1, 2, 3]], [{"text": "x" * (1 << 20)}])
        with pytest.raises(ValueError):
            c.search([1, 2, 3], k=0)
        with pytest.raises(ValueError):
            c.search([1, 2], k=1)
        with pytest.raises(ValueError):
            c.search([1, 2, 3], k=1, ef=10)  # ef applies to hnsw only
        assert c.stats()["last_lsn"] == before
        assert len(c) == 1
        c.upsert([], np.zeros((0, 3), dtype=np.float32))  # empty batch: a no-op
        assert c.stats()["last_lsn"] == before
        c.upsert([7], [[1, 2, 3]], [{"ключ ✓": "unicode keys are fine", "k": ["a"] * 1000}])
        assert c.get(7)["payload"]["ключ ✓"] == "unicode keys are fine"


def test_engine_errors_map_to_trove_errors(tmp_path):
    db = trovedb.open(tmp_path)
    with pytest.raises(trovedb.LockedError):
        trovedb.open(tmp_path)
    with pytest.raises(trovedb.CollectionNotFoundError):
        db.get_collection("nope")
    c = db.create_collection("c", dim=2, metric="l2")
    with pytest.raises(trovedb.CollectionExistsError):
        db.create_collection("c", dim=2)
    assert db.list_collections() == ["c"]
    db.close()
    with pytest.raises(trovedb.ClosedError):
        c.upsert([1], [[1, 2]])
    assert issubclass(trovedb.CorruptionError, trovedb.TroveError)
    manifest = tmp_path / "collections" / "c" / "MANIFEST"
    raw = bytearray(manifest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    manifest.write_bytes(bytes(raw))
    with trovedb.open(tmp_path) as db:
        with pytest.raises(trovedb.CorruptionError, match="MANIFEST"):
            db.get_collection("c")
        db.drop_collection("c")
        assert db.list_collections() == []


def test_concurrent_searches_and_writes_from_threads(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((2000, 32)).astype(np.float32)
    with trovedb.open(tmp_path, seal_threshold_rows=500) as db:
        c = db.create_collection("c", dim=32, metric="l2")
        c.upsert(np.arange(1000), base[:1000])
        errors = []

        def searcher():
            try:
                for q in base[:200]:
                    ids = c.search(q, k=5).ids
                    assert len(ids) == 5
            except Exception as e:  # noqa: BLE001 - surfaced below
                errors.append(e)

        def writer():
            try:
                for i in range(1000, 2000, 100):
                    c.upsert(np.arange(i, i + 100), base[i : i + 100])
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=searcher) for _ in range(3)] + [threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(c) == 2000
        ids = c.search(base[1500], k=1).ids
        assert ids[0] == 1500


def test_hnsw_collection_recall_ef_and_reopen(tmp_path, minilm):
    base, queries = minilm
    with trovedb.open(tmp_path) as db:
        c = db.create_collection("h", dim=384, metric="cosine", index="hnsw", m=16, ef_construction=200)
        c.upsert(np.arange(len(base)), base)
        c.flush()
        assert c.stats()["segments"][0]["index"] == "hnsw"
        ids = c.search(queries, k=10, ef=128).ids
        exact = [brute_force(base, q, 10, "cosine") for q in queries]
        recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(ids, exact)])
        assert recall >= 0.95
        with pytest.raises(ValueError):
            c.search(queries[0], k=10, ef=0)
        with pytest.raises(ValueError):
            c.search(queries[0], k=10, nprobe=3)
        with pytest.raises(ValueError):
            db.create_collection("bad", dim=4, index="hnsw", m=1)
        with pytest.raises(ValueError):
            db.create_collection("bad", dim=4, index="hnsw", colour=3)
    with trovedb.open(tmp_path) as db:
        again = db.get_collection("h").search(queries, k=10, ef=128).ids
        np.testing.assert_array_equal(ids, again)


@pytest.mark.parametrize(
    "index,params,knobs",
    [("ivf_pq", {"nlist": 32, "pq_m": 48}, {"nprobe": 16, "refine": 8}), ("lsh", {"tables": 32}, {"probes": 32, "refine": 50})],
)
def test_compressed_indexes_recall_params_and_reopen(tmp_path, minilm, index, params, knobs):
    base, queries = minilm
    with trovedb.open(tmp_path) as db:
        c = db.create_collection("x", dim=384, metric="cosine", index=index, **params)
        c.upsert(np.arange(len(base)), base, [{"half": i % 2} for i in range(len(base))])
        c.flush()
        seg = c.stats()["segments"][0]
        assert seg["index"] == index, seg
        ids = c.search(queries, k=10, **knobs).ids
        exact = [brute_force(base, q, 10, "cosine") for q in queries]
        recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(ids, exact)])
        assert recall >= 0.9, recall
        fids = c.search(queries, k=10, filter={"half": 1}, **knobs).ids
        assert all(i % 2 == 1 for i in fids.ravel().tolist())
        with pytest.raises(ValueError):
            c.search(queries[0], k=10, ef=10)
        with pytest.raises(ValueError):
            c.search(queries[0], k=10, refine=0)
    with trovedb.open(tmp_path) as db:
        again = db.get_collection("x").search(queries, k=10, **knobs).ids
        np.testing.assert_array_equal(ids, again)


def test_pq_m_must_divide_dim(tmp_path):
    with trovedb.open(tmp_path) as db:
        with pytest.raises(ValueError, match="pq_m"):
            db.create_collection("bad", dim=384, index="ivf_pq", pq_m=7)
        with pytest.raises(ValueError):
            db.create_collection("bad", dim=384, index="lsh", bits=99)
        assert db.list_collections() == []


def test_filters_search_count_get_delete(tmp_path):
    rng = np.random.default_rng(7)
    n = 3000
    vecs = rng.standard_normal((n, 16)).astype(np.float32)
    payloads = [
        {"lang": ["en", "fr", "de"][i % 3], "year": 2000 + i % 25, "tags": ["a", "b"] if i % 5 == 0 else ["c"]}
        for i in range(n)
    ]
    flt = {"lang": "en", "year": {"$gte": 2020}, "$or": [{"tags": "a"}, {"year": 2024}]}

    def ok(p):
        return p["lang"] == "en" and p["year"] >= 2020 and ("a" in p["tags"] or p["year"] == 2024)

    passing = [i for i in range(n) if ok(payloads[i])]
    with trovedb.open(tmp_path, seal_threshold_rows=2000) as db:
        for index in ["flat", "hnsw"]:
            c = db.create_collection(index, dim=16, metric="l2", index=index)
            c.upsert(np.arange(n), vecs, payloads)
            assert c.count(filter=flt) == len(passing)
            assert c.count() == n
            q = rng.standard_normal(16).astype(np.float32)
            res = c.search(q, k=5, filter=flt, include_payload=True)
            ids, dists, pays = res.ids, res.distances, res.payloads
            assert all(ok(p) for p in pays)
            d = ((vecs[passing] - q) ** 2).sum(axis=1)
            want = [passing[j] for j in np.argsort(d)[:5]]
            assert ids.tolist() == want
            got = c.get(filter={"year": 2001}, limit=3)
            assert len(got) == 3 and all(g["payload"]["year"] == 2001 for g in got)
            with pytest.raises(ValueError, match=r"\$bogus"):
                c.search(q, k=5, filter={"year": {"$bogus": 1}})
            with pytest.raises(TypeError):
                c.search(q, k=5, filter=[1, 2])
            with pytest.raises(ValueError):
                c.delete()
        c = db.get_collection("flat")
        assert c.delete(filter={"lang": "de"}) == n // 3
        assert c.count(filter={"lang": "de"}) == 0 and len(c) == n - n // 3


def test_oversized_result_requests_are_refused(tmp_path):
    with trovedb.open(tmp_path) as db:
        c = db.create_collection("c", dim=2, metric="l2")
        c.upsert([1], [[0.0, 1.0]])
        with pytest.raises(ValueError):
            c.search([0.0, 1.0], k=2**25)
        with pytest.raises(ValueError):
            c.search(np.zeros((64, 2), dtype=np.float32), k=2**23)
        assert c.search([0.0, 1.0], k=3).ids.tolist() == [1]


def test_indexed_fields_limit_the_index_not_the_answers(tmp_path):
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((500, 8)).astype(np.float32)
    pays = [{"k": i % 7, "s": f"v{i % 3}"} for i in range(500)]
    with trovedb.open(tmp_path) as db:
        c = db.create_collection("c", dim=8, metric="l2", indexed_fields=["k"])
        c.upsert(np.arange(500), vecs, pays)
        for flt, ok in [({"k": {"$gte": 5}}, lambda p: p["k"] >= 5), ({"s": "v1"}, lambda p: p["s"] == "v1")]:
            assert c.count(filter=flt) == sum(ok(p) for p in pays)
            ids = c.search(vecs[0], k=5, filter=flt).ids
            assert all(ok(pays[i]) for i in ids.tolist())
        with pytest.raises(ValueError):
            db.create_collection("bad", dim=8, indexed_fields=[""])


def test_compact_drops_deleted_rows_and_keeps_results(tmp_path):
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((4000, 8)).astype(np.float32)
    with trovedb.open(tmp_path, seal_threshold_rows=1000, background_compaction=False) as db:
        c = db.create_collection("c", dim=8, metric="l2")
        c.upsert(np.arange(4000), vecs)
        c.delete(np.arange(0, 4000, 2))
        c.flush()
        before = c.stats()
        assert c.compact() == 2000
        after = c.stats()
        assert len(after["segments"]) == 1 and after["deleted"] == 0
        assert after["bytes_on_disk"] <= 0.6 * before["bytes_on_disk"]
        q = rng.standard_normal(8).astype(np.float32)
        ids = c.search(q, k=5).ids
        survivors = np.arange(1, 4000, 2)
        d = ((vecs[survivors] - q) ** 2).sum(axis=1)
        assert ids.tolist() == survivors[np.argsort(d)[:5]].tolist()


def test_more_bad_input_every_entry_point(tmp_path):
    """Each public entry point with malformed arguments: a typed error, nothing stored changes."""
    with trovedb.open(tmp_path) as db:
        c = db.create_collection("c", dim=3, metric="l2")
        c.upsert([1, 2], [[1, 2, 3], [4, 5, 6]], [{"a": 1}, {"a": 2}])
        before = (c.stats()["last_lsn"], len(c), c.get(1), c.get(2))

        def unchanged():
            now = (c.stats()["last_lsn"], len(c), c.get(1), c.get(2))
            assert now[:2] == before[:2]
            for a, b in zip(now[2:], before[2:]):
                assert a["payload"] == b["payload"]
                np.testing.assert_array_equal(a["vector"], b["vector"])

        # Queries: NaN/inf, wrong dimension, wrong ndim, wrong dtype, empty batch.
        for q in ([np.nan, 0, 0], [0, np.inf, 0], [[1, 2, 3], [0, -np.inf, 0]]):
            with pytest.raises(ValueError):
                c.search(q, k=1)
        with pytest.raises(ValueError):
            c.search(np.zeros((2, 4), dtype=np.float32), k=1)
        with pytest.raises(ValueError):
            c.search(np.zeros((1, 1, 3), dtype=np.float32), k=1)
        with pytest.raises(TypeError):
            c.search(np.array(["a", "b", "c"]), k=1)
        with pytest.raises(ValueError):
            c.search([1, 2, 3], k=-1)
        res = c.search(np.zeros((0, 3), dtype=np.float32), k=2)
        ids, dists = res.ids, res.distances
        assert ids.shape == (0, 2) and dists.shape == (0, 2)
        # A non-contiguous float64 query batch gives the same answers as a contiguous one.
        wide = np.array([[1, 9, 2, 9, 3, 9], [4, 9, 5, 9, 6, 9]], dtype=np.float64)
        np.testing.assert_array_equal(
            c.search(wide[:, ::2], k=2).ids, c.search(np.float32([[1, 2, 3], [4, 5, 6]]), k=2).ids
        )
        # Ids: negative, too large, non-integral, wrong shape, for upsert/delete/get.
        for bad in ([-5], [2**64], [1.5], [[1, 2]]):
            with pytest.raises((TypeError, ValueError)):
                c.upsert(bad, np.zeros((len(bad), 3), dtype=np.float32))
            with pytest.raises((TypeError, ValueError)):
                c.delete(bad)
            with pytest.raises((TypeError, ValueError)):
                c.get(bad)
        # Vectors: float16/int input is converted; a list of ragged rows is refused.
        with pytest.raises((TypeError, ValueError)):
            c.upsert([3, 4], [[1, 2, 3], [1, 2]])
        # Payloads: deep nesting, non-string keys, too many entries for the ids, bad types.
        deep: object = "leaf"
        for _ in range(200):
            deep = [deep]
        with pytest.raises(TypeError):
            c.upsert([3], [[0, 0, 0]], [{"deep": deep}])
        with pytest.raises(TypeError):
            c.upsert([3], [[0, 0, 0]], [{"set": {1, 2}}])
        with pytest.raises(ValueError):
            c.upsert([3], [[0, 0, 0]], [{"a": 1}, {"a": 2}])
        with pytest.raises(TypeError):
            c.upsert([3], [[0, 0, 0]], ["not a dict"])
        # Filters: malformed anywhere they are accepted.
        for f in ({"a": {"$gt": "x", "$bogus": 1}}, {"$or": "notalist"}, {"a": {"$in": 5}}):
            with pytest.raises(ValueError):
                c.search([0, 0, 0], k=1, filter=f)
            with pytest.raises(ValueError):
                c.count(filter=f)
            with pytest.raises(ValueError):
                c.get(filter=f)
            with pytest.raises(ValueError):
                c.delete(filter=f)
        deep_filter: dict = {"a": 1}
        for _ in range(100):
            deep_filter = {"$not": deep_filter}
        with pytest.raises(ValueError, match="deeper"):
            c.count(filter=deep_filter)
        unchanged()
        # Duplicate ids in one batch: the last occurrence wins (documented).
        c.upsert([9, 9, 9], [[1, 1, 1], [2, 2, 2], [3, 3, 3]], [{"v": 1}, {"v": 2}, {"v": 3}])
        assert len(c) == 3 and c.get(9)["payload"] == {"v": 3}
        np.testing.assert_array_equal(c.get(9)["vector"], [3, 3, 3])
        # k larger than the collection: the hits there are.
        res = c.search([0, 0, 0], k=10)
        assert sorted(res.ids.tolist()) == [1, 2, 9] and np.isfinite(res.distances).all()


def test_open_all_reports_a_damaged_collection_by_name(tmp_path):
    with trovedb.open(tmp_path) as db:
        for name in ("bad", "good"):
            c = db.create_collection(name, dim=2, metric="l2")
            c.upsert([1, 2], [[0, 1], [1, 0]])
    manifest = tmp_path / "collections" / "bad" / "MANIFEST"
    raw = bytearray(manifest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    manifest.write_bytes(bytes(raw))
    with trovedb.open(tmp_path) as db:
        report = db.open_all()
        assert set(report) == {"bad", "good"} and report["good"] is None
        assert isinstance(report["bad"], trovedb.CorruptionError)
        assert "MANIFEST" in str(report["bad"])
        assert len(db.get_collection("good")) == 2


def test_background_compaction_policy_and_stats(tmp_path):
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((1600, 8)).astype(np.float32)
    for background in (True, False):
        path = tmp_path / str(background)
        with trovedb.open(
            path,
            seal_threshold_rows=100,
            background_compaction=background,
            compaction_max_merged_rows=1_000_000,
        ) as db:
            c = db.create_collection("c", dim=8, metric="l2")
            for b in range(32):
                c.upsert(np.arange(b * 50, b * 50 + 50), vecs[b * 50 : b * 50 + 50])
                c.flush()
            c.delete(np.arange(0, 1600, 7))
            c.wait_idle()
            st = c.stats()
            bg = st["background"]
            assert bg["sealing"] is False and bg["merging"] == [] and bg["last_error"] is None
            if background:
                assert bg["merges_done"] >= 4 and len(st["segments"]) <= 6
            else:
                assert bg["merges_done"] == 0 and len(st["segments"]) == 32
            live = np.setdiff1d(np.arange(1600), np.arange(0, 1600, 7))
            assert len(c) == len(live)
            q = rng.standard_normal(8).astype(np.float32)
            ids = c.search(q, k=10).ids
            np.testing.assert_array_equal(ids, live[brute_force(vecs[live], q, 10, "l2")])
    with pytest.raises(ValueError, match="min_segments"):
        trovedb.open(tmp_path / "bad", compaction_min_segments=1)
    with pytest.raises(ValueError, match="max_deleted_fraction"):
        trovedb.open(tmp_path / "bad", compaction_max_deleted_fraction=0.0)


def test_a_bulk_load_converges_on_wait_idle_and_when_left_alone(tmp_path, minilm):
    base, queries = minilm
    n = len(base)
    # An HNSW load grows one segment (each seal writes the one before it again with its own
    # rows, linked once into one graph); wait_idle() is "loading is done": the partial
    # appendable segment is sealed onto it too, without a merge, and searches match the exact
    # answer as well as before.
    with trovedb.open(tmp_path / "a", seal_threshold_rows=n // 10) as db:
        c = db.create_collection("c", dim=384, metric="cosine", index="hnsw")
        for i in range(0, n, 100):
            c.upsert(np.arange(i, min(i + 100, n)), base[i : i + 100])
        before = c.stats()
        assert len(before["segments"]) <= 1 and before["background"]["converging"], before
        c.wait_idle()
        st = c.stats()
        assert [s["rows"] for s in st["segments"]] == [n] and st["appendable_rows"] == 0
        assert st["background"]["merges_done"] == 0, st
        hits = 0
        for q in queries:
            hits += len(set(c.search(q, k=10, ef=64).ids.tolist()) & set(brute_force(base, q, 10, "cosine").tolist()))
        assert hits / (10 * len(queries)) >= 0.95
    # Left alone (a short quiet period), the same load converges without any call.
    with trovedb.open(
        tmp_path / "b",
        seal_threshold_rows=n // 10,
        compaction_quiet_seconds=0.2,
        compaction_seal_idle_seconds=0.4,
    ) as db:
        c = db.create_collection("c", dim=384, metric="cosine", index="flat")
        for i in range(0, n, 100):
            c.upsert(np.arange(i, min(i + 100, n)), base[i : i + 100])
        deadline = time.monotonic() + 60
        while c.stats()["background"]["converging"]:
            assert time.monotonic() < deadline, c.stats()
            time.sleep(0.05)
        st = c.stats()
        assert sum(s["rows"] for s in st["segments"]) == n and len(st["segments"]) <= 2, st
        got = c.search(queries[0], k=10).ids
        np.testing.assert_array_equal(got, brute_force(base, queries[0], 10, "cosine"))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="compaction_quiet_seconds"):
            trovedb.open(tmp_path / "bad", compaction_quiet_seconds=bad)
    with pytest.raises(ValueError, match="compaction_max_segment_rows"):
        trovedb.open(tmp_path / "bad", compaction_max_segment_rows=-5)
