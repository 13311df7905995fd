"""Quantised collections through the Python API: recall against numpy brute force on real
embeddings, exact distances in the results, the `rescore` knob, the config round trip,
stats, reopen, and clear errors for bad arguments."""

import numpy as np
import pytest

import trovedb


def exact_top(base: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    d = 1.0 - b @ (q / np.linalg.norm(q))
    return np.argsort(d, kind="stable")[:k]


def recall(c, base, queries, k=10, **params) -> float:
    hits = 0
    for q in queries:
        r = c.search(q, k=k, **params)
        truth = set(exact_top(base, q, k).tolist())
        hits += len(truth & set(r.ids.tolist()))
        # Distances are exact (re-scored from the float vectors), nearest first.
        b = base[r.ids.astype(np.int64)]
        want = 1.0 - (b / np.linalg.norm(b, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
        np.testing.assert_allclose(r.distances, want, atol=2e-5)
        assert list(r.distances) == sorted(r.distances)
    return hits / (k * len(queries))


@pytest.mark.parametrize("index", ["hnsw", "flat"])
@pytest.mark.parametrize("quantization,floor", [("sq8", 0.95), ("binary", 0.90)])
def test_recall_and_round_trips(tmp_path, minilm, index, quantization, floor):
    base, queries = minilm
    n = len(base)
    with trovedb.open(tmp_path / "db") as db:
        c = db.create_collection("c", base.shape[1], metric="cosine", index=index, quantization=quantization)
        c.upsert(np.arange(n, dtype=np.uint64), base, [{"tenth": i % 10} for i in range(n)])
        c.flush()
        c.wait_idle()
        seg = c.stats()["segments"]
        assert [s["quantization"] for s in seg] == [quantization]
        code = base.shape[1] if quantization == "sq8" else (base.shape[1] + 63) // 64 * 8
        assert seg[0]["quant_bytes"] >= n * code
        assert seg[0]["vector_bytes"] == n * base.shape[1] * 4
        r = recall(c, base, queries)
        assert r >= floor, (index, quantization, r)
        # A wide rescore is exact on a flat collection, never worse on hnsw.
        wide = recall(c, base, queries, rescore=300)
        assert wide >= r - 0.005
        if index == "flat":
            assert wide == 1.0
        # Filtered: every hit passes.
        res = c.search(queries[0], k=10, filter={"tenth": 3})
        assert len(res) == 10 and all(int(i) % 10 == 3 for i in res.ids)
        cfg = c.config
        default = {"sq8": 3, "binary": 10}[quantization]
        assert (cfg["quantization"], cfg["rescore"]) == (quantization, default)
        before = [c.search(q, k=10).ids.tolist() for q in queries[:20]]
        # The config reads back as create_collection's arguments.
        args = dict(cfg)
        params = args.pop("index_params")
        same = db.get_or_create_collection("c", **args, **params)
        assert same.config == cfg
    with trovedb.open(tmp_path / "db") as db:
        c = db.get_collection("c")
        assert c.config["quantization"] == quantization
        c.verify()
        assert [c.search(q, k=10).ids.tolist() for q in queries[:20]] == before


def test_a_collection_default_rescore_is_kept(tmp_path, minilm):
    base, queries = minilm
    with trovedb.open(tmp_path / "db") as db:
        c = db.create_collection("c", base.shape[1], index="hnsw", quantization="binary", rescore=1)
        assert c.config["rescore"] == 1
        c.upsert(np.arange(len(base), dtype=np.uint64), base)
        c.flush()
        # Ranking on binary codes alone and re-scoring only k is worse than re-scoring 20k.
        assert recall(c, base, queries[:50]) < recall(c, base, queries[:50], rescore=20)


def test_bad_arguments_are_refused_with_nothing_created(tmp_path):
    with trovedb.open(tmp_path / "db") as db:
        with pytest.raises(ValueError, match="quantization"):
            db.create_collection("c", 8, quantization="int4")
        with pytest.raises(ValueError, match="quantization"):
            db.create_collection("c", 8, index="ivf_pq", quantization="sq8")
        with pytest.raises(ValueError, match="rescore"):
            db.create_collection("c", 8, rescore=3)
        with pytest.raises(ValueError, match="rescore"):
            db.create_collection("c", 8, quantization="sq8", rescore=0)
        with pytest.raises(ValueError, match="rescore"):
            db.create_collection("c", 8, quantization="sq8", rescore=-2)
        assert db.list_collections() == []
        plain = db.create_collection("plain", 2)
        plain.upsert([1], [[0.0, 1.0]])
        with pytest.raises(ValueError, match="rescore"):
            plain.search([0.0, 1.0], k=1, rescore=2)
        q = db.create_collection("q", 2, quantization="sq8")
        q.upsert([1], [[0.0, 1.0]])
        for bad in (0, 1001):
            with pytest.raises(ValueError, match="rescore"):
                q.search([0.0, 1.0], k=1, rescore=bad)
        assert q.search([0.0, 1.0], k=1, rescore=5).ids.tolist() == [1]


def test_auto_gives_wide_hnsw_collections_sq8_and_keeps_the_rest_float(tmp_path, minilm):
    base, queries = minilm
    with trovedb.open(tmp_path / "db") as db:
        # The default, "auto": sq8 for hnsw of at least 256 dimensions, none otherwise.
        wide = db.create_collection("wide", 384, index="hnsw")
        assert wide.config["quantization"] == "sq8"
        assert wide.config["rescore"] == 3
        assert db.create_collection("narrow", 128, index="hnsw").config["quantization"] == "none"
        assert db.create_collection("flat", 384).config["quantization"] == "none"
        assert db.create_collection("float", 384, index="hnsw", quantization="none").config["quantization"] == "none"
        tuned = db.create_collection("tuned", 384, index="hnsw", rescore=5)
        assert (tuned.config["quantization"], tuned.config["rescore"]) == ("sq8", 5)
        with pytest.raises(ValueError, match="rescore"):
            db.create_collection("bad", 384, rescore=5)  # flat: float32 only
        assert "bad" not in db.list_collections()
        # The same call again finds the collection: the stored config is the resolved one.
        again = db.get_or_create_collection("wide", 384, index="hnsw")
        assert again.config == wide.config
        with pytest.raises(ValueError, match="quantization"):
            db.get_or_create_collection("wide", 384, index="hnsw", quantization="none")
        wide.upsert(np.arange(len(base)), base)
        wide.flush()
        assert wide.stats()["segments"][0]["quantization"] == "sq8"
        assert recall(wide, base, queries[:100], ef=64) >= 0.95
    with trovedb.open(tmp_path / "db") as db:
        assert db.get_collection("wide").config["quantization"] == "sq8"
